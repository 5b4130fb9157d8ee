"""The paper's own evaluation files (released layout: `data/instruct/<set>/<k>-shot/...`), their tasks, metrics and
mixtures, end to end through seqio.Evaluator. The fixtures are written here in the released format (small, made up:
not the released content)."""
import json
from pathlib import Path

import pytest

from dlm_jax.data import metrics, registry, sources
from dlm_jax.data.prepare import prepare_diffusionllm_instruct
from dlm_jax.errors import MissingDataError

REPO = Path(__file__).resolve().parents[1]
PAD = " ".join(["#"] * 6)  # the released MGSM targets are "#"-padded (to 60 tokens there)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


def write_released(root: Path) -> Path:
    """A tiny `data/instruct` tree in the released layout (the sets and shots `eval_instruct.sh` evaluates)."""
    for k in (0, 2):
        demos = "".join(f" German: demo {j}. English: demo {j}." for j in range(k))
        for split in ("test", "validation"):
            _jsonl(root / "iwslt14" / f"{k}-shot" / split / "deen.jsonl", [
                {"inputs": f"Translate the sentences into English. {demos} German: das haus {i}. English: ",
                 "targets": f"the house {i}."} for i in range(3)])
        _json(root / "iwslt14" / f"{k}-shot.maxlength-512.skipped.json", {"validation": {}, "test": {"deen": k}})
        for folder, name, subjects in (("mmlu", "val", ["abstract algebra", "anatomy"]),
                                       ("bbh-nlp", "validation", ["snarks", "hyperbaton"])):
            prefix = " | ".join(f"Q: d{j} (A) x A: A" for j in range(k))
            rows = [{"inputs": (prefix + " | " if k else "") + f"Q: {i}? (A) x (B) y (C) z A:",
                     "targets": "ABC"[i % 3]} for s in subjects for i in range(2 + subjects.index(s))]
            _jsonl(root / folder / f"{k}-shot" / name / "full.jsonl", rows)
            _json(root / folder / f"{k}-shot" / name / "index2subject.json",
                  [s for s in subjects for _ in range(2 + subjects.index(s))])
            _json(root / folder / f"{k}-shot.maxlength-512.skipped.json",
                  {name if folder == "mmlu" else "validation": {s.replace(" ", "_"): 1 for s in subjects}})
        for lang, word in (("en", "Question"), ("de", "Frage")):
            _jsonl(root / "mgsm" / f"{k + 1 if k else 0}-shot" / f"{lang}.jsonl", [
                {"inputs": f" {word}: {i} + 1? Step: ", "targets": f"{PAD} {i + 1}"} for i in range(3)])
    for k in (0, 1):
        langs = ["arabic", "arabic", "swahili"]
        _jsonl(root / "tydiqa" / f"{k}-shot" / "validation" / "flan2022.jsonl", [
            {"inputs": f"Please answer ... in {g}. context: c{i} Q: q{i} A:", "targets": f"a{i}"}
            for i, g in enumerate(langs)])
        _json(root / "tydiqa" / f"{k}-shot" / "validation" / "flan2022_index2lang.json", langs)
        _json(root / "tydiqa" / f"{k}-shot.maxlength-512.skipped.json",
              {"validation": {"arabic": 3, "english": 5, "swahili": 1}})
    return root


@pytest.fixture()
def released(tmp_path, monkeypatch, bert_vocab):
    src = write_released(tmp_path / "clone" / "data" / "instruct")
    monkeypatch.setenv("DLM_DATA_DIR", str(tmp_path / "data"))
    prepare_diffusionllm_instruct(src, tmp_path / "data" / sources.PAPER_DIR)
    registry.register_all(bert_vocab)
    return src


def test_prepare_copies_the_released_files_byte_for_byte(released, tmp_path):
    out = tmp_path / "data" / sources.PAPER_DIR
    for f in released.rglob("*.json*"):
        assert (out / f.relative_to(released)).read_bytes() == f.read_bytes(), f
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sets"]["mmlu:2shot:validation"]["examples"] == 5
    assert "mgsm/8-shot/en.jsonl" in manifest["not_released_here"]
    with pytest.raises(MissingDataError, match="no released evaluation file"):
        prepare_diffusionllm_instruct(tmp_path / "empty", tmp_path / "x")


def test_paper_rows_read_the_files_untouched_with_their_subtasks(released):
    rows = sources.paper_rows("mmlu", 2, "validation")
    src = [json.loads(line) for line in (released / "mmlu/2-shot/val/full.jsonl").read_text().splitlines()]
    assert [(r["inputs"], r["targets"]) for r in rows] == [(s["inputs"], s["targets"]) for s in src]
    assert [r["task"] for r in rows] == ["mmlu:abstract algebra"] * 2 + ["mmlu:anatomy"] * 3
    assert sources.paper_rows("mgsm_de", 3, "test")[0]["targets"] == f"{PAD} 1"
    assert sources.paper_skipped("tydiqa", 0, "validation")[0] == 4  # only this file's languages (no English)
    assert sources.paper_skipped("iwslt14_deen", 2, "test")[0] == 2
    few = registry.eval_spec("paper:tydiqa:1shot")
    assert (few.shots, few.steps, few.fixed_eos, few.paper_metric) == (1, 10, True, "exact_match")
    assert registry.eval_spec("paper:bbh_nlp:2shot").paper_metric == "exact_match_macro"
    assert registry.mixture_members("paper_few_shot") == [
        "paper:iwslt14_deen:2shot", "paper:mmlu:2shot", "paper:bbh_nlp:2shot", "paper:tydiqa:1shot",
        "paper:mgsm_en:3shot", "paper:mgsm_de:3shot"]


