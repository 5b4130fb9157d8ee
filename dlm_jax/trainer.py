"""Training: setup (mesh, data, model, sharded state) and the loop (metrics, checkpoints, preemption, eval).

The step itself (optimizer, losses, FLOPs) is `dlm_jax.step`. The loop reads: setup (mesh, data, model, state)
-> restore -> for each step: batch -> step -> log / eval / save.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dlm_jax import checkpoint, parallel
from dlm_jax.data import features as F
from dlm_jax.data import pipeline, vocab as vocab_lib
from dlm_jax.diffusion import RDMConfig, SamplerConfig
from dlm_jax.diffusion.objective import bucket_names
from dlm_jax.model import MaskedLM, ModelConfig
from dlm_jax.model import get_config as get_model_config
from dlm_jax.model.length import LengthPredictor
from dlm_jax.model.prune import VocabMap, prune_params
from dlm_jax.setup import build_model, model_overrides, rules_from_config
from dlm_jax.step import (State, build_optimizer, diffusion_loss_fn, length_loss_fn, make_train_step,
                          peak_flops_per_device, train_flops_per_step)

PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


class TrainingError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    config: ml_collections.ConfigDict
    mesh: Any
    rules: Any
    model: MaskedLM
    tokenizer: Any
    vocab: vocab_lib.HFVocabulary
    spec: F.FeatureSpec
    vocab_map: VocabMap | None
    state: State
    frozen: Any
    train_data: Any
    eval_examples: pipeline.Examples | None
    step_fn: Callable
    schedule: optax.Schedule
    length_head: LengthPredictor | None = None


def _validate_model_fields(config: ml_collections.ConfigDict) -> None:
    """The model.* values as `ModelConfig` reads them (dtype, attention, head_vocab_multiple, overrides), checked
    on the named config (or the defaults, for a checkpoint whose own config is read later)."""
    base = get_model_config(config.model.name) if config.model.init == "random" else ModelConfig()
    try:
        base.replace(**model_overrides(config))
    except TypeError as e:  # an override that is not a ModelConfig field
        raise ValueError(f"model.overrides: {e}; the fields are {[f.name for f in dataclasses.fields(ModelConfig)]}"
                         ) from None


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks values before anything is compiled; each error names the key and the fix."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)
    need(config.num_train_steps >= 0, f"num_train_steps={config.num_train_steps} must be >= 0")
    need(config.batch_size > 0, f"batch_size={config.batch_size} must be positive")
    need(config.optimizer.grad_accum >= 1, "optimizer.grad_accum must be >= 1")
    need(config.batch_size % config.optimizer.grad_accum == 0,
         f"batch_size={config.batch_size} is not divisible by optimizer.grad_accum={config.optimizer.grad_accum}")
    need(config.stage in ("diffusion", "length"), f"stage={config.stage!r}; choose 'diffusion' or 'length'")
    need(config.log_every_steps > 0 and config.checkpoint_every_steps > 0,
         "log_every_steps and checkpoint_every_steps must be positive")
    need(config.optimizer.lr > 0, f"optimizer.lr={config.optimizer.lr} must be positive")
    if config.data.get("pack"):
        need(config.data.cache and config.stage == "diffusion",
             "data.pack=True needs data.cache=True and stage='diffusion' (packing works on the in-memory training "
             "split; the length stage reads one prompt per row); set --config.data.pack=False")
    SamplerConfig(**config.sampler.to_dict())  # validates strategy etc.
    need(config.get("prng_impl", "threefry2x32") in PRNG_IMPLS,
         f"prng_impl={config.get('prng_impl')!r}; choose one of {list(PRNG_IMPLS)}")
    attention = config.model.get("attention", "einsum")
    attn_drop = model_overrides(config).get("attention_dropout")
    need(attention == "einsum" or config.stage != "diffusion" or not attn_drop,
         f"model.attention={attention!r} has no attention-probability dropout, but it would be {attn_drop}; set "
         "--config.model.attention_dropout=0 (hidden dropout stays model.dropout) or model.attention=einsum")
    _validate_model_fields(config)
    dp = _config_dp_size(config)
    micro = config.batch_size // config.optimizer.grad_accum
    need(micro % dp == 0, f"batch_size={config.batch_size} (micro-batch {micro}) is not divisible by the data-parallel "
                          f"size {dp} (mesh data x fsdp); change batch_size or mesh.shape")
    need(config.batch_size % jax.process_count() == 0, "batch_size must be divisible by the number of processes")
    pool = config.diffusion.get("pool_rows", 1)
    need(pool >= 0 and (pool == 0 or (micro // dp) % pool == 0),
         f"diffusion.pool_rows={pool} must divide the rows each data shard gets per micro-batch ({micro // dp}); "
         "use 0 for one pool per shard, or 1 for per-row head capacity")


def pool_rows(config: ml_collections.ConfigDict) -> int:
    """`diffusion.pool_rows`, with 0 resolved to the rows of one data shard's micro-batch."""
    pool = config.diffusion.get("pool_rows", 1)
    if pool:
        return pool
    return config.batch_size // config.optimizer.grad_accum // _config_dp_size(config)


