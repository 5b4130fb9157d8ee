"""Flax masked LMs (BERT / RoBERTa / XLM-R / XLM-R XL / ModernBERT), fairseq's encoder-decoder Transformer, Llama /
Qwen2 decoder LLMs, each a registered family (`families/`, `family.family_of`), and the length predictor."""
from dlm_jax.model.families import (NAMED_CONFIGS, from_hf_dict, from_hf_json, get_config, to_hf_dict,
                                     unread_checkpoint_config)
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import MaskedLM
from dlm_jax.model.factory import abstract_params, model_for
from dlm_jax.model.family import Family, family_of
from dlm_jax.model.seq2seq import Seq2SeqLM

__all__ = ["MaskedLM", "Seq2SeqLM", "model_for", "abstract_params", "ModelConfig", "NAMED_CONFIGS", "get_config",
           "from_hf_dict", "from_hf_json", "to_hf_dict", "Family", "family_of", "unread_checkpoint_config"]
