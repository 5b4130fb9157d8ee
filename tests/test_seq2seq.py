"""fairseq's encoder-decoder Transformer: sinusoids, regions of a row, masks (source padding, causal decoder),
packing, KV-cache decoding, and layer-stack parity with torch.nn.Transformer (post-LN) on copied weights."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.model import Seq2SeqLM, get_config, model_for
from dlm_jax.model.layers import sinusoids
from dlm_jax.model.seq2seq import regions

SEP, PAD = 2, 1


def _fairseq_sinusoids(num_embeddings, embedding_dim, padding_idx):
    """fairseq/modules/sinusoidal_positional_embedding.py `get_embedding`, transcribed to numpy."""
    half_dim = embedding_dim // 2
    emb = math.log(10000) / (half_dim - 1)
    emb = np.exp(np.arange(half_dim, dtype=np.float32) * -emb)
    emb = np.arange(num_embeddings, dtype=np.float32)[:, None] * emb[None, :]
    emb = np.concatenate([np.sin(emb), np.cos(emb)], axis=1).reshape(num_embeddings, -1)
    if embedding_dim % 2 == 1:
        emb = np.concatenate([emb, np.zeros((num_embeddings, 1), np.float32)], axis=1)
    emb[padding_idx, :] = 0
    return emb


@pytest.mark.parametrize("num, dim, pad", [(40, 32, 1), (1026, 512, 1), (17, 7, 0)])
def test_sinusoid_table_equals_fairseq(num, dim, pad):
    # float32 sin / cos of angles up to ~1,000 differ between libraries in the last bits (fairseq's torch too)
    np.testing.assert_allclose(np.asarray(sinusoids(num, dim, pad)), _fairseq_sinusoids(num, dim, pad), atol=1e-4)


def test_regions_split_each_packed_example_at_its_first_separator():
    row = jnp.asarray([[0, 5, 6, SEP, 8, SEP, 0, 9, SEP, 7, SEP, PAD]])
    seg = jnp.asarray([[1] * 6 + [2] * 5 + [0]])
    r = {k: np.asarray(v).astype(int).tolist()[0] for k, v in regions(row, (seg > 0).astype(jnp.int32), seg,
                                                                         SEP).items()}
    assert r["source"] == [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    assert r["target"] == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0]
    assert [p for p, t in zip(r["target_pos"], r["target"]) if t] == [0, 1, 2, 0, 1, 2]


def _model(causal=True, **kw):
    cfg = get_config("transformer-tiny-test", causal=causal, **kw)
    model = Seq2SeqLM(cfg)
    row = jnp.asarray([[0, 5, 6, 7, SEP, 8, 9, SEP]])
    return cfg, model, model.init(jax.random.key(0), row)["params"]


def test_decoder_is_causal_and_source_padding_never_reaches_it():
    cfg, model, params = _model()
    row = np.array([[0, 5, 6, 7, SEP, 8, 9, 10, 11, SEP, PAD, PAD]])
    attn = (row != PAD).astype(np.int32)
    f = jax.jit(lambda t, a: model.apply({"params": params}, t, attention_mask=a))
    base = np.asarray(f(row, attn))
    for j in (6, 8):  # a target token: logits before it (target positions 4..j-1) are bit-identical
        changed = row.copy()
        changed[0, j] = 30
        out = np.asarray(f(changed, attn))
        np.testing.assert_array_equal(out[0, 4:j], base[0, 4:j])
        assert not np.allclose(out[0, j:10], base[0, j:10])
    padded = row.copy()
    padded[0, 10:] = [40, 50]  # tokens under the padding mask
    np.testing.assert_array_equal(np.asarray(f(padded, attn))[0, 4:10], base[0, 4:10])
    src = row.copy()
    src[0, 2] = 33  # a source token reaches every target position through cross-attention
    assert not np.allclose(np.asarray(f(src, attn))[0, 4], base[0, 4])
    _, bidi, bparams = _model(causal=False)
    g = lambda t: np.asarray(bidi.apply({"params": bparams}, t, attention_mask=attn))  # noqa: E731
    changed = row.copy()
    changed[0, 8] = 30
    assert not np.allclose(g(changed)[0, 4], g(row)[0, 4])  # the RDM decoder reads the whole target


def test_packed_examples_compute_what_they_compute_alone():
    cfg, model, params = _model()
    a, b = [0, 5, 6, 7, SEP, 8, 9, SEP], [0, 11, SEP, 12, 13, SEP]
    seg = np.array([[1] * 8 + [2] * 6 + [0] * 2])
    packed = np.array([a + b + [PAD, PAD]])
    out = np.asarray(model.apply({"params": params}, packed, attention_mask=(seg > 0).astype(np.int32),
                                 segment_ids=seg))
    for ex, start in ((a, 0), (b, 8)):
        alone = np.asarray(model.apply({"params": params}, np.array([ex])))
        t0 = start + ex.index(SEP)
        np.testing.assert_allclose(out[0, t0:start + len(ex)], alone[0, t0 - start:], atol=1e-5)


def test_cached_decoding_equals_the_full_forward():
    cfg, model, params = _model()
    dec = model_for(cfg, decode=True)
    rows = np.array([[0, 5, 6, 7, SEP, 8, 9, 10], [0, 11, SEP, 12, 13, 14, 15, 16]])
    n = np.array([5, 3])  # prompts <s> .. </s>
    full = np.asarray(model.apply({"params": params}, rows))
    canvas = np.where(np.arange(8)[None] < n[:, None], rows, PAD)
    logits, v = dec.apply({"params": params}, canvas, (canvas != PAD).astype(np.int32), method=Seq2SeqLM.prefill,
                          mutable=["cache"])
    np.testing.assert_allclose(np.asarray(logits), full[np.arange(2), n - 1], atol=1e-5)
    for t in range(3):
        logits, v = dec.apply({"params": params, "cache": v["cache"]}, jnp.asarray(rows[np.arange(2), n + t]),
                              method=Seq2SeqLM.decode_step, mutable=["cache"])
        np.testing.assert_allclose(np.asarray(logits), full[np.arange(2), n + t], atol=1e-5)


def _to_torch_attention(mha, p):
    """Copies a dlm_jax SelfAttention's params into a torch MultiheadAttention (q/k/v kernels [e, h, d])."""
    import torch
    e = p["query"]["kernel"].shape[0]
    w = np.concatenate([np.asarray(p[k]["kernel"]).reshape(e, e).T for k in ("query", "key", "value")])
    b = np.concatenate([np.asarray(p[k]["bias"]).reshape(e) for k in ("query", "key", "value")])
    mha.in_proj_weight.data = torch.tensor(w)
    mha.in_proj_bias.data = torch.tensor(b)
    mha.out_proj.weight.data = torch.tensor(np.asarray(p["out"]["kernel"]).reshape(e, e).T.copy())
    mha.out_proj.bias.data = torch.tensor(np.asarray(p["out"]["bias"]))


