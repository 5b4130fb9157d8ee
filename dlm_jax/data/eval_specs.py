"""How each task is evaluated: sampler steps, how the response length is chosen, the split, the metric.

`EvalSpec` is the per-task evaluation policy the evaluator (`dlm_jax.inference.evaluator`) follows; the metric
functions here are the ones multiple-choice and QA tasks carry as seqio `metric_fns`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from dlm_jax.data import metrics


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """The evaluation protocol of one task.

    Attributes:
      steps: sampler steps S (1 for multiple choice, 10 for short QA, 50 for translation and reasoning).
      length: "beam" (length predictor; the oracle length where none is given) or a fixed response length.
      split: the evaluated split.
      bleu_tokenize: sacreBLEU tokenizer when the metric is BLEU ("13a", "intl"); None: the task's metric_fns.
      choices: multiple choice (also scored by rank classification).
      beam: the paper's length-beam size for the task, where it fixes one.
      shots: demonstrations in each prompt.
    """

    steps: int = 50
    length: str | int = "beam"
    split: str = "test"
    bleu_tokenize: str | None = None
    choices: bool = False
    beam: int | None = None
    shots: int = 0


TRANSLATION = EvalSpec(steps=50, length="beam", bleu_tokenize="13a")
TRANSLATION_INTL = EvalSpec(steps=50, length="beam", bleu_tokenize="intl")
SUMMARIZATION = EvalSpec(steps=50, length="beam")
MULTIPLE_CHOICE = EvalSpec(steps=1, length=2, split="validation", choices=True)
SHORT_QA = EvalSpec(steps=10, length="beam", split="validation", beam=3)
REASONING = EvalSpec(steps=50, length=60, split="test")
DEFAULT = EvalSpec()


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


def choice_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Letter targets ("B") compare with the letter the prediction starts with; word targets ("Yes", "valid")
    with the prediction's first word, case-insensitively."""
    def pick(t: str, p: str) -> str:
        if re.fullmatch(r"[A-J]", t.strip()):
            return metrics.extract_choice(p)
        words = metrics.normalize_answer(p).split()
        return words[0] if words else ""
    return metrics.accuracy([t if re.fullmatch(r"[A-J]", t.strip()) else metrics.normalize_answer(t)
                             for t in targets], [pick(t, p) for t, p in zip(targets, predictions)])