def test_empty_file_names_the_released_skip_list(released, tmp_path):
    (tmp_path / "data" / sources.PAPER_DIR / "tydiqa/1-shot/validation/flan2022.jsonl").write_text("")
    _json(tmp_path / "data" / sources.PAPER_DIR / "tydiqa/1-shot/validation/flan2022_index2lang.json", [])
    with pytest.raises(MissingDataError, match=r"(?s)holds no example.*1-shot\.maxlength-512\.skipped\.json.*drops 9"):
        sources.paper_rows("tydiqa", 1, "validation")


def test_released_metrics_by_hand():
    # MMLU / TyDiQA: micro exact match of the whole lower-cased, stripped text; BBH-nlp: the macro average
    m = metrics.released_exact_match(["A", "B", "C", "A"], ["a", " B ", "C.", "(A) x"], ["s1", "s1", "s1", "s2"])
    assert m["exact_match"] == 50.0 and m["exact_match_macro"] == pytest.approx((2 / 3 * 100 + 0) / 2)
    assert m["choice_accuracy"] == 100.0  # the leading letter forgives "C." and "(A) x"
    assert metrics.released_number(f"{PAD} 1,234") == 1234 and metrics.released_number("-3 or 2.5") == 5
    assert metrics.released_number("no digits") is None
    m = metrics.released_number_match([f"{PAD} 18", f"{PAD} 3", f"{PAD} 5"], ["so 18.", "it is -3", "none"])
    assert m["accuracy"] == pytest.approx(200 / 3) and m["accuracy_signed"] == pytest.approx(100 / 3)
    t = [metrics.target_with_group("x", {"task": b"tydiqa:arabic"}, is_target=True)]
    assert t == [metrics.Target("x", "tydiqa:arabic")] and metrics.target_with_group("y") == "y"
    wrapped = metrics.seqio_metric(metrics.released_exact_match)
    assert wrapped(t, ["X"])["exact_match"] == 100.0


def _evaluate(workdir, data_dir, *args):
    from conftest import cli
    return cli("dlm_jax.evaluate", "--workdir", str(workdir), *args, timeout=600, env={"DLM_DATA_DIR": str(data_dir)})


@pytest.mark.slow
def test_paper_mixtures_end_to_end_through_seqio_evaluator(released, tmp_path, tiny_trained):
    r = _evaluate(tiny_trained, tmp_path / "data", "--tasks", "paper_zero_shot,paper_few_shot", "--rank_samples",
                  "1", "--batch_size", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    ev = tiny_trained / "eval"
    expect = {"paper.iwslt14_deen.2shot": (50, "oracle", "bleu", 2), "paper.mmlu.2shot": (1, "oracle",
              "exact_match", 2), "paper.bbh_nlp.0shot": (1, "oracle", "exact_match_macro", 0),
              "paper.tydiqa.1shot": (10, "oracle", "exact_match", 1), "paper.mgsm_de.3shot": (50, "oracle",
              "accuracy", 3)}
    for name, (steps, length, metric, shots) in expect.items():
        res = json.loads((ev / f"{name}.json").read_text())
        assert (res["sampler"]["steps"], res["length"], res["paper_comparable"], res["shots"]) == (
            steps, length, metric, shots), name
        assert res["sampler"]["fixed_eos"] is True and metric in res["metrics"]
    mmlu = json.loads((ev / "paper.mmlu.2shot.json").read_text())
    assert {"exact_match", "exact_match_macro", "choice_accuracy", "rank_accuracy"} <= set(mmlu["metrics"])
    assert mmlu["num_examples"] == 5 and mmlu["examples"][0]["input"].startswith("Q: d0 (A) x A: A | Q: d1 (A) x A: A | Q: 0?")
    bleu = json.loads((ev / "paper.iwslt14_deen.0shot.json").read_text())
    assert {"bleu", "bleu_cased"} <= set(bleu["metrics"]) and bleu["signature"].startswith("nrefs:1|case:lc")
    summary = json.loads((ev / "paper_few_shot.json").read_text())
    assert len(summary["tasks"]) == 6 and summary["tasks"]["paper:mmlu:2shot"]["metric"] == "exact_match"
    assert summary["macro_average"] == pytest.approx(
        sum(t["value"] for t in summary["tasks"].values()) / 6)
    assert "| paper:bbh_nlp:2shot | exact_match_macro (paper's) |" in r.stdout


@pytest.mark.slow
def test_a_mixture_with_missing_files_names_every_one(tmp_path, tiny_trained):
    r = _evaluate(tiny_trained, tmp_path / "nothing", "--tasks", "paper_zero_shot")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for f in ("iwslt14/0-shot/test/deen.jsonl", "mmlu/0-shot/val/full.jsonl", "mmlu/0-shot/val/index2subject.json",
              "bbh-nlp/0-shot/validation/full.jsonl", "tydiqa/0-shot/validation/flan2022.jsonl",
              "mgsm/0-shot/en.jsonl", "mgsm/0-shot/de.jsonl"):
        assert f in r.stderr, f
    assert "prepare diffusionllm_instruct" in r.stderr
