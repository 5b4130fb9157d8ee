"""The `prompt_prefix` attention layout (trained and decoded) and the sampler's prefix cache (issue 39), on tiny
random models of every family that has them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_rdm_batch

from dlm_jax.diffusion import RDMConfig, SamplerConfig, rdm_loss
from dlm_jax.errors import ConfigError
from dlm_jax.inference import Generator
from dlm_jax.inference.prefix_cache import cached_logits_fn
from dlm_jax.model import model_for
from dlm_jax.model.configs import get_config
from dlm_jax.training.step import diffusion_loss_fn

FAMILIES = ["bert", "roberta", "xlmr-xl", "modernbert", "llama"]
V, BOS, EOS, PAD, MASK = 40, 0, 2, 1, 39


def _model(family, layout, **overrides):
    cfg = get_config("tiny-test")
    cfg = cfg if family == "bert" else cfg.replace(family=family)
    cfg = cfg.replace(attention_layout=layout, vocab_size=V, **overrides)
    model = model_for(cfg)
    # weights x4: sharper attention than at init, so what the prompt sees shows in the outputs
    params = jax.tree.map(lambda p: p * 4.0, model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"])
    return model, params


def _rows(prompt_len=5, resp_len=4, width=12, seed=0):
    rs = np.random.RandomState(seed)
    tokens = np.full((2, width), PAD, np.int32)
    tokens[:, :prompt_len + resp_len] = rs.randint(4, V - 1, size=prompt_len + resp_len)
    tokens[1, prompt_len:prompt_len + resp_len] = rs.randint(4, V - 1, size=resp_len)  # row 1: another response
    attn = (tokens != PAD).astype(np.int32)
    side = np.zeros_like(attn, bool)
    side[:, prompt_len:prompt_len + resp_len] = True
    return tokens, attn, side


def test_prompt_prefix_packed_rows_compute_each_example_alone():
    """Packed rows (`segment_ids`) with the layout: each example's states equal its own row's."""
    model, params = _model("bert", "prompt_prefix")
    tokens, attn, side = _rows(prompt_len=3, resp_len=3, width=12)
    packed = np.concatenate([tokens[0, :6], tokens[1, :6]])[None]
    seg = np.asarray([[1] * 6 + [2] * 6], np.int32)
    pside = np.concatenate([side[0, :6], side[1, :6]])[None]
    h = np.asarray(model.apply({"params": params}, packed, attention_mask=np.ones_like(packed), segment_ids=seg,
                               side=jnp.asarray(pside), method="encode"))
    for r in range(2):
        alone = np.asarray(model.apply({"params": params}, tokens[r:r + 1, :6], attention_mask=attn[r:r + 1, :6],
                                       side=jnp.asarray(side[r:r + 1, :6]), method="encode"))
        np.testing.assert_allclose(h[0, 6 * r:6 * r + 6], alone[0], atol=2e-5)


def test_training_loss_reads_the_layout():
    """The trainer's RDM loss under `prompt_prefix` is the loss of the model called with the batch's response as
    its side (coupled sampling doubles the batch, and the side with it), and not the bidirectional loss."""
    model, params = _model("bert", "prompt_prefix", hidden_dropout=0.0, attention_dropout=0.0)
    batch = {k: jnp.asarray(v) for k, v in tiny_rdm_batch(vocab=V - 1).items()}
    rdm = RDMConfig(mask_id=MASK, coupled=True)
    loss = diffusion_loss_fn(model, rdm)(params, None, batch, jax.random.key(3))[0]
    k_noise = jax.random.split(jax.random.key(3))[0]

    def reference(side):
        def logits_at(noised, positions):
            twice = (lambda a: jnp.concatenate([a, a])) if noised.shape[0] != batch["tokens"].shape[0] else (
                lambda a: a)
            kw = {} if side is None else {"side": twice(side)}
            return model.apply({"params": params}, noised, attention_mask=twice(batch["padding_mask"]),
                               output_positions=positions, **kw)
        return rdm_loss(logits_at, batch, k_noise, rdm)[0]
    np.testing.assert_allclose(float(loss), float(reference(batch["response_mask"])), rtol=1e-5)
    assert abs(float(loss) - float(reference(None))) > 1e-4


def _gen(family, layout, **overrides):
    model, params = _model(family, layout, **overrides)
    return Generator(model, params, bos_id=BOS, eos_id=EOS, pad_id=PAD, mask_id=MASK, max_length=32)


PROMPTS = [[5, 9, 11, 4, 7], [12, 30, 8, 8, 21, 6, 17, 9, 10], [25, 3, 14], [33, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
LENGTHS = [6, 4, 8, 5]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_prefix_layout_and_the_cached_step(family):
    """Under `prompt_prefix` a prompt's states equal those of the prompt alone (an explicit reference: the row cut
    to its prompt) whatever the response, and one cached step (`prefix_cache.cached_logits_fn`: the cache filled
    from the all-masked canvas, then called on a canvas whose response has since been partly decoded) gives the
    whole row's logits. Under `bidirectional` the prompt's states change with the response and the same cached
    step is an approximation that shows (so the cache is what ran)."""
    tokens, attn, side = _rows(prompt_len=5, resp_len=6, width=16)
    start = np.where(side, MASK, tokens)
    now = np.where(side & (np.arange(16) % 2 == 0), MASK, tokens)  # half the response decoded since the fill
    positions = jnp.asarray(np.tile(np.arange(5, 13), (2, 1)))  # the response first, then other positions
    for layout in ("prompt_prefix", "bidirectional"):
        model, params = _model(family, layout)
        kw = model.cfg.layout_kwargs(jnp.asarray(side))
        h = np.asarray(model.apply({"params": params}, tokens, attention_mask=attn, method="encode", **kw))
        alone = np.asarray(model.apply({"params": params}, tokens, attention_mask=attn * ~side, method="encode"))
        cached = jax.jit(lambda p, s, t: cached_logits_fn(model_for(model.cfg, decode=True), p, s, attn, side,
                                                           side, 8)(t, positions))(params, start, now)
        whole = model.apply({"params": params}, now, attention_mask=attn, output_positions=positions, **kw)
        gap = np.abs(np.asarray(cached) - np.asarray(whole))[:, :6].max()
        if layout == "prompt_prefix":
            np.testing.assert_allclose(h[:, :5], alone[:, :5], atol=2e-5)
            assert np.abs(h[0, 5:11] - h[1, 5:11]).max() > 1e-3  # the responses themselves do differ
            assert gap < 5e-5, gap
        else:
            assert np.abs(h[0, :5] - h[1, :5]).max() > 1e-3
            assert gap > 1e-3, gap


def test_prefix_cache_decodes_the_tokens_of_no_cache_under_prompt_prefix():
    """Through `Generator.generate`: `cache=prefix` on a `prompt_prefix` model gives the tokens of `cache=none`
    (scores to float rounding), for a fixed schedule and for the adaptive strategy with the released canvas."""
    gen = _gen("bert", "prompt_prefix")
    for kw in (dict(steps=4), dict(steps=6, strategy="adaptive", threshold=0.5, fixed_eos=True)):
        ref = gen.generate(PROMPTS, LENGTHS, SamplerConfig(cache="none", **kw), jax.random.key(1))
        got = gen.generate(PROMPTS, LENGTHS, SamplerConfig(cache="prefix", **kw), jax.random.key(1))
        assert (got["tokens"] == ref["tokens"]).all(), kw
        assert np.abs(got["scores"] - ref["scores"]).max() < 2e-5, kw


def test_cached_decoding_is_batch_invariant_and_blocks_decode_every_position():
    """A row decoded with a cache (prefix and dual, whole responses and blocks) is the same alone and in a batch,
    and every response position ends up decoded."""
    gen = _gen("bert", "prompt_prefix")
    for cfg in (SamplerConfig(steps=2, cache="dual", block_length=3),
                SamplerConfig(steps=2, cache="prefix", block_length=3, argmax=False)):
        whole = gen.generate(PROMPTS, LENGTHS, cfg, jax.random.key(2), batch_size=4)
        assert (whole["tokens"][whole["response_mask"]] != MASK).all()
        for r in range(len(PROMPTS)):
            alone = gen.generate(PROMPTS[r:r + 1], LENGTHS[r:r + 1], cfg, jax.random.key(2), batch_size=1)
            np.testing.assert_array_equal(alone["tokens"][0], whole["tokens"][r])
            np.testing.assert_array_equal(alone["scores"][0], whole["scores"][r])


def test_layout_and_cache_settings_are_checked():
    with pytest.raises(ConfigError, match="cache='full'") as e:
        SamplerConfig(cache="full")
    assert e.value.field == "cache"
    with pytest.raises(ConfigError, match="attention_layout='blockwise'"):
        get_config("tiny-test").replace(attention_layout="blockwise")
    with pytest.raises(ConfigError, match="is for bidirectional diffusion models; this one is causal"):
        get_config("tiny-test").replace(attention_layout="prompt_prefix", causal=True)
    gen = _gen("llama", "bidirectional", shift=1)
    with pytest.raises(ConfigError, match="unshifted head"):
        gen.generate(PROMPTS[:1], LENGTHS[:1], SamplerConfig(steps=2, cache="prefix"), jax.random.key(0))


def test_serving_engine_prefills_at_insert_and_equals_generate():
    """The continuous-batching engine with cached requests (the prompt's keys and values filled once, at insert)
    gives each request `Generator.generate`'s tokens and scores with the same cache and seed, bit for bit, while
    cached and uncached requests come and go through 2 slots."""
    from dlm_jax.serving import Engine, Request
    gen = _gen("bert", "prompt_prefix")
    cfgs = [SamplerConfig(steps=3, cache="prefix"), SamplerConfig(steps=3, cache="prefix", fixed_eos=True),
            SamplerConfig(steps=3, cache="dual", argmax=False), SamplerConfig(steps=3)]
    reqs = [Request(10 + i, PROMPTS[i], LENGTHS[i], cfgs[i]) for i in range(4)]
    engine = Engine(gen, slots=2)
    done = engine.run(reqs)
    assert sorted(done) == [10, 11, 12, 13]
    assert {key[2] > 0 for key in engine._pools} == {True, False}  # cached pools (live slots) beside an uncached
    for r in reqs:
        ref = gen.generate([r.prompt], [r.length], r.sampler, jax.random.key(0), seeds=[r.id])
        cols = np.flatnonzero(ref["response_mask"][0])
        if r.sampler.fixed_eos:
            cols = np.append(cols, cols[-1] + 1)
        np.testing.assert_array_equal(done[r.id].tokens, ref["tokens"][0, cols])
        np.testing.assert_array_equal(done[r.id].scores, ref["scores"][0, cols])
