"""seqio tasks and mixtures of the paper, registered on import.

Every task yields {"inputs", "targets"} (tokenized with `vocab.ACTIVE`, no EOS: the feature converter adds
`<s>`/`</s>`), their `*_pretokenized` strings, and a `task` string. Data locations: `DLM_DATA_DIR` (default: the
repository's `data/`), TFDS via `TFDS_DATA_DIR`. A missing file raises `MissingDataError` naming the files expected,
where they come from and the command that prepares them.

Flan 2022 per-task tasks come from the prepared data (`python -m dlm_jax.data.prepare flan2022`), so they are
registered when the prepared `counts.json` is found: on import, and again by `register_flan2022(data_dir)`.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import seqio
import tensorflow as tf

from dlm_jax.data.vocab import ACTIVE, tokenize_in_batches
from dlm_jax.evaluation import metrics

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
OUTPUT_FEATURES = {"inputs": seqio.Feature(ACTIVE, add_eos=False, required=False),
                   "targets": seqio.Feature(ACTIVE, add_eos=False)}

# Evaluation settings the paper used per task: sampler steps and how the response length is chosen.
EVAL_SETTINGS: dict[str, dict[str, Any]] = {}


class MissingDataError(FileNotFoundError):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("DLM_DATA_DIR", str(REPO_DATA))).expanduser()


def _require(paths: Sequence[Path], source: str, prepare: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingDataError(
            f"missing data files: {', '.join(missing)}.\n  They come from: {source}\n  Prepare them with: {prepare}\n"
            f"  (data root: DLM_DATA_DIR={data_dir()})")


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _text_dataset(rows: Callable[[], Iterable[dict[str, str]]]) -> tf.data.Dataset:
    spec = {"inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
            "task": tf.TensorSpec([], tf.string)}
    return tf.data.Dataset.from_generator(
        lambda: ({"inputs": r["inputs"], "targets": r["targets"], "task": r.get("task", "")} for r in rows()),
        output_signature=spec)


def _function_source(load: Callable[[str], list[dict]], splits: Sequence[str]) -> seqio.FunctionDataSource:
    """A seqio source over a Python loader split -> [{"inputs", "targets", "task"}] (checked when first read)."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        rows = load(split)  # raises MissingDataError before TF sees anything
        return _text_dataset(lambda: rows)

    return seqio.FunctionDataSource(dataset_fn, splits=list(splits))


def _add(name: str, source: seqio.DataSource, *, metric_fns: Sequence[Callable] = (),
         preprocessors: Sequence[Callable] = (), eval_settings: dict[str, Any] | None = None) -> None:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=source,
        preprocessors=[*preprocessors, tokenize_in_batches, seqio.CacheDatasetPlaceholder()],
        output_features=OUTPUT_FEATURES, metric_fns=list(metric_fns))
    if eval_settings:
        EVAL_SETTINGS[name] = eval_settings


def _add_mixture(name: str, tasks: Sequence[tuple[str, float]]) -> None:
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(tasks))


# ----------------------------------------------------------------------------------------------------------
# Translation and summarisation (task-specific finetuning; `_prompt` variants use the paper's instruction)
# ----------------------------------------------------------------------------------------------------------
DE_EN_PROMPT = "Translate the sentences into English. German: {de} English: "
EN_DE_PROMPT = "Translate the sentences into German. English: {en} German: "
TRANSLATION_EVAL = {"steps": 50, "length": "beam", "metric": "bleu", "tokenize": "13a"}


def _pairs_to_rows(pairs: Iterable[tuple[str, str]], task: str, template: str | None, src_key: str
                   ) -> list[dict]:
    return [{"inputs": template.format(**{src_key: s}) if template else s, "targets": t, "task": task}
            for s, t in pairs]


