"""Sampler: exact tokens against a NumPy transcription of the paper's decoding, schedules, invariances."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.diffusion import SamplerConfig, build_inputs, keep_masked_table, sample, select_best, top_lengths

V, MASK, PAD, BOS, EOS = 23, 22, 1, 0, 2
W = np.random.default_rng(0).normal(size=(V, V)).astype(np.float32) * 2.0
POSW = np.random.default_rng(1).normal(size=(64, V)).astype(np.float32)


def fixed_logits(target: np.ndarray, conf: np.ndarray):
    """Ignores the input: position l prefers target[b, l] with logit conf[b, l], every other token 0."""
    base = np.zeros(target.shape + (V,), np.float32)
    np.put_along_axis(base, target[..., None], conf[..., None], axis=-1)
    base = jnp.asarray(base)
    return lambda tokens: base


def contextual_logits(tokens: jax.Array) -> jax.Array:
    """Row-wise and input-dependent: the previous token's embedding plus a per-(position, #masks) term."""
    prev = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]
    n_mask = (tokens == MASK).sum(1, keepdims=True)
    return jnp.asarray(W)[prev] + jnp.asarray(POSW)[(jnp.arange(tokens.shape[1])[None] + n_mask) % 64]


def reference_decode(logits_fn, tokens, response, steps, strategy):
    """NumPy transcription of the paper's `_reparam_decoding` / `topk_masking` (deterministic, sort + cutoff)."""
    _, cond, _, schedule = strategy.split("-")
    out = np.where(response, MASK, tokens).copy()
    scores = np.where(response, -np.inf, 0.0)
    xt_neq_x0 = response.copy()
    for step in range(steps):
        logits = np.asarray(logits_fn(jnp.asarray(out)), np.float64)
        logits[..., MASK] = -np.inf
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        cur_tok = logits.argmax(-1)
        cur_sc = np.take_along_axis(logp, cur_tok[..., None], -1)[..., 0]
        t = step + 1
        rate = math.cos(t / steps * math.pi / 2) if schedule == "cosine" else 1 - t / steps
        cutoff_len = np.floor(response.sum(1, keepdims=True) * rate + 1e-9).astype(int)
        s = np.where(response, cur_sc, 1000.0)
        cutoff = np.take_along_axis(np.sort(s, -1), cutoff_len, -1)
        low = s < cutoff
        not_v1 = ((cur_tok == out) & (cur_sc < scores) & low) if cond == "cond" else low
        to_noise = (~xt_neq_x0 & not_v1) | (xt_neq_x0 & low)
        out[to_noise], scores[to_noise] = MASK, -np.inf
        to_x0 = xt_neq_x0 & ~low
        out[to_x0], scores[to_x0] = cur_tok[to_x0], cur_sc[to_x0]
        xt_neq_x0 = (xt_neq_x0 | not_v1) & low
    return out


def _batch():
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    tokens, resp, _ = build_inputs(prompts, [6, 9, 4], bos_id=BOS, pad_id=PAD, mask_id=MASK)
    return tokens, resp


@pytest.mark.parametrize("strategy", ["reparam-uncond-deterministic-cosine", "reparam-cond-deterministic-cosine",
                                      "reparam-uncond-deterministic-linear", "reparam-cond-deterministic-linear"])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_reparam_matches_reference_transcription(strategy, steps):
    tokens, resp = _batch()
    cfg = SamplerConfig(steps=steps, strategy=strategy)
    out = sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(0), cfg, mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(out.tokens), reference_decode(contextual_logits, tokens, resp, steps,
                                                                           strategy))
    assert not (np.asarray(out.tokens) == MASK).any()
    np.testing.assert_array_equal(np.asarray(out.tokens)[~resp], tokens[~resp])
    np.testing.assert_array_equal(np.asarray(out.num_evals), [steps] * 3)


