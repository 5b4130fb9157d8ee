"""The vocabulary of HuggingFace key tables: a `Rule` maps an HF key (regex, `{i}` = layer) to a flax param path
through a layout transform (torch [out, in] -> flax), each transform with its inverse for export. Every family's
table (`dlm_jax.model.families`) is written in these terms; `dlm_jax.hf_io` applies them."""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from dlm_jax.model.configs import ModelConfig

LN_W, LN_B = r"(?:weight|gamma)", r"(?:bias|beta)"


# --- transforms: HF (torch layout) -> flax; INVERSE maps each to its export direction ---
def ident(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x


def linear(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # torch [out, in] -> [in, out]
    return x.T


def qkv_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [h*d, e] -> [e, h, d]
    return x.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def qkv_bias(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.reshape(cfg.num_heads, cfg.head_dim)


def kv_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [kv*d, e] -> [e, kv, d] (grouped-query)
    return x.T.reshape(cfg.hidden_size, cfg.kv_heads, cfg.head_dim)


def kv_bias(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x.reshape(cfg.kv_heads, cfg.head_dim)


def out_kernel(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # [e, h*d] -> [h, d, e]
    return x.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def geglu_in(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:  # Wi [2m, e] (input rows, then gate) -> [e, 2, m]
    return x.T.reshape(cfg.hidden_size, 2, cfg.intermediate_size)


INVERSE: dict[Callable, Callable[[np.ndarray, ModelConfig], np.ndarray]] = {
    geglu_in: lambda x, c: x.reshape(c.hidden_size, -1).T,
    ident: lambda x, c: x,
    linear: lambda x, c: x.T,
    qkv_kernel: lambda x, c: x.reshape(c.hidden_size, -1).T,
    qkv_bias: lambda x, c: x.reshape(-1),
    out_kernel: lambda x, c: x.reshape(-1, c.hidden_size).T,
    kv_kernel: lambda x, c: x.reshape(c.hidden_size, -1).T,
    kv_bias: lambda x, c: x.reshape(-1),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str  # regex over the HF key ({i} = layer index); canonical spelling first for export
    flax: str  # "/"-joined param path ({i} = layer index)
    transform: Callable[[np.ndarray, ModelConfig], np.ndarray] = ident
    first_layer: int = 0  # layers below this one have no such parameter (ModernBERT's layer 0 attention norm)

    def export_key(self) -> str:
        """The canonical HF key (first alternative of each group)."""
        key = re.sub(r"\(\?:([^|)]*)[^)]*\)", r"\1", self.hf)
        return key.replace("\\.", ".")


