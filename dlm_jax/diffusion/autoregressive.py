"""The paper's autoregressive baselines (Table 1): next-token cross-entropy on the response, and decoding with a
KV cache (greedy, fairseq's beam search) as pure functions of a model's prefill and step functions.

Logits at position i predict token i + 1 (shifted by one, as a causal LM), scored wherever token i + 1 is a
response token, the final `</s>` included; the prompt is context only. The loss is the mean over the batch's
scored tokens (fairseq's normalisation by the number of target tokens), with optional label smoothing (0.1 for
the paper's runs from scratch, A.1). With a causal model (`ModelConfig.causal`) this is a decoder-only AR LM over
`<s> prompt response </s>`, the paper's "decoder-only" baseline: the prompt is also read left to right (footnote 8).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dlm_jax.diffusion.objective import cross_entropy_and_hits, masked_positions
from dlm_jax.errors import ConfigError


def ar_loss(logits_fn: Callable[[jax.Array, jax.Array], jax.Array], batch: dict[str, jax.Array], *,
            label_smoothing: float = 0.0, pool_rows: int = 1, max_predictions: int = 0
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of `batch` (tokens, response_mask [rows, L]).

    `logits_fn(tokens, positions [G, P])` -> logits [G, P, vocab] at the scored positions only (the positions
    whose next token is a response token; G = rows / pool_rows groups of rows laid end to end, as the RDM loss's
    pooled head): the vocabulary-sized head runs on at most `max_predictions` positions per group (0: all of
    them). Positions beyond it are dropped and counted in `num_dropped` (0 when the capacity is large enough).
    """
    tokens = batch["tokens"]
    rows, length = tokens.shape
    scored = jnp.pad(batch["response_mask"].astype(bool)[:, 1:], ((0, 0), (0, 1)))  # position i predicts i + 1
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
    pool = pool_rows if pool_rows > 0 else rows
    if rows % pool:
        raise ConfigError(f"the batch ({rows} rows) is not divisible by pool_rows={pool}")
    groups = rows // pool
    num = min(max_predictions or pool * length, pool * length)
    positions, valid = masked_positions(scored.reshape(groups, pool * length), num)
    logits = logits_fn(tokens, positions)
    ce, hits = cross_entropy_and_hits(logits, jnp.take_along_axis(targets.reshape(groups, -1), positions, 1),
                                      label_smoothing)
    n = jnp.maximum(valid.sum(), 1)
    loss = jnp.where(valid, ce, 0.0).sum() / n
    return loss, {"loss": loss, "accuracy": (hits & valid).sum() / n,
                  "num_tokens": valid.sum().astype(jnp.float32) / rows,
                  "num_dropped": scored.sum() - valid.sum()}


