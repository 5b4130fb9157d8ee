"""fairseq's encoder-decoder Transformer (`transformer_iwslt_de_en`, Transformer-BASE) in Flax, behind the masked
LM's interface, for the paper's Table 1 baselines (AR and RDM, trained from scratch).

Layout (fairseq `transformer_legacy.py` with its defaults): token embeddings (normal(0, d ** -0.5)) scaled by
sqrt(d) plus fairseq's sinusoidal positions (from `padding_idx + 1`), dropout; post-LN blocks (relu FFN); the
decoder's blocks are self-attention (causal for the AR objective, bidirectional for RDM), cross-attention to the
encoder's output, FFN, each followed by add & LayerNorm; one embedding table for the encoder input, the decoder
input and the output projection (one joint vocabulary), plus a zero-initialised output bias.

The model reads the same rows as the masked LMs, `<s> prompt </s> response </s>` (`FeatureSpec.separator`):
the source is each example's tokens up to and including its first `</s>`, the decoder reads from that `</s>` on
(fairseq's decoder input also starts with `</s>`), and logits come back at every position of the row, so the RDM
and AR objectives, the sampler and the scorer run unchanged. Both stacks run over the whole row with masks that
keep the source and the target apart, which costs up to twice the FLOPs of separate source and target tensors.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlm_jax.model import axes
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import _ACT, Block, _dtypes, _maybe_remat
from dlm_jax.model.layers import (CacheStep, Embed, LayerNorm, Mlp, SelfAttention, at_positions, last_real,
                                  next_cache_step, positions_in_segment, prefill_cache, sinusoids, step_bias)


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to `memory`, FFN; each add & LayerNorm (post-LN). Returns (x, None)."""

    cfg: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, masks: tuple[Any, Any], memory: jax.Array | None, deterministic: bool
                 ) -> tuple[jax.Array, None]:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        drop = functools.partial(nn.Dropout(cfg.hidden_dropout), deterministic=deterministic)
        attn = functools.partial(SelfAttention, cfg.num_heads, cfg.head_dim, cfg.attention_dropout, deterministic,
                                 **dt, implementation=cfg.attention, decode=self.decode)
        self_mask, cross_mask = masks
        x = LayerNorm(cfg.layer_norm_eps, **dt, name="attention_ln")(
            x + drop(attn(causal=cfg.causal, name="attention")(x, self_mask)))
        x = LayerNorm(cfg.layer_norm_eps, **dt, name="cross_ln")(
            x + drop(attn(name="cross_attention")(x, cross_mask, memory=memory)))
        x = LayerNorm(cfg.layer_norm_eps, **dt, name="mlp_ln")(
            x + drop(Mlp(cfg.intermediate_size, **dt, activation="relu", name="mlp")(x)))
        return nn.with_logical_constraint(x, _ACT), None


