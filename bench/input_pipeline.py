"""Input pipeline throughput: seqio's per-example tokenizer against dlm_jax's batched one, on one task's split.

Both read the same seqio source and produce the same examples: `seqio.preprocessors.tokenize` calls the Python
tokenizer once per example through `tf.py_function`; `dlm_jax.data.vocab.tokenize_in_batches`, which the
registered tasks use, calls it once per `--batch-size` examples. The script checks that the ids agree, then prints
examples/s and tokens/s for each, best of `--repeats` passes over the split (TF start-up included in each pass).

    python bench/input_pipeline.py                               # ding_de_en train, the bundled BERT tokenizer
    python bench/input_pipeline.py --task ding_de_en --split validation --batch-sizes 32,128,512
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import seqio  # noqa: E402

import dlm_jax  # noqa: E402
from dlm_jax.data import registry  # noqa: E402
from dlm_jax.data.vocab import HFVocabulary, tokenize_in_batches  # noqa: E402


def _read(ds) -> tuple[list[dict], float]:
    t = time.perf_counter()
    rows = list(ds.as_numpy_iterator())
    return rows, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="ding_de_en")
    p.add_argument("--split", default="train")
    p.add_argument("--tokenizer", default="", help="HF tokenizer directory (default: the bundled BERT)")
    p.add_argument("--batch-sizes", default="128", help="comma-separated batch sizes of the batched tokenizer")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    vocab = HFVocabulary(dlm_jax.load_tokenizer(args.tokenizer or "bundled"))
    source = registry.get_task_or_mixture(args.task, vocab).source
    output_features = registry.get_task_or_mixture(args.task, vocab).output_features

    def source_ds():
        return source.get_dataset(args.split, shuffle=False)

    variants = [("seqio per-example", lambda: seqio.preprocessors.tokenize(source_ds(), output_features))]
    for b in (int(x) for x in args.batch_sizes.split(",")):
        variants.append((f"batched {b}", lambda b=b: tokenize_in_batches(source_ds(), output_features, b)))
    reference = None
    print(f"{args.task}/{args.split}, tokenizer {type(vocab.tokenizer).__name__}")
    print("| variant | examples | best s | examples/s | tokens/s |\n|---|---|---|---|---|")
    for name, make in variants:
        best = float("inf")
        for _ in range(args.repeats):
            rows, seconds = _read(make())
            best = min(best, seconds)
        if reference is None:
            reference = rows
        elif len(rows) != len(reference) or any(
                not np.array_equal(a[k], b[k]) for a, b in zip(rows, reference) for k in ("inputs", "targets")):
            raise SystemExit(f"{name}: ids differ from seqio's tokenizer")
        tokens = sum(len(r["inputs"]) + len(r["targets"]) for r in rows)
        print(f"| {name} | {len(rows)} | {best:.2f} | {len(rows) / best:,.0f} | {tokens / best:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
