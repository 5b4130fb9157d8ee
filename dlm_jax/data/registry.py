"""The seqio tasks and mixtures of the paper, registered explicitly for a given vocabulary.

`register_all(vocab)` registers every task (reading no data: sources are read when a split is first asked for)
with output features over `vocab`; `get_task_or_mixture(name, vocab)` registers on first use (or when the
vocabulary changed) and returns the task. Every task yields {"inputs", "targets"} ids (no EOS: the feature layout
adds `<s>` / `</s>`), their `*_pretokenized` strings, and a `task` string. Each task's evaluation policy is
`eval_spec(name)`.

Flan 2022 per-task tasks come from the prepared data (`python -m dlm_jax.data.prepare flan2022`), so they are
registered when the prepared `counts.json` is found.
"""
from __future__ import annotations

import difflib

import dataclasses
import functools
import itertools
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

from dlm_jax.quiet import import_tensorflow

import_tensorflow()  # before seqio: TensorFlow's start-up lines are captured
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from dlm_jax.data import eval_specs, metrics, sources
from dlm_jax.data.eval_specs import EvalSpec
from dlm_jax.data.vocab import HFVocabulary, tokenize_in_batches
from dlm_jax.errors import ConfigError, InputError, MissingDataError, UserError

_EVAL_SPECS: dict[str, EvalSpec] = {}
_REGISTERED_WITH: list[HFVocabulary] = []  # the vocabulary the registry's tasks currently use
_MIXTURE_ORDER: dict[str, list[str]] = {}  # a mixture's members as listed (seqio sorts them by name)
# task -> split -> a random-access sequence of its {"inputs", "targets"} rows (tasks whose source allows it)
_ROW_ACCESS: dict[str, Callable[[str], Sequence[dict]]] = {}


def row_access(name: str) -> Callable[[str], Sequence[dict]] | None:
    """split -> random-access rows of task `name` (`pipeline.IndexedBatches`), or None (e.g. TFDS tasks)."""
    return _ROW_ACCESS.get(name)


def eval_spec(name: str) -> EvalSpec:
    """How task `name` is evaluated (`eval_specs.DEFAULT` for tasks without their own policy)."""
    return _EVAL_SPECS.get(name, eval_specs.DEFAULT)


def _output_features(vocab: HFVocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocab, add_eos=False, required=False),
            "targets": seqio.Feature(vocab, add_eos=False)}


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

    source = seqio.FunctionDataSource(dataset_fn, splits=list(splits))
    source.dlm_rows = load  # the same rows as a Python list: random access for `pipeline.IndexedBatches`
    return source


def skip_overlong(ds: tf.data.Dataset, sequence_length: dict[str, int] | None = None) -> tf.data.Dataset:
    """Drops examples whose `<s> inputs targets </s>` row exceeds `sequence_length["targets"]` (the evaluator's
    row length), as the paper skipped them; without a sequence length (training, `pipeline`) keeps everything."""
    if not sequence_length or not sequence_length.get("targets"):
        return ds
    limit = int(sequence_length["targets"])
    return ds.filter(lambda ex: tf.size(ex["inputs"]) + tf.size(ex["targets"]) + 2 <= limit)


