"""The model of a config (its family's Flax module) and its abstract params."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.family import family_of


def model_for(cfg: ModelConfig, *, decode: bool = False) -> Any:
    """The Flax module of `cfg`'s family (`MaskedLM`, `Seq2SeqLM`, `DecoderLM`); `decode`: with a KV cache
    (`prefill` / `decode_step`)."""
    return family_of(cfg).module(cfg, decode=decode)


def abstract_params(cfg: ModelConfig) -> Any:
    """Boxed (nn.Partitioned) ShapeDtypeStructs of the model's params; nothing is allocated."""
    model = model_for(cfg)
    ids = jnp.zeros((1, 4), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"]
