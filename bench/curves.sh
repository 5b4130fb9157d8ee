#!/usr/bin/env bash
# Learning curves of Table 1's rows at laptop scale (issue 41 item 1, docs/RESULTS.md): each row of
# configs/demo.py trained to STEPS with the trainer's periodic evaluation (validation BLEU, 200 examples, every
# 1,000 steps, metrics.jsonl / TensorBoard), then the final checkpoint on the test split (the demo's protocol: RDM
# rows at the oracle length with S = 10, AR rows with beam 5), and one figure of the validation curves.
#   bash bench/curves.sh [STEPS] [OUT] [ROW...]   (defaults: 6000, runs/curves, pretrained scratch ar encdec encdec_rdm)
# Prints one line per row: row, test BLEU, validation BLEU per evaluation, median seconds per step; writes
# OUT/results.tsv and OUT/curves.svg.
set -euo pipefail
STEPS=${1:-6000}; OUT=${2:-runs/curves}
PY=${PY:-.venv/bin/python}
ROWS=(pretrained scratch ar encdec encdec_rdm)
if [ $# -gt 2 ]; then ROWS=("${@:3}"); fi
mkdir -p "$OUT"
for v in "${ROWS[@]}"; do
  wd="$OUT/$v"
  if [ ! -f "$wd/eval/ding_de_en.json" ]; then
    "$PY" -m dlm_jax.train --config "configs/demo.py:$v,steps=$STEPS" --workdir "$wd" \
      --config.eval_every_steps=1000 --config.checkpoint_every_steps=1000 > "$wd.train.log" 2>&1
    "$PY" -m dlm_jax.evaluate --workdir "$wd" --tasks ding_de_en --oracle_length --config.sampler.steps=10 \
      > "$wd.eval.log" 2>&1
  fi
  "$PY" - "$wd" "$v" <<'PYEOF'
import json, statistics, sys
wd, v = sys.argv[1:]
r = json.load(open(f"{wd}/eval/ding_de_en.json"))
rows = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")]
curve = " ".join(f"{x['step']}:{x['eval_bleu']:.2f}" for x in rows if "eval_bleu" in x)
st = statistics.median(x["step_time_s"] for x in rows if "step_time_s" in x)
print(f"{v}\t{r['metrics']['bleu']:.2f}\t{curve}\t{st:.3f}")
PYEOF
done | tee "$OUT/results.tsv"
"$PY" -m dlm_jax.plot "${ROWS[@]/#/$OUT/}" --metric eval_bleu --out "$OUT/curves.svg"
