"""Metrics with the paper's settings: sacreBLEU (13a / intl), ROUGE-L, exact match, accuracy, last-number match.

Each metric takes (targets, predictions) lists of strings, as seqio metric_fns do, and returns {name: value}.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

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
