"""Iterative unmask / remask sampling (RDM Algorithm 2, "reparam" decoding), mask-predict and adaptive decoding.

Strategies (strings as in the paper's public code):
- `reparam-<cond|uncond>-<deterministic|stochasticX>-<cosine|linear>`: after step t of S, the
  k = floor(N * rate(t)) lowest-scoring response positions are (re)masked, rate = cos(pi/2 t/S) or 1 - t/S.
- `mask-predict[-cosine|-linear]`: only masked positions are re-predicted, then the k lowest stored scores are
  remasked (Ghazvininejad et al.'s mask-predict; called `cmlm` here before).
- `cmlm`: the released code's `cmlm` strategy: at step s (0-based) of S every still-masked position is unmasked
  with probability 1 / (S - s) to its prediction, independently (so the last step unmasks the rest); nothing is
  remasked.
- `ar`: the released code's `ar` strategy (the paper's left-to-right unmasking, Fig. 7(d)): each step one model
  evaluation, and the prediction is written at the leftmost still-masked response position only; nothing is
  remasked; needs steps >= the response length (extra steps change nothing).
- `adaptive`: each step commits every masked position whose probability is >= `threshold` (at least one per row) and
  the loop stops once nothing is masked (`lax.while_loop`), so easy outputs need fewer model evaluations.

Only positions in `response_mask` ever change. The `<mask>` logit is never chosen. Randomness is per row and per
position (`dlm_jax.diffusion.rows`): with one key per row, a row's output does not depend on the other rows of its
batch, its position in it or the padded width.

One step of every strategy is `denoise_step` over a `Canvas` (tokens, scores, masked positions, each row's step and
model evaluations) and `RowSettings` (each row's strategy, steps, schedule table, temperature, threshold, ... as
arrays): `sample` loops it (`lax.fori_loop` / `lax.while_loop`) with every row's settings the same, and the serving
engine (`dlm_jax.serving`) calls it once per scheduler tick over slots whose rows joined at different times with
different settings. A row's result is the same either way.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.diffusion.fused_head import HeadParts, fused_argmax_and_logprob, logits_of
from dlm_jax.diffusion.objective import masked_positions
from dlm_jax.diffusion.rows import (map_rows, position_categorical, position_uniform, row_keys, split_rows,
                                   typed_key)
from dlm_jax.errors import ConfigError

LogitsFn = Callable[[jax.Array], jax.Array]
CACHE_MODES = ("none", "prefix", "dual")
_REPARAM = re.compile(r"^reparam-(cond|uncond)-(deterministic|stochastic(\d+(?:\.\d+)?))-(cosine|linear)$")
_MASK_PREDICT = re.compile(r"^mask-predict(?:-(cosine|linear))?$")
STRATEGY_HELP = ("reparam-<cond|uncond>-<deterministic|stochasticX>-<cosine|linear> (e.g. "
                 "reparam-uncond-deterministic-cosine, reparam-cond-stochastic1.0-linear), mask-predict, mask-predict-linear, cmlm, "
                 "ar (left to right, one token per step), adaptive (needs threshold)")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings (hashable: passed to jit as a static argument).

    Attributes:
      steps: S, model evaluations for the fixed-schedule strategies (maximum for `adaptive`: see `max_steps`).
      strategy: see the module docstring; validated here.
      argmax: pick the most likely token; False samples with `temperature`.
      temperature: softmax temperature when sampling.
      threshold: probability threshold tau of the `adaptive` strategy.
      record_trajectory: also return the tokens after every step, and each token's probability when committed.
      fixed_eos: the canvas (read by `inference.Generator`, not by `sample`): True places the final `</s>` and
        never changes it, `[prompt, <mask> x (L-1), </s>]` as the released code's canvas; False generates the
        `</s>` slot too and the output ends at the first `</s>`.
      block_length: B > 0 decodes the response semi-autoregressively (LLaDA's `block_length`, read by
        `inference.Generator`): B positions at a time, left to right, each block with `steps` steps of the strategy
        while the later blocks stay masked as context; 0 decodes the whole response at once (the paper's).
      cache: the prefix cache (read by `inference.Generator`, `inference.prefix_cache`): "none" runs the model
        over whole rows at every step (the paper's); "prefix" fills a cache of every layer's keys and values once
        per call (per block) and recomputes the response side from the first decoded position on; "dual" also
        reads later blocks from it. Exact for `prefix` under `model.attention_layout=prompt_prefix`.
    """

    steps: int = 50
    strategy: str = "reparam-uncond-deterministic-cosine"
    argmax: bool = True
    temperature: float = 1.0
    threshold: float | None = None
    record_trajectory: bool = False
    fixed_eos: bool = False
    block_length: int = 0
    cache: str = "none"

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"sampler cache={self.cache!r}; choose one of {list(CACHE_MODES)}", field="cache")
        if not isinstance(self.block_length, int) or self.block_length < 0:
            raise ConfigError(f"sampler block_length must be an integer >= 0 (0: the whole response at once), got "
                              f"{self.block_length!r}", field="block_length")
        if self.kind is None:
            raise ConfigError(f"unknown sampler strategy {self.strategy!r}; choose one of: {STRATEGY_HELP}",
                              field="strategy")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"sampler steps must be a positive integer, got {self.steps!r}", field="steps")
        if self.temperature <= 0:
            raise ConfigError(f"sampler temperature must be > 0, got {self.temperature}", field="temperature")
        if self.kind == "adaptive":
            if self.threshold is None or not 0.0 < self.threshold <= 1.0:
                raise ConfigError(f"the adaptive strategy needs threshold in (0, 1], got {self.threshold!r}; "
                                 "e.g. SamplerConfig(strategy='adaptive', threshold=0.9)", field="threshold")
        elif self.threshold is not None:
            raise ConfigError(f"threshold is only used by the adaptive strategy, not {self.strategy!r}; use "
                              "strategy 'adaptive' or leave threshold unset", field="threshold")

    @property
    def kind(self) -> str | None:
        if _REPARAM.match(self.strategy):
            return "reparam"
        if _MASK_PREDICT.match(self.strategy):
            return "mask-predict"
        return self.strategy if self.strategy in ("cmlm", "adaptive", "ar") else None

    @property
    def cond(self) -> bool:
        m = _REPARAM.match(self.strategy)
        return bool(m) and m.group(1) == "cond"

    @property
    def noise_scale(self) -> float:
        m = _REPARAM.match(self.strategy)
        return float(m.group(3)) if m and m.group(3) else 0.0

    @property
    def schedule(self) -> str:
        m = _REPARAM.match(self.strategy)
        if m:
            return m.group(4)
        m = _MASK_PREDICT.match(self.strategy)
        return (m.group(1) if m else None) or "cosine"


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [batch, length]
    scores: jax.Array  # [batch, length] log-prob of each generated token (0 outside the response)
    num_evals: jax.Array  # [batch] model evaluations spent on each example
    trajectory: jax.Array | None  # [steps, batch, length] tokens after every step
    trajectory_scores: jax.Array | None = None  # [steps, batch, length] log-prob of each of those tokens (-inf: masked)


