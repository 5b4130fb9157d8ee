"""Flax masked LMs (BERT / RoBERTa / XLM-R / XLM-R XL / ModernBERT), fairseq's encoder-decoder Transformer, and
the length predictor."""
from dlm_jax.model.configs import NAMED_CONFIGS, ModelConfig, from_hf_dict, from_hf_json, get_config, to_hf_dict
from dlm_jax.model.encoder import MaskedLM
from dlm_jax.model.factory import abstract_params, model_for
from dlm_jax.model.seq2seq import Seq2SeqLM

__all__ = ["MaskedLM", "Seq2SeqLM", "model_for", "abstract_params", "ModelConfig", "NAMED_CONFIGS", "get_config", "from_hf_dict", "from_hf_json", "to_hf_dict"]
