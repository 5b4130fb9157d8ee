"""Model: parity with HuggingFace PyTorch, HF import/export, named configs, errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlm_jax
from dlm_jax import hf_io
from dlm_jax.model import MaskedLM, get_config
from tests.conftest import torch_or_skip

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _hf_model(family: str, seed: int = 0):
    torch = torch_or_skip()
    import transformers
    torch.manual_seed(seed)
    cls, cfg_cls = {"bert": (transformers.BertForMaskedLM, transformers.BertConfig),
                    "roberta": (transformers.XLMRobertaForMaskedLM, transformers.XLMRobertaConfig),
                    "xlmr-xl": (transformers.XLMRobertaXLForMaskedLM, transformers.XLMRobertaXLConfig)}[family]
    kw = dict(TINY, pad_token_id=0 if family == "bert" else 1)
    model = cls(cfg_cls(**kw)).eval()
    # Random (not init-default) LayerNorm / bias values so a misplaced LayerNorm cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _padded_batch(pad_id: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 99, size=(3, 11))
    lengths = [11, 7, 3]
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = np.where(mask > 0, ids, pad_id)
    return ids, mask


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr-xl"])
def test_parity_with_hf_pytorch(family, tmp_path):
    torch = torch_or_skip()
    hf = _hf_model(family)
    hf.save_pretrained(tmp_path)
    pre = dlm_jax.load_pretrained(tmp_path)
    assert pre.config.family == family
    ids, mask = _padded_batch(pre.config.pad_token_id)
    ours = np.asarray(pre.model.apply({"params": pre.params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_bundled_pretrained_bert_matches_hf():
    torch = torch_or_skip()
    import transformers
    d = dlm_jax.bundled_bert_dir()
    pre = dlm_jax.load_pretrained(d)
    enc = pre.tokenizer(["the capital of france is [MASK] .", "a b"], padding=True, return_tensors="np")
    ours = np.asarray(pre.model.apply({"params": pre.params}, jnp.asarray(enc["input_ids"]),
                                      attention_mask=jnp.asarray(enc["attention_mask"])))
    hf = transformers.BertForMaskedLM.from_pretrained(str(d)).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(enc["input_ids"]),
                 attention_mask=torch.tensor(enc["attention_mask"])).logits.numpy()
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr-xl"])
def test_export_round_trip_is_exact(family, tmp_path):
    torch_or_skip()
    _hf_model(family, seed=1).save_pretrained(tmp_path / "a")
    pre = dlm_jax.load_pretrained(tmp_path / "a")
    dlm_jax.save_pretrained(pre, tmp_path / "b")
    again = dlm_jax.load_pretrained(tmp_path / "b")
    for x, y in zip(jax.tree.leaves(pre.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # and HF itself loads the export with identical logits
    import transformers
    hf_a = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "a").eval()
    hf_b = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "b").eval()
    ids = torch_or_skip().tensor([[0, 5, 6, 7, 2]])
    np.testing.assert_array_equal(hf_a(input_ids=ids).logits.detach().numpy(),
                                  hf_b(input_ids=ids).logits.detach().numpy())


@pytest.mark.parametrize("name", ["tiny-test", "modernbert-tiny-test"])
def test_scan_and_remat_match_unrolled(tmp_path, name):
    cfg = get_config(name, hidden_dropout=0.0, attention_dropout=0.0, **(
        dict(num_layers=7) if name.startswith("modernbert") else {}))  # layer 0 + 2 scanned groups of 3
    ids = jnp.asarray(_padded_batch(1)[0] % 99)
    params = MaskedLM(cfg).init(jax.random.key(0), ids)["params"]
    flat = {"/".join(k): np.asarray(v) for k, v in
            __import__("flax").traverse_util.flatten_dict(__import__("flax").linen.unbox(params)).items()}
    stacked = hf_io.place(hf_io.stack_layers(flat, cfg.replace(scan_layers=True)), None, jnp.float32)
    assert hf_io.unstack_layers(hf_io.stack_layers(flat, cfg.replace(scan_layers=True)), cfg).keys() == flat.keys()
    ref = MaskedLM(cfg).apply({"params": params}, ids)
    for kw in (dict(scan_layers=True), dict(scan_layers=True, remat="full"), dict(remat="dots")):
        c = cfg.replace(**kw)
        p = stacked if c.scan_layers else params
        out = MaskedLM(c).apply({"params": p}, ids)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_output_positions_gathers_head():
    cfg = get_config("tiny-test")
    ids = jnp.asarray(np.arange(2 * 9).reshape(2, 9) % 97 + 2)
    model = MaskedLM(cfg)
    params = model.init(jax.random.key(0), ids)["params"]
    full = model.apply({"params": params}, ids)
    pos = jnp.array([[3, 0], [8, 8]])
    part = model.apply({"params": params}, ids, output_positions=pos)
    assert part.shape == (2, 2, cfg.vocab_size)
    np.testing.assert_allclose(part, jnp.take_along_axis(full, pos[..., None], axis=1), atol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_logits():
    cfg = get_config("tiny-test", dtype="bfloat16")
    ids = jnp.ones((2, 5), jnp.int32) * 7
    params = MaskedLM(cfg).init(jax.random.key(0), ids)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert MaskedLM(cfg).apply({"params": params}, ids).dtype == jnp.float32


def test_non_embedding_param_counts_match_paper():
    # eval_shape: nothing is allocated. Paper: 86M, 304M, 2.8B, 9.7B non-embedding parameters.
    expected = {"xlmr-base": 86e6, "xlmr-large": 304e6, "xlmr-xl": 2.8e9, "xlmr-xxl": 9.7e9}
    for name, want in expected.items():
        cfg = get_config(name)
        abstract = jax.tree.leaves_with_path(__import__("flax").linen.unbox(hf_io.abstract_params(cfg)))
        emb = cfg.vocab_size * cfg.hidden_size + cfg.max_positions * cfg.hidden_size
        total = sum(int(np.prod(v.shape)) for _, v in abstract)
        non_emb = total - emb - cfg.type_vocab_size * cfg.hidden_size - cfg.vocab_size  # tables + output bias
        # the MLM head transform (dense + LN) is counted with the body, as in the paper's figures
        assert abs(non_emb - want) / want < 0.02, (name, non_emb)


def test_named_configs_and_unknown_name():
    assert get_config("xlmr-xxl").family == "xlmr-xl" and get_config("bert-tiny").vocab_size == 30522
    with pytest.raises(ValueError, match="choose one of"):
        get_config("xlmr-huge")


def test_clear_errors_for_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dlm_jax.load_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps(dict(TINY, model_type="xlm-roberta", pad_token_id=1)))
    with pytest.raises(FileNotFoundError, match="no weights"):
        dlm_jax.load_pretrained(tmp_path)
    # weights of a different size than config.json claims: every problem listed in one error
    cfg = get_config("tiny-test")
    params = MaskedLM(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    hf_io.save_hf(params, cfg, tmp_path / "m")
    conf = json.loads((tmp_path / "m" / "config.json").read_text())
    conf["num_hidden_layers"], conf["hidden_size"] = 3, 40
    (tmp_path / "m" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(hf_io.CheckpointMismatchError) as e:
        dlm_jax.load_pretrained(tmp_path / "m")
    msg = str(e.value)
    assert "missing" in msg and "layers_2" in msg and "shape mismatch" in msg


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_packed_row_computes_what_each_example_computes_alone(family):
    cfg = get_config("tiny-test", family=family, pad_token_id=0 if family == "bert" else 1,
                     type_vocab_size=2 if family == "bert" else 1)
    a, b = [5, 6, 7, 8, 9], [10, 11, 12]
    pad = cfg.pad_token_id
    model = MaskedLM(cfg)
    packed = jnp.asarray([a + b + [pad, pad]])
    seg = jnp.asarray([[1] * 5 + [2] * 3 + [0, 0]])
    params = model.init(jax.random.key(0), packed)["params"]
    out = model.apply({"params": params}, packed, attention_mask=(seg > 0).astype(jnp.int32), segment_ids=seg)
    for ids, sl in ((a, slice(0, 5)), (b, slice(5, 8))):
        alone = model.apply({"params": params}, jnp.asarray([ids]))
        np.testing.assert_allclose(out[0, sl], alone[0], atol=1e-5)


def test_grouped_output_positions_index_rows_end_to_end():
    cfg = get_config("tiny-test")
    ids = jnp.asarray(np.arange(4 * 6).reshape(4, 6) % 97 + 2)
    model = MaskedLM(cfg)
    params = model.init(jax.random.key(0), ids)["params"]
    full = np.asarray(model.apply({"params": params}, ids))
    pos = jnp.array([[0, 7, 11], [2, 6, 6]])  # group 0 = rows 0-1, group 1 = rows 2-3
    part = np.asarray(model.apply({"params": params}, ids, output_positions=pos))
    want = np.stack([full[0, 0], full[1, 1], full[1, 5], full[2, 2], full[3, 0], full[3, 0]]).reshape(2, 3, -1)
    np.testing.assert_allclose(part, want, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fused_attention_path_matches_einsum(family):
    """model.attention='xla' (jax.nn.dot_product_attention, the code path cudnn shares on GPUs) computes the einsum
    path's logits: right-padded rows through key lengths, packed rows through the segment mask."""
    cfg = get_config("tiny-test", family=family, pad_token_id=0 if family == "bert" else 1,
                     type_vocab_size=2 if family == "bert" else 1, hidden_dropout=0.0, attention_dropout=0.0)
    ids = jnp.asarray(_padded_batch(cfg.pad_token_id)[0] % 99)
    ids = jnp.where(ids == cfg.pad_token_id, cfg.pad_token_id, jnp.maximum(ids, 2))
    params = MaskedLM(cfg).init(jax.random.key(0), ids)["params"]
    fused = MaskedLM(cfg.replace(attention="xla"))
    np.testing.assert_allclose(fused.apply({"params": params}, ids), MaskedLM(cfg).apply({"params": params}, ids),
                               atol=1e-5)
    packed = jnp.asarray([[5, 6, 7, 8, 9, 10, 11, 12, cfg.pad_token_id]])
    seg = jnp.asarray([[1] * 5 + [2] * 3 + [0]])
    kw = dict(attention_mask=(seg > 0).astype(jnp.int32), segment_ids=seg)
    np.testing.assert_allclose(fused.apply({"params": params}, packed, **kw),
                               MaskedLM(cfg).apply({"params": params}, packed, **kw), atol=1e-5)


