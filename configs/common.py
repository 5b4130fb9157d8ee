"""Shared config blocks. Every experiment config is `get_config(arg)` returning a ConfigDict over
`dlm_jax.config.base_config()` (the schema and its defaults)."""
from __future__ import annotations

import ml_collections

from dlm_jax.config import base_config


def parse_arg(arg: str | None, **defaults):
    """"a=1,b=x" (or a bare variant name) -> ConfigDict over `defaults` (big_vision style). A key that is not in
    `defaults` is refused (ValueError: one error line naming the keys), never silently carried."""
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for part in arg.split(","):
        if "=" not in part:
            out.variant = part
            continue
        k, v = part.split("=", 1)
        if k not in defaults:
            raise ValueError(f"unknown config argument {k!r} in {arg!r}; this file takes "
                             f"{', '.join(sorted(defaults))} (e.g. {next(iter(defaults))}=...)")
        out[k] = type(defaults[k])(v) if defaults[k] is not None else v
    return out


def no_arg(arg: str | None) -> None:
    """A config file without variants refuses one (`configs/tiny.py:foo` would train the default silently)."""
    if arg:
        raise ValueError(f"this file takes no variant or arguments, got {arg!r}; drop ':{arg}'")


HUB_IDS = {"base": "FacebookAI/xlm-roberta-base", "large": "FacebookAI/xlm-roberta-large",
           "xl": "facebook/xlm-roberta-xl", "xxl": "facebook/xlm-roberta-xxl",
           "modernbert-base": "answerdotai/ModernBERT-base", "modernbert-large": "answerdotai/ModernBERT-large",
           # decoder LLMs adapted into diffusion LMs (the paper's LLaMA-13B experiment and small ones for one GPU)
           "llama-13b": "huggyllama/llama-13b", "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
           "smollm2-135m": "HuggingFaceTB/SmolLM2-135M"}
LLMS = ("llama-13b", "qwen2.5-0.5b", "smollm2-135m")
MESH_FOR_SIZE = {"base": {"data": -1, "fsdp": 1, "tensor": 1}, "large": {"data": -1, "fsdp": 1, "tensor": 1},
                 "xl": {"data": 1, "fsdp": -1, "tensor": 1}, "xxl": {"data": 1, "fsdp": -1, "tensor": 1},
                 "modernbert-base": {"data": -1, "fsdp": 1, "tensor": 1},
                 "modernbert-large": {"data": -1, "fsdp": 1, "tensor": 1},
                 "llama-13b": {"data": 1, "fsdp": -1, "tensor": 1}, "qwen2.5-0.5b": {"data": -1, "fsdp": 1, "tensor": 1},
                 "smollm2-135m": {"data": -1, "fsdp": 1, "tensor": 1}}
# What fits a TPU slice, from compiling the real train step for it without the hardware (bench/compile_memory.py
# --tpu; bench/RESULTS.md "TPU pods by compilation"): FSDP over every chip, full remat, scanned layers and the
# gradient accumulation that brought the TPU compiler's per-chip HBM under the chip's.
# (size, slice) -> (grad_accum, the measured peak per chip, the batch it was measured at, diffusion.head_chunk).
# head_chunk 8192: the head fused with the loss in vocabulary chunks (no per-chip [positions x 250,002] logits).
POD_FITS = {("xxl", "v5p-128"): (1, "48.26 of 95 GiB", 2048, 0), ("xxl", "v5e-256"): (1, "7.46 of 16 GiB", 2048, 8192),
            ("xxl", "v4-128"): (2, "10.80 of 16 GiB", 2048, 8192), ("large", "v4-16"): (4, "5.98 of 16 GiB", 512, 0),
            ("llama-13b", "v5p-64"): (1, "82.50 of 95 GiB", 2048, 0),
            ("llama-13b", "v5p-128"): (1, "41.14 of 95 GiB", 2048, 0),
            ("llama-13b", "v5e-256"): (1, "10.44 of 16 GiB", 2048, 0)}
# ModernBERT runs take the recipe of the XLM-R size with the closest parameter count (the paper has no ModernBERT);
# their rows are 2,048 tokens by default (`,max_length=8192` for the full context).
RECIPE_OF = {"modernbert-base": "base", "modernbert-large": "large", "qwen2.5-0.5b": "base", "smollm2-135m": "base",
             "llama-13b": "xl"}
MODERNBERT_MAX_LENGTH = 2048


def model_name(size: str) -> str:
    """The named model config of a size: xlmr-<size>, or the ModernBERT / LLM name itself."""
    return size if size.startswith("modernbert") or size in LLMS else f"xlmr-{size}"


