"""Everything a training run needs before its first step, built from a `RunConfig`: mesh, model and params (a
HuggingFace checkpoint, a dlm_jax run, or random init), vocabulary (and its pruning), data, sharded state and the
jitted step.

Setup raises `UserError`s for what `config.parse` cannot see (data, shapes x mesh) before anything is compiled
or written to the workdir.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlm_jax import parallel
from dlm_jax.config import RunConfig
from dlm_jax.data import pipeline
from dlm_jax.data.features import FeatureSpec
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.errors import ConfigError, InputError
from dlm_jax.inference import restore_run
from dlm_jax.inference.evaluator import EvalRequest, TaskData, check_available, load_task_data, task_names
from dlm_jax.model import family_of, get_config as get_model_config, model_for
from dlm_jax.model.configs import MASK_ROW_PREFIX
from dlm_jax.model.length import LengthPredictor
from dlm_jax.model.prune import VocabMap, mean_init_rows, prune_params, tokenizer_mask_id
from dlm_jax.pretrained import add_diffusion_tokens, load_pretrained, load_tokenizer, with_mask_row
from dlm_jax.rundir import State, new_state
from dlm_jax.training.step import ar_loss_fn, build_optimizer, diffusion_loss_fn, length_loss_fn, make_train_step

if TYPE_CHECKING:
    from dlm_jax.model import MaskedLM


@dataclasses.dataclass
class Setup:
    run: RunConfig
    mesh: Any
    model: MaskedLM
    tokenizer: Any
    vocab: HFVocabulary
    spec: FeatureSpec
    vocab_map: VocabMap | None
    state: State
    frozen: Any
    train_data: Any
    eval_data: list[TaskData]
    step_fn: Callable
    schedule: optax.Schedule


@dataclasses.dataclass
class _Model:
    model: MaskedLM
    params: Any
    tokenizer: Any
    vocab_map: VocabMap | None = None  # a source run's pruned vocabulary (init="workdir:DIR")


def _tokenizer(src: str) -> Any:
    if not src:
        raise ConfigError("model.init='random' needs model.tokenizer (an HF model directory or hub id with a "
                          "tokenizer), e.g. --config.model.tokenizer=bundled")
    return load_tokenizer(src, required=True)


def _continued(run: RunConfig, model: Any) -> Any:
    """A source run's model as this run trains it: in the diffusion stage with this run's `model.*` settings (e.g.
    a causal LM continued with `model.causal=False`); the length stage keeps the backbone as it was trained."""
    if run.stage != "diffusion":
        return model
    cfg = run.model.apply(model.cfg)
    if cfg.scan_layers != model.cfg.scan_layers:
        raise ConfigError(f"model.scan_layers={cfg.scan_layers} differs from the source run's "
                          f"({model.cfg.scan_layers}): its params are laid out that way; drop the setting")
    return model_for(cfg)


def _adapted_llm(pre: Any, tokenizer: Any, m: Any) -> _Model:
    """A decoder LLM made ready for diffusion: `<pad>` / `<mask>` added with mean rows, or an existing row as the
    mask (`model.mask_token`); a checkpoint whose config.json names its mask row (`mask_token_id`, an exported run)
    keeps it unless the run names another."""
    mask_token = m.mask_token
    if mask_token == "new" and pre.config.mask_token_id >= 0:
        mask_token = f"{MASK_ROW_PREFIX}{pre.config.mask_token_id}"
    added = add_diffusion_tokens(tokenizer, mask_token)
    params, cfg = mean_init_rows(pre.params, pre.config, added)
    cfg = with_mask_row(cfg.replace(mask_token_id=-1), tokenizer, mask_token)
    logging.info("decoder LLM %s: added %d token(s); mask %r (id %d)", m.init, len(added), tokenizer.mask_token,
                 HFVocabulary(tokenizer, mask_id=tokenizer_mask_id(cfg, None)).mask_id)
    return _Model(model_for(cfg), params, tokenizer)


def build_model(run: RunConfig, mesh: Any) -> _Model:
    """The model and its sharded params from `model.init`: an HF directory / hub id / "bundled", a dlm_jax run
    ("workdir:DIR", e.g. the length stage on a finetuned model), or "random" (`model.name` + `model.tokenizer`)."""
    m = run.model
    if m.init_workdir is not None:
        src = restore_run(m.init_workdir, mesh=mesh)
        return _Model(_continued(run, src.model), src.params, src.vocab.tokenizer, src.vocab_map)
    if m.init != "random":
        pre = load_pretrained(m.init, mesh=mesh, rules=run.mesh.rules, **m.overrides)
        tokenizer = pre.tokenizer if pre.tokenizer is not None else _tokenizer(m.tokenizer)
        if family_of(pre.config).adds_diffusion_tokens:  # a decoder LLM: <pad> / <mask> added, rows the mean
            return _adapted_llm(pre, tokenizer, m)
        return _Model(pre.model, pre.params, tokenizer)
    tokenizer = _tokenizer(m.tokenizer)
    if family_of(get_model_config(m.name)).adds_diffusion_tokens and run.objective != "ar":  # RDM needs <mask>
        add_diffusion_tokens(tokenizer, m.mask_token)
    cfg = m.apply(get_model_config(m.name)).replace(vocab_size=len(tokenizer),
                                                     pad_token_id=int(tokenizer.pad_token_id))
    cfg = with_mask_row(cfg, tokenizer, m.mask_token)
    if family_of(cfg).prompt_separator:  # the source ends at the tokenizer's </s>
        cfg = cfg.replace(sep_token_id=HFVocabulary(tokenizer).eos_id)
    model = model_for(cfg)
    ids = jnp.zeros((1, 8), jnp.int32)
    params, _ = parallel.sharded_init(lambda k: model.init(k, ids)["params"], mesh, run.mesh.rules,
                                      jax.random.key(run.seed, impl=run.prng_impl))
    logging.info("random init of %s: %d layers, hidden %d, vocabulary %d", m.name, cfg.num_layers, cfg.hidden_size,
                 cfg.vocab_size)
    return _Model(model, params, tokenizer)


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs in the training set. Every process holds the whole cached split, so every process
    prunes to the same vocabulary (one per run, saved with it)."""
    return np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.int64)


