"""The autoregressive objective of the paper's baselines (Table 1): next-token cross-entropy on the response.

Logits at position i predict token i + 1 (shifted by one, as a causal LM), scored wherever token i + 1 is a
response token, the final `</s>` included; the prompt is context only. The loss is the mean over the batch's
scored tokens (fairseq's normalisation by the number of target tokens), with optional label smoothing (0.1 for
the paper's runs from scratch, A.1). With a causal model (`ModelConfig.causal`) this is a decoder-only AR LM over
`<s> prompt response </s>`, the paper's "decoder-only" baseline: the prompt is also read left to right (footnote 8).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.diffusion.objective import cross_entropy_and_hits


def ar_loss(logits_fn: Callable[[jax.Array], jax.Array], batch: dict[str, jax.Array], *,
            label_smoothing: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of `batch` (tokens, response_mask [rows, L]); `logits_fn(tokens)` -> [rows, L, vocab]."""
    tokens = batch["tokens"]
    scored = batch["response_mask"].astype(bool)[:, 1:]  # position i predicts token i + 1
    logits = logits_fn(tokens)[:, :-1]
    ce, hits = cross_entropy_and_hits(logits, tokens[:, 1:], label_smoothing)
    n = jnp.maximum(scored.sum(), 1)
    loss = jnp.where(scored, ce, 0.0).sum() / n
    return loss, {"loss": loss, "accuracy": (hits & scored).sum() / n,
                  "num_tokens": scored.sum().astype(jnp.float32) / tokens.shape[0]}
