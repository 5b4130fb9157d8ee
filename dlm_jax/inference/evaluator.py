"""Task evaluation: examples -> sampler (oracle, fixed or beam-predicted length) -> metrics -> a result dict.

One evaluator serves the trainer's periodic validation and `python -m dlm_jax.evaluate`. Each task's own protocol
(steps, length rule, split, metric) is its `EvalSpec` (`dlm_jax.data.registry.eval_spec`); an `EvalRequest` says
what the caller overrides. Multiple-choice tasks are also scored by rank classification (Monte Carlo ELBO).
"""
from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

import jax
import numpy as np

from dlm_jax.data import eval_specs, metrics, pipeline
from dlm_jax.data.eval_specs import EvalSpec
from dlm_jax.data.features import FeatureSpec
from dlm_jax.data.paper_results import paper_value
from dlm_jax.data.registry import eval_spec, get_task_or_mixture
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.diffusion import SamplerConfig
from dlm_jax.errors import ConfigError
from dlm_jax.inference.generator import Generator, decode_responses, prompts_of

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


class Evaluator:
    """Evaluates tasks with one generator (model + params + vocabulary) and a base sampler config."""

    def __init__(self, generator: Generator, vocab: HFVocabulary, sampler: SamplerConfig, spec: FeatureSpec, *,
                 checkpoint_step: int | None = None):
        self.generator, self.vocab, self.sampler, self.spec = generator, vocab, sampler, spec
        self.checkpoint_step = checkpoint_step

    def examples(self, task: str, split: str, limit: int | None) -> pipeline.Examples:
        return pipeline.load_examples(task, split, self.spec, self.vocab, limit=limit)

    def run_task(self, task: str, request: EvalRequest) -> dict[str, Any]:
        """Loads the task's split and evaluates it: the result dict written as eval/TASK.json."""
        spec = eval_spec(task)
        split = request.split or spec.split
        return self.evaluate(task, self.examples(task, split, request.limit), request, split=split)

    def evaluate(self, task: str, ex: pipeline.Examples, request: EvalRequest, *, split: str) -> dict[str, Any]:
        spec = eval_spec(task)
        sampler = dataclasses.replace(self.sampler, steps=request.steps or spec.steps, record_trajectory=False)
        rng = jax.random.key(request.seed)
        t0 = time.perf_counter()
        out, length_mode = self._decode(ex, spec, request, sampler, rng)
        wall = time.perf_counter() - t0
        hyps = decode_responses(self.vocab.tokenizer, out, self.vocab.eos_id)
        result: dict[str, Any] = {"metrics": {}}
        result.update(self._metrics(task, spec, ex, hyps))
        if spec.choices and request.rank_samples > 0:
            result["metrics"].update(self._rank_classification(ex, request, rng))
        result.update(num_examples=len(hyps), num_skipped=ex.counters.skipped, split=split, length=length_mode,
                      sampler=dataclasses.asdict(sampler), seed=request.seed, checkpoint_step=self.checkpoint_step,
                      mean_evals=float(np.mean(out["num_evals"])), wall_s=wall,
                      examples=[{"input": i, "target": t, "prediction": h}
                                for i, t, h in list(zip(ex.inputs, ex.targets, hyps))[:5]])
        return result

    def _decode(self, ex: pipeline.Examples, spec: EvalSpec, request: EvalRequest, sampler: SamplerConfig,
                rng: jax.Array) -> tuple[dict[str, np.ndarray], str]:
        prompts = prompts_of(ex.rows)
        if request.length == "beam":
            if request.beam < 1:
                raise ConfigError("length='beam' needs a beam size >= 1 (--length_beam B)")
            out = self.generator.generate_with_beam(prompts, request.beam, sampler, rng,
                                                    batch_size=request.batch_size)
            return out, f"beam{request.beam}"
        fixed = spec.length if request.length == "task" and isinstance(spec.length, int) else None
        lengths = ex.rows["response_length"] if fixed is None else np.full(len(prompts), fixed)
        out = self.generator.generate(prompts, lengths.tolist(), sampler, rng, batch_size=request.batch_size)
        return out, "oracle" if fixed is None else f"fixed{fixed}"

    def _metrics(self, task: str, spec: EvalSpec, ex: pipeline.Examples, hyps: list[str]) -> dict[str, Any]:
        """BLEU with the paper's tokenizer both ways (`bleu`: case-insensitive, the paper's; `bleu_cased`), else the
        task's metric_fns."""
        if spec.bleu_tokenize:
            scores, signatures = metrics.bleu_both_ways(ex.targets, hyps, spec.bleu_tokenize)
            cased_note = ("meaningless: the tokenizer lower-cases" if metrics.tokenizer_lowercases(
                self.vocab.tokenizer) else "cased")
            return {"metrics": scores, "signature": signatures["bleu"], "signature_cased": signatures["bleu_cased"],
                    "paper_comparable": "bleu", "bleu_cased_note": cased_note}
        out: dict[str, float] = {}
        for fn in get_task_or_mixture(task, self.vocab).metric_fns:  # some also take each example's subtask
            groups = {"groups": ex.tasks} if "groups" in inspect.signature(fn).parameters else {}
            out.update(fn(ex.targets, hyps, **groups))
        return {"metrics": out}

    def _rank_classification(self, ex: pipeline.Examples, request: EvalRequest, rng: jax.Array) -> dict[str, float]:
        """Multiple choice by likelihood: the option with the lowest Monte Carlo negative ELBO is the answer."""
        options = eval_specs.choice_options(ex.inputs, ex.targets, ex.tasks)
        option_ids = [[list(self.vocab.encode(o)) for o in opts] for opts in options]
        chosen = self.generator.rank_options(prompts_of(ex.rows), option_ids, rng, num_samples=request.rank_samples,
                                             batch_size=request.batch_size)
        picks = [opts[i] for opts, i in zip(options, chosen)]
        acc = metrics.accuracy_micro_macro(ex.targets, picks, ex.tasks)
        return {"rank_accuracy": acc["accuracy_micro"], "rank_accuracy_macro": acc["accuracy_macro"]}


def table_rows(task: str, model_name: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows of one task's result, with the paper's number where the setting (model, length mode, shots)
    matches (`dlm_jax.data.paper_results`)."""
    rows = []
    for k, v in result["metrics"].items():
        paper = paper_value(task, model_name, result["length"], eval_spec(task).shots)
        paper = paper if k == result.get("paper_comparable", k) else None
        mark = " (paper's)" if k == result.get("paper_comparable") else ""
        rows.append(f"| {task} | {k}{mark} | {v:.2f} | {paper if paper is not None else '-'} | {result['length']} | "
                    f"{result['sampler']['steps']} | {result['num_examples']} |")
    return rows


TABLE_HEADER = "| task | metric | ours | paper | length | steps | examples |\n|---|---|---|---|---|---|---|"