def _config_dp_size(config: ml_collections.ConfigDict) -> int:
    """Data-parallel size (mesh data x fsdp) of `mesh.shape` on this run's devices."""
    sizes = parallel.resolve_mesh_shape(dict(config.mesh.shape), jax.device_count())
    return sizes["data"] * sizes["fsdp"]


def setup(config: ml_collections.ConfigDict, workdir: Path) -> Setup:
    validate_config(config)
    mesh = parallel.make_mesh(dict(config.mesh.shape))
    rules = rules_from_config(config)
    model, params, tokenizer, mcfg = build_model(config, mesh, rules)
    voc = vocab_lib.set_active_tokenizer(tokenizer)
    spec = F.FeatureSpec(max_length=min(config.data.max_length, mcfg.max_length), bos_id=voc.bos_id,
                         eos_id=voc.eos_id, pad_id=voc.pad_id, overlong=config.data.overlong)
    host_batch = config.batch_size // jax.process_count()
    train_examples = None
    if config.data.cache:
        train_examples = pipeline.load_examples(config.data.task, "train", spec, shard=pipeline.host_shard(),
                                                limit=config.data.get("train_limit") or None)
    eval_examples = None
    if config.eval_every_steps and config.data.eval_split:
        eval_examples = pipeline.load_examples(config.data.task, config.data.eval_split, spec,
                                               limit=config.data.eval_examples)
    vocab_map = None
    if config.model.init.startswith("workdir:"):  # the source run's pruned vocabulary carries over
        src = Path(config.model.init.split(":", 1)[1]) / "vocab_map.npz"
        if src.exists():
            vocab_map = VocabMap.load(src)
            vocab_map.save(workdir / "vocab_map.npz")
            if train_examples is not None:
                train_examples.rows["tokens"] = vocab_map.to_new(train_examples.rows["tokens"])
    elif config.model.prune_vocab:
        if train_examples is None:
            raise ValueError("model.prune_vocab needs data.cache=True (the kept ids are read from the training set)")
        ids, counts = np.unique(train_examples.rows["tokens"], return_counts=True)
        used = ids[counts >= config.model.get("prune_min_count", 1)]  # rarer ids become <unk>
        vocab_map = VocabMap.build(used, mcfg.vocab_size, unk_id=voc.unk_id,
                                   specials=[voc.bos_id, voc.eos_id, voc.pad_id, voc.mask_id])
        train_examples.rows["tokens"] = vocab_map.to_new(train_examples.rows["tokens"])
        params, mcfg = prune_params(params, mcfg, vocab_map)
        model = MaskedLM(mcfg)
        vocab_map.save(workdir / "vocab_map.npz")
        logging.info("pruned the vocabulary to %d of %d ids", vocab_map.size, len(vocab_map.old_to_new))
    if config.data.get("pack"):
        train_data = pipeline.PackedBatches(train_examples, host_batch, config.seed, spec.max_length,
                                            int(vocab_map.old_to_new[voc.pad_id]) if vocab_map else voc.pad_id)
    elif train_examples is not None:
        train_data = pipeline.CachedBatches(train_examples, host_batch, config.seed)
    else:
        train_data = pipeline.StreamedBatches(config.data.task, spec, host_batch, config.seed)
    mask_new = int(vocab_map.old_to_new[voc.mask_id]) if vocab_map is not None else voc.mask_id
    tx, schedule = build_optimizer(config.optimizer, config.num_train_steps)
    frozen, head = None, None
    if config.stage == "diffusion":
        rdm = RDMConfig(mask_id=mask_new, num_timesteps=config.diffusion.num_timesteps,
                        weighting=config.diffusion.weighting, coupled=config.diffusion.coupled,
                        label_smoothing=config.diffusion.label_smoothing,
                        max_predictions=config.diffusion.get("max_predictions") or None,
                        pool_rows=pool_rows(config))
        loss_fn = diffusion_loss_fn(model, rdm)
        trainable = params
    else:
        head = LengthPredictor(mcfg, num_classes=mcfg.max_positions)
        frozen = params
        dummy = jnp.zeros((1, 4, mcfg.hidden_size)), jnp.ones((1, 4), jnp.int32)
        trainable = jax.jit(lambda k: head.init(k, *dummy)["params"])(jax.random.key(config.seed + 1))
        loss_fn = length_loss_fn(model, head)
    trainable = parallel.replicate_unplaced(trainable, mesh)
    opt_state = parallel.init_optimizer_state(tx, trainable, mesh)  # Adam moments sharded like their params
    state = {"step": jnp.zeros((), jnp.int32), "params": trainable, "opt_state": opt_state,
             "bad_steps": jnp.zeros((), jnp.int32)}
    step_fn = make_train_step(loss_fn, tx, schedule, grad_accum=config.optimizer.grad_accum, seed=config.seed)
    state = parallel.replicate_unplaced(state, mesh)
    jitted = parallel.jit_train_step(step_fn, state, mesh, rules)
    return Setup(config, mesh, rules, model, tokenizer, voc, spec, vocab_map, state, frozen, train_data,
                 eval_examples, jitted, schedule, head)


