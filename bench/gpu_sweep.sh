#!/usr/bin/env bash
# The next GPU measurements of the xlmr-large train step (issue 5's 45% MFU target), sized for one 10-minute call
# of a rented GPU: each run has its own time limit and writes unbuffered to its own file, so a run cut short
# still leaves every row it finished.
#
# Usage: bash bench/gpu_sweep.sh OUTDIR [SECONDS_PER_RUN]   (PYTHON=python3 where `python` is not the one to use)
#   (on a CPU: MODEL=tiny-test ATTENTION=xla LENGTH=64 MB_MODEL=modernbert-tiny-test MB_LENGTH=64)
#   OUTDIR/<name>.txt   the full output of each run;  OUTDIR/results.jsonl   one JSON object per finished row
#
# Runs (cuDNN attention, dropout 0, batch 64 x 512, head capacity 0.6: the best row measured so far, 38.0%):
#   base      XLA's Triton GEMM off (as the GPU launch scripts set it)
#             + the same step with model.head_vocab_multiple=128 (aligned output product) in the same process
#   cublaslt  + --xla_gpu_enable_cublaslt=true (bias-gradient / bias epilogues fused into cuBLASLt products)
#   modernbert  ModernBERT-large, one 8,192-token row (cuDNN flash attention with the sliding window): peak memory
#             and MFU of the long-context train step (issue 15's unmeasured GPU figure)
set -uo pipefail
OUT=${1:?usage: bench/gpu_sweep.sh OUTDIR [SECONDS_PER_RUN]}
LIMIT=${2:-240}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
COMMON=(--model "${MODEL:-xlmr-large}" --attention "${ATTENTION:-cudnn}" --length "${LENGTH:-512}" --dropout 0 --steps 5 --out "$OUT/results.jsonl")
NOTRITON=--xla-flags=--xla_gpu_enable_triton_gemm=false

run() {  # name, then the arguments of bench/mfu.py
  local name=$1; shift
  echo "## $name: python bench/mfu.py $*" | tee "$OUT/$name.txt"
  timeout "$LIMIT" "${PYTHON:-python}" bench/mfu.py "$@" >> "$OUT/$name.txt" 2>&1
  echo "## $name: exit $?" >> "$OUT/$name.txt"
}

run base "${COMMON[@]}" "$NOTRITON" --variants "batch=64,head_capacity=0.6;batch=64,head_capacity=0.6,head_pad=128"
run cublaslt "${COMMON[@]}" "$NOTRITON" --xla-flags=--xla_gpu_enable_cublaslt=true \
  --variants "batch=64,head_capacity=0.6,head_pad=128"
run modernbert --model "${MB_MODEL:-modernbert-large}" --attention "${ATTENTION:-cudnn}" --length "${MB_LENGTH:-8192}" \
  --dropout 0 --steps 3 --out "$OUT/results.jsonl" "$NOTRITON" --variants "batch=1,head_capacity=0.6,head_pad=128"
grep -h '^| \|^## \|^# ' "$OUT"/*.txt