def test_exact_tokens_and_schedule_with_known_confidences():
    tokens, resp = _batch()
    rng = np.random.default_rng(3)
    target = rng.integers(3, 20, tokens.shape)
    conf = (rng.permutation(tokens.size).reshape(tokens.shape).astype(np.float32) + 1) / 4  # distinct confidences
    S = 5
    cfg = SamplerConfig(steps=S, record_trajectory=True)
    out = sample(fixed_logits(target, conf), jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(0), cfg,
                 mask_id=MASK)
    traj = np.asarray(out.trajectory)
    assert traj.shape == (S, 3, tokens.shape[1])
    for t in range(1, S + 1):
        for b in range(3):
            n = resp[b].sum()
            k = math.floor(n * math.cos(math.pi / 2 * t / S) + 1e-9)
            pos = np.flatnonzero(resp[b])
            still = pos[np.argsort(conf[b, pos])[:k]]  # the k least confident stay masked
            want = np.where(resp[b], target[b], tokens[b])
            want[still] = MASK
            np.testing.assert_array_equal(traj[t - 1, b], want)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.where(resp, target, tokens))


def test_mask_logit_is_never_chosen():
    tokens, resp = _batch()
    target = np.full(tokens.shape, MASK)  # the mask token is the most likely everywhere
    out = sample(fixed_logits(target, np.full(tokens.shape, 9.0, np.float32)), jnp.asarray(tokens),
                 jnp.asarray(resp), jax.random.key(0), SamplerConfig(steps=3), mask_id=MASK)
    assert not (np.asarray(out.tokens) == MASK).any()


def test_schedule_table_matches_formula():
    table = keep_masked_table(50, 40, "cosine")
    for t in (1, 17, 25, 49, 50):
        for n in (0, 1, 7, 40):
            assert table[t - 1, n] == max(0, math.floor(n * math.cos(math.pi / 2 * t / 50) + 1e-9))
    assert (keep_masked_table(10, 12, "linear")[:, 10] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]).all()


def test_exactly_s_model_evaluations():
    calls = []

    def counting(tokens):
        jax.debug.callback(lambda: calls.append(1))
        return contextual_logits(tokens)

    tokens, resp = _batch()
    out = sample(counting, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(0), SamplerConfig(steps=7),
                 mask_id=MASK)
    jax.block_until_ready(out.tokens)
    assert len(calls) == 7


@pytest.mark.parametrize("strategy", ["reparam-uncond-deterministic-cosine", "reparam-cond-deterministic-linear",
                                      "mask-predict"])
def test_deterministic_strategy_is_batch_composition_invariant(strategy):
    tokens, resp = _batch()
    cfg = SamplerConfig(steps=6, strategy=strategy)
    full = np.asarray(sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(0), cfg,
                             mask_id=MASK).tokens)
    for b in range(3):
        n = int((tokens[b] != PAD).sum())
        alone = sample(contextual_logits, jnp.asarray(tokens[b:b + 1, :n]), jnp.asarray(resp[b:b + 1, :n]),
                       jax.random.key(9), cfg, mask_id=MASK).tokens
        np.testing.assert_array_equal(np.asarray(alone)[0], full[b, :n])
    rev = np.asarray(sample(contextual_logits, jnp.asarray(tokens[::-1]), jnp.asarray(resp[::-1]),
                            jax.random.key(1), cfg, mask_id=MASK).tokens)
    np.testing.assert_array_equal(rev[::-1], full)


def test_stochastic_and_sampling_are_reproducible():
    tokens, resp = _batch()
    for cfg in (SamplerConfig(steps=5, strategy="reparam-uncond-stochastic1.0-cosine"),
                SamplerConfig(steps=5, argmax=False, temperature=2.0)):
        a = sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(4), cfg, mask_id=MASK)
        b = sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(4), cfg, mask_id=MASK)
        np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
        assert not (np.asarray(a.tokens) == MASK).any()
    outs = {tuple(np.asarray(sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(s),
                                    SamplerConfig(steps=5, argmax=False, temperature=3.0),
                                    mask_id=MASK).tokens).ravel()) for s in range(4)}
    assert len(outs) > 1


