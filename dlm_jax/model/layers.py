"""Building blocks written as explicit einsums with logical axis names on every parameter dimension."""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlm_jax.errors import ConfigError
from dlm_jax.model import axes

Dtype = jnp.dtype
Initializer = Callable[..., jax.Array]

default_kernel_init = nn.initializers.normal(stddev=0.02)


def gelu_exact(x: jax.Array) -> jax.Array:
    """HuggingFace's "gelu" is the erf form; flax's `nn.gelu` defaults to the tanh approximation."""
    return nn.gelu(x, approximate=False)


class Einsum(nn.Module):
    """y = einsum(eq, x, kernel) + bias, with logical names for each kernel / bias dimension.

    Attributes:
      shape: kernel shape.
      kernel_axes: logical name of each kernel dimension.
      eq: einsum equation "x_spec,kernel_spec->y_spec".
      bias_axes: logical names of the bias (its shape is the trailing kernel dims with these names); None: no bias.
    """

    shape: Sequence[int]
    kernel_axes: Sequence[str]
    eq: str
    bias_axes: Sequence[str] | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, tuple(self.kernel_axes)),
                            tuple(self.shape), self.param_dtype)
        y = jnp.einsum(self.eq, x.astype(self.dtype), kernel.astype(self.dtype))
        if self.bias_axes is not None:
            n = len(self.bias_axes)
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.bias_axes)),
                              tuple(self.shape[-n:]), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class LayerNorm(nn.Module):
    """LayerNorm computed in float32 (HF eps), with logically named scale and (unless `use_bias=False`, as
    ModernBERT's) bias."""

    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,)), (d,),
                           self.param_dtype)
        xf = x.astype(jnp.float32)
        mean = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mean).mean(-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.NORM,)), (d,),
                              self.param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class Embed(nn.Module):
    """A lookup table with logical axes (rows, embed); `attend` reuses it as a tied output projection."""

    num_embeddings: int
    features: int
    row_axis: str = axes.VOCAB
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    stddev: float = 0.02  # the rows' initial normal (fairseq's Transformer: features ** -0.5)

    def setup(self) -> None:
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(self.stddev), (self.row_axis, axes.EMBED)),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array, pad_rows_to: int = 1) -> jax.Array:
        """[..., embed] x [vocab, embed] -> [..., vocab].

        `pad_rows_to` > 1 runs the product on the table zero-padded to a multiple of that many rows and slices the
        result back: the parameters and the output keep their shapes, but the product's output rows get an aligned
        stride (XLM-R's 250,002 rows give bf16 rows that are not 16-byte aligned, for which cuBLAS presumably picks
        the slower kernel seen in the H100 profile, bench/RESULTS.md; Megatron pads its vocabulary to a multiple
        of 128 for alignment). Not yet timed on a GPU.

        On a mesh, with fewer positions than table rows (the usual case with the head at masked positions only),
        the product runs vocab-parallel (`axes.HEAD_VOCAB`): the positions are gathered and the table and logits
        stay split along the vocabulary, so moving activations replaces gathering the whole table. With more
        positions than rows, gathering the table is the cheaper of the two and the batch stays split.
        """
        table = self.embedding.astype(self.dtype)
        if pad_rows_to > 1:
            table = jnp.pad(table, ((0, -self.num_embeddings % pad_rows_to), (0, 0)))
        vocab_parallel = x.ndim == 3 and x.shape[0] * x.shape[1] <= self.num_embeddings
        if vocab_parallel:
            table = nn.with_logical_constraint(table, (axes.HEAD_VOCAB, None))
            x = nn.with_logical_constraint(x, (axes.HEAD_BATCH, None, None))
        y = jnp.einsum("...e,ve->...v", x.astype(self.dtype), table)
        if vocab_parallel:
            y = nn.with_logical_constraint(y, (axes.HEAD_BATCH, None, axes.HEAD_VOCAB))
        return y[..., :self.num_embeddings] if table.shape[0] != self.num_embeddings else y


