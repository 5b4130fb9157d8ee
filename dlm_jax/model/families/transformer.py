"""fairseq's encoder-decoder Transformer (`model.seq2seq.Seq2SeqLM`), trained from scratch for Table 1's baselines:
rows are `<s> prompt </s> response </s>` (the prompt ends at `sep_token_id`); it has no HuggingFace format."""
from __future__ import annotations

from typing import Any

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.families.encoders import check_heads, encoder_body
from dlm_jax.model.family import Family, register
from dlm_jax.model.seq2seq import Seq2SeqLM


def _check(cfg: ModelConfig) -> None:
    check_heads(cfg)
    if cfg.scan_layers:
        raise ConfigError("the encoder-decoder (family 'transformer') has no scanned layers; set "
                          "--config.model.scan_layers=False")


def _from_hf(hf: dict[str, Any]) -> ModelConfig:
    raise ConfigError("the encoder-decoder (family 'transformer') has no HuggingFace format")


def _body(cfg: ModelConfig) -> int:
    """`num_layers` encoder layers, and `num_decoder_layers` decoder layers of self-attention, cross-attention
    (4 more hidden x hidden) and a 2-matrix MLP."""
    h, f = cfg.hidden_size, cfg.intermediate_size
    return encoder_body(cfg) + cfg.num_decoder_layers * (8 * h * h + 2 * h * f)


def _keys(cfg: ModelConfig, length: int) -> int:
    """Both stacks run over the whole row: one product per encoder layer, two per decoder layer."""
    return (cfg.num_layers + 2 * cfg.num_decoder_layers) * length


TRANSFORMER = register(Family(
    name="transformer", description="fairseq's encoder-decoder Transformer (post-LN, sinusoids, shared embeddings)",
    kind="encoder-decoder", module=Seq2SeqLM, hf_model_types=(), from_hf=_from_hf, check=_check, body_matmul_params=_body,
    head_matmul_params=lambda cfg: cfg.vocab_size * cfg.hidden_size, attention_keys=_keys,
    position_offset=lambda cfg: cfg.pad_token_id + 1, prompt_separator=True,
    fields=("num_decoder_layers", "sep_token_id")))

_BASE = dict(family="transformer", max_positions=1026, type_vocab_size=0, attention_dropout=0.0)

NAMED: dict[str, dict[str, Any]] = {
    # fairseq's `transformer_iwslt_de_en` (6+6 layers, d 512, FFN 1024, 4 heads) and `transformer` (BASE: FFN
    # 2048, 8 heads); the vocabulary comes from the run.
    "transformer-iwslt": dict(**_BASE, vocab_size=10_000, hidden_size=512, num_layers=6, num_decoder_layers=6,
                              num_heads=4, intermediate_size=1024, hidden_dropout=0.3),
    "transformer-base": dict(**_BASE, vocab_size=40_000, hidden_size=512, num_layers=6, num_decoder_layers=6,
                             num_heads=8, intermediate_size=2048, hidden_dropout=0.1),
    # The laptop-scale encoder-decoders of docs/RESULTS.md's Table 1: bert-tiny's width (2+2 layers, d 128, FFN
    # 512, 2 heads; what 2 CPU cores train in the demo's budget) and a 3+3-layer d 256 one.
    "transformer-tiny": dict(**_BASE, vocab_size=10_000, hidden_size=128, num_layers=2, num_decoder_layers=2,
                             num_heads=2, intermediate_size=512, hidden_dropout=0.1),
    "transformer-small": dict(**_BASE, vocab_size=10_000, hidden_size=256, num_layers=3, num_decoder_layers=3,
                              num_heads=4, intermediate_size=1024, hidden_dropout=0.1),
    "transformer-tiny-test": dict(**{**_BASE, "max_positions": 40}, vocab_size=99, hidden_size=32, num_layers=2,
                                  num_decoder_layers=3, num_heads=4, intermediate_size=37, hidden_dropout=0.0),
}