def prune_vocabulary(run: RunConfig, built: _Model, vocab: HFVocabulary,
                     train: pipeline.Examples | None) -> _Model:
    """The pruned model (`model.prune_vocab`: only ids seen `prune_min_count` times in the training set) or the
    source run's vocabulary carried over; training rows are remapped in place."""
    vmap = built.vocab_map
    if vmap is None and run.model.prune_vocab:
        if train is None:
            raise ConfigError("model.prune_vocab needs data.cache=True (the kept ids are read from the training set)")
        counts = token_counts(train.rows["tokens"], built.model.cfg.vocab_size)
        used = np.flatnonzero(counts >= run.model.prune_min_count)  # rarer ids become <unk>
        vmap = VocabMap.build(used, built.model.cfg.vocab_size, unk_id=vocab.unk_id,
                              specials=[vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.mask_id])
        params, cfg = prune_params(built.params, built.model.cfg, vmap)
        built = _Model(model_for(cfg), params, built.tokenizer, vmap)
        logging.info("pruned the vocabulary to %d of %d ids", vmap.size, len(vmap.old_to_new))
    if vmap is not None and train is not None:
        train.rows["tokens"] = vmap.to_new(train.rows["tokens"])
    return built


def build_train_data(run: RunConfig, train: pipeline.Examples | None, spec: FeatureSpec, vocab: HFVocabulary,
                     vocab_map: VocabMap | None) -> Any:
    """Batches addressed by step (this process's rows of each global batch): packed or plain from the cached
    split, or a seeded stream."""
    host = pipeline.HostSlice.this_process(run.batch_size)
    if run.data.pack:
        pad = int(vocab_map.old_to_new[vocab.pad_id]) if vocab_map else vocab.pad_id
        return pipeline.PackedBatches(train, host, run.seed, spec.max_length, pad)
    if train is not None:
        return pipeline.CachedBatches(train, host, run.seed)
    if run.data.stream == "seqio":
        return pipeline.StreamedBatches(run.data.task, spec, vocab, host, run.seed)
    try:
        return pipeline.IndexedBatches(run.data.task, spec, vocab, host, run.seed)
    except InputError:
        if run.data.stream == "indexed":
            raise
        logging.info("%s: not every task has random access; streaming through seqio", run.data.task)
        return pipeline.StreamedBatches(run.data.task, spec, vocab, host, run.seed)


