"""Ahead-of-time compile of a full train step on a simulated CPU mesh; per-device memory from XLA's analysis.

Nothing is allocated: parameters, optimizer state and the batch are abstract (`jax.ShapeDtypeStruct` with their
shardings); the step is the trainer's own (`make_train_step` + `diffusion_loss_fn`: RDM loss, AdamW, clipping,
gradient accumulation), lowered and compiled for one device of the mesh, and `compiled.memory_analysis()` gives
the sizes of that device's arguments, outputs, temporaries and aliased (donated) buffers.

    python bench/compile_memory.py --devices 8                     # xlmr-xxl, 8-way FSDP
    python bench/compile_memory.py --devices 64 --grad-accum 4     # 64-way FSDP, micro-batch 512
    python bench/compile_memory.py --model xlmr-base --devices 8 --batch 64 --remat none --no-scan
    python bench/compile_memory.py --mode sample --devices 8 --batch 64      # the sampler's jitted loop, xxl
    python bench/compile_memory.py --model modernbert-large --length 8192 --batch 8 --no-scan \
        --max-predictions 1024 --attention xla                     # ModernBERT-large, 8k tokens, 8-way FSDP

Defaults are the paper's XXL instruction-tuning run (configs/flan2022.py:xxl): 2,048 sequences per step of up
to 512 tokens, bf16 compute with fp32 params and Adam state, full remat, scanned layers. Peak per device is
estimated as arguments + outputs - aliased + temporaries (donated state is reused in place).

TPU pods without hardware (`pip install "jax[tpu]"`, as MaxText's train_compile.py): `--tpu v5p:4x4x4` compiles for
that topology's chips with the TPU compiler itself (`jax.experimental.topologies`) and reports per-chip HBM against
the chip's capacity, the compiler's FLOPs and bytes, and a roofline step time (max of FLOPs / peak and bytes / HBM
bandwidth, per chip):

    TPU_SKIP_MDS_QUERY=1 python bench/compile_memory.py --tpu v5p:4x4x4 --model xlmr-xxl --batch 2048
    TPU_SKIP_MDS_QUERY=1 python bench/compile_memory.py --tpu v4:4x4x4 --model xlmr-large --batch 512 --remat none

Caveat: without --tpu this is the CPU backend's buffer assignment. GPU / TPU compilers fuse and schedule differently, so treat
the figure as an estimate within some tens of percent, mainly useful to compare settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="xlmr-xxl")
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices (all on the fsdp axis unless "
                                                           "--tensor is given)")
    ap.add_argument("--tensor", type=int, default=1, help="tensor-parallel size (the rest is fsdp)")
    ap.add_argument("--batch", type=int, default=2048, help="global batch in sequences (paper Table 4 XXL: 2048)")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--max-predictions", type=int, default=0,
                    help="positions per sequence where the vocab head is evaluated (0: the whole length)")
    ap.add_argument("--remat", default="full", help="none | full | dots | minimal")
    ap.add_argument("--no-scan", action="store_true", help="unrolled layers instead of nn.scan")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--param-dtype", default="float32", help="parameter storage (bfloat16 halves inference memory)")
    ap.add_argument("--budget-gib", type=float, default=16.0)
    ap.add_argument("--mode", choices=["train", "sample"], default="train",
                    help="sample: the inference sampler (inference.Generator's jitted fori_loop), params only")
    ap.add_argument("--attention", default="einsum", help="einsum | xla | cudnn (model.attention; einsum and the "
                    "CPU's xla path hold [heads, L, L] scores, cudnn's flash kernel does not)")
    ap.add_argument("--head-chunk", type=int, default=0, help="diffusion.head_chunk: the head fused with the loss "
                    "in chunks of this many vocabulary rows (0: whole logits)")
    ap.add_argument("--coupled", action="store_true", help="coupled masks (the paper configs): every row twice")
    ap.add_argument("--tpu", default="", help="compile for a TPU topology (e.g. v4:4x4x4, v5p:4x4x4, v5e:16x16, "
                    "v6e:4x4) instead of simulated CPU devices; needs `pip install \"jax[tpu]\"`")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps (--mode sample)")
    ap.add_argument("--response", type=int, default=256, help="response positions per row (--mode sample)")
    return ap.parse_args()


def sample_memory(args, mesh, model, params, report) -> None:
    """AOT-compiles the sampler exactly as `inference.Generator` jits it (params an argument, the head at the
    response positions, S steps in a fori_loop) for a batch of `args.batch` rows of `args.length` tokens."""
    import jax
    import jax.numpy as jnp

    from dlm_jax import parallel
    from dlm_jax.diffusion import SamplerConfig, sample
    from dlm_jax.diffusion.fused_head import HeadParts
    from dlm_jax.model.axes import DEFAULT_RULES

    config = SamplerConfig(steps=args.steps)
    bsh = parallel.batch_sharding(mesh, DEFAULT_RULES, ndim=2)
    B, L = args.batch, args.length

    def run(params, tokens, response, attn, rng):
        def logits_fn(t, positions):
            if not args.head_chunk:
                return model.apply({"params": params}, t, attention_mask=attn, output_positions=positions)
            return HeadParts(*model.apply({"params": params}, t, attention_mask=attn, output_positions=positions,
                                          head_parts=True), chunk=args.head_chunk)
        return sample(logits_fn, tokens, response, rng, config, mask_id=model.cfg.vocab_size - 1,
                      max_response=args.response)

    abstract = (params, jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=bsh),
                jax.ShapeDtypeStruct((B, L), jnp.bool_, sharding=bsh),
                jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=bsh), jax.random.key(0))
    print(f"# sampler: batch {B} x {L} tokens, {args.response} response positions per row, S={args.steps}, "
          f"params only (no optimizer state), head_chunk={args.head_chunk}", flush=True)
    t0 = time.perf_counter()
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        compiled = jax.jit(run).lower(*abstract).compile()
    from dlm_jax.training.step import train_flops_per_sequence
    forward = train_flops_per_sequence(model.cfg, L, args.response) / 3  # one model call with the head at the responses
    report(compiled, time.perf_counter() - t0, sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)),
           args.steps * B * forward)


# per chip: HBM GiB, bf16 peak TFLOP/s, HBM TB/s (Google Cloud TPU documentation)
TPU_CHIPS = {"v4": (32, 275, 1.2), "v5p": (95, 459, 2.76), "v5e": (16, 197, 0.82), "v6e": (32, 918, 1.64)}


def tpu_devices(topology: str) -> list:
    """The chips of a TPU topology ("v5p:4x4x4"), compiled for on this host (no TPU needed)."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to lock
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v4-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    try:
        from jax.experimental import topologies
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as e:  # libtpu missing, unknown topology
        raise SystemExit(f"error: cannot compile for TPU topology {topology!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]}); `pip install \"jax[tpu]\"` and name a topology like "
                         "v5p:4x4x4") from None


