"""Forward + backward time of the tied MLM head and its cross-entropy alone, the largest non-body cost of the step.

The vocab-sized head of xlmr-large (250,002 x 1,024 tied table, fp32 parameters, bf16 compute) at N positions:
logits = LN(gelu(dense(h))) @ table^T + bias, then the per-position CE, differentiated with respect to the hidden
states, the table and the bias (what the train step does). Variants:

- `autodiff-f32`: the earlier recipe: float32 logits and an autodiff CE (logsumexp - target logit).
- `custom-f32`: `dlm_jax`'s hand-written CE gradient (`cross_entropy_and_hits`) on float32 logits.
- `custom-bf16`: the same on logits in the compute dtype, as the RDM loss now takes them.
- `fused-bf16`: the head fused with the CE in chunks of 8,192 vocabulary rows (`diffusion.head_chunk`,
  dlm_jax/diffusion/fused_head.py): no [N, vocab] logits in the forward or the backward pass.
- `custom-bf16-pad`: as `custom-bf16`, with `model.head_vocab_multiple=128` (the table padded to a multiple of
  128 rows inside the product, the logits sliced back: 250,002 rows make the logits' row stride not 16-byte
  aligned).

    python bench/head.py                                  # xlmr-large head, 5,734 positions (batch 32, capacity 0.7)
    python bench/head.py --positions 5734,11469 --xla-flags=--xla_gpu_enable_triton_gemm=false

TFLOP/s counts the three vocab-sized products (6 N V D) and the dense layer; the rest of the head is
elementwise work.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _arg in sys.argv:  # XLA reads its flags once, when the backend starts
    if _arg.startswith("--xla-flags="):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _arg.split("=", 1)[1]).strip()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dlm_jax.diffusion.fused_head import HeadParts  # noqa: E402
from dlm_jax.diffusion.objective import cross_entropy_and_hits  # noqa: E402
from dlm_jax.model import MaskedLM, get_config  # noqa: E402

VARIANTS = ("autodiff-f32", "custom-f32", "custom-bf16", "custom-bf16-pad", "fused-bf16")


def autodiff_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The earlier CE, differentiated by JAX: logsumexp - iota-selected target logit on float32 logits."""
    x = logits.astype(jnp.float32)
    top = jax.lax.stop_gradient(x.max(-1))
    lse = jnp.log(jnp.exp(x - top[..., None]).sum(-1)) + top
    return lse - jnp.where(jnp.arange(x.shape[-1]) == targets[..., None], x, 0.0).sum(-1)


def head_step(model: MaskedLM, variant: str):
    """(params, hidden, targets) -> (loss, grads wrt params and hidden) of the head + CE."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")

    if variant == "custom-bf16-pad":
        model = MaskedLM(model.cfg.replace(head_vocab_multiple=128))
    dtype = jnp.float32 if variant.endswith("f32") else None

    def loss(params, hidden, targets):
        if variant == "fused-bf16":  # the head fused with the CE, 8,192 vocabulary rows at a time
            parts = HeadParts(*model.apply({"params": params}, hidden, method=MaskedLM.head_parts), chunk=8192)
            return cross_entropy_and_hits(parts, targets)[0].mean()
        logits = model.apply({"params": params}, hidden, logits_dtype=dtype, method=MaskedLM.logits_from_hidden)
        ce = autodiff_cross_entropy(logits, targets) if variant == "autodiff-f32" else \
            cross_entropy_and_hits(logits, targets)[0]
        return ce.mean()
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def run(name: str, positions: int, variant: str, repeats: int) -> dict:
    cfg = get_config(name, dtype="bfloat16")
    model = MaskedLM(cfg)
    k_p, k_h, k_t = jax.random.split(jax.random.key(0), 3)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(model.init)(k_p, ids)["params"]
    head = {k: params[k] for k in ("word", "head_dense", "head_ln", "head_bias")}
    hidden = jax.random.normal(k_h, (1, positions, cfg.hidden_size), jnp.bfloat16)
    targets = jax.random.randint(k_t, (1, positions), 0, cfg.vocab_size)
    f = head_step(model, variant)
    t0 = time.perf_counter()
    compiled = f.lower(head, hidden, targets).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(head, hidden, targets)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = compiled(head, hidden, targets)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    h, v = cfg.hidden_size, cfg.vocab_size
    flops = 6.0 * positions * (v * h + h * h)
    return dict(model=name, positions=positions, variant=variant, ms=1e3 * s, tflops=flops / s / 1e12,
                loss=float(out[0]), compile_s=compile_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="xlmr-large")
    ap.add_argument("--positions", default="5734", help="comma-separated head positions (batch 32 x 256 response "
                    "tokens x capacity 0.7 = 5,734)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--xla-flags", default="", help="extra XLA_FLAGS, written with '='")
    args = ap.parse_args()
    print(f"# {jax.devices()[0].device_kind}; jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| model | positions | variant | ms (fwd+bwd) | TFLOP/s | loss | compile s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for n in (int(p) for p in args.positions.split(",")):
        for variant in args.variants.split(","):
            r = run(args.model, n, variant, args.repeats)
            print(f"| {r['model']} | {n} | {variant} | {r['ms']:.2f} | {r['tflops']:.0f} | {r['loss']:.4f} | "
                  f"{r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
