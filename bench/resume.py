"""Time to the first batch after resuming a streamed mixture: the indexed stream vs seqio's stream.

A Flan-2022-shaped fixture (per-task JSONL files prepared by `python -m dlm_jax.data.prepare flan2022`, FLAN's
mixing rates) is written to a temporary DLM_DATA_DIR. The indexed stream (`pipeline.IndexedBatches`, the default
for such mixtures) is run from step 0 to the largest resume step, saving its checkpoint position at each resume
step; then a fresh stream is resumed from each position and the time to its first batch is measured, and checked
equal to the uninterrupted run's batch. seqio's stream (`data.stream=seqio`) is resumed at the same steps for
comparison (it re-reads every consumed example).

    python bench/resume.py                              # resume at steps 200 and 20,000, batch 4
    python bench/resume.py --steps 200,20000 --batch 4 --tasks 12 --examples 3000
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_fixture(src: Path, tasks: int, examples: int) -> None:
    words = "the a house cat dog runs jumps over under big small red blue green sees".split()
    for f in ("flan_zs_opt", "t0_zs_opt", "niv2_zs_opt", "cot_zs_opt", "dialog_zs_opt"):
        with gzip.open(src / f"{f}_train.jsonl.gz", "wt") as out:
            for t in range(tasks):
                for i in range(examples):
                    text = " ".join(words[(i * 7 + j * 3 + t) % len(words)] for j in range(8 + i % 17))
                    out.write(json.dumps({"inputs": f"{f} task {t}: {text}?", "targets": text[: 20 + i % 30],
                                          "task": f"{f}_task{t}"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="200,20000")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=10, help="tasks per file (5 files)")
    ap.add_argument("--examples", type=int, default=2000, help="examples per task")
    args = ap.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="dlm_resume_"))
    os.environ["DLM_DATA_DIR"] = str(tmp)
    import dlm_jax
    from dlm_jax.data import features, pipeline, registry
    from dlm_jax.data.prepare import prepare_flan2022
    from dlm_jax.data.vocab import HFVocabulary

    (tmp / "raw").mkdir()
    write_fixture(tmp / "raw", args.tasks, args.examples)
    prepare_flan2022(tmp / "raw", tmp / "flan2022")
    vocab = HFVocabulary(dlm_jax.load_tokenizer("bundled"))
    registry.register_all(vocab)
    spec = features.FeatureSpec(max_length=128, bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id)
    host = pipeline.HostSlice(args.batch)

    def indexed():
        return pipeline.IndexedBatches("flan2022_submix", spec, vocab, host, seed=0)

    t0 = time.perf_counter()
    run, it, positions, wanted = indexed(), None, {}, {}
    it = run.iterate(0)
    for step in range(steps[-1] + 1):
        if step in steps:
            positions[step] = run.position()
        batch = next(it)
        if step in steps:
            wanted[step] = batch
    print(f"# {len(run.names)} tasks; uninterrupted indexed run to step {steps[-1]} (batch {args.batch}): "
          f"{time.perf_counter() - t0:.1f} s")
    print("| stream | resume at step | examples consumed before | time to first batch (s) | equals uninterrupted |")
    print("|---|---|---|---|---|")
    for step in steps:
        t = time.perf_counter()
        got = next(indexed().iterate(step, positions[step]))
        dt = time.perf_counter() - t
        same = all((got[k] == wanted[step][k]).all() for k in got)
        print(f"| indexed | {step} | {step * args.batch} | {dt:.3f} | {'yes' if same else 'NO'} |", flush=True)
    for step in steps:
        t = time.perf_counter()
        s = pipeline.StreamedBatches("flan2022_submix", spec, vocab, host, seed=0)
        gen = s.iterate(step)
        next(gen)
        dt = time.perf_counter() - t
        gen.close()
        print(f"| seqio | {step} | {step * args.batch} | {dt:.3f} | (its own order) |", flush=True)


if __name__ == "__main__":
    main()
