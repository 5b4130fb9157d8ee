"""Shared run setup: logical rules and the model (HF checkpoint, trained workdir, or random init) from config."""
from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

import dlm_jax
from dlm_jax.model import MaskedLM, ModelConfig, get_config
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.parallel import sharded_init


def rules_from_config(config: ml_collections.ConfigDict) -> tuple:
    """`mesh.rules` (a list of [logical, mesh axis or list or None]) or the defaults."""
    rules = config.mesh.get("rules")
    if not rules:
        return DEFAULT_RULES
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in rules)


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    m = config.model
    out = dict(m.get("overrides", {}) or {})
    out.update(dtype=m.dtype, remat=m.remat, scan_layers=m.scan_layers, attention=m.get("attention", "einsum"),
               head_vocab_multiple=m.get("head_vocab_multiple", 1))
    if m.get("dropout") is not None:
        out.update(hidden_dropout=m.dropout, attention_dropout=m.dropout)
    if m.get("attention_dropout") is not None:  # e.g. 0 with the fused (cudnn) attention
        out.update(attention_dropout=m.attention_dropout)
    return out


def build_model(config: ml_collections.ConfigDict, mesh: Any, rules: Any) -> tuple[MaskedLM, Any, Any, ModelConfig]:
    """(model, sharded params, HF tokenizer, ModelConfig) for `model.init` = HF dir / hub id, or "random"."""
    m = config.model
    overrides = model_overrides(config)
    if m.init.startswith("workdir:"):  # continue from a dlm_jax run (e.g. the length stage on a finetuned model)
        from dlm_jax.restore import load_workdir
        ld = load_workdir(m.init.split(":", 1)[1])
        return ld.model, ld.params, ld.tokenizer, ld.model_config
    if m.init != "random":
        init = str(dlm_jax.bundled_bert_dir()) if m.init == "bundled" else m.init
        pre = dlm_jax.load_pretrained(init, mesh=mesh, rules=rules, **overrides)
        tokenizer = pre.tokenizer if pre.tokenizer is not None else _tokenizer(m.get("tokenizer"))
        return pre.model, pre.params, tokenizer, pre.config
    tokenizer = _tokenizer(m.get("tokenizer"))
    cfg = get_config(m.name, **overrides)
    cfg = cfg.replace(vocab_size=len(tokenizer), pad_token_id=int(tokenizer.pad_token_id))
    model = MaskedLM(cfg)
    ids = jax.numpy.zeros((1, 8), jax.numpy.int32)
    params, _ = sharded_init(lambda k: model.init(k, ids)["params"], mesh, rules, jax.random.key(config.seed))
    logging.info("random init of %s (%s)", m.name, cfg)
    return model, params, tokenizer, cfg


def _tokenizer(src: str | None) -> Any:
    if not src:
        raise ValueError("model.init='random' needs model.tokenizer (an HF model directory or hub id with a "
                         "tokenizer), e.g. --config.model.tokenizer=bundled")
    if src == "bundled":
        src = str(dlm_jax.bundled_bert_dir())
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(src)
