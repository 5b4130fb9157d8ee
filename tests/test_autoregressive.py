"""The decoder-only AR baseline: causal attention on the encoder families and the next-token objective."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlm_jax.diffusion import ar_loss
from dlm_jax.diffusion.objective import cross_entropy
from dlm_jax.model import MaskedLM
from dlm_jax.model.configs import get_config

V = 40


def _model(family="bert", attention="einsum", causal=True, **kw):
    name = {"bert": "bert-tiny", "roberta": "tiny-test", "modernbert": "modernbert-tiny-test"}[family]
    cfg = get_config(name, vocab_size=V, hidden_dropout=0.0, attention_dropout=0.0, attention=attention,
                     causal=causal, **kw)
    model = MaskedLM(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), attention_mask=jnp.ones((1, 8)))["params"]
    return model, params


@pytest.mark.parametrize("family, attention", [("bert", "einsum"), ("bert", "xla"), ("roberta", "einsum"),
                                               ("modernbert", "einsum"), ("modernbert", "xla")])
def test_changing_token_j_never_changes_logits_before_j(family, attention):
    model, params = _model(family, attention)
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, V, (2, 12)).astype(np.int32)
    attn = np.ones_like(tokens)
    attn[1, 9:] = 0  # a padded row
    f = jax.jit(lambda t: model.apply({"params": params}, t, attention_mask=attn))
    base = np.asarray(f(tokens))
    for j in (1, 5, 8):
        changed = tokens.copy()
        changed[:, j] = (changed[:, j] + 7) % (V - 5) + 5
        out = np.asarray(f(changed))
        np.testing.assert_array_equal(out[:, :j], base[:, :j])  # bit-identical before j
        assert not np.allclose(out[0, j:], base[0, j:])  # and j itself does see it
    bidirectional, bparams = _model(family, attention, causal=False)
    assert not np.allclose(np.asarray(bidirectional.apply({"params": bparams}, tokens, attention_mask=attn))[:, :1],
                           np.asarray(bidirectional.apply({"params": bparams}, np.where(
                               np.arange(12) == 5, 6, tokens), attention_mask=attn))[:, :1])


def test_packed_rows_stay_causal_within_their_segment():
    model, params = _model()
    seg = np.array([[1] * 5 + [2] * 6 + [0]])
    tokens = np.random.default_rng(1).integers(5, V, (1, 12)).astype(np.int32)
    f = lambda t: np.asarray(model.apply({"params": params}, t, attention_mask=(seg > 0).astype(np.int32),  # noqa
                                         segment_ids=seg))
    alone = np.asarray(model.apply({"params": params}, tokens[:, 5:11], attention_mask=np.ones((1, 6))))
    np.testing.assert_allclose(f(tokens)[:, 5:11], alone, atol=1e-5)  # the second example as if alone
    changed = tokens.copy()
    changed[0, 2] += 1  # the first segment's token 2
    np.testing.assert_array_equal(f(changed)[:, 5:], f(tokens)[:, 5:])


def test_ar_loss_equals_a_naive_per_position_loop():
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(0, V, (3, 9)))
    resp = np.zeros((3, 9), bool)
    resp[0, 4:9], resp[1, 2:6], resp[2, 7:9] = True, True, True
    logits = jnp.asarray(rng.normal(size=(3, 9, V)) * 3)

    def at(t, positions):  # the head at pooled positions, as MaskedLM(output_positions=) computes it
        return jnp.take_along_axis(logits.reshape(positions.shape[0], -1, V), positions[..., None], axis=1)
    for smoothing in (0.0, 0.1):
        terms = [float(cross_entropy(logits[b, i - 1], tokens[b, i], smoothing))
                 for b in range(3) for i in range(1, 9) if resp[b, i]]
        for pool, cap in ((1, 0), (3, 0), (1, 5), (3, 11)):  # per row, whole batch; capacities that fit
            loss, m = ar_loss(at, {"tokens": tokens, "response_mask": jnp.asarray(resp)},
                              label_smoothing=smoothing, pool_rows=pool, max_predictions=cap)
            assert float(loss) == pytest.approx(np.mean(terms), rel=1e-6)
            assert int(m["num_dropped"]) == 0
    assert float(m["num_tokens"]) == pytest.approx(resp[:, 1:].sum() / 3)
    loss, m = ar_loss(at, {"tokens": tokens, "response_mask": jnp.asarray(resp)}, pool_rows=3, max_predictions=5)
    assert int(m["num_dropped"]) == resp[:, 1:].sum() - 5  # beyond the capacity: dropped and counted


def test_a_tiny_causal_model_overfits_a_handful_of_pairs_and_greedy_decodes_them():
    model, params = _model(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128)
    pairs = [([0, 5, 6, 7], [11, 12, 13, 2]), ([0, 8, 9], [14, 15, 2]), ([0, 5, 9, 8], [16, 11, 17, 18, 2]),
             ([0, 7, 7], [19, 2])]
    L = 10
    tokens = np.ones((4, L), np.int32)  # pad id 1 (bert-tiny's pad is 0: any id works with the explicit mask)
    resp, attn = np.zeros((4, L), bool), np.zeros((4, L), np.int32)
    for b, (p, r) in enumerate(pairs):
        tokens[b, :len(p) + len(r)] = p + r
        resp[b, len(p):len(p) + len(r)] = True
        attn[b, :len(p) + len(r)] = 1
    batch = {"tokens": jnp.asarray(tokens), "response_mask": jnp.asarray(resp)}
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        def loss_fn(p):
            return ar_loss(lambda t, pos: model.apply({"params": p}, t, attention_mask=attn, output_positions=pos),
                           batch)[0]
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt)
        return optax.apply_updates(params, upd), opt, loss
    for _ in range(100):
        params, opt, loss = step(params, opt)
    assert float(loss) < 0.01
    full = jax.jit(lambda ids, n: model.apply({"params": params}, ids, attention_mask=jnp.arange(L)[None] < n))
    for p, r in pairs:  # greedy decoding by full recomputation (one padded shape): token k from the logits at k - 1
        seq = list(p)
        while len(seq) < L and (len(seq) == len(p) or seq[-1] != 2):
            logits = full(jnp.asarray([seq + [1] * (L - len(seq))]), len(seq))
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        assert seq[len(p):] == r
