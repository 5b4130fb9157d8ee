"""Llama / Qwen2 decoder LLMs in Flax behind the masked LM's interface, for adapting them into diffusion LMs (the
paper's LLaMA experiment, Fig. 7(d)).

Layout as transformers' `modeling_llama.py` / `modeling_qwen2.py`: token embeddings (no scale, no positions); per
layer x = x + attn(RMSNorm(x)), x = x + SwiGLU(RMSNorm(x)) with grouped-query attention and RoPE (rotate-half,
`rope_theta`, optional Llama 3.1 scaling); a final RMSNorm; the head tied to the embeddings or its own `lm_head`.
`cfg.causal` (False for diffusion training, the released `LlamaNonCausalModel`; True to run the model as the LLM it
was pretrained as) and `cfg.shift` (0: logits at i predict token i, the released `LlamaMaskedLM`; 1: logits at
i - 1 predict token i, Dream / DiffuLLaMA) make every diffusion component (objective, sampler, scorer) run on it
unchanged: `__call__` always returns the logits that predict the token at each position.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlm_jax.errors import ConfigError
from dlm_jax.model import axes
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import _ACT, REMAT_POLICIES, _dtypes
from dlm_jax.model.layers import (CacheStep, Einsum, Embed, RMSNorm, SelfAttention, at_positions, last_real,
                                  next_cache_step, padding_lengths, positions_in_segment, prefill_cache, prefix_read,
                                  row_mask, step_bias)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), HF's LlamaMLP, with separate gate / up / down kernels."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        e, m = cfg.hidden_size, cfg.intermediate_size
        bias = (axes.MLP,) if cfg.mlp_bias else None
        up = functools.partial(Einsum, shape=(e, m), kernel_axes=(axes.EMBED, axes.MLP), eq="ble,em->blm",
                               bias_axes=bias, **dt)
        h = jax.nn.silu(up(name="gate")(x)) * up(name="up")(x)
        h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.MLP))
        return Einsum(shape=(m, e), kernel_axes=(axes.MLP, axes.EMBED), eq="blm,me->ble",
                      bias_axes=(axes.EMBED,) if cfg.mlp_bias else None, **dt, name="down")(h)


class LlamaBlock(nn.Module):
    """One decoder layer (pre-RMSNorm). Returns (x, None) so it can be scanned."""

    cfg: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: Any, positions: jax.Array, deterministic: bool
                 ) -> tuple[jax.Array, None]:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        scaling = ((cfg.rope_factor, cfg.rope_low_freq, cfg.rope_high_freq, cfg.rope_original_max)
                   if cfg.rope_type == "llama3" else None)
        attn = SelfAttention(cfg.num_heads, cfg.head_dim, cfg.attention_dropout, deterministic, **dt,
                             implementation=cfg.attention, use_bias=cfg.qkv_bias, out_bias=cfg.out_bias,
                             rope_theta=cfg.rope_theta, rope_scaling=scaling, causal=cfg.causal,
                             num_kv_heads=cfg.kv_heads, decode=self.decode, name="attention")
        drop = functools.partial(nn.Dropout(cfg.hidden_dropout), deterministic=deterministic)
        x = x + drop(attn(RMSNorm(cfg.layer_norm_eps, **dt, name="attention_ln")(x), mask, positions))
        x = x + drop(SwiGLU(cfg, name="mlp")(RMSNorm(cfg.layer_norm_eps, **dt, name="mlp_ln")(x)))
        return nn.with_logical_constraint(x, _ACT), None


def _block(cfg: ModelConfig) -> Any:
    if cfg.remat == "none":
        return LlamaBlock
    return nn.remat(LlamaBlock, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                    static_argnums=(4,))


def _check_causal(cfg: ModelConfig) -> None:
    """AR KV-cache decoding needs the causal LLM."""
    if not cfg.causal:
        raise ConfigError("KV-cache decoding needs model.causal=True (the LLM as pretrained)")


class DecoderLM(nn.Module):
    """A Llama / Qwen2 model with the `MaskedLM` interface (`__call__`, `encode`, `logits_from_hidden`, and with
    `decode=True` and a causal config, `prefill` / `decode_step`)."""

    cfg: ModelConfig
    decode: bool = False

    def setup(self) -> None:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        self.word = Embed(cfg.vocab_size, cfg.hidden_size, axes.VOCAB, **dt)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        block = _block(cfg)
        if cfg.scan_layers:
            self.layers = nn.scan(block, variable_axes={"params": 0, "cache": 1},
                                  split_rngs={"params": True, "dropout": True},
                                  in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                                  metadata_params={nn.PARTITION_NAME: axes.LAYERS})(cfg, self.decode)
        else:
            self.layers = [block(cfg, self.decode, name=f"layers_{i}") for i in range(cfg.num_layers)]
        self.final_ln = RMSNorm(cfg.layer_norm_eps, **dt)
        if not cfg.tie_embeddings:
            self.lm_head = Einsum(shape=(cfg.hidden_size, cfg.vocab_size), kernel_axes=(axes.EMBED, axes.VOCAB),
                                  eq="...e,ev->...v", **dt)

    def _stack(self, x: jax.Array, mask: Any, positions: jax.Array, deterministic: bool) -> jax.Array:
        if self.cfg.scan_layers:
            x, _ = self.layers(x, mask, positions, deterministic)
        else:
            for layer in self.layers:
                x, _ = layer(x, mask, positions, deterministic)
        return self.final_ln(x)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
               segment_ids: jax.Array | None = None, side: jax.Array | None = None) -> jax.Array:
        """input_ids [batch, length] (right-padded, or packed with `segment_ids`) -> final states [batch, length,
        embed]; RoPE positions from 0 per row (HF's arange) or per packed example. `side`: the `prompt_prefix`
        layout's response side (`layers.row_mask`). With `decode=True` the keys and values are cached."""
        del token_type_ids
        cfg = self.cfg
        if attention_mask is None:
            attention_mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        x = nn.with_logical_constraint(self.dropout(self.word(input_ids), deterministic=deterministic), _ACT)
        mask = row_mask(attention_mask, segment_ids, side, fused=cfg.attention != "einsum")
        pos = (positions_in_segment(segment_ids) if segment_ids is not None
               else jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape))
        return self._stack(x, mask, pos, deterministic)

    def prefix_logits(self, live_ids: jax.Array, live_cols: jax.Array, live_valid: jax.Array,
                      visible: jax.Array, *, num_out: int, head_parts: bool = False) -> Any:
        """The diffusion sampler's cached step, as `MaskedLM.prefix_logits` (`shift` 0 only: a shifted head reads
        the state before each position, which for the first response position is a cached one)."""
        if self.cfg.shift:
            raise ConfigError("the sampler's prefix cache needs an unshifted head (model.shift=0): a shifted head "
                              "reads the state before each position; decode with --config.sampler.cache=none")
        x = self._stack(self.word(live_ids), prefix_read(visible, live_cols, live_valid), live_cols, True)
        x = x[:, :num_out]
        return self.head_parts(x) if head_parts else self.logits_from_hidden(x)

    def logits_from_hidden(self, hidden: jax.Array, logits_dtype: Any = jnp.float32) -> jax.Array:
        """The head: [..., embed] -> [..., vocab] (the tied embeddings or `lm_head`), in `logits_dtype`."""
        logits = (self.word.attend(hidden, self.cfg.head_vocab_multiple) if self.cfg.tie_embeddings
                  else self.lm_head(hidden))
        return logits if logits_dtype is None else logits.astype(logits_dtype)

    def head_parts(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array, None]:
        """(features, table [vocab, embed], no bias): what `logits_from_hidden` multiplies."""
        table = self.word.embedding if self.cfg.tie_embeddings else nn.unbox(self.lm_head.variables["params"]["kernel"]).T
        return hidden, table.astype(self.word.dtype), None

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
                 output_positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 logits_dtype: Any = jnp.float32, head_parts: bool = False, side: jax.Array | None = None) -> Any:
        """Logits [batch, length, vocab] that predict each position's token (or at `output_positions`, as
        `MaskedLM.__call__`). With `shift` 1 the logits for position i come from the states at i - 1 (position 0
        keeps its own, as Dream)."""
        hidden = self.encode(input_ids, attention_mask, deterministic=deterministic, segment_ids=segment_ids,
                             side=side)
        if self.cfg.shift:
            hidden = jnp.concatenate([hidden[:, :1], hidden[:, :-1]], axis=1)
        hidden = at_positions(hidden, output_positions)
        return self.head_parts(hidden) if head_parts else self.logits_from_hidden(hidden, logits_dtype)

    def prefill(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """KV-cache decoding of the causal LLM (`decode=True`, `mutable=["cache"]`): the logits [batch, vocab] at
        each row's last real token, which predict the next one (the AR head, whatever `shift`)."""
        _check_causal(self.cfg)
        x = self.encode(input_ids, attention_mask)
        n = prefill_cache(self, padding_lengths(attention_mask)[:, None] > jnp.arange(input_ids.shape[1])[None],
                          attention_mask)
        return self.logits_from_hidden(last_real(x, n))

    def decode_step(self, token: jax.Array) -> jax.Array:
        """Appends `token` [batch] at each row's next position; the logits [batch, vocab] for the one after it."""
        _check_causal(self.cfg)
        index, visible = next_cache_step(self)
        x = self._stack(self.word(token[:, None]), CacheStep(step_bias(visible), index), index[:, None], True)
        return self.logits_from_hidden(x[:, 0])
