"""Llama / Qwen2 in Flax: parity with transformers (causal, and bidirectional given an all-visible mask), export
round trip, KV-cache decoding and the released `ar` strategy against `generate`, the adaptation options."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import dlm_jax  # noqa: E402
from dlm_jax.diffusion import SamplerConfig, greedy_decode, sample  # noqa: E402
from dlm_jax.errors import ConfigError  # noqa: E402
from dlm_jax.model import get_config, model_for  # noqa: E402
from dlm_jax.model.llama import DecoderLM  # noqa: E402

V = 97
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def _hf_model(kind, *, tied=False, gqa=True, bias=False, llama3=False, head_dim=None, mlp_bias=False, seed=0):
    torch.manual_seed(seed)
    kw = dict(vocab_size=V, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2 if gqa else 4, max_position_embeddings=128, rms_norm_eps=1e-5,
              tie_word_embeddings=tied, pad_token_id=0)
    if head_dim:
        kw["head_dim"] = head_dim
    if kind == "llama":
        cfg = transformers.LlamaConfig(**kw, attention_bias=bias, mlp_bias=mlp_bias,
                                       rope_parameters=LLAMA3 if llama3 else {"rope_type": "default",
                                                                              "rope_theta": 500.0})
        return transformers.LlamaForCausalLM(cfg).eval()
    cfg = transformers.Qwen2Config(**kw, rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
    return transformers.Qwen2ForCausalLM(cfg).eval()


def _load(hf, tmp_path, **overrides):
    hf.save_pretrained(tmp_path / "hf")
    return dlm_jax.load_pretrained(tmp_path / "hf", **overrides)


def _batch(length=40):
    ids = np.random.default_rng(0).integers(1, V, (2, length))
    attn = np.ones((2, length), np.int64)
    attn[1, length - 9:] = 0  # a right-padded row
    return ids, attn


CASES = [("llama", dict()), ("llama", dict(tied=True, gqa=False)), ("llama", dict(bias=True, llama3=True)),
         ("llama", dict(head_dim=16, mlp_bias=True)), ("qwen2", dict()), ("qwen2", dict(tied=True))]


@pytest.mark.parametrize("kind, kw", CASES)
def test_causal_parity_with_transformers(kind, kw, tmp_path):
    hf = _hf_model(kind, **kw)
    pre = _load(hf, tmp_path, causal=True)
    assert pre.config.family == "llama" and pre.config.hf_type == kind
    ids, attn = _batch()
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(attn)).logits.numpy()
    out = np.asarray(pre.model.apply({"params": pre.params}, ids, attention_mask=attn))
    real = attn.astype(bool)
    assert np.abs(out[real] - ref[real]).max() <= 1e-4


@pytest.mark.parametrize("kind, kw", CASES[2:5])
def test_bidirectional_parity_given_an_all_visible_mask(kind, kw, tmp_path):
    hf = _hf_model(kind, **kw)
    pre = _load(hf, tmp_path)  # causal=False: the released LlamaNonCausalModel
    assert not pre.config.causal
    ids, attn = _batch()
    keep = attn[:, None, None, :].astype(bool)  # every query sees every real key
    mask4d = torch.where(torch.tensor(keep), 0.0, torch.finfo(torch.float32).min).expand(2, 1, 40, 40)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=mask4d).logits.numpy()
    out = np.asarray(pre.model.apply({"params": pre.params}, ids, attention_mask=attn))
    real = attn.astype(bool)
    assert np.abs(out[real] - ref[real]).max() <= 1e-4
    causal = np.asarray(_load(hf, tmp_path / "c", causal=True).model.apply({"params": pre.params}, ids,
                                                                            attention_mask=attn))
    assert not np.allclose(causal[0, :5], out[0, :5], atol=1e-3)  # the mask matters


@pytest.mark.parametrize("kind, tied", [("llama", False), ("qwen2", True)])
def test_export_round_trip_loads_in_transformers_bit_exactly(kind, tied, tmp_path):
    hf = _hf_model(kind, tied=tied, bias=kind == "llama")
    pre = _load(hf, tmp_path)
    out = dlm_jax.save_pretrained(pre, tmp_path / "out")
    from safetensors.numpy import load_file
    keys = set(load_file(str(out / "model.safetensors")))
    assert ("lm_head.weight" in keys) == (not tied)
    back = getattr(transformers, type(hf).__name__).from_pretrained(str(out)).eval()
    for k, v in hf.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_scanned_and_remat_layers_compute_the_same(tmp_path):
    hf = _hf_model("qwen2")
    ids, attn = _batch()
    plain = _load(hf, tmp_path, causal=True)
    for over in (dict(scan_layers=True), dict(remat="full"), dict(attention="xla")):
        other = _load(hf, tmp_path / str(len(over)), causal=True, **over)
        np.testing.assert_allclose(other.model.apply({"params": other.params}, ids, attention_mask=attn),
                                   plain.model.apply({"params": plain.params}, ids, attention_mask=attn), atol=1e-5)


def _greedy_hf(hf, prompt, n):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                          pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_kv_cache_and_the_released_ar_strategy_reproduce_generate(tmp_path):
    hf = _hf_model("llama", llama3=True)
    pre = _load(hf, tmp_path, causal=True)
    prompt, n = [5, 17, 33, 2, 9, 41], 8
    want = _greedy_hf(hf, prompt, n)
    dec = model_for(pre.config, decode=True)
    tokens = np.zeros((1, 16), np.int32)
    tokens[0, :6] = prompt

    def prefill(t, a):
        logits, v = dec.apply({"params": pre.params}, t, a, method=DecoderLM.prefill, mutable=["cache"])
        return logits, v["cache"]

    def step(cache, tok):
        logits, v = dec.apply({"params": pre.params, "cache": cache}, tok, method=DecoderLM.decode_step,
                              mutable=["cache"])
        return logits, v["cache"]
    eos = V - 1 if V - 1 not in want else V - 2  # an id greedy never picks here: n tokens, no early stop
    got = greedy_decode(prefill, step, jnp.asarray(tokens), jnp.asarray((tokens > 0).astype(np.int32)),
                        jnp.asarray([n + 1]), max_new=n + 1, eos_id=eos, pad_id=0)
    assert got.tokens[0, :n].tolist() == want
    # Fig. 7(d)'s left-to-right unmasking: causal, shift 1, one token per step at the leftmost mask
    shifted = pre.config.replace(shift=1)
    model = model_for(shifted)
    canvas = np.asarray([prompt + [V - 1] * n], np.int32)  # any id as <mask>: position i - 1 never sees i
    resp = np.zeros_like(canvas, bool)
    resp[0, len(prompt):] = True

    def logits_fn(t, positions=None, rows=None):
        return model.apply({"params": pre.params}, t, output_positions=positions)
    out = sample(logits_fn, jnp.asarray(canvas), jnp.asarray(resp), jax.random.key(0),
                 SamplerConfig(steps=n, strategy="ar"), mask_id=V - 1)
    assert np.asarray(out.tokens)[0, len(prompt):].tolist() == want


def test_adaptation_options_are_checked():
    base = get_config("tiny-test")
    with pytest.raises(ConfigError, match="shift"):
        base.replace(family="llama", shift=2)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        base.replace(family="llama", num_kv_heads=3)
    with pytest.raises(ConfigError, match="causal"):
        model_for(base.replace(family="llama"), decode=True).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                                                                  jnp.ones((1, 4), jnp.int32), method="prefill")


def _word_tokenizer(tmp_path):
    """A tokenizer without <pad> or <mask> (as Llama's): a word-level vocabulary of the bundled BERT's words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ["<unk>", "<s>", "</s>", "das", "haus", "ist", "klein", "the", "house", "is", "small"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>")
    return fast


def test_new_mask_and_pad_rows_are_the_mean_of_the_others(tmp_path):
    from dlm_jax.model.prune import mean_init_rows
    from dlm_jax.pretrained import add_diffusion_tokens
    tok = _word_tokenizer(tmp_path)
    added = add_diffusion_tokens(tok, "new")
    assert added == [11, 12] and tok.pad_token_id == 11 and tok.mask_token_id == 12
    cfg = get_config("tiny-test").replace(family="llama", vocab_size=11, tie_embeddings=False, pad_token_id=0)
    params = model_for(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    params = jax.tree.map(lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value"))
    grown, gcfg = mean_init_rows(params, cfg, added)
    assert gcfg.vocab_size == 13
    emb, head = np.asarray(grown["word"]["embedding"]), np.asarray(grown["lm_head"]["kernel"])
    np.testing.assert_allclose(emb[11], emb[:11].mean(0), rtol=1e-5, atol=1e-8)  # float32 sums: order
    np.testing.assert_allclose(head[:, 12], head[:, :11].mean(1), rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(emb[:11], np.asarray(params["word"]["embedding"]))
    existing = _word_tokenizer(tmp_path)
    assert add_diffusion_tokens(existing, "klein") == [11] and existing.mask_token_id == 6  # only <pad> added
    by_id = _word_tokenizer(tmp_path)
    assert add_diffusion_tokens(by_id, "id:6") == [11] and by_id.mask_token == "klein"  # an id the tokenizer names
    with pytest.raises(ConfigError, match="not a token"):
        add_diffusion_tokens(_word_tokenizer(tmp_path), "<|reserved_special_token_0|>")
    with pytest.raises(ConfigError, match="pad / bos / eos"):
        add_diffusion_tokens(_word_tokenizer(tmp_path), "</s>")
    with pytest.raises(ConfigError, match="id:N with N a non-negative integer"):
        add_diffusion_tokens(_word_tokenizer(tmp_path), "id:-3")


def test_a_padded_row_beyond_the_tokenizer_is_the_mask():
    """`mask_token="id:N"` past the tokenizer (a padded Qwen row): nothing is added to the tokenizer, the model
    config carries the id (saved with the run, exported, read back), pruning maps it, the vocabulary takes it."""
    from dlm_jax.data.vocab import HFVocabulary
    from dlm_jax.model import from_hf_dict, to_hf_dict
    from dlm_jax.model.prune import VocabMap, prune_params, tokenizer_mask_id
    from dlm_jax.pretrained import add_diffusion_tokens, with_mask_row
    tok = _word_tokenizer(None)
    assert add_diffusion_tokens(tok, "id:14") == [11] and tok.mask_token is None  # <pad> only
    cfg = get_config("tiny-test").replace(family="llama", vocab_size=16, tie_embeddings=True, pad_token_id=11)
    cfg = with_mask_row(cfg, tok, "id:14")
    assert cfg.mask_token_id == 14 and tokenizer_mask_id(cfg, None) == 14
    assert from_hf_dict(to_hf_dict(cfg)).mask_token_id == 14  # export -> config.json -> load
    with pytest.raises(ConfigError, match="16 rows"):
        with_mask_row(cfg, tok, "id:16")
    vocab = HFVocabulary(tok, mask_id=14)
    assert vocab.mask_id == 14 and vocab.decode([7, 14, 8]) == "the house" and vocab.vocab_size == 15
    assert HFVocabulary(_word_tokenizer(None)).optional_mask_id is None
    vmap = VocabMap.build([3, 4, 14], 16, unk_id=0, specials=[11])
    params = {"word": {"embedding": jnp.zeros((16, 4))}, "head_bias": jnp.zeros(16)}
    _, pruned = prune_params(params, cfg, vmap)
    assert pruned.mask_token_id == int(vmap.old_to_new[14]) and tokenizer_mask_id(pruned, vmap) == 14


@pytest.mark.parametrize("shift,padded", [(0, False), (1, True)])
def test_a_decoder_llm_trains_with_rdm_and_samples(shift, padded, tmp_path):
    """The adaptation end to end on a tiny Llama with the bundled BERT's vocabulary: RDM training (bidirectional,
    the given shift), restore, the sampler and the ELBO, unchanged. `padded`: the table has 3 rows past the
    tokenizer and the last one is the mask (`mask_token="id:N"`), through training, restore and export."""
    from configs import tiny
    from dlm_jax.config import parse
    from dlm_jax.inference import restore_run
    from dlm_jax.pretrained import load_tokenizer
    from dlm_jax.training import loop
    bert = load_tokenizer("bundled")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(bert) + 3 * padded, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).eval()
    hf.save_pretrained(tmp_path / "llm")
    bert.save_pretrained(str(tmp_path / "llm"))
    c = tiny.get_config()
    c.model.init, c.model.prune_vocab, c.model.shift = str(tmp_path / "llm"), False, shift
    mask = len(bert) + 2 if padded else bert.mask_token_id
    c.model.mask_token = f"id:{mask}" if padded else "new"
    c.model.overrides = {}
    c.num_train_steps, c.checkpoint_every_steps, c.data.train_limit = 4, 4, 32
    assert np.isfinite(loop.run(parse(c), tmp_path / "run")["loss"])
    run = restore_run(tmp_path / "run")
    assert run.model.cfg.family == "llama" and run.model.cfg.shift == shift and not run.model.cfg.causal
    assert run.vocab.mask_id == mask and run.model.cfg.mask_token_id == (mask if padded else -1)
    gen = run.generator()
    prompts = [list(run.vocab.encode("das haus ist klein"))]
    out = gen.generate(prompts, [5], SamplerConfig(steps=3), jax.random.key(0))
    assert out["response_mask"].sum() == 5 and mask not in np.asarray(out["tokens"])
    if padded:  # the exported model names its mask row; a run started from it keeps that row as the mask
        from dlm_jax.inference.export import export_run
        export_run(tmp_path / "run", tmp_path / "hf")
        assert json.loads((tmp_path / "hf" / "config.json").read_text())["mask_token_id"] == mask
        from dlm_jax.training.setup import build_model
        c.model.init, c.model.mask_token = str(tmp_path / "hf"), "new"
        assert build_model(parse(c), run.mesh).model.cfg.mask_token_id == mask
    nll, _ = gen.score(prompts, [[2001, 2003]], jax.random.key(0), num_samples=2)
    assert np.isfinite(nll).all()


def test_llm_configs_follow_the_released_adaptation():
    from configs import flan2022, iwslt14
    from dlm_jax.config import parse
    run = parse(flan2022.get_config("llama-13b"), num_devices=1, num_processes=1)
    assert (run.model.init, run.data.task, run.batch_size, run.optimizer.lr, run.num_train_steps) == (
        "huggyllama/llama-13b", "flan2022_paper", 2048, 1e-5, 10_000)
    assert run.model.overrides["causal"] is False and run.model.overrides["shift"] == 0
    assert run.model.mask_token == "new" and not run.model.prune_vocab and run.model.overrides["dtype"] == "bfloat16"
    for cfg in (flan2022.get_config("qwen2.5-0.5b"), flan2022.get_config("smollm2-135m"),
                iwslt14.get_config("qwen2.5-0.5b")):
        r = parse(cfg, num_devices=1, num_processes=1)
        assert r.model.init.startswith(("Qwen/", "HuggingFaceTB/")) and r.model.overrides["hidden_dropout"] == 0.0


def test_sharded_over_the_8_device_mesh_equals_single_device():
    from dlm_jax import parallel
    from dlm_jax.model.axes import DEFAULT_RULES
    cfg = get_config("tiny-test").replace(family="llama", vocab_size=96, num_kv_heads=2, intermediate_size=64,
                                          qkv_bias=True, tie_embeddings=False, pad_token_id=0)
    model = model_for(cfg)
    ids, attn = _batch(16)
    ids = jnp.asarray(ids % 96)
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params, _ = parallel.sharded_init(lambda k: model.init(k, ids)["params"], mesh, DEFAULT_RULES, jax.random.key(0))
    gate, key = params["layers_0"]["mlp"]["gate"]["kernel"], params["layers_0"]["attention"]["key"]["kernel"]
    assert tuple(gate.sharding.spec) == ("fsdp", "tensor") and "tensor" in tuple(key.sharding.spec)  # kv heads
    ref = model.apply({"params": jax.device_get(params)}, ids, attention_mask=attn)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        out = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m))(params, ids, attn)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)
