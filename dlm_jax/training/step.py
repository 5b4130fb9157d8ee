"""The train step as pure functions: optimizer and schedules, the loss closures, the jitted-step builder, and the
FLOP count behind MFU.

Nothing here touches data pipelines or files, so benchmarks and other trainers can build the exact step that
`dlm_jax.training.loop` runs (`bench/mfu.py`, `bench/train_step.py`, `bench/compile_memory.py`) with only jax /
flax / optax installed.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dlm_jax.config import OptimizerConfig
from dlm_jax.diffusion import RDMConfig, ar_loss, rdm_loss
from dlm_jax.diffusion.fused_head import HeadParts
from dlm_jax.model import MaskedLM, ModelConfig, family_of
from dlm_jax.model.length import LengthPredictor, length_loss

State = dict[str, Any]  # the keys are `dlm_jax.rundir.STATE_KEYS`


# --------------------------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------------------------
def learning_rate_schedule(opt: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """The learning rate at (0-based) update `step`.

    `log_warmup_constant`: what the paper's released code runs. Its scripts ask the HF Trainer for inverse_sqrt
    with 1% warm-up, but scripts/ds_config_zero2.json declares DeepSpeed's `WarmupLR`, which then replaces it:
    lr * log(step + 1) / log(W) for step < W = max(2, warmup_steps), then lr (DeepSpeed's default warmup_type
    "log"; HF fills warmup_min_lr=0, warmup_max_lr=lr, warmup_num_steps=ceil(warmup_ratio * steps)).
    `inverse_sqrt` (fairseq): linear warmup from warmup_init_lr, then lr*sqrt(warmup/step); `warmup_cosine`:
    linear warmup then cosine decay to end_lr; `constant`: linear warmup then constant."""
    lr, warm = opt.lr, max(opt.warmup_steps, 1)
    if opt.schedule == "log_warmup_constant":
        w = max(2, opt.warmup_steps)

        def log_warmup(step):
            step = jnp.asarray(step, jnp.float32)
            return jnp.where(step < w, lr * jnp.log(step + 1.0) / math.log(w), lr)
        return log_warmup
    if opt.schedule == "inverse_sqrt":
        init = opt.warmup_init_lr

        def sched(step):
            step = jnp.asarray(step, jnp.float32) + 1.0
            warmup = init + (lr - init) * step / warm
            return jnp.where(step < warm, warmup, lr * jnp.sqrt(warm / step))
        return sched
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(total_steps, opt.warmup_steps + 1),
                                                  end_value=opt.end_lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm])


def build_optimizer(opt: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    sched = learning_rate_schedule(opt, total_steps)
    parts = []
    if opt.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.adamw(sched, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay))
    return optax.chain(*parts), sched


# --------------------------------------------------------------------------------------------------------------
# Losses (closures over the model; pure in params, batch, rng)
# --------------------------------------------------------------------------------------------------------------
def diffusion_loss_fn(model: MaskedLM, rdm: RDMConfig) -> Callable:
    def loss_fn(params, frozen, batch, rng):
        k_noise, k_drop = jax.random.split(rng)
        pad = batch["padding_mask"]

        seg = batch.get("segment_ids")  # packed rows
        # the prompt_prefix layout: each example's response (its `</s>` included) is the side prompts never see
        side = batch["response_mask"].astype(bool) if model.cfg.attention_layout == "prompt_prefix" else None

        def logits_at(noised, positions):
            double = noised.shape[0] != pad.shape[0]  # coupled sampling doubles the batch
            twice = lambda a: None if a is None else (jnp.concatenate([a, a]) if double else a)  # noqa: E731
            out = model.apply({"params": params}, noised, attention_mask=twice(pad), deterministic=False,
                              output_positions=positions, segment_ids=twice(seg), logits_dtype=None,
                              rngs={"dropout": k_drop}, head_parts=rdm.head_chunk > 0,
                              **({} if side is None else {"side": twice(side)}))
            return HeadParts(*out, chunk=rdm.head_chunk) if rdm.head_chunk else out
        return rdm_loss(logits_at, batch, k_noise, rdm)
    return loss_fn


def ar_loss_fn(model: MaskedLM, label_smoothing: float, *, pool_rows: int = 1, max_predictions: int = 0,
               head_chunk: int = 0) -> Callable:
    """The AR baselines' loss (`dlm_jax.diffusion.ar_loss`): nothing is noised, every row is read as it is; the
    head runs at the scored positions, pooled as the RDM loss's (`diffusion.pool_rows` / `max_predictions`), fused
    with the loss in vocabulary chunks when `head_chunk` > 0 (`diffusion.head_chunk`)."""
    def loss_fn(params, frozen, batch, rng):
        def logits_fn(tokens, positions):
            out = model.apply({"params": params}, tokens, attention_mask=batch["padding_mask"], deterministic=False,
                              segment_ids=batch.get("segment_ids"), output_positions=positions, logits_dtype=None,
                              rngs={"dropout": rng}, head_parts=head_chunk > 0)
            return HeadParts(*out, chunk=head_chunk) if head_chunk else out
        return ar_loss(logits_fn, batch, label_smoothing=label_smoothing, pool_rows=pool_rows,
                       max_predictions=max_predictions)
    return loss_fn


def length_loss_fn(model: MaskedLM, head: LengthPredictor) -> Callable:
    """Second stage: backbone (frozen, passed separately) on the prompt alone; only the head is trained."""
    def loss_fn(params, frozen, batch, rng):
        prompt_mask = (jnp.arange(batch["tokens"].shape[1])[None] < batch["prompt_length"][:, None])
        tokens = jnp.where(prompt_mask, batch["tokens"], model.cfg.pad_token_id)
        hidden = model.apply({"params": frozen}, tokens, attention_mask=prompt_mask.astype(jnp.int32),
                             method="encode")
        logits = head.apply({"params": params}, hidden, prompt_mask.astype(jnp.int32), deterministic=False,
                            rngs={"dropout": rng})
        loss, metrics = length_loss(logits, batch["response_length"])
        return loss, {"loss": loss, **metrics}
    return loss_fn


# --------------------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------------------
def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    grad_accum: int, seed: int, prng_impl: str | None = None) -> Callable:
    """(state, batch, frozen) -> (state, metrics). A non-finite loss or gradient skips the update and counts it.
    The step's random bits (noise, dropout) come from a `prng_impl` key (None: JAX's default implementation)."""

    def grads_of(params, frozen, batch, rng):
        if grad_accum == 1:
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, rng)
            return grads, metrics
        # Micro-batch i takes rows i, i + grad_accum, ...: the split keeps each device's rows on that device
        # (a [grad_accum, B / grad_accum] split would leave the sharded axis too short to stay sharded).
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape((-1, grad_accum) + x.shape[1:]), 0, 1), batch)

        def body(acc, i_mb):
            i, mb = i_mb
            (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, mb, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, acc, (g, m)), None
        zeros = jax.eval_shape(lambda: jax.value_and_grad(loss_fn, has_aux=True)(
            params, frozen, jax.tree.map(lambda x: x[0], micro), rng))
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zeros[1], zeros[0][1]))
        (g, m), _ = jax.lax.scan(body, init, (jnp.arange(grad_accum), micro))
        scale = lambda x: x / grad_accum if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return jax.tree.map(scale, g), jax.tree.map(scale, m)

    def step(state: State, batch: dict[str, jax.Array], frozen: Any) -> tuple[State, dict[str, jax.Array]]:
        rng = jax.random.fold_in(jax.random.key(seed, impl=prng_impl), state["step"])
        grads, metrics = grads_of(state["params"], frozen, batch, rng)
        gnorm = optax.global_norm(grads)
        ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(gnorm)
        updates, new_opt = tx.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        new_state = {"step": state["step"] + 1, "params": keep(new_params, state["params"]),
                     "opt_state": keep(new_opt, state["opt_state"]),
                     "bad_steps": jnp.where(ok, 0, state["bad_steps"] + 1)}
        metrics = {**metrics, "grad_norm": gnorm, "learning_rate": schedule(state["step"]),
                   "skipped": (~ok).astype(jnp.int32)}
        return new_state, metrics

    return step


# --------------------------------------------------------------------------------------------------------------
# FLOPs and MFU
# --------------------------------------------------------------------------------------------------------------
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "V100": 125.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0, "L4": 121.0, "A10": 125.0}


def body_matmul_params(cfg: ModelConfig) -> int:
    """Matmul parameters of the body (every layer's attention projections and MLP; no embeddings, norms or head):
    the family's count (`Family.body_matmul_params`, e.g. grouped-query attention and SwiGLU for decoder LLMs, the
    decoder layers' cross-attention for the encoder-decoder)."""
    return family_of(cfg).body_matmul_params(cfg)


def train_flops_per_sequence(cfg: ModelConfig, length: int, predicted: float) -> float:
    """Training FLOPs of one sequence = 3 x forward (forward + 2x backward).

    Forward: 2 * `body_matmul_params` * length + attention (QK^T and AV: 4 * length * keys * heads * head_dim,
    keys per query summed over the attention products from `Family.attention_keys`: ModernBERT's sliding layers see
    a band, the encoder-decoder's decoder layers attend twice) + the head at the `predicted` positions:
    2 * `Family.head_matmul_params` each (an encoder's MLM transform and output product; the output product alone
    for a decoder LLM and the encoder-decoder).
    """
    fam = family_of(cfg)
    attention = 4 * length * fam.attention_keys(cfg, length) * cfg.num_heads * cfg.head_dim
    fwd = 2 * body_matmul_params(cfg) * length + attention
    return 3.0 * (fwd + predicted * 2 * fam.head_matmul_params(cfg))


def train_flops_per_step(cfg: ModelConfig, length: int, rows: int, predicted: float) -> float:
    """Useful training FLOPs of a step over `rows` sequences of `length` with the head at `predicted` positions in
    all (the step's `num_masked`, not the head's padded capacity)."""
    body = train_flops_per_sequence(cfg, length, 0)
    head_per_position = train_flops_per_sequence(cfg, length, 1) - body
    return body * rows + head_per_position * predicted


def peak_flops_per_device(override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for name, tf in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return tf * 1e12
    return None
