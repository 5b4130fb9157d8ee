"""RDM objective and likelihood: by-hand loss, gradient locality, coupling, ELBO unbiasedness."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.diffusion import RDMConfig, corrupt, elbo_nll, rdm_loss
from dlm_jax.diffusion.objective import bucket_names

V, MASK = 13, 12


def _batch():
    tokens = np.array([[0, 5, 6, 7, 8, 9, 2, 1, 1], [0, 4, 3, 10, 11, 2, 1, 1, 1]], np.int32)
    resp = np.zeros_like(tokens, bool)
    resp[0, 3:7] = True  # response "7 8 9 </s>"
    resp[1, 2:6] = True
    return {"tokens": jnp.asarray(tokens), "response_mask": jnp.asarray(resp),
            "padding_mask": jnp.asarray(tokens != 1)}


def _table_logits(table):
    """Per-(row, position) logits from a parameter table [B, L, V]: gradients show which positions were used."""
    return lambda noised, positions: jnp.take_along_axis(table, positions[..., None], axis=1)


@pytest.mark.parametrize("weighting", ["linear", "constant", "reciprocal"])
def test_loss_matches_by_hand(weighting):
    batch = _batch()
    cfg = RDMConfig(mask_id=MASK, num_timesteps=10, weighting=weighting, max_predictions=5)
    table = jax.random.normal(jax.random.key(1), (2, 9, V))
    rng = jax.random.key(7)
    loss, metrics = rdm_loss(_table_logits(table), batch, rng, cfg)
    noised, masked, t = (np.asarray(x) for x in corrupt(batch["tokens"], batch["response_mask"], rng, cfg))
    logp = np.asarray(jax.nn.log_softmax(table, -1))
    want = []
    for b in range(2):
        lam = {"linear": 1 - (t[b] - 1) / 10, "constant": 1.0, "reciprocal": 1 / t[b]}[weighting]
        ce = [-logp[b, l, int(batch["tokens"][b, l])] for l in range(9) if masked[b, l]]
        want.append(lam * sum(ce) / int(batch["response_mask"][b].sum()))
    np.testing.assert_allclose(float(loss), np.mean(want), rtol=1e-5)
    assert int(metrics["num_masked"]) == masked.sum() and int(metrics["num_dropped"]) == 0
    assert (noised[masked] == MASK).all() and not (masked & ~np.asarray(batch["response_mask"])).any()


def test_gradients_reach_only_masked_response_positions():
    batch = _batch()
    cfg = RDMConfig(mask_id=MASK, num_timesteps=4, num_t_buckets=2)
    table = jnp.zeros((2, 9, V))
    rng = jax.random.key(3)
    grads = jax.grad(lambda tb: rdm_loss(_table_logits(tb), batch, rng, cfg)[0])(table)
    _, masked, _ = corrupt(batch["tokens"], batch["response_mask"], rng, cfg)
    touched = np.abs(np.asarray(grads)).sum(-1) > 0
    assert masked.sum() > 0
    np.testing.assert_array_equal(touched, np.asarray(masked))


def test_masking_rate_follows_t():
    tokens = jnp.zeros((4000, 20), jnp.int32)
    resp = jnp.ones((4000, 20), bool)
    cfg = RDMConfig(mask_id=MASK, num_timesteps=50)
    _, masked, t = corrupt(tokens, resp, jax.random.key(0), cfg)
    frac = np.asarray(masked).mean(1)
    t = np.asarray(t)
    assert t.min() == 1 and t.max() == 50
    # E[frac | t] = t / T
    slope = np.polyfit(t / 50, frac, 1)[0]
    assert abs(slope - 1) < 0.05


def test_coupled_samples_are_nested_and_independent_when_t1_equals_t2():
    batch = _batch()
    cfg = RDMConfig(mask_id=MASK, num_timesteps=10, coupled=True)
    for seed in range(20):
        noised, masked, t = corrupt(batch["tokens"], batch["response_mask"], jax.random.key(seed), cfg)
        m, t = np.asarray(masked), np.asarray(t)
        assert m.shape == (4, 9) and (t[:2] >= t[2:]).all()
        strictly = t[:2] > t[2:]  # t1 > t2: x_t2 masks a subset of x_t1's masks
        assert not (m[2:][strictly] & ~m[:2][strictly]).any()
    # t1 == t2 (the released q_sample_coupled): a fresh mask at rate t/T, not a copy of the first
    cfg = RDMConfig(mask_id=MASK, num_timesteps=1, coupled=True, num_t_buckets=1)  # T = 1: t1 == t2 == 1, every token masked...
    _, masked, _ = corrupt(jnp.zeros((200, 50), jnp.int32), jnp.ones((200, 50), bool), jax.random.key(1), cfg)
    assert np.asarray(masked).all()  # ... in both halves
    cfg = RDMConfig(mask_id=MASK, num_timesteps=2, coupled=True, num_t_buckets=1)
    _, masked, t = corrupt(jnp.zeros((4000, 50), jnp.int32), jnp.ones((4000, 50), bool), jax.random.key(2), cfg)
    m, t = np.asarray(masked), np.asarray(t)
    both1 = (t[:4000] == 1) & (t[4000:] == 1)  # p = 1/2 in each half, independently: they differ half the time
    differ = (m[:4000][both1] != m[4000:][both1]).mean()
    assert abs(differ - 0.5) < 0.02, differ
    assert abs(m[4000:][both1].mean() - 0.5) < 0.02
    loss, metrics = rdm_loss(lambda n, p: jnp.zeros(p.shape + (V,)), batch, jax.random.key(0), cfg)
    assert np.isfinite(float(loss)) and float(metrics["t_bucket_count"].sum()) == 4


def test_loss_scale_is_the_released_weight_T_minus_t_plus_one():
    """The released trainer weighs each masked token by T - (t - 1) = T * lambda(t): loss_scale = T."""
    batch = _batch()
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(2, 9, V)))
    fn = lambda n, p: jnp.take_along_axis(logits, p[..., None], axis=1)  # noqa: E731
    T = 10
    scaled, _ = rdm_loss(fn, batch, jax.random.key(5), RDMConfig(mask_id=MASK, num_timesteps=T, loss_scale=T))
    _, masked, t = corrupt(batch["tokens"], batch["response_mask"], jax.random.key(5), RDMConfig(MASK, T))
    logp = np.asarray(jax.nn.log_softmax(logits))
    ce = -np.take_along_axis(logp, np.asarray(batch["tokens"])[..., None], -1)[..., 0]
    released = [(T - (int(t[b]) - 1)) * (ce[b] * np.asarray(masked[b])).sum() / 4 for b in range(2)]
    np.testing.assert_allclose(float(scaled), np.mean(released), rtol=1e-5)


def test_constant_smoothing_weight_is_the_released_one():
    """Released: (1 - e) * (T - t + 1) * CE + e * T * mean_v(-log p), per masked token / response length."""
    batch = _batch()
    logits = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, V)))
    fn = lambda n, p: jnp.take_along_axis(logits, p[..., None], axis=1)  # noqa: E731
    T, e = 10, 0.1
    cfg = RDMConfig(mask_id=MASK, num_timesteps=T, loss_scale=T, label_smoothing=e, smoothing_weighting="constant")
    loss, _ = rdm_loss(fn, batch, jax.random.key(6), cfg)
    _, masked, t = corrupt(batch["tokens"], batch["response_mask"], jax.random.key(6), cfg)
    logp = np.asarray(jax.nn.log_softmax(logits))
    ce = -np.take_along_axis(logp, np.asarray(batch["tokens"])[..., None], -1)[..., 0]
    smooth = -logp.mean(-1)
    m = np.asarray(masked)
    want = [((1 - e) * (T - int(t[b]) + 1) * ce[b] + e * T * smooth[b])[m[b]].sum() / 4 for b in range(2)]
    np.testing.assert_allclose(float(loss), np.mean(want), rtol=1e-5)
    # and its gradient matches autodiff of that expression
    def by_hand(lg):
        lp = jax.nn.log_softmax(lg)
        c = -jnp.take_along_axis(lp, batch["tokens"][..., None], -1)[..., 0]
        w = (T - t.astype(jnp.float32) + 1)[:, None]
        return jnp.mean((((1 - e) * w * c + e * T * -lp.mean(-1)) * masked).sum(1) / 4)
    g = jax.grad(lambda lg: rdm_loss(lambda n, p: jnp.take_along_axis(lg, p[..., None], axis=1), batch,
                                     jax.random.key(6), cfg)[0])(logits)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(by_hand)(logits)), atol=1e-5)


def test_label_smoothing_and_buckets():
    batch = _batch()
    logits_fn = lambda n, p: jnp.zeros(p.shape + (V,))  # uniform: CE = log V with or without smoothing
    cfg = RDMConfig(mask_id=MASK, num_timesteps=10, weighting="constant", label_smoothing=0.1)
    loss, m = rdm_loss(logits_fn, batch, jax.random.key(0), cfg)
    _, masked, _ = corrupt(batch["tokens"], batch["response_mask"], jax.random.key(0), cfg)
    want = np.mean([np.log(V) * int(masked[b].sum()) / 4 for b in range(2)])
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert bucket_names(cfg) == ["loss_t01-02", "loss_t03-04", "loss_t05-06", "loss_t07-08", "loss_t09-10"]
    with pytest.raises(ValueError, match="choose one of"):
        RDMConfig(mask_id=MASK, weighting="cubic")


def test_elbo_is_unbiased():
    rng = np.random.default_rng(0)
    L = 8
    logits = jnp.asarray(rng.normal(size=(2, L, V)) * 2)  # input-independent: bound = exact sum of CE
    tokens = jnp.asarray(rng.integers(0, 10, (2, L))).at[:, 0].set(jnp.arange(2))  # position 0 names the row
    resp = jnp.asarray(np.arange(L)[None].repeat(2, 0) >= 3)
    keys = jax.random.split(jax.random.key(0), 2)
    mean, stderr = elbo_nll(lambda t, a, p, r: logits[t[:, 0]], tokens, resp, jnp.ones_like(tokens), keys,
                            mask_id=MASK, num_samples=2000, num_timesteps=10, micro_batch=64)
    logp = np.asarray(jax.nn.log_softmax(logits))
    exact = -np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0]
    exact = (exact * np.asarray(resp)).sum(1)
    assert (np.abs(np.asarray(mean) - exact) < 4 * np.asarray(stderr)).all(), (mean, exact, stderr)


def test_packed_rows_give_the_unpacked_loss():
    """T=1 masks every response token, so the loss is deterministic; logits depend on the position in the example."""
    table = jax.random.normal(jax.random.key(5), (16, V))
    ex = [([0, 5, 6, 7, 2], [False, False, True, True, True]), ([0, 4, 3, 10, 11, 9, 2], [False] * 3 + [True] * 4)]
    unpacked = {"tokens": jnp.asarray([ex[0][0] + [1, 1], ex[1][0]]),
                "response_mask": jnp.asarray([ex[0][1] + [False] * 2, ex[1][1]])}
    packed = {"tokens": jnp.asarray([ex[0][0] + ex[1][0] + [1]]),
              "response_mask": jnp.asarray([ex[0][1] + ex[1][1] + [False]]),
              "segment_ids": jnp.asarray([[1] * 5 + [2] * 7 + [0]])}
    in_example = {"unpacked": jnp.asarray([list(range(7))] * 2),
                  "packed": jnp.asarray([list(range(5)) + list(range(7)) + [0]])}

    def logits_fn(kind):
        return lambda noised, positions: table[jnp.take_along_axis(in_example[kind], positions, axis=1)]

    cfg = RDMConfig(mask_id=MASK, num_timesteps=1, num_t_buckets=1, max_predictions=7)
    lu, mu = rdm_loss(logits_fn("unpacked"), unpacked, jax.random.key(0), cfg)
    lp, mp = rdm_loss(logits_fn("packed"), packed, jax.random.key(0), cfg)
    np.testing.assert_allclose(float(lp), float(lu), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mp["t_bucket_loss"]), np.asarray(mu["t_bucket_loss"]), rtol=1e-6)
    assert float(mp["t_bucket_count"].sum()) == 2 and int(mp["num_masked"]) == 7


def test_packed_examples_draw_their_own_t():
    tokens = jnp.zeros((2000, 8), jnp.int32)
    seg = jnp.asarray([[1] * 4 + [2] * 4] * 2000)
    _, masked, t = corrupt(tokens, jnp.ones((2000, 8), bool), jax.random.key(0), RDMConfig(mask_id=MASK), seg)
    t = np.asarray(t)
    assert t.shape == (2000, 8) and (t[:, :4] == t[:, :1]).all() and (t[:, 4:] == t[:, 4:5]).all()
    assert (t[:, 0] != t[:, 4]).mean() > 0.9  # independent draws per example


@pytest.mark.parametrize("coupled", [False, True])
def test_pooled_head_positions_give_the_per_row_loss(coupled):
    batch = _batch()
    table = jax.random.normal(jax.random.key(2), (4, 9, V))

    def pooled_logits(noised, positions):  # positions index groups of rows laid end to end, as MaskedLM does
        groups = positions.shape[0]
        flat = table[:noised.shape[0]].reshape(groups, -1, V)
        return jnp.take_along_axis(flat, positions[..., None], axis=1)

    per_row = RDMConfig(mask_id=MASK, num_timesteps=10, coupled=coupled)
    pooled = RDMConfig(mask_id=MASK, num_timesteps=10, coupled=coupled, pool_rows=2, max_predictions=8)
    la, ma = rdm_loss(pooled_logits, batch, jax.random.key(4), per_row)
    lb, mb = rdm_loss(pooled_logits, batch, jax.random.key(4), pooled)
    np.testing.assert_allclose(float(lb), float(la), rtol=1e-6)
    assert int(mb["num_dropped"]) == 0 and int(mb["num_masked"]) == int(ma["num_masked"])
    np.testing.assert_allclose(np.asarray(mb["t_bucket_loss"]), np.asarray(ma["t_bucket_loss"]), rtol=1e-6)
    tight = RDMConfig(mask_id=MASK, num_timesteps=10, coupled=coupled, pool_rows=2, max_predictions=1)
    _, mc = rdm_loss(pooled_logits, batch, jax.random.key(4), tight)
    assert int(mc["num_masked"]) + int(mc["num_dropped"]) == int(ma["num_masked"])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_log_softmax_in_value_and_gradient(smoothing):
    """The head's CE (logsumexp - iota-selected target logit) equals the log-softmax definition, gradients too."""
    from dlm_jax.diffusion.objective import cross_entropy_and_hits
    logits = jax.random.normal(jax.random.key(0), (3, 4, 50)) * 3
    targets = jax.random.randint(jax.random.key(1), (3, 4), 0, 50)
    targets = targets.at[:, ::2].set(jnp.argmax(logits, -1)[:, ::2])  # half of them the top token: hits to find

    def reference(x):
        logp = jax.nn.log_softmax(x, axis=-1)
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return (1 - smoothing) * nll - smoothing * logp.mean(-1)

    ours = lambda x: cross_entropy_and_hits(x, targets, smoothing)[0]  # noqa: E731
    np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-5, atol=1e-5)
    weights = jax.random.uniform(jax.random.key(2), (3, 4))
    g_ours = jax.grad(lambda x: (ours(x) * weights).sum())(logits)
    g_ref = jax.grad(lambda x: (reference(x) * weights).sum())(logits)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    hits = cross_entropy_and_hits(logits, targets)[1]
    np.testing.assert_array_equal(hits, jnp.argmax(logits, -1) == targets)
    assert hits.dtype == jnp.bool_ and 6 <= int(hits.sum()) < 12


