"""`ModelConfig`: a model's dimensions and options as one flat, frozen dataclass (the form saved as a run's
model.json). What each family does with its fields (checks, HF conversion, key table, FLOPs, row conventions) is the
family's, in `dlm_jax.model.families`; the named sizes are there too."""
from __future__ import annotations

import dataclasses
from typing import Any

from dlm_jax.errors import ConfigError
from dlm_jax.model.family import family_of
ATTENTION_LAYOUTS: tuple[str, ...] = ("bidirectional", "prompt_prefix")
LAYER_TYPES: tuple[str, ...] = ("full_attention", "sliding_attention")
ATTENTION_IMPLS: tuple[str, ...] = ("einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Dimensions and options of a model of any registered family (`dlm_jax.model.family.REGISTRY`).

    `family` names the architecture: "bert" (positions from 0, token types, post-LN), "roberta" (XLM-R base/large:
    positions from `pad_token_id + 1` computed from the padding mask, post-LN), "xlmr-xl" (XL / XXL: pre-LN blocks,
    no embedding LayerNorm, a final encoder LayerNorm), "modernbert", "transformer" (fairseq's encoder-decoder) and
    "llama" (Llama / Qwen2). Fields marked "X only" are read by that family alone (`Family.fields`).
    """

    family: str = "roberta"  # "modernbert": RoPE, global / sliding-window layers, GeGLU, no biases (below)
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
    # Who attends to whom in a prompt + response row (issue 39; not part of the HF config): "bidirectional" (every
    # token sees every token: the paper's), or "prompt_prefix" (prompt tokens see the prompt only, response tokens
    # see everything: the prompt's keys and values never depend on the response, so the sampler's prefix cache is
    # exact). Trained and decoded the same way; docs/FIDELITY.md S7.
    attention_layout: str = "bidirectional"
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
        fam = family_of(self.family)  # an unknown family is one ConfigError naming the registered ones
        if self.attention not in ATTENTION_IMPLS:
            raise ConfigError(f"model.attention={self.attention!r}; choose one of {list(ATTENTION_IMPLS)}")
        if self.attention == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"model.attention='cudnn' needs a 16-bit compute dtype, got model.dtype={self.dtype!r}; "
                              "set --config.model.dtype=bfloat16 or use attention 'einsum'")
        if self.attention_layout not in ATTENTION_LAYOUTS:
            raise ConfigError(f"model.attention_layout={self.attention_layout!r}; choose one of "
                              f"{list(ATTENTION_LAYOUTS)}")
        if self.attention_layout != "bidirectional" and (self.causal or fam.kind == "encoder-decoder"):
            raise ConfigError(f"model.attention_layout={self.attention_layout!r} is for bidirectional diffusion "
                              f"models; this one is {'causal' if self.causal else 'an encoder-decoder'} (set "
                              "--config.model.attention_layout=bidirectional)")
        if self.shift and not fam.shiftable:
            raise ConfigError(f"model.shift={self.shift} is for decoder LLMs (family 'llama'); {self.family!r} "
                              "predicts each position's own token (shift 0)")
        fam.check(self)
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
        return family_of(self.family).position_offset(self)

    @property
    def max_length(self) -> int:
        """Longest sequence (in tokens) that the position table can encode."""
        return self.max_positions - self.position_offset

    def layout_kwargs(self, side: Any) -> dict[str, Any]:
        """What a model call over prompt + response rows passes for the attention layout: `side` (the rows'
        response side, [batch, length] bool) under `prompt_prefix`, nothing under `bidirectional`."""
        return {} if self.attention_layout == "bidirectional" or side is None else {"side": side}

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


_MOVED = ("get_config", "NAMED_CONFIGS", "from_hf_dict", "from_hf_json", "to_hf_dict")


def __getattr__(name: str) -> Any:
    """The names that lived here before the family registry (`dlm_jax.model.configs.get_config`, ...) still
    resolve, to `dlm_jax.model`'s (built from every family); the package is initialised before this module."""
    if name in _MOVED:
        import sys
        return getattr(sys.modules["dlm_jax.model"], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
