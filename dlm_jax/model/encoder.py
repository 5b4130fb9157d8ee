"""BERT / RoBERTa / XLM-R (post-LN), XLM-R XL / XXL (pre-LN) and ModernBERT masked language models in Flax.

Layouts follow HuggingFace's `modeling_bert.py`, `modeling_xlm_roberta.py`, `modeling_xlm_roberta_xl.py` and
`modeling_modernbert.py`:
- post-LN (bert, roberta): emb -> LN -> dropout; per block x = LN(x + attn(x)); x = LN(x + mlp(x)).
- pre-LN (xlmr-xl): emb -> dropout (no LN); per block x = x + attn(LN(x)); x = x + mlp(LN(x)); final LN.
- modernbert: token emb -> LN -> dropout (no position table); per block x = x + attn(LN(x)) (no LN before the
  first layer's attention; RoPE; global or sliding-window attention by `cfg.layer_types`), x = x + GeGLU(LN(x));
  final LN; no biases anywhere but the decoder's.
- MLM head: dense -> exact gelu -> LN -> tied decoder (word embeddings^T) + bias.
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
from dlm_jax.model.layers import (CacheStep, Einsum, Embed, LayerNorm, Mlp, SelfAttention, at_positions, gelu_exact,
                                  last_real, next_cache_step, padding_lengths, positions_in_segment, prefill_cache,
                                  prefix_read, row_mask, step_bias)

REMAT_POLICIES: dict[str, Any] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "minimal": jax.checkpoint_policies.everything_saveable,
}
_ACT = (axes.BATCH, axes.LENGTH, None)


def _dtypes(cfg: ModelConfig) -> dict[str, Any]:
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


class Block(nn.Module):
    """One transformer block; `cfg.family` picks post-LN or pre-LN. Returns (x, None) so it can be scanned."""

    cfg: ModelConfig
    activation: str = "gelu"  # the MLP's: exact gelu (BERT / XLM-R); "relu" for the length predictor's layer
    decode: bool = False  # KV cache (SelfAttention.decode)
    causal: bool | None = None  # None: cfg.causal (an encoder-decoder's encoder passes False)

    @nn.compact
    def __call__(self, x: jax.Array, mask_bias: Any, deterministic: bool) -> tuple[jax.Array, None]:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        causal = cfg.causal if self.causal is None else self.causal
        attn = SelfAttention(cfg.num_heads, cfg.head_dim, cfg.attention_dropout, deterministic, **dt,
                             implementation=cfg.attention, causal=causal, decode=self.decode, name="attention")
        mlp = Mlp(cfg.intermediate_size, **dt, activation=self.activation, name="mlp")
        drop = functools.partial(nn.Dropout(cfg.hidden_dropout), deterministic=deterministic)
        ln_attn = LayerNorm(cfg.layer_norm_eps, **dt, name="attention_ln")
        ln_mlp = LayerNorm(cfg.layer_norm_eps, **dt, name="mlp_ln")
        if cfg.family == "xlmr-xl":
            x = x + drop(attn(ln_attn(x), mask_bias))
            x = x + drop(mlp(ln_mlp(x)))
        else:
            x = ln_attn(x + drop(attn(x, mask_bias)))
            x = ln_mlp(x + drop(mlp(x)))
        return nn.with_logical_constraint(x, _ACT), None


class ModernBlock(nn.Module):
    """One ModernBERT layer (`index` picks global or sliding-window attention and its RoPE base). Returns (x, None)."""

    cfg: ModelConfig
    index: int
    decode: bool = False  # the keys and values in the "cache" collection (the sampler's prefix cache)

    @nn.compact
    def __call__(self, x: jax.Array, mask_bias: jax.Array, positions: jax.Array, deterministic: bool
                 ) -> tuple[jax.Array, None]:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        local = cfg.attention_kinds[self.index] == "sliding_attention"
        attn = SelfAttention(cfg.num_heads, cfg.head_dim, cfg.attention_dropout, deterministic, **dt,
                             implementation=cfg.attention, use_bias=False,
                             rope_theta=cfg.local_rope_theta if local else cfg.rope_theta,
                             window=cfg.window_radius if local else None, causal=cfg.causal, decode=self.decode,
                             name="attention")
        mlp = Mlp(cfg.intermediate_size, **dt, gated=True, use_bias=False, name="mlp")
        drop = functools.partial(nn.Dropout(cfg.hidden_dropout), deterministic=deterministic)
        h = x if self.index == 0 else LayerNorm(cfg.layer_norm_eps, **dt, use_bias=False, name="attention_ln")(x)
        x = x + drop(attn(h, mask_bias, positions))
        x = x + drop(mlp(LayerNorm(cfg.layer_norm_eps, **dt, use_bias=False, name="mlp_ln")(x)))
        return nn.with_logical_constraint(x, _ACT), None


class ModernGroup(nn.Module):
    """`size` consecutive ModernBERT layers starting at layer 1 (`cfg.scan_groups()`): one step of the scan over
    layer groups, each layer with its own attention kind. Returns (x, None)."""

    cfg: ModelConfig
    size: int
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask_bias: jax.Array, positions: jax.Array, deterministic: bool
                 ) -> tuple[jax.Array, None]:
        block = _maybe_remat(ModernBlock, self.cfg)
        for j in range(self.size):
            x, _ = block(self.cfg, 1 + j, self.decode, name=f"block_{j}")(x, mask_bias, positions, deterministic)
        return x, None


def _maybe_remat(block: Any, cfg: ModelConfig) -> Any:
    if cfg.remat == "none":
        return block
    if cfg.remat not in REMAT_POLICIES:
        raise ConfigError(f"unknown remat policy {cfg.remat!r}; choose one of {['none', *REMAT_POLICIES]}")
    # static_argnums counts `self`: (self, x, mask_bias, [positions,] deterministic).
    return nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                    static_argnums=(4,) if block is ModernBlock else (3,))


def _check_causal(cfg: ModelConfig) -> None:
    """AR KV-cache decoding needs a causal model of the bert / roberta / xlmr-xl families."""
    if cfg.family == "modernbert" or not cfg.causal:
        raise ConfigError("KV-cache decoding needs a causal model of the bert / roberta / xlmr-xl families "
                          f"(model.causal=True); got family {cfg.family!r}, causal={cfg.causal}")


class MaskedLM(nn.Module):
    """A masked LM. `__call__` returns float32 logits [batch, length or P, vocab].

    Methods: `encode` (final hidden states), `logits_from_hidden` (the MLM head). Calling with
    `output_positions` ([batch, P] int) applies the head only at those positions, so the vocab-sized head is paid
    for P positions instead of every position.
    """

    cfg: ModelConfig
    decode: bool = False  # KV-cache decoding (`prefill`, `decode_step`) of a causal model

    def setup(self) -> None:
        cfg, dt = self.cfg, _dtypes(self.cfg)
        modern = cfg.family == "modernbert"
        self.word = Embed(cfg.vocab_size, cfg.hidden_size, axes.VOCAB, **dt)
        if not modern:
            self.position = Embed(cfg.max_positions, cfg.hidden_size, axes.POSITIONS, **dt)
        if cfg.type_vocab_size > 0:
            self.token_type = Embed(cfg.type_vocab_size, cfg.hidden_size, axes.CLASSES, **dt)
        if cfg.family != "xlmr-xl":
            self.embed_ln = LayerNorm(cfg.layer_norm_eps, **dt, use_bias=not modern)
        if cfg.family in ("xlmr-xl", "modernbert"):
            self.final_ln = LayerNorm(cfg.layer_norm_eps, **dt, use_bias=not modern)
        self.head_dense = Einsum(shape=(cfg.hidden_size, cfg.hidden_size), kernel_axes=(axes.EMBED, None),
                                 eq="...e,ef->...f", bias_axes=None if modern else (None,), **dt)
        self.head_ln = LayerNorm(cfg.layer_norm_eps, **dt, use_bias=not modern)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = self._layers(cfg, self.decode)
        self.head_bias = self.param("head_bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.VOCAB,)),
                                    (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))

    @staticmethod
    def _layers(cfg: ModelConfig, decode: bool = False) -> Any:
        """The blocks: a list (`layers_{i}`), or one scanned module (`layers`, a leading layer axis); scanned
        ModernBERT is `layers_0` plus `groups` (`ModernGroup`, a leading group axis)."""
        if cfg.family == "modernbert" and cfg.scan_layers:
            groups, size = cfg.scan_groups()
            scanned = nn.scan(ModernGroup, variable_axes={"params": 0, "cache": 1},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=groups,
                              metadata_params={nn.PARTITION_NAME: axes.LAYERS})(cfg, size, decode, name="groups")
            return [_maybe_remat(ModernBlock, cfg)(cfg, 0, decode, name="layers_0"), scanned]
        block = _maybe_remat(ModernBlock if cfg.family == "modernbert" else Block, cfg)
        if cfg.scan_layers:  # a cache's layer axis is 1: its leaves keep the batch first, as unscanned ones
            return nn.scan(block, variable_axes={"params": 0, "cache": 1},
                           split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast, nn.broadcast),
                           length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: axes.LAYERS}
                           )(cfg, decode=decode)
        if cfg.family == "modernbert":
            return [block(cfg, i, decode, name=f"layers_{i}") for i in range(cfg.num_layers)]
        return [block(cfg, decode=decode, name=f"layers_{i}") for i in range(cfg.num_layers)]

    def position_ids(self, attention_mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """[batch, length] positions: arange for BERT; cumsum(mask) * mask + padding_idx for (XLM-)RoBERTa.

        With `segment_ids` (packed rows) positions restart at each segment, so every example sees the positions
        it would have alone.
        """
        if segment_ids is not None:
            pos = positions_in_segment(segment_ids)
            if self.cfg.family == "bert":
                return pos
            real = segment_ids > 0
            return jnp.where(real, pos + self.cfg.pad_token_id + 1, self.cfg.pad_token_id)
        if self.cfg.family == "bert":
            return jnp.broadcast_to(jnp.arange(attention_mask.shape[1]), attention_mask.shape)
        m = attention_mask.astype(jnp.int32)
        return jnp.cumsum(m, axis=1) * m + self.cfg.pad_token_id

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
               segment_ids: jax.Array | None = None, side: jax.Array | None = None) -> jax.Array:
        """input_ids [batch, length] -> hidden states [batch, length, embed] (compute dtype).

        `segment_ids` ([batch, length], 1.. per packed example, 0 = padding): attention stays within a segment
        and positions restart per segment, so a packed row computes what its examples would compute alone.
        `side` ([batch, length] bool): the `prompt_prefix` layout's response side (`layers.row_mask`). With
        `decode=True` every layer's keys and values go into the "cache" collection (the sampler's prefix cache).
        """
        cfg = self.cfg
        if attention_mask is None:
            attention_mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        x = self.word(input_ids)
        if cfg.family != "modernbert":
            x = x + self.position(self.position_ids(attention_mask, segment_ids))
        if cfg.type_vocab_size > 0:
            tt = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type(tt)
        if cfg.family != "xlmr-xl":
            x = self.embed_ln(x)
        x = self.dropout(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, _ACT)
        bias = row_mask(attention_mask, segment_ids, side, fused=cfg.attention != "einsum")
        # RoPE positions (ModernBERT): 0.. per row (HF's arange), or per packed example
        pos = (positions_in_segment(segment_ids) if segment_ids is not None
               else jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape))
        return self._blocks(x, bias, pos, deterministic)

    def _blocks(self, x: jax.Array, mask: Any, positions: jax.Array, deterministic: bool) -> jax.Array:
        """The layers (ModernBERT's with RoPE `positions`), then the final LN of the pre-LN families."""
        if self.cfg.family == "modernbert":
            for layer in self.layers:
                x, _ = layer(x, mask, positions, deterministic)
        elif self.cfg.scan_layers:
            x, _ = self.layers(x, mask, deterministic)
        else:
            for layer in self.layers:
                x, _ = layer(x, mask, deterministic)
        if self.cfg.family in ("xlmr-xl", "modernbert"):
            x = self.final_ln(x)
        return x

    def _embed(self, ids: jax.Array, position_ids: jax.Array | None) -> jax.Array:
        """Word (+ absolute position, + token type 0) embeddings of `ids` and the embedding LN, as `encode` at a
        right-padded row's columns (`position_ids`; None for ModernBERT); no dropout (decoding)."""
        cfg = self.cfg
        x = self.word(ids)
        if position_ids is not None:
            x = x + self.position(position_ids)
        if cfg.type_vocab_size > 0:
            x = x + self.token_type(jnp.zeros_like(ids))
        return self.embed_ln(x) if cfg.family != "xlmr-xl" else x

    def prefix_logits(self, live_ids: jax.Array, live_cols: jax.Array, live_valid: jax.Array,
                      visible: jax.Array, *, num_out: int, head_parts: bool = False) -> Any:
        """The diffusion sampler's cached step (`decode=True`, with the cache `encode` left of the whole row): the
        live tokens `live_ids` [batch, live] at their columns `live_cols` attend to the cached keys of the
        `visible` [batch, length] columns and to each other (`live_valid` marks the real ones); returns the logits
        [batch, num_out, vocab] of the first `num_out` live tokens (or the head's inputs with `head_parts`)."""
        cfg = self.cfg
        modern = cfg.family == "modernbert"
        x = self._embed(live_ids, None if modern else live_cols + cfg.position_offset)
        x = self._blocks(x, prefix_read(visible, live_cols, live_valid), live_cols, True)[:, :num_out]
        return self.head_parts(x) if head_parts else self.logits_from_hidden(x)

    def prefill(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """KV-cache decoding, first call (`decode=True`, `mutable=["cache"]`): runs right-padded rows [batch, L]
        (L: the prompt and room for the tokens to come), caches every layer's keys and values, and returns the
        logits [batch, vocab] at each row's last real token (they predict the next one)."""
        _check_causal(self.cfg)
        x = self.encode(input_ids, attention_mask)
        n = prefill_cache(self, padding_lengths(attention_mask)[:, None] > jnp.arange(input_ids.shape[1])[None],
                          attention_mask)
        return self.logits_from_hidden(last_real(x, n))

    def decode_step(self, token: jax.Array) -> jax.Array:
        """KV-cache decoding, each next call: appends `token` [batch] at each row's next position (the cache's
        `index`) and returns the logits [batch, vocab] that predict the token after it."""
        _check_causal(self.cfg)
        index, visible = next_cache_step(self)
        x = self._embed(token[:, None], (index + self.cfg.position_offset)[:, None])
        x = self._blocks(x, CacheStep(step_bias(visible), index), index[:, None], True)
        return self.logits_from_hidden(x[:, 0])

    def logits_from_hidden(self, hidden: jax.Array, logits_dtype: Any = jnp.float32) -> jax.Array:
        """MLM head: [..., embed] -> logits [..., vocab] in `logits_dtype` (None: the compute dtype).

        The product runs in the compute dtype either way, so float32 logits of a bfloat16 model hold bfloat16
        values; the training loss takes them in the compute dtype (`cross_entropy_and_hits` reduces in float32),
        which saves a float32 copy of a [positions, vocab] array and its gradient.
        """
        h = self.head_ln(gelu_exact(self.head_dense(hidden)))
        logits = self.word.attend(h, self.cfg.head_vocab_multiple) + self.head_bias.astype(h.dtype)
        return logits if logits_dtype is None else logits.astype(logits_dtype)

    def head_parts(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """What `logits_from_hidden` multiplies: (features [..., embed], table [vocab, embed], bias [vocab]), for
        the fused head + loss (`diffusion.fused_head`)."""
        return self.head_ln(gelu_exact(self.head_dense(hidden))), self.word.embedding.astype(self.word.dtype), \
            self.head_bias

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
                 output_positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 logits_dtype: Any = jnp.float32, head_parts: bool = False, side: jax.Array | None = None) -> Any:
        """Logits [batch, length, vocab], or [batch, P, vocab] at `output_positions` ([batch, P]).

        `output_positions` may also be [G, P] with G dividing the batch: the rows are then taken as G groups of
        batch/G consecutive rows, and positions index a group's rows laid end to end (row r, position l of a
        group is r * length + l). The RDM loss uses this to pool the masked positions of several rows.
        `logits_dtype`: see `logits_from_hidden` (the RDM loss passes None). `head_parts`: return the head's
        inputs (`head_parts`) instead of its logits. `side`: see `encode`.
        """
        hidden = self.encode(input_ids, attention_mask, token_type_ids, deterministic=deterministic,
                             segment_ids=segment_ids, side=side)
        hidden = at_positions(hidden, output_positions)
        return self.head_parts(hidden) if head_parts else self.logits_from_hidden(hidden, logits_dtype)
