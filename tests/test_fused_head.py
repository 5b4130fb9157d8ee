"""The head fused with the cross-entropy in vocabulary chunks (diffusion/fused_head.py): the same CE, hits and
gradients as whole logits, for chunks that do not divide the vocabulary, with label smoothing and its per-position
scale; and the RDM / AR training losses with `head_chunk` equal to the unchunked ones (pooling, coupling, packing,
an untied Llama head)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_rdm_batch

from dlm_jax.diffusion import RDMConfig
from dlm_jax.diffusion.fused_head import HeadParts, logits_of
from dlm_jax.diffusion.objective import cross_entropy_and_hits
from dlm_jax.model import get_config, model_for
from dlm_jax.training.step import ar_loss_fn, diffusion_loss_fn

jax.config.update("jax_default_matmul_precision", "highest")
V, E = 37, 16


def _parts(seed=0, bias=True):
    k = jax.random.split(jax.random.key(seed), 4)
    h = jax.random.normal(k[0], (3, 7, E))
    table = jax.random.normal(k[1], (V, E)) * 0.5
    b = jax.random.normal(k[2], (V,)) if bias else None
    targets = jax.random.randint(k[3], (3, 7), 0, V)
    return h, table, b, targets


@pytest.mark.parametrize("chunk", [1, 5, 8, 37, 64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_ce_and_gradients_equal_whole_logits(chunk, smoothing, bias):
    h, table, b, targets = _parts(bias=bias)
    scale = jnp.linspace(0.5, 2.0, 21).reshape(3, 7)
    targets = targets.at[0, 0].set(V - 1)  # a target in the last, partial chunk

    def loss(h, table, b, fused):
        parts = HeadParts(h, table, b, chunk)
        ce, hits = cross_entropy_and_hits(parts if fused else logits_of(parts), targets, smoothing, scale)
        return (ce * jnp.arange(1, 22.0).reshape(3, 7)).sum(), (ce, hits)

    grad = jax.grad(loss, argnums=(0, 1, 2) if bias else (0, 1), has_aux=True)
    args = (h, table, b)
    (want_g, (want_ce, want_hits)), (got_g, (got_ce, got_hits)) = (
        jax.jit(grad, static_argnums=3)(*args, f) for f in (False, True))
    np.testing.assert_allclose(got_ce, want_ce, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_hits, want_hits)
    for g, w in zip(got_g, want_g):  # summation order differs: tolerance relative to the gradient's scale
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def test_fused_ce_does_not_depend_on_the_chunk():
    h, table, b, targets = _parts(seed=3)
    got = [cross_entropy_and_hits(HeadParts(h, table, b, c), targets, 0.1)[0] for c in (3, 10, 36, 37)]
    for g in got[1:]:
        np.testing.assert_allclose(g, got[0], rtol=1e-6)
    assert HeadParts(h, table, b).chunk == 8192  # the default chunk covers small vocabularies whole


def _batch(b=8, length=12, vocab=50, seed=0, packed=False):
    out = tiny_rdm_batch(b, length, vocab, seed)
    resp = out["response_mask"]
    if packed:
        seg = np.ones((b, length), np.int32)
        seg[:, 6:] = 2
        seg[:, 10:] = 0
        out["segment_ids"] = seg
        out["response_mask"] = resp & (np.arange(length) != 5)  # examples 0..5, 6..9
        out["response_mask"][:, 3:5] = True
    return jax.tree.map(jnp.asarray, out)


def _loss_and_grads(loss_fn, params, batch):
    fn = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, None, batch, jax.random.key(1)), has_aux=True))
    (loss, metrics), grads = fn(params)
    return loss, metrics, grads


@pytest.mark.parametrize("name, objective, packed", [
    ("tiny-test", "rdm", False), ("tiny-test", "rdm", True), ("llama-tiny", "rdm", False),
    ("llama-tiny", "ar", False)])
def test_training_losses_with_head_chunk_equal_whole_logits(name, objective, packed):
    overrides = {"tie_embeddings": False} if name == "llama-tiny" else {}
    cfg = get_config(name, vocab_size=50, hidden_dropout=0.0, attention_dropout=0.0, **overrides) \
        if name == "tiny-test" else get_config(name, vocab_size=50, **overrides)
    model = model_for(cfg)
    batch = _batch(packed=packed)
    params = model.init(jax.random.key(0), batch["tokens"])["params"]
    out = []
    for chunk in (0, 7):  # 7 does not divide 50
        if objective == "rdm":
            rdm = RDMConfig(mask_id=4, num_timesteps=10, num_t_buckets=2, coupled=True, pool_rows=2,
                            max_predictions=12, label_smoothing=0.1, smoothing_weighting="constant",
                            loss_scale=10.0, head_chunk=chunk)
            fn = diffusion_loss_fn(model, rdm)
        else:
            fn = ar_loss_fn(model, 0.1, pool_rows=2, max_predictions=12, head_chunk=chunk)
        out.append(_loss_and_grads(fn, params, batch))
    (l0, m0, g0), (l1, m1, g1) = out
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    np.testing.assert_allclose(m1["accuracy"], m0["accuracy"])
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(g0))  # some leaves' true gradient is 0 (+ noise)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("cfg", [dict(steps=5), dict(strategy="adaptive", threshold=0.3),
                                 dict(steps=4, strategy="reparam-cond-stochastic1.0-linear", argmax=False)],
                         ids=["reparam", "adaptive", "stochastic"])
def test_sampler_and_elbo_with_head_chunk_equal_whole_logits(cfg):
    from dlm_jax.diffusion import SamplerConfig
    from dlm_jax.inference import Generator
    model = model_for(get_config("tiny-test", vocab_size=50))
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    prompts, lengths = [[7, 8, 9], [10, 11], [12, 13, 14, 15]], [5, 6, 4]
    outs = []
    for chunk in (0, 7):
        gen = Generator(model, params, bos_id=0, eos_id=2, pad_id=1, mask_id=4, max_length=16, head_chunk=chunk)
        out = gen.generate(prompts, lengths, SamplerConfig(**cfg), jax.random.key(3))
        nll, _ = gen.score(prompts, [[20, 21, 2], [22, 2], [23, 24, 25, 2]], jax.random.key(4), num_samples=2)
        outs.append((out, nll))
    (a, nll_a), (b, nll_b) = outs
    np.testing.assert_array_equal(b["tokens"], a["tokens"])
    np.testing.assert_array_equal(b["num_evals"], a["num_evals"])
    np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nll_b, nll_a, rtol=1e-5)
