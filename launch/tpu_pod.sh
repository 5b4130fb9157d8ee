#!/usr/bin/env bash
# Run dlm_jax.train on every worker of a TPU VM pod (jax discovers the pod topology itself).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
# Example (paper, Flan 2022 XXL): launch/tpu_pod.sh my-v4-128 us-central2-b configs/flan2022.py:xxl gs://bucket/flan2022_xxl
set -euo pipefail
TPU=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd ~/dlm_jax && git pull --ff-only && pip install -q -e '.[tpu]' &&
  python -m dlm_jax.train --config $CONFIG --workdir $WORKDIR --config.model.dtype=bfloat16 --config.compilation_cache_dir=$WORKDIR/xla_cache $*"
