"""Turns public downloads into the layout the tasks read: `python -m dlm_jax.data.prepare NAME --src DIR [--out DIR]`.

- flan2022: SirNeural/flan_v2 `{flan,t0,niv2,cot,dialog}_{zs,fs}_{opt,noopt}_train.jsonl.gz` ->
  `$DLM_DATA_DIR/flan2022/by_task/<file>/<task>.jsonl` and `counts.json` (examples per task per file).
- mmlu: cais/mmlu parquet files (all/validation-*.parquet, all/dev-*.parquet) -> `$DLM_DATA_DIR/mmlu/*.jsonl`.
- diffusionllm_instruct: the paper's own evaluation files (a clone of github yegcjs/DiffusionLLM, `data/instruct`)
  -> `$DLM_DATA_DIR/diffusionllm_instruct/`, copied byte for byte (the files every `paper:*` task reads, and the
  skip lists), with `manifest.json` (examples per file, released skip counts).
- ding_de_en: see scripts/make_ding_de_en.py (from Debian's trans-de-en).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from absl import app, flags

from dlm_jax import cli
from dlm_jax.data import sources
from dlm_jax.errors import MissingDataError, UserError

flags.DEFINE_string("src", None, "Folder with the downloaded files.")
flags.DEFINE_string("out", None, "Output folder (default: $DLM_DATA_DIR/<name>).")
FLAGS = flags.FLAGS
PREPARE = ("flan2022", "mmlu", "diffusionllm_instruct")


def prepare_flan2022(src: Path, out: Path) -> dict[str, dict[str, int]]:
    files = sorted(src.glob("*_train.jsonl.gz")) + sorted(src.glob("*_train.jsonl"))
    if not files:
        raise MissingDataError(f"no *_train.jsonl.gz files in {src}; download them from huggingface.co/datasets/"
                               "SirNeural/flan_v2")
    counts: dict[str, dict[str, int]] = {}
    for f in files:
        stem = f.name.split("_train.jsonl")[0]
        handles: dict[str, object] = {}
        c: dict[str, int] = {}
        (out / "by_task" / stem).mkdir(parents=True, exist_ok=True)
        for row in sources.read_jsonl(f):
            task = row.get("task") or "unknown"
            if task not in handles:
                handles[task] = open(sources.flan2022_task_file(out, stem, task), "w", encoding="utf-8")
            handles[task].write(json.dumps({"inputs": row["inputs"], "targets": row["targets"],  # type: ignore
                                            "task": task}) + "\n")
            c[task] = c.get(task, 0) + 1
        for h in handles.values():
            h.close()  # type: ignore[attr-defined]
        counts[stem] = c
        print(f"{stem}: {sum(c.values())} examples in {len(c)} tasks")
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    return counts


def prepare_mmlu(src: Path, out: Path) -> None:
    import pyarrow.parquet as pq
    out.mkdir(parents=True, exist_ok=True)
    for split in ("validation", "dev"):
        parts = sorted(src.rglob(f"{split}-*.parquet"))
        if not parts:
            raise MissingDataError(f"no {split}-*.parquet under {src}; download cais/mmlu (config 'all')")
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for p in parts:
                for row in pq.read_table(p).to_pylist():
                    f.write(json.dumps({k: row[k] for k in ("question", "subject", "choices", "answer")}) + "\n")


def prepare_diffusionllm_instruct(src: Path, out: Path) -> dict[str, dict]:
    """Copies every released evaluation file the `paper:*` tasks read (all sets, shots and splits) and the skip
    lists; a file absent from `src` is named, with every other one, in one error (nothing is written then)."""
    wanted: list[tuple[str, Path]] = []
    for name, ps in sources.PAPER_SETS.items():
        for k in ps.shots:
            for split, folder in ps.splits.items():
                rel = Path(ps.folder) / f"{k}-shot" / folder
                wanted += [(f"{name}:{k}shot:{split}", rel / f) for f in [ps.file, *([ps.groups] if ps.groups else [])]]
    present = [(key, rel) for key, rel in wanted if (src / rel).exists()]
    if not present:
        raise MissingDataError(f"no released evaluation file under {src}; pass --src CLONE/data/instruct of "
                               "github yegcjs/DiffusionLLM")
    manifest: dict[str, dict] = {}
    for key, rel in present:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, out / rel)
        if rel.suffix == ".jsonl":
            with open(out / rel, encoding="utf-8") as f:
                manifest[key] = {"file": str(rel), "examples": sum(1 for line in f if line.strip())}
    for skip in sorted(src.glob("*/*-shot.maxlength-*.skipped.json")):
        (out / skip.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(skip, out / skip.relative_to(src))
    missing = sorted({str(rel) for _, rel in wanted} - {str(rel) for _, rel in present})
    (out / "manifest.json").write_text(json.dumps({"sets": manifest, "not_released_here": missing}, indent=1))
    for key, m in manifest.items():
        print(f"{key}: {m['examples']} examples ({m['file']})")
    if missing:
        print(f"{len(missing)} files not in {src} (those tasks will say so): {', '.join(missing[:5])}"
              + (" ..." if len(missing) > 5 else ""))
    return manifest


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 2 or argv[1] not in PREPARE or not FLAGS.src:
            raise MissingDataError(f"usage: python -m dlm_jax.data.prepare {{{','.join(PREPARE)}}} --src DIR")
        out = Path(FLAGS.out) if FLAGS.out else sources.data_dir() / argv[1]
        cli.check_workdir(out, "--out" if FLAGS.out else "the data folder (DLM_DATA_DIR)")
        {"flan2022": prepare_flan2022, "mmlu": prepare_mmlu,
         "diffusionllm_instruct": prepare_diffusionllm_instruct}[argv[1]](Path(FLAGS.src), out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
