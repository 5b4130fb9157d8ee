"""GGUF import (dlm_jax.gguf_io): files written here with the `gguf` package's writer from small random Llama and
Qwen2 models, in several tensor types, load to the logits transformers computes from the same file, and their
tokenizer to the ids of the tokenizer they were written from; bad files are one error line."""
import json

import numpy as np
import pytest
from conftest import torch_or_skip

gguf = pytest.importorskip("gguf", reason="GGUF import needs `pip install gguf`")

# Q4_K and Q6_K have no quantizer in the gguf package: random blocks (256 values, hence hidden 256) with small fp16
# scales (at these byte offsets
# of each block) stand in for quantized weights; every other type is quantized from the model's own weights.
K_QUANT_SCALES = {"Q4_K": (0, 2), "Q6_K": (208,)}
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["Hello world", "Grüße aus Köln, naïve café", "x = [i ** 2 for i in range(10)]  # squares",
         "12345 + 678 = 13023", "<|im_start|>user\nhi<|im_end|>", "日本語のテキスト", "emoji 🙂 and tabs\tand\nnewlines",
         "  leading spaces", "def f(a, b):\n    return a@b", "ÀÉÎÕÜ ß ø å"]


def _bpe_tokenizer():
    """A byte-level BPE tokenizer trained here (GPT-2 style, as SmolLM2's and Qwen2's), with chat specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [t * 3 for t in TEXTS] + ["the quick brown fox jumps over the lazy dog " * 4, "0123456789" * 5]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _hf_model(arch: str, vocab: int, seed: int = 0):
    torch = torch_or_skip()
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10_000.0,
                  bos_token_id=0, eos_token_id=2, pad_token_id=0)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)).eval()
    return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False)).eval()


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF halves -> GGML's interleaved rotary pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(w: np.ndarray, kind: str, rng) -> tuple[np.ndarray, object]:
    q = gguf.GGMLQuantizationType[kind]
    if w.ndim == 1 or kind == "F32":  # norms and biases stay float32, as llama.cpp writes them
        return w.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind in K_QUANT_SCALES:
        block, size = gguf.GGML_QUANT_SIZES[q]
        raw = rng.integers(0, 256, (w.shape[0], w.shape[1] // block * size), dtype=np.uint8)
        blocks = raw.reshape(-1, size)
        for at in K_QUANT_SCALES[kind]:
            blocks[:, at:at + 2] = np.float16(rng.uniform(1e-5, 3e-5, (len(blocks), 1))).view(np.uint8)
        return raw, q
    return gguf.quants.quantize(w.astype(np.float32), q), q


def write_gguf(path, arch: str, kind: str, seed: int = 0, pad_id: int = 0):
    """A GGUF file as llama.cpp's converter writes it (names, metadata, Q/K order) from a random HF model; returns
    the HF model and the source tokenizer. `pad_id` 1 names `<|im_start|>` as padding, as SmolLM2's file does."""
    tok = _bpe_tokenizer()
    vocab = tok.get_vocab()
    model = _hf_model(arch, len(vocab), seed)
    c, rng = model.config, np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in {"block_count": c.num_hidden_layers, "context_length": c.max_position_embeddings,
                       "embedding_length": c.hidden_size, "feed_forward_length": c.intermediate_size,
                       "attention.head_count": c.num_attention_heads,
                       "attention.head_count_kv": c.num_key_value_heads}.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.rope.freq_base", 10_000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    w.add_token_list([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    w.add_token_types([3 if t.startswith("<|") else 1 for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    w.add_token_merges([" ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_pad_token_id(pad_id)
    w.add_chat_template(CHAT)
    for name, value in _gguf_tensors(model, arch):
        data, q = _tensor(value, kind, rng)
        w.add_tensor(name, data, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


def _gguf_tensors(model, arch: str):
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c = model.config
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update({p + "input_layernorm.weight": f"blk.{i}.attn_norm.weight",
                      p + "post_attention_layernorm.weight": f"blk.{i}.ffn_norm.weight"})
        for hf, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output")):
            for part in ("weight", "bias"):
                names[f"{p}self_attn.{hf}_proj.{part}"] = f"blk.{i}.attn_{g}.{part}"
        for n in ("gate", "up", "down"):
            names[f"{p}mlp.{n}_proj.weight"] = f"blk.{i}.ffn_{n}.weight"
    for key, value in sd.items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if arch == "llama" and ".q_proj." in key:
            value = _permute(value, c.num_attention_heads)
        elif arch == "llama" and ".k_proj." in key:
            value = _permute(value, c.num_key_value_heads)
        yield names[key], value


def _hf_logits(path, ids):
    torch = torch_or_skip()
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")
    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_logits_equal_transformers_loading_of_the_same_file_in_every_tensor_type(tmp_path, arch):
    import jax.numpy as jnp
    import dlm_jax
    ids = np.random.default_rng(1).integers(3, 300, (2, 11))
    for kind in TYPES:
        path = tmp_path / f"{arch}-{kind}.gguf"
        write_gguf(path, arch, kind)
        ours = dlm_jax.load_pretrained(path, causal=True)
        got = np.asarray(ours.model.apply({"params": ours.params}, jnp.asarray(ids)))
        want = _hf_logits(path, ids)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=kind)
        assert ours.config.kv_heads == 2 and ours.config.causal and ours.config.tie_embeddings == (arch == "qwen2")


