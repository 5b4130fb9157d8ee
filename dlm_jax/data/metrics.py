"""Metrics with the paper's settings: sacreBLEU (13a / intl), ROUGE-L, exact match, accuracy, last-number match.

Each metric takes (targets, predictions) lists of strings, as seqio metric_fns do, and returns {name: value}.
"""
from __future__ import annotations

import inspect
import re
import string
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np


def bleu(targets: Sequence[str], predictions: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False
         ) -> dict[str, float]:
    """Corpus sacreBLEU; `tokenize` "13a" for DE->EN (IWSLT14), "intl" for EN->DE (WMT14).

    `lowercase` only for models whose tokenizer lowercases (uncased BERT): the signature then says case:lc.
    """
    import sacrebleu
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(list(predictions), [list(targets)])
    return {"bleu": float(score.score)}


def bleu_signature(tokenize: str = "13a", lowercase: bool = False) -> str:
    import sacrebleu
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
    metric.corpus_score(["a"], [["a"]])  # the signature records nrefs, known only after scoring
    return str(metric.get_signature())


def bleu_both_ways(targets: Sequence[str], predictions: Sequence[str], tokenize: str = "13a"
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """Case-insensitive BLEU as `bleu` (the paper's: the released decoder lower-cases hypotheses and references)
    and cased BLEU as `bleu_cased`, with each one's sacreBLEU signature."""
    scores = {"bleu": bleu(targets, predictions, tokenize=tokenize, lowercase=True)["bleu"],
              "bleu_cased": bleu(targets, predictions, tokenize=tokenize)["bleu"]}
    signatures = {"bleu": bleu_signature(tokenize, True), "bleu_cased": bleu_signature(tokenize, False)}
    return scores, signatures


def bleu_intl(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    return bleu(targets, predictions, tokenize="intl")


def rouge_l(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L F1 x 100 (rouge-score, with stemming, as LGEB / the paper report)."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    f = [scorer.score(t, p)["rougeL"].fmeasure for t, p in zip(targets, predictions)]
    return {"rougeL": 100.0 * float(np.mean(f)) if f else 0.0}


def normalize_answer(s: str) -> str:
    """SQuAD / TyDiQA normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(targets: Sequence[str | Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """% of predictions equal (normalised) to the target, or to any of several targets."""
    hits = []
    for t, p in zip(targets, predictions):
        options = [t] if isinstance(t, str) else list(t)
        hits.append(any(normalize_answer(o) == normalize_answer(p) for o in options))
    return {"exact_match": 100.0 * float(np.mean(hits)) if hits else 0.0}


def token_f1(target: str, prediction: str) -> float:
    """SQuAD token F1 between two normalised answers."""
    t, p = normalize_answer(target).split(), normalize_answer(prediction).split()
    common = sum(min(t.count(w), p.count(w)) for w in set(t))
    if not t or not p or not common:
        return float(t == p)
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def tydiqa_exact_match(targets: Sequence[str], predictions: Sequence[str], groups: Sequence[str]
                       ) -> dict[str, float]:
    """TyDiQA as released (`scripts/metric_instruct.py` eval_tydiqa after `dd_generator.decode`): raw lower-cased
    exact match against the first gold answer, micro-averaged over the non-English languages (`groups` are
    "tydiqa:<language>"). SQuAD-style normalised EM and token F1 over the same examples are reported beside it."""
    kept = [(t, p) for t, p, g in zip(targets, predictions, groups) if g != "tydiqa:english"]
    if not kept:
        return {"exact_match": 0.0, "exact_match_squad": 0.0, "f1_squad": 0.0}
    return {"exact_match": 100.0 * float(np.mean([t.strip().lower() == p.strip().lower() for t, p in kept])),
            "exact_match_squad": 100.0 * float(np.mean([normalize_answer(t) == normalize_answer(p)
                                                        for t, p in kept])),
            "f1_squad": 100.0 * float(np.mean([token_f1(t, p) for t, p in kept]))}


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    hits = [str(t).strip() == str(p).strip() for t, p in zip(targets, predictions)]
    return {"accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}


def accuracy_micro_macro(targets: Sequence[str], predictions: Sequence[str], groups: Sequence[str]
                         ) -> dict[str, float]:
    """Micro (over questions) and macro (mean over groups, e.g. MMLU subjects) accuracy in %."""
    hits = np.array([str(t).strip() == str(p).strip() for t, p in zip(targets, predictions)], float)
    groups = np.asarray(groups)
    macro = [hits[groups == g].mean() for g in np.unique(groups)] if len(hits) else [0.0]
    return {"accuracy_micro": 100.0 * float(hits.mean() if len(hits) else 0.0),
            "accuracy_macro": 100.0 * float(np.mean(macro))}


_LETTER = re.compile(r"\(?\b([A-J])\b\)?")


def extract_choice(text: str) -> str:
    """The option letter a multiple-choice answer starts with ("(B) Paris" -> "B"); "" if none."""
    m = _LETTER.search(text.strip())
    return m.group(1) if m else ""


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str:
    """The last number in a text, commas removed and trailing ".0" dropped ("" if there is none)."""
    nums = _NUMBER.findall(text)
    if not nums:
        return ""
    n = nums[-1].replace(",", "").rstrip(".")
    if "." in n:
        n = n.rstrip("0").rstrip(".")
    return n


def number_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """GSM8K / MGSM accuracy: the last number of the prediction equals the target number."""
    hits = [last_number(str(t)) == last_number(p) and last_number(p) != "" for t, p in zip(targets, predictions)]
    return {"accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}


def tokenizer_lowercases(tokenizer) -> bool:
    """True for uncased tokenizers (their output can never match mixed-case references)."""
    ids = tokenizer("Paris", add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids).strip() == "paris"


# ----------------------------------------------------------------------------------------------------------
# The released scoring of `scripts/metric_instruct.py` (yegcjs/DiffusionLLM): the paper's own numbers
# ----------------------------------------------------------------------------------------------------------
def released_exact_match(targets: Sequence[str], predictions: Sequence[str], groups: Sequence[str]
                         ) -> dict[str, float]:
    """`eval_mmlu` / `eval_bbh_nlp` / `eval_tydiqa`: the whole stripped, lower-cased hypothesis equals the reference
    (the released decoder lower-cases both), micro (`exact_match`, the "full" entry: MMLU, TyDiQA) and macro over
    the groups (`exact_match_macro`, "full_macro": BBH-nlp) in %; also the letter a multiple-choice answer starts
    with (`choice_accuracy`), which forgives trailing text."""
    acc = accuracy_micro_macro([t.lower() for t in targets], [p.lower() for p in predictions], groups)
    out = {"exact_match": acc["accuracy_micro"], "exact_match_macro": acc["accuracy_macro"]}
    if targets and all(re.fullmatch(r"[A-J]", t.strip()) for t in targets):
        out["choice_accuracy"] = accuracy([t.strip().upper() for t in targets],
                                          [extract_choice(p.upper()) for p in predictions])["accuracy"]
    return out


_RELEASED_NUMBER = re.compile(r"(\d+(,\d+)*)")


def released_number(text: str) -> int | None:
    """`eval_gsm`'s answer: the last run of digits (commas inside removed) as an int; None if there is none.
    Signs and decimals are ignored, as released ("-3" -> 3, "2.5" -> 5)."""
    found = _RELEASED_NUMBER.findall(text)
    return int(found[-1][0].replace(",", "")) if found else None


def released_number_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """MGSM / the paper's GSM8K as released: the last integer of the hypothesis equals the reference's (whose
    `#`-padding holds no digit). `accuracy_signed` (the last signed decimal number, `number_match`) beside it."""
    hits = [released_number(p) is not None and released_number(p) == released_number(t)
            for t, p in zip(targets, predictions)]
    return {"accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0,
            "accuracy_signed": number_match(targets, predictions)["accuracy"]}


# ----------------------------------------------------------------------------------------------------------
# seqio glue: targets that know their example's subtask, metric functions over them
# ----------------------------------------------------------------------------------------------------------
class Target(NamedTuple):
    """A postprocessed target as the tasks' metric functions receive it: the text and the example's subtask
    (e.g. "mmlu:anatomy", "tydiqa:arabic"), for macro averages and per-language filters."""

    text: str
    group: str


def target_with_group(text: str, example: dict | None = None, is_target: bool = False) -> Any:
    """The tasks' seqio `postprocess_fn`: a target becomes a `Target`; a prediction stays its text."""
    if not is_target:
        return text
    group = example.get("task", b"") if example is not None else b""
    return Target(text, group.decode("utf-8") if isinstance(group, bytes) else str(group))


def seqio_metric(fn: Callable[..., dict[str, float]]) -> Callable[[Sequence[Any], Sequence[str]], dict]:
    """`fn(targets, predictions[, groups])` over strings as a seqio metric function over `Target`s."""
    takes_groups = "groups" in inspect.signature(fn).parameters

    def metric(targets: Sequence[Any], predictions: Sequence[str]) -> dict[str, float]:
        texts = [t.text if isinstance(t, Target) else t for t in targets]
        if takes_groups:
            return fn(texts, predictions, groups=[t.group if isinstance(t, Target) else "" for t in targets])
        return fn(texts, predictions)

    metric.__name__ = fn.__name__
    return metric


def bleu_cased_and_uncased(tokenize: str) -> Callable[[Sequence[str], Sequence[str]], dict[str, float]]:
    """A metric function giving `bleu` (case-insensitive, the paper's) and `bleu_cased` with tokenizer `tokenize`."""
    def bleu_both(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
        return bleu_both_ways(targets, predictions, tokenize)[0]
    bleu_both.__name__ = f"bleu_both_{tokenize}"
    return bleu_both


def rank_classification(targets: Sequence[Any], scores: Sequence[Any]) -> dict[str, float]:
    """Multiple choice by likelihood, as a seqio score metric: each score is the option the model's Monte Carlo
    ELBO ranks first (None everywhere when rank classification is off: no metric)."""
    picks = [None if s is None else str(s) for s in list(scores)]
    if not picks or any(p is None or p == "None" for p in picks):
        return {}
    acc = accuracy_micro_macro([t.text for t in targets], picks, [t.group for t in targets])
    return {"rank_accuracy": acc["accuracy_micro"], "rank_accuracy_macro": acc["accuracy_macro"]}