def _ding_pairs(split: str) -> list[tuple[str, str]]:
    name = {"train": "train", "validation": "valid", "test": "test"}[split]
    path = data_dir() / "ding_de_en" / f"{name}.tsv"
    if not path.exists():
        path = REPO_DATA / "ding_de_en" / f"{name}.tsv"
    _require([path], "Debian package trans-de-en (/usr/share/trans/de-en)",
             "apt-get install trans-de-en && python scripts/make_ding_de_en.py")
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line]  # type: ignore[misc]


def _iwslt_pairs(split: str) -> list[tuple[str, str]]:
    name = {"train": "train", "validation": "valid", "test": "test"}[split]
    root = data_dir() / "iwslt14.tokenized.de-en"
    de, en = root / f"{name}.de", root / f"{name}.en"
    _require([de, en], "fairseq examples/translation/prepare-iwslt14.sh (IWSLT'14 German-English)",
             f"bash prepare-iwslt14.sh && mv iwslt14.tokenized.de-en {data_dir()}/")
    unbpe = lambda s: re.sub(r"(@@ )|(@@ ?$)", "", s.strip())  # noqa: E731
    with open(de, encoding="utf-8") as fd, open(en, encoding="utf-8") as fe:
        return [(unbpe(a), unbpe(b)) for a, b in zip(fd, fe)]


def _gigaword_local(split: str) -> list[dict]:
    name = {"train": "train", "validation": "valid", "test": "test"}[split]
    root = data_dir() / "gigaword_10k"
    src, tgt = root / f"{name}.src", root / f"{name}.tgt"
    _require([src, tgt], "the LGEB repository's Gigaword-10K (github CLUEbenchmark/LGEB)",
             f"copy its train/valid/test .src/.tgt files into {root}")
    with open(src, encoding="utf-8") as fs, open(tgt, encoding="utf-8") as ft:
        return [{"inputs": a.strip(), "targets": b.strip(), "task": "gigaword_10k"} for a, b in zip(fs, ft)]


def _tfds_translation(lang_in: str, lang_out: str, template: str | None) -> Callable:
    def prep(ds: tf.data.Dataset) -> tf.data.Dataset:
        def fn(ex):
            src = ex[lang_in]
            if template:
                pre, post = template.split("{" + lang_in + "}")
                src = tf.strings.join([pre, src, post])
            return {"inputs": src, "targets": ex[lang_out], "task": tf.constant("wmt14_en_de")}
        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return prep


def _tfds_gigaword(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda ex: {"inputs": ex["document"], "targets": ex["summary"], "task": tf.constant("gigaword")})


def register_translation_tasks() -> None:
    for suffix, tmpl in (("", None), ("_prompt", DE_EN_PROMPT)):
        _add(f"ding_de_en{suffix}", _function_source(
            lambda s, t=tmpl, n=f"ding_de_en{suffix}": _pairs_to_rows(_ding_pairs(s), n, t, "de"),
            ["train", "validation", "test"]), metric_fns=[metrics.bleu], eval_settings=TRANSLATION_EVAL)
        _add(f"iwslt14_de_en{suffix}", _function_source(
            lambda s, t=tmpl, n=f"iwslt14_de_en{suffix}": _pairs_to_rows(_iwslt_pairs(s), n, t, "de"),
            ["train", "validation", "test"]), metric_fns=[metrics.bleu], eval_settings=TRANSLATION_EVAL)
        _add(f"wmt14_en_de{suffix}", seqio.TfdsDataSource(tfds_name="wmt14_translate/de-en:1.0.0"),
             preprocessors=[_tfds_translation("en", "de", EN_DE_PROMPT if tmpl else None)],
             metric_fns=[metrics.bleu_intl], eval_settings={**TRANSLATION_EVAL, "tokenize": "intl"})
    summ = {"steps": 50, "length": "beam", "metric": "rougeL"}
    _add("gigaword_10k", seqio.TfdsDataSource(
        tfds_name="gigaword:1.2.0", splits={"train": "train[:10000]", "validation": "validation", "test": "test"}),
        preprocessors=[_tfds_gigaword], metric_fns=[metrics.rouge_l], eval_settings=summ)
    _add("gigaword_10k_local", _function_source(_gigaword_local, ["train", "validation", "test"]),
         metric_fns=[metrics.rouge_l], eval_settings=summ)