def _to_torch_ln(ln, p):
    import torch
    ln.weight.data, ln.bias.data = torch.tensor(np.asarray(p["scale"])), torch.tensor(np.asarray(p["bias"]))


def _to_torch_ffn(layer, p):
    import torch
    layer.linear1.weight.data = torch.tensor(np.asarray(p["wi"]["kernel"]).T.copy())
    layer.linear1.bias.data = torch.tensor(np.asarray(p["wi"]["bias"]))
    layer.linear2.weight.data = torch.tensor(np.asarray(p["wo"]["kernel"]).T.copy())
    layer.linear2.bias.data = torch.tensor(np.asarray(p["wo"]["bias"]))


def test_layer_stacks_match_torch_nn_transformer_post_ln():
    torch = pytest.importorskip("torch")
    cfg, model, params = _model()
    e, h, f = cfg.hidden_size, cfg.num_heads, cfg.intermediate_size
    rng = np.random.default_rng(0)
    src = rng.normal(size=(2, 7, e)).astype(np.float32)
    tgt = rng.normal(size=(2, 5, e)).astype(np.float32)
    src_len = np.array([7, 4])  # the second source is padded
    keep_src = np.arange(7)[None] < src_len[:, None]

    def ours(mod, src, tgt):
        bias = jnp.where(keep_src[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
        x = src
        for layer in mod.encoder:
            x, _ = layer(x, bias, True)
        return x, mod._decoder(tgt, (jnp.zeros((1, 1, 1, 5)), bias), x, True)

    mem, out = model.apply({"params": params}, src, tgt, method=ours)
    params = __import__("flax").linen.unbox(params)
    kw = dict(dropout=0.0, activation="relu", batch_first=True, norm_first=False, layer_norm_eps=cfg.layer_norm_eps)
    enc = [torch.nn.TransformerEncoderLayer(e, h, f, **kw) for _ in range(cfg.num_layers)]
    dec = [torch.nn.TransformerDecoderLayer(e, h, f, **kw) for _ in range(cfg.num_decoder_layers)]
    for i, layer in enumerate(enc):
        p = params[f"encoder_{i}"]
        _to_torch_attention(layer.self_attn, p["attention"])
        _to_torch_ln(layer.norm1, p["attention_ln"])
        _to_torch_ln(layer.norm2, p["mlp_ln"])
        _to_torch_ffn(layer, p["mlp"])
    for i, layer in enumerate(dec):
        p = params[f"decoder_{i}"]
        _to_torch_attention(layer.self_attn, p["attention"])
        _to_torch_attention(layer.multihead_attn, p["cross_attention"])
        _to_torch_ln(layer.norm1, p["attention_ln"])
        _to_torch_ln(layer.norm2, p["cross_ln"])
        _to_torch_ln(layer.norm3, p["mlp_ln"])
        _to_torch_ffn(layer, p["mlp"])
    pad = torch.tensor(~keep_src)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        x = torch.tensor(src)
        for layer in enc:
            x = layer.eval()(x, src_key_padding_mask=pad)
        y = torch.tensor(tgt)
        for layer in dec:
            y = layer.eval()(y, x, tgt_mask=causal, memory_key_padding_mask=pad, tgt_is_causal=True)
    np.testing.assert_allclose(np.asarray(mem)[keep_src], x.numpy()[keep_src], atol=2e-5)
    np.testing.assert_allclose(np.asarray(out), y.numpy(), atol=2e-5)