KINDS = ("reparam", "mask-predict", "cmlm", "ar", "adaptive")


class RowSettings(NamedTuple):
    """Each row's sampler settings as arrays ([batch] or [batch, T]), so one compiled step serves rows that decode
    with different strategies, steps, temperatures or thresholds (`row_settings` builds them from a config)."""

    kind: jax.Array  # [b] int32: index into KINDS
    steps: jax.Array  # [b] int32: S (fixed-schedule strategies; the adaptive one stops when nothing is masked)
    keep: jax.Array  # [b, T] int32: response positions that stay masked after step s + 1 (T >= S)
    rate: jax.Array  # [b, T] float32: the schedule's rate after step s + 1 (scales the stochastic ranking noise)
    cond: jax.Array  # [b] bool: reparam-cond
    noise: jax.Array  # [b] float32: the stochastic ranking noise scale X of reparam-...-stochasticX
    log_tau: jax.Array  # [b] float32: log of the adaptive threshold
    temperature: jax.Array  # [b] float32
    argmax: jax.Array  # [b] bool: pick the most likely token (else sample at `temperature`)


class Canvas(NamedTuple):
    """The sampler's state between steps."""

    tokens: jax.Array  # [b, L]
    scores: jax.Array  # [b, L] float32 log-prob of each committed token (-inf: masked)
    is_masked: jax.Array  # [b, L] bool
    step: jax.Array  # [b] int32: steps this row has taken
    evals: jax.Array  # [b] int32: model evaluations spent on this row


