"""The output head and its cross-entropy fused, computed in chunks of the vocabulary so that the [positions, vocab]
logits never exist whole, in the forward or the backward pass (Liger's fused linear cross-entropy, MaxText's
vocabulary tiling, Apple's Cut Cross-Entropy).

A model returns `HeadParts` (the head's input features, its table and bias) instead of logits when asked
(`head_parts=True`); `objective.cross_entropy_and_hits` takes either. Forward: a `lax.scan` over vocabulary
chunks of `chunk` rows keeps a running maximum, sum of exponentials, target logit and logit sum per position.
Backward (`jax.custom_vjp`): the same scan recomputes each chunk's logits and turns softmax - (smoothed) one-hot
into the chunk's share of d(features) and its own rows of d(table) and d(bias). Saved for the backward pass: the
features, the table and one log-sum-exp per position.

Numerics: each chunk's logits are the product in the features' dtype plus the bias in that dtype, reduced in
float32, as the unfused path (`MaskedLM.logits_from_hidden` + `cross_entropy_and_hits`); in float32 the results
equal it up to summation order (tests/test_fused_head.py).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class HeadParts(NamedTuple):
    """What the head would multiply: logits = features @ table.T + bias (bias may be None), and the vocabulary rows
    per chunk of the fused loss. Built inside a traced function (never a jit argument: `chunk` is a Python int)."""

    features: jax.Array  # [..., embed]
    table: jax.Array  # [vocab, embed]
    bias: jax.Array | None  # [vocab]
    chunk: int = 8192


def logits_of(parts: HeadParts) -> jax.Array:
    """The whole logits [..., vocab] (for tests and the unchunked reference)."""
    x = jnp.einsum("...e,ve->...v", parts.features, parts.table.astype(parts.features.dtype))
    return x if parts.bias is None else x + parts.bias.astype(x.dtype)


def fused_cross_entropy_and_hits(parts: HeadParts, targets: jax.Array, label_smoothing: float, scale: jax.Array
                                 ) -> tuple[jax.Array, jax.Array]:
    """Per-position CE [..] (float32) and top-1 hits [..] of the head's logits, `parts.chunk` rows at a time.
    Same definition as `objective.cross_entropy_and_hits` (label smoothing `e`, its per-position `scale`)."""
    lead = targets.shape
    h = parts.features.reshape(-1, parts.features.shape[-1])
    bias = jnp.zeros(parts.table.shape[:1], h.dtype) if parts.bias is None else parts.bias
    nll, hits = _fused(h, parts.table, bias, targets.reshape(-1), scale.reshape(-1).astype(jnp.float32),
                       float(label_smoothing), int(parts.chunk))
    return nll.reshape(lead), hits.reshape(lead)


def _tiles(table: jax.Array, bias: jax.Array, chunk: int, dtype: jnp.dtype
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """table [V, e] and bias [V] as [n, chunk, e] / [n, chunk] (padded rows: zero rows, bias -inf) and each chunk's
    first id [n]."""
    vocab, chunk = table.shape[0], min(chunk, table.shape[0])
    n = -(-vocab // chunk)
    pad = n * chunk - vocab
    t = jnp.pad(table.astype(dtype), ((0, pad), (0, 0))).reshape(n, chunk, table.shape[1])
    b = jnp.pad(bias.astype(dtype), (0, pad), constant_values=-jnp.inf).reshape(n, chunk)
    return t, b, jnp.arange(n) * chunk


def _chunk_logits(h: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return (jnp.einsum("ne,ce->nc", h, w) + b).astype(jnp.float32)


def _forward(h, table, bias, targets, scale, label_smoothing, chunk):
    vocab = table.shape[0]
    w, b, starts = _tiles(table, bias, chunk, h.dtype)
    ids = jnp.arange(w.shape[1])

    def body(carry, xs):
        top, sumexp, target_logit, total = carry
        wc, bc, start = xs
        x = _chunk_logits(h, wc, bc)  # [N, chunk]; padded columns -inf
        new_top = jnp.maximum(top, x.max(-1))
        sumexp = sumexp * jnp.exp(top - new_top) + jnp.exp(x - new_top[:, None]).sum(-1)
        target_logit = target_logit + jnp.where(start + ids == targets[:, None], x, 0.0).sum(-1)
        total = total + jnp.where(jnp.isfinite(x), x, 0.0).sum(-1)
        return (new_top, sumexp, target_logit, total), None

    n = h.shape[0]
    init = (jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.float32),
            jnp.zeros((n,), jnp.float32))
    (top, sumexp, target_logit, total), _ = jax.lax.scan(body, init, (w, b, starts))
    lse = jnp.log(sumexp) + top
    nll = lse - target_logit
    if label_smoothing:  # mean over the vocabulary of -log p = lse - mean(logits)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * scale * (lse - total / vocab)
    return nll, target_logit >= top, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _fused(h, table, bias, targets, scale, label_smoothing, chunk):
    nll, hits, _ = _forward(h, table, bias, targets, scale, label_smoothing, chunk)
    return nll, hits


def _fused_fwd(h, table, bias, targets, scale, label_smoothing, chunk):
    nll, hits, lse = _forward(h, table, bias, targets, scale, label_smoothing, chunk)
    return (nll, hits), (h, table, bias, targets, scale, lse)


def _fused_bwd(label_smoothing, chunk, residuals, cotangents):
    h, table, bias, targets, scale, lse = residuals
    vocab = table.shape[0]
    g = cotangents[0].astype(jnp.float32)[:, None]  # the hits output is boolean: no gradient
    smooth = (label_smoothing * scale)[:, None]
    w, b, starts = _tiles(table, bias, chunk, h.dtype)
    ids = jnp.arange(w.shape[1])

    def body(dh, xs):
        wc, bc, start = xs
        x = _chunk_logits(h, wc, bc)
        p = jnp.exp(x - lse[:, None])  # padded columns: 0
        onehot = start + ids == targets[:, None]
        d = p * (1.0 - label_smoothing + smooth) - jnp.where(onehot, 1.0 - label_smoothing, 0.0) - smooth / vocab
        d = (jnp.where(jnp.isfinite(x), d, 0.0) * g).astype(h.dtype)
        dh = dh + jnp.einsum("nc,ce->ne", d, wc, preferred_element_type=jnp.float32)
        return dh, (jnp.einsum("nc,ne->ce", d, h), d.astype(jnp.float32).sum(0))

    dh, (dw, db) = jax.lax.scan(body, jnp.zeros(h.shape, jnp.float32), (w, b, starts))
    dtable = dw.reshape(-1, table.shape[1])[:vocab].astype(table.dtype)
    return dh.astype(h.dtype), dtable, db.reshape(-1)[:vocab].astype(bias.dtype), None, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_argmax_and_logprob(parts: HeadParts, exclude_id: int) -> tuple[jax.Array, jax.Array]:
    """The most likely token [..] (first of ties, `exclude_id` never) and its log-probability [..] of the head's
    logits, `parts.chunk` vocabulary rows at a time (the sampler's argmax step without [.., vocab] logits)."""
    lead = parts.features.shape[:-1]
    h = parts.features.reshape(-1, parts.features.shape[-1])
    bias = jnp.zeros(parts.table.shape[:1], h.dtype) if parts.bias is None else parts.bias
    w, b, starts = _tiles(parts.table, bias, parts.chunk, h.dtype)
    ids = jnp.arange(w.shape[1])

    def body(carry, xs):
        top, sumexp, best = carry
        wc, bc, start = xs
        x = _chunk_logits(h, wc, bc)
        x = jnp.where(start + ids == exclude_id, -jnp.inf, x)
        c_top = x.max(-1)
        new_top = jnp.maximum(top, c_top)
        best = jnp.where(c_top > top, start + jnp.argmax(x, -1).astype(jnp.int32), best)  # earlier chunks win ties
        sumexp = sumexp * jnp.exp(top - new_top) + jnp.exp(x - new_top[:, None]).sum(-1)
        return (new_top, sumexp, best), None

    n = h.shape[0]
    init = (jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32))
    (top, sumexp, best), _ = jax.lax.scan(body, init, (w, b, starts))
    return best.reshape(lead), (-jnp.log(sumexp)).reshape(lead)  # top - (log(sumexp) + top)
