"""Llama / Qwen2 decoder LLMs (`model.llama.DecoderLM`): grouped-query attention, RoPE (Llama 3.1 scaling),
SwiGLU, tied or untied head. Adapted into diffusion LMs as the paper's LLaMA experiment: `<pad>` / `<mask>` are
added when the tokenizer lacks them, and `shift` 1 (Dream / DiffuLLaMA) is this family's option."""
from __future__ import annotations

from typing import Any

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.family import Family, register
from dlm_jax.model.keys import Rule, kv_bias, kv_kernel, linear, out_kernel, qkv_bias, qkv_kernel
from dlm_jax.model.llama import DecoderLM

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _check(cfg: ModelConfig) -> None:
    if cfg.num_heads % cfg.kv_heads:
        raise ConfigError(f"num_heads {cfg.num_heads} is not a multiple of num_kv_heads {cfg.kv_heads}")
    if cfg.rope_type not in ("default", "llama3"):
        raise ConfigError(f"rope_type={cfg.rope_type!r}; dlm_jax implements 'default' and 'llama3' RoPE")
    if cfg.shift not in (0, 1):
        raise ConfigError(f"model.shift={cfg.shift}; choose 0 (position i predicts token i, the released LLaMA "
                          "adaptation) or 1 (position i - 1 predicts token i, Dream / DiffuLLaMA)")
    if cfg.head_dim % 2:
        raise ConfigError(f"the head size {cfg.head_dim} must be even for RoPE")
    if cfg.mask_token_id >= cfg.vocab_size:
        raise ConfigError(f"mask_token_id {cfg.mask_token_id} is beyond the embedding table ({cfg.vocab_size} rows); "
                          f"name a row below {cfg.vocab_size} or use model.mask_token=new")