def row_settings(config: SamplerConfig, n_resp: jax.Array | np.ndarray, width: int, max_steps: int | None = None
                 ) -> RowSettings:
    """`config` for rows with `n_resp` [b] response positions in rows of `width`: the schedule table
    (float64 on the host, `keep_masked_table`) read at each row's length, padded to `max_steps` (default S).
    NumPy `n_resp` gives NumPy arrays (e.g. a serving engine's host-side rows), else jax arrays."""
    xp = np if isinstance(n_resp, np.ndarray) else jnp
    steps, b = config.steps, n_resp.shape[0]
    t_max = max(steps, max_steps or steps)
    table = xp.asarray(np.pad(keep_masked_table(steps, width, config.schedule), ((0, t_max - steps), (0, 0))))
    rates = np.pad(schedule_rate(np.arange(1, steps + 1, dtype=np.float64), steps, config.schedule),
                   (0, t_max - steps))
    full = lambda v, dt: xp.full((b,), v, dt)  # noqa: E731
    return RowSettings(kind=full(KINDS.index(config.kind), np.int32), steps=full(steps, np.int32),
                       keep=table[:, n_resp].T, rate=xp.broadcast_to(xp.asarray(rates, np.float32), (b, t_max)),
                       cond=full(config.cond, bool), noise=full(config.noise_scale, np.float32),
                       log_tau=full(math.log(config.threshold) if config.threshold else 0.0, np.float32),
                       temperature=full(config.temperature, np.float32), argmax=full(config.argmax, bool))


def finished(canvas: Canvas, settings: RowSettings) -> jax.Array:
    """[b] bool: rows that are done (a fixed schedule's S steps taken; adaptive: nothing left masked)."""
    adaptive = settings.kind == KINDS.index("adaptive")
    return jnp.where(adaptive, ~canvas.is_masked.any(1), canvas.step >= settings.steps)


def _record(traj: tuple[jax.Array, jax.Array] | None, i: jax.Array, toks: jax.Array, scores: jax.Array
            ) -> tuple[jax.Array, jax.Array] | None:
    """The trajectory buffers with step i's tokens and scores written in."""
    if traj is None:
        return None
    return (jax.lax.dynamic_update_index_in_dim(traj[0], toks, i, 0),
            jax.lax.dynamic_update_index_in_dim(traj[1], scores, i, 0))


def _trajectory_buffers(config: SamplerConfig, steps: int, tokens: jax.Array
                        ) -> tuple[jax.Array, jax.Array] | None:
    if not config.record_trajectory:
        return None
    return (jnp.zeros((steps,) + tokens.shape, tokens.dtype), jnp.zeros((steps,) + tokens.shape, jnp.float32))


def schedule_rate(t: np.ndarray, steps: int, schedule: str) -> np.ndarray:
    """Fraction of the response that stays masked after step t (float64)."""
    if schedule == "linear":
        return 1.0 - t / steps
    return np.cos(np.pi / 2 * t / steps)


