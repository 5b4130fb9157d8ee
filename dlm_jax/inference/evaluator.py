"""Task evaluation through `seqio.Evaluator`: the jitted sampler as `predict_fn`, the Monte Carlo ELBO as `score_fn`.

One evaluator serves the trainer's periodic validation and `python -m dlm_jax.evaluate`. Each task's own protocol
(steps, length rule, canvas, split, metric) is its `EvalSpec` (`dlm_jax.data.registry.eval_spec`); an
`EvalRequest` says what the caller overrides. seqio caches each task's split once (`TaskData`, reusable across
checkpoints), decodes the predictions with the task's vocabulary, postprocesses them and runs the task's metric
functions; multiple-choice tasks are also ranked by likelihood (`metrics.rank_classification`). A mixture is
evaluated task by task, each with its own protocol, and summarised (`mixture_summary`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from dlm_jax.quiet import import_tensorflow

import_tensorflow()  # before seqio: TensorFlow's start-up lines are captured
import seqio  # noqa: E402
from absl import logging as absl_logging

from dlm_jax.data import eval_specs, features, metrics, pipeline
from dlm_jax.data.eval_specs import EvalSpec
from dlm_jax.data.features import FeatureSpec
from dlm_jax.data.paper_results import paper_value
from dlm_jax.data.registry import check_split, eval_spec, get_task_or_mixture, mixture_members
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.diffusion import SamplerConfig
from dlm_jax.errors import ConfigError, InputError, MissingDataError, UserError
from dlm_jax.inference.generator import Generator, response_ids
from dlm_jax.model import NAMED_CONFIGS, family_of


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """What the caller sets; None / "task" leave the task's own protocol.

    Attributes:
      length: "task" (the task's fixed length, else the oracle length), "oracle", or "beam" (length predictor).
      beam: the length-beam size with length="beam".
      steps: sampler steps for every task (None: each task's own).
      split, limit: the evaluated split (None: the task's) and its first `limit` examples.
      rank_samples: ELBO samples per option for rank classification of multiple choice (0: off).
    """

    length: str = "task"
    beam: int = 0
    steps: int | None = None
    split: str | None = None
    limit: int | None = None
    batch_size: int = 64
    rank_samples: int = 8
    seed: int = 0


@dataclasses.dataclass
class TaskData:
    """One task's evaluation split, tokenized, filtered to the row length and cached by `seqio.Evaluator`."""

    task: str
    spec: EvalSpec
    split: str
    seqio_evaluator: seqio.Evaluator
    num_skipped: int


def task_names(name: str, vocab: HFVocabulary) -> list[str]:
    """The tasks a task or mixture name evaluates, in the mixture's order."""
    obj = get_task_or_mixture(name, vocab)
    if not isinstance(obj, seqio.Mixture):
        return [name]
    return [t for member in mixture_members(name) for t in task_names(member, vocab)]


def check_available(names: list[str], vocab: HFVocabulary, split: str | None) -> None:
    """Reads every task's source once: all missing files of all tasks in one `MissingDataError`."""
    problems = []
    for name in names:
        task = get_task_or_mixture(name, vocab)
        wanted = split or eval_spec(name).split
        check_split(name, task, wanted)
        try:
            task.source.get_dataset(wanted, shuffle=False)
        except UserError as e:
            problems.append(f"- {name}: {e}")
    if len(problems) == 1:
        raise MissingDataError(f"evaluation data is missing for {problems[0][2:]}")
    if problems:  # a mixture: every missing file of every task, one per line
        raise MissingDataError("evaluation data is missing:\n" + "\n".join(problems))


def load_task_data(task: str, vocab: HFVocabulary, spec: FeatureSpec, request: EvalRequest) -> TaskData:
    """seqio's cached split of `task`: rows longer than `spec.max_length` skipped (`registry.skip_overlong`) and
    counted."""
    espec = eval_spec(task)
    split = request.split or espec.split
    room = spec.max_length - int(spec.separator)  # seqio's `skip_overlong` counts <s> and </s>, not a separator
    length = {"inputs": room, "targets": room}
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # seqio's notes on unused sequence length and loggers
    try:
        evaluator = seqio.Evaluator(
            mixture_or_task_name=task, feature_converter=pipeline.EvalFeatureConverter(), eval_split=split,
            use_cached=False, seed=request.seed, sequence_length=length, num_examples=request.limit, shuffle=False,
            logger_cls=(), use_memory_cache=True)
    finally:
        absl_logging.set_verbosity(verbosity)
    if not evaluator.eval_tasks:
        raise ConfigError(f"{task} has no metric functions or no {split!r} split: it cannot be evaluated")
    if not len(evaluator.cached_task_datasets[task]):
        raise InputError(f"{task}/{split}: no example fits in max_length={spec.max_length}")
    ds = get_task_or_mixture(task, vocab).get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
    ds = ds.take(request.limit) if request.limit else ds
    skip = dataclasses.replace(spec, overlong="skip")
    skipped = sum(not features.keeps(len(ex["inputs"]), len(ex["targets"]), skip) for ex in ds.as_numpy_iterator())
    return TaskData(task, espec, split, evaluator, skipped)


class Evaluator:
    """Evaluates tasks with one generator (model + params + vocabulary) and a base sampler config."""

    def __init__(self, generator: Generator, vocab: HFVocabulary, sampler: SamplerConfig, spec: FeatureSpec, *,
                 checkpoint_step: int | None = None):
        self.generator, self.vocab, self.sampler = generator, vocab, sampler
        self.spec = dataclasses.replace(spec, overlong="skip")  # evaluation skips what does not fit, as the paper
        self.checkpoint_step = checkpoint_step

    def load(self, task: str, request: EvalRequest) -> TaskData:
        return load_task_data(task, self.vocab, self.spec, request)

    def run_task(self, task: str, request: EvalRequest) -> dict[str, Any]:
        """Loads the task's split and evaluates it: the result dict written as eval/TASK.json."""
        return self.evaluate(self.load(task, request), request)

    def evaluate(self, data: TaskData, request: EvalRequest) -> dict[str, Any]:
        spec = data.spec
        fixed_eos = self.sampler.fixed_eos if spec.fixed_eos is None else spec.fixed_eos
        sampler = dataclasses.replace(self.sampler, steps=request.steps or spec.steps, record_trajectory=False,
                                      fixed_eos=fixed_eos)
        rng = jax.random.key(request.seed)
        decoded: dict[str, Any] = {}
        t0 = time.perf_counter()
        future, _ = data.seqio_evaluator.evaluate(
            compute_metrics=True, step=self.checkpoint_step,
            predict_fn=lambda ds: self._predict(ds, spec, request, sampler, rng, decoded),
            score_fn=lambda ds: self._rank(ds, request, rng))
        task_metrics = future.result()[data.task]
        wall = time.perf_counter() - t0
        result: dict[str, Any] = {"metrics": {k: float(v) for k, v in _scalars(task_metrics).items()}}
        result.update(_metric_notes(spec, self.vocab))
        result.update(num_examples=decoded["n"], num_skipped=data.num_skipped, split=data.split,
                      length=decoded["length"], shots=spec.shots, sampler=dataclasses.asdict(sampler),
                      seed=request.seed, checkpoint_step=self.checkpoint_step,
                      mean_evals=decoded["mean_evals"], wall_s=wall, examples=self._examples(data, decoded))
        if self.generator.decoding is not None:
            result["decoding"] = dataclasses.asdict(self.generator.decoding)
        return result

    def _predict(self, ds: Any, spec: EvalSpec, request: EvalRequest, sampler: SamplerConfig, rng: jax.Array,
                 decoded: dict[str, Any]) -> list[tuple[int, list[int]]]:
        """seqio's predict_fn: every cached example -> the sampler's response ids (up to `</s>`)."""
        indices, prompts, lengths = [], [], []
        for index, ex in ds.as_numpy_iterator():
            row = features.layout(ex["inputs"], ex["targets"], self.spec)
            assert row is not None, "skip_overlong keeps only rows that fit"
            indices.append(int(index))
            prompts.append(list(ex["inputs"]))
            lengths.append(int(row["response_length"]))
        out, decoded["length"] = self._decode(prompts, lengths, spec, request, sampler, rng)
        ids = response_ids(out["tokens"], out["response_mask"], self.vocab.eos_id)
        decoded.update(n=len(ids), mean_evals=float(np.mean(out["num_evals"])),
                       predictions=dict(zip(indices, ids)))
        padded = np.full((len(ids), self.spec.max_length), self.vocab.pad_id, np.int32)  # seqio wants one array
        for row, seq in zip(padded, ids):
            row[:len(seq)] = seq
        return list(zip(indices, padded))

    def _decode(self, prompts: list[list[int]], oracle: list[int], spec: EvalSpec, request: EvalRequest,
                sampler: SamplerConfig, rng: jax.Array) -> tuple[dict[str, np.ndarray], str]:
        decoding = self.generator.decoding
        if decoding is not None:  # an AR run: its own lengths, from KV-cache decoding
            out = self.generator.generate(prompts, oracle, sampler, rng, batch_size=request.batch_size)
            return out, "ar-greedy" if decoding.beam_size == 1 else f"ar-beam{decoding.beam_size}"
        if request.length == "beam":
            if request.beam < 1:
                raise ConfigError("length='beam' needs a beam size >= 1 (--length_beam B)")
            out = self.generator.generate_with_beam(prompts, request.beam, sampler, rng,
                                                    batch_size=request.batch_size)
            return out, f"beam{request.beam}"
        fixed = spec.length if request.length == "task" and isinstance(spec.length, int) else None
        lengths = oracle if fixed is None else [fixed] * len(prompts)
        out = self.generator.generate(prompts, lengths, sampler, rng, batch_size=request.batch_size)
        return out, "oracle" if fixed is None else f"fixed{fixed}"

    def _rank(self, ds: Any, request: EvalRequest, rng: jax.Array) -> list[tuple[int, str | None]]:
        """seqio's score_fn for multiple choice: the option with the lowest Monte Carlo negative ELBO."""
        exs = [(int(i), ex) for i, ex in ds.as_numpy_iterator()]
        if request.rank_samples <= 0:
            return [(i, None) for i, _ in exs]
        text = lambda ex, k: ex[k].decode("utf-8") if isinstance(ex[k], bytes) else str(ex[k])  # noqa: E731
        options = eval_specs.choice_options([text(ex, "inputs_pretokenized") for _, ex in exs],
                                            [text(ex, "targets_pretokenized") for _, ex in exs],
                                            [text(ex, "task") for _, ex in exs])
        option_ids = [[list(self.vocab.encode(o)) for o in opts] for opts in options]
        chosen = self.generator.rank_options([list(ex["inputs"]) for _, ex in exs], option_ids, rng,
                                             num_samples=request.rank_samples, batch_size=request.batch_size)
        return [(i, opts[c]) for (i, _), opts, c in zip(exs, options, chosen)]

    def _examples(self, data: TaskData, decoded: dict[str, Any], n: int = 5) -> list[dict[str, str]]:
        out = []
        for index, ex in enumerate(data.seqio_evaluator.cached_task_datasets[data.task].take(n).as_numpy_iterator()):
            out.append({"input": ex["inputs_pretokenized"].decode("utf-8"),
                        "target": ex["targets_pretokenized"].decode("utf-8"),
                        "prediction": self.vocab.decode(decoded["predictions"][index])})
        return out


def _scalars(task_metrics: dict[str, Any]) -> dict[str, float]:
    """seqio's metric values (clu Scalars or floats) as floats."""
    out = {}
    for k, v in task_metrics.items():
        v = getattr(v, "value", v)
        if np.ndim(v) == 0:
            out[k] = float(v)
    return out


def _metric_notes(spec: EvalSpec, vocab: HFVocabulary) -> dict[str, Any]:
    """Which metric is the paper's, and for BLEU both sacreBLEU signatures."""
    notes: dict[str, Any] = {"paper_comparable": spec.paper_metric}
    if spec.bleu_tokenize:
        notes.update(signature=metrics.bleu_signature(spec.bleu_tokenize, True),
                     signature_cased=metrics.bleu_signature(spec.bleu_tokenize, False),
                     bleu_cased_note="meaningless: the tokenizer lower-cases"
                     if metrics.tokenizer_lowercases(vocab.tokenizer) else "cased")
    return notes


def mixture_summary(name: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """eval/MIXTURE.json: each task's paper-comparable metric (and setting), and their unweighted mean."""
    per_task = {}
    for task, r in results.items():
        key = r.get("paper_comparable") or next(iter(r["metrics"]), None)
        per_task[task] = {"metric": key, "value": r["metrics"].get(key), "length": r["length"], "shots": r["shots"],
                          "steps": r["sampler"]["steps"], "num_examples": r["num_examples"],
                          "num_skipped": r["num_skipped"]}
    values = [t["value"] for t in per_task.values() if t["value"] is not None]
    return {"mixture": name, "tasks": per_task, "macro_average": float(np.mean(values)) if values else None,
            "note": "the unweighted mean of each task's paper-comparable metric (BLEU and accuracies mixed)"}


def paper_model(run: Any) -> str:
    """The model name `paper_results` keys a run's numbers by: the named config; "scratch" for a randomly
    initialised XLM-R-BASE shape (":ar" for the decoder-only AR baseline); "<name>:ar" / "<name>:rdm" for the
    encoder-decoder Transformers."""
    name = run.model.name
    if name in NAMED_CONFIGS and family_of(NAMED_CONFIGS[name]).kind == "encoder-decoder":
        return f"{name}:{run.objective}"
    if run.model.init == "random" and name == "xlmr-base":
        return "scratch:ar" if run.objective == "ar" else "scratch"
    return name


def table_rows(task: str, model_name: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows of one task's result, with the paper's number where the setting (model, length mode, shots)
    matches (`dlm_jax.data.paper_results`)."""
    spec = eval_spec(task)
    setting = "fixed" if spec.length_free else result["length"]
    rows = []
    for k, v in result["metrics"].items():
        is_paper = k == result.get("paper_comparable")
        paper = paper_value(spec.paper_key or task, model_name, setting, spec.shots) if is_paper else None
        mark = " (paper's)" if is_paper else ""
        rows.append(f"| {task} | {k}{mark} | {v:.2f} | {paper if paper is not None else '-'} | {result['length']} | "
                    f"{'-' if 'decoding' in result else result['sampler']['steps']} | {result['num_examples']} |")
    return rows


TABLE_HEADER = "| task | metric | ours | paper | length | steps | examples |\n|---|---|---|---|---|---|---|"
