"""The RDM training objective (paper Eq. 4, Appendix A.1): absorbing-mask corruption and a weighted CE loss.

Pure functions of (logits_fn, batch, rng, config). `logits_fn(noised_tokens, positions)` returns logits
[batch, P, vocab] at `positions` [batch, P], so the vocab-sized output head runs only where a token was noised.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.diffusion.fused_head import HeadParts, fused_cross_entropy_and_hits
from dlm_jax.errors import ConfigError

LogitsAtFn = Callable[[jax.Array, jax.Array], jax.Array]
WEIGHTINGS = ("linear", "constant", "reciprocal")


@dataclasses.dataclass(frozen=True)
class RDMConfig:
    """Objective settings.

    Attributes:
      mask_id: the `<mask>` token id.
      num_timesteps: T; t ~ Uniform{1..T} per sequence, each response token masked with probability t/T.
      weighting: lambda(t): "linear" 1 - (t-1)/T (the paper), "constant" 1, "reciprocal" 1/t.
      coupled: draw t1 >= t2 and build x_t2 from a subset of x_t1's masks (keep-probability t2/t1), or, when
        t1 == t2, from an independent mask; both halves are trained on (the batch doubles), as the paper's released
        trainer always does (`q_sample_coupled`).
      loss_scale: a constant factor on the loss; the released trainer's weight is `T - (t - 1)` = T * lambda(t),
        i.e. loss_scale = T (the paper configs), which matters for where gradient clipping engages.
      label_smoothing: 0.1 from scratch, 0 from a pretrained MLM.
      smoothing_weighting: the weight of the label-smoothing term: "lambda" (like the CE term, lambda(t)) or
        "constant" (1, times loss_scale: the released trainer's `num_timesteps * logit_loss`).
      max_predictions: static number P of positions the head is evaluated at, per pool of `pool_rows` rows;
        masked tokens beyond it are dropped from the loss and counted (`num_dropped`). None: every position.
      pool_rows: masked positions are pooled over this many consecutive rows before the head, so the head's
        capacity P covers the pool's average instead of each row's maximum (a batch of short responses needs
        far fewer head evaluations). 1 = per row. Keep pools within a data-parallel shard (the trainer uses one
        pool per shard's micro-batch at most).
      num_t_buckets: loss is also reported per bucket of t.
      head_chunk: > 0: the caller's logits_fn returns the head's inputs (`HeadParts`) and the head runs fused with
        the CE, this many vocabulary rows at a time (fused_head.py); 0: whole logits.
    """

    mask_id: int
    num_timesteps: int = 50
    weighting: str = "linear"
    coupled: bool = False
    loss_scale: float = 1.0
    label_smoothing: float = 0.0
    smoothing_weighting: str = "lambda"
    max_predictions: int | None = None
    pool_rows: int = 1
    num_t_buckets: int = 5
    head_chunk: int = 0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {self.weighting!r}; choose one of {list(WEIGHTINGS)}")
        if self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if self.smoothing_weighting not in ("lambda", "constant"):
            raise ConfigError(f"smoothing_weighting={self.smoothing_weighting!r}; choose 'lambda' or 'constant'")
        if self.loss_scale <= 0:
            raise ConfigError(f"loss_scale must be positive, got {self.loss_scale}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.head_chunk < 0:
            raise ConfigError(f"head_chunk must be >= 0 (0: whole logits), got {self.head_chunk}")
        if self.pool_rows < 1:
            raise ConfigError(f"pool_rows must be >= 1, got {self.pool_rows}")
        if self.num_t_buckets < 1 or self.num_t_buckets > self.num_timesteps:
            raise ConfigError(f"num_t_buckets must be in [1, num_timesteps], got {self.num_t_buckets}")


def loss_weight(t: jax.Array, cfg: RDMConfig) -> jax.Array:
    """lambda(t) for integer t in 1..T, float32 [batch]."""
    t = t.astype(jnp.float32)
    if cfg.weighting == "linear":
        return 1.0 - (t - 1.0) / cfg.num_timesteps
    if cfg.weighting == "reciprocal":
        return 1.0 / t
    return jnp.ones_like(t)


def corrupt(tokens: jax.Array, response_mask: jax.Array, rng: jax.Array, cfg: RDMConfig,
            segment_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Samples t and masks response tokens with probability t/T.

    Args:
      tokens: [batch, length] clean token ids.
      response_mask: [batch, length] bool, positions that may be noised.
      segment_ids: optional [batch, length] ids of packed examples (1.., 0 = padding): each example (segment)
        draws its own t.
    Returns:
      (noised tokens, masked [batch, length] bool, t): t is [batch] int32, or [batch, length] (each token's
      example's t) with `segment_ids`. With `cfg.coupled` every output has a doubled batch: rows B.. hold x_t2
      whose masks are a subset of x_t1's (t2 <= t1).
    """
    b, length = tokens.shape
    T = cfg.num_timesteps
    k_t1, k_t2, k_u1, k_u2 = jax.random.split(rng, 4)

    def draw_t(key):
        if segment_ids is None:
            return jax.random.randint(key, (b,), 1, T + 1)
        slots = jax.random.randint(key, (b, length), 1, T + 1)  # one t per segment id (ids < length)
        return jnp.take_along_axis(slots, segment_ids, axis=1)

    def per_token(t):
        return t[:, None] if t.ndim == 1 else t

    t1 = draw_t(k_t1)
    u1 = jax.random.uniform(k_u1, (b, length))
    if not cfg.coupled:
        masked = response_mask & (u1 < per_token(t1) / T)
        return jnp.where(masked, cfg.mask_id, tokens), masked, t1
    t2 = draw_t(k_t2)
    t1, t2 = jnp.maximum(t1, t2), jnp.minimum(t1, t2)
    m1 = response_mask & (u1 < per_token(t1) / T)
    nested = m1 & (jax.random.uniform(k_u2, (b, length)) < per_token(t2 / t1))
    # t1 == t2: an independent second mask (not a copy of the first), as the released q_sample_coupled draws it;
    # the key is derived from k_u2 so the uncoupled stream above stays as it was
    fresh = response_mask & (jax.random.uniform(jax.random.fold_in(k_u2, 1), (b, length)) < per_token(t1) / T)
    m2 = jnp.where(per_token(t1 == t2), fresh, nested)
    masked = jnp.concatenate([m1, m2])
    tokens2 = jnp.concatenate([tokens, tokens])
    return jnp.where(masked, cfg.mask_id, tokens2), masked, jnp.concatenate([t1, t2])


def masked_positions(masked: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
    """The first `num` masked positions of each row (masked ones first, in order) and which of them are real.

    Returns (positions [batch, num] int32, valid [batch, num] bool).
    """
    order = jnp.argsort(~masked, axis=1, stable=True)[:, :num]
    return order.astype(jnp.int32), jnp.take_along_axis(masked, order, axis=1)


def cross_entropy_and_hits(logits: jax.Array | HeadParts, targets: jax.Array, label_smoothing: float = 0.0,
                           smoothing_scale: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-position CE [..] (float32) and whether the target has the top logit [..] (bool), from logits [.., vocab]
    or from the head's inputs (`HeadParts`: fused with the head, a vocabulary chunk at a time, fused_head.py).

    With label smoothing e the CE is (1 - e) * (-log p_target) + e * r * mean_v(-log p_v), where r is
    `smoothing_scale` [..] (default 1: the usual smoothed one-hot; the RDM loss passes 1 / lambda(t) to give the
    smoothing term a constant weight, as the released trainer does).

    Written for a vocab-sized head. Logits may be float32 or the compute dtype (the RDM loss calls the model with
    `logits_dtype=None`): the reductions run in float32 either way, and the gradient comes back in the logits'
    dtype. CE = logsumexp - the target logit, picked by a compare against an iota; the hit test reuses the
    logsumexp's max (a tie for the top logit counts as a hit). The gradient is written by hand
    (`jax.custom_vjp`): one elementwise expression softmax - (smoothed) one-hot, scaled by the incoming cotangent,
    with only the logits and the logsumexp saved. (On an H100 the xlmr-large step measured the same speed as with
    the autodiff gradient: bench/RESULTS.md.)
    """
    scale = jnp.ones(targets.shape, jnp.float32) if smoothing_scale is None else smoothing_scale
    if isinstance(logits, HeadParts):  # the head's inputs: computed with the loss, a vocabulary chunk at a time
        return fused_cross_entropy_and_hits(logits, targets, float(label_smoothing), scale)
    return _cross_entropy(logits, targets, scale.astype(jnp.float32), float(label_smoothing))


def _ce_forward(logits: jax.Array, targets: jax.Array, scale: jax.Array, label_smoothing: float
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = logits.astype(jnp.float32)
    top = x.max(-1)
    lse = jnp.log(jnp.exp(x - top[..., None]).sum(-1)) + top
    target_logit = jnp.where(jnp.arange(x.shape[-1]) == targets[..., None], x, 0.0).sum(-1)
    nll = lse - target_logit
    if label_smoothing:  # mean over the vocabulary of -log p = lse - mean(logits)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * scale * (lse - x.mean(-1))
    return nll, target_logit >= top, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _cross_entropy(logits: jax.Array, targets: jax.Array, scale: jax.Array, label_smoothing: float
                   ) -> tuple[jax.Array, jax.Array]:
    nll, hits, _ = _ce_forward(logits, targets, scale, label_smoothing)
    return nll, hits


def _cross_entropy_fwd(logits, targets, scale, label_smoothing):
    nll, hits, lse = _ce_forward(logits, targets, scale, label_smoothing)
    return (nll, hits), (logits, targets, scale, lse)


def _cross_entropy_bwd(label_smoothing, residuals, cotangents):
    logits, targets, scale, lse = residuals
    g = cotangents[0].astype(jnp.float32)[..., None]  # the hits output is boolean: no gradient
    vocab = logits.shape[-1]
    onehot = jnp.arange(vocab) == targets[..., None]
    probs = jnp.exp(logits.astype(jnp.float32) - lse[..., None])
    smooth = label_smoothing * scale[..., None]
    d = probs * (1.0 - label_smoothing + smooth) - jnp.where(onehot, 1.0 - label_smoothing, 0.0) - smooth / vocab
    return (d * g).astype(logits.dtype), None, None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-position CE [..] from float logits [.., vocab] and int targets [..]."""
    return cross_entropy_and_hits(logits, targets, label_smoothing)[0]


def _examples(response: jax.Array, t: jax.Array, seg: jax.Array | None) -> tuple[jax.Array, ...]:
    """Per-example bookkeeping of [rows, L] inputs: (example id per position, response length per position,
    t per position, t per example, 1.0 per example present). An example is a row, or with packing a (row,
    segment id) with its own t and response length."""
    rows, length = response.shape
    if seg is None:  # one example per row
        example = jnp.broadcast_to(jnp.arange(rows)[:, None], (rows, length))
        n_resp = response.sum(1).astype(jnp.float32)
        return example, n_resp[:, None], t[:, None], t, jnp.ones((rows,), jnp.float32)
    example = jnp.arange(rows)[:, None] * length + seg
    counts = jax.ops.segment_sum(response.ravel().astype(jnp.float32), example.ravel(), rows * length)
    example_t = jax.ops.segment_max(t.ravel(), example.ravel(), rows * length)
    return example, counts[example], t, example_t, (counts > 0).astype(jnp.float32)


def rdm_loss(logits_fn: LogitsAtFn, batch: dict[str, jax.Array], rng: jax.Array, config: RDMConfig
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The RDM loss: sum over masked response tokens of lambda(t) * CE, / #response tokens, mean over sequences.

    Args:
      logits_fn: (noised tokens [B', L], positions [G, P]) -> logits [G, P, vocab]; G = B' / pool_rows, and with
        pool_rows > 1 a position indexes its group's rows laid end to end (`MaskedLM(output_positions=)` does this).
      batch: `tokens` [B, L] int (`<s> prompt response </s>` + padding), `response_mask` [B, L] bool (the noisable
        response incl. its `</s>`), optional `padding_mask` [B, L] (1 = real token; used by the caller's logits_fn),
        optional `segment_ids` [B, L] for packed rows (1.. per example, 0 = padding; the caller's logits_fn must
        pass them to the model): every example gets its own t and its own normalisation, and the loss is the
        mean over examples, exactly as if they were unpacked.
      rng: PRNG key.
      config: RDMConfig.
    Returns:
      (scalar loss, metrics) with metrics `loss`, `accuracy` (on masked tokens), `num_masked`, `num_dropped`
      (masked tokens beyond max_predictions, always 0 when it is large enough), `t_bucket_loss` / `t_bucket_count`
      [num_t_buckets] (sum of per-example losses and number of examples per bucket of t).
    """
    tokens, response = batch["tokens"], batch["response_mask"].astype(bool)
    seg = batch.get("segment_ids")
    noised, masked, t = corrupt(tokens, response, rng, config, seg)
    if config.coupled:
        tokens, response = jnp.concatenate([tokens, tokens]), jnp.concatenate([response, response])
        seg = None if seg is None else jnp.concatenate([seg, seg])
    rows, length = tokens.shape
    pool = config.pool_rows
    if rows % pool:
        raise ConfigError(f"the batch ({rows} rows) is not divisible by pool_rows={pool}")
    groups = rows // pool
    num = min(config.max_predictions or pool * length, pool * length)
    positions, valid = masked_positions(masked.reshape(groups, pool * length), num)  # [G, P]
    logits = logits_fn(noised, positions)  # [G, P, vocab]
    at = lambda x: jnp.take_along_axis(x.reshape(groups, pool * length), positions, axis=1)  # noqa: E731
    targets = at(tokens)
    example, n_tok, t_tok, example_t, present = _examples(response, t, seg)
    lam = jnp.broadcast_to(loss_weight(t_tok, config), (rows, length))
    # lambda(t) weighs the CE term; "constant" smoothing scales its term by 1 / lambda(t) to undo that
    smoothing_scale = (1.0 / at(lam) if config.label_smoothing and config.smoothing_weighting == "constant"
                       else None)
    ce, hits = cross_entropy_and_hits(logits, targets, config.label_smoothing, smoothing_scale)
    # Each predicted position weighs lambda(t) / (its example's response length); the loss is the mean over
    # examples of the weighted CE sum (RDM: one sequence, one t).
    w_tok = config.loss_scale * lam / jnp.maximum(jnp.broadcast_to(n_tok, (rows, length)), 1.0)
    contrib = at(w_tok) * valid * ce  # [G, P]
    loss = contrib.sum() / (rows if seg is None else jnp.maximum(present.sum(), 1.0))
    per_example = jax.ops.segment_sum(contrib.ravel(), at(example).ravel(), present.shape[0])
    bucket = ((jnp.maximum(example_t, 1) - 1) * config.num_t_buckets) // config.num_timesteps
    onehot = jax.nn.one_hot(bucket, config.num_t_buckets, dtype=jnp.float32) * present[:, None]  # [examples, nb]
    return loss, {"loss": loss, "accuracy": (hits & valid).sum() / jnp.maximum(valid.sum(), 1),
                  "num_masked": valid.sum(), "num_dropped": masked.sum() - valid.sum(),
                  "t_bucket_loss": onehot.T @ per_example, "t_bucket_count": onehot.sum(0)}


def bucket_names(config: RDMConfig) -> list[str]:
    """Metric names `loss_t{lo}-{hi}` of the t buckets (inclusive ranges of t)."""
    T, nb = config.num_timesteps, config.num_t_buckets
    names = []
    for b in range(nb):
        ts = [t for t in range(1, T + 1) if ((t - 1) * nb) // T == b]
        names.append(f"loss_t{ts[0]:02d}-{ts[-1]:02d}")
    return names
