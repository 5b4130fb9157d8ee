"""Metric functions against hand-computed values and the reference packages called directly."""
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from dlm_jax.data import metrics


def test_bleu_matches_sacrebleu_and_signatures():
    refs = ["The cat sat on the mat.", "It is raining today."]
    hyps = ["The cat sat on a mat.", "it is raining today ."]
    assert metrics.bleu(refs, hyps)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert metrics.bleu(refs, refs)["bleu"] == pytest.approx(100.0)
    assert metrics.bleu_intl(refs, hyps)["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [refs], tokenize="intl").score)
    assert metrics.bleu(refs, hyps, lowercase=True)["bleu"] > metrics.bleu(refs, hyps)["bleu"]
    assert metrics.bleu_signature("13a").startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert "tok:intl" in metrics.bleu_signature("intl") and "case:lc" in metrics.bleu_signature("13a", True)


def test_rouge_l_matches_rouge_score():
    refs, hyps = ["police kill the gunman", "a b c d"], ["the gunman was killed by police", "a c d"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    want = 100 * sum(scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps)) / 2
    assert metrics.rouge_l(refs, hyps)["rougeL"] == pytest.approx(want)
    # by hand: LCS("a b c d", "a c d") = 3, P = 1, R = 3/4, F = 6/7
    assert metrics.rouge_l(["a b c d"], ["a c d"])["rougeL"] == pytest.approx(100 * 6 / 7)


def test_exact_match_accuracy_and_numbers():
    assert metrics.exact_match([["Paris", "paris city"], "The Eiffel Tower"], ["paris.", "eiffel tower"])[
        "exact_match"] == 100.0
    assert metrics.exact_match(["a cat"], ["dog"])["exact_match"] == 0.0
    assert metrics.extract_choice("(B) Paris") == "B" and metrics.extract_choice("C") == "C" and metrics.extract_choice("??") == ""
    r = metrics.accuracy_micro_macro(["A", "B", "C", "D"], ["A", "B", "C", "A"], ["x", "x", "x", "y"])
    assert r["accuracy_micro"] == 75.0 and r["accuracy_macro"] == pytest.approx(50.0)
    assert metrics.last_number("so 3 + 4 = 7, the answer is 1,234.50") == "1234.5"
    assert metrics.number_match(["72", "10"], ["... is 72.", "It is 11"])["accuracy"] == 50.0
    assert metrics.last_number("no digits") == ""


def test_paper_numbers_are_keyed_by_task_model_length_and_shots():
    from dlm_jax.data.paper_results import PAPER, paper_value
    assert paper_value("iwslt14_de_en", "xlmr-base", "beam10", 0) == 34.10
    assert paper_value("iwslt14_de_en", "xlmr-xxl", "oracle", 0) == 40.65
    assert paper_value("mmlu", "xlmr-xxl", "fixed2", 2) == 42.06  # multiple choice: any fixed length
    assert paper_value("tydiqa_goldp", "xlmr-base", "beam3", 1) == 10.24
    assert paper_value("mmlu", "xlmr-base", "fixed2", 5) is None  # the paper has no 5-shot MMLU
    assert len(PAPER) == 6 * 4 + 6 + 6 + 4 + 16 * 4  # Tables 5, 1 (scratch, baselines), 2 (strict Flan 2021), 6
    assert paper_value("iwslt14_de_en", "transformer-iwslt:ar", "ar-beam5", 0) == 33.30  # any decoding setting
    assert paper_value("wmt14_en_de", "transformer-base:rdm", "oracle", 0) == 26.54
    assert paper_value("iwslt14_de_en", "scratch:ar", "ar-greedy", 0) == 26.07


def test_bleu_both_ways_is_case_insensitive_as_the_paper_and_cased_beside_it():
    refs, hyps = ["The cat sat on the Mat ."], ["the cat sat on the mat ."]
    scores, sigs = metrics.bleu_both_ways(refs, hyps)
    assert scores["bleu"] == pytest.approx(100.0)  # the released decoder lower-cases both sides
    assert scores["bleu_cased"] < 100.0
    assert scores["bleu_cased"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert "case:lc" in sigs["bleu"] and "case:mixed" in sigs["bleu_cased"]


def test_tydiqa_is_raw_lowercased_exact_match_over_the_non_english_languages():
    targets = ["Paris", "Dar es Salaam", "the Nile", "42"]
    preds = ["paris", "Dar es Salaam.", "Nile", "41"]
    groups = ["tydiqa:finnish", "tydiqa:swahili", "tydiqa:arabic", "tydiqa:english"]
    m = metrics.tydiqa_exact_match(targets, preds, groups)
    assert m["exact_match"] == pytest.approx(100 / 3)  # only "paris" matches raw (lower-cased); English left out
    assert m["exact_match_squad"] == pytest.approx(100.0)  # punctuation and articles normalised away
    assert m["f1_squad"] == pytest.approx(100.0)
    assert metrics.token_f1("the big cat", "big dog") == pytest.approx(0.5)