def keep_masked_table(steps: int, max_n: int, schedule: str) -> np.ndarray:
    """[steps, max_n + 1] int32: k = floor(n * rate(t)) positions stay masked after step t = 1..S, for n tokens.

    Computed in float64 on the host so the count is the formula's exactly (float32 cos(pi/2) is slightly negative).
    """
    rates = schedule_rate(np.arange(1, steps + 1, dtype=np.float64), steps, schedule)
    n = np.arange(max_n + 1, dtype=np.float64)
    return np.clip(np.floor(n[None, :] * rates[:, None] + 1e-9), 0, None).astype(np.int32)


def lowest_k(scores: jax.Array, ranked: jax.Array, k: jax.Array) -> jax.Array:
    """[batch, length] bool: the k[b] lowest `scores` among `ranked` positions (ties broken by position)."""
    s = jnp.where(ranked, scores, jnp.inf)
    rank = jnp.argsort(jnp.argsort(s, axis=1, stable=True), axis=1, stable=True)
    return ranked & (rank < k[:, None])


def response_positions(response: jax.Array, max_response: int) -> jax.Array:
    """[batch, max_response] int32: each row's response positions first (in order), then distinct other positions.

    Rows with fewer than `max_response` response positions are filled with non-response positions, which the
    sampler never ranks or changes, so scattering predictions back never collides with a response position.
    """
    return masked_positions(response, max_response)[0]