# ----------------------------------------------------------------------------------------------------------
# Flan 2021 (Muennighoff/flan JSONL: fields inputs, targets, task) and its German-free "strict" variant
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


def _flan2021_rows(split: str, strict: bool) -> list[dict]:
    root = data_dir() / "flan2021"
    files = sorted(root.glob("*.jsonl")) + sorted(root.glob("*.jsonl.gz")) if root.exists() else []
    if not files:
        _require([root / "*.jsonl"], "huggingface.co/datasets/Muennighoff/flan (train files)",
                 f"download its *.jsonl files into {root}")
    rows = [r for f in files for r in _read_jsonl(f)]
    if split != "train":
        raise MissingDataError("flan2021 has only a train split")
    if not strict:
        return rows
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r.get("task", ""), []).append(r)
    return [r for t, rs in by_task.items() if not is_german_task(t, rs) for r in rs]


def register_flan2021() -> None:
    _add("flan2021", _function_source(functools.partial(_flan2021_rows, strict=False), ["train"]))
    _add("flan2021_strict", _function_source(functools.partial(_flan2021_rows, strict=True), ["train"]))


# ----------------------------------------------------------------------------------------------------------
# Flan 2022 (SirNeural/flan_v2 files) with FLAN's mixing rates, and the paper's file-level ratios
# ----------------------------------------------------------------------------------------------------------
FLAN2022_TOP = {"flan2021": 0.4, "t0": 0.32, "niv2": 0.2, "cot": 0.05, "dialog": 0.03}
FLAN2022_FILE_PREFIX = {"flan2021": "flan", "t0": "t0", "niv2": "niv2", "cot": "cot", "dialog": "dialog"}
FLAN2022_TEMPLATES = {"flan2021": ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt"),
                      "t0": ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt"),
                      "niv2": ("zs_opt", "fs_opt"), "cot": ("zs_opt", "fs_opt"), "dialog": ("zs_opt", "fs_opt")}