# --------------------------------------------------------------------------------------------------------------
# Decoding with a KV cache: greedy and beam search, each one jitted `lax.while_loop`
# --------------------------------------------------------------------------------------------------------------
PrefillFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]  # (tokens, attention) -> (logits [B, V], cache)
StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any]]  # (cache, token [B]) -> (logits [B, V], cache)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """AR decoding (fairseq-generate's settings). `beam_size` 1 is greedy. A response has at most
    `max_len_a * prompt tokens + max_len_b` tokens with its `</s>` (fairseq's max_len_a / max_len_b; also capped by
    the row length); `</s>` is forced at the last one and forbidden at the first (fairseq's min_len 1). Beam scores
    are sum log p / len ** `length_penalty` (len counts `</s>`; fairseq's lenpen). `temperature` > 0 (with
    `beam_size` 1) samples each token from softmax(logits / temperature) with the row's own key instead of the
    argmax (0: greedy)."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"decoding.beam_size must be at least 1 (1: greedy), got {self.beam_size}")
        if self.temperature < 0 or (self.temperature > 0 and self.beam_size != 1):
            raise ConfigError(f"decoding.temperature must be >= 0 (0: the argmax) and > 0 only with beam_size 1, "
                              f"got temperature {self.temperature} with beam_size {self.beam_size}")
        if self.max_len_a < 0 or self.max_len_b < 0 or self.max_len_a == self.max_len_b == 0:
            raise ConfigError(f"decoding.max_len_a / max_len_b must be >= 0 and not both 0, got {self.max_len_a}, "
                              f"{self.max_len_b}")

    def limit(self, prompt_tokens: int) -> int:
        """Most response tokens (with `</s>`) for a prompt of `prompt_tokens` tokens."""
        return max(1, int(self.max_len_a * prompt_tokens + self.max_len_b))


class Decoded(NamedTuple):
    tokens: jax.Array  # [B, T] response ids, `</s>` included, `pad_id` after it
    scores: jax.Array  # [B] greedy: sum of log-probs; beam: that over length ** length_penalty
    num_evals: jax.Array  # [] model calls (the prefill and each step)


def _allowed(logp: jax.Array, t: jax.Array, limits: jax.Array, eos_id: int) -> jax.Array:
    """Log-probs [B, ..., V] at step `t` with `</s>` forced where the row is at its limit, forbidden at step 0."""
    is_eos = jnp.arange(logp.shape[-1]) == eos_id
    rows = (-1,) + (1,) * (logp.ndim - 1)
    at_limit = (t + 1 >= limits).reshape(rows)
    first = jnp.broadcast_to(t == 0, limits.shape).reshape(rows)  # t: one step for all rows, or each row's own
    logp = jnp.where(at_limit & ~is_eos, -jnp.inf, logp)
    return jnp.where(first & ~at_limit & is_eos, -jnp.inf, logp)


def prompt_rows(tokens: jax.Array, response: jax.Array, attention: jax.Array, pad_id: int
                ) -> tuple[jax.Array, jax.Array]:
    """What a prefill reads of laid-out rows (`<s> prompt` then the response positions): (the tokens with every
    position outside the prompt set to `pad_id`, the prompt's attention mask)."""
    prompt = attention * (1 - response.astype(attention.dtype))
    return jnp.where(prompt > 0, tokens, pad_id), prompt


def greedy_decode(prefill_fn: PrefillFn, step_fn: StepFn, tokens: jax.Array, attention_mask: jax.Array,
                  limits: jax.Array, *, max_new: int, eos_id: int, pad_id: int, temperature: float = 0.0,
                  keys: jax.Array | None = None) -> Decoded:
    """Argmax decoding: prefill, then one cached step per token until every row wrote `</s>`. `temperature` > 0:
    token t of row b is drawn from softmax(log p / temperature) with `fold_in(keys[b], t)` (`keys`: [B] typed
    keys), so a row's sample depends on its key alone, never on the other rows; scores stay sum log p."""
    if temperature > 0 and keys is None:
        raise ConfigError("sampling (temperature > 0) needs a key per row")
    logits, cache = prefill_fn(tokens, attention_mask)
    b = tokens.shape[0]
    limits = jnp.minimum(limits, max_new)

    def cond(s):
        return (s[0] < max_new) & ~s[2].all()

    def body(s):
        t, logits, done, out, score, cache = s
        tok, logp = next_tokens(logits, t, limits, done, temperature, keys, eos_id=eos_id, pad_id=pad_id)
        score = score + logp
        out = out.at[:, t].set(tok)
        logits, cache = step_fn(cache, jnp.where(done, eos_id, tok))
        return t + 1, logits, done | (tok == eos_id), out, score, cache

    init = (jnp.int32(0), logits, jnp.zeros((b,), bool), jnp.full((b, max_new), pad_id, jnp.int32),
            jnp.zeros((b,), jnp.float32), cache)
    t, _, _, out, score, _ = jax.lax.while_loop(cond, body, init)
    return Decoded(out, score, t)


def next_tokens(logits: jax.Array, t: jax.Array, limits: jax.Array, done: jax.Array,
                temperature: float | jax.Array, keys: jax.Array | None, *, eos_id: int, pad_id: int
                ) -> tuple[jax.Array, jax.Array]:
    """One cached decoding step's choice: (token [B], its log-prob [B]) of each row from its next-token `logits`
    [B, V] at step `t` (a scalar, or [B]: each row's own count of written tokens), `</s>` forced at the row's limit
    and forbidden at its first token; `pad_id` and 0 for `done` rows. `temperature` (a float for every row, or [B]):
    0 takes the argmax, > 0 draws with `fold_in(keys[b], t)`. `greedy_decode` and the serving engine's AR slots
    both step through it."""
    logp = _allowed(jax.nn.log_softmax(logits.astype(jnp.float32), -1), t, limits, eos_id)
    tok = _pick(logp, t, temperature, keys)
    return jnp.where(done, pad_id, tok), jnp.where(done, 0.0, jnp.take_along_axis(logp, tok[:, None], 1)[:, 0])


def _pick(logp: jax.Array, t: jax.Array, temperature: float | jax.Array, keys: jax.Array | None) -> jax.Array:
    """[B] next tokens: the argmax of `logp` [B, V], or (temperature > 0) a draw per row with fold_in(key, t);
    an array `temperature` [B] chooses per row (0: the argmax)."""
    greedy = jnp.argmax(logp, -1).astype(jnp.int32)
    if isinstance(temperature, (int, float)) and temperature <= 0:
        return greedy
    b = logp.shape[0]
    temp = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (b,))
    draw = jax.vmap(lambda k, lp, tt, tau: jax.random.categorical(jax.random.fold_in(k, tt), lp / tau))
    drawn = draw(keys, logp, jnp.broadcast_to(t, (b,)), jnp.where(temp > 0, temp, 1.0)).astype(jnp.int32)
    return drawn if isinstance(temperature, (int, float)) else jnp.where(temp > 0, drawn, greedy)