def test_mask_predict_keeps_decoded_tokens_and_finishes():
    tokens, resp = _batch()
    rng = np.random.default_rng(5)
    target = rng.integers(3, 20, tokens.shape)
    conf = (rng.permutation(tokens.size).reshape(tokens.shape).astype(np.float32) + 1) / 4
    out = sample(fixed_logits(target, conf), jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(0),
                 SamplerConfig(steps=4, strategy="mask-predict-linear"), mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.where(resp, target, tokens))


def test_released_cmlm_unmasks_each_masked_position_with_probability_one_over_steps_left():
    """After step i of S, P(still masked) = prod_{j<i} (1 - 1/(S-j)) = (S-i)/S; the last step unmasks the rest and
    nothing is ever remasked."""
    S, n, rows = 5, 400, 8
    tokens = np.full((rows, n + 2), 7, np.int32)
    resp = np.zeros_like(tokens, bool)
    resp[:, 1:-1] = True
    target = np.full(tokens.shape, 9)
    out = sample(fixed_logits(target, np.ones(tokens.shape, np.float32)), jnp.asarray(tokens), jnp.asarray(resp),
                 jax.random.key(3), SamplerConfig(steps=S, strategy="cmlm", record_trajectory=True), mask_id=MASK)
    traj = np.asarray(out.trajectory)  # [S, rows, L]
    masked = (traj == MASK).sum((1, 2)) / (rows * n)
    for i in range(1, S):
        p = (S - i) / S
        se = math.sqrt(p * (1 - p) / (rows * n))
        assert abs(masked[i - 1] - p) < 4 * se, (i, masked[i - 1], p)
    assert masked[-1] == 0 and (np.asarray(out.tokens)[resp] == 9).all()
    assert ((traj[1:] == MASK) <= (traj[:-1] == MASK)).all()  # once unmasked, never remasked


def test_adaptive_commits_confident_tokens_early():
    tokens, resp = _batch()
    rng = np.random.default_rng(6)
    target = rng.integers(3, 20, tokens.shape)
    cfg = SamplerConfig(strategy="adaptive", threshold=0.9, record_trajectory=True)
    easy = sample(fixed_logits(target, np.full(tokens.shape, 12.0, np.float32)), jnp.asarray(tokens),
                  jnp.asarray(resp), jax.random.key(0), cfg, mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(easy.num_evals), [1, 1, 1])
    np.testing.assert_array_equal(np.asarray(easy.tokens), np.where(resp, target, tokens))
    # unconfident everywhere: exactly one token per step, so N evaluations for an N-token response
    hard = sample(fixed_logits(target, np.full(tokens.shape, 0.5, np.float32)), jnp.asarray(tokens),
                  jnp.asarray(resp), jax.random.key(0), cfg, mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(hard.num_evals), resp.sum(1))
    assert not (np.asarray(hard.tokens) == MASK).any()
    traj = np.asarray(hard.trajectory)
    masks_left = (traj == MASK).sum(-1)  # [steps, batch]
    np.testing.assert_array_equal(masks_left[:4, 1], [8, 7, 6, 5])


