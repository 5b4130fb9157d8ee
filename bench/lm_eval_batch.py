"""Wall time of an lm-eval multiple-choice task through the dlm_jax model at several batch sizes, scores compared.

    python bench/lm_eval_batch.py [--workdir RUN] [--items 100] [--choices 4] [--mc_samples 32] [--batch 1,16]

Without --workdir a tiny run (configs/tiny.py, 8 steps) is trained into a temporary folder; `--config demo` trains
configs/demo.py (the bundled pretrained BERT) for 2 steps instead. Each batch size runs the same requests twice
(the first call compiles) through `DlmJaxLM.loglikelihood` (ELBO scores + the is_greedy decode), and the script
prints wall time, requests/s and whether every loglikelihood is bit-identical to the first batch size's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
WORDS = "das haus ist klein gross wir gehen nach hause ich bin müde wo der bahnhof guten morgen danke".split()


class Request:
    def __init__(self, context: str, continuation: str):
        self.args = (context, continuation)


def requests(items: int, choices: int, seed: int = 0) -> list[Request]:
    import numpy as np
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(items):
        q = " ".join(rng.choice(WORDS, rng.integers(4, 12)))
        out += [Request(q, " " + " ".join(rng.choice(WORDS, rng.integers(1, 4)))) for _ in range(choices)]
    return out


def train(config: str, workdir: Path) -> None:
    steps = {"tiny": 8, "demo": 2}[config]
    subprocess.run([sys.executable, "-m", "dlm_jax.train", "--config", f"configs/{config}.py", "--workdir",
                    str(workdir), f"--config.num_train_steps={steps}"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir")
    ap.add_argument("--config", default="tiny", choices=["tiny", "demo"])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--choices", type=int, default=4)
    ap.add_argument("--mc_samples", type=int, default=32)
    ap.add_argument("--micro_batch", type=int, default=8)
    ap.add_argument("--batch", default="1,16")
    a = ap.parse_args()
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="lm_eval_bench_")) / "run"
    if not a.workdir:
        train(a.config, workdir)
    from dlm_jax.lm_eval import DlmJaxLM
    reqs = requests(a.items, a.choices)
    first = None
    print(f"{a.items} items x {a.choices} choices = {len(reqs)} loglikelihood requests, {a.mc_samples} MC samples, "
          f"micro_batch {a.micro_batch}, run {workdir}")
    for bs in [int(b) for b in a.batch.split(",")]:
        lm = DlmJaxLM(workdir=str(workdir), mc_samples=a.mc_samples, batch_size=bs, micro_batch=a.micro_batch)
        t0 = time.perf_counter()
        lm.loglikelihood(reqs)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = lm.loglikelihood(reqs)
        wall = time.perf_counter() - t0
        first = got if first is None else first
        print(f"batch {bs:3d}: {wall:7.2f} s ({len(reqs) / wall:6.1f} requests/s; first call with compiles "
              f"{warm:.2f} s); identical to batch {a.batch.split(',')[0]}: {got == first}")


if __name__ == "__main__":
    main()