def _rope_of(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from either spelling: `rope_theta` + `rope_scaling` (transformers 4) or `rope_parameters`
    (transformers 5)."""
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise ConfigError(f"config.json asks for RoPE type {kind!r}; dlm_jax implements 'default' and 'llama3'")
    out: dict[str, Any] = dict(rope_type=kind, rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))))
    if kind == "llama3":
        out.update(rope_factor=float(rope["factor"]), rope_low_freq=float(rope["low_freq_factor"]),
                   rope_high_freq=float(rope["high_freq_factor"]),
                   rope_original_max=int(rope["original_max_position_embeddings"]))
    return out


def _int_or(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def from_hf(hf: dict[str, Any]) -> ModelConfig:
    """LlamaForCausalLM / Qwen2ForCausalLM config.json -> ModelConfig (bidirectional by default)."""
    kind = hf["model_type"]
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"config.json has hidden_act={hf['hidden_act']!r}; only silu (SwiGLU) is implemented")
    bias = bool(hf.get("attention_bias", False))
    heads = hf["num_attention_heads"]
    pad = hf.get("pad_token_id")
    return ModelConfig(
        family="llama", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_size=hf.get("head_dim") or hf["hidden_size"] // heads, intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 2048), type_vocab_size=0,
        pad_token_id=pad if isinstance(pad, int) else 0, layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
        hidden_dropout=0.0, attention_dropout=float(hf.get("attention_dropout", 0.0)),
        qkv_bias=True if kind == "qwen2" else bias, out_bias=False if kind == "qwen2" else bias,
        mlp_bias=bool(hf.get("mlp_bias", False)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        hf_type=kind, mask_token_id=_int_or(hf.get("mask_token_id"), -1), **_rope_of(hf))


def _to_hf(cfg: ModelConfig, out: dict[str, Any]) -> dict[str, Any]:
    for old in ("rope_scaling", "rope_theta"):
        out.pop(old, None)
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type == "llama3":
        rope.update(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq, high_freq_factor=cfg.rope_high_freq,
                    original_max_position_embeddings=cfg.rope_original_max)
    out.update(model_type=cfg.hf_type, architectures=[_ARCHITECTURES[cfg.hf_type]], vocab_size=cfg.vocab_size,
               hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
               num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
               num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim, max_position_embeddings=cfg.max_positions,
               rms_norm_eps=cfg.layer_norm_eps, hidden_act="silu", tie_word_embeddings=cfg.tie_embeddings,
               attention_dropout=cfg.attention_dropout, rope_parameters=rope)
    if cfg.hf_type == "llama":
        out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    if cfg.mask_token_id >= 0:  # a mask row the tokenizer cannot name (a padded row); read back by from_hf
        out.update(mask_token_id=cfg.mask_token_id)
    return out


def key_table(cfg: ModelConfig) -> list[Rule]:
    """LlamaForCausalLM / Qwen2ForCausalLM (no `lm_head` when tied)."""
    L, a = r"model\.layers\.{i}", "layers_{i}/attention"
    rules = [Rule(r"model\.embed_tokens\.weight", "word/embedding"),
             Rule(rf"{L}\.input_layernorm\.weight", "layers_{i}/attention_ln/scale"),
             Rule(rf"{L}\.self_attn\.q_proj\.weight", f"{a}/query/kernel", qkv_kernel),
             Rule(rf"{L}\.self_attn\.k_proj\.weight", f"{a}/key/kernel", kv_kernel),
             Rule(rf"{L}\.self_attn\.v_proj\.weight", f"{a}/value/kernel", kv_kernel),
             Rule(rf"{L}\.self_attn\.o_proj\.weight", f"{a}/out/kernel", out_kernel),
             Rule(rf"{L}\.post_attention_layernorm\.weight", "layers_{i}/mlp_ln/scale"),
             *[Rule(rf"{L}\.mlp\.{n}_proj\.weight", f"layers_{{i}}/mlp/{n}/kernel", linear)
               for n in ("gate", "up", "down")],
             Rule(r"model\.norm\.weight", "final_ln/scale")]
    if cfg.qkv_bias:
        rules += [Rule(rf"{L}\.self_attn\.q_proj\.bias", f"{a}/query/bias", qkv_bias),
                  Rule(rf"{L}\.self_attn\.k_proj\.bias", f"{a}/key/bias", kv_bias),
                  Rule(rf"{L}\.self_attn\.v_proj\.bias", f"{a}/value/bias", kv_bias)]
    if cfg.out_bias:
        rules.append(Rule(rf"{L}\.self_attn\.o_proj\.bias", f"{a}/out/bias"))
    if cfg.mlp_bias:
        rules += [Rule(rf"{L}\.mlp\.{n}_proj\.bias", f"layers_{{i}}/mlp/{n}/bias") for n in ("gate", "up", "down")]
    if not cfg.tie_embeddings:
        rules.append(Rule(r"lm_head\.weight", "lm_head/kernel", linear))
    return rules


def from_gguf(meta: dict[str, Any]) -> dict[str, Any]:
    """A llama / qwen2 GGUF file's metadata (llama.cpp's key names) -> the HF config.json it was converted from."""
    arch = meta["general.architecture"]

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)
    if get("rope.scaling.type", "none") not in ("none", None) or "rope_freqs" in meta.get("_tensors", ()):
        raise ConfigError(f"the GGUF file scales RoPE ({get('rope.scaling.type', 'rope_freqs factors')}); dlm_jax "
                          "reads GGUF files with plain RoPE (Llama 1-3.0, Qwen2, SmolLM2); use the HF checkpoint")
    heads, hidden = get("attention.head_count"), get("embedding_length")
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", ()))
    return dict(model_type=arch, vocab_size=int(vocab), hidden_size=int(hidden),
                num_hidden_layers=int(get("block_count")), num_attention_heads=int(heads),
                num_key_value_heads=int(get("attention.head_count_kv", heads)),
                head_dim=int(get("attention.key_length", hidden // heads)),
                intermediate_size=int(get("feed_forward_length")),
                max_position_embeddings=int(get("context_length", 2048)),
                rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
                rope_theta=float(get("rope.freq_base", 10_000.0)), hidden_act="silu",
                tie_word_embeddings="output.weight" not in meta.get("_tensors", ()),
                bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
                pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
                attention_bias=arch == "llama" and "blk.0.attn_q.bias" in meta.get("_tensors", ()))


def _unpermute(heads: int) -> Any:
    """Undoes llama.cpp's row order of a llama Q / K projection (convert_hf_to_gguf.py `permute`: each head's rows
    interleaved as rotary pairs for GGML's RoPE) back to the HF order (halves)."""
    def fix(w: Any) -> Any:
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return fix