def llm_settings(c: ml_collections.ConfigDict, size: str) -> None:
    """A decoder LLM as the released LLaMA adaptation runs it (docs/FIDELITY.md L-rows): bidirectional, no logit
    shift, `<pad>` / `<mask>` added with mean rows, no dropout (the LLMs have none), the whole vocabulary (no
    output bias to prune through), remat and scanned layers for 13B."""
    c.model.causal, c.model.shift, c.model.mask_token = False, 0, "new"
    c.model.dropout, c.model.prune_vocab = 0.0, False
    if size == "llama-13b":
        c.model.remat, c.model.scan_layers = "full", True


def pod_settings(c: ml_collections.ConfigDict, size: str, pod: str) -> None:
    """`,pod=<slice>` (e.g. v5e-256): the measured fit of `size` on that TPU slice (POD_FITS) set on `c`; a slice
    not measured is an error that names the measured ones and the command that measures it."""
    if (size, pod) not in POD_FITS:
        known = ", ".join(f"{s},pod={p}" for s, p in sorted(POD_FITS))
        raise ValueError(f"no measured fit for {size} on {pod!r} (measured: {known}). Measure it without the "
                         f"hardware: pip install \"jax[tpu]\"; python bench/compile_memory.py --coupled --tpu "
                         f"<topology, e.g. v5e:16x16> --model {model_name(size)} --batch {c.batch_size} "
                         "[--grad-accum N], then set --config.optimizer.grad_accum and --config.mesh.shape.*")
    c.optimizer.grad_accum, c.diffusion.head_chunk = POD_FITS[(size, pod)][0], POD_FITS[(size, pod)][3]
    c.model.remat, c.model.scan_layers = "full", True
    c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})


