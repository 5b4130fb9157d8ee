"""The run config: its schema and defaults (`base_config`), and its one reader (`parse`).

Experiment files (`configs/*.py`) start from `base_config()` and the command line overrides it
(`--config.key=value`). `parse` then turns the ConfigDict into typed, validated settings, once, before anything
is compiled or written; every error names the key and the fix. Nothing else in the package reads the ConfigDict:
the trainer, the run directory and inference take a `RunConfig`.

The walk of a value from the command line: `--config.sampler.steps=10` -> ConfigDict -> `parse` ->
`RunConfig.sampler` (a `diffusion.SamplerConfig`) -> the sampler; `--config.optimizer.lr=1e-4` -> `parse` ->
`RunConfig.optimizer` (an `OptimizerConfig`) -> `training.step.build_optimizer`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import jax
import ml_collections

from dlm_jax.data.features import FeatureSpec
from dlm_jax.diffusion import DecodeConfig, RDMConfig, SamplerConfig
from dlm_jax.errors import ConfigError
from dlm_jax.model import ModelConfig, get_config as get_model_config, unread_checkpoint_config
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.model.configs import mask_row
from dlm_jax.parallel import batch_mesh_axes, data_parallel_size, resolve_mesh_shape

PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
STAGES = ("diffusion", "length")
OBJECTIVES = ("rdm", "ar")
SCHEDULES = ("log_warmup_constant", "inverse_sqrt", "warmup_cosine", "constant")
WORKDIR_INIT = "workdir:"


# --------------------------------------------------------------------------------------------------------------
# The schema and its defaults
# --------------------------------------------------------------------------------------------------------------
def base_config() -> ml_collections.ConfigDict:
    """Every key a run config has, with its default. Experiment files start from this."""
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
    # Resuming a run whose saved config differs in a key that changes what is computed (COMPUTATION_KEYS) is
    # refused unless this is True; every change is recorded in WORKDIR/config_history.jsonl either way.
    c.allow_config_change = False
    # What the diffusion stage trains: "rdm" (the paper's objective) or "ar" (next-token cross-entropy on the
    # response, for the autoregressive baselines of Table 1; usually with model.causal=True).
    c.objective = "rdm"
    c.ar = ml_collections.ConfigDict({"label_smoothing": 0.0})  # the "ar" objective's (0.1 from scratch, fairseq)
    c.model = _model_block()
    c.data = _data_block()
    c.optimizer = _optimizer_block()
    c.diffusion = _diffusion_block()
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.mesh.rules = ()  # () = dlm_jax.model.axes.DEFAULT_RULES
    c.sampler = _sampler_block()
    # How runs with objective "ar" decode (KV cache; fairseq-generate's settings, `diffusion.DecodeConfig`):
    # beam_size 1 is greedy (temperature > 0: sampled); at most max_len_a * prompt tokens + max_len_b response tokens.
    c.decoding = ml_collections.ConfigDict({"beam_size": 5, "length_penalty": 1.0, "max_len_a": 0.0,
                                            "max_len_b": 200, "temperature": 0.0})
    return c


def _model_block() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.init = "random"  # an HF model directory, a hub id, "bundled", "workdir:DIR", or "random" (model.name + tokenizer)
    m.name = "xlmr-base"
    m.tokenizer = ""
    m.dtype = "float32"  # compute dtype: bfloat16 on accelerators; params stay float32
    m.remat = "none"  # none | full | dots | minimal
    m.scan_layers = False
    m.attention = "einsum"  # einsum | xla | cudnn (fused flash attention on NVIDIA GPUs; needs dropout 0 in it)
    m.head_vocab_multiple = 1  # 128 on GPUs: the output product on an aligned, padded table (same results)
    m.causal = False  # left-to-right attention (the decoder-only AR baseline); bidirectional for diffusion
    # bidirectional (the paper's) | prompt_prefix (the prompt never sees the response: an exact prefix cache)
    m.attention_layout = "bidirectional"
    # Decoder LLMs adapted into diffusion LMs (Llama / Qwen2): `shift` 0 = position i predicts token i (the released
    # LLaMA adaptation), 1 = position i - 1 predicts it (Dream / DiffuLLaMA); `mask_token` "new" adds `<mask>` (and
    # `<pad>` where missing) with input / output rows initialised to the mean of the others (released
    # src/utils.py), or names an existing token to use as the mask (e.g. "<|reserved_special_token_0|>"), or an
    # existing id "id:N" (also a row beyond the tokenizer, e.g. a padded Qwen row: kept as trained, the id saved with
    # the run as ModelConfig.mask_token_id).
    m.shift = 0
    m.mask_token = "new"
    m.prune_vocab = False
    m.prune_min_count = 1  # with prune_vocab: keep ids seen at least this often in the training set
    m.dropout = 0.1
    m.attention_dropout = ml_collections.config_dict.placeholder(float)  # None: model.dropout
    m.overrides = ml_collections.ConfigDict()  # any ModelConfig field, e.g. hidden_size for tests
    return m


def _data_block() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.task = "ding_de_en"
    d.max_length = 512
    d.overlong = "skip"  # or truncate_prompt
    d.cache = True  # tokenize the train split once (finite tasks); False streams (mixtures)
    # streams (cache=False): "indexed" samples tasks and examples by index (constant-time resume, pipeline.
    # IndexedBatches), "seqio" reads seqio's shuffled stream (resuming re-reads what was consumed), "auto": indexed
    # where every task allows random access
    d.stream = "auto"
    d.pack = False  # several examples per row (segment ids; attention and positions stay per example)
    d.train_limit = 0
    d.eval_split = "validation"
    d.eval_examples = 200
    # periodic evaluation: "" = the training task on eval_split (oracle length, the run's sampler steps); else
    # comma-separated tasks / mixtures, each with its own protocol (split, steps, length rule, metric)
    d.eval_tasks = ""
    return d


def _optimizer_block() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.lr = 5e-5
    # log_warmup_constant: what the released code runs (DeepSpeed WarmupLR: log warm-up, then constant);
    # inverse_sqrt (fairseq), warmup_cosine, constant (linear warm-up, then constant)
    o.schedule = "inverse_sqrt"
    o.warmup_steps = 1000
    o.warmup_ratio = 0.0  # > 0: warm-up over ceil(ratio * num_train_steps) steps instead (HF's warmup_ratio)
    o.warmup_init_lr = 1e-7
    o.end_lr = 0.0
    o.b1 = 0.9
    o.b2 = 0.98
    o.eps = 1e-6
    o.weight_decay = 0.01
    o.clip_norm = 1.0
    o.grad_accum = 1
    return o


def _diffusion_block() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.num_timesteps = 50
    d.weighting = "linear"
    d.coupled = False  # the released trainer always couples (two masks per sequence: the batch doubles)
    d.loss_scale = 1.0  # the released weight T - (t - 1) is T * lambda(t): loss_scale = num_timesteps
    d.label_smoothing = 0.0  # 0.1 from scratch
    d.smoothing_weighting = "lambda"  # "constant": the released smoothing term's weight (not lambda(t))
    d.max_predictions = 0  # head evaluations per pool of rows; 0: every position
    d.pool_rows = 1  # rows whose masked positions share max_predictions; 0: one pool per data shard
    d.head_chunk = 0  # >0: the head fused with the loss, this many vocabulary rows at a time (no whole logits)
    return d


def _sampler_block() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.steps = 10
    s.strategy = "reparam-uncond-deterministic-cosine"
    s.argmax = True
    s.temperature = 1.0
    s.threshold = ml_collections.FieldReference(None, field_type=float)
    s.record_trajectory = False
    s.fixed_eos = False  # True: the released canvas, [prompt, <mask> x (L-1), </s>] with </s> fixed
    s.cache = "none"  # none | prefix | dual: the sampler's cache of keys and values (inference/prefix_cache.py)
    s.block_length = 0  # B > 0: semi-autoregressive, B response positions at a time (LLaDA), `steps` steps each
    return s


# Keys whose change on resume changes what the run computes (model shape, batch, task, objective, optimizer): a
# resume that changes one is refused unless `allow_config_change`. Others (steps, logging, mesh, dtype, attention
# kernel, cache, sampler) may change freely.
COMPUTATION_KEYS = ("seed", "stage", "objective", "ar", "model.causal", "model.attention_layout", "model.shift", "model.mask_token", "batch_size", "model.init", "model.name",
                    "model.overrides", "model.tokenizer",
                    "model.prune_vocab", "model.prune_min_count", "model.dropout", "model.attention_dropout",
                    "data.task", "data.max_length", "data.overlong", "data.pack", "data.train_limit", "diffusion",
                    "optimizer")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v and k != "overrides":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = json.loads(json.dumps(v, default=str))  # tuples as lists, as config.json holds them
    return out


def config_changes(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, new value)} for every key that differs (`allow_config_change` aside)."""
    a, b = _flat(saved.to_dict()), _flat(new.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k != "allow_config_change"}