class _Beams(NamedTuple):
    t: jax.Array
    logits: jax.Array  # [B*K, V]
    alive: jax.Array  # [B, K, T]
    alive_lp: jax.Array  # [B, K]
    finished: jax.Array  # [B, K, T]
    finished_score: jax.Array  # [B, K] (-inf: empty slot)
    cache: Any  # leaves [B*K, ...]


def beam_search(prefill_fn: PrefillFn, step_fn: StepFn, tokens: jax.Array, attention_mask: jax.Array,
                limits: jax.Array, *, beam_size: int, max_new: int, eos_id: int, pad_id: int,
                length_penalty: float = 1.0) -> Decoded:
    """fairseq's beam search with a KV cache. Each step ranks the top 2K continuations of the K live beams by
    log-prob; those among the first K that end in `</s>` are finished (score: log-prob / length ** penalty), the
    best K others live on. A row is done once it has K finished hypotheses; the best finished one is returned.
    Cache leaves carry the beams on their first axis (B*K rows)."""
    logits, cache = prefill_fn(tokens, attention_mask)
    b, k = tokens.shape[0], beam_size
    limits = jnp.minimum(limits, max_new)
    rep = lambda x: jnp.repeat(x, k, axis=0)  # noqa: E731
    lp0 = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None].repeat(b, 0)
    empty = jnp.full((b, k, max_new), pad_id, jnp.int32)
    init = _Beams(jnp.int32(0), rep(logits), empty, lp0, empty, jnp.full((b, k), -jnp.inf), jax.tree.map(rep, cache))

    def cond(s: _Beams):
        return (s.t < max_new) & ~(jnp.isfinite(s.finished_score).sum(-1) >= k).all()

    def body(s: _Beams) -> _Beams:
        return _beam_step(s, step_fn, limits, k=k, eos_id=eos_id, length_penalty=length_penalty)

    s = jax.lax.while_loop(cond, body, init)
    best = jnp.argmax(s.finished_score, -1)
    return Decoded(s.finished[jnp.arange(b), best], s.finished_score[jnp.arange(b), best], s.t)


def _beam_step(s: _Beams, step_fn: StepFn, limits: jax.Array, *, k: int, eos_id: int,
               length_penalty: float) -> _Beams:
    """One beam-search step (see `beam_search`)."""
    b = s.alive.shape[0]
    logp = jax.nn.log_softmax(s.logits.astype(jnp.float32), -1).reshape(b, k, -1)
    v = logp.shape[-1]
    cand = (s.alive_lp[..., None] + _allowed(logp, s.t, limits, eos_id)).reshape(b, k * v)
    cand_lp, cand_idx = jax.lax.top_k(cand, 2 * k)
    beam, tok = cand_idx // v, (cand_idx % v).astype(jnp.int32)
    seqs = jnp.take_along_axis(s.alive, beam[..., None], 1).at[:, :, s.t].set(tok)  # [B, 2K, T]
    done = jnp.isfinite(s.finished_score).sum(-1) >= k
    ends = (tok == eos_id) & (jnp.arange(2 * k) < k) & jnp.isfinite(cand_lp) & ~done[:, None]
    norm = cand_lp / (s.t + 1.0) ** length_penalty
    pool = jnp.concatenate([s.finished_score, jnp.where(ends, norm, -jnp.inf)], 1)
    fin_score, fin_idx = jax.lax.top_k(pool, k)
    finished = jnp.take_along_axis(jnp.concatenate([s.finished, seqs], 1), fin_idx[..., None], 1)
    live_lp, live_idx = jax.lax.top_k(jnp.where(tok == eos_id, -jnp.inf, cand_lp), k)
    alive = jnp.take_along_axis(seqs, live_idx[..., None], 1)
    parent = (jnp.take_along_axis(beam, live_idx, 1) + jnp.arange(b)[:, None] * k).reshape(-1)
    cache = jax.tree.map(lambda x: x[parent], s.cache)
    logits, cache = step_fn(cache, alive[:, :, s.t].reshape(-1))
    return _Beams(s.t + 1, logits, alive, live_lp, finished, fin_score, cache)
