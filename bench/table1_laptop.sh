#!/usr/bin/env bash
# Table 1 at laptop scale (docs/RESULTS.md): every row on ding_de_en with the bundled BERT's vocabulary, the same
# step budget, batch, data and evaluation (test split, sacreBLEU 13a; RDM rows at the oracle length with S=10, AR
# rows with beam 5), 3 seeds each.
#   bash bench/table1_laptop.sh [STEPS] [JOBS] [OUT]     (defaults: 500 steps, 2 runs at a time, runs/table1)
# Prints one line per (row, seed) and writes OUT/results.tsv.
set -euo pipefail
STEPS=${1:-500}; JOBS=${2:-2}; OUT=${3:-runs/table1}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
one() {  # variant seed
  local v=$1 s=$2 wd="$OUT/$1-seed$2"
  if [ ! -f "$wd/eval/ding_de_en.json" ]; then
    "$PY" -m dlm_jax.train --config "configs/demo.py:$v" --workdir "$wd" --config.num_train_steps="$STEPS" \
      --config.seed="$s" --config.checkpoint_every_steps="$STEPS" > "$wd.train.log" 2>&1
    "$PY" -m dlm_jax.evaluate --workdir "$wd" --tasks ding_de_en --oracle_length --config.sampler.steps=10 \
      > "$wd.eval.log" 2>&1
  fi
  "$PY" - "$wd" "$v" "$s" <<'PYEOF'
import json, sys
wd, v, s = sys.argv[1:]
r = json.load(open(f"{wd}/eval/ding_de_en.json"))
m = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")][-1]
print(f"{v}\t{s}\t{r['metrics']['bleu']:.2f}\t{r['length']}\t{m['loss']:.4f}\t{m.get('num_dropped', 0)}\t{r['wall_s']:.0f}")
PYEOF
}
export -f one; export STEPS OUT PY
for s in 0 1 2; do for v in pretrained scratch ar encdec encdec_rdm; do echo "$v $s"; done; done \
  | xargs -P "$JOBS" -n 2 bash -c 'one "$0" "$1"' | tee "$OUT/results.tsv"
"$PY" - "$OUT/results.tsv" <<'PYEOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    v, s, bleu, *_ = line.split("\t")
    rows[v].append(float(bleu))
print("| row | BLEU per seed | mean | sd |\n|---|---|---|---|")
for v, b in rows.items():
    print(f"| {v} | {', '.join(f'{x:.2f}' for x in b)} | {statistics.mean(b):.2f} | "
          f"{statistics.stdev(b) if len(b) > 1 else 0:.2f} |")
PYEOF