def rope_inv_freq(dim: int, theta: float, scaling: tuple[float, float, float, int] | None = None) -> jax.Array:
    """RoPE's [dim / 2] inverse frequencies; `scaling` (factor, low_freq_factor, high_freq_factor, original
    context) applies Llama 3.1's rescaling as transformers' `_compute_llama3_parameters`: wavelengths above
    original / low_freq_factor are divided by factor, those below original / high_freq_factor kept, the band between
    interpolated."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if not scaling:
        return inv_freq
    factor, low, high, original = scaling
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < original / high) & ~(wavelen > original / low)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float,
               scaling: tuple[float, float, float, int] | None = None) -> jax.Array:
    """Rotary position embedding of [batch, length, heads, dim] `x` at [batch, length] `positions` (HF's
    rotate-half layout: the first and second halves of each head are the two components), in float32."""
    d = x.shape[-1]
    inv_freq = rope_inv_freq(d, theta, scaling)
    freqs = positions[..., None].astype(jnp.float32) * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., d // 2:], xf[..., :d // 2]], axis=-1)
    return (xf * jnp.cos(emb) + rotated * jnp.sin(emb)).astype(x.dtype)


def window_bias(length: int, window: int) -> jax.Array:
    """[1, 1, length, length] additive bias keeping keys within `window` positions of the query (|q - k| <=
    window, HF's bidirectional sliding window); the einsum path's only dense local mask."""
    idx = jnp.arange(length)
    near = jnp.abs(idx[:, None] - idx[None, :]) <= window
    return jnp.where(near, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[None, None]


def sinusoids(num: int, dim: int, padding_idx: int) -> jax.Array:
    """fairseq's `SinusoidalPositionalEmbedding.get_embedding`: [num, dim] float32, row i = [sin(i * f), cos(i * f)]
    with f_j = exp(-j * log(10000) / (dim / 2 - 1)), a zero column when dim is odd, the `padding_idx` row zero."""
    half = dim // 2
    freq = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(jnp.log(10000.0) / (half - 1)))
    angles = jnp.arange(num, dtype=jnp.float32)[:, None] * freq[None]
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)
    if dim % 2:
        table = jnp.concatenate([table, jnp.zeros((num, 1), jnp.float32)], axis=1)
    return table.at[padding_idx].set(0.0)


def causal_bias(length: int) -> jax.Array:
    """[1, 1, length, length] additive bias keeping keys at or before the query's position."""
    idx = jnp.arange(length)
    return jnp.where(idx[None, :] <= idx[:, None], 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[None, None]


def fused_window(implementation: str, window: int | None,
                 length: int) -> tuple[tuple[int, int] | None, jax.Array | None]:
    """How `jax.nn.dot_product_attention` gets a bidirectional sliding window: (local_window_size, band mask).

    XLA takes `local_window_size=(window, window)`. cuDNN's kernel only has a causal (left) window (jax: "cuDNN
    doesn't support right window ... when causal mask is not used", seen on an H200 with jax 0.11.2), so it gets
    the band as a [1, 1, length, length] boolean mask instead: the same attention, computed densely.
    """
    if window is None:
        return None, None
    if implementation == "cudnn":
        return None, window_bias(length, window) == 0
    return (window, window), None


class PrefixRead(NamedTuple):
    """The mask of a step over a row's live positions against a cached prefix (`SelfAttention(decode=True)`, the
    diffusion sampler's prefix cache): the live queries attend to the cached keys (every column of the row as it
    was prefilled, the stale ones masked) followed by their own. `bias` [batch, 1, live, columns + live];
    `query_cols` [batch, live] and `key_cols` [batch, columns + live]: each token's column in the row (sliding
    windows are applied by column). Nothing is written to the cache."""

    bias: jax.Array
    query_cols: jax.Array
    key_cols: jax.Array


def prefix_read(visible: jax.Array, live_cols: jax.Array, live_valid: jax.Array) -> PrefixRead:
    """The `PrefixRead` of live tokens at `live_cols` ([batch, live]; `live_valid` marks real ones) against a cache
    of `visible` [batch, columns] keys (the prefix: real, not live, each column's keys as prefilled)."""
    keep = jnp.concatenate([visible, live_valid], axis=1)
    cols = jnp.broadcast_to(jnp.arange(visible.shape[1]), visible.shape)
    return PrefixRead(step_bias(keep), live_cols, jnp.concatenate([cols, live_cols], axis=1))


class CacheStep(NamedTuple):
    """The mask of one cached decoding step (`SelfAttention(decode=True)`): `bias` [batch, 1, 1, keys] over the
    cached keys, and `index` [batch], where each row's new key and value are written (None: a cross-attention
    cache, read only)."""

    bias: jax.Array
    index: jax.Array | None


def at_positions(hidden: jax.Array, output_positions: jax.Array | None) -> jax.Array:
    """The states at `output_positions` ([batch, P], or [G, P] indexing groups of batch / G rows laid end to end:
    the pooled head), or all of them."""
    if output_positions is None:
        return hidden
    if output_positions.shape[0] != hidden.shape[0]:
        hidden = hidden.reshape(output_positions.shape[0], -1, hidden.shape[-1])
    return jnp.take_along_axis(hidden, output_positions[..., None], axis=1)


def prefill_cache(module: nn.Module, visible: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Starts a KV-cache decode: each row's next write position (its number of real tokens) and the keys a new
    token may see (`visible` [batch, length]) go into the "cache" collection; returns the positions."""
    n = attention_mask.astype(jnp.int32).sum(1)
    module.put_variable("cache", "index", n)
    module.put_variable("cache", "visible", visible)
    return n


def next_cache_step(module: nn.Module) -> tuple[jax.Array, jax.Array]:
    """One cached step: (each row's write position, the keys visible to its new token: those before and itself),
    both stored back advanced for the next step."""
    index, visible = module.get_variable("cache", "index"), module.get_variable("cache", "visible")
    visible = visible | (jnp.arange(visible.shape[1])[None] == index[:, None])
    module.put_variable("cache", "index", index + 1)
    module.put_variable("cache", "visible", visible)
    return index, visible


def last_real(x: jax.Array, n: jax.Array) -> jax.Array:
    """[batch, length, ...] -> [batch, ...] at each row's last real position (`n` real tokens)."""
    return x[jnp.arange(x.shape[0]), n - 1]


def step_bias(visible: jax.Array) -> jax.Array:
    """[batch, keys] bool -> [batch, 1, 1, keys] additive bias of one query."""
    return jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a padding mask; q/k/v kernels are [embed, heads, kv].

    `implementation`: "einsum" (explicit einsums, float32 softmax, attention dropout), or "xla" / "cudnn" for
    `jax.nn.dot_product_attention` (cudnn: the fused flash kernel on NVIDIA GPUs; no attention dropout).
    ModernBERT options: `use_bias=False`, `rope_theta` (rotary embedding of q and k at the given positions) and
    `window` (sliding-window attention: XLA's fused path takes it as `local_window_size`, cuDNN as a band mask;
    see `fused_window`).
    """

    num_heads: int
    head_dim: int
    dropout: float = 0.0
    deterministic: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    implementation: str = "einsum"
    use_bias: bool = True
    rope_theta: float | None = None
    window: int | None = None
    causal: bool = False  # each query sees keys at its position and before only
    num_kv_heads: int | None = None  # grouped-query attention: each key / value head serves heads / kv_heads queries
    out_bias: bool | None = None  # the output projection's bias (None: `use_bias`; Qwen2 has q/k/v biases only)
    rope_scaling: tuple[float, float, float, int] | None = None  # Llama 3.1's (`rope_inv_freq`)
    # KV cache (collection "cache"): a call with a full-length mask computes as usual and stores the keys and
    # values (prefill); a call with a `CacheStep` mask attends one new position per row to the cache (decoding); a
    # call with a `PrefixRead` mask attends live positions to the cache and themselves, writing nothing.
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | CacheStep | PrefixRead, positions: jax.Array | None = None,
                 memory: jax.Array | None = None) -> jax.Array:
        """x: [batch, length, embed].

        mask: [batch, 1, 1 or length, length] additive bias (0 or very negative, `padding_bias` / `segment_bias`);
        the fused implementations also take [batch] int key lengths of right-padded rows (`padding_lengths`).
        positions: [batch, length] (RoPE only). memory: [batch, keys, embed], the keys' and values' input for
        cross-attention (None: self-attention; not read at a cached step).
        """
        e = x.shape[-1]
        proj = dict(shape=(e, self.num_heads, self.head_dim), kernel_axes=(axes.EMBED, axes.HEADS, axes.KV),
                    eq="ble,ehd->blhd", bias_axes=(axes.HEADS, axes.KV) if self.use_bias else None,
                    dtype=self.dtype, param_dtype=self.param_dtype)
        q = Einsum(**proj, name="query")(x)
        kv_in = x if memory is None else memory
        kv_heads = self.num_kv_heads or self.num_heads
        kv_proj = {**proj, "shape": (e, kv_heads, self.head_dim)}
        if isinstance(mask, CacheStep) and mask.index is None:  # cross-attention: cached at prefill
            k, v = self.get_variable("cache", "key"), self.get_variable("cache", "value")
        else:
            k, v = Einsum(**kv_proj, name="key")(kv_in), Einsum(**kv_proj, name="value")(kv_in)
        if self.rope_theta is not None:
            q = apply_rope(q, positions, self.rope_theta, self.rope_scaling)
            k = apply_rope(k, positions, self.rope_theta, self.rope_scaling)
        q = nn.with_logical_constraint(q, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV))
        if self.decode:
            k, v = self._cache(k, v, mask)
        if kv_heads != self.num_heads:  # query head h reads key / value head h // (heads / kv_heads), as HF
            k, v = (jnp.repeat(a, self.num_heads // kv_heads, axis=2) for a in (k, v))
        if isinstance(mask, PrefixRead):
            ctx = self._dense(q, k, v, self._windowed(mask))
        elif isinstance(mask, CacheStep):
            ctx = self._dense(q, k, v, mask.bias)
        else:
            ctx = self._full(q, k, v, mask, x.shape[1])
        out_bias = self.use_bias if self.out_bias is None else self.out_bias
        return Einsum(shape=(self.num_heads, self.head_dim, e), kernel_axes=(axes.HEADS, axes.KV, axes.EMBED),
                      eq="blhd,hde->ble", bias_axes=(axes.EMBED,) if out_bias else None, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="out")(ctx)

    def _full(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, length: int) -> jax.Array:
        """Attention over a whole row (no cached step): the einsum path or `jax.nn.dot_product_attention`."""
        if self.implementation == "einsum":
            if self.window is not None:
                mask = mask + window_bias(length, self.window) if mask.ndim == 4 else mask
            if self.causal:
                mask = mask + causal_bias(length)
            return self._dense(q, k, v, mask)
        if self.dropout > 0 and not self.deterministic:
            raise ConfigError(f"attention {self.implementation!r} has no attention-probability dropout; set "
                              "--config.model.attention_dropout=0 (or model.attention='einsum')")
        window, band = fused_window(self.implementation, self.window, length)
        if mask.ndim == 1:  # right padding: keys beyond each row's length are masked
            return jax.nn.dot_product_attention(q, k, v, mask=band, key_value_seq_lengths=mask,
                                                local_window_size=window, is_causal=self.causal,
                                                implementation=self.implementation)
        keep = mask == 0 if band is None else (mask == 0) & band
        return jax.nn.dot_product_attention(q, k, v, mask=keep, local_window_size=window, is_causal=self.causal,
                                            implementation=self.implementation)

    def _windowed(self, mask: PrefixRead) -> jax.Array:
        """A `PrefixRead`'s bias, with this layer's sliding window (|query column - key column| <= window)."""
        if self.window is None:
            return mask.bias
        near = jnp.abs(mask.query_cols[:, None, :, None] - mask.key_cols[:, None, None, :]) <= self.window
        return jnp.where(near, mask.bias, jnp.finfo(jnp.float32).min)

    def _dense(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        """Explicit-einsum attention with a float32 softmax (and attention dropout when training)."""
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(self.head_dim)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        if self.dropout > 0 and not self.deterministic:
            probs = nn.Dropout(self.dropout)(probs, deterministic=False)
        return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)

    def _cache(self, k: jax.Array, v: jax.Array, mask: jax.Array | CacheStep | PrefixRead
               ) -> tuple[jax.Array, jax.Array]:
        """Prefill: stores `k`, `v` [batch, keys, heads, kv] and returns them. Step: writes each row's one new key
        and value at its `index` and returns the whole cache (a cross-attention step returns it unchanged).
        `PrefixRead`: the cache followed by the live tokens' keys and values, nothing written."""
        if isinstance(mask, PrefixRead):
            ck, cv = self.get_variable("cache", "key"), self.get_variable("cache", "value")
            return jnp.concatenate([ck, k.astype(ck.dtype)], axis=1), jnp.concatenate([cv, v.astype(cv.dtype)], axis=1)
        if not isinstance(mask, CacheStep):
            self.put_variable("cache", "key", k)
            self.put_variable("cache", "value", v)
            return k, v
        if mask.index is None:
            return k, v
        write = jax.vmap(lambda c, new, i: jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), i, 0))
        k = write(self.get_variable("cache", "key"), k, mask.index)
        v = write(self.get_variable("cache", "value"), v, mask.index)
        self.put_variable("cache", "key", k)
        self.put_variable("cache", "value", v)
        return k, v


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"gelu": lambda h: gelu_exact(h), "relu": jax.nn.relu,
                                                             "silu": jax.nn.silu}


class RMSNorm(nn.Module):
    """HF's LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) in float32, cast back to the compute dtype, then times the
    weight (in that order, as HF, so bfloat16 results match)."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,)), (x.shape[-1],),
                           self.param_dtype)
        xf = x.astype(jnp.float32)
        y = (xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + self.eps)).astype(self.dtype)
        return scale.astype(self.dtype) * y


class Mlp(nn.Module):
    """dense -> activation (exact gelu, or relu) -> dense; `gated`: ModernBERT's GeGLU, act(x W_in) * (x W_gate)
    with the two input projections as one [embed, 2, mlp] kernel (HF's `Wi`, chunked in that order)."""

    intermediate_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    activation: str = "gelu"
    gated: bool = False
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        e, m = x.shape[-1], self.intermediate_size
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.gated:
            h = Einsum(shape=(e, 2, m), kernel_axes=(axes.EMBED, None, axes.MLP), eq="ble,egm->blgm",
                       bias_axes=(None, axes.MLP) if self.use_bias else None, **dt, name="wi")(x)
            h = ACTIVATIONS[self.activation](h[..., 0, :]) * h[..., 1, :]
        else:
            h = Einsum(shape=(e, m), kernel_axes=(axes.EMBED, axes.MLP), eq="ble,em->blm",
                       bias_axes=(axes.MLP,) if self.use_bias else None, **dt, name="wi")(x)
            h = ACTIVATIONS[self.activation](h)
        h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.MLP))
        return Einsum(shape=(m, e), kernel_axes=(axes.MLP, axes.EMBED), eq="blm,me->ble",
                      bias_axes=(axes.EMBED,) if self.use_bias else None, **dt, name="wo")(h)


