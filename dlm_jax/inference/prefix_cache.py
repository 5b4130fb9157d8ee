"""The diffusion sampler's prefix cache (`SamplerConfig.cache`, issue 39): the model over the whole row once, then
every denoising step over the live positions only, against the keys and values cached at that first call.

A row is `<s> prompt response [</s>] pad`. At every step the sampler only changes the positions it decodes, so
the prompt's keys and values are recomputed S times for nothing. With a cache:

- `prefix` (Fast-dLLM's prefix cache): the live positions are the row's response side from the first position
  being decoded on (the positions decoded now, later blocks of a semi-autoregressive decode, a fixed `</s>`); the
  cache holds everything before them: the prompt and the blocks already decoded.
- `dual` (Fast-dLLM's DualCache): the live positions are the ones being decoded only; later blocks and a fixed
  `</s>` are read from the cache as well.

The cache is filled by one call over the whole row, at the start of `sample` (so at every block start under
`block_length`: Fast-dLLM's refresh per block). It is exact when the cached keys do not depend on the live
tokens: `prefix` under the `prompt_prefix` attention layout (a prompt never sees the response; tested equal to
`none`). On a bidirectional model the prompt's cached keys are those it had with the live positions as they were
at the fill (all masked for a whole-response decode): an approximation, whose cost is measured (bench/RESULTS.md).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.diffusion.fused_head import HeadParts
from dlm_jax.diffusion.objective import masked_positions
from dlm_jax.diffusion.rows import map_rows


def response_side(response: Any, attn: Any) -> Any:
    """[n, L] bool (numpy, or jax inside a jitted function): each row's real positions at or after its first
    response position (the response, and a fixed `</s>` after it): what the `prompt_prefix` layout hides from
    the prompt."""
    xp = np if isinstance(response, np.ndarray) else jnp
    return attn.astype(bool) & (xp.cumsum(response, axis=1) > 0)


def live_positions(side: np.ndarray, decoded: np.ndarray, mode: str) -> np.ndarray:
    """[n, L] bool, the positions a cached step recomputes (`mode` "prefix" or "dual", see the module docstring):
    `decoded` are the positions the sampler decodes in this call (a block of the response, or all of it)."""
    if mode == "dual":
        return decoded.astype(bool)
    return side & (np.cumsum(decoded, axis=1) > 0)


def fill_cache(model: Any, params: Any, tokens: jax.Array, attn: jax.Array, side: jax.Array,
               micro_batch: int = 0) -> Any:
    """Every layer's keys and values of the rows `tokens` / `attn` / `side` [b, L] (the "cache" collection of the
    decode-mode `model`, leaves [b, ...]), computed `micro_batch` rows at a time (`rows.map_rows`: a row's cache
    is the same whatever else is filled with it)."""
    def one(t: jax.Array, a: jax.Array, sd: jax.Array) -> Any:
        _, state = model.apply({"params": params}, t, attention_mask=a, method="encode", mutable=["cache"],
                               **model.cfg.layout_kwargs(sd))
        return state["cache"]
    return map_rows(one, (tokens, attn, side), micro_batch)


def cached_logits(model: Any, params: Any, cache: Any, live_pos: jax.Array, live_valid: jax.Array,
                  visible: jax.Array, head_chunk: int = 0) -> Callable:
    """The sampler's `logits_fn(tokens, positions, rows=None)` reading `cache` (`fill_cache`): each call runs the
    model over the live slots `live_pos` [b, live] (`live_valid`: real ones) of its rows (`rows`: the sampler's
    micro-batch) against the cached `visible` [b, L] columns, and returns the first `positions.shape[1]` live
    slots' logits (the positions the sampler asks for come first among them)."""
    def logits_fn(t: jax.Array, positions: jax.Array, rows: jax.Array | None = None) -> Any:
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])
        cols = pick(live_pos)
        out = model.apply({"params": params, "cache": jax.tree.map(pick, cache)},
                          jnp.take_along_axis(t, cols, axis=1), cols, pick(live_valid), pick(visible),
                          num_out=positions.shape[1], head_parts=head_chunk > 0, method="prefix_logits")
        return HeadParts(*out, chunk=head_chunk) if head_chunk else out
    return logits_fn


def cached_logits_fn(model: Any, params: Any, tokens: jax.Array, attn: jax.Array, side: jax.Array,
                     live: jax.Array, max_live: int, head_chunk: int = 0, micro_batch: int = 0) -> Callable:
    """`cached_logits` over a cache filled here (inside a jitted function), for rows as the sampler starts them.

    `model` is the decode-mode module (`model_for(cfg, decode=True)`); `tokens` / `attn` / `side` [b, L] the rows,
    `live` [b, L] the recomputed positions (`live_positions`), `max_live` the static number of live slots per row
    (at least the sampler's `max_response`).
    """
    cache = fill_cache(model, params, tokens, attn, side, micro_batch)
    return cached_logits(model, params, cache, *live_slots(live, attn, max_live), head_chunk)


def live_slots(live: Any, attn: Any, max_live: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What `cached_logits` reads of rows with `live` [b, L] positions: (live_pos [b, max_live], each row's live
    positions first; live_valid [b, max_live], which slots are live; visible [b, L], the cached columns a live
    token sees: real and not live)."""
    live_pos, live_valid = masked_positions(jnp.asarray(live, bool), max_live)
    return live_pos, live_valid, jnp.asarray(attn).astype(bool) & ~jnp.asarray(live, bool)
