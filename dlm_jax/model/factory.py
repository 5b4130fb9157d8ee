"""The model of a config: the masked LM of the encoder families or fairseq's encoder-decoder, and its abstract
params."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import MaskedLM
from dlm_jax.model.llama import DecoderLM
from dlm_jax.model.seq2seq import Seq2SeqLM

MODULES = {"transformer": Seq2SeqLM, "llama": DecoderLM}


def model_for(cfg: ModelConfig, *, decode: bool = False) -> Any:
    """`Seq2SeqLM` for the "transformer" family, `DecoderLM` for "llama" (Llama / Qwen2), else `MaskedLM`;
    `decode`: with a KV cache (`prefill` / `decode_step`)."""
    return MODULES.get(cfg.family, MaskedLM)(cfg, decode=decode)


def abstract_params(cfg: ModelConfig) -> Any:
    """Boxed (nn.Partitioned) ShapeDtypeStructs of the model's params; nothing is allocated."""
    model = model_for(cfg)
    ids = jnp.zeros((1, 4), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"]