FLAN2022_CAPS = {"flan2021": 30_000, "t0": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
INVERSION_RATE = 0.3  # CoT and Dialog add input-inverted tasks at 0.3 x the task's rate
FLAN2022_PAPER_RATES = {
    **{f"flan_{t}": 0.1 for t in ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")},
    "t0_fs_noopt": 0.106, "t0_zs_noopt": 0.107, "t0_zs_opt": 0.107,
    "niv2_fs_opt": 0.1, "niv2_zs_opt": 0.1,
    **{f"cot_{t}": 0.025 for t in ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")},
    **{f"dialog_{t}": 0.015 for t in ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")},
}


def _safe(name: str) -> str:
    return re.sub(r"[^\w\d]", "_", name)


def _flan2022_task_rows(path: Path, invert: bool, split: str) -> list[dict]:
    _require([path], "huggingface.co/datasets/SirNeural/flan_v2", "python -m dlm_jax.data.prepare flan2022 --src DIR")
    rows = _read_jsonl(path)
    if invert:
        rows = [{"inputs": r["targets"], "targets": r["inputs"], "task": r.get("task", "") + "_inverted"}
                for r in rows]
    return rows


def register_flan2022(root: Path | None = None) -> bool:
    """Registers per-task tasks and the `flan2022_submix` / `flan2022_paper` mixtures from prepared data.

    Returns False (registering nothing) when `ROOT/flan2022/counts.json` does not exist yet.
    """
    root = (root or data_dir()) / "flan2022"
    counts_file = root / "counts.json"
    if not counts_file.exists():
        return False
    counts: dict[str, dict[str, int]] = json.loads(counts_file.read_text())
    submixes = []
    for submix, templates in FLAN2022_TEMPLATES.items():
        template_mixes = []
        for tmpl in templates:
            stem = f"{FLAN2022_FILE_PREFIX[submix]}_{tmpl}"
            entries = []
            for task, n in sorted(counts.get(stem, {}).items()):
                path = root / "by_task" / stem / f"{_safe(task)}.jsonl"
                rate = float(min(FLAN2022_CAPS[submix], n))
                name = f"flan2022:{stem}:{_safe(task)}"
                _add(name, _function_source(functools.partial(_flan2022_task_rows, path, False), ["train"]))
                entries.append((name, rate))
                if submix in ("cot", "dialog"):
                    _add(name + "_inverted",
                         _function_source(functools.partial(_flan2022_task_rows, path, True), ["train"]))
                    entries.append((name + "_inverted", INVERSION_RATE * rate))
            if entries:
                _add_mixture(f"flan2022:{stem}", entries)
                template_mixes.append((f"flan2022:{stem}", 1.0))
        if template_mixes:
            _add_mixture(f"flan2022:{submix}_submix", template_mixes)
            submixes.append((f"flan2022:{submix}_submix", FLAN2022_TOP[submix]))
    _add_mixture("flan2022_submix", submixes)
    files = []
    for stem, rate in FLAN2022_PAPER_RATES.items():
        if stem in counts:
            paths = [root / "by_task" / stem / f"{_safe(t)}.jsonl" for t in sorted(counts[stem])]
            _add(f"flan2022_file:{stem}", _function_source(
                lambda s, ps=tuple(paths): [r for p in ps for r in _flan2022_task_rows(p, False, s)], ["train"]))
            files.append((f"flan2022_file:{stem}", rate))
    _add_mixture("flan2022_paper", files)
    return True


# ----------------------------------------------------------------------------------------------------------
# Evaluation tasks: MMLU, BBH-nlp, TyDiQA-GoldP, GSM8K, MGSM-de (0-shot and few-shot)
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


def _mmlu_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "mmlu"
    val, dev = root / "validation.jsonl", root / "dev.jsonl"
    _require([val] + ([dev] if shots else []), "huggingface.co/datasets/cais/mmlu (all: validation, dev)",
             f"python -m dlm_jax.data.prepare mmlu --src DIR_WITH_PARQUET --out {root}")
    demos_by_subject: dict[str, list[dict]] = {}
    for d in (_read_jsonl(dev) if shots else []):
        demos_by_subject.setdefault(d["subject"], []).append(d)
    rng = random.Random(seed)
    rows = []
    for ex in _read_jsonl(val):
        target = LETTERS[int(ex["answer"])]
        prompt = mmlu_prompt(ex)
        if shots:
            pool = demos_by_subject.get(ex["subject"], [])
            demos = rng.sample(pool, min(shots, len(pool)))
            prompt = " | ".join([f"{mmlu_prompt(d)} {LETTERS[int(d['answer'])]}" for d in demos] + [prompt])
        rows.append({"inputs": prompt, "targets": target, "task": f"mmlu:{ex['subject']}"})
    return rows


def _bbh_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "bbh"
    files = [root / f"{t}.json" for t in BBH_NLP]
    _require(files, "github suzgunmirac/BIG-Bench-Hard bbh/*.json (or huggingface lukaemon/bbh)",
             f"copy the 12 NLP task files into {root}")
    rng = random.Random(seed)
    rows = []
    for t, f in zip(BBH_NLP, files):
        exs = json.loads(f.read_text())["examples"]
        for i, ex in enumerate(exs):
            prompt = f"{ex['input']} A:"
            if shots:
                demos = rng.sample([e for j, e in enumerate(exs) if j != i], min(shots, len(exs) - 1))
                prompt = "\n\n".join([f"{d['input']} A: {d['target']}" for d in demos] + [prompt])
            rows.append({"inputs": prompt, "targets": ex["target"].strip("()"), "task": f"bbh:{t}"})
    return rows


def tydiqa_prompt(ex: dict) -> str:
    return (f"Please answer each of the question according to the given context in {ex['language']}. "
            f"context: {ex['context']} Q: {ex['question']} A:")


def _tydiqa_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "tydiqa_goldp"
    val, train = root / "validation.jsonl", root / "train.jsonl"
    _require([val] + ([train] if shots else []), "huggingface.co/datasets/khalidalt/tydiqa-goldp",
             f"write {{context, question, answers, language}} JSONL files into {root}")
    pool = _read_jsonl(train) if shots else []
    rng = random.Random(seed)
    rows = []
    for ex in _read_jsonl(val):
        prompt = tydiqa_prompt(ex)
        if shots:
            same = [d for d in pool if d["language"] == ex["language"]] or pool
            demos = rng.sample(same, min(shots, len(same)))
            prompt = "\n\n".join([f"{tydiqa_prompt(d)} {d['answers'][0]}" for d in demos] + [prompt])
        rows.append({"inputs": prompt, "targets": json.dumps(ex["answers"]), "task": f"tydiqa:{ex['language']}"})
    return rows


def gsm_prompt(question: str) -> str:
    return f" Question: {question} Step-by-Step Answer: "


def _gsm8k_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "gsm8k"
    test, train = root / "test.jsonl", root / "train.jsonl"
    _require([test] + ([train] if shots else []), "github openai/grade-school-math (grade_school_math/data)",
             f"copy test.jsonl and train.jsonl into {root}")
    rng = random.Random(seed)
    pool = _read_jsonl(train) if shots else []
    rows = []
    for ex in _read_jsonl(test):
        prompt = gsm_prompt(ex["question"])
        if shots:
            demos = rng.sample(pool, shots)
            prompt = "".join(f"{gsm_prompt(d['question'])}{d['answer'].split('####')[0].strip()} The answer is "
                             f"{d['answer'].split('####')[-1].strip()}." for d in demos) + prompt
        rows.append({"inputs": prompt, "targets": ex["answer"].split("####")[-1].strip(), "task": "gsm8k"})
    return rows


def _mgsm_de_rows(split: str, shots: int, seed: int = 0) -> list[dict]:
    root = data_dir() / "mgsm"
    test = root / "mgsm_de.tsv"
    _require([test], "github google-research/url-nlp mgsm/mgsm_de.tsv", f"copy mgsm_de.tsv into {root}")
    exs = [line.rstrip("\n").split("\t") for line in test.read_text(encoding="utf-8").splitlines() if line]
    rng = random.Random(seed)
    rows = []
    for i, (q, a) in enumerate(exs):
        prompt = gsm_prompt(q)
        if shots:
            demos = rng.sample([e for j, e in enumerate(exs) if j != i], shots)
            prompt = "".join(f"{gsm_prompt(dq)}The answer is {da}." for dq, da in demos) + prompt
        rows.append({"inputs": prompt, "targets": a, "task": "mgsm_de"})
    return rows


def _tydiqa_em(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    return metrics.exact_match([json.loads(t) for t in targets], predictions)


_OPTION_LETTER = re.compile(r"\(([A-J])\)")


def choice_options(inputs: Sequence[str], targets: Sequence[str], groups: Sequence[str]) -> list[list[str]]:
    """The answer options of each multiple-choice example, for rank classification.

    Lettered questions (MMLU, most BBH tasks: "(A) ... (B) ...") get the letters of their last question (few-shot
    prompts hold earlier questions too); others (BBH yes/no, valid/invalid, ...) get every distinct target of their
    subtask (`groups`, e.g. "bbh:sports_understanding"), in sorted order.
    """
    by_group: dict[str, set[str]] = {}
    for t, g in zip(targets, groups):
        by_group.setdefault(g, set()).add(t)
    out = []
    for x, g in zip(inputs, groups):
        last = re.split(r"\n\n| \| ", x)[-1]
        letters = sorted(set(_OPTION_LETTER.findall(last)))
        out.append(letters if len(letters) >= 2 else sorted(by_group[g]))
    return out


def _choice_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Letter targets ("B") compare with the letter the prediction starts with; word targets ("Yes", "valid")
    with the prediction's first word, case-insensitively."""
    def pick(t: str, p: str) -> str:
        if re.fullmatch(r"[A-J]", t.strip()):
            return metrics.extract_choice(p)
        words = metrics.normalize_answer(p).split()
        return words[0] if words else ""
    return metrics.accuracy([t if re.fullmatch(r"[A-J]", t.strip()) else metrics.normalize_answer(t)
                             for t in targets], [pick(t, p) for t, p in zip(targets, predictions)])


EVAL_TASKS = {
    # name: (loader, shots, metric, settings)
    # "choices": multiple choice, also scored by rank classification (likelihood of each option).
    "mmlu": (_mmlu_rows, 0, _choice_accuracy, {"steps": 1, "length": 2, "split": "validation", "choices": True}),
    "mmlu_5shot": (_mmlu_rows, 5, _choice_accuracy, {"steps": 1, "length": 2, "split": "validation",
                                                     "choices": True}),
    "bbh_nlp": (_bbh_rows, 0, _choice_accuracy, {"steps": 1, "length": 2, "split": "validation", "choices": True}),
    "bbh_nlp_3shot": (_bbh_rows, 3, _choice_accuracy, {"steps": 1, "length": 2, "split": "validation",
                                                       "choices": True}),
    "tydiqa_goldp": (_tydiqa_rows, 0, _tydiqa_em, {"steps": 10, "length": "beam", "beam": 3, "split": "validation"}),
    "tydiqa_goldp_1shot": (_tydiqa_rows, 1, _tydiqa_em, {"steps": 10, "length": "beam", "beam": 3,
                                                          "split": "validation"}),
    "gsm8k": (_gsm8k_rows, 0, metrics.number_match, {"steps": 50, "length": 60, "split": "test"}),
    "gsm8k_8shot": (_gsm8k_rows, 8, metrics.number_match, {"steps": 50, "length": 60, "split": "test"}),
    "mgsm_de": (_mgsm_de_rows, 0, metrics.number_match, {"steps": 50, "length": 60, "split": "test"}),
    "mgsm_de_8shot": (_mgsm_de_rows, 8, metrics.number_match, {"steps": 50, "length": 60, "split": "test"}),
}


def register_eval_tasks() -> None:
    for name, (loader, shots, metric, settings) in EVAL_TASKS.items():
        split = settings["split"]
        _add(name, _function_source(lambda s, f=loader, k=shots: f(s, k), [split]), metric_fns=[metric],
             eval_settings=settings)
    _add_mixture("flan_eval_zero_shot", [(n, 1.0) for n in ("mmlu", "bbh_nlp", "tydiqa_goldp", "gsm8k", "mgsm_de")])
    _add_mixture("flan_eval_few_shot", [(n, 1.0) for n in ("mmlu_5shot", "bbh_nlp_3shot", "tydiqa_goldp_1shot",
                                                            "gsm8k_8shot", "mgsm_de_8shot")])


def register_all() -> None:
    register_translation_tasks()
    register_flan2021()
    register_eval_tasks()
    register_flan2022()


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
    """The registered task or mixture `name`; a clear error listing the known names otherwise."""
    if name.startswith("flan2022") and name not in seqio.MixtureRegistry.names():
        register_flan2022()
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = sorted(n for n in [*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()] if ":" not in n)
        hint = " (Flan 2022 needs `python -m dlm_jax.data.prepare flan2022` first)" if "flan2022" in name else ""
        raise ValueError(f"unknown task or mixture {name!r}{hint}; registered: {known}") from None


register_all()
