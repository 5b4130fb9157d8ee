"""Monte Carlo estimate of the RDM negative ELBO of a response given its prompt, for rank classification.

For absorbing diffusion with masking probability t/T,
  -log p(x0) <= sum_{t=1..T} E_q [ (1/t) sum_{masked n} -log p(x0_n | x_t) ]
so with t ~ Uniform{1..T} one sample gives T/t * sum_masked CE; the mean of K samples estimates the bound and their
spread its standard error.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.diffusion.objective import cross_entropy

LogitsFn = Callable[[jax.Array], jax.Array]


def elbo_nll(logits_fn: LogitsFn, tokens: jax.Array, response_mask: jax.Array, rng: jax.Array, *, mask_id: int,
             num_samples: int = 8, num_timesteps: int = 50) -> tuple[jax.Array, jax.Array]:
    """Per-row negative-ELBO estimate and its standard error, both [batch] (nats, summed over the response).

    Args:
      logits_fn: tokens [batch, L] -> logits [batch, L, vocab].
      tokens: [batch, L] full sequences `<s> prompt response </s>`; rows may be (question, option) pairs.
      response_mask: [batch, L] bool, the response tokens being scored.
    """
    response = response_mask.astype(bool)
    T = num_timesteps

    def one(key):
        k_t, k_u = jax.random.split(key)
        t = jax.random.randint(k_t, (tokens.shape[0],), 1, T + 1)
        masked = response & (jax.random.uniform(k_u, tokens.shape) < t[:, None] / T)
        ce = cross_entropy(logits_fn(jnp.where(masked, mask_id, tokens)), tokens)
        return (T / t) * jnp.where(masked, ce, 0.0).sum(-1)

    samples = jax.lax.map(one, jax.random.split(rng, num_samples))  # [K, batch]
    mean = samples.mean(0)
    stderr = samples.std(0, ddof=1) / jnp.sqrt(num_samples) if num_samples > 1 else jnp.zeros_like(mean)
    return mean, stderr