def test_gguf_tokenizer_gives_the_source_tokenizers_ids_and_chat_template(tmp_path):
    import dlm_jax
    path = tmp_path / "tok.gguf"
    _, source = write_gguf(path, "llama", "F16")
    tok = dlm_jax.load_pretrained(path, causal=True).tokenizer
    rng = np.random.default_rng(0)
    texts = TEXTS + ["".join(rng.choice(list("abc xyz012ÄÖü日本🙂\n\t<|>_"), int(rng.integers(1, 40))))
                     for _ in range(300)]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == source.encode(text).ids, text
    assert tok.bos_token_id == 0 and tok.eos_token_id == 2
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_bad_gguf_files_are_one_error_line(tmp_path):
    import dlm_jax
    from dlm_jax.errors import UserError
    with pytest.raises(UserError, match="does not exist"):
        dlm_jax.load_pretrained(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match="is not a readable GGUF file"):
        dlm_jax.load_pretrained(tmp_path / "junk.gguf")
    _one_tensor_file(tmp_path / "gpt2.gguf", "gpt2", np.zeros((4, 8), np.float32), None)  # no Flax family
    with pytest.raises(UserError, match=r"architecture is 'gpt2'; dlm_jax reads llama, qwen2"):
        dlm_jax.load_pretrained(tmp_path / "gpt2.gguf")
    q8_1 = gguf.GGMLQuantizationType.Q8_1  # a type llama.cpp uses for activations only: no dequantizer
    path = tmp_path / "q8_1.gguf"
    write_gguf(path, "llama", "F32")
    from dlm_jax import gguf_io
    reader = gguf.GGUFReader(str(path))
    fake = reader.tensors[0]._replace(tensor_type=q8_1, name="blk.0.attn_q.weight")
    with pytest.raises(UserError, match=r"blk\.0\.attn_q\.weight has type Q8_1.*supported: F32, F16, .*Q4_1.*Q6_K"):
        gguf_io.dequantize(fake)