def _loss_and_trainable(run: RunConfig, model: MaskedLM, params: Any, mask_id: int) -> tuple[Callable, Any, Any]:
    """(loss_fn, trainable params, frozen params) of the run's stage."""
    if run.stage == "diffusion" and run.objective == "ar":
        rdm = run.diffusion.rdm(mask_id)  # the head's capacity settings (pool_rows, max_predictions)
        return (ar_loss_fn(model, run.ar_label_smoothing, pool_rows=rdm.pool_rows,
                           max_predictions=rdm.max_predictions, head_chunk=rdm.head_chunk), params, None)
    if run.stage == "diffusion":
        return diffusion_loss_fn(model, run.diffusion.rdm(mask_id)), params, None
    head = LengthPredictor.for_backbone(model.cfg)
    trainable = jax.jit(head.init_params)(jax.random.key(run.seed + 1, impl=run.prng_impl))
    return length_loss_fn(model, head), trainable, params


def periodic_eval_data(run: RunConfig, vocab: HFVocabulary, spec: FeatureSpec) -> list[TaskData]:
    """The cached evaluation splits of the periodic evaluation: `data.eval_tasks` (mixtures expanded; each task's
    own split) or the training task's `data.eval_split`; the first `data.eval_examples` of each."""
    if run.data.eval_tasks:
        names, split = [t for n in run.data.eval_tasks for t in task_names(n, vocab)], None
    elif run.data.eval_split:
        names, split = [run.data.task], run.data.eval_split
    else:
        return []
    check_available(names, vocab, split)
    request = EvalRequest(split=split, limit=run.data.eval_examples or None)
    return [load_task_data(n, vocab, spec, request) for n in names]


def _mask_id(run: RunConfig, vocab: HFVocabulary, vmap: VocabMap | None) -> int:
    """The (pruned) mask id; -1 for an AR run whose tokenizer has none (a causal LM pretrained here)."""
    if run.objective == "ar" and vocab.optional_mask_id is None:
        return -1
    return int(vmap.old_to_new[vocab.mask_id]) if vmap is not None else vocab.mask_id


def setup(run: RunConfig) -> Setup:
    mesh = parallel.make_mesh(dict(run.mesh.shape))
    built = build_model(run, mesh)
    vocab = HFVocabulary(built.tokenizer, mask_id=tokenizer_mask_id(built.model.cfg, built.vocab_map))
    spec = run.data.feature_spec(vocab, built.model.cfg.max_length,
                                 separator=family_of(built.model.cfg).prompt_separator)
    train = None
    if run.data.cache:
        train = pipeline.load_examples(run.data.task, "train", spec, vocab, limit=run.data.train_limit)
    eval_data = periodic_eval_data(run, vocab, spec) if run.eval_every_steps else []
    built = prune_vocabulary(run, built, vocab, train)
    vmap = built.vocab_map
    train_data = build_train_data(run, train, spec, vocab, vmap)
    mask_id = _mask_id(run, vocab, vmap)
    tx, schedule = build_optimizer(run.optimizer, run.num_train_steps)
    loss_fn, trainable, frozen = _loss_and_trainable(run, built.model, built.params, mask_id)
    trainable = parallel.replicate_unplaced(trainable, mesh)
    opt_state = parallel.init_optimizer_state(tx, trainable, mesh)  # Adam moments sharded like their params
    state = parallel.replicate_unplaced(new_state(trainable, opt_state), mesh)
    step_fn = make_train_step(loss_fn, tx, schedule, grad_accum=run.optimizer.grad_accum, seed=run.seed,
                              prng_impl=run.prng_impl)
    jitted = parallel.jit_train_step(step_fn, state, mesh, run.mesh.rules)
    return Setup(run, mesh, built.model, built.tokenizer, vocab, spec, vmap, state, frozen, train_data,
                 eval_data, jitted, schedule)
