"""The model families, registered in `dlm_jax.model.family.REGISTRY` on import, and what is built from all of
them: the named sizes (`get_config`) and HuggingFace config.json conversion (`from_hf_dict` / `to_hf_dict`).

| family | module | Flax module | HF model types |
|---|---|---|---|
| bert, roberta, xlmr-xl | encoders.py | encoder.MaskedLM | bert; roberta, xlm-roberta, camembert; xlm-roberta-xl |
| modernbert | modernbert.py | encoder.MaskedLM | modernbert |
| transformer | transformer.py | seq2seq.Seq2SeqLM | (none: trained from scratch) |
| llama | llama.py | llama.DecoderLM | llama, qwen2 |
"""
from __future__ import annotations

import json
import os
from typing import Any

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.families import encoders, llama, modernbert, transformer
from dlm_jax.model.family import REGISTRY, family_for_model_type, family_of

NAMED_CONFIGS: dict[str, ModelConfig] = {
    name: ModelConfig(**fields)
    for module in (encoders, modernbert, transformer, llama) for name, fields in module.NAMED.items()}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The named model config (`bert-tiny`, `xlmr-base` .. `xlmr-xxl`, `modernbert-*`, `transformer-*`, Llama /
    Qwen2 shapes, `tiny-test`), with `overrides` replaced."""
    if name not in NAMED_CONFIGS:
        raise ConfigError(f"unknown model config {name!r}; choose one of {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name].replace(**overrides)


def from_hf_dict(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from the contents of a HuggingFace `config.json`."""
    return family_for_model_type(hf.get("model_type")).from_hf(hf).replace(**overrides)


def from_hf_json(path: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
    with open(path) as f:
        return from_hf_dict(json.load(f), **overrides)


def to_hf_dict(cfg: ModelConfig, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HuggingFace `config.json` contents for `cfg` (keys from `extra`, e.g. the original file, are kept)."""
    fam = family_of(cfg)
    if fam.to_hf is None:
        raise ConfigError(f"model family {cfg.family!r} has no HuggingFace format")
    return fam.to_hf(cfg, dict(extra or {}))


def unread_checkpoint_config(overrides: dict[str, Any]) -> ModelConfig:
    """The defaults to check `model.*` overrides on before a checkpoint's own config is read (its family is known
    only then): those of a family that takes them (a `shift` needs a decoder LLM's)."""
    if overrides.get("shift"):
        return ModelConfig(family=next(f.name for f in REGISTRY.values() if f.shiftable))
    return ModelConfig()


__all__ = ["unread_checkpoint_config", "REGISTRY", "NAMED_CONFIGS", "family_of", "get_config", "from_hf_dict", "from_hf_json", "to_hf_dict"]
