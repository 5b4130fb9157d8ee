"""Shared config blocks. Every experiment config is `get_config(arg)` returning a ConfigDict with these fields."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults):
    """"a=1,b=x" (or a bare variant name) -> ConfigDict over `defaults` (big_vision style)."""
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for part in arg.split(","):
        if "=" not in part:
            out.variant = part
            continue
        k, v = part.split("=", 1)
        out[k] = type(defaults[k])(v) if k in defaults and defaults[k] is not None else v
    return out


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stage = "diffusion"  # or "length" (the length-predictor stage)
    c.num_train_steps = 1000
    c.batch_size = 64  # global, in sequences
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.eval_every_steps = 0  # 0: no periodic validation
    c.max_bad_steps = 10  # non-finite steps in a row before training stops
    c.peak_tflops = 0.0  # per device, for MFU; 0: looked up from the device kind
    # XLA's persistent compilation cache (a local path or gs://...): a resumed, preempted or repeated run loads its
    # compiled programs instead of recompiling them. "": jax's own setting (env JAX_COMPILATION_CACHE_DIR).
    c.compilation_cache_dir = ""
    c.prng_impl = "threefry2x32"  # dropout's generator; unsafe_rbg is much faster on GPUs (bench/RESULTS.md)

    c.model = ml_collections.ConfigDict()
    c.model.init = "random"  # an HF model directory, a hub id, or "random" (then model.name and model.tokenizer)
    c.model.name = "xlmr-base"
    c.model.tokenizer = ""
    c.model.dtype = "float32"  # compute dtype: bfloat16 on accelerators; params stay float32
    c.model.remat = "none"  # none | full | dots | minimal
    c.model.scan_layers = False
    c.model.attention = "einsum"  # einsum | xla | cudnn (fused flash attention on NVIDIA GPUs; needs dropout 0 in it)
    c.model.head_vocab_multiple = 1  # 128 on GPUs: the output product on an aligned, padded table (same results)
    c.model.prune_vocab = False
    c.model.prune_min_count = 1  # with prune_vocab: keep ids seen at least this often in the training set
    c.model.dropout = 0.1
    c.model.attention_dropout = ml_collections.config_dict.placeholder(float)  # None: model.dropout
    c.model.overrides = ml_collections.ConfigDict()  # any ModelConfig field, e.g. hidden_size for tests

    c.data = ml_collections.ConfigDict()
    c.data.task = "ding_de_en"
    c.data.max_length = 512
    c.data.overlong = "skip"  # or truncate_prompt
    c.data.cache = True  # tokenize the train split once (finite tasks); False streams (mixtures)
    c.data.pack = False  # several examples per row (segment ids; attention and positions stay per example)
    c.data.train_limit = 0
    c.data.eval_split = "validation"
    c.data.eval_examples = 200

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 5e-5
    c.optimizer.schedule = "inverse_sqrt"  # the paper code's; or warmup_cosine, constant
    c.optimizer.warmup_steps = 1000
    c.optimizer.warmup_init_lr = 1e-7
    c.optimizer.end_lr = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-6
    c.optimizer.weight_decay = 0.01
    c.optimizer.clip_norm = 1.0
    c.optimizer.grad_accum = 1

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 50
    c.diffusion.weighting = "linear"
    c.diffusion.coupled = False
    c.diffusion.label_smoothing = 0.0  # 0.1 from scratch
    c.diffusion.max_predictions = 0  # head evaluations per pool of rows; 0: every position
    c.diffusion.pool_rows = 1  # rows whose masked positions share max_predictions; 0: one pool per data shard

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.mesh.rules = ()  # () = dlm_jax.model.axes.DEFAULT_RULES

    c.sampler = ml_collections.ConfigDict()
    c.sampler.steps = 10
    c.sampler.strategy = "reparam-uncond-deterministic-cosine"
    c.sampler.argmax = True
    c.sampler.temperature = 1.0
    c.sampler.threshold = ml_collections.FieldReference(None, field_type=float)
    c.sampler.record_trajectory = False
    return c


HUB_IDS = {"base": "FacebookAI/xlm-roberta-base", "large": "FacebookAI/xlm-roberta-large",
           "xl": "facebook/xlm-roberta-xl", "xxl": "facebook/xlm-roberta-xxl"}
MESH_FOR_SIZE = {"base": {"data": -1, "fsdp": 1, "tensor": 1}, "large": {"data": -1, "fsdp": 1, "tensor": 1},
                 "xl": {"data": 1, "fsdp": -1, "tensor": 1}, "xxl": {"data": 1, "fsdp": -1, "tensor": 1}}


def paper_finetune(size: str, *, task: str, tokens_per_batch: int, mean_tokens: int, lr: float, steps: int,
                   max_length: int = 512) -> ml_collections.ConfigDict:
    """The paper's finetuning recipe for XLM-R `size`: Adam, inverse-sqrt warmup, dropout 0.1, bf16, remat for XL+.

    The paper's batch sizes are in tokens (Table 3); ours are in sequences: tokens_per_batch // mean_tokens.
    """
    if size not in HUB_IDS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(HUB_IDS)}")
    c = base_config()
    c.model.init = HUB_IDS[size]
    c.model.name = f"xlmr-{size}"
    c.model.dtype = "bfloat16"
    c.model.remat = "full" if size in ("xl", "xxl") else "none"
    c.model.scan_layers = size in ("xl", "xxl")
    c.data.task = task
    c.data.max_length = max_length
    c.batch_size = max(8, tokens_per_batch // mean_tokens)
    c.optimizer.lr = lr
    c.optimizer.schedule = "inverse_sqrt"
    c.optimizer.warmup_steps = 10_000 if steps > 20_000 else max(steps // 10, 100)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 5000
    c.sampler.steps = 50
    c.mesh.shape = ml_collections.ConfigDict(MESH_FOR_SIZE[size])
    return c


def task_finetune(arg: str | None, *, task: str, table: dict, mean_tokens: int) -> ml_collections.ConfigDict:
    """A task-specific finetuning config (paper Table 3): `arg` is a size, optionally with `,scratch` (random
    init with XLM-R's tokenizer, label smoothing 0.1). `table` maps size -> (tokens per batch, lr, steps)."""
    parts = (arg or "base").split(",")
    scratch = "scratch" in parts
    sizes = [p for p in parts if p != "scratch"]
    size = sizes[0] if sizes else "base"
    if size not in table:
        raise ValueError(f"unknown size {size!r} in {arg!r}; choose one of {sorted(table)} (optionally ',scratch')")
    tokens, lr, steps = table[size]
    c = paper_finetune(size, task=task, tokens_per_batch=tokens, mean_tokens=mean_tokens, lr=lr, steps=steps)
    if scratch:
        c.model.init, c.model.tokenizer = "random", HUB_IDS["base"]
        c.diffusion.label_smoothing = 0.1
    return c


def instruction_finetune(arg: str | None, *, task: str, table: dict) -> ml_collections.ConfigDict:
    """An instruction-finetuning config on a streamed mixture (paper Table 4): `table` maps size ->
    (batch in sequences, lr, steps). Examples over 512 tokens are skipped, as in the paper."""
    a = parse_arg(arg or "base", variant="base")
    batch, lr, steps = table[a.variant]
    c = paper_finetune(a.variant, task=task, tokens_per_batch=batch, mean_tokens=1, lr=lr, steps=steps)
    c.batch_size = batch
    c.data.cache = False  # stream the mixture (seeded, resumable)
    c.data.overlong = "skip"
    c.data.eval_split = ""
    c.eval_every_steps = 0
    return c
