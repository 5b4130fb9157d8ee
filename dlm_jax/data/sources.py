"""Where each data set's files are and how they read into {"inputs", "targets", "task"} text rows.

Nothing here knows seqio or a tokenizer: these are the plain readers behind the registered tasks
(`dlm_jax.data.registry`) and the preparation commands (`dlm_jax.data.prepare`). Data locations: `DLM_DATA_DIR`
(default: the repository's `data/`). A missing file raises `MissingDataError` naming every file expected, where
they come from and the command that prepares them.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

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
# The released prompts (data/instruct/iwslt14/0-shot/*/deen.jsonl, ende.jsonl), two spaces after the instruction
DE_EN_INSTRUCTION, DE_EN_TURN = "Translate the sentences into English. ", " German: {de} English: "
EN_DE_INSTRUCTION, EN_DE_TURN = "Translate the sentences into German. ", " English: {en} German: "
DE_EN_PROMPT = DE_EN_INSTRUCTION + DE_EN_TURN
EN_DE_PROMPT = EN_DE_INSTRUCTION + EN_DE_TURN


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


def _fairseq_pairs(folder: str, split: str, src: str, tgt: str, script: str, *, detokenize: bool = False
                   ) -> list[tuple[str, str]]:
    """(source, target) lines of a fairseq examples/translation prepare script's output folder, BPE removed, and
    with `detokenize` Moses-detokenised and unescaped (`&apos;` -> `'`)."""
    name = SPLIT_FILE_NAMES[split]
    root = data_dir() / folder
    a, b = root / f"{name}.{src}", root / f"{name}.{tgt}"
    require([a, b], f"fairseq examples/translation/{script}", f"bash {script} && mv {folder} {data_dir()}/")
    if detokenize:
        return list(_detokenized_pairs(a, b, src, tgt, (a.stat().st_mtime_ns, b.stat().st_mtime_ns)))
    return _read_pairs(a, b)


def _read_pairs(a: Path, b: Path) -> list[tuple[str, str]]:
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        return [(_unbpe(x), _unbpe(y)) for x, y in zip(fa, fb)]


@functools.lru_cache(maxsize=4)
def _detokenized_pairs(a: Path, b: Path, src: str, tgt: str, stamp: tuple[int, int]
                       ) -> tuple[tuple[str, str], ...]:
    """Detokenising is slow (IWSLT14's 160k training pairs are read by every few-shot task, and by each of the
    evaluator's passes): kept per file pair and modification time."""
    from sacremoses import MosesDetokenizer
    ds, dt = MosesDetokenizer(src), MosesDetokenizer(tgt)
    return tuple((ds.detokenize(x.split()), dt.detokenize(y.split())) for x, y in _read_pairs(a, b))


def iwslt_pairs(split: str) -> list[tuple[str, str]]:
    """IWSLT14 DE-EN as fairseq's prepare-iwslt14.sh leaves it (`iwslt14.tokenized.de-en`: lower-cased), BPE
    removed, Moses-detokenised and unescaped, as the released evaluation text is
    (`data/instruct/iwslt14/0-shot/test/deen.jsonl`: "you know, one of ...")."""
    return _fairseq_pairs("iwslt14.tokenized.de-en", split, "de", "en", "prepare-iwslt14.sh", detokenize=True)


def few_shot_rows(pairs: Callable[[str], list[tuple[str, str]]], split: str, shots: int, task: str,
                  seed: int = 0) -> list[dict]:
    """DE->EN pairs (IWSLT14, the built-in ding_de_en) with `shots` demonstrations from the train split (never the
    evaluated one), in the released layout: the instruction once, then " German: d English: e" per demonstration,
    then the question."""
    pool = pairs("train")
    rng = random.Random(seed)
    rows = []
    for de, en in pairs(split):
        demos = rng.sample(pool, shots)
        turns = "".join(DE_EN_TURN.format(de=d) + e for d, e in demos)
        rows.append({"inputs": DE_EN_INSTRUCTION + turns + DE_EN_TURN.format(de=de), "targets": en, "task": task})
    return rows


def magpie_rows(split: str, name: str = "magpie_smollm2") -> list[dict]:
    """Instruction / answer pairs an instruct model made of itself (`bench/magpie.py`: Magpie, Xu et al. 2024),
    `DLM_DATA_DIR/<name>/{train,valid,test}.jsonl`; the valid and test turns are never trained on."""
    path = data_dir() / name / f"{SPLIT_FILE_NAMES[split]}.jsonl"
    require([path], "bench/magpie.py (offline, from the instruct model itself: SmolLM2-135M-Instruct by default)",
            f"python bench/magpie.py --out {data_dir() / name}")
    return [{"inputs": r["inputs"], "targets": r["targets"], "task": name} for r in read_jsonl(path)]


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


class JsonlRows:
    """Random access to the lines of a JSONL file: `rows[i]` seeks to line i (byte offsets found by one scan, kept
    beside the file as `<file>.offsets.npy` when the folder is writable), so a resumed run reads only what it uses."""

    def __init__(self, path: Path):
        self.path = path
        cache = path.with_name(path.name + ".offsets.npy")
        if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
            self.offsets = np.load(cache)
        else:
            offsets, pos = [], 0
            with open(path, "rb") as f:
                for line in f:
                    if line.strip():
                        offsets.append(pos)
                    pos += len(line)
            self.offsets = np.asarray(offsets, np.int64)
            try:
                np.save(cache, self.offsets)
            except OSError:
                pass
        self._file = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        if self._file is None:
            self._file = open(self.path, "rb")
        self._file.seek(int(self.offsets[i]))
        return json.loads(self._file.readline())


class ConcatRows:
    """Several row sequences as one (the paper's file-level Flan 2022 tasks)."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.ends, i, side="right"))
        return self.parts[k][i - (int(self.ends[k - 1]) if k else 0)]


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


_BBH_OPTION = re.compile(r"^\(([A-R])\)\s*(.*)$")


def bbh_lettered(question: str, target: str, words: Sequence[str]) -> tuple[str, str]:
    """One BBH example recast as the released files have it: " Q: {question}\nA: (A) .. (B) .. A:" and the letter.

    Tasks with options ("Options:\n(A) ..") keep their letters; tasks with word answers (Yes/No, valid/invalid)
    get `words` (the task's answers, sorted) as the options. The released option order came from BIG-bench's
    files and is not recoverable from BBH's (docs/FIDELITY.md E4)."""
    stem, sep, opts = question.partition("\nOptions:\n")
    if sep:
        parsed = [_BBH_OPTION.match(line.strip()) for line in opts.splitlines() if line.strip()]
        options = [(m.group(1), m.group(2)) for m in parsed if m]
        letter = target.strip().strip("()")
    else:
        options = [(LETTERS[i], w) for i, w in enumerate(words)]
        letter = LETTERS[list(words).index(target.strip())]
    listed = " ".join(f"({k}) {v}" for k, v in options)
    return f" Q: {stem}\nA: {listed} A:", letter


def bbh_demos(path: Path) -> list[tuple[str, str]]:
    """(question, answer) of BBH's chain-of-thought prompt file (`cot-prompts/<task>.txt`: three worked
    demonstrations per task, none of them an evaluated example); the answer is the one after "So the answer is"."""
    out = []
    for block in path.read_text(encoding="utf-8").split("\n\nQ: ")[1:]:
        question = block.split("\nA:")[0].strip()
        m = re.search(r"So the answer is (.+?)\.?\s*$", block.strip())
        if m:
            out.append((question, m.group(1).strip()))
    return out


def bbh_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    """BBH's 12 NLP tasks as lettered multiple choice (the released layout: `bbh_lettered`); demonstrations from
    BBH's `cot-prompts/<task>.txt` (answers only), joined by " |" as released; at most 3 shots."""
    root = data_dir() / "bbh"
    files = [root / f"{t}.json" for t in BBH_NLP]
    demo_files = [root / "cot-prompts" / f"{t}.txt" for t in BBH_NLP] if shots else []
    require(files + demo_files, "github suzgunmirac/BIG-Bench-Hard (bbh/*.json, cot-prompts/*.txt)",
            f"copy the 12 NLP task files into {root} and their cot-prompts/ files into {root / 'cot-prompts'}")
    rows = []
    for i, (t, f) in enumerate(zip(BBH_NLP, files)):
        exs = json.loads(f.read_text())["examples"]
        demos = bbh_demos(demo_files[i])[:shots] if shots else []
        if len(demos) < shots:
            raise MissingDataError(f"{demo_files[i]} has {len(demos)} demonstrations; {shots} are needed")
        words = sorted({e["target"].strip() for e in exs} | {a for _, a in demos})
        demo_text = [bbh_lettered(q, a, words) for q, a in demos]
        for ex in exs:
            prompt, letter = bbh_lettered(ex["input"], ex["target"], words)
            rows.append({"inputs": few_shot_prompt(demo_text, prompt, joiner=" |"), "targets": letter,
                         "task": f"bbh:{t}"})
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


GSM_PROMPTS = {"en": " Question: {q} Step-by-Step Answer: ", "de": " Frage: {q} Schritt-für-Schritt-Antwort: "}


def gsm_prompt(question: str) -> str:
    return GSM_PROMPTS["en"].format(q=question)


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


# ----------------------------------------------------------------------------------------------------------
# The paper's own evaluation files (yegcjs/DiffusionLLM `data/instruct/`), read as released
# ----------------------------------------------------------------------------------------------------------
PAPER_DIR = "diffusionllm_instruct"
PAPER_SOURCE = "the paper's repository, github yegcjs/DiffusionLLM (data/instruct/)"
PAPER_PREPARE = "python -m dlm_jax.data.prepare diffusionllm_instruct --src CLONE/data/instruct"


@dataclasses.dataclass(frozen=True)
class PaperSet:
    """One released evaluation set: `<folder>/<k>-shot/<split folder>/<file>` JSONL {inputs, targets}, with the
    subtask of each line in `groups` (a JSON list, line by line) where the set has subtasks, and the examples
    dropped at 512 tokens counted in `<folder>/<k>-shot.maxlength-<n>.skipped.json`.

    Attributes:
      folder, file, groups: where the lines and their subtasks are.
      shots: the k-shot variants released.
      splits: our split name -> the released split folder ("" where there is none).
    """

    folder: str
    file: str
    shots: tuple[int, ...]
    splits: dict[str, str]
    groups: str | None = None


PAPER_SETS: dict[str, PaperSet] = {
    # scripts/eval_instruct.sh: mmlu/<k>/val, bbh-nlp/<k>/validation, iwslt14/<k>/test/deen.jsonl,
    # tydiqa/<k>/validation (the Flan 2022 file: 8 languages, no English), mgsm/<k>/<lang>.jsonl
    "iwslt14_deen": PaperSet("iwslt14", "deen.jsonl", (0, 1, 2, 3), {"test": "test", "validation": "validation"}),
    "iwslt14_ende": PaperSet("iwslt14", "ende.jsonl", (0, 1, 2, 3), {"test": "test", "validation": "validation"}),
    "mmlu": PaperSet("mmlu", "full.jsonl", (0, 1, 2, 3), {"validation": "val", "test": "test"},
                     "index2subject.json"),
    "bbh_nlp": PaperSet("bbh-nlp", "full.jsonl", (0, 1, 2, 3), {"validation": "validation"}, "index2subject.json"),
    "tydiqa": PaperSet("tydiqa", "flan2022.jsonl", (0, 1), {"validation": "validation"},
                       "flan2022_index2lang.json"),
    **{f"mgsm_{lang}": PaperSet("mgsm", f"{lang}.jsonl", (0, 1, 3, 8), {"test": ""}) for lang in ("en", "de", "zh")},
}


def paper_root() -> Path:
    return data_dir() / PAPER_DIR


def paper_files(name: str, shots: int, split: str) -> list[Path]:
    """The files released set `name`'s `shots`-shot `split` is read from (lines, then subtasks)."""
    ps = PAPER_SETS[name]
    folder = paper_root() / ps.folder / f"{shots}-shot" / ps.splits[split]
    return [folder / ps.file] + ([folder / ps.groups] if ps.groups else [])


def paper_skipped(name: str, shots: int, split: str) -> tuple[int, Path | None]:
    """How many examples the released skip list says were dropped from this set at its maximum length (0 and
    None where no list is released)."""
    ps = PAPER_SETS[name]
    lists = sorted((paper_root() / ps.folder).glob(f"{shots}-shot.maxlength-*.skipped.json"))
    if not lists:
        return 0, None
    counts = json.loads(lists[0].read_text())
    by_split = counts.get(ps.splits[split]) or counts.get(split) or {}
    files = paper_files(name, shots, split)
    if ps.groups and files[1].exists():  # per-subtask counts ("_" where index files have " "), of this file's ones
        present = {g.replace(" ", "_") for g in json.loads(files[1].read_text())} or set(by_split)
        return int(sum(v for k, v in by_split.items() if k in present)), lists[0]
    return int(by_split.get(Path(ps.file).stem, 0)), lists[0]


def paper_rows(name: str, shots: int, split: str) -> list[dict]:
    """Released set `name` exactly as in its files: inputs and targets untouched, the subtask of line i from the
    index file ("mmlu:abstract algebra"), or `name` itself."""
    files = paper_files(name, shots, split)
    require(files, PAPER_SOURCE, PAPER_PREPARE)
    rows = read_jsonl(files[0])
    groups = json.loads(files[1].read_text()) if len(files) > 1 else [""] * len(rows)
    if len(groups) != len(rows):
        raise MissingDataError(f"{files[1]} lists {len(groups)} subtasks for the {len(rows)} lines of {files[0]}; "
                               f"the two must come from the same release ({PAPER_PREPARE})")
    if not rows:
        n, skip_list = paper_skipped(name, shots, split)
        raise MissingDataError(f"{files[0]} holds no example: the released skip list "
                               f"{skip_list or '(none released)'} drops {n} examples of this set at its maximum "
                               "length; evaluate another shot count or split")
    return [{"inputs": r["inputs"], "targets": r["targets"], "task": f"{name}:{g}" if g else name}
            for r, g in zip(rows, groups)]