def computation_changes(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """The changes among `COMPUTATION_KEYS` (a key or any key under it)."""
    return {k: v for k, v in changes.items()
            if any(k == c or k.startswith(c + ".") for c in COMPUTATION_KEYS)}


def load_saved(text: str) -> ml_collections.ConfigDict:
    """A run's saved config.json over `base_config()` (keys a run saved before they existed take their default)."""
    out = base_config()
    _merge(out, json.loads(text))
    return out


def _merge(node: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(node.get(key), ml_collections.ConfigDict):
            _merge(node[key], value)
        elif isinstance(node.get(key), tuple) and isinstance(value, list):
            node[key] = _tuples(value)
        else:
            node[key] = value


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples they were saved from (nested)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# --------------------------------------------------------------------------------------------------------------
# Typed settings
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Where the weights come from and the `ModelConfig` fields the run overrides.

    Attributes:
      init: an HF directory / hub id, "bundled", "workdir:DIR" (a dlm_jax run) or "random".
      name: the named config of a random init (`dlm_jax.model.NAMED_CONFIGS`).
      tokenizer: tokenizer source of a random init ("bundled", a directory or hub id).
      overrides: ModelConfig fields (dtype, remat, attention, dropouts, ... and model.overrides).
      prune_vocab, prune_min_count: keep only the training set's ids seen at least this often.
    """

    init: str
    name: str
    tokenizer: str
    overrides: Mapping[str, Any]
    prune_vocab: bool
    prune_min_count: int
    mask_token: str = "new"  # decoder LLMs: "new", an existing token used as the mask, or an existing id "id:N"

    @property
    def init_workdir(self) -> str | None:
        """DIR of `init="workdir:DIR"`, else None."""
        return self.init[len(WORKDIR_INIT):] if self.init.startswith(WORKDIR_INIT) else None

    def apply(self, base: ModelConfig) -> ModelConfig:
        """`base` (from the checkpoint or the named config) with this run's overrides."""
        try:
            return base.replace(**self.overrides)
        except TypeError as e:  # an override that is not a ModelConfig field
            fields = [f.name for f in dataclasses.fields(ModelConfig)]
            raise ConfigError(f"model.overrides: {e}; the fields are {fields}") from None


@dataclasses.dataclass(frozen=True)
class DataSettings:
    task: str
    max_length: int
    overlong: str
    cache: bool
    pack: bool
    train_limit: int | None
    eval_split: str
    eval_examples: int
    eval_tasks: tuple[str, ...] = ()
    stream: str = "auto"

    def feature_spec(self, vocab: Any, model_max_length: int, *, overlong: str | None = None,
                     separator: bool = False) -> FeatureSpec:
        """Row layout for this run: at most the model's position limit, the tokenizer's special ids; `overlong`
        (default: `data.overlong`) is "skip" for evaluation, as in the paper; `separator`: `</s>` after the prompt
        (the encoder-decoder's rows)."""
        return FeatureSpec(max_length=min(self.max_length, model_max_length), bos_id=vocab.bos_id,
                           eos_id=vocab.eos_id, pad_id=vocab.pad_id, overlong=overlong or self.overlong,
                           separator=separator)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with global-norm clipping and a warm-up schedule (`training.step.build_optimizer`)."""

    lr: float
    schedule: str
    warmup_steps: int  # resolved: from warmup_ratio when that is set
    warmup_init_lr: float
    end_lr: float
    b1: float
    b2: float
    eps: float
    weight_decay: float
    clip_norm: float
    grad_accum: int


@dataclasses.dataclass(frozen=True)
class DiffusionSettings:
    """The RDM objective's settings; `rdm(mask_id)` completes them with the (possibly pruned) mask id."""

    num_timesteps: int
    weighting: str
    coupled: bool
    loss_scale: float
    label_smoothing: float
    smoothing_weighting: str
    max_predictions: int | None
    pool_rows: int  # resolved: 0 in the config means the rows of one data shard's micro-batch
    head_chunk: int = 0  # vocabulary rows per chunk of the fused head + loss; 0: whole logits

    def rdm(self, mask_id: int) -> RDMConfig:
        return RDMConfig(mask_id=mask_id, num_timesteps=self.num_timesteps, weighting=self.weighting,
                         coupled=self.coupled, loss_scale=self.loss_scale, label_smoothing=self.label_smoothing,
                         smoothing_weighting=self.smoothing_weighting, max_predictions=self.max_predictions,
                         pool_rows=self.pool_rows, head_chunk=self.head_chunk)


@dataclasses.dataclass(frozen=True)
class MeshSettings:
    shape: Mapping[str, int]  # as configured (one axis may be -1)
    rules: tuple
    sizes: Mapping[str, int]  # resolved on this run's devices
    data_parallel_size: int  # ways the batch is split, from the rules


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run reads, typed and validated (`parse`)."""

    seed: int
    stage: str
    num_train_steps: int
    batch_size: int
    log_every_steps: int
    checkpoint_every_steps: int
    keep_checkpoints: int
    eval_every_steps: int
    max_bad_steps: int
    peak_tflops: float | None
    compilation_cache_dir: str | None
    prng_impl: str
    objective: str
    ar_label_smoothing: float
    model: ModelSettings
    data: DataSettings
    optimizer: OptimizerConfig
    diffusion: DiffusionSettings
    mesh: MeshSettings
    sampler: SamplerConfig
    decoding: DecodeConfig
    source: ml_collections.ConfigDict = dataclasses.field(compare=False, repr=False)  # written as config.json

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.optimizer.grad_accum

    def to_json(self) -> str:
        return self.source.to_json_best_effort(indent=2)


# --------------------------------------------------------------------------------------------------------------
# parse: the one reader of the ConfigDict
# --------------------------------------------------------------------------------------------------------------
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def model_overrides(m: ml_collections.ConfigDict) -> dict[str, Any]:
    """The ModelConfig fields `model.*` sets: dtype, remat, scan_layers, attention, head_vocab_multiple, the
    dropouts, plus anything in `model.overrides`."""
    out = dict(m.overrides.to_dict() if isinstance(m.overrides, ml_collections.ConfigDict) else m.overrides or {})
    out.update(dtype=m.dtype, remat=m.remat, scan_layers=m.scan_layers, attention=m.attention,
               head_vocab_multiple=m.head_vocab_multiple, causal=bool(m.get("causal", False)),
               shift=int(m.get("shift", 0)), attention_layout=str(m.get("attention_layout", "bidirectional")))
    if m.dropout is not None:
        out.update(hidden_dropout=m.dropout, attention_dropout=m.dropout)
    if m.attention_dropout is not None:  # e.g. 0 with the fused (cudnn) attention
        out.update(attention_dropout=m.attention_dropout)
    return out


def _model(c: ml_collections.ConfigDict) -> ModelSettings:
    m = c.model
    out = ModelSettings(init=m.init, name=m.name, tokenizer=m.tokenizer, overrides=model_overrides(m),
                        prune_vocab=bool(m.prune_vocab), prune_min_count=int(m.prune_min_count),
                        mask_token=str(m.get("mask_token", "new")))
    mask_row(out.mask_token)  # a malformed "id:..." is one error line here, before anything is built
    attn_drop = out.overrides.get("attention_dropout")
    _need(m.attention == "einsum" or c.stage != "diffusion" or not attn_drop,
          f"model.attention={m.attention!r} has no attention-probability dropout, but it would be {attn_drop}; set "
          "--config.model.attention_dropout=0 (hidden dropout stays model.dropout) or model.attention=einsum")
    # The model.* values as ModelConfig reads them, checked on the named config (or the defaults, for a
    # checkpoint whose own config is read later).
    # (a checkpoint's family is known only when it is read: model.shift is checked there against it)
    out.apply(get_model_config(m.name) if m.init == "random" else unread_checkpoint_config(out.overrides))
    return out


def _data(c: ml_collections.ConfigDict) -> DataSettings:
    d = c.data
    if d.pack:
        _need(d.cache and c.stage == "diffusion",
              "data.pack=True needs data.cache=True and stage='diffusion' (packing works on the in-memory training "
              "split; the length stage reads one prompt per row); set --config.data.pack=False")
    FeatureSpec(max_length=d.max_length, bos_id=0, eos_id=0, pad_id=0, overlong=d.overlong)  # checks both
    _need(d.get("stream", "auto") in ("auto", "indexed", "seqio"),
          f"data.stream={d.get('stream')!r}; choose auto, indexed or seqio")
    return DataSettings(task=d.task, max_length=d.max_length, overlong=d.overlong, cache=bool(d.cache),
                        pack=bool(d.pack), train_limit=d.train_limit or None, eval_split=d.eval_split,
                        eval_examples=d.eval_examples,
                        eval_tasks=tuple(t.strip() for t in d.get("eval_tasks", "").split(",") if t.strip()),
                        stream=d.get("stream", "auto"))


def _optimizer(c: ml_collections.ConfigDict) -> OptimizerConfig:
    o = c.optimizer
    _need(o.grad_accum >= 1, "optimizer.grad_accum must be >= 1")
    _need(c.batch_size % o.grad_accum == 0,
          f"batch_size={c.batch_size} is not divisible by optimizer.grad_accum={o.grad_accum}")
    _need(o.lr > 0, f"optimizer.lr={o.lr} must be positive")
    _need(o.schedule in SCHEDULES, f"optimizer.schedule={o.schedule!r}; choose one of {list(SCHEDULES)}")
    _need(0.0 <= o.warmup_ratio < 1.0, f"optimizer.warmup_ratio={o.warmup_ratio} must be in [0, 1)")
    warmup = math.ceil(o.warmup_ratio * c.num_train_steps) if o.warmup_ratio else max(int(o.warmup_steps), 0)
    return OptimizerConfig(lr=float(o.lr), schedule=o.schedule, warmup_steps=warmup,
                           warmup_init_lr=float(o.warmup_init_lr), end_lr=float(o.end_lr), b1=float(o.b1),
                           b2=float(o.b2), eps=float(o.eps), weight_decay=float(o.weight_decay),
                           clip_norm=float(o.clip_norm or 0.0), grad_accum=int(o.grad_accum))


def _mesh(c: ml_collections.ConfigDict, num_devices: int) -> MeshSettings:
    shape = dict(c.mesh.shape)
    rules = (tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in c.mesh.rules)
             if c.mesh.rules else DEFAULT_RULES)
    sizes = resolve_mesh_shape(shape, num_devices)
    return MeshSettings(shape=shape, rules=rules, sizes=sizes, data_parallel_size=data_parallel_size(sizes, rules))


def _diffusion(c: ml_collections.ConfigDict, mesh: MeshSettings) -> DiffusionSettings:
    d = c.diffusion
    micro = c.batch_size // c.optimizer.grad_accum
    dp = mesh.data_parallel_size
    _need(micro % dp == 0, f"batch_size={c.batch_size} (micro-batch {micro}) is not divisible by the data-parallel "
                           f"size {dp} (mesh axes {list(batch_mesh_axes(mesh.rules))}, which the rules split the batch over); "
                           "change batch_size or mesh.shape")
    pool = d.pool_rows
    _need(pool >= 0 and (pool == 0 or (micro // dp) % pool == 0),
          f"diffusion.pool_rows={pool} must divide the rows each data shard gets per micro-batch ({micro // dp}); "
          "use 0 for one pool per shard, or 1 for per-row head capacity")
    out = DiffusionSettings(num_timesteps=d.num_timesteps, weighting=d.weighting, coupled=bool(d.coupled),
                            loss_scale=float(d.loss_scale), label_smoothing=float(d.label_smoothing),
                            smoothing_weighting=d.smoothing_weighting, max_predictions=d.max_predictions or None,
                            pool_rows=pool or micro // dp, head_chunk=int(d.head_chunk))
    out.rdm(mask_id=0)  # RDMConfig's own checks
    return out


def parse(c: ml_collections.ConfigDict, *, num_devices: int | None = None,
          num_processes: int | None = None) -> RunConfig:
    """Reads and checks every value of `c` once; raises `ConfigError` naming the key and the fix."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
    _need(c.num_train_steps > 0, f"num_train_steps={c.num_train_steps} would train nothing; give a positive number "
                                 "of steps (--config.num_train_steps=N)")
    _need(c.batch_size > 0, f"batch_size={c.batch_size} must be positive")
    _need(c.stage in STAGES, f"stage={c.stage!r}; choose 'diffusion' or 'length'")
    _need(c.objective in OBJECTIVES, f"objective={c.objective!r}; choose one of {list(OBJECTIVES)}")
    _need(0.0 <= c.ar.label_smoothing < 1.0, f"ar.label_smoothing={c.ar.label_smoothing} must be in [0, 1)")
    _need(c.log_every_steps > 0 and c.checkpoint_every_steps > 0,
          "log_every_steps and checkpoint_every_steps must be positive")
    _need(c.prng_impl in PRNG_IMPLS, f"prng_impl={c.prng_impl!r}; choose one of {list(PRNG_IMPLS)}")
    _need(c.batch_size % num_processes == 0,
          f"batch_size={c.batch_size} must be divisible by the number of processes ({num_processes})")
    optimizer = _optimizer(c)
    mesh = _mesh(c, num_devices)
    return RunConfig(
        seed=c.seed, stage=c.stage, num_train_steps=c.num_train_steps, batch_size=c.batch_size,
        log_every_steps=c.log_every_steps, checkpoint_every_steps=c.checkpoint_every_steps,
        keep_checkpoints=c.keep_checkpoints, eval_every_steps=c.eval_every_steps, max_bad_steps=c.max_bad_steps,
        peak_tflops=c.peak_tflops or None, compilation_cache_dir=c.compilation_cache_dir or None,
        prng_impl=c.prng_impl, objective=c.objective, ar_label_smoothing=float(c.ar.label_smoothing),
        model=_model(c), data=_data(c), optimizer=optimizer,
        diffusion=_diffusion(c, mesh), mesh=mesh, sampler=SamplerConfig(**c.sampler.to_dict()),
        decoding=DecodeConfig(**c.decoding.to_dict()), source=c)
