"""Length beam and oracle length: build candidate inputs, decode them in one batch, keep the best."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.errors import InputError


def top_lengths(length_logits: np.ndarray, beam: int, *, min_length: int = 2, max_length: int | None = None
                ) -> np.ndarray:
    """The `beam` most likely lengths per example, [batch, beam], restricted to [min_length, max_length]."""
    logits = np.array(length_logits, dtype=np.float64)
    c = logits.shape[-1]
    allowed = np.arange(c) >= min_length
    if max_length is not None:
        allowed &= np.arange(c) <= max_length
    logits[:, ~allowed] = -np.inf
    return np.argsort(-logits, axis=-1, kind="stable")[:, :beam]


def build_inputs(prompts: Sequence[Sequence[int]], lengths: Sequence[int], *, bos_id: int, pad_id: int,
                 mask_id: int, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`<s> prompt <mask>*n` rows (n includes the final `</s>` slot), right-padded.

    Returns (tokens [batch, L], response_mask [batch, L] bool, attention_mask [batch, L] int32).
    """
    rows = [[bos_id, *p] + [mask_id] * int(n) for p, n in zip(prompts, lengths)]
    width = max_len or max(len(r) for r in rows)
    if any(len(r) > width for r in rows):
        raise InputError(f"a prompt plus its response needs {max(len(r) for r in rows)} tokens, more than "
                         f"{width}; shorten the prompt or the length")
    tokens = np.full((len(rows), width), pad_id, np.int32)
    resp = np.zeros((len(rows), width), bool)
    for i, (r, p) in enumerate(zip(rows, prompts)):
        tokens[i, :len(r)] = r
        resp[i, 1 + len(p):len(r)] = True
    return tokens, resp, (tokens != pad_id).astype(np.int32) | resp


def select_best(scores: jax.Array, response_mask: jax.Array, beam: int) -> jax.Array:
    """Index in 0..beam-1 of the candidate with the highest mean token log-prob, per example.

    scores / response_mask: [batch * beam, L], candidates of example i at rows i*beam .. i*beam+beam-1.
    """
    resp = response_mask.astype(jnp.float32)
    mean = (jnp.where(response_mask, scores, 0.0)).sum(-1) / jnp.maximum(resp.sum(-1), 1.0)
    return jnp.argmax(mean.reshape(-1, beam), axis=-1)