class _Registrar:
    """Adds tasks and mixtures over one vocabulary (replacing earlier registrations of the same names).

    Every task's targets are postprocessed to `metrics.Target` (text + the example's subtask) and its metric
    functions see them through `metrics.seqio_metric`, so macro averages and per-language filters run inside
    `seqio.Evaluator`."""

    def __init__(self, vocab: HFVocabulary):
        self.features = _output_features(vocab)

    def task(self, name: str, source: seqio.DataSource, *, metric_fns: Sequence[Callable] = (),
             preprocessors: Sequence[Callable] = (), spec: EvalSpec | None = None,
             rows: Callable[[str], Sequence[dict]] | None = None) -> None:
        """`rows`: split -> random-access rows of the same examples (no preprocessors), for indexed streams."""
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
        _ROW_ACCESS.pop(name, None)
        rows = rows or getattr(source, "dlm_rows", None)
        if rows is not None and not preprocessors:
            _ROW_ACCESS[name] = rows
        metric_fns = [metrics.seqio_metric(f) for f in metric_fns]
        if spec is not None and spec.choices:
            metric_fns.append(metrics.rank_classification)  # a score metric: the evaluator's score_fn ranks
        seqio.TaskRegistry.add(
            name, source=source,
            preprocessors=[*preprocessors, tokenize_in_batches, seqio.CacheDatasetPlaceholder(), skip_overlong],
            output_features=self.features, postprocess_fn=metrics.target_with_group,
            metric_fns=metric_fns)
        if spec is not None:
            _EVAL_SPECS[name] = spec

    @staticmethod
    def mixture(name: str, tasks: Sequence[tuple[str, float]]) -> None:
        if name in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove(name)
        seqio.MixtureRegistry.add(name, list(tasks))
        _MIXTURE_ORDER[name] = [t for t, _ in tasks]


# ----------------------------------------------------------------------------------------------------------
# Translation and summarisation (task-specific finetuning; `_prompt` variants use the paper's instruction)
# ----------------------------------------------------------------------------------------------------------
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


def register_translation_tasks(reg: _Registrar) -> None:
    """The paper's sources by default (Appendix A: fairseq's prepare scripts, LGEB's Gigaword-10K); the TFDS
    versions as `*_tfds` alternatives."""
    splits = ["train", "validation", "test"]
    for suffix, de_en, en_de in (("", None, None), ("_prompt", sources.DE_EN_PROMPT, sources.EN_DE_PROMPT)):
        for base, pairs, tmpl, src, spec in (
                ("ding_de_en", sources.ding_pairs, de_en, "de", eval_specs.TRANSLATION),
                ("iwslt14_de_en", sources.iwslt_pairs, de_en, "de", eval_specs.TRANSLATION),
                ("wmt14_en_de", sources.wmt14_pairs, en_de, "en", eval_specs.TRANSLATION_INTL)):
            name = base + suffix
            reg.task(name, _function_source(
                lambda s, t=tmpl, n=name, p=pairs, k=src: sources.pairs_to_rows(p(s), n, t, k), splits),
                metric_fns=[metrics.bleu_cased_and_uncased(spec.bleu_tokenize)], spec=spec)
        reg.task(f"wmt14_en_de_tfds{suffix}", TfdsSource(tfds_name="wmt14_translate/de-en:1.0.0",
                                                          local="wmt14_en_de"),
                 preprocessors=[_tfds_translation("en", "de", en_de)],
                 metric_fns=[metrics.bleu_cased_and_uncased("intl")], spec=eval_specs.TRANSLATION_INTL)
    reg.task("gigaword_10k", _function_source(sources.gigaword_local_rows, splits),
             metric_fns=[metrics.rouge_l], spec=eval_specs.SUMMARIZATION)
    # Magpie pairs of SmolLM2-135M-Instruct (bench/magpie.py): ROUGE-L and BLEU against the model's own answers
    reg.task("magpie_smollm2", _function_source(sources.magpie_rows, splits),
             metric_fns=[metrics.rouge_l, metrics.bleu_cased_and_uncased("13a")], spec=eval_specs.SUMMARIZATION)
    reg.task("gigaword_10k_tfds", TfdsSource(
        tfds_name="gigaword:1.2.0", splits={"train": "train[:10000]", "validation": "validation", "test": "test"},
        local="gigaword_10k"),
        preprocessors=[_tfds_gigaword], metric_fns=[metrics.rouge_l], spec=eval_specs.SUMMARIZATION)


