"""Monte Carlo estimate of the RDM negative ELBO of a response given its prompt, for rank classification.

For absorbing diffusion with masking probability t/T,
  -log p(x0) <= sum_{t=1..T} E_q [ (1/t) sum_{masked n} -log p(x0_n | x_t) ]
so with t ~ Uniform{1..T} one sample gives T/t * sum_masked CE; the mean of K samples estimates the bound and their
spread its standard error.

A row's estimate is a function of (model, tokens, key, K) alone: sample s of row r draws t and its masks from
`fold_in(keys[r], s)` (each position from its own fold, `rows.position_uniform`), and the model runs on the
(row, sample) pairs in fixed micro-batches (`rows.map_rows`), so neither the batch size, the row's position in it
nor the padded width changes a score.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.diffusion.objective import cross_entropy, masked_positions
from dlm_jax.diffusion.rows import map_rows, position_uniform

# (tokens [n, L], attention_mask [n, L], positions [n, R] or None, response mask [n, L]) -> logits [n, L or R,
# vocab]; the response mask is there for attention layouts that tell the prompt from the response
ScoreLogitsFn = Callable[[jax.Array, jax.Array, jax.Array | None, jax.Array], jax.Array]


def noise_draws(keys: jax.Array, response: jax.Array, *, num_samples: int, num_timesteps: int
                ) -> tuple[jax.Array, jax.Array]:
    """t [n, K] in 1..T and the masked positions [n, K, L] of each row's K samples (masks only in `response`)."""
    width = response.shape[1]

    def one_row(key: jax.Array, resp: jax.Array) -> tuple[jax.Array, jax.Array]:
        def one_sample(s: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_t, k_u = jax.random.split(jax.random.fold_in(key, s))
            t = jax.random.randint(k_t, (), 1, num_timesteps + 1)
            u = position_uniform(k_u[None], width)[0]
            return t, resp & (u < t / num_timesteps)
        return jax.vmap(one_sample)(jnp.arange(num_samples, dtype=jnp.uint32))

    return jax.vmap(one_row)(keys, response)


def elbo_nll(logits_fn: ScoreLogitsFn, tokens: jax.Array, response_mask: jax.Array, attention_mask: jax.Array,
             keys: jax.Array, *, mask_id: int, num_samples: int = 8, num_timesteps: int = 50,
             micro_batch: int = 0, max_response: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-row negative-ELBO estimate and its standard error, both [n] (nats, summed over the response).

    Args:
      logits_fn: see `ScoreLogitsFn`; with `max_response` R it is asked for logits at each row's first R response
        positions only (the vocabulary-sized head then runs on the response alone).
      tokens: [n, L] full sequences `<s> prompt response </s>`; rows may be (question, option) pairs.
      response_mask: [n, L] bool, the response tokens being scored.
      attention_mask: [n, L], 1 on real tokens.
      keys: [n] one PRNG key per row.
      micro_batch: (row, sample) pairs per model call (0: all n x K at once; see `rows.map_rows`).
    """
    response = response_mask.astype(bool)
    n, width = tokens.shape
    K, T = num_samples, num_timesteps
    t, masked = noise_draws(keys, response, num_samples=K, num_timesteps=T)
    flat = lambda a: jnp.repeat(a, K, axis=0)  # noqa: E731  [n, L] -> [n*K, L], row-major like masked
    masked = masked.reshape(n * K, width)
    targets, attn, resp = flat(tokens), flat(attention_mask), flat(response)

    def sums(tgt: jax.Array, att: jax.Array, rsp: jax.Array, msk: jax.Array) -> jax.Array:
        noised = jnp.where(msk, mask_id, tgt)
        if max_response is None:
            return jnp.where(msk, cross_entropy(logits_fn(noised, att, None, rsp), tgt), 0.0).sum(-1)
        pos, _ = masked_positions(rsp, max_response)
        take = lambda a: jnp.take_along_axis(a, pos, axis=1)  # noqa: E731
        ce = cross_entropy(logits_fn(noised, att, pos, rsp), take(tgt))
        return jnp.where(take(msk), ce, 0.0).sum(-1)

    per_sample = map_rows(sums, (targets, attn, resp, masked), micro_batch).reshape(n, K)
    return mean_and_stderr((T / t) * per_sample)


def mean_and_stderr(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and standard error of the mean over the last axis of [n, K], each row summed in sample order with
    elementwise adds (`lax.scan`), so a row's result does not depend on how many rows there are (a reduction's
    order may change with the array's shape)."""
    K = samples.shape[1]
    cols = samples.T
    total = jax.lax.scan(lambda acc, x: (acc + x, None), jnp.zeros_like(cols[0]), cols)[0]
    mean = total / K
    if K == 1:
        return mean, jnp.zeros_like(mean)
    sq = jax.lax.scan(lambda acc, x: (acc + (x - mean) ** 2, None), jnp.zeros_like(mean), cols)[0]
    return mean, jnp.sqrt(sq / (K - 1)) / jnp.sqrt(K)
