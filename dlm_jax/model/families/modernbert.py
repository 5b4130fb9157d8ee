"""ModernBERT (answerdotai/ModernBERT-*): RoPE, a global attention layer every `global_every` and sliding windows
elsewhere, GeGLU, no biases but the decoder's; 8,192 positions. The Flax module is `model.encoder.MaskedLM`; this
module owns its field checks, both config.json spellings, its key table (the fused `Wqkv` split on import) and its
FLOP count (sliding layers attend to a band)."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import LAYER_TYPES, ModelConfig
from dlm_jax.model.encoder import MaskedLM
from dlm_jax.model.families.encoders import check_heads, mlm_head
from dlm_jax.model.family import Family, register
from dlm_jax.model.keys import Rule, geglu_in, linear, out_kernel, qkv_kernel


def _check(cfg: ModelConfig) -> None:
    check_heads(cfg)
    if cfg.layer_types and (len(cfg.layer_types) != cfg.num_layers or set(cfg.layer_types) - set(LAYER_TYPES)):
        raise ConfigError(f"model.layer_types must name one of {list(LAYER_TYPES)} for each of the "
                          f"{cfg.num_layers} layers (or be empty: a global layer every model.global_every), "
                          f"got {list(cfg.layer_types)}")
    if cfg.global_every < 1:
        raise ConfigError(f"model.global_every must be at least 1, got {cfg.global_every}")
    if cfg.scan_layers:
        cfg.scan_groups()  # raises when the layers after the first do not repeat


def _check_hf(hf: dict[str, Any]) -> None:
    for key, want in (("norm_bias", False), ("attention_bias", False), ("mlp_bias", False),
                      ("classifier_bias", False), ("decoder_bias", True), ("hidden_activation", "gelu"),
                      ("classifier_activation", "gelu")):
        if hf.get(key, want) != want:
            raise ConfigError(f"config.json has {key}={hf[key]!r}; dlm_jax's ModernBERT implements {key}={want!r}")
    rope = hf.get("rope_parameters") or {}
    for kind in ("full_attention", "sliding_attention"):
        if (rope.get(kind) or {}).get("rope_type", "default") != "default" or hf.get("rope_scaling"):
            raise ConfigError("config.json asks for RoPE scaling; only the default rotary embedding is implemented")


def _from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Either spelling: the hub's (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`) or
    transformers 5's (`layer_types`, `rope_parameters`); `local_attention` in both."""
    _check_hf(hf)
    rope = hf.get("rope_parameters") or {}
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


def _to_hf(cfg: ModelConfig, out: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's spelling (it also reads the hub's older keys)."""
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
                                "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta}})
    return out


def key_table(cfg: ModelConfig) -> list[Rule]:
    """ModernBertForMaskedLM. The fused `attn.Wqkv` is split into q / k / v rows before matching (`split_fused`)."""
    L = r"model\.layers\.{i}"
    return [Rule(r"model\.embeddings\.tok_embeddings\.weight", "word/embedding"),
            Rule(r"model\.embeddings\.norm\.weight", "embed_ln/scale"),
            Rule(rf"{L}\.attn_norm\.weight", "layers_{i}/attention_ln/scale", first_layer=1),
            *[Rule(rf"{L}\.attn\.Wqkv\.{n}\.weight", f"layers_{{i}}/attention/{n}/kernel", qkv_kernel)
              for n in ("query", "key", "value")],
            Rule(rf"{L}\.attn\.Wo\.weight", "layers_{i}/attention/out/kernel", out_kernel),
            Rule(rf"{L}\.mlp_norm\.weight", "layers_{i}/mlp_ln/scale"),
            Rule(rf"{L}\.mlp\.Wi\.weight", "layers_{i}/mlp/wi/kernel", geglu_in),
            Rule(rf"{L}\.mlp\.Wo\.weight", "layers_{i}/mlp/wo/kernel", linear),
            Rule(r"model\.final_norm\.weight", "final_ln/scale"),
            Rule(r"head\.dense\.weight", "head_dense/kernel", linear),
            Rule(r"head\.norm\.weight", "head_ln/scale"),
            Rule(r"decoder\.bias", "head_bias")]


_FUSED_QKV = re.compile(r"(model\.layers\.\d+\.attn\.Wqkv)\.weight$")


def split_fused(state: dict[str, Any]) -> dict[str, Any]:
    """`Wqkv.weight` [3 e, e] -> `Wqkv.{query,key,value}.weight` [e, e] (rows in that order)."""
    out = {}
    for k, v in state.items():
        m = _FUSED_QKV.match(k)
        if m:
            for name, part in zip(("query", "key", "value"), np.split(np.asarray(v), 3, axis=0)):
                out[f"{m.group(1)}.{name}.weight"] = part
        else:
            out[k] = v
    return out


def merge_fused(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_fused`, for export."""
    out = {k: v for k, v in state.items() if ".Wqkv." not in k}
    for k in state:
        if k.endswith(".Wqkv.query.weight"):
            stem = k[:-len(".query.weight")]
            out[f"{stem}.weight"] = np.concatenate([state[f"{stem}.{n}.weight"] for n in ("query", "key", "value")])
    return out


def _body(cfg: ModelConfig) -> int:
    """q, k, v, o and GeGLU's [hidden, 2 * intermediate] input product plus its output: 3 MLP matrices."""
    return cfg.num_layers * (4 * cfg.hidden_size ** 2 + 3 * cfg.hidden_size * cfg.intermediate_size)


def _keys(cfg: ModelConfig, length: int) -> int:
    """`length` keys on a global layer, the band of 2 * window_radius + 1 on a sliding one."""
    band = min(length, 2 * cfg.window_radius + 1)
    return sum(length if kind == "full_attention" else band for kind in cfg.attention_kinds)


MODERNBERT = register(Family(
    name="modernbert", description="ModernBERT (RoPE, global / sliding-window layers, GeGLU, 8,192 positions)",
    kind="encoder", module=MaskedLM, hf_model_types=("modernbert",), from_hf=_from_hf, to_hf=_to_hf, key_table=key_table,
    check=_check, state_in=split_fused, state_out=merge_fused, body_matmul_params=_body, head_matmul_params=mlm_head,
    attention_keys=_keys, grouped_scan=True,
    fields=("layer_types", "global_every", "rope_theta", "local_rope_theta", "local_window")))

_BASE = dict(family="modernbert", vocab_size=50_368, max_positions=8192, type_vocab_size=0, pad_token_id=50_283,
             layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0)

NAMED: dict[str, dict[str, Any]] = {
    # answerdotai/ModernBERT-base / -large (config.json: 8,192 positions, a global layer every 3, window 128)
    "modernbert-base": dict(**_BASE, hidden_size=768, num_layers=22, num_heads=12, intermediate_size=1152),
    "modernbert-large": dict(**_BASE, hidden_size=1024, num_layers=28, num_heads=16, intermediate_size=2624),
    "modernbert-tiny-test": dict(**{**_BASE, "vocab_size": 99, "max_positions": 64, "pad_token_id": 0,
                                    "local_window": 8}, hidden_size=32, num_layers=4, num_heads=4,
                                 intermediate_size=37),
}