def gguf_names(hf: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """GGUF tensor names -> HF keys. llama files store Q / K rows permuted for GGML's RoPE (undone here); qwen2
    files keep HF's order (NeoX RoPE)."""
    keep = lambda w: w  # noqa: E731
    q, k = keep, keep
    if hf["model_type"] == "llama":
        q, k = _unpermute(hf["num_attention_heads"]), _unpermute(hf["num_key_value_heads"])
    L = "model.layers.{i}"
    names = [(r"token_embd\.weight", "model.embed_tokens.weight", keep),
             (r"output_norm\.weight", "model.norm.weight", keep), (r"output\.weight", "lm_head.weight", keep),
             (r"blk\.{i}\.attn_norm\.weight", f"{L}.input_layernorm.weight", keep),
             (r"blk\.{i}\.ffn_norm\.weight", f"{L}.post_attention_layernorm.weight", keep)]
    for part, fix in (("weight", {"q": q, "k": k}), ("bias", {"q": q, "k": k})):
        names += [(rf"blk\.{{i}}\.attn_{g}\.{part}", f"{L}.self_attn.{h}_proj.{part}", fix.get(g, keep))
                  for g, h in (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o"))]
        names += [(rf"blk\.{{i}}\.ffn_{n}\.{part}", f"{L}.mlp.{n}_proj.{part}", keep) for n in ("gate", "up", "down")]
    return names


def _body(cfg: ModelConfig) -> int:
    """q and o of hidden x heads * head_dim, k and v of hidden x kv_heads * head_dim (grouped-query attention),
    and SwiGLU's gate, up and down."""
    h, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return cfg.num_layers * (2 * h * q + 2 * h * kv + 3 * h * cfg.intermediate_size)


LLAMA = register(Family(
    name="llama", description="Llama / Qwen2 decoder LLMs (GQA, RoPE, SwiGLU)", kind="decoder",
    module=DecoderLM,
    hf_model_types=("llama", "qwen2"), from_hf=from_hf, to_hf=_to_hf, key_table=key_table, check=_check,
    body_matmul_params=_body, head_matmul_params=lambda cfg: cfg.vocab_size * cfg.hidden_size,
    adds_diffusion_tokens=True, shiftable=True,
    gguf_architectures=("llama", "qwen2"), gguf_config=from_gguf, gguf_names=gguf_names,
    fields=("num_kv_heads", "head_size", "qkv_bias", "out_bias", "mlp_bias", "tie_embeddings", "rope_type",
            "rope_theta", "rope_factor", "rope_low_freq", "rope_high_freq", "rope_original_max", "hf_type", "shift",
            "mask_token_id", "causal")))

_BASE = dict(family="llama", type_vocab_size=0, pad_token_id=0, hidden_dropout=0.0, attention_dropout=0.0)

NAMED: dict[str, dict[str, Any]] = {
    # Shapes of their HF config.json, for compile / memory benchmarks (real runs read the checkpoint's):
    # LLaMA-1 13B (huggyllama/llama-13b), Qwen2.5-0.5B, SmolLM2-135M.
    "llama-13b": dict(**_BASE, vocab_size=32_000, hidden_size=5120, num_layers=40, num_heads=40,
                      intermediate_size=13_824, max_positions=2048, layer_norm_eps=1e-6, rope_theta=10_000.0),
    "qwen2.5-0.5b": dict(**_BASE, vocab_size=151_936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                         intermediate_size=4864, max_positions=32_768, layer_norm_eps=1e-6, rope_theta=1_000_000.0,
                         qkv_bias=True, tie_embeddings=True, hf_type="qwen2"),
    "smollm2-135m": dict(**_BASE, vocab_size=49_152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                         intermediate_size=1536, max_positions=8192, layer_norm_eps=1e-5, rope_theta=100_000.0,
                         tie_embeddings=True),
    # A laptop-scale Llama (docs/RESULTS.md "A decoder LLM adapted at laptop scale"): pretrained here as a causal
    # LM with the AR objective, exported, then adapted with RDM (bert-tiny's size: 2 layers, d 128; grouped-query
    # attention 4 / 2 heads, SwiGLU 512, tied head; vocabulary from the tokenizer).
    "llama-tiny": dict(**_BASE, vocab_size=32_000, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=512, max_positions=2048, layer_norm_eps=1e-5, rope_theta=10_000.0,
                       tie_embeddings=True),
}
