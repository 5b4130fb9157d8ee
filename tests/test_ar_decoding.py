"""AR decoding with a KV cache: cached equals recomputed, beam 1 equals greedy, beam search finds the best
hypothesis of a hand-built table, fairseq's length rules."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.diffusion import DecodeConfig, beam_search, greedy_decode
from dlm_jax.errors import ConfigError
from dlm_jax.model import MaskedLM
from dlm_jax.model.configs import get_config

EOS, PAD = 2, 0


def _markov(table: np.ndarray):
    """prefill / step functions of a fake LM whose next-token log-probs depend on the last token only (the cache
    is that token)."""
    logp = jnp.log(jnp.asarray(table, jnp.float32))

    def prefill(tokens, attn):
        last = tokens[jnp.arange(tokens.shape[0]), attn.sum(1) - 1]
        return logp[last], last

    def step(cache, tok):
        return logp[tok], tok
    return prefill, step


def _best_by_enumeration(table, start, max_new, lenpen):
    """The best fairseq-scored hypothesis (ends in </s>, at most max_new tokens, no </s> first) by brute force."""
    v = table.shape[0]
    best, best_seq = -np.inf, None
    for n in range(2, max_new + 1):
        for body in itertools.product([i for i in range(v) if i != EOS], repeat=n - 1):
            seq, prev, lp = [*body, EOS], start, 0.0
            for tok in seq:
                lp += np.log(table[prev, tok])
                prev = tok
            if lp / n ** lenpen > best + 1e-9:
                best, best_seq = lp / n ** lenpen, seq
    return best, best_seq


def _table(seed: int, v: int = 5) -> np.ndarray:
    t = np.random.default_rng(seed).dirichlet(np.ones(v) * 0.5, size=v)
    t[:, PAD] = 1e-9
    return t / t.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_search_finds_the_best_hypothesis_of_a_hand_built_table(seed):
    table = _table(seed)
    prefill, step = _markov(table)
    tokens = jnp.asarray([[1, 3, 4, 0], [1, 4, 0, 0]], jnp.int32)
    attn = (tokens != 0).astype(jnp.int32)
    max_new = 4
    out = jax.jit(lambda t, a: beam_search(prefill, step, t, a, jnp.full((2,), max_new), beam_size=64,
                                           max_new=max_new, eos_id=EOS, pad_id=PAD, length_penalty=1.0))(
        tokens, attn)
    for r, start in enumerate((4, 4)):
        best, seq = _best_by_enumeration(table, start, max_new, 1.0)
        got = [int(x) for x in out.tokens[r]]
        assert got[:len(seq)] == seq and all(x == PAD for x in got[len(seq):])
        np.testing.assert_allclose(float(out.scores[r]), best, rtol=1e-5)


def test_beam_beats_greedy_on_a_garden_path_and_beam_1_is_greedy():
    # from token 4: greedy takes 3 (p .6) then must pay p .1 for </s>; 1 (p .4) then </s> (p .9) is better.
    table = np.full((5, 5), 1e-9)
    table[4] = [1e-9, .4, 1e-9, .6, 1e-9]
    table[3] = [1e-9, .45, .1, .45, 1e-9]
    table[1] = [1e-9, .1, .9, 1e-9, 1e-9]
    table = table / table.sum(1, keepdims=True)
    prefill, step = _markov(table)
    tokens, attn = jnp.asarray([[1, 4]]), jnp.ones((1, 2), jnp.int32)
    lim = jnp.asarray([3])
    greedy = greedy_decode(prefill, step, tokens, attn, lim, max_new=3, eos_id=EOS, pad_id=PAD)
    beam1 = beam_search(prefill, step, tokens, attn, lim, beam_size=1, max_new=3, eos_id=EOS, pad_id=PAD,
                        length_penalty=0.0)
    beam2 = beam_search(prefill, step, tokens, attn, lim, beam_size=2, max_new=3, eos_id=EOS, pad_id=PAD,
                        length_penalty=0.0)
    assert greedy.tokens.tolist() == [[3, 1, 2]] == beam1.tokens.tolist()
    np.testing.assert_allclose(greedy.scores, beam1.scores, rtol=1e-6)
    assert beam2.tokens.tolist() == [[1, 2, 0]]


def test_length_rules_min_one_token_and_forced_eos():
    table = np.full((5, 5), 1e-9)
    table[:, EOS] = 1.0  # </s> is always the favourite
    table[:, 3] = 0.5
    table = table / table.sum(1, keepdims=True)
    prefill, step = _markov(table)
    tokens, attn = jnp.asarray([[1, 4], [1, 4]]), jnp.ones((2, 2), jnp.int32)
    out = greedy_decode(prefill, step, tokens, attn, jnp.asarray([3, 1]), max_new=4, eos_id=EOS, pad_id=PAD)
    assert out.tokens.tolist() == [[3, 2, 0, 0], [2, 0, 0, 0]]  # never empty; a limit of 1 is just </s>
    table[:, EOS] = 1e-6  # now </s> is never chosen: the limit forces it
    prefill, step = _markov(table / table.sum(1, keepdims=True))
    for out in (greedy_decode(prefill, step, tokens, attn, jnp.asarray([3, 2]), max_new=4, eos_id=EOS, pad_id=PAD),
                beam_search(prefill, step, tokens, attn, jnp.asarray([3, 2]), beam_size=3, max_new=4, eos_id=EOS,
                            pad_id=PAD)):
        assert out.tokens.tolist() == [[3, 3, 2, 0], [3, 2, 0, 0]]


def test_decode_config_checks():
    assert DecodeConfig(max_len_a=1.2, max_len_b=10).limit(10) == 22
    with pytest.raises(ConfigError, match="beam_size"):
        DecodeConfig(beam_size=0)
    with pytest.raises(ConfigError, match="max_len"):
        DecodeConfig(max_len_a=0, max_len_b=0)
    for bad in ({"temperature": -1.0}, {"temperature": 0.7, "beam_size": 5}):
        with pytest.raises(ConfigError, match="decoding.temperature"):
            DecodeConfig(**bad)


def test_sampling_draws_from_the_softmax_with_each_rows_own_key():
    """temperature > 0: token t of a row is categorical(fold_in(its key, t), log p / T): its frequencies follow
    the table (at T = 1) and sharpen toward the argmax (T = 0.25); a row's sample is the same alone and in any
    batch; T = 0 is the argmax; </s> ends a row as in greedy decoding."""
    table = np.full((5, 5), 1e-9)
    table[:, 3], table[:, 4], table[:, EOS] = 0.6, 0.3, 0.1
    prefill, step = _markov(table / table.sum(1, keepdims=True))
    n = 2000
    tokens, attn = jnp.full((n, 2), 4), jnp.ones((n, 2), jnp.int32)
    keys = jax.random.split(jax.random.key(7), n)

    def run(temperature, rows=slice(None)):
        return jax.jit(lambda t, a, k: greedy_decode(prefill, step, t, a, jnp.full((t.shape[0],), 4), max_new=4,
                                                     eos_id=EOS, pad_id=PAD, temperature=temperature, keys=k)
                       )(tokens[rows], attn[rows], keys[rows])
    out = run(1.0)
    first, second = np.asarray(out.tokens[:, 0]), np.asarray(out.tokens[:, 1])  # </s> is never first (min_len)
    np.testing.assert_allclose([np.mean(first == i) for i in (3, 4, EOS)], [2 / 3, 1 / 3, 0], atol=0.035)
    np.testing.assert_allclose([np.mean(second == i) for i in (3, 4, EOS)], [0.6, 0.3, 0.1], atol=0.035)  # 3 s.e.
    sharp = np.asarray(run(0.25).tokens[:, 0])
    assert np.mean(sharp == 3) > 0.9  # (0.6 ** 4 / (0.6 ** 4 + 0.3 ** 4 + 0.1 ** 4) = 0.94)
    alone = run(1.0, slice(5, 6)).tokens
    assert alone.tolist() == out.tokens[5:6].tolist() == run(1.0, slice(3, 9)).tokens[2:3].tolist()
    toks = np.asarray(out.tokens)
    ended = toks == EOS
    after = np.cumsum(ended, 1) - ended > 0
    assert (toks[after] == PAD).all() and ended.any()
    assert np.asarray(run(0.0).tokens)[:, 0].tolist() == [3] * n


def _causal(scan_layers=False, name="tiny-test"):
    cfg = get_config(name, causal=True, hidden_dropout=0.0, attention_dropout=0.0, scan_layers=scan_layers)
    params = MaskedLM(cfg).init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]
    dec = MaskedLM(cfg, decode=True)

    def prefill(tokens, attn):
        logits, v = dec.apply({"params": params}, tokens, attn, method=MaskedLM.prefill, mutable=["cache"])
        return logits, v["cache"]

    def step(cache, tok):
        logits, v = dec.apply({"params": params, "cache": cache}, tok, method=MaskedLM.decode_step,
                              mutable=["cache"])
        return logits, v["cache"]
    return cfg, params, prefill, step


@pytest.mark.parametrize("scan_layers, name", [(False, "tiny-test"), (True, "tiny-test"), (False, "bert-tiny")])
def test_cached_decoding_equals_full_recomputation(scan_layers, name):
    cfg, params, prefill, step = _causal(scan_layers, name)
    pad = cfg.pad_token_id
    rng = np.random.default_rng(0)
    lens = np.array([3, 6, 4])
    width, max_new = 16, 8
    tokens = np.full((3, width), pad, np.int32)
    for r, n in enumerate(lens):
        tokens[r, :n] = rng.integers(5, 99, n)
    attn = (np.arange(width)[None] < lens[:, None]).astype(np.int32)
    out = jax.jit(lambda t, a: greedy_decode(prefill, step, t, a, jnp.full((3,), max_new), max_new=max_new,
                                             eos_id=EOS, pad_id=pad))(tokens, attn)
    full = jax.jit(lambda t, a: MaskedLM(cfg).apply({"params": params}, t, attention_mask=a))
    for r in range(3):  # recompute: the whole row each token, the argmax at its last position
        row, score = list(tokens[r, :lens[r]]), 0.0
        for i in range(max_new):
            t = np.full((1, width), pad, np.int32)
            t[0, :len(row)] = row
            logp = jax.nn.log_softmax(np.asarray(full(t, (t != pad).astype(np.int32) if pad else np.asarray(
                np.arange(width)[None] < len(row), np.int32)))[0, len(row) - 1])
            logp = logp.at[EOS].set(-jnp.inf) if i == 0 else logp
            tok = int(jnp.argmax(logp if i < max_new - 1 else jnp.where(jnp.arange(logp.shape[0]) == EOS, 0, -jnp.inf)))
            score += float(logp[tok]) if i < max_new - 1 else float(logp[EOS])
            row.append(tok)
            if tok == EOS:
                break
        got = [int(x) for x in out.tokens[r]]
        assert got[:len(row) - lens[r]] == row[lens[r]:]
        np.testing.assert_allclose(float(out.scores[r]), score, rtol=1e-4, atol=1e-4)


def test_decode_mode_refuses_bidirectional_models():
    cfg = get_config("tiny-test")
    with pytest.raises(ConfigError, match="causal"):
        MaskedLM(cfg, decode=True).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32),
                                        method="prefill")
