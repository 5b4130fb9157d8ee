"""Row-wise randomness and fixed-shape model calls: what makes a row's result independent of its batch.

A score or a sampled response must be a function of (model, example, seed, settings) alone, never of the batch it
was computed in. Two things break that in a naive batched implementation, and this module removes both:

- Random numbers drawn at the batch's shape (`uniform(key, (batch, width))`): a row's draws then change with the
  batch size, its position in the batch and the padded width. Here every row has its own key (`row_keys`: from a
  stable hash of its tokens or an explicit id) and every position its own draw (`position_uniform`,
  `position_categorical`: `fold_in(row_key, position)`), so no draw depends on the shape.
- Floating-point results of the model at different shapes: XLA:CPU (and GPU libraries) pick matmul kernels by
  shape, so the same row's logits differ in the last bits between a batch of 1 and a batch of 8 (measured: up to
  5e-7 on a tiny model). At one fixed shape a row's logits do not depend on the other rows or its position, so
  `map_rows` runs a function over fixed-size micro-batches of rows (`lax.map`), whatever the batch size.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def stable_hash(*parts: Sequence[int] | int) -> int:
    """A 31-bit hash of integer sequences / integers, the same in every process and Python run (not `hash()`)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        arr = np.atleast_1d(np.asarray(part, dtype=np.int64))
        h.update(np.int64(arr.size).tobytes())
        h.update(arr.tobytes())
    return int.from_bytes(h.digest(), "little") & 0x7FFFFFFF


def typed_key(rng: jax.Array) -> jax.Array:
    """`rng` as a typed key array (raw uint32 key data, e.g. `jax.random.PRNGKey`, is wrapped)."""
    return rng if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(rng)


def row_keys(rng: jax.Array, ids: Sequence[int] | np.ndarray) -> jax.Array:
    """[n] keys `fold_in(rng, id)`, one per row (ids: e.g. `stable_hash` of the row's tokens, or request ids)."""
    ids = jnp.asarray(np.asarray(ids, np.uint32))
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(typed_key(rng), ids)


def split_rows(keys: jax.Array, step: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent [n] key arrays for step `step` (one for all rows, or [n]: each row's own) of each row."""
    steps = jnp.broadcast_to(jnp.asarray(step, jnp.int32), keys.shape[:1])
    k = jax.vmap(lambda key, s: jax.random.split(jax.random.fold_in(key, s)))(keys, steps)
    return k[:, 0], k[:, 1]


def position_keys(keys: jax.Array, positions: jax.Array) -> jax.Array:
    """[n, P] keys `fold_in(keys[r], positions[r, p])`."""
    return jax.vmap(lambda key, pos: jax.vmap(lambda q: jax.random.fold_in(key, q))(pos))(keys, positions)


def _absolute(keys: jax.Array, width: int) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(width, dtype=jnp.uint32), (keys.shape[0], width))


def position_uniform(keys: jax.Array, width: int, positions: jax.Array | None = None) -> jax.Array:
    """[n, width] uniforms in [0, 1): position p of row r draws from `fold_in(keys[r], p)` alone."""
    pos = _absolute(keys, width) if positions is None else positions.astype(jnp.uint32)
    return jax.vmap(jax.vmap(lambda k: jax.random.uniform(k, ())))(position_keys(keys, pos))


def position_categorical(keys: jax.Array, logits: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """[n, P] samples from `logits` [n, P, vocab]; slot p of row r draws with `fold_in(keys[r], positions[r, p])`
    (default positions 0..P-1), so a draw depends on the row, its position and its logits only."""
    n, p = logits.shape[:2]
    pos = _absolute(keys, p) if positions is None else positions.astype(jnp.uint32)
    return jax.vmap(jax.vmap(jax.random.categorical))(position_keys(keys, pos), logits)


def map_rows(fn: Callable[..., Any], arrays: Sequence[jax.Array], micro_batch: int) -> Any:
    """`fn(*arrays)` computed `micro_batch` rows at a time (`lax.map`), the rows padded by repeating the last.

    Every call of `fn` sees the same shape, so each output row is bit-identical whichever rows share its batch.
    `micro_batch=0` calls `fn` once on all rows (faster where the batch is large; results then depend on the
    batch's shape in the last bits). `fn` maps arrays with a leading row axis to a pytree with one.
    """
    n = arrays[0].shape[0]
    if micro_batch <= 0 or n == 0:
        return fn(*arrays)
    chunks = -(-n // micro_batch)
    pad = chunks * micro_batch - n

    def split(a: jax.Array) -> jax.Array:
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
        return a.reshape((chunks, micro_batch) + a.shape[1:])

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(a) for a in arrays))
    return jax.tree_util.tree_map(lambda o: o.reshape((chunks * micro_batch,) + o.shape[2:])[:n], out)