def test_cross_entropy_on_bf16_logits_reduces_in_float32_and_returns_a_bf16_gradient():
    """The RDM loss takes logits in the compute dtype: CE and gradient equal the float32 ones on the same
    (bf16-representable) values, and the gradient comes back as bfloat16 (no float32 logits-sized array)."""
    from dlm_jax.diffusion.objective import cross_entropy_and_hits
    logits = (jax.random.normal(jax.random.key(3), (2, 5, 300)) * 4).astype(jnp.bfloat16)
    targets = jax.random.randint(jax.random.key(4), (2, 5), 0, 300)
    weights = jax.random.uniform(jax.random.key(5), (2, 5))
    f = lambda x: (cross_entropy_and_hits(x, targets, 0.1)[0] * weights).sum()  # noqa: E731
    ce16 = cross_entropy_and_hits(logits, targets)[0]
    assert ce16.dtype == jnp.float32
    np.testing.assert_allclose(ce16, cross_entropy_and_hits(logits.astype(jnp.float32), targets)[0], rtol=1e-6)
    g16, g32 = jax.grad(f)(logits), jax.grad(f)(logits.astype(jnp.float32))
    assert g16.dtype == jnp.bfloat16
    np.testing.assert_allclose(g16.astype(jnp.float32), g32, atol=1e-2 * float(jnp.abs(g32).max()))