def _block_bias(keep: jax.Array) -> jax.Array:
    """[batch, queries, keys] bool -> [batch, 1, queries, keys] additive bias."""
    return jnp.where(keep[:, None], 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def regions(input_ids: jax.Array, attention_mask: jax.Array, segment_ids: jax.Array | None, sep_id: int
            ) -> dict[str, jax.Array]:
    """Which tokens of each (packed) example are source and which target, and their positions.

    Returns source / target [batch, length] bool (the example's first `</s>` is in both: the source's end and the
    decoder's first input), segment [batch, length] ids (0 = padding), and the source's and target's positions
    from 0 within each.
    """
    seg = attention_mask.astype(jnp.int32) if segment_ids is None else segment_ids
    real = seg > 0
    pos = positions_in_segment(seg)
    is_sep = (input_ids == sep_id) & real
    before = jnp.cumsum(is_sep, axis=1) - is_sep  # separators before each token, counted from the row's start
    start = jnp.arange(seg.shape[1])[None] - pos  # each token's segment start
    before = before - jnp.take_along_axis(before, start, axis=1)  # ... from its example's start
    source = real & (before == 0)
    target = real & ((before > 0) | is_sep & (before == 0))
    sep_pos = jax.lax.cummax(jnp.where(is_sep & (before == 0), jnp.arange(seg.shape[1])[None], -1), axis=1)
    return dict(source=source, target=target, segment=seg, source_pos=pos,
                target_pos=jnp.where(target, jnp.arange(seg.shape[1])[None] - sep_pos, 0))


class Seq2SeqLM(nn.Module):
    """The encoder-decoder with the `MaskedLM` interface: `__call__` (logits at every position, or at
    `output_positions`), `encode` (the encoder's states), `logits_from_hidden`, and KV-cache decoding
    (`prefill` / `decode_step` with `decode=True`)."""

    cfg: ModelConfig
    decode: bool = False

    def setup(self) -> None:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        self.word = Embed(cfg.vocab_size, cfg.hidden_size, axes.VOCAB, **dt, stddev=cfg.hidden_size ** -0.5)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        enc = functools.partial(_maybe_remat(Block, cfg), cfg, activation="relu", causal=False)
        self.encoder = [enc(name=f"encoder_{i}") for i in range(cfg.num_layers)]
        dec = nn.remat(DecoderBlock, static_argnums=(4,)) if cfg.remat != "none" else DecoderBlock
        self.decoder = [dec(cfg, self.decode, name=f"decoder_{i}") for i in range(cfg.num_decoder_layers)]
        self.head_bias = self.param("head_bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.VOCAB,)),
                                    (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))

    def _embed(self, ids: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        """sqrt(d) * embedding + the sinusoid of `positions` (0-based; fairseq's ids start at padding_idx + 1)."""
        cfg = self.cfg
        table = sinusoids(cfg.max_positions, cfg.hidden_size, cfg.pad_token_id)
        x = math.sqrt(cfg.hidden_size) * self.word(ids) + table[positions + cfg.position_offset].astype(
            jnp.dtype(cfg.dtype))
        return nn.with_logical_constraint(self.dropout(x, deterministic=deterministic), _ACT)

    def _encode(self, input_ids: jax.Array, r: dict[str, jax.Array], deterministic: bool) -> jax.Array:
        same = r["segment"][:, :, None] == r["segment"][:, None, :]
        bias = _block_bias(same & r["source"][:, None, :])
        x = self._embed(input_ids, r["source_pos"], deterministic)
        for layer in self.encoder:
            x, _ = layer(x, bias, deterministic)
        return x

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
               segment_ids: jax.Array | None = None) -> jax.Array:
        """The encoder's states [batch, length, embed] (meaningful at source positions)."""
        del token_type_ids
        if attention_mask is None:
            attention_mask = (input_ids != self.cfg.pad_token_id).astype(jnp.int32)
        r = regions(input_ids, attention_mask, segment_ids, self.cfg.sep_token_id)
        return self._encode(input_ids, r, deterministic)

    def _decoder(self, x: jax.Array, masks: tuple[Any, Any], memory: jax.Array | None,
                 deterministic: bool) -> jax.Array:
        for layer in self.decoder:
            x, _ = layer(x, masks, memory, deterministic)
        return x

    def logits_from_hidden(self, hidden: jax.Array, logits_dtype: Any = jnp.float32) -> jax.Array:
        """The tied output projection plus its bias: [..., embed] -> [..., vocab] in `logits_dtype` (None: the
        compute dtype)."""
        logits = self.word.attend(hidden, self.cfg.head_vocab_multiple) + self.head_bias.astype(hidden.dtype)
        return logits if logits_dtype is None else logits.astype(logits_dtype)

    def hidden(self, input_ids: jax.Array, attention_mask: jax.Array | None, segment_ids: jax.Array | None,
               deterministic: bool) -> jax.Array:
        """The decoder's states [batch, length, embed] over whole rows (meaningful at target positions)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.cfg.pad_token_id).astype(jnp.int32)
        r = regions(input_ids, attention_mask, segment_ids, self.cfg.sep_token_id)
        memory = self._encode(input_ids, r, deterministic)
        same = r["segment"][:, :, None] == r["segment"][:, None, :]
        masks = (_block_bias(same & r["target"][:, None, :]), _block_bias(same & r["source"][:, None, :]))
        return self._decoder(self._embed(input_ids, r["target_pos"], deterministic), masks, memory, deterministic)

    def head_parts(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(features, table [vocab, embed], bias): what `logits_from_hidden` multiplies."""
        return hidden, self.word.embedding.astype(self.word.dtype), self.head_bias

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
                 output_positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 logits_dtype: Any = jnp.float32, head_parts: bool = False) -> Any:
        """Logits [batch, length, vocab] (or at `output_positions`, as `MaskedLM.__call__`)."""
        del token_type_ids
        hidden = at_positions(self.hidden(input_ids, attention_mask, segment_ids, deterministic), output_positions)
        return self.head_parts(hidden) if head_parts else self.logits_from_hidden(hidden, logits_dtype)

    def prefill(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """KV-cache decoding, first call on right-padded `<s> prompt </s>` rows: caches the decoder's keys and
        values (self and cross) and returns the logits [batch, vocab] at the `</s>` (they predict the first token)."""
        x = self.hidden(input_ids, attention_mask, None, True)
        r = regions(input_ids, attention_mask, None, self.cfg.sep_token_id)
        n = prefill_cache(self, r["target"], attention_mask)
        self.put_variable("cache", "source", r["source"])
        self.put_variable("cache", "target_start", jnp.argmax(r["target"], axis=1).astype(jnp.int32))
        return self.logits_from_hidden(last_real(x, n))

    def decode_step(self, token: jax.Array) -> jax.Array:
        """KV-cache decoding, each next call: appends `token` [batch] to each row's target and returns the logits
        [batch, vocab] that predict the one after it."""
        index, visible = next_cache_step(self)
        x = self._embed(token[:, None], (index - self.get_variable("cache", "target_start"))[:, None], True)
        masks = (CacheStep(step_bias(visible), index), CacheStep(step_bias(self.get_variable("cache", "source")),
                                                                 None))
        x = self._decoder(x, masks, None, True)
        return self.logits_from_hidden(x[:, 0])
