#!/usr/bin/env bash
# The paper's LLaMA experiment (Fig. 7(d)) at laptop scale, docs/RESULTS.md "A decoder LLM adapted at laptop scale":
#   1. a byte-level BPE tokenizer on ding_de_en (LLaMA-like: <s> </s> <unk> <pad>, no mask token);
#   2. a tiny Llama (configs/demo.py:llama_ar) trained from scratch as a causal LM with the AR objective;
#   3. exported as a LlamaForCausalLM directory (python -m dlm_jax.export), the way a hub checkpoint arrives;
#   4. adapted with RDM the released way (configs/demo.py:llama_rdm: bidirectional, <mask> added with mean rows),
#      shift 0 (released) and 1 (Dream / DiffuLLaMA), and the same RDM recipe from a random init (the control);
#   5. every RDM run evaluated on the test split at the oracle length with reparam (S=10) and with the released
#      left-to-right `ar` strategy (one token per step); the AR run with beam 5.
#   bash bench/llm_adaptation_laptop.sh [AR_STEPS] [RDM_STEPS] [OUT]   (defaults: 1200, 600, runs/llm_adapt)
# Prints one line per (run, strategy) and writes OUT/results.tsv.
set -euo pipefail
AR_STEPS=${1:-1200}; RDM_STEPS=${2:-600}; OUT=${3:-runs/llm_adapt}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT"
[ -f "$OUT/tokenizer/tokenizer.json" ] || "$PY" bench/bpe_tokenizer.py --out "$OUT/tokenizer"
train() {  # workdir steps config [overrides...]
  local wd=$1 steps=$2 config=$3; shift 3
  [ -f "$wd/metrics.jsonl" ] && grep -q "\"step\": $steps[,}]" "$wd/metrics.jsonl" && return
  "$PY" -m dlm_jax.train --config "$config" --workdir "$wd" --config.num_train_steps="$steps" \
    --config.checkpoint_every_steps="$steps" "$@" > "$wd.train.log" 2>&1
}
evaluate() {  # workdir label evaluate-args...
  local wd=$1 label=$2; shift 2
  [ -f "$wd/eval/ding_de_en.$label.json" ] && return
  "$PY" -m dlm_jax.evaluate --workdir "$wd" --tasks ding_de_en "$@" > "$wd.eval.$label.log" 2>&1
  cp "$wd/eval/ding_de_en.json" "$wd/eval/ding_de_en.$label.json"
}
train "$OUT/ar" "$AR_STEPS" configs/demo.py:llama_ar --config.model.tokenizer="$OUT/tokenizer"
evaluate "$OUT/ar" beam5
[ -f "$OUT/ar_hf/config.json" ] || "$PY" -m dlm_jax.export --workdir "$OUT/ar" --out "$OUT/ar_hf" > "$OUT/ar_hf.log" 2>&1
for s in 0 1; do
  train "$OUT/rdm_shift$s" "$RDM_STEPS" "configs/demo.py:llama_rdm,init=$OUT/ar_hf,shift=$s"
done
train "$OUT/rdm_scratch" "$RDM_STEPS" configs/demo.py:llama_rdm,init=random --config.model.tokenizer="$OUT/tokenizer"
for wd in rdm_shift0 rdm_shift1 rdm_scratch; do
  evaluate "$OUT/$wd" reparam --oracle_length --config.sampler.steps=10
  evaluate "$OUT/$wd" ar --oracle_length --config.sampler.strategy=ar --config.sampler.steps=64
done
"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/results.tsv"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for wd, labels in [("ar", ["beam5"])] + [(w, ["reparam", "ar"]) for w in ("rdm_shift0", "rdm_shift1", "rdm_scratch")]:
    m = [json.loads(l) for l in open(out / wd / "metrics.jsonl")][-1]
    for label in labels:
        r = json.loads((out / wd / "eval" / f"ding_de_en.{label}.json").read_text())
        print(f"{wd}\t{label}\t{r['metrics']['bleu']:.2f}\t{r['metrics'].get('bleu_cased', float('nan')):.2f}\t"
              f"{m['loss']:.4f}\t{r['num_examples']}\t{r['wall_s']:.0f}")
PYEOF
