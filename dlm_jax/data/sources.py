"""Where each data set's files are and how they read into {"inputs", "targets", "task"} text rows.

Nothing here knows seqio or a tokenizer: these are the plain readers behind the registered tasks
(`dlm_jax.data.registry`) and the preparation commands (`dlm_jax.data.prepare`). Data locations: `DLM_DATA_DIR`
(default: the repository's `data/`). A missing file raises `MissingDataError` naming every file expected, where
they come from and the command that prepares them.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import re
from pathlib import Path
from typing import Iterable, Sequence

from dlm_jax.data.features import few_shot_prompt
from dlm_jax.errors import MissingDataError

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
SPLIT_FILE_NAMES = {"train": "train", "validation": "valid", "test": "test"}


def data_dir() -> Path:
    return Path(os.environ.get("DLM_DATA_DIR", str(REPO_DATA))).expanduser()


def require(paths: Sequence[Path], source: str, prepare: str) -> None:
    """Raises `MissingDataError` naming every missing path, where the files come from and how to prepare them."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingDataError(
            f"missing data files: {', '.join(missing)}.\n  They come from: {source}\n  Prepare them with: {prepare}\n"
            f"  (data root: DLM_DATA_DIR={data_dir()})")


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def safe_name(name: str) -> str:
    """A task name as a file / registry name (every non-word character becomes `_`)."""
    return re.sub(r"[^\w\d]", "_", name)


# ----------------------------------------------------------------------------------------------------------
# Translation and summarisation
# ----------------------------------------------------------------------------------------------------------
DE_EN_PROMPT = "Translate the sentences into English. German: {de} English: "
EN_DE_PROMPT = "Translate the sentences into German. English: {en} German: "


def pairs_to_rows(pairs: Iterable[tuple[str, str]], task: str, template: str | None, src_key: str) -> list[dict]:
    return [{"inputs": template.format(**{src_key: s}) if template else s, "targets": t, "task": task}
            for s, t in pairs]


def ding_pairs(split: str) -> list[tuple[str, str]]:
    """The built-in DE-EN pairs (from Debian's trans-de-en; `data/ding_de_en/{train,valid,test}.tsv`)."""
    name = SPLIT_FILE_NAMES[split]
    path = data_dir() / "ding_de_en" / f"{name}.tsv"
    if not path.exists():
        path = REPO_DATA / "ding_de_en" / f"{name}.tsv"
    require([path], "Debian package trans-de-en (/usr/share/trans/de-en)",
            "apt-get install trans-de-en && python scripts/make_ding_de_en.py")
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line]  # type: ignore[misc]


def _unbpe(text: str) -> str:
    return re.sub(r"(@@ )|(@@ ?$)", "", text.strip())


def _fairseq_pairs(folder: str, split: str, src: str, tgt: str, script: str) -> list[tuple[str, str]]:
    """(source, target) lines of a fairseq examples/translation prepare script's output folder, BPE removed."""
    name = SPLIT_FILE_NAMES[split]
    root = data_dir() / folder
    a, b = root / f"{name}.{src}", root / f"{name}.{tgt}"
    require([a, b], f"fairseq examples/translation/{script}", f"bash {script} && mv {folder} {data_dir()}/")
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        return [(_unbpe(x), _unbpe(y)) for x, y in zip(fa, fb)]


def iwslt_pairs(split: str) -> list[tuple[str, str]]:
    """IWSLT14 DE-EN as fairseq's prepare-iwslt14.sh leaves it (`iwslt14.tokenized.de-en`), BPE removed."""
    return _fairseq_pairs("iwslt14.tokenized.de-en", split, "de", "en", "prepare-iwslt14.sh")


def wmt14_pairs(split: str) -> list[tuple[str, str]]:
    """WMT14 EN-DE as fairseq's prepare-wmt14en2de.sh leaves it (`wmt14_en_de`), BPE removed: the paper's
    source (Appendix A)."""
    return _fairseq_pairs("wmt14_en_de", split, "en", "de", "prepare-wmt14en2de.sh")


def gigaword_local_rows(split: str) -> list[dict]:
    """Gigaword-10K as the LGEB repository ships it ({train,valid,test}.{src,tgt})."""
    name = SPLIT_FILE_NAMES[split]
    root = data_dir() / "gigaword_10k"
    src, tgt = root / f"{name}.src", root / f"{name}.tgt"
    require([src, tgt], "the LGEB repository's Gigaword-10K (github CLUEbenchmark/LGEB)",
            f"copy its train/valid/test .src/.tgt files into {root}")
    with open(src, encoding="utf-8") as fs, open(tgt, encoding="utf-8") as ft:
        return [{"inputs": a.strip(), "targets": b.strip(), "task": "gigaword_10k"} for a, b in zip(fs, ft)]


