"""Model FLOPs utilisation of the train step on the accelerator(s) at hand (the issue's GPU target: xlmr-large, bf16).

The step is the trainer's own: `dlm_jax.training.step.make_train_step` over the RDM loss (`diffusion_loss_fn`), AdamW with
clipping, the state and batch sharded on a `data` mesh over every local device and traced under
`parallel.mesh_rules`, exactly as `dlm_jax.training.setup` builds it. Parameters are random (only the speed is
measured); rows are full `<s> prompt response </s>` sequences (half prompt, half response, no padding), so every
token is real.

    python bench/mfu.py                                       # xlmr-large, bf16, batch 32 x 512, einsum attention
    python bench/mfu.py --batch 16,32,64 --attention einsum,cudnn --remat none,dots --out results.jsonl

MFU = useful training FLOPs per second / (peak per device x devices). Useful FLOPs of a step are
`train_flops_per_step(cfg, length, rows, masked)` (3 x forward: the body's matmuls, attention's two L^2 products,
the MLM head at the positions actually masked, read from the step's `num_masked`): padding of the head's static
capacity (`--head-capacity`) and recomputation under remat do not count. The peak is the datasheet dense 16-bit
figure for the device kind (`dlm_jax.training.step.PEAK_TFLOPS`, H100 SXM: 989 TFLOP/s) or `--peak-tflops`; the bf16
matrix-product rate measured here (8192^3) is printed beside it. XLA's own FLOP count of the compiled step is
printed beside the model count (on GPUs it leaves out the cuBLAS / cuDNN library calls, so there it is lower).
The peak-memory column is the process's peak so far (JAX cannot reset it): a row's own figure only for the first
row of a run.

`--profile DIR` writes a perfetto trace of 2 steps of the first row; `bench/trace_summary.py` sums it by kernel.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
for _arg in sys.argv:  # XLA reads its flags once, when the backend starts: set them before importing jax
    if _arg.startswith("--xla-flags="):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _arg.split("=", 1)[1]).strip()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from dlm_jax import parallel  # noqa: E402
from dlm_jax.diffusion import RDMConfig  # noqa: E402
from dlm_jax.model import get_config, model_for  # noqa: E402
from dlm_jax.model.axes import DEFAULT_RULES  # noqa: E402
from dlm_jax.training.step import (diffusion_loss_fn, make_train_step, peak_flops_per_device,  # noqa: E402
                          train_flops_per_step)


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 matrix-product rate of one device (random operands, median of `repeats`)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times)) / 1e12


def check_attention(name: str, impl: str, dtype: str) -> dict[str, float]:
    """Relative errors ||logits - ref|| / ||ref|| at real tokens of one right-padded batch (same params, no dropout):
    `impl` and `einsum` in `dtype`, each against the einsum path in float32."""
    cfg = get_config(name, dtype=dtype, hidden_dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(1)
    length = min(128, cfg.max_length)
    ids = rng.integers(5, cfg.vocab_size - 1, (4, length)).astype(np.int32)
    for i, frac in enumerate((1.0, 0.8, 0.5, 0.1)):
        ids[i, max(2, int(frac * length)):] = cfg.pad_token_id
    ids = jnp.asarray(ids)
    params = jax.jit(model_for(cfg).init)(jax.random.key(0), ids)["params"]
    real = (ids != cfg.pad_token_id)[..., None]

    def logits(c):
        return jax.jit(model_for(c).apply)({"params": params}, ids)
    ref = logits(cfg.replace(dtype="float32"))
    err = lambda out: float(jnp.linalg.norm(jnp.where(real, out - ref, 0.0))  # noqa: E731
                            / jnp.linalg.norm(jnp.where(real, ref, 0.0)))
    return {impl: err(logits(cfg.replace(attention=impl))), "einsum": err(logits(cfg))}


def make_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Full rows `<s> prompt response </s>` of random ids (XLM-R specials: <s>=0, pad=1, </s>=2)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab - 1, (batch, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 0, 2
    resp = np.zeros((batch, length), bool)
    resp[:, 1 + (length - 2) // 2:] = True
    return {"tokens": tokens, "response_mask": resp, "padding_mask": np.ones((batch, length), np.int32)}


def run_one(name: str, batch: int, length: int, grad_accum: int, remat: str, attention: str, dropout: float,
            head_capacity: float, steps: int, dtype: str, profile: str = "", head_pad: int = 1) -> dict:
    devices = jax.device_count()
    cfg = get_config(name, dtype=dtype, remat=remat, attention=attention, hidden_dropout=dropout,
                     attention_dropout=0.0 if attention != "einsum" else dropout, head_vocab_multiple=head_pad)
    model = model_for(cfg)  # the encoder's MaskedLM, or the decoder LLM's DecoderLM (--model qwen2.5-0.5b)
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    rules = DEFAULT_RULES
    ids = jnp.zeros((1, 8), jnp.int32)
    params, _ = parallel.sharded_init(lambda k: model.init(k, ids)["params"], mesh, rules, jax.random.key(0))
    micro_rows = batch // grad_accum // devices  # one head pool per data shard's micro-batch (as pool_rows=0)
    resp_len = length - 1 - (length - 2) // 2
    cap = int(math.ceil(head_capacity * micro_rows * resp_len))
    rdm = RDMConfig(mask_id=cfg.vocab_size - 1, num_timesteps=50, max_predictions=cap, pool_rows=micro_rows)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-5, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01))
    opt_state = parallel.init_optimizer_state(tx, params, mesh)
    state = parallel.replicate_unplaced({"step": jnp.zeros((), jnp.int32), "params": params,
                                         "opt_state": opt_state, "bad_steps": jnp.zeros((), jnp.int32)}, mesh)
    step_fn = make_train_step(diffusion_loss_fn(model, rdm), tx, lambda s: 1e-5, grad_accum=grad_accum, seed=0)
    jitted = parallel.jit_train_step(step_fn, state, mesh, rules)
    host = make_batch(batch, length, cfg.vocab_size)
    with parallel.mesh_rules(mesh, rules):
        gb = parallel.global_batch(host, mesh, rules)
        t0 = time.perf_counter()
        compiled = jitted.lower(state, gb, None).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        for _ in range(2):  # warm-up
            state, m = compiled(state, gb, None)
        jax.block_until_ready(m["loss"])
        times, masked, dropped = [], [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, m = compiled(state, gb, None)
            jax.block_until_ready(m["loss"])
            times.append(time.perf_counter() - t0)
            masked.append(float(m["num_masked"]))
            dropped.append(float(m["num_dropped"]))
        if profile:
            with jax.profiler.trace(profile, create_perfetto_trace=True):
                for _ in range(2):
                    state, m = compiled(state, gb, None)
                jax.block_until_ready(m["loss"])
    step_s = float(np.median(times))
    # num_masked is an integer count: summed over the micro-batches and the devices, i.e. the whole global batch.
    masked_per_seq = float(np.mean(masked)) / batch
    flops = train_flops_per_step(cfg, length, batch, masked_per_seq * batch)
    peak = peak_flops_per_device(None)
    mem = jax.devices()[0].memory_stats() or {}
    return dict(model=name, devices=devices, device_kind=jax.devices()[0].device_kind, batch=batch, length=length,
                grad_accum=grad_accum, remat=remat, attention=attention, dropout=dropout, dtype=dtype,
                head_capacity=cap, head_pad=head_pad, masked_per_seq=masked_per_seq, dropped=float(np.mean(dropped)),
                compile_s=compile_s, step_s=step_s, step_s_min=float(np.min(times)),
                tokens_per_s=batch * length / step_s, tflops_per_s=flops / step_s / 1e12,
                mfu=(flops / step_s / (peak * devices)) if peak else None,
                xla_tflops_per_step=xla_flops / 1e12, model_tflops_per_step=flops / 1e12,
                peak_gib=mem.get("peak_bytes_in_use", 0) / 2 ** 30, loss=float(m["loss"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="xlmr-large")
    ap.add_argument("--batch", default="32", help="global sequences per step, comma-separated grid")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--remat", default="none", help="none,dots,full grid")
    ap.add_argument("--attention", default="einsum", help="einsum,xla,cudnn grid")
    ap.add_argument("--dropout", type=float, default=0.1, help="hidden dropout (attention dropout only for einsum)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--head-capacity", type=float, default=0.7,
                    help="head positions per micro-batch as a fraction of its response tokens (mean masked: ~0.51)")
    ap.add_argument("--head-pad", type=int, default=1, help="model.head_vocab_multiple: the tied table padded to a "
                    "multiple of this many rows inside the output product (128 on GPUs)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prng", default="threefry2x32", help="jax_default_prng_impl for dropout: threefry2x32, "
                    "rbg or unsafe_rbg")
    ap.add_argument("--variants", default="", help="';'-separated rows of 'key=value,...' overriding batch, "
                    "attention, remat, dropout, prng, head_capacity, head_pad (replaces the grid), e.g. "
                    "'attention=cudnn;dropout=0'")
    ap.add_argument("--check-attention", default="", help="an implementation (xla, cudnn) to compare with einsum")
    ap.add_argument("--check-model", default="xlmr-base")
    ap.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for this run, written with '=', e.g. "
                    "--xla-flags=--xla_gpu_enable_triton_gemm=false (applied before jax starts)")
    ap.add_argument("--profile", default="", help="write a perfetto trace of 2 steps of the first row to this dir")
    ap.add_argument("--out", default="", help="append each result as a JSON line here")
    args = ap.parse_args()

    kind = jax.devices()[0].device_kind
    peak = peak_flops_per_device(None)
    measured = f"{matmul_tflops():.0f}" if jax.default_backend() != "cpu" else "not measured on CPU"
    print(f"# {jax.device_count()} x {kind}; jax {jax.__version__}; datasheet peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; measured bf16 8192^3 matmul {measured} TFLOP/s",
          flush=True)
    if args.check_attention:
        try:
            errs = check_attention(args.check_model, args.check_attention, args.dtype)
            print(f"# {args.check_model} {args.dtype} logits vs float32 einsum, relative error at real tokens: "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
        except Exception as e:
            print(f"# attention check failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
    print("| model | batch x length | attention | remat | dropout | prng | step s | tokens/s | TFLOP/s | MFU | "
          "XLA TFLOP / model TFLOP per step | process peak GiB | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    base = dict(batch=args.batch.split(",")[0], attention=args.attention.split(",")[0],
                remat=args.remat.split(",")[0], dropout=args.dropout, prng=args.prng, head_capacity=args.head_capacity,
                head_pad=args.head_pad)
    if args.variants:
        rows = [{**base, **dict(kv.split("=", 1) for kv in v.split(",") if kv)} for v in args.variants.split(";")]
    else:
        rows = [dict(base, batch=b, attention=a, remat=r) for b, a, r in itertools.product(
            args.batch.split(","), args.attention.split(","), args.remat.split(","))]
    for i, row in enumerate(rows):
        b, att, remat = int(row["batch"]), row["attention"], row["remat"]
        try:
            jax.config.update("jax_default_prng_impl", row["prng"])
            r = run_one(args.model, b, args.length, args.grad_accum, remat, att, float(row["dropout"]),
                        float(row["head_capacity"]), args.steps, args.dtype,
                        profile=args.profile if i == 0 else "", head_pad=int(row["head_pad"]))
            r["prng"] = row["prng"]
        except Exception as e:  # one failing variant (e.g. out of memory) must not end the grid
            print(f"| {args.model} | {b} x {args.length} | {att} | {remat} | {row['dropout']} | {row['prng']} | "
                  f"failed: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200]} |", flush=True)
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['model']} | {b} x {args.length} (ga {r['grad_accum']}, head {r['head_capacity']}, "
              f"pad {r['head_pad']}) | {att} | {remat} | {r['dropout']} | {r['prng']} | {r['step_s']:.4f} | "
              f"{r['tokens_per_s']:,.0f} | {r['tflops_per_s']:.0f} | {mfu} | {r['xla_tflops_per_step']:.1f} / "
              f"{r['model_tflops_per_step']:.1f} | {r['peak_gib']:.1f} | {r['compile_s']:.0f} |", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