def _predict(logits_fn: LogitsFn, tokens: jax.Array, keys: jax.Array, settings: RowSettings, mask_id: int,
             positions: jax.Array | None = None, micro_batch: int = 0, sampling: str = "rows",
             live: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One model evaluation -> (predicted tokens, their log-probabilities) [batch, length], `<mask>` excluded.

    With `positions` ([batch, R]) the model is asked for logits at those positions only (`logits_fn(tokens,
    positions)`) and the predictions are scattered back; other positions get (their own token, 0). The
    log-probability is taken as `logit[token] - logsumexp(logits)`, never materialising a log-softmax array.
    Rows with `settings.argmax` take the most likely token; the others draw each position's token with its own key
    (`keys` [batch], one per row, folded with the position) at their `temperature`. `sampling` (static): "never"
    (every row argmax), "always" (every row samples) or "rows" (per row; the draw is skipped in a micro-batch of
    argmax rows). With `micro_batch` > 0 the model call and these reductions run `micro_batch` rows at a time
    (`rows.map_rows`) and `logits_fn` also gets `rows=` (the indices of the rows it is given); with `live` ([b]
    bool) a micro-batch without a live row skips the model (its predictions are the tokens themselves).
    """
    b, length = tokens.shape
    full = positions is None
    pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length)) if full else positions

    def chunk(t, k, p, rows, temp, pick_max, alive):
        if live is None:
            return predict(t, k, p, rows, temp, pick_max)
        idle = (jnp.take_along_axis(t, p, 1), jnp.zeros(p.shape, jnp.float32))
        return jax.lax.cond(alive.any(), lambda _: predict(t, k, p, rows, temp, pick_max), lambda _: idle, None)

    def predict(t, k, p, rows, temp, pick_max):
        extra = {"rows": rows} if micro_batch > 0 else {}
        out = logits_fn(t, **extra) if full else logits_fn(t, p, **extra)
        return _pick(out, k, p, temp, pick_max, mask_id, sampling)

    alive = jnp.ones((b,), bool) if live is None else live
    tok, score = map_rows(chunk, (tokens, keys, pos, jnp.arange(b), settings.temperature, settings.argmax, alive),
                          micro_batch)
    tok = tok.astype(tokens.dtype)
    if full:
        return tok, score
    rows = jnp.arange(b)[:, None]
    return tokens.at[rows, positions].set(tok), jnp.zeros(tokens.shape, jnp.float32).at[rows, positions].set(score)


def _pick(out: jax.Array | HeadParts, k: jax.Array, p: jax.Array, temp: jax.Array, pick_max: jax.Array,
          mask_id: int, sampling: str) -> tuple[jax.Array, jax.Array]:
    """(tokens, log-probabilities) [b, R] from one model evaluation's logits [b, R, vocab] (or the head's inputs,
    `HeadParts`: the argmax then reads the vocabulary in chunks, and only rows that sample build whole logits)."""
    fused = isinstance(out, HeadParts)

    def whole() -> tuple[jax.Array, jax.Array]:
        logits = (logits_of(out) if fused else out).astype(jnp.float32)
        logits = jnp.where(jnp.arange(logits.shape[-1]) == mask_id, -jnp.inf, logits)
        return logits, jax.nn.logsumexp(logits, axis=-1)

    def best() -> tuple[jax.Array, jax.Array]:
        if fused:
            return fused_argmax_and_logprob(out, mask_id)
        logits, lse = whole()
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.max(logits, axis=-1) - lse

    def draw(_):
        logits, lse = whole()
        tok = position_categorical(k, logits / temp[:, None, None], p)
        return tok, jnp.take_along_axis(logits, tok[..., None], axis=-1)[..., 0] - lse
    if sampling == "never":
        return best()
    if sampling == "always":
        return draw(None)
    top = best()
    tok, score = jax.lax.cond(pick_max.all(), lambda _: top, draw, None)
    return jnp.where(pick_max[:, None], top[0], tok), jnp.where(pick_max[:, None], top[1], score)


def _gumbel(keys: jax.Array, width: int) -> jax.Array:
    u = position_uniform(keys, width)
    return -jnp.log(-jnp.log(u + 1e-8) + 1e-8)


def _reparam_step(state: tuple, cur_tok: jax.Array, cur_score: jax.Array, k: jax.Array, rate: jax.Array,
                  rng: jax.Array, response: jax.Array, cond: jax.Array, noise: jax.Array | None, mask_id: int
                  ) -> tuple:
    """One reparam update, as the paper's `_reparam_decoding`: returns (tokens, scores, is_masked). Per row: `k`,
    `rate`, `cond` and the ranking `noise` scale ([b]; None: no row adds noise)."""
    tokens, scores, is_masked = state
    rank_scores = cur_score
    if noise is not None:
        rank_scores = cur_score + (noise * rate)[:, None] * _gumbel(rng, cur_score.shape[1])
    low = lowest_k(rank_scores, response, k)
    not_v1 = jnp.where(cond[:, None], (cur_tok == tokens) & (cur_score < scores) & low, low)
    to_noise = (~is_masked & not_v1) | (is_masked & low)
    tokens = jnp.where(to_noise, mask_id, tokens)
    scores = jnp.where(to_noise, -jnp.inf, scores)
    to_x0 = is_masked & ~low
    tokens = jnp.where(to_x0, cur_tok, tokens)
    scores = jnp.where(to_x0, cur_score, scores)
    return tokens, scores, (is_masked | not_v1) & low


def _mask_predict_step(state: tuple, cur_tok: jax.Array, cur_score: jax.Array, k: jax.Array, response: jax.Array,
                       mask_id: int) -> tuple:
    """Mask-predict: fill masked positions, then remask the k lowest stored scores."""
    tokens, scores, is_masked = state
    tokens = jnp.where(is_masked, cur_tok, tokens)
    scores = jnp.where(is_masked, cur_score, scores)
    low = lowest_k(scores, response, k)
    return jnp.where(low, mask_id, tokens), jnp.where(low, -jnp.inf, scores), low


def _cmlm_step(state: tuple, cur_tok: jax.Array, cur_score: jax.Array, steps_left: jax.Array, rng: jax.Array,
               response: jax.Array) -> tuple:
    """The released `cmlm`: each masked position is unmasked to its prediction with probability 1 / steps_left;
    the scores become the current prediction's (as the released generator overwrites them)."""
    tokens, scores, is_masked = state
    change = is_masked & (position_uniform(rng, is_masked.shape[1]) < 1.0 / steps_left[:, None])
    return (jnp.where(change, cur_tok, tokens), jnp.where(response, cur_score, scores), is_masked & ~change)