# ----------------------------------------------------------------------------------------------------------
# Flan 2021 (Muennighoff/flan JSONL) with its German-free "strict" variant; Flan 2022 prepared per-task files
# ----------------------------------------------------------------------------------------------------------
GERMAN_TASK = re.compile(r"(^|[_\-/])(de|deu|german)($|[_\-/])|deen|ende|de_en|en_de|de-en|en-de|german", re.I)
_GERMAN_WORDS = {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "ich", "mit", "den", "zu", "sie", "es",
                 "auf", "für", "von", "wir", "dem", "auch"}


def looks_german(text: str, threshold: float = 0.15) -> bool:
    """A cheap detector: share of very common German function words among the words of `text`."""
    words = re.findall(r"[a-zäöüß]+", text.lower())
    return len(words) >= 5 and sum(w in _GERMAN_WORDS for w in words) / len(words) >= threshold


def is_german_task(name: str, examples: Sequence[dict]) -> bool:
    """A task is German if its name names German, or any of its first 50 examples has German text."""
    if GERMAN_TASK.search(name):
        return True
    return any(looks_german(ex["inputs"]) or looks_german(ex["targets"]) for ex in examples[:50])


def flan2021_rows(split: str, strict: bool) -> list[dict]:
    root = data_dir() / "flan2021"
    files = sorted(root.glob("*.jsonl")) + sorted(root.glob("*.jsonl.gz")) if root.exists() else []
    if not files:
        require([root / "*.jsonl"], "huggingface.co/datasets/Muennighoff/flan (train files)",
                f"download its *.jsonl files into {root}")
    rows = [r for f in files for r in read_jsonl(f)]
    if split != "train":
        raise MissingDataError("flan2021 has only a train split")
    if not strict:
        return rows
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r.get("task", ""), []).append(r)
    return [r for t, rs in by_task.items() if not is_german_task(t, rs) for r in rs]


def flan2022_root(root: Path | None = None) -> Path:
    return (root or data_dir()) / "flan2022"


def flan2022_task_file(root: Path, stem: str, task: str) -> Path:
    """Where `python -m dlm_jax.data.prepare flan2022` writes task `task` of file `stem` (e.g. "flan_zs_opt")."""
    return root / "by_task" / stem / f"{safe_name(task)}.jsonl"


def flan2022_task_rows(path: Path, split: str) -> list[dict]:
    require([path], "huggingface.co/datasets/SirNeural/flan_v2", "python -m dlm_jax.data.prepare flan2022 --src DIR")
    return read_jsonl(path)


# ----------------------------------------------------------------------------------------------------------
# Evaluation sets: MMLU, BBH-nlp, TyDiQA-GoldP, GSM8K, MGSM-de (0-shot and few-shot)
# ----------------------------------------------------------------------------------------------------------
LETTERS = "ABCDEFGHIJ"
BBH_NLP = ("causal_judgement", "date_understanding", "disambiguation_qa", "formal_fallacies", "hyperbaton",
           "movie_recommendation", "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names",
           "salient_translation_error_detection", "snarks", "sports_understanding")


def mmlu_prompt(ex: dict) -> str:
    opts = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(ex["choices"]))
    subject = ex["subject"].replace("_", " ")
    return (f"The following are multiple choice questions (with answers) about {subject}. "
            f"Q: {ex['question']} {opts} A:")


def mmlu_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "mmlu"
    val, dev = root / "validation.jsonl", root / "dev.jsonl"
    require([val] + ([dev] if shots else []), "huggingface.co/datasets/cais/mmlu (all: validation, dev)",
            f"python -m dlm_jax.data.prepare mmlu --src DIR_WITH_PARQUET --out {root}")
    demos_by_subject: dict[str, list[dict]] = {}
    for d in (read_jsonl(dev) if shots else []):
        demos_by_subject.setdefault(d["subject"], []).append(d)
    rng = random.Random(seed)
    rows = []
    for ex in read_jsonl(val):
        prompt = mmlu_prompt(ex)
        if shots:
            pool = demos_by_subject.get(ex["subject"], [])
            demos = rng.sample(pool, min(shots, len(pool)))
            prompt = few_shot_prompt([(mmlu_prompt(d), LETTERS[int(d["answer"])]) for d in demos], prompt,
                                     joiner=" | ")
        rows.append({"inputs": prompt, "targets": LETTERS[int(ex["answer"])], "task": f"mmlu:{ex['subject']}"})
    return rows


