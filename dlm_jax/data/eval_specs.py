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
      fixed_eos: the sampler canvas for this task (True: the released `[prompt, <mask> x L, </s>]`); None: the
        run's `sampler.fixed_eos`.
      paper_metric: the metric key the paper reports (marked as the paper's in the JSON and the table).
      paper_key: the task's name in `dlm_jax.data.paper_results` (default: the task's own name).
      length_free: the paper's number has no length setting (multiple choice, reasoning): it is printed beside
        ours whatever length rule we used.
    """

    steps: int = 50
    length: str | int = "beam"
    split: str = "test"
    bleu_tokenize: str | None = None
    choices: bool = False
    beam: int | None = None
    shots: int = 0
    fixed_eos: bool | None = None
    paper_metric: str | None = None
    paper_key: str | None = None
    length_free: bool = False


TRANSLATION = EvalSpec(steps=50, length="beam", bleu_tokenize="13a", paper_metric="bleu")
TRANSLATION_INTL = EvalSpec(steps=50, length="beam", bleu_tokenize="intl", paper_metric="bleu")
SUMMARIZATION = EvalSpec(steps=50, length="beam", paper_metric="rougeL")
MULTIPLE_CHOICE = EvalSpec(steps=1, length=2, split="validation", choices=True, paper_metric="accuracy",
                           length_free=True)
SHORT_QA = EvalSpec(steps=10, length="beam", split="validation", beam=3, paper_metric="exact_match")
REASONING = EvalSpec(steps=50, length=60, split="test", paper_metric="accuracy", length_free=True)
DEFAULT = EvalSpec()

# The released files (`data/instruct`): the released canvas, the oracle length of the released target (MGSM's
# targets are `#`-padded to 60 tokens, so that is the released reasoning canvas), the released metric's key.
BBH = dataclasses.replace(MULTIPLE_CHOICE, paper_metric="accuracy_macro")

PAPER_TRANSLATION = dataclasses.replace(TRANSLATION, fixed_eos=True, split="test")
PAPER_TRANSLATION_INTL = dataclasses.replace(TRANSLATION_INTL, fixed_eos=True, split="test")
PAPER_MMLU = EvalSpec(steps=1, length="beam", split="validation", choices=True, fixed_eos=True,
                      paper_metric="exact_match", length_free=True)
PAPER_BBH = dataclasses.replace(PAPER_MMLU, paper_metric="exact_match_macro")
PAPER_TYDIQA = dataclasses.replace(SHORT_QA, fixed_eos=True)
PAPER_MGSM = EvalSpec(steps=50, length="beam", split="test", fixed_eos=True, paper_metric="accuracy",
                      length_free=True)


_OPTION_LETTER = re.compile(r"\(([A-J])\)")


def choice_options(inputs: Sequence[str], targets: Sequence[str], groups: Sequence[str]) -> list[list[str]]:
    """The answer options of each multiple-choice example, for rank classification.

    Lettered questions (MMLU, BBH as released: "(A) ... (B) ...") get the letters of their last question (few-shot
    prompts hold earlier questions too); others get every distinct target of their subtask (`groups`), sorted.
    """
    by_group: dict[str, set[str]] = {}
    for t, g in zip(targets, groups):
        by_group.setdefault(g, set()).add(t)
    out = []
    for x, g in zip(inputs, groups):
        last = re.split(r"\n\n| \| ?", x)[-1]
        letters = sorted(set(_OPTION_LETTER.findall(last)))
        out.append(letters if len(letters) >= 2 else sorted(by_group[g]))
    return out


def choice_accuracy(targets: Sequence[str], predictions: Sequence[str], groups: Sequence[str]) -> dict[str, float]:
    """Letter targets ("B") compare with the letter the prediction starts with; word targets ("Yes", "valid")
    with the prediction's first word, case-insensitively. Micro (`accuracy`) and macro over the subtasks
    (`accuracy_macro`: BBH-nlp's reported average) in %."""
    def pick(t: str, p: str) -> str:
        if re.fullmatch(r"[A-J]", t.strip()):
            return metrics.extract_choice(p)
        words = metrics.normalize_answer(p).split()
        return words[0] if words else ""
    gold = [t.strip() if re.fullmatch(r"[A-J]", t.strip()) else metrics.normalize_answer(t) for t in targets]
    acc = metrics.accuracy_micro_macro(gold, [pick(t, p) for t, p in zip(targets, predictions)], groups)
    return {"accuracy": acc["accuracy_micro"], "accuracy_macro": acc["accuracy_macro"]}