def test_fused_attention_errors_name_the_fix():
    with pytest.raises(ValueError, match="model.dtype=bfloat16"):
        get_config("tiny-test", attention="cudnn")
    with pytest.raises(ValueError, match="choose one of"):
        get_config("tiny-test", attention="flash")
    cfg = get_config("tiny-test", attention="xla")  # attention dropout 0.1 while training: not available fused
    ids = jnp.ones((1, 4), jnp.int32) * 7
    params = MaskedLM(cfg).init(jax.random.key(0), ids)["params"]
    with pytest.raises(ValueError, match="attention_dropout=0"):
        MaskedLM(cfg).apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.key(1)})


def test_pruned_ids_and_tied_head_stay_consistent_and_unprune_inverts():
    from dlm_jax.model.prune import VocabMap, prune_params, unprune_params
    cfg = get_config("tiny-test", vocab_size=40, hidden_dropout=0.0, attention_dropout=0.0)
    model = MaskedLM(cfg)
    ids = jnp.asarray(np.random.default_rng(0).choice([0, 1, 2, 5, 7, 9, 11, 20], (2, 9)))
    params = __import__("flax").linen.unbox(model.init(jax.random.key(0), ids)["params"])
    vmap = VocabMap.build([5, 7, 9, 11, 20], 40, unk_id=3, specials=[0, 1, 2])
    pruned, pcfg = prune_params(params, cfg, vmap)
    full = np.asarray(model.apply({"params": params}, ids))
    small = np.asarray(MaskedLM(pcfg).apply({"params": pruned}, jnp.asarray(vmap.to_new(np.asarray(ids)))))
    np.testing.assert_allclose(small, full[..., vmap.new_to_old], atol=1e-5)  # same rows in and out (tied)
    back, bcfg = unprune_params(pruned, pcfg, vmap)
    again = np.asarray(MaskedLM(bcfg).apply({"params": back}, ids))
    np.testing.assert_allclose(again[..., vmap.new_to_old], small, atol=1e-5)
    assert bcfg.vocab_size == 40 and again[..., np.setdiff1d(np.arange(40), vmap.new_to_old)].max() < -1e8