def padding_bias(attention_mask: jax.Array) -> jax.Array:
    """[batch, length] 0/1 mask -> [batch, 1, 1, length] additive bias for the attention logits."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def padding_lengths(attention_mask: jax.Array) -> jax.Array:
    """[batch, length] right-padded 0/1 mask -> [batch] int32 number of real tokens (the fused kernels' key lengths)."""
    return attention_mask.astype(jnp.int32).sum(-1)


def segment_bias(segment_ids: jax.Array) -> jax.Array:
    """[batch, length] segment ids of packed rows (0 = padding) -> [batch, 1, length, length] additive bias.

    A token attends only to real tokens of its own segment (its example); padding queries attend to padding.
    """
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return jnp.where(same[:, None], 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def row_mask(attention_mask: jax.Array, segment_ids: jax.Array | None, side: jax.Array | None, fused: bool
             ) -> jax.Array:
    """What `SelfAttention` takes as the mask of whole rows: within each packed example (`segment_ids`) or each
    row's real tokens (`attention_mask`), and with `side` ([batch, length] bool, the `prompt_prefix` attention
    layout: True on a row's response side) a prompt token never sees the response side while response tokens see
    everything. `fused` (the fused kernels) gets [batch] key lengths where that is all the mask is."""
    if segment_ids is not None:
        bias = segment_bias(segment_ids)
    elif side is None:
        return padding_lengths(attention_mask) if fused else padding_bias(attention_mask)
    else:
        bias = padding_bias(attention_mask)
    if side is None:
        return bias
    hidden = side[:, None, None, :] & ~side[:, None, :, None]  # a prompt query, a response key
    return jnp.where(hidden, jnp.finfo(jnp.float32).min, bias)


def positions_in_segment(segment_ids: jax.Array) -> jax.Array:
    """[batch, length] index of each token within its segment (0 at each segment's first token)."""
    idx = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
    prev = jnp.pad(segment_ids, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
    starts = jnp.where(segment_ids != prev, idx, 0)
    return idx - jax.lax.cummax(starts, axis=1)