def report_tpu(args, compiled, model_flops: float) -> None:
    """Per-chip HBM against capacity, the compiler's FLOPs / bytes, and the roofline step time from the model's
    FLOPs (XLA's cost analysis counts a scanned layer loop's body once, not once per layer: with scanned layers its
    FLOPs are a lower bound, so the roofline uses the analytic count, `training.step.train_flops_per_step`)."""
    hbm, tflops, _ = tpu_device_budget(args)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    per_chip = model_flops / args.devices
    t_compute = per_chip / (tflops * 1e12)
    sampling = args.mode == "sample"  # one sampler call: S model calls; its tokens are the generated ones
    unit, tokens = ("sampler call", args.batch * args.response) if sampling else ("step", args.batch * args.length)
    print(f"TPU {args.tpu}: {hbm:g} GiB HBM, {tflops:g} bf16 TFLOP/s per device; compiler: {flops / 1e12:.2f} TFLOP, "
          f"{nbytes / 1e9:.1f} GB per device{' (scan body once)' if not args.no_scan else ''}; model: "
          f"{per_chip / 1e12:.1f} TFLOP per device per {unit} -> roofline {unit} >= {t_compute:.3f} s at 100% MFU "
          f"({tokens / max(t_compute, 1e-9):,.0f} {'generated ' if sampling else ''}tokens/s)")


def tpu_device_budget(args) -> tuple[float, float, float]:
    """HBM GiB, peak TFLOP/s and HBM TB/s per JAX device of the topology (a v4 chip shows as 2 devices)."""
    kind, dims = args.tpu.split(":")
    chips = int(np.prod([int(d) for d in dims.split("x")]))
    share = chips / args.devices
    hbm, tflops, tbs = TPU_CHIPS[kind]
    return hbm * share, tflops * share, tbs * share


def report_memory(args, compiled, seconds: float, resident_bytes: float, model_flops: float = 0.0) -> None:
    if args.tpu:
        args.budget_gib = tpu_device_budget(args)[0]
        report_tpu(args, compiled, model_flops)
    m = compiled.memory_analysis()
    gib = 1024 ** 3
    arg, out, tmp, alias = (m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                            m.alias_size_in_bytes)
    peak = arg + out - alias + tmp
    print(f"lower + compile {seconds:.1f}s")
    print(f"per device: arguments {arg / gib:.2f} GiB (params / state ~{resident_bytes / args.devices / gib:.2f} "
          f"GiB), outputs {out / gib:.2f} GiB, aliased {alias / gib:.2f} GiB, temporaries {tmp / gib:.2f} GiB")
    verdict = "fits" if peak <= args.budget_gib * gib else "does NOT fit"
    print(f"peak per device ~ {peak / gib:.2f} GiB -> {verdict} in {args.budget_gib:g} GiB")