# --------------------------------------------------------------------------------------------------------------
# Loop
# --------------------------------------------------------------------------------------------------------------
class Preemption:
    """Turns SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            pass

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM: saving a checkpoint and exiting")
        self.requested = True


class MetricsLog:
    """metrics.jsonl in the workdir + TensorBoard (clu) on process 0."""

    def __init__(self, workdir: Path):
        self.path = workdir / "metrics.jsonl"
        self.enabled = jax.process_index() == 0
        self.writer = None
        if self.enabled:
            from clu import metric_writers
            self.writer = metric_writers.create_default_writer(str(workdir / "tensorboard"), asynchronous=False)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        self.writer.write_scalars(step, scalars)
        self.writer.flush()


def _scalars(metrics_list: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    host = jax.device_get(metrics_list)
    out: dict[str, float] = {}
    for k in host[0]:
        if k in ("t_bucket_loss", "t_bucket_count"):
            continue
        out[k] = float(np.mean([np.asarray(m[k]) for m in host]))
    if "t_bucket_loss" in host[0]:
        tot = np.sum([m["t_bucket_loss"] for m in host], 0)
        cnt = np.sum([m["t_bucket_count"] for m in host], 0)
        for n, s, c in zip(names, tot, cnt):
            if c > 0:
                out[n] = float(s / c)
    out["skipped"] = float(np.sum([np.asarray(m["skipped"]) for m in host]))
    return out


def set_compilation_cache(path: str) -> None:
    """Points XLA's persistent compilation cache at `path` (programs that took over a second to compile are kept)."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    cc.set_cache_dir(str(path))
    cc.reset_cache()  # the cache is initialised on first use: a path set after that would be silently ignored
    logging.info("XLA compilation cache: %s", path)


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains to `num_train_steps` (resuming from the workdir's latest checkpoint); returns the last metrics."""
    validate_config(config)  # before anything in the workdir is touched
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.get("compilation_cache_dir"):
        set_compilation_cache(config.compilation_cache_dir)
    # Dropout's random bits: threefry (the default) is slow on GPUs; rbg / unsafe_rbg are the fast hardware-friendly
    # generators (a different, still seed-determined, stream).
    jax.config.update("jax_default_prng_impl", config.get("prng_impl", "threefry2x32"))
    s = setup(config, workdir)  # raises on what validate_config cannot see (data, shapes x mesh) before compiling
    if jax.process_index() == 0:  # evaluate / generate / resume read the run's config from here
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    mngr = checkpoint.manager(workdir, max_to_keep=config.keep_checkpoints)
    restored = checkpoint.restore(mngr, checkpoint.abstract_like(s.state))
    state = s.state
    start = 0
    if restored is not None:
        state, data_state, start = restored
        logging.info("resuming at step %d (data position %s)", start, data_state)
    log = MetricsLog(workdir)
    preempt = Preemption()
    names = bucket_names(RDMConfig(mask_id=0, num_timesteps=config.diffusion.num_timesteps))
    # Useful FLOPs of a logged step: the body on every row (coupled sampling trains two corruptions of each) and
    # the head at the positions actually masked (the step's `num_masked`), not at its padded capacity.
    rows = config.batch_size * (2 if config.stage == "diffusion" and config.diffusion.coupled else 1)
    peak = peak_flops_per_device(config.get("peak_tflops"))
    batches = s.train_data.iterate(start)
    pending: list[dict[str, Any]] = []
    last: dict[str, float] = {}
    t_window, tokens_window, compile_s = time.perf_counter(), 0, None
    bar = _progress(start, config.num_train_steps)
    with parallel.mesh_rules(s.mesh, s.rules):
        for step in range(start, config.num_train_steps):
            local = next(batches)
            batch = parallel.global_batch(local, s.mesh, s.rules)
            t0 = time.perf_counter()
            state, metrics = s.step_fn(state, batch, s.frozen)
            if compile_s is None:
                jax.block_until_ready(metrics["loss"])
                compile_s = time.perf_counter() - t0
                t_window, tokens_window = time.perf_counter(), 0
                pending = []
                logging.info("first step (compile + run): %.1fs", compile_s)
                last = {"loss": float(metrics["loss"])}
            else:
                pending.append(metrics)
                tokens_window += int(local["padding_mask"].sum()) * jax.process_count()
            done = step + 1
            if bar is not None:
                bar.update(1)
            if pending and (done % config.log_every_steps == 0 or done == config.num_train_steps):
                last = _scalars(pending, names)
                dt = time.perf_counter() - t_window
                last.update(step_time_s=dt / len(pending), tokens_per_s=tokens_window / dt,
                            compile_time_s=compile_s)
                predicted = last.get("num_masked", s.spec.max_length * rows)  # length stage: whole rows
                flops = train_flops_per_step(s.model.cfg, s.spec.max_length, rows, predicted)
                flops = flops * len(pending) / dt
                if peak:
                    last["mfu"] = flops / (peak * jax.device_count())
                last["tflops_per_s"] = flops / 1e12
                log.write(done, last)
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
                else:
                    logging.info("step %d: %s", done, {k: round(v, 4) for k, v in last.items()})
                pending, t_window, tokens_window = [], time.perf_counter(), 0
                if int(state["bad_steps"]) >= config.max_bad_steps:
                    mngr.wait_until_finished()
                    raise TrainingError(
                        f"{int(state['bad_steps'])} non-finite steps in a row at step {done}; stopping. The last good "
                        f"checkpoint is step {mngr.latest_step()} in {workdir}/checkpoints. Lower optimizer.lr or "
                        "enable optimizer.clip_norm, then rerun to resume.")
            if s.eval_examples is not None and config.eval_every_steps and done % config.eval_every_steps == 0:
                ev = evaluate_bleu(s, state["params"], config)
                log.write(done, ev)
                logging.info("step %d eval: %s", done, ev)
                t_window = time.perf_counter()  # keep eval time out of step time
            final = done == config.num_train_steps
            if done % config.checkpoint_every_steps == 0 or final or preempt.requested:
                checkpoint.save(mngr, done, state, {"step": done, "examples_seen": done * config.batch_size},
                                force=final or preempt.requested)
            if preempt.requested:
                break
    mngr.wait_until_finished()
    mngr.close()
    if bar is not None:
        bar.close()
    if preempt.requested:
        logging.warning("preempted: checkpoint saved at step %d; rerun the same command to resume", done)
    return last


def _progress(start: int, total: int):
    if not sys.stderr.isatty() or jax.process_index() != 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)


def evaluate_bleu(s: Setup, params: Any, config: ml_collections.ConfigDict) -> dict[str, float]:
    """Validation BLEU with the oracle length through the sampler (the diffusion stage only)."""
    if config.stage != "diffusion":
        return {}
    from dlm_jax.evaluation import metrics as M
    from dlm_jax.generation import Generator, decode_responses, prompts_of
    ex = s.eval_examples
    gen = Generator(s.model, params, s.vocab.bos_id, s.vocab.eos_id, s.vocab.pad_id, s.vocab.mask_id,
                    s.spec.max_length, s.vocab_map)
    out = gen.generate(prompts_of(ex.rows), ex.rows["response_length"].tolist(),
                       SamplerConfig(**config.sampler.to_dict()), jax.random.key(config.seed))
    hyps = decode_responses(s.vocab.tokenizer, out, s.vocab.eos_id)
    lowercase = M.tokenizer_lowercases(s.vocab.tokenizer)
    return {"eval_bleu": M.bleu(ex.targets, hyps, lowercase=lowercase)["bleu"]}