def _one_tensor_file(path, arch, value, qtype):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tensor("token_embd.weight", value, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_initialises_an_rdm_run_as_an_hf_directory_does(tmp_path):
    """`model.init=FILE.gguf`: the released adaptation (bidirectional, `<mask>` added) trains, restores and
    samples; the run keeps the file's tokenizer."""
    import jax
    from configs import tiny
    from dlm_jax.config import parse
    from dlm_jax.diffusion import SamplerConfig
    from dlm_jax.inference import restore_run
    from dlm_jax.training import loop
    path = tmp_path / "llm.gguf"
    write_gguf(path, "llama", "Q8_0")
    c = tiny.get_config()
    c.model.init, c.model.prune_vocab, c.model.overrides = str(path), False, {}
    c.num_train_steps, c.checkpoint_every_steps, c.data.train_limit, c.data.max_length = 2, 2, 32, 128
    assert np.isfinite(loop.run(parse(c), tmp_path / "run")["loss"])
    run = restore_run(tmp_path / "run")
    assert run.model.cfg.family == "llama" and not run.model.cfg.causal and run.model.cfg.num_heads == 4
    assert run.vocab.tokenizer.convert_ids_to_tokens(run.vocab.mask_id) == "<mask>"
    prompt = list(run.vocab.encode("das haus"))
    assert prompt == run.vocab.tokenizer("das haus", add_special_tokens=False)["input_ids"]
    out = run.generator().generate([prompt], [4], SamplerConfig(steps=2), jax.random.key(0))
    assert out["response_mask"].sum() == 4 and run.vocab.mask_id not in np.asarray(out["tokens"])


def test_chat_with_a_pretrained_gguf_model_is_transformers_greedy_generate(tmp_path):
    """`restore_pretrained` + `chat.complete`: the chat template's ids, decoded greedily with the KV cache, give
    transformers' greedy `generate` on the same file and template, token for token (two conversations of different
    lengths in one call)."""
    torch = torch_or_skip()
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")
    from transformers import AutoModelForCausalLM
    from dlm_jax.inference import restore_pretrained
    from dlm_jax.inference.chat import chat_ids, complete
    path = tmp_path / "chat.gguf"
    write_gguf(path, "llama", "Q8_0", pad_id=1)  # the padding id inside every turn, as SmolLM2's file has it
    limit = 8  # decoding.max_len_b: a response of at most 8 tokens with its end-of-turn id
    run = restore_pretrained(path, overrides={"decoding.max_len_b": limit})
    tok = run.vocab.tokenizer
    chats = [[{"role": "user", "content": "Grüße aus Köln"}],
             [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x = [i ** 2 for i in range(10)]"}]]
    rows = [chat_ids(tok, c) for c in chats]
    assert rows[0] == tok.apply_chat_template(chats[0], add_generation_prompt=True, tokenize=True)["input_ids"]
    ours = complete(run, rows)
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    for row, got in zip(rows, ours):
        with torch.no_grad():
            new = ref.generate(torch.tensor([row]), max_new_tokens=limit, do_sample=False, eos_token_id=2,
                               pad_token_id=0)[0, len(row):].tolist()
        want = new[:new.index(2)] if 2 in new else new[:limit - 1]  # ours ends at the limit with </s> (fairseq's rule)
        assert got == want and len(got) > 0


def test_generate_pretrained_answers_from_the_command_line_and_refuses_what_it_cannot(tmp_path):
    from conftest import cli
    path = tmp_path / "chat.gguf"
    write_gguf(path, "qwen2", "Q4_0", pad_id=1)
    r = cli("dlm_jax.generate", "--pretrained", str(path), "--prompt", "Grüße", "--config.decoding.max_len_b=5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == "prompt:    Grüße" and r.stdout.splitlines()[1].startswith("output:    ")
    for args, needle in [(["--pretrained", str(path), "--workdir", str(tmp_path)], "exactly one of --workdir"),
                         (["--pretrained", str(path), "--input_task", "ding_de_en", "--length_beam", "2"],
                          "--input_task, --length_beam do not apply to --pretrained"),
                         (["--pretrained", "bundled", "--prompt", "hi"], "holds a bert model (encoder), not a decoder LLM"),
                         (["--pretrained", str(tmp_path / "nope.gguf"), "--prompt", "hi"], "does not exist")]:
        r = cli("dlm_jax.generate", *args)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 2 and needle in last and "Traceback" not in r.stderr, (args, r.stderr[-2000:])


@pytest.mark.slow
def test_serve_pretrained_chats_through_the_template_greedily_and_refuses_diffusion_fields(tmp_path):
    """`serve --pretrained FILE.gguf` (a real server process): /v1/chat/completions answers with the tokens of
    `chat.complete` on the template's ids (equal to transformers' greedy generate, test above); a temperature
    samples with the request's seed as ChatModel does; `steps` and a temperature out of range are 400s naming the
    field; the response reports the `ar` decoding that ran."""
    import os
    import subprocess
    import sys
    import urllib.request
    openai = pytest.importorskip("openai")
    from pathlib import Path
    from dlm_jax.inference import restore_pretrained
    from dlm_jax.inference.chat import chat_ids, complete
    path = tmp_path / "chat.gguf"
    write_gguf(path, "llama", "Q8_0", pad_id=1)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "dlm_jax.serve", "--pretrained", str(path), "--port", "0",
                             "--slots", "2"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "XLA_FLAGS": ""})
    try:
        line = ""
        while "listening on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()[-3000:]
        url = line.split("listening on ")[1].split()[0]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        messages = [{"role": "user", "content": "Grüße aus Köln"}]
        got = client.chat.completions.create(model="chat", messages=messages, max_tokens=5, temperature=0)
        run = restore_pretrained(path, overrides={"decoding.max_len_b": 6})
        tok = run.vocab.tokenizer
        want = complete(run, [chat_ids(tok, messages)])[0]
        assert want  # a non-empty answer to compare
        assert got.choices[0].message.content == tok.decode(want, skip_special_tokens=True).strip()
        assert got.choices[0].finish_reason == ("length" if len(want) == 5 else "stop")
        assert got.model_extra["diffusion"]["strategy"] == "ar" and got.usage.completion_tokens == len(want)
        # a temperature samples, seeded: the same seed the same answer, that of ChatModel with the server's key
        import jax
        from dlm_jax.diffusion import DecodeConfig
        from dlm_jax.inference.chat import ChatModel
        hot = [client.chat.completions.create(model="chat", messages=messages, max_tokens=5, temperature=1.5,
                                              seed=s).choices[0].message.content for s in (11, 11, 12)]
        sampled = ChatModel(run).complete([chat_ids(tok, messages)] * 2, rng=jax.random.key(0), seeds=[11, 12],
                                          decoding=DecodeConfig(beam_size=1, max_len_b=6, temperature=1.5))
        assert hot == [tok.decode(sampled[i], skip_special_tokens=True).strip() for i in (0, 0, 1)]
        for extra, field in (({"steps": 4}, "steps"), ({"temperature": 2.5}, "temperature")):
            body = json.dumps({"model": "chat", "messages": messages, **extra}).encode()
            req = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=60)
            assert e.value.code == 400 and json.loads(e.value.read())["error"]["param"] == field
    finally:
        proc.kill()
        proc.wait()


def test_magpie_data_is_reproducible_held_out_and_sampled_per_row(tmp_path):
    """bench/magpie.py on a small random GGUF chat model: user turns sampled from the template's pre-query part,
    answered greedily; the same seed writes the same files byte for byte, another seed other turns; splits are
    disjoint and every kept turn distinct. A sampled row is the same alone and in a batch (ChatModel with seeds)."""
    torch_or_skip()
    import importlib.util
    from pathlib import Path
    from dlm_jax.diffusion import DecodeConfig
    from dlm_jax.inference import restore_pretrained
    from dlm_jax.inference.chat import ChatModel
    spec = importlib.util.spec_from_file_location("magpie", Path(__file__).parents[1] / "bench" / "magpie.py")
    magpie = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(magpie)
    path = tmp_path / "chat.gguf"
    write_gguf(path, "llama", "Q8_0", pad_id=1)
    chat = ChatModel(restore_pretrained(path))
    pre = magpie.pre_query_ids(chat.restored.vocab.tokenizer)
    assert chat.restored.vocab.tokenizer.decode(pre) == "<|im_start|>user\n"
    dec = DecodeConfig(beam_size=1, temperature=1.0, max_len_b=6)
    import jax
    rows = chat.complete([pre] * 6, decoding=dec, rng=jax.random.key(3), seeds=range(6))
    assert chat.complete([pre], decoding=dec, rng=jax.random.key(3), seeds=[4]) == [rows[4]]
    assert len({tuple(r) for r in rows}) > 1  # sampled, not the argmax six times
    args = ["--model", str(path), "--pairs", "12", "--round", "16", "--batch", "8", "--max_instruction", "8",
            "--max_response", "6", "--min_words", "1", "--max_rounds", "3", "--keep_cut"]
    files = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert magpie.main([*args, "--out", str(tmp_path / name), "--seed", str(seed)]) == 0
        files[name] = {f: (tmp_path / name / f).read_bytes() for f in ("train.jsonl", "valid.jsonl", "test.jsonl")}
    assert files["a"] == files["b"] and files["a"] != files["c"]
    turns = {s: [json.loads(line)["inputs"] for line in files["a"][s].decode().splitlines()] for s in files["a"]}
    flat = [magpie.normalise(t) for ts in turns.values() for t in ts]
    assert 0 < len(flat) <= 12 and len(set(flat)) == len(flat)
    assert all(magpie.split_of(t) == s.removesuffix(".jsonl") for s, ts in turns.items() for t in ts)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == len(flat) and manifest["settings"]["seed"] == 0


@pytest.mark.slow
def test_smollm2_adaptation_variants_train_on_magpie_pairs(tmp_path, monkeypatch):
    """configs/smollm2.py (the LLaMA experiment on SmolLM2) on a GGUF chat model shaped as SmolLM2's file (padding
    id inside every turn) and Magpie-format pairs (bench/magpie.py's files): the released adaptation and the AR
    reference train with finite losses (the random control and Dream's shift 1 are parsed; their training paths
    run in test_llama.py); the adaptations are bidirectional with a `<mask>` row added, the reference causal AR."""
    torch_or_skip()
    import importlib
    from dlm_jax.config import parse
    from dlm_jax.training import loop
    path = tmp_path / "chat.gguf"
    write_gguf(path, "llama", "Q8_0", pad_id=1)
    data = tmp_path / "data" / "magpie_smollm2"
    data.mkdir(parents=True)
    pairs = [{"inputs": f"Tell me about topic {i}.", "targets": f"Topic {i} is a fine topic, friend."}
             for i in range(12)]
    for split in ("train", "valid", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    monkeypatch.setenv("DLM_DATA_DIR", str(tmp_path / "data"))
    configs = importlib.import_module("configs.smollm2")
    for variant, want in (("dream", (False, "rdm", 1)), ("rdm", (False, "rdm", 0)), ("ar", (True, "ar", 0)),
                          ("random", (False, "rdm", 0))):
        c = configs.get_config(f"{variant},init={path},steps=2,batch=8")
        c.data.max_length, c.log_every_steps, c.checkpoint_every_steps = 48, 1, 2
        if variant == "random":
            c.model.name = "llama-tiny"  # the control has SmolLM2's shape; a tiny one here (vocabulary: the file's)
        run = parse(c)
        assert (run.model.overrides["causal"], run.objective, run.model.overrides.get("shift", 0)) == want
        if variant in ("dream", "random"):  # parsed only: RDM training of these shapes runs in test_llama.py
            continue
        loop.run(run, tmp_path / variant)
        rows = [json.loads(line) for line in (tmp_path / variant / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows if "loss" in r]
        assert len(losses) == 2 and all(np.isfinite(losses)), variant
    with pytest.raises(ValueError, match="choose one of rdm, dream, random, ar"):
        configs.get_config("llada")