def main() -> None:
    args = _parse()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from dlm_jax import parallel
    from dlm_jax.model import get_config, model_for
    from dlm_jax.model.axes import DEFAULT_RULES

    if args.devices % args.tensor:
        raise SystemExit(f"--devices {args.devices} is not divisible by --tensor {args.tensor}")
    devices = None
    if args.tpu:
        devices = tpu_devices(args.tpu)
        args.devices = len(devices)
    mesh = parallel.make_mesh({"data": 1, "fsdp": args.devices // args.tensor, "tensor": args.tensor},
                              devices=devices)
    cfg = get_config(args.model, dtype=args.dtype, remat=args.remat, scan_layers=not args.no_scan,
                     param_dtype=args.param_dtype, attention=args.attention, attention_dropout=0.0)
    model = model_for(cfg)
    micro = args.batch // args.grad_accum
    dp = args.devices // args.tensor
    if args.batch % args.grad_accum or micro % dp:
        raise SystemExit(f"batch {args.batch} / grad_accum {args.grad_accum} = {micro} must divide by {dp}")

    boxed = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
    pshard = parallel.logical_to_shardings(boxed, mesh, DEFAULT_RULES)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), pshard)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    where = f"TPU {args.tpu} devices" if args.tpu else "simulated CPU devices"
    header = (f"# {args.model}: {n_params / 1e9:.2f}B params; mesh fsdp={dp} x tensor={args.tensor} "
              f"({args.devices} {where})")
    report = lambda c, s, b, f: report_memory(args, c, s, b, f)  # noqa: E731
    if args.mode == "sample":
        print(f"{header}; dtype={args.dtype}", flush=True)
        sample_memory(args, mesh, model, params, report)
    else:
        train_memory(args, mesh, model, params, header, report)


def train_memory(args, mesh, model, params, header: str, report) -> None:
    """AOT-compiles the trainer's own step (optimizer state as the trainer shards it) for `args.batch` rows of
    `args.length` tokens; a TPU compiler's refusal to fit is reported, not raised."""
    import jax
    import jax.numpy as jnp

    from dlm_jax import parallel
    from dlm_jax.config import base_config, parse
    from dlm_jax.diffusion import RDMConfig
    from dlm_jax.model.axes import DEFAULT_RULES as rules
    from dlm_jax.training.step import build_optimizer, diffusion_loss_fn, make_train_step, train_flops_per_step

    opt = parse(base_config(), num_devices=1, num_processes=1).optimizer
    tx, schedule = build_optimizer(dataclasses.replace(opt, grad_accum=args.grad_accum), 4000)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_shard = parallel.optimizer_state_shardings(tx, params, mesh)  # as the trainer
    opt_abs = jax.eval_shape(tx.init, params)
    opt_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), opt_abs, opt_shard)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    state = {"step": scalar, "params": params, "opt_state": opt_state, "bad_steps": scalar}

    bsh1 = parallel.batch_sharding(mesh, rules, ndim=1)
    B, L = args.batch, args.length
    batch = {"tokens": jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=bsh1),
             "response_mask": jax.ShapeDtypeStruct((B, L), jnp.bool_, sharding=bsh1),
             "padding_mask": jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=bsh1),
             "prompt_length": jax.ShapeDtypeStruct((B,), jnp.int32, sharding=bsh1),
             "response_length": jax.ShapeDtypeStruct((B,), jnp.int32, sharding=bsh1)}
    rdm = RDMConfig(mask_id=model.cfg.vocab_size - 1, max_predictions=args.max_predictions or None,
                    coupled=args.coupled, head_chunk=args.head_chunk)
    step = make_train_step(diffusion_loss_fn(model, rdm), tx, schedule, grad_accum=args.grad_accum, seed=0)

    micro, dp = B // args.grad_accum, args.devices // args.tensor
    print(f"{header}; global batch {B} x {L} tokens, grad_accum {args.grad_accum} "
          f"(micro-batch {micro}, {micro // dp} sequences per device); remat={args.remat}, "
          f"scan={not args.no_scan}, dtype={args.dtype}, max_predictions={args.max_predictions or L}, "
          f"coupled={args.coupled}", flush=True)
    t0 = time.perf_counter()
    with parallel.mesh_rules(mesh, rules):
        lowered = parallel.jit_train_step(step, state, mesh, rules).lower(state, batch, None)
        t_lower = time.perf_counter() - t0
        try:
            compiled = lowered.compile()
        except Exception as e:  # the TPU compiler refuses what does not fit a device's HBM
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            print(f"does NOT fit: the compiler says {str(e).splitlines()[0][:300]}")
            return
    t_compile = time.perf_counter() - t0 - t_lower
    print(f"lower {t_lower:.1f}s, compile {t_compile:.1f}s")
    rows = 2 * B if args.coupled else B  # coupled masks: every row is trained twice
    flops = train_flops_per_step(model.cfg, L, rows, rows * (args.max_predictions or L) / 2)  # ~half is masked
    report(compiled, t_lower + t_compile, sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)), flops)


if __name__ == "__main__":
    main()