def test_config_validation_lists_choices():
    with pytest.raises(ValueError, match="choose one of"):
        SamplerConfig(strategy="reparam-sometimes-deterministic-cosine")
    with pytest.raises(ValueError, match="threshold"):
        SamplerConfig(strategy="adaptive")
    with pytest.raises(ValueError, match="positive integer"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(temperature=0.0)
    assert SamplerConfig(strategy="reparam-cond-stochastic0.5-linear").noise_scale == 0.5


def test_length_beam_helpers():
    logits = np.log(np.array([[0.0, 0.5, 0.1, 0.3, 0.05, 0.05], [0.0, 0.0, 0.1, 0.1, 0.7, 0.1]]) + 1e-9)
    np.testing.assert_array_equal(top_lengths(logits, 2), [[3, 2], [4, 2]])  # length 1 (< min 2) excluded
    scores = jnp.asarray([[-1.0, -1.0, 0], [-0.1, -0.3, 0], [-5.0, 0, 0], [-2.0, -2.0, -2.0]])
    resp = jnp.asarray([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(select_best(scores, resp, 2)), [1, 1])
    tokens, r, am = build_inputs([[5, 6], [7]], [3, 1], bos_id=BOS, pad_id=PAD, mask_id=MASK)
    np.testing.assert_array_equal(tokens, [[0, 5, 6, MASK, MASK, MASK], [0, 7, MASK, PAD, PAD, PAD]])
    np.testing.assert_array_equal(r.sum(1), [3, 1])
    with pytest.raises(ValueError, match="more than"):
        build_inputs([[5] * 8], [4], bos_id=BOS, pad_id=PAD, mask_id=MASK, max_len=10)


@pytest.mark.parametrize("config", [SamplerConfig(steps=5), SamplerConfig(steps=4, strategy="mask-predict"),
                                    SamplerConfig(steps=5, strategy="reparam-cond-stochastic1.0-linear"),
                                    SamplerConfig(strategy="adaptive", threshold=0.5)])
def test_head_at_response_positions_only_gives_the_same_output(config):
    tokens, resp = _batch()
    asked = []

    def at_positions(toks, positions):
        asked.append(positions.shape)
        return jnp.take_along_axis(contextual_logits(toks), positions[..., None], axis=1)

    full = sample(contextual_logits, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(2), config,
                  mask_id=MASK)
    part = sample(at_positions, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(2), config, mask_id=MASK,
                  max_response=10)
    assert asked[0] == (3, 10)
    for a, b in zip(full[:3], part[:3]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="max_response=8 is smaller"):
        sample(at_positions, jnp.asarray(tokens), jnp.asarray(resp), jax.random.key(2), config, mask_id=MASK,
               max_response=8)


def test_released_ar_writes_left_to_right_one_token_per_step():
    """Each position predicts 3 + (tokens already unmasked in its row): with `ar` position k of the response gets
    3 + k, since exactly k tokens were committed before it, one per step, left to right; nothing is remasked."""
    from dlm_jax.errors import ConfigError

    def counting(tokens):
        done = ((tokens != MASK) & (tokens > 2)).sum(1)  # committed response tokens (prompt ids are <= 2 here)
        return jax.nn.one_hot(jnp.broadcast_to((3 + done)[:, None], tokens.shape), V) * 5.0

    tokens = jnp.asarray([[BOS, MASK, MASK, MASK, MASK, PAD], [BOS, 2, MASK, MASK, PAD, PAD]])
    response = tokens == MASK
    out = sample(counting, tokens, response, jax.random.key(0), SamplerConfig(steps=6, strategy="ar",
                 record_trajectory=True), mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(out.tokens)[0, 1:5], [3, 4, 5, 6])
    np.testing.assert_array_equal(np.asarray(out.tokens)[1, 2:4], [3, 4])
    traj = np.asarray(out.trajectory)[:, 0, 1:5]
    for s in range(4):  # after step s exactly s + 1 leftmost positions are filled
        assert (traj[s, :s + 1] != MASK).all() and (traj[s, s + 1:] == MASK).all()
    np.testing.assert_array_equal(traj[4], traj[5])  # steps past the length change nothing
    assert int(np.asarray(out.num_evals)[0]) == 6
    with pytest.raises(ConfigError, match="ar strategy writes one token per step"):
        sample(counting, tokens, response, jax.random.key(0), SamplerConfig(steps=3, strategy="ar"), mask_id=MASK)
