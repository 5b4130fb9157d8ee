"""ModernBERT: parity with transformers' ModernBertForMaskedLM (both config spellings), export, fused sliding-window
attention, packing, and the RDM stack (training, sampler, ELBO, length predictor) end to end on a tiny one."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlm_jax
from dlm_jax.config import parse
from dlm_jax.diffusion import SamplerConfig
from dlm_jax.inference import restore_run
from dlm_jax.model import MaskedLM, get_config
from dlm_jax.model.configs import from_hf_dict
from dlm_jax.training import loop
from dlm_jax.errors import ConfigError
from tests.conftest import torch_or_skip

# odd sizes; window 8 (a query sees 4 keys either side) on 20-token rows: the sliding layers really slide
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            cls_token_id=1, sep_token_id=2)
OLD_KEYS = dict(global_attn_every_n_layers=2, global_rope_theta=1000.0, local_rope_theta=50.0)  # the hub's spelling
NEW_KEYS = dict(layer_types=["full_attention", "sliding_attention"] * 2,  # transformers 5's spelling, same model
                rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}})


def _hf(seed=0, **keys):
    torch = torch_or_skip()
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.ModernBertConfig(**TINY, **keys)
    cfg._attn_implementation = "eager"
    model = transformers.ModernBertForMaskedLM(cfg).eval()
    with torch.no_grad():  # random norm scales and decoder bias, so a misplaced norm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 99, size=(3, 20))
    mask = np.zeros_like(ids)
    for i, n in enumerate([20, 13, 5]):
        mask[i, :n] = 1
    return np.where(mask > 0, ids, 0), mask


@pytest.mark.parametrize("keys, layer_types", [
    (OLD_KEYS, None),
    (NEW_KEYS, None),
    (dict(layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
          global_rope_theta=300.0), ("sliding_attention", "sliding_attention", "full_attention", "sliding_attention")),
])
def test_parity_with_transformers(keys, layer_types, tmp_path):
    torch = torch_or_skip()
    hf = _hf(**keys)
    hf.save_pretrained(tmp_path)
    pre = dlm_jax.load_pretrained(tmp_path)
    assert pre.config.family == "modernbert" and pre.config.local_window == 8
    if layer_types:
        assert pre.config.attention_kinds == layer_types
    ids, mask = _batch()
    ours = np.asarray(pre.model.apply({"params": pre.params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_both_config_spellings_are_one_model():
    old, new = from_hf_dict({"model_type": "modernbert", **TINY, **OLD_KEYS}), from_hf_dict(
        {"model_type": "modernbert", **TINY, **NEW_KEYS})
    assert old == new and old.attention_kinds == tuple(NEW_KEYS["layer_types"])
    assert (old.rope_theta, old.local_rope_theta) == (1000.0, 50.0)
    with pytest.raises(ConfigError, match="norm_bias=True"):
        from_hf_dict({"model_type": "modernbert", **TINY, "norm_bias": True})
    with pytest.raises(ConfigError, match="layer_types"):
        get_config("modernbert-tiny-test", layer_types=("full_attention",))
    with pytest.raises(ConfigError, match="repeat one pattern"):  # 3 layers after the first, groups of 2
        get_config("modernbert-tiny-test", global_every=2, scan_layers=True)
    assert get_config("modernbert-large", scan_layers=True).scan_groups() == (9, 3)
    base = get_config("modernbert-base")
    assert base.attention_kinds[:4] == ("full_attention", "sliding_attention", "sliding_attention", "full_attention")
    assert base.max_length == 8192


def test_export_is_loaded_bit_exactly_by_transformers(tmp_path):
    torch = torch_or_skip()
    import transformers
    _hf(seed=1, **OLD_KEYS).save_pretrained(tmp_path / "a")
    pre = dlm_jax.load_pretrained(tmp_path / "a")
    dlm_jax.save_pretrained(pre, tmp_path / "b")
    written = json.loads((tmp_path / "b" / "config.json").read_text())
    assert "layer_types" in written and "global_attn_every_n_layers" not in written
    again = dlm_jax.load_pretrained(tmp_path / "b")
    for x, y in zip(jax.tree.leaves(pre.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    a = transformers.ModernBertForMaskedLM.from_pretrained(tmp_path / "a", attn_implementation="eager").eval()
    b = transformers.ModernBertForMaskedLM.from_pretrained(tmp_path / "b", attn_implementation="eager").eval()
    ids = torch.tensor(_batch()[0])
    np.testing.assert_array_equal(a(input_ids=ids).logits.detach().numpy(), b(input_ids=ids).logits.detach().numpy())


def test_fused_sliding_window_and_packing_match_the_einsum_path():
    cfg = get_config("modernbert-tiny-test")
    ids, mask = (jnp.asarray(x) for x in _batch())
    params = MaskedLM(cfg).init(jax.random.key(0), ids)["params"]
    ref = MaskedLM(cfg).apply({"params": params}, ids, attention_mask=mask)
    fused = MaskedLM(cfg.replace(attention="xla")).apply({"params": params}, ids, attention_mask=mask)
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(np.asarray(fused)[real], np.asarray(ref)[real], atol=1e-5)
    a, b = list(range(5, 17)), [20, 21, 22, 23, 24, 25]  # a is longer than the window
    packed = jnp.asarray([a + b + [0, 0]])
    seg = jnp.asarray([[1] * len(a) + [2] * len(b) + [0, 0]])
    for attention in ("einsum", "xla"):
        model = MaskedLM(cfg.replace(attention=attention))
        out = model.apply({"params": params}, packed, attention_mask=(seg > 0).astype(jnp.int32), segment_ids=seg)
        for toks, sl in ((a, slice(0, len(a))), (b, slice(len(a), len(a) + len(b)))):
            alone = MaskedLM(cfg).apply({"params": params}, jnp.asarray([toks]))
            np.testing.assert_allclose(out[0, sl], alone[0], atol=1e-5)


def test_cudnn_band_mask_is_the_same_sliding_window_as_local_window_size():
    """cuDNN only has a causal window, so `fused_window` hands it the band as a mask: checked here (no GPU) by
    giving that mask to XLA's kernel, against XLA's own local_window_size, with key lengths and with a full mask."""
    from dlm_jax.model.layers import fused_window
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 20, 4, 8)), jnp.float32) for _ in range(3))
    lengths = jnp.asarray([20, 13], jnp.int32)
    assert fused_window("xla", None, 20) == (None, None)
    window, _ = fused_window("xla", 4, 20)
    none, band = fused_window("cudnn", 4, 20)
    assert window == (4, 4) and none is None and band.shape == (1, 1, 20, 20)
    attend = lambda **kw: jax.nn.dot_product_attention(q, k, v, implementation="xla", **kw)  # noqa: E731
    ref = attend(key_value_seq_lengths=lengths, local_window_size=window)
    np.testing.assert_allclose(attend(key_value_seq_lengths=lengths, mask=band), ref, atol=1e-6)
    keep = (jnp.arange(20)[None, :] < lengths[:, None])[:, None, None, :]
    np.testing.assert_allclose(attend(mask=keep & band), ref, atol=1e-6)
    assert not np.allclose(attend(key_value_seq_lengths=lengths), ref, atol=1e-3)  # the window matters here


@pytest.mark.slow
def test_rdm_training_sampling_scoring_and_length_predictor_end_to_end(tmp_path):
    from configs import length_predictor, tiny
    c = tiny.get_config()
    c.model.name, c.num_train_steps, c.checkpoint_every_steps, c.eval_every_steps = "modernbert-tiny-test", 6, 6, 0
    c.model.overrides.update(vocab_size=30_522, num_layers=3)  # the bundled BERT tokenizer's ids
    c.data.train_limit = 64
    metrics = loop.run(parse(c), tmp_path / "run")
    assert np.isfinite(metrics["loss"])
    run = restore_run(tmp_path / "run")
    assert run.model.cfg.family == "modernbert" and run.model.cfg.attention_kinds[1] == "sliding_attention"
    gen = run.generator()
    prompts = [list(run.vocab.encode("das haus ist klein")), list(run.vocab.encode("guten morgen"))]
    for strategy in ("reparam-cond-stochastic1.0-linear", "adaptive"):  # a fixed schedule and the early exit
        # (every strategy's step is family-independent: test_sampler.py, test_batch_invariance.py)
        sc = SamplerConfig(steps=3, strategy=strategy, threshold=0.5 if strategy == "adaptive" else None)
        out = gen.generate(prompts, [4, 6], sc, jax.random.key(0), batch_size=2)
        assert out["tokens"].shape[0] == 2 and (out["response_mask"].sum(1) == [4, 6]).all(), strategy
    nll, se = gen.score(prompts, [[5, 6], [7]], jax.random.key(1), num_samples=2)
    assert np.isfinite(nll).all() and (se >= 0).all()
    lc = length_predictor.get_config(f"{tmp_path / 'run'},fast")
    lc.num_train_steps, lc.checkpoint_every_steps, lc.data.train_limit, lc.batch_size = 3, 3, 32, 8
    loop.run(parse(lc), tmp_path / "length")
    with_head = run.with_length_head(tmp_path / "length")
    assert with_head.generator().predict_lengths(prompts, 2).shape == (2, 2)


def test_sharded_over_the_8_device_mesh_equals_single_device():
    from dlm_jax import parallel
    from dlm_jax.model.axes import DEFAULT_RULES
    cfg = get_config("modernbert-tiny-test", hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=96)
    model = MaskedLM(cfg)
    ids, mask = (jnp.asarray(x % 96) for x in _batch())
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params, _ = parallel.sharded_init(lambda k: model.init(k, ids)["params"], mesh, DEFAULT_RULES, jax.random.key(0))
    wi = params["layers_1"]["mlp"]["wi"]["kernel"]
    assert tuple(wi.sharding.spec)[:1] == ("fsdp",) and "tensor" in tuple(wi.sharding.spec)  # GeGLU [e, 2, m]
    ref = model.apply({"params": jax.device_get(params)}, ids, attention_mask=mask)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        out = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m))(params, ids, mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)
