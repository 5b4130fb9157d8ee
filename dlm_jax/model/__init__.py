"""Flax masked LMs (BERT / RoBERTa / XLM-R / XLM-R XL) and the length predictor."""
from dlm_jax.model.configs import NAMED_CONFIGS, ModelConfig, from_hf_dict, from_hf_json, get_config, to_hf_dict
from dlm_jax.model.encoder import MaskedLM, abstract_params

__all__ = ["MaskedLM", "abstract_params", "ModelConfig", "NAMED_CONFIGS", "get_config", "from_hf_dict", "from_hf_json", "to_hf_dict"]