def _ar_step(state: tuple, cur_tok: jax.Array, cur_score: jax.Array) -> tuple:
    """The released `ar`: the prediction is written at each row's leftmost masked position only."""
    tokens, scores, is_masked = state
    first = jnp.argmax(is_masked, axis=1)
    commit = is_masked & (jnp.arange(is_masked.shape[1])[None] == first[:, None])
    return jnp.where(commit, cur_tok, tokens), jnp.where(commit, cur_score, scores), is_masked & ~commit


def check_sampler(config: SamplerConfig, response_lengths: Sequence[int] | np.ndarray, *,
                  max_steps: int | None = None) -> None:
    """The one check of sampler settings against the responses they decode (`SamplerConfig` checks the settings
    alone): `ConfigError` (its `field` the request's name of the setting) when the `ar` strategy, which writes one
    token per step, has fewer steps than a response has positions, or a fixed-schedule strategy asks for more
    than `max_steps` (a serving engine's schedule tables; None: no limit). `Generator`, the serving engines and
    the server's request parsing all check here."""
    most = int(np.max(response_lengths, initial=0))
    if config.kind == "ar" and most > config.steps:
        raise ConfigError(f"the ar strategy writes one token per step: steps={config.steps} is fewer than a "
                          f"response of {most} positions; ask for steps >= {most} (--config.sampler.steps, or a "
                          "request's steps)", field="steps")
    if max_steps is not None and config.kind != "adaptive" and config.steps > max_steps:
        raise ConfigError(f"steps={config.steps} is more than this engine's max_steps={max_steps} (serve "
                          "--max_steps); ask for fewer steps", field="steps")


def _adaptive_step(state: tuple, cur_tok: jax.Array, cur_score: jax.Array, log_tau: jax.Array) -> tuple:
    """Commit every masked position whose log-probability is >= log(threshold), and at least the best one."""
    tokens, scores, is_masked = state
    best = jnp.argmax(jnp.where(is_masked, cur_score, -jnp.inf), axis=1)
    commit = is_masked & ((cur_score >= log_tau[:, None]) | (jnp.arange(tokens.shape[1])[None] == best[:, None]))
    return jnp.where(commit, cur_tok, tokens), jnp.where(commit, cur_score, scores), is_masked & ~commit


def _update(kind: str, state: tuple, cur_tok: jax.Array, cur_score: jax.Array, settings: RowSettings,
            i: jax.Array, rng: jax.Array, response: jax.Array, mask_id: int, noise: bool) -> tuple:
    """The update of strategy `kind` after step i ([b]) from this step's predictions."""
    at = lambda table: jnp.take_along_axis(table, jnp.minimum(i, table.shape[1] - 1)[:, None], 1)[:, 0]  # noqa
    if kind == "mask-predict":
        return _mask_predict_step(state, cur_tok, cur_score, at(settings.keep), response, mask_id)
    if kind == "ar":
        return _ar_step(state, cur_tok, cur_score)
    if kind == "cmlm":
        return _cmlm_step(state, cur_tok, cur_score, settings.steps - i, rng, response)
    if kind == "adaptive":
        return _adaptive_step(state, cur_tok, cur_score, settings.log_tau)
    return _reparam_step(state, cur_tok, cur_score, at(settings.keep), at(settings.rate), rng, response,
                         settings.cond, settings.noise if noise else None, mask_id)