def bbh_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "bbh"
    files = [root / f"{t}.json" for t in BBH_NLP]
    require(files, "github suzgunmirac/BIG-Bench-Hard bbh/*.json (or huggingface lukaemon/bbh)",
            f"copy the 12 NLP task files into {root}")
    rng = random.Random(seed)
    rows = []
    for t, f in zip(BBH_NLP, files):
        exs = json.loads(f.read_text())["examples"]
        for i, ex in enumerate(exs):
            prompt = f"{ex['input']} A:"
            if shots:
                demos = rng.sample([e for j, e in enumerate(exs) if j != i], min(shots, len(exs) - 1))
                prompt = few_shot_prompt([(f"{d['input']} A:", d["target"]) for d in demos], prompt)
            rows.append({"inputs": prompt, "targets": ex["target"].strip("()"), "task": f"bbh:{t}"})
    return rows


def tydiqa_prompt(ex: dict) -> str:
    return (f"Please answer each of the question according to the given context in {ex['language']}. "
            f"context: {ex['context']} Q: {ex['question']} A:")


def tydiqa_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "tydiqa_goldp"
    val, train = root / "validation.jsonl", root / "train.jsonl"
    require([val] + ([train] if shots else []), "huggingface.co/datasets/khalidalt/tydiqa-goldp",
            f"write {{context, question, answers, language}} JSONL files into {root}")
    pool = read_jsonl(train) if shots else []
    rng = random.Random(seed)
    rows = []
    for ex in read_jsonl(val):
        prompt = tydiqa_prompt(ex)
        if shots:
            same = [d for d in pool if d["language"] == ex["language"]] or pool
            demos = rng.sample(same, min(shots, len(same)))
            prompt = few_shot_prompt([(tydiqa_prompt(d), d["answers"][0]) for d in demos], prompt)
        # the first gold answer is the target, as in the released files (it also sets the oracle length)
        rows.append({"inputs": prompt, "targets": ex["answers"][0], "task": f"tydiqa:{ex['language']}"})
    return rows


def gsm_prompt(question: str) -> str:
    return f" Question: {question} Step-by-Step Answer: "


def gsm8k_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "gsm8k"
    test, train = root / "test.jsonl", root / "train.jsonl"
    require([test] + ([train] if shots else []), "github openai/grade-school-math (grade_school_math/data)",
            f"copy test.jsonl and train.jsonl into {root}")
    rng = random.Random(seed)
    pool = read_jsonl(train) if shots else []
    rows = []
    for ex in read_jsonl(test):
        prompt = gsm_prompt(ex["question"])
        if shots:
            demos = [(gsm_prompt(d["question"]), f"{d['answer'].split('####')[0].strip()} The answer is "
                      f"{d['answer'].split('####')[-1].strip()}.") for d in rng.sample(pool, shots)]
            prompt = few_shot_prompt(demos, prompt, joiner="")
        rows.append({"inputs": prompt, "targets": ex["answer"].split("####")[-1].strip(), "task": "gsm8k"})
    return rows


GSM_PROMPTS = {"en": " Question: {q} Step-by-Step Answer: ", "de": " Frage: {q} Schritt-für-Schritt-Antwort: "}


def mgsm_rows(split: str, shots: int, lang: str) -> list[dict]:
    """MGSM in language `lang` (the paper's "GSM8K" is MGSM's English split, 250 questions): the released prompt
    words per language (`data/instruct/mgsm/<k>-shot/<lang>.jsonl`), demonstrations from the chain-of-thought
    exemplars of Shi et al. (2022) in that language, never from the evaluated questions.

    Files: `mgsm/mgsm_<lang>.tsv` (question, answer number; github google-research/url-nlp `mgsm/`) and, for
    shots > 0, `mgsm/exemplars_<lang>.tsv` (question, step-by-step answer ending in its answer sentence).
    """
    root = data_dir() / "mgsm"
    test, demos_file = root / f"mgsm_{lang}.tsv", root / f"exemplars_{lang}.tsv"
    require([test] + ([demos_file] if shots else []),
            "github google-research/url-nlp mgsm/ (mgsm_<lang>.tsv; the exemplars of Shi et al. 2022)",
            f"copy mgsm_{lang}.tsv into {root}" + (f" and write exemplars_{lang}.tsv (question<TAB>answer)"
                                                    if shots else ""))
    template = GSM_PROMPTS[lang]
    read_tsv = lambda f: [line.split("\t") for line in f.read_text(encoding="utf-8").splitlines() if line]  # noqa
    demos = [(template.format(q=q), a) for q, a, *_ in read_tsv(demos_file)[:shots]] if shots else []
    if len(demos) < shots:
        raise MissingDataError(f"{demos_file} has {len(demos)} exemplars; {shots} are needed")
    return [{"inputs": few_shot_prompt(demos, template.format(q=q), joiner="") if shots else template.format(q=q),
             "targets": a, "task": f"mgsm_{lang}"} for q, a, *_ in read_tsv(test)]
