#!/usr/bin/env bash
# All GPUs of one machine in one process (jax sees them all); the mesh comes from config (default: data-parallel).
# Usage: launch/local_multi_gpu.sh CONFIG WORKDIR [--config.key=value ...]
# Example: launch/local_multi_gpu.sh configs/iwslt14.py:base runs/iwslt14_base --config.mesh.shape.fsdp=2
set -euo pipefail
CONFIG=$1; WORKDIR=$2; shift 2
# cuBLAS instead of XLA's Triton GEMM fusions: xlmr-large step on an H100 0.1313 -> 0.1165 s (bench/RESULTS.md).
export XLA_FLAGS="--xla_gpu_enable_triton_gemm=false ${XLA_FLAGS:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m dlm_jax.train --config "$CONFIG" --workdir "$WORKDIR" --config.model.dtype=bfloat16 \
  --config.compilation_cache_dir="$WORKDIR/xla_cache" "$@"