def denoise_step(logits_fn: LogitsFn, canvas: Canvas, settings: RowSettings, response: jax.Array,
                 keys: jax.Array, *, mask_id: int, positions: jax.Array | None = None, micro_batch: int = 0,
                 kinds: tuple[str, ...] = KINDS, sampling: str = "rows", noise: bool = True,
                 skip_finished: bool = False) -> Canvas:
    """One denoising step of every unfinished row: one model evaluation, then its strategy's update.

    `kinds` (static): the strategies that may occur among the rows (each row's is `settings.kind`); `sampling`: see
    `_predict`; `noise` (static): whether any row adds stochastic ranking noise; `skip_finished` (static): a
    micro-batch of finished rows skips the model (e.g. free slots of a serving engine). Finished rows (`finished`)
    are left as they are. A row's result depends on its own tokens, settings, key and step only.
    """
    i = canvas.step
    k_pred, k_noise = split_rows(keys, i)
    active = ~finished(canvas, settings)
    cur_tok, cur_score = _predict(logits_fn, canvas.tokens, k_pred, settings, mask_id, positions, micro_batch,
                                  sampling, active if skip_finished else None)
    state = (canvas.tokens, canvas.scores, canvas.is_masked)
    new = [_update(kind, state, cur_tok, cur_score, settings, i, k_noise, response, mask_id, noise)
           for kind in kinds]
    out = new[0]
    for kind, upd in zip(kinds[1:], new[1:]):
        pick = (settings.kind == KINDS.index(kind))[:, None]
        out = tuple(jnp.where(pick, a, b) for a, b in zip(upd, out))
    out = tuple(jnp.where(active[:, None], a, b) for a, b in zip(out, state))
    return Canvas(*out, step=i + active, evals=canvas.evals + active)


def _step_fn(logits_fn: LogitsFn, settings: RowSettings, response: jax.Array, keys: jax.Array,
             config: SamplerConfig, mask_id: int, positions: jax.Array | None, micro_batch: int
             ) -> Callable[[Canvas], Canvas]:
    """`denoise_step` specialised to one config (only its strategy's update, its sampling and noise)."""
    return lambda c: denoise_step(logits_fn, c, settings, response, keys, mask_id=mask_id, positions=positions,
                                  micro_batch=micro_batch, kinds=(config.kind,),
                                  sampling="never" if config.argmax else "always", noise=config.noise_scale > 0)


def initial_canvas(tokens: jax.Array, response: jax.Array, mask_id: int) -> Canvas:
    """Every response position masked; nothing taken yet."""
    b = tokens.shape[0]
    return Canvas(jnp.where(response, mask_id, tokens), jnp.where(response, -jnp.inf, 0.0).astype(jnp.float32),
                  response, jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.int32))


def _output(canvas: Canvas, response: jax.Array, traj: tuple | None) -> SampleOutput:
    return SampleOutput(canvas.tokens, jnp.where(response, canvas.scores, 0.0), canvas.evals,
                        *(traj if traj is not None else (None, None)))


def _fixed_schedule(step: Callable[[Canvas], Canvas], canvas: Canvas, response: jax.Array,
                    config: SamplerConfig) -> SampleOutput:
    def body(i, carry):
        c, traj = carry
        c = step(c)
        return c, _record(traj, i, c.tokens, c.scores)

    canvas, traj = jax.lax.fori_loop(0, config.steps, body,
                                     (canvas, _trajectory_buffers(config, config.steps, canvas.tokens)))
    return _output(canvas, response, traj)


def _adaptive(step: Callable[[Canvas], Canvas], canvas: Canvas, response: jax.Array,
              config: SamplerConfig) -> SampleOutput:
    max_iters = canvas.tokens.shape[1]  # at least one commit per step: never more than `length` steps

    def cond(carry):
        i, c, _ = carry
        return (i < max_iters) & c.is_masked.any()

    def body(carry):
        i, c, traj = carry
        c = step(c)
        return i + 1, c, _record(traj, i, c.tokens, c.scores)

    init = (jnp.int32(0), canvas, _trajectory_buffers(config, max_iters, canvas.tokens))
    n, canvas, traj = jax.lax.while_loop(cond, body, init)
    if traj is not None:  # steps after the loop ended repeat the final tokens
        ran = (jnp.arange(max_iters) < n)[:, None, None]
        traj = (jnp.where(ran, traj[0], canvas.tokens[None]), jnp.where(ran, traj[1], canvas.scores[None]))
    return _output(canvas, response, traj)