class TfdsSource(seqio.TfdsDataSource):
    """seqio's TFDS source where a data set that is not prepared under TFDS_DATA_DIR (and cannot be fetched: no
    network, or a builder's missing module) is one `MissingDataError` naming the fix, not a library traceback."""

    def __init__(self, *args, local: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._local = local

    def _check_prepared(self) -> None:
        """Never downloads at run time (TFDS would retry for minutes without network, on every host)."""
        import tensorflow_datasets as tfds
        from absl import logging as absl_logging
        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about missing variant folders before we say so
        try:
            builder = tfds.builder(self.tfds_dataset.name, data_dir=self.tfds_dataset.data_dir)
            prepared = builder.is_prepared()
        finally:
            absl_logging.set_verbosity(verbosity)
        if not prepared:
            raise MissingDataError(
                f"TFDS data set {self.tfds_dataset.name} is not prepared under {builder.data_dir_root}; prepare it "
                f"where there is network (tfds build {self.tfds_dataset.name.split(':')[0]}) and point "
                f"TFDS_DATA_DIR at the result, or use the task {self._local!r}, which reads local files "
                "(DLM_DATA_DIR)")

    def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
        try:
            self._check_prepared()
            return super().get_dataset(*args, **kwargs)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - TFDS raises many kinds for "not here and cannot download"
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise MissingDataError(
                f"TFDS data set {self.tfds_dataset.name} could not be loaded ({type(e).__name__}: {why}); prepare it "
                "on a machine with network (tfds build NAME) and point TFDS_DATA_DIR at the result, or use the "
                f"task {self._local!r}, which reads local files (DLM_DATA_DIR)") from None


def register_flan2021(reg: _Registrar) -> None:
    reg.task("flan2021", _function_source(functools.partial(sources.flan2021_rows, strict=False), ["train"]))
    reg.task("flan2021_strict", _function_source(functools.partial(sources.flan2021_rows, strict=True), ["train"]))


# ----------------------------------------------------------------------------------------------------------
# Flan 2022 (SirNeural/flan_v2 files) with FLAN's mixing rates, and the paper's file-level ratios
# ----------------------------------------------------------------------------------------------------------
FLAN2022_TOP = {"flan2021": 0.4, "t0": 0.32, "niv2": 0.2, "cot": 0.05, "dialog": 0.03}
FLAN2022_FILE_PREFIX = {"flan2021": "flan", "t0": "t0", "niv2": "niv2", "cot": "cot", "dialog": "dialog"}
FLAN2022_TEMPLATES = {"flan2021": ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt"),
                      "t0": ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt"),
                      "niv2": ("zs_opt", "fs_opt"), "cot": ("zs_opt", "fs_opt"), "dialog": ("zs_opt", "fs_opt")}
FLAN2022_CAPS = {"flan2021": 30_000, "t0": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
# FLAN's CoT-II / Dialog-II: input-inversion tasks with their own (inverted) templates, mixed at 0.3 x the rate
# of CoT / Dialog (flan/v2/mixtures.py). They are tasks of the exported cot_* / dialog_* files already, named
# "..._ii" or "..._input_inversion..." (flan/v2/task_configs.py); dlm_jax weighs them, it makes none itself.
INVERSION_RATE = 0.3
# The paper's file-level ratios: the released scripts/flan_2022_ratio.json (13 files; CoT and Dialog opt only).
FLAN2022_PAPER_RATES = {
    **{f"flan_{t}": 0.1 for t in ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")},
    "t0_fs_noopt": 0.106, "t0_zs_noopt": 0.107, "t0_zs_opt": 0.107,
    "niv2_fs_opt": 0.1, "niv2_zs_opt": 0.1,
    "cot_fs_opt": 0.025, "cot_zs_opt": 0.025,
    "dialog_fs_opt": 0.015, "dialog_zs_opt": 0.015,
}


def is_input_inversion(task: str) -> bool:
    """FLAN's input-inversion tasks (CoT-II, Dialog-II): "cot_gsm8k_ii", "wiki_dialog_input_inversion"."""
    return task.endswith("_ii") or "input_inversion" in task


def _flan2022_template_mix(reg: _Registrar, root: Path, submix: str, stem: str, counts: dict[str, int]) -> bool:
    """Registers the per-task tasks of one file (`stem`) and their mixture; False when the file has no task."""
    entries = []
    for task, n in sorted(counts.items()):
        path = sources.flan2022_task_file(root, stem, task)
        rate = float(min(FLAN2022_CAPS[submix], n))
        if submix in ("cot", "dialog") and is_input_inversion(task):
            rate *= INVERSION_RATE
        name = f"flan2022:{stem}:{sources.safe_name(task)}"
        reg.task(name, _function_source(functools.partial(sources.flan2022_task_rows, path), ["train"]),
                 rows=lambda split, p=path: sources.JsonlRows(p))
        entries.append((name, rate))
    if entries:
        reg.mixture(f"flan2022:{stem}", entries)
    return bool(entries)


def register_flan2022(reg: _Registrar, root: Path | None = None) -> bool:
    """Registers per-task tasks and the `flan2022_submix` / `flan2022_paper` mixtures from prepared data.

    Returns False (registering nothing) when `ROOT/flan2022/counts.json` does not exist yet.
    """
    root = sources.flan2022_root(root)
    counts_file = root / "counts.json"
    if not counts_file.exists():
        return False
    counts: dict[str, dict[str, int]] = json.loads(counts_file.read_text())
    submixes = []
    for submix, templates in FLAN2022_TEMPLATES.items():
        stems = [f"{FLAN2022_FILE_PREFIX[submix]}_{t}" for t in templates]
        template_mixes = [(f"flan2022:{s}", 1.0) for s in stems
                          if _flan2022_template_mix(reg, root, submix, s, counts.get(s, {}))]
        if template_mixes:
            reg.mixture(f"flan2022:{submix}_submix", template_mixes)
            submixes.append((f"flan2022:{submix}_submix", FLAN2022_TOP[submix]))
    reg.mixture("flan2022_submix", submixes)
    files = []
    for stem, rate in FLAN2022_PAPER_RATES.items():
        if stem in counts:
            paths = tuple(sources.flan2022_task_file(root, stem, t) for t in sorted(counts[stem]))
            reg.task(f"flan2022_file:{stem}", _function_source(
                lambda s, ps=paths: [r for p in ps for r in sources.flan2022_task_rows(p, s)], ["train"]),
                rows=lambda split, ps=paths: sources.ConcatRows([sources.JsonlRows(p) for p in ps]))
            files.append((f"flan2022_file:{stem}", rate))
    reg.mixture("flan2022_paper", files)
    return True


# ----------------------------------------------------------------------------------------------------------
# Evaluation tasks
# ----------------------------------------------------------------------------------------------------------
EVAL_SETS: dict[str, tuple[Callable, Callable, EvalSpec, int]] = {
    # base name: (reader(split, shots), metric, evaluation policy, most demonstrations the source provides)
    "mmlu": (sources.mmlu_rows, eval_specs.choice_accuracy, eval_specs.MULTIPLE_CHOICE, 5),  # MMLU dev: 5/subject
    "bbh_nlp": (sources.bbh_rows, eval_specs.choice_accuracy, eval_specs.BBH, 3),  # BBH cot-prompts: 3 per task
    "tydiqa_goldp": (sources.tydiqa_rows, metrics.tydiqa_exact_match, eval_specs.SHORT_QA, 8),
    "gsm8k": (sources.gsm8k_rows, metrics.number_match, eval_specs.REASONING, 8),  # the full GSM8K test set
    # the paper's "GSM8K" is MGSM's English split; MGSM-de with the German prompt (Shi et al.: 8 exemplars)
    "mgsm_en": (functools.partial(sources.mgsm_rows, lang="en"), metrics.number_match, eval_specs.REASONING, 8),
    "mgsm_de": (functools.partial(sources.mgsm_rows, lang="de"), metrics.number_match, eval_specs.REASONING, 8),
}
MAX_SHOTS = 8  # few-shot variants `<set>_<k>shot` for k = 1..8 (as far as the source has demonstrations)


def eval_task_name(base: str, shots: int) -> str:
    return base if shots == 0 else f"{base}_{shots}shot"


def register_eval_tasks(reg: _Registrar) -> None:
    """The from-source evaluation sets with 0..8 demonstrations (`mmlu`, `mmlu_2shot`, ...), IWSLT14 few-shot
    prompts, Table 6's mixtures and `flan_eval_<k>shot` mixtures for long-context models (ModernBERT)."""
    for base, (reader, metric, spec, most) in EVAL_SETS.items():
        for k in range(0, min(most, MAX_SHOTS) + 1):
            reg.task(eval_task_name(base, k), _function_source(lambda s, f=reader, kk=k: f(s, kk), [spec.split]),
                     metric_fns=[metric], spec=dataclasses.replace(spec, shots=k, paper_key=base))
    # k-shot translation prompts: IWSLT14 (Table 6's) and the built-in pairs (long prompts on any machine)
    for k, (base, pairs) in itertools.product(range(1, MAX_SHOTS + 1), (("iwslt14_de_en_prompt", sources.iwslt_pairs),
                                                                         ("ding_de_en", sources.ding_pairs))):
        name = f"{base}_{k}shot"
        reg.task(name, _function_source(lambda s, kk=k, n=name, p=pairs: sources.few_shot_rows(p, s, kk, n),
                                        ["test", "validation"]),
                 metric_fns=[metrics.bleu_cased_and_uncased("13a")],
                 spec=dataclasses.replace(eval_specs.TRANSLATION, shots=k, paper_key=base))
    # Table 6's tasks and shots, built from the original datasets
    reg.mixture("flan_eval_zero_shot", [(n, 1.0) for n in ("iwslt14_de_en_prompt", "mmlu", "bbh_nlp", "tydiqa_goldp",
                                                           "mgsm_en", "mgsm_de")])
    reg.mixture("flan_eval_few_shot", [(n, 1.0) for n in ("iwslt14_de_en_prompt_2shot", "mmlu_2shot",
                                                          "bbh_nlp_2shot", "tydiqa_goldp_1shot", "mgsm_en_3shot",
                                                          "mgsm_de_3shot")])
    for k in range(1, MAX_SHOTS + 1):  # k demonstrations everywhere (BBH: at most its 3)
        reg.mixture(f"flan_eval_{k}shot", [(eval_task_name(b, min(k, EVAL_SETS[b][3])), 1.0)
                                           for b in ("mmlu", "bbh_nlp", "tydiqa_goldp", "mgsm_en", "mgsm_de")]
                    + [(f"iwslt14_de_en_prompt_{k}shot", 1.0)])


# ----------------------------------------------------------------------------------------------------------
# The paper's own evaluation files (`python -m dlm_jax.data.prepare diffusionllm_instruct`)
# ----------------------------------------------------------------------------------------------------------
PAPER_EVAL: dict[str, tuple[EvalSpec, Callable, str]] = {
    # released set: (evaluation policy, metric as `scripts/metric_instruct.py` computes it, key in paper_results)
    "iwslt14_deen": (eval_specs.PAPER_TRANSLATION, metrics.bleu_cased_and_uncased("13a"), "iwslt14_de_en_prompt"),
    "iwslt14_ende": (eval_specs.PAPER_TRANSLATION_INTL, metrics.bleu_cased_and_uncased("intl"), "iwslt14_en_de"),
    "mmlu": (eval_specs.PAPER_MMLU, metrics.released_exact_match, "mmlu"),
    "bbh_nlp": (eval_specs.PAPER_BBH, metrics.released_exact_match, "bbh_nlp"),
    "tydiqa": (eval_specs.PAPER_TYDIQA, metrics.released_exact_match, "tydiqa_goldp"),
    **{f"mgsm_{lang}": (eval_specs.PAPER_MGSM, metrics.released_number_match, f"mgsm_{lang}")
       for lang in ("en", "de", "zh")},
}
# scripts/eval_instruct.sh's list with Table 6's shots
PAPER_ZERO_SHOT = ("iwslt14_deen", "mmlu", "bbh_nlp", "tydiqa", "mgsm_en", "mgsm_de")
PAPER_FEW_SHOT = {"iwslt14_deen": 2, "mmlu": 2, "bbh_nlp": 2, "tydiqa": 1, "mgsm_en": 3, "mgsm_de": 3}


def paper_task(name: str, shots: int) -> str:
    return f"paper:{name}:{shots}shot"


def register_paper_tasks(reg: _Registrar) -> None:
    """`paper:<set>:<k>shot` for every released set and shot count, and the `paper_zero_shot` /
    `paper_few_shot` mixtures (Table 6's shots)."""
    for name, ps in sources.PAPER_SETS.items():
        spec, metric, key = PAPER_EVAL[name]
        for k in ps.shots:
            reg.task(paper_task(name, k), _function_source(
                lambda s, n=name, kk=k: sources.paper_rows(n, kk, s), list(ps.splits)), metric_fns=[metric],
                spec=dataclasses.replace(spec, shots=k, paper_key=key))
    reg.mixture("paper_zero_shot", [(paper_task(n, 0), 1.0) for n in PAPER_ZERO_SHOT])
    reg.mixture("paper_few_shot", [(paper_task(n, k), 1.0) for n, k in PAPER_FEW_SHOT.items()])


def register_all(vocab: HFVocabulary, *, flan2022_root: Path | None = None) -> None:
    """Registers every task and mixture with output features over `vocab`."""
    reg = _Registrar(vocab)
    register_translation_tasks(reg)
    register_flan2021(reg)
    register_eval_tasks(reg)
    register_paper_tasks(reg)
    register_flan2022(reg, flan2022_root)
    _REGISTERED_WITH[:] = [vocab]


def mixture_members(name: str) -> list[str]:
    """The members of registered mixture `name` (tasks or mixtures) in the order they were listed."""
    return list(_MIXTURE_ORDER.get(name, [t.name for t in seqio.get_mixture_or_task(name).tasks]))


def check_split(name: str, task: seqio.Task | seqio.Mixture, split: str) -> None:
    """One `InputError` naming the splits when `task` has no `split` (a TFDS source lists its splits only once the
    data set is prepared: that is checked when it is read)."""
    try:
        splits = task.splits
    except ValueError:
        return
    if splits and split not in splits:
        close = difflib.get_close_matches(split, list(splits), n=1)
        raise InputError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))


def get_task_or_mixture(name: str, vocab: HFVocabulary) -> seqio.Task | seqio.Mixture:
    """The task or mixture `name` over `vocab` (registering first where needed); a clear error listing the known
    names otherwise."""
    if _REGISTERED_WITH != [vocab] or (name.startswith("flan2022") and name not in seqio.MixtureRegistry.names()):
        register_all(vocab)
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        close = difflib.get_close_matches(name, registered_names(), n=5, cutoff=0.5)
        hint = " (Flan 2022 needs `python -m dlm_jax.data.prepare flan2022` first)" if "flan2022" in name else ""
        near = f"closest: {', '.join(close)}; " if close else ""
        raise ConfigError(f"unknown task or mixture {name!r}{hint}; {near}list them all with "
                          "python -m dlm_jax.data.show --list") from None


def registered_names() -> list[str]:
    """Every registered task and mixture name (the paper's `paper:<set>:<k>shot` tasks included)."""
    return sorted({*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()})
