#!/usr/bin/env bash
# The recipe levers of the pretrained demo, one variable at a time at the demo's step budget (issue 41 item 2):
# each lever trains `configs/demo.py` (bundled BERT + RDM, 1,500 steps of 64 packed rows, seed 0) with one flag
# changed, then evaluates the test split as the demo does (oracle length, S = 10, sacreBLEU 13a lowercased).
#   bash bench/levers.sh [OUT] [LEVER...]     (defaults: runs/levers, every lever below)
# Prints one line per lever: name, test BLEU, final loss, seconds per step (median of the logged steps), flags;
# writes OUT/results.tsv. Decoding levers (no training) run on OUT/base: the same checkpoint, other sampler flags.
set -euo pipefail
OUT=${1:-runs/levers}; shift || true
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
# The base is the demo as it was when the table was measured: without label smoothing (configs/demo.py has trained
# with 0.1 since, the lever that won), so every row below is one change from the same base.
B="--config.diffusion.label_smoothing=0.0"
declare -A TRAIN=(
  [base]="$B"
  [label_smoothing_0.1]="--config.diffusion.label_smoothing=0.1"
  [weighting_constant]="$B --config.diffusion.weighting=constant"
  [weighting_reciprocal]="$B --config.diffusion.weighting=reciprocal"
  [lr_4e-3]="$B --config.optimizer.lr=4e-3"
  [lr_1e-3]="$B --config.optimizer.lr=1e-3"
  [dropout_0.1]="$B --config.model.dropout=0.1"
  [ls_0.1_dropout_0.1]="--config.diffusion.label_smoothing=0.1 --config.model.dropout=0.1"
  [ls_0.1_lr_4e-3]="--config.diffusion.label_smoothing=0.1 --config.optimizer.lr=4e-3"
  [ls_0.2]="--config.diffusion.label_smoothing=0.2"
  [base_seed1]="$B --config.seed=1"
  [ls_0.1_seed1]="--config.diffusion.label_smoothing=0.1 --config.seed=1"
  [ls_0.1_weighting_constant]="--config.diffusion.label_smoothing=0.1 --config.diffusion.weighting=constant"
)
declare -A DECODE=(
  [steps_20]="--config.sampler.steps=20"
  [steps_5]="--config.sampler.steps=5"
  [reparam_cond]="--config.sampler.strategy=reparam-cond-deterministic-cosine"
  [mask_predict]="--config.sampler.strategy=mask-predict"
  [adaptive_0.9]="--config.sampler.strategy=adaptive --config.sampler.threshold=0.9"
)
ORDER=(base label_smoothing_0.1 weighting_constant weighting_reciprocal lr_4e-3 lr_1e-3 dropout_0.1
       steps_20 steps_5 reparam_cond mask_predict adaptive_0.9)
report() {  # name workdir eval_json flags
  "$PY" - "$@" <<'PYEOF'
import json, statistics, sys
name, wd, ev, flags = sys.argv[1:]
r = json.load(open(ev))
rows = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")]
loss = [x["loss"] for x in rows if "loss" in x][-1]
st = statistics.median(x["step_time_s"] for x in rows if "step_time_s" in x)
print(f"{name}\t{r['metrics']['bleu']:.2f}\t{loss:.4f}\t{st:.3f}\t{r['wall_s']:.0f}\t{flags or '(none)'}")
PYEOF
}
for name in "${@:-${ORDER[@]}}"; do
  if [[ -v TRAIN[$name] ]]; then
    wd="$OUT/$name"; flags=${TRAIN[$name]}
    if [ ! -f "$wd.json" ]; then
      # shellcheck disable=SC2086
      "$PY" -m dlm_jax.train --config configs/demo.py --workdir "$wd" $flags > "$wd.train.log" 2>&1
      "$PY" -m dlm_jax.evaluate --workdir "$wd" --tasks ding_de_en --oracle_length --config.sampler.steps=10 \
        > "$wd.eval.log" 2>&1
      cp "$wd/eval/ding_de_en.json" "$wd.json"
    fi
    report "$name" "$wd" "$wd.json" "$flags"
  else
    wd="$OUT/base"; flags=${DECODE[$name]}; out="$OUT/decode_$name"
    if [ ! -f "$out.json" ]; then  # evaluate writes OUT/base/eval/ding_de_en.json: kept per lever as $out.json
      # shellcheck disable=SC2086
      steps="--config.sampler.steps=10"; [[ $flags == *sampler.steps* ]] && steps=""
      # shellcheck disable=SC2086
      "$PY" -m dlm_jax.evaluate --workdir "$wd" --tasks ding_de_en --oracle_length $steps $flags \
        > "$out.eval.log" 2>&1
      cp "$wd/eval/ding_de_en.json" "$out.json"
    fi
    report "$name" "$wd" "$out.json" "$flags"
  fi
done | tee -a "$OUT/results.tsv"