def _sample(logits_fn: LogitsFn, tokens: jax.Array, response_mask: jax.Array, rng: jax.Array,
            config: SamplerConfig, mask_id: int, max_response: int | None, micro_batch: int) -> SampleOutput:
    response = response_mask.astype(bool)
    keys = per_row_keys(rng, tokens.shape[0])
    positions = None if max_response is None else response_positions(response, max_response)
    settings = row_settings(config, response.sum(1), tokens.shape[1])
    step = _step_fn(logits_fn, settings, response, keys, config, mask_id, positions, micro_batch)
    loop = _adaptive if config.kind == "adaptive" else _fixed_schedule
    return loop(step, initial_canvas(tokens, response, mask_id), response, config)


def per_row_keys(rng: jax.Array, rows: int) -> jax.Array:
    """[rows] typed keys: `rng` itself when it already holds one key per row (typed [rows] or raw [rows, 2]),
    else `fold_in(rng, r)` for row r (then a row's draws depend on its index in the batch)."""
    rng = typed_key(rng)
    return rng if rng.ndim == 1 else row_keys(rng, np.arange(rows))


_sample_jit = jax.jit(_sample, static_argnames=("logits_fn", "config", "mask_id", "max_response", "micro_batch"))


def sample(logits_fn: LogitsFn, tokens: jax.Array, response_mask: jax.Array, rng: jax.Array,
           config: SamplerConfig, *, mask_id: int, max_response: int | None = None, micro_batch: int = 0
           ) -> SampleOutput:
    """Generates the response positions of `tokens` by iterative denoising (one jitted function).

    Args:
      logits_fn: tokens [batch, length] -> logits [batch, length, vocab]; it closes over padding and params. To keep
        params out of the compiled constants, call `sample` inside your own `jax.jit` that takes params as an
        argument (see `dlm_jax.inference.Generator`).
      tokens: [batch, length] int; response positions are (re)set to `mask_id`.
      response_mask: [batch, length] bool, the positions to generate; nothing else changes.
      rng: PRNG key (used by sampling, stochastic ranking), or one key per row ([batch]): then each row's output
        depends on its own key, tokens and logits only (`inference.Generator` passes keys from the row's content).
      config: SamplerConfig.
      mask_id: the `<mask>` token id.
      max_response: optional static R >= the largest number of response positions in a row. When given,
        `logits_fn` is called as `logits_fn(tokens, positions)` with `positions` [batch, R] int32 (each row's
        response positions first, see `response_positions`) and returns logits only there, [batch, R, vocab]:
        the vocabulary-sized head is then paid for the response alone (e.g. `MaskedLM(..., output_positions=)`).
        Outputs are the same as without it (each position draws with its own key either way).
      micro_batch: run each model evaluation (and its per-position reductions) on this many rows at a time; then
        `logits_fn` is also passed `rows=` (int [micro_batch], the indices of its rows) and a row's output is
        bit-identical whatever the other rows of the batch (0: the whole batch in one call).
    Returns:
      SampleOutput(tokens, scores, num_evals, trajectory, trajectory_scores).
    """
    if not isinstance(response_mask, jax.core.Tracer):
        check_sampler(config, np.asarray(response_mask).astype(bool).sum(1))
    if max_response is not None and not isinstance(response_mask, jax.core.Tracer):
        most = int(np.asarray(response_mask).astype(bool).sum(1).max(initial=0))
        if most > max_response:
            raise ConfigError(f"max_response={max_response} is smaller than a row's {most} response positions; "
                             "pass at least the largest response length in the batch")
    return _sample_jit(logits_fn, tokens, response_mask, rng, config, mask_id, max_response, micro_batch)