def paper_finetune(size: str, *, task: str, tokens_per_batch: int, mean_tokens: int, lr: float, steps: int,
                   max_length: int = 512) -> ml_collections.ConfigDict:
    """The paper's finetuning recipe for XLM-R `size`, as its released code runs it (docs/FIDELITY.md):
    AdamW (0.9, 0.98, eps 1e-8, weight decay 0.01), clip 1.0, DeepSpeed's log warm-up over 1% of the steps then a
    constant rate, coupled masks, the loss scaled by T (weight T - (t - 1)), dropout 0.1, bf16, remat for XL+.

    The paper's batch sizes are in tokens (Table 3); ours are in sequences: tokens_per_batch // mean_tokens.
    """
    if size not in HUB_IDS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(HUB_IDS)}")
    c = base_config()
    c.model.init = HUB_IDS[size]
    c.model.name = model_name(size)
    c.model.dtype = "bfloat16"
    c.model.remat = "full" if size in ("xl", "xxl") else "none"
    c.model.scan_layers = size in ("xl", "xxl")
    c.data.task = task
    c.data.max_length = max_length
    c.batch_size = max(8, tokens_per_batch // mean_tokens)
    c.optimizer.lr = lr
    c.optimizer.schedule = "log_warmup_constant"  # scripts/ds_config_zero2.json's WarmupLR wins over inverse_sqrt
    c.optimizer.warmup_ratio = 0.01
    c.optimizer.eps = 1e-8  # the HF Trainer's default adam_epsilon (the scripts do not set it)
    c.diffusion.coupled = True  # src/trainer/dd_trainer.py always calls q_sample_coupled
    c.diffusion.loss_scale = float(c.diffusion.num_timesteps)  # weight T - (t - 1) = T * lambda(t)
    c.diffusion.smoothing_weighting = "constant"  # the released smoothing term: T * mean(-log p), no lambda(t)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 5000
    c.sampler.steps = 50
    c.sampler.fixed_eos = True  # the released canvas: [prompt, <mask> x L, </s>], </s> fixed
    c.mesh.shape = ml_collections.ConfigDict(MESH_FOR_SIZE[size])
    return c


def task_finetune(arg: str | None, *, task: str, table: dict, mean_tokens: int) -> ml_collections.ConfigDict:
    """A task-specific finetuning config (paper Table 3): `arg` is a size, optionally with `,scratch` (random
    init with XLM-R's tokenizer, label smoothing 0.1) and `,pod=<TPU slice>` (`pod_settings`). `table` maps
    size -> (tokens per batch, lr, steps)."""
    if arg in BASELINES:
        return baseline(arg, task=task, table=table, mean_tokens=mean_tokens)
    parts = (arg or "base").split(",")
    scratch = "scratch" in parts
    pods = [p.split("=", 1)[1] for p in parts if p.startswith("pod=")]
    sizes = [p for p in parts if p != "scratch" and not p.startswith("pod=")]
    size = sizes[0] if sizes else "base"
    if RECIPE_OF.get(size, size) not in table:
        raise ValueError(f"unknown size {size!r} in {arg!r}; choose one of {sorted([*table, *RECIPE_OF])} "
                         f"(optionally ',scratch') or a Table 1 baseline {list(BASELINES)}")
    tokens, lr, steps = table[RECIPE_OF.get(size, size)]
    c = paper_finetune(size, task=task, tokens_per_batch=tokens, mean_tokens=mean_tokens, lr=lr, steps=steps)
    c.model.prune_vocab = True  # the released remove_redundant_embeddings: the training set's ids (paper A.1)
    if size in LLMS:
        llm_settings(c, size)
    if pods:
        pod_settings(c, size, pods[0])
    if scratch:
        c.model.init, c.model.tokenizer = "random", HUB_IDS["base"]
        c.diffusion.label_smoothing = 0.1
    return c


# Table 1's baselines trained from scratch (`,variant` of the task configs). Encoder-decoders: fairseq's
# translation example recipe (Adam 0.9 / 0.98, inverse-sqrt with 4,000 warm-up updates, label smoothing 0.1, weight
# decay 1e-4, no clipping), (model, lr, dropout, tokens per batch, updates); the paper states none of it
# (docs/FIDELITY.md B-rows).
ENC_DEC = {"transformer_iwslt": ("transformer-iwslt", 5e-4, 0.3, 4_096, 100_000),
           "transformer_base": ("transformer-base", 7e-4, 0.1, 32_768, 300_000)}


def baseline(variant: str, *, task: str, table: dict, mean_tokens: int) -> ml_collections.ConfigDict:
    """A Table 1 baseline: `ar_decoder` (decoder-only AR on the XLM-R-BASE shape, from scratch, the base row's
    recipe), `transformer_iwslt` / `transformer_base` (encoder-decoder, AR) or the same with `_rdm` (RDM), all
    with XLM-R's tokenizer and the training set's vocabulary."""
    if variant == "ar_decoder":
        c = task_finetune("base,scratch", task=task, table=table, mean_tokens=mean_tokens)
        c.objective, c.model.causal, c.ar.label_smoothing = "ar", True, 0.1
        c.diffusion.label_smoothing = 0.0
        return c
    rdm = variant.endswith("_rdm")
    name, lr, dropout, tokens, steps = ENC_DEC[variant.removesuffix("_rdm")]
    c = task_finetune("base,scratch", task=task, table=table, mean_tokens=mean_tokens)
    c.model.name, c.model.dtype, c.model.dropout = name, "float32", dropout
    c.model.attention_dropout = 0.0
    c.batch_size, c.num_train_steps = max(8, tokens // mean_tokens), steps
    c.optimizer.update(lr=lr, schedule="inverse_sqrt", warmup_steps=4000, warmup_ratio=0.0, warmup_init_lr=0.0,
                       b1=0.9, b2=0.98, eps=1e-8, weight_decay=1e-4, clip_norm=0.0)
    if not rdm:
        c.objective, c.model.causal, c.ar.label_smoothing = "ar", True, 0.1
        c.diffusion.label_smoothing = 0.0
    return c


BASELINES = ("ar_decoder", "transformer_iwslt", "transformer_iwslt_rdm", "transformer_base", "transformer_base_rdm")


def instruction_finetune(arg: str | None, *, task: str, table: dict) -> ml_collections.ConfigDict:
    """An instruction-finetuning config on a streamed mixture (paper Table 4): `table` maps size ->
    (batch in sequences, lr, steps). Examples over 512 tokens lose the left of their prompt, as the released
    Flan loader (`src/data/dd_data.py` FlanV2Dataset) left-truncates them; the response stays whole.
    `,pod=<TPU slice>`: the slice's measured fit (`pod_settings`)."""
    a = parse_arg(arg or "base", variant="base", max_length=0, pod="")
    recipe = a.variant if a.variant in table else RECIPE_OF.get(a.variant, a.variant)
    if recipe not in table:
        raise ValueError(f"unknown variant {a.variant!r} in {arg!r}; choose one of {sorted([*table, *RECIPE_OF])}")
    batch, lr, steps = table[recipe]
    max_length = a.max_length or (MODERNBERT_MAX_LENGTH if a.variant.startswith("modernbert") else 512)
    c = paper_finetune(a.variant, task=task, tokens_per_batch=batch, mean_tokens=1, lr=lr, steps=steps,
                       max_length=max_length)
    c.batch_size = batch
    c.data.cache = False  # stream the mixture (seeded, resumable)
    c.data.overlong = "truncate_prompt"
    c.data.eval_split = ""
    c.eval_every_steps = 0
    if a.variant in LLMS:
        llm_settings(c, a.variant)
    if a.pod:
        pod_settings(c, a.variant, a.pod)
    return c
