"""dlm_jax: diffusion language models from pretrained masked LMs (RDM finetuning, unmask/remask sampling).

The public API: `load_pretrained` / `save_pretrained` (HuggingFace checkpoints <-> Flax), `bundled_bert_dir`
(the small real BERT the demo uses). They are imported on first use, so `import dlm_jax.training.step` needs
only jax / flax / optax. The package layout and its layer order are in the README.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# dlm_jax uses transformers for tokenizers and configs only (our models are Flax), so its advice that "PyTorch was
# not found. Models won't be available ..." is noise on every command of a torch-free install; its warnings stay.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"

_API = {"Pretrained": "dlm_jax.pretrained", "load_pretrained": "dlm_jax.pretrained",
        "save_pretrained": "dlm_jax.pretrained", "load_tokenizer": "dlm_jax.pretrained",
        "bundled_bert_dir": "dlm_jax.model.bundled"}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'dlm_jax' has no attribute {name!r}")
