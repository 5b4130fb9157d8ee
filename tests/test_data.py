"""Data: vocabulary ids and round trips, features, task fixtures in upstream formats, Flan mixture ratios."""
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import seqio

import dlm_jax
from dlm_jax.data import eval_specs, features, pipeline, registry, sources
from dlm_jax.data.prepare import prepare_flan2022
from dlm_jax.data.vocab import HFVocabulary, tokenize_in_batches
from dlm_jax.errors import MissingDataError




def _xlmr_like_tokenizer(tmp_path):
    """A small sentencepiece model wrapped with XLM-R's fairseq special-token layout."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import XLMRobertaTokenizer
    text = Path(sources.REPO_DATA / "ding_de_en" / "train.tsv").read_text(encoding="utf-8").splitlines()[:3000]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(s for line in text for s in line.split("\t")), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=800,
                                   character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,  # XLM-R's layout
                                   minloglevel=2)
    model_dir = tmp_path / "xlmr_like"
    model_dir.mkdir()
    (model_dir / "sentencepiece.bpe.model").write_bytes((tmp_path / "sp.model").read_bytes())
    (model_dir / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    return XLMRobertaTokenizer.from_pretrained(str(model_dir))


def test_bert_vocabulary_ids_and_round_trip(bert_vocab):
    v = bert_vocab
    assert (v.bos_id, v.eos_id, v.pad_id, v.unk_id, v.mask_id) == (101, 102, 0, 100, 103)
    s = "the house is small."
    assert v.decode(v.encode(s)) == s
    import tensorflow as tf
    ids = v.encode_tf(tf.constant(s))
    assert ids.numpy().tolist() == v.encode(s)
    assert v.decode_tf(tf.constant([ids.numpy().tolist() + [v.eos_id, 7, 8]])).numpy()[0].decode() == s


def test_xlmr_layout_vocabulary_round_trip(tmp_path):
    tok = _xlmr_like_tokenizer(tmp_path)
    v = HFVocabulary(tok)
    assert (v.bos_id, v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.mask_id == len(tok) - 1
    for s in ("Das Haus ist klein.", "Wie spät ist es?", "I enjoyed my supper."):
        ids = v.encode(s)
        assert min(ids) > 3  # sentencepiece ids shifted past the specials, as fairseq does
        assert v.decode(ids) == s


def test_special_token_strings_in_text_stay_text(bert_vocab, tmp_path):
    """Typed "[MASK]", "<mask>", "[SEP]", "</s>", "[CLS]" are characters, never special ids (BERT and XLM-R)."""
    xlmr = HFVocabulary(_xlmr_like_tokenizer(tmp_path))
    text = "wie [MASK] <mask> [SEP] </s> [CLS] <s> <pad> spät"
    for v in (bert_vocab, xlmr):
        specials = {v.bos_id, v.eos_id, v.pad_id, v.mask_id}
        for ids in (v.encode(text), v.encode_batch([text])[0], v.encode_tf(__import__("tensorflow").constant(text))
                    .numpy().tolist()):
            assert not specials & set(ids), (v, ids)
        assert "mask" in v.decode(v.encode(text)).lower()


def test_batched_tokenize_equals_seqio_tokenize(bert_vocab):
    import tensorflow as tf
    texts = ["Das Haus ist klein.", "", "Grüße, naïve café!", "x " * 40, "the house", "a", "Wie spät?"]
    ds = tf.data.Dataset.from_tensor_slices({"inputs": texts, "targets": texts[::-1], "task": ["t"] * len(texts)})
    expected = list(seqio.preprocessors.tokenize(ds, registry._output_features(bert_vocab)).as_numpy_iterator())
    got = list(tokenize_in_batches(ds, registry._output_features(bert_vocab), batch_size=3).as_numpy_iterator())  # a partial batch
    assert len(got) == len(expected) == len(texts)
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for k in e:
            np.testing.assert_array_equal(g[k], e[k], err_msg=k)
    assert got[1]["inputs"].shape == (0,) and got[0]["inputs"].dtype == np.int32
    # a vocabulary without encode_batch falls back to seqio's per-example tokenizer
    byte = {"targets": seqio.Feature(seqio.ByteVocabulary(), add_eos=False)}
    got = list(tokenize_in_batches(ds, byte).as_numpy_iterator())
    assert got[0]["targets"].tolist() == [b + 3 for b in "Wie spät?".encode()]  # ByteVocabulary: byte + 3


def test_layout_never_uses_zero_padding():
    spec = features.FeatureSpec(max_length=10, bos_id=0, eos_id=2, pad_id=1)  # XLM-R: 0 is <s>
    row = features.layout([5, 6], [7, 8, 9], spec)
    np.testing.assert_array_equal(row["tokens"], [0, 5, 6, 7, 8, 9, 2, 1, 1, 1])
    np.testing.assert_array_equal(row["response_mask"], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(row["padding_mask"], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    assert row["response_length"] == 4 and row["prompt_length"] == 3
    c = features.Counters()
    assert features.layout(list(range(5, 12)), [7, 8], spec, c) is None and c.skipped == 1
    t = features.layout(list(range(10, 20)), [7, 8], features.FeatureSpec(10, 0, 2, 1, overlong="truncate_prompt"), c)
    np.testing.assert_array_equal(t["tokens"], [0, 14, 15, 16, 17, 18, 19, 7, 8, 2])
    assert features.few_shot_prompt([("Q: a A:", "B")], "Q: b A:", joiner=" | ") == "Q: a A: B | Q: b A:"


def test_ding_de_en_task_renders(bert_vocab):
    spec = features.FeatureSpec(max_length=64, bos_id=101, eos_id=102, pad_id=0)
    ex = pipeline.load_examples("ding_de_en", "test", spec, bert_vocab, limit=3)
    assert ex.inputs[0] and ex.targets[0]
    print("ding_de_en:", ex.inputs[0], "=>", ex.targets[0])
    exp = pipeline.load_examples("ding_de_en_prompt", "test", spec, bert_vocab, limit=1)
    assert exp.inputs[0].startswith("Translate the sentences into English.  German: ")  # released: two spaces
    assert exp.inputs[0].endswith(" English: ")
    assert len(open(sources.REPO_DATA / "ding_de_en" / "test.tsv").readlines()) > 900


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def data_root(tmp_path, monkeypatch, bert_vocab):
    monkeypatch.setenv("DLM_DATA_DIR", str(tmp_path))
    return tmp_path


def test_eval_task_fixtures_render(data_root, bert_vocab):
    _write(data_root / "mmlu" / "validation.jsonl", json.dumps(
        {"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1}))
    _write(data_root / "mmlu" / "dev.jsonl", "\n".join(json.dumps(
        {"question": f"{i}+1?", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"], "answer": 0})
        for i in range(5)))
    for t in sources.BBH_NLP:
        lettered = [{"input": f"{t} question {i}?\nOptions:\n(A) x\n(B) y", "target": "(A)"} for i in range(4)]
        worded = [{"input": f"Is {t} {i} valid?", "target": ["valid", "invalid"][i % 2]} for i in range(4)]
        _write(data_root / "bbh" / f"{t}.json", json.dumps({"examples": worded if t == "formal_fallacies"
                                                            else lettered}))
        _write(data_root / "bbh" / "cot-prompts" / f"{t}.txt", "Task description.\n\n" + "\n\n".join(
            f"Q: demo {t} {j}?\nOptions:\n(A) p\n(B) q\nA: Let's think step by step. So the answer is (B)."
            if t != "formal_fallacies" else f"Q: Is demo {j} valid?\nA: Let's think. So the answer is invalid."
            for j in range(3)))
    _write(data_root / "tydiqa_goldp" / "validation.jsonl", json.dumps(
        {"context": "Paris is the capital of France.", "question": "What is the capital of France?",
         "answers": ["Paris"], "language": "english"}))
    _write(data_root / "gsm8k" / "test.jsonl", json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}))
    _write(data_root / "mgsm" / "mgsm_de.tsv", "Was ist 1+1?\t2\nWas ist 2+2?\t4\n")
    spec = features.FeatureSpec(max_length=512, bos_id=101, eos_id=102, pad_id=0)
    m = pipeline.load_examples("mmlu", "validation", spec, bert_vocab)
    assert m.inputs[0] == ("The following are multiple choice questions (with answers) about elementary mathematics. "
                           "Q: 2+2? (A) 3 (B) 4 (C) 5 (D) 6 A:") and m.targets[0] == "B"
    m5 = pipeline.load_examples("mmlu_5shot", "validation", spec, bert_vocab)
    assert m5.inputs[0].count(" | ") == 5 and m5.inputs[0].endswith(m.inputs[0])
    b = pipeline.load_examples("bbh_nlp", "validation", spec, bert_vocab)
    assert len(b.inputs) == 48 and b.targets[0] == "A"
    # lettered as released: " Q: {question}\nA: (A) .. (B) .. A:"; word answers become lettered options too
    assert b.inputs[0] == " Q: causal_judgement question 0?\nA: (A) x (B) y A:"
    ff = [(x, y) for x, y, g in zip(b.inputs, b.targets, b.tasks) if g == "bbh:formal_fallacies"]
    assert ff[0] == (" Q: Is formal_fallacies 0 valid?\nA: (A) invalid (B) valid A:", "B") and ff[1][1] == "A"
    b2 = pipeline.load_examples("bbh_nlp_2shot", "validation", spec, bert_vocab)
    assert b2.inputs[0] == (" Q: demo causal_judgement 0?\nA: (A) p (B) q A: B | Q: demo causal_judgement 1?\n"
                            "A: (A) p (B) q A: B | Q: causal_judgement question 0?\nA: (A) x (B) y A:")
    ty = pipeline.load_examples("tydiqa_goldp", "validation", spec, bert_vocab)
    assert ty.inputs[0].startswith("Please answer each of the question according to the given context in english.")
    assert ty.targets == ["Paris"]  # the first gold answer (it also sets the oracle length), as released
    g = pipeline.load_examples("gsm8k", "test", spec, bert_vocab)
    assert g.inputs[0] == " Question: 1+1? Step-by-Step Answer: " and g.targets[0] == "2"
    mg = pipeline.load_examples("mgsm_de", "test", spec, bert_vocab)
    assert mg.targets == ["2", "4"] and mg.inputs[0] == " Frage: Was ist 1+1? Schritt-für-Schritt-Antwort: "
    _write(data_root / "mgsm" / "exemplars_de.tsv", "".join(
        f"Demo {i}?\tSchritt {i}. Die Antwort ist {i}.\n" for i in range(5)))
    mg3 = pipeline.load_examples("mgsm_de_3shot", "test", spec, bert_vocab)
    assert mg3.inputs[0] == (" Frage: Demo 0? Schritt-für-Schritt-Antwort: Schritt 0. Die Antwort ist 0."
                             " Frage: Demo 1? Schritt-für-Schritt-Antwort: Schritt 1. Die Antwort ist 1."
                             " Frage: Demo 2? Schritt-für-Schritt-Antwort: Schritt 2. Die Antwort ist 2."
                             " Frage: Was ist 1+1? Schritt-für-Schritt-Antwort: ")
    assert "Was ist 2+2" not in mg3.inputs[0]  # demonstrations never come from the evaluated questions
    _write(data_root / "mgsm" / "mgsm_en.tsv", "What is 3+3?\t6\n")
    en = pipeline.load_examples("mgsm_en", "test", spec, bert_vocab)  # the paper's "GSM8K"
    assert en.inputs == [" Question: What is 3+3? Step-by-Step Answer: "] and en.targets == ["6"]
    with pytest.raises(MissingDataError, match="exemplars_en.tsv"):
        pipeline.load_examples("mgsm_en_3shot", "test", spec, bert_vocab)
    for name, exs in (("mmlu", m), ("bbh_nlp", b), ("tydiqa", ty), ("gsm8k", g), ("mgsm_de", mg)):
        print(f"{name}: {exs.inputs[0]!r} => {exs.targets[0]!r}")
    assert set(seqio.get_mixture_or_task("flan_eval_zero_shot").tasks) >= {seqio.get_mixture_or_task("mmlu")}


def test_choice_options_for_rank_classification():
    mmlu = "about x. Q: 2+2? (A) 3 (B) 4 (C) 5 (D) 6 A:"
    few = "Q: 1+1? (A) 1 (B) 2 (C) 3 A: B | " + mmlu
    yes_no = ["Is it? A:", "Is it not? A:", "Valid? A:"]
    opts = eval_specs.choice_options([mmlu, few, "a\n\nb (A) x (B) y (C) z A:", *yes_no], ["B", "B", "C", "Yes", "No", "valid"],
                            ["mmlu:m", "mmlu:m", "bbh:h", "bbh:sports", "bbh:sports", "bbh:formal"])
    assert opts == [list("ABCD"), list("ABCD"), list("ABC"), ["No", "Yes"], ["No", "Yes"], ["valid"]]
    acc = eval_specs.choice_accuracy(["B", "Yes", "valid", "C"], ["(B) 4", "yes, it is", "invalid", "A"],
                                     ["a", "a", "b", "b"])
    assert acc == {"accuracy": 50.0, "accuracy_macro": 50.0}


def test_built_in_pairs_in_k_shot_prompts(bert_vocab):
    """ding_de_en_<k>shot: the built-in test pairs with k demonstrations from its train split in the released
    layout (the long-prompt workload of cached decoding), the references unchanged, the same prompts every time."""
    from dlm_jax.data import sources
    spec = features.FeatureSpec(max_length=512, bos_id=101, eos_id=102, pad_id=0)
    zero = pipeline.load_examples("ding_de_en", "test", spec, bert_vocab, limit=20)
    four = pipeline.load_examples("ding_de_en_4shot", "test", spec, bert_vocab, limit=20)
    train = set(sources.ding_pairs("train"))
    assert four.targets == zero.targets
    for question, prompt in zip(zero.inputs, four.inputs):
        demos = re.findall(r"German: (.*?) English: (.*?)(?= German:)", prompt)
        assert prompt.startswith("Translate the sentences into English.  German: ") and len(demos) == 4
        assert all(d in train for d in demos) and prompt.endswith(f" German: {question} English: ")
    assert four.rows["prompt_length"].mean() > 4 * zero.rows["prompt_length"].mean()
    assert pipeline.load_examples("ding_de_en_4shot", "test", spec, bert_vocab, limit=20).inputs == four.inputs
    assert registry.eval_spec("ding_de_en_2shot").shots == 2


def test_translation_fixtures_and_missing_data_message(data_root, bert_vocab):
    _write(data_root / "iwslt14.tokenized.de-en" / "test.de", "das ist gu@@ t , oder ?\n")
    _write(data_root / "iwslt14.tokenized.de-en" / "test.en", "it &apos;s go@@ od , isn &apos;t it ?\n")
    spec = features.FeatureSpec(max_length=64, bos_id=101, eos_id=102, pad_id=0)
    ex = pipeline.load_examples("iwslt14_de_en_prompt", "test", spec, bert_vocab)
    # the released text: BPE removed, Moses-detokenised and unescaped, the instruction followed by two spaces
    assert ex.inputs[0] == "Translate the sentences into English.  German: das ist gut, oder? English: "
    assert ex.targets[0] == "it's good, isn't it?"
    _write(data_root / "iwslt14.tokenized.de-en" / "train.de", "ein hund .\nzwei katzen .\ndrei m@@ äuse .\n")
    _write(data_root / "iwslt14.tokenized.de-en" / "train.en", "a dog .\ntwo cats .\nthree mice .\n")
    two = pipeline.load_examples("iwslt14_de_en_prompt_2shot", "test", spec, bert_vocab)
    demos = re.findall(r"German: (.*?) English: (.*?)(?= German:)", two.inputs[0])
    assert two.inputs[0].startswith("Translate the sentences into English.  German: ") and len(demos) == 2
    assert all(d in [("ein hund.", "a dog."), ("zwei katzen.", "two cats."), ("drei mäuse.", "three mice.")]
               for d in demos)  # demonstrations from the train split, never the evaluated one
    assert two.inputs[0].endswith(" German: das ist gut, oder? English: ")
    _write(data_root / "wmt14_en_de" / "test.en", "the house is sm@@ all .\n")
    _write(data_root / "wmt14_en_de" / "test.de", "das Haus ist klein .\n")
    w = pipeline.load_examples("wmt14_en_de_prompt", "test", spec, bert_vocab)  # fairseq's prepare-wmt14en2de.sh
    assert w.inputs[0] == "Translate the sentences into German.  English: the house is small . German: "
    assert w.targets[0] == "das Haus ist klein ." and registry.eval_spec("wmt14_en_de").bleu_tokenize == "intl"
    _write(data_root / "gigaword_10k" / "test.src", "a long article\n")
    _write(data_root / "gigaword_10k" / "test.tgt", "a title\n")
    g = pipeline.load_examples("gigaword_10k", "test", spec, bert_vocab)  # the LGEB files, not TFDS
    assert (g.inputs, g.targets) == (["a long article"], ["a title"])
    with pytest.raises(MissingDataError, match=r"(?s)valid\.de.*prepare-iwslt14"):
        pipeline.load_examples("iwslt14_de_en", "validation", spec, bert_vocab)
    with pytest.raises(ValueError, match="unknown task or mixture 'nope'"):
        registry.get_task_or_mixture("nope", bert_vocab)


def test_flan2021_strict_has_no_german_task(data_root, bert_vocab):
    rows = [{"inputs": "Translate to German: I like cats.", "targets": "Ich mag Katzen.",
             "task": "wmt16_translate_deen"},
            {"inputs": "Was ist das und wie ist es nicht mit dem Auto?", "targets": "Es ist ein Auto.",
             "task": "para_crawl_misc"},
            {"inputs": "Is the sky blue?", "targets": "yes", "task": "boolq"},
            {"inputs": "Summarize: cats sleep a lot.", "targets": "Cats sleep.", "task": "gigaword"}]
    _write(data_root / "flan2021" / "part0.jsonl", "\n".join(json.dumps(r) for r in rows))
    spec = features.FeatureSpec(max_length=128, bos_id=101, eos_id=102, pad_id=0)
    full = pipeline.load_examples("flan2021", "train", spec, bert_vocab)
    strict = pipeline.load_examples("flan2021_strict", "train", spec, bert_vocab)
    assert set(full.tasks) == {"wmt16_translate_deen", "para_crawl_misc", "boolq", "gigaword"}
    assert set(strict.tasks) == {"boolq", "gigaword"}


def _flan2022_fixture(src: Path):
    rng = np.random.default_rng(0)
    for prefix in ("flan", "t0", "niv2", "cot", "dialog"):
        for tmpl in ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt"):
            if prefix == "t0" and tmpl == "fs_opt":
                continue  # there is no t0_fs_opt file upstream
            rows = []
            for k in ("0", "1", "2") + (("3ii",) if prefix in ("cot", "dialog") else ()):  # FLAN's CoT-II / Dialog-II
                n = int(rng.integers(2, 12))
                words = f"{prefix} {tmpl.replace('_', ' ')} t{k}"
                rows += [{"inputs": f"{words} in {i}", "targets": f"{words} out {i}",
                          "task": f"{prefix}_task{k}".replace("ii", "_ii")} for i in range(n)]
            with gzip.open(src / f"{prefix}_{tmpl}_train.jsonl.gz", "wt") as f:
                f.write("\n".join(json.dumps(r) for r in rows))


def _sample_tasks(name: str, n: int, bert_vocab) -> list[str]:
    # shuffle=False: the mixture still samples its tasks at random (seeded by `seed`); only the per-task shuffle
    # buffers, which each leaf task would fill before the first example (2.5x slower here), are skipped.
    ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=None, split="train", shuffle=False, seed=1,
                                                    num_epochs=None, use_cached=False)
    out = []  # mixtures keep only the output features: identify the task from the text itself
    rows = ds.take(n).map(lambda ex: ex["inputs"]).padded_batch(1000, padding_values=bert_vocab.pad_id)
    for batch in rows.as_numpy_iterator():
        for text in bert_vocab.tokenizer.batch_decode(batch, skip_special_tokens=True):
            w = text.split()  # e.g. "cot zs opt t1 in 3", "cot zs opt t3ii in 0" (the task cot_task3_ii)
            out.append((f"{w[0]}_task{w[3][1:]}".replace("ii", "_ii"), "_".join(w[:3])))
    assert len(out) == n
    return out


def test_flan2022_mixture_ratios_within_three_standard_errors(data_root, tmp_path, monkeypatch, bert_vocab):
    src = tmp_path / "raw"
    src.mkdir()
    _flan2022_fixture(src)
    counts = prepare_flan2022(src, data_root / "flan2022")
    monkeypatch.setitem(registry.FLAN2022_CAPS, "flan2021", 6)  # small caps so capping is exercised by the fixture
    assert registry.register_flan2022(registry._Registrar(bert_vocab), data_root)
    # expected probability of every leaf task: top rate x equal template split x min(cap, n) (x 0.3 for FLAN's
    # input-inversion tasks "..._ii" of CoT and Dialog; no other inverted copies are made)
    expected: dict[str, float] = {}
    for submix, templates in registry.FLAN2022_TEMPLATES.items():
        stems = [f"{registry.FLAN2022_FILE_PREFIX[submix]}_{t}" for t in templates if
                 f"{registry.FLAN2022_FILE_PREFIX[submix]}_{t}" in counts]
        for stem in stems:
            rates = {}
            for task, n in counts[stem].items():
                r = min(registry.FLAN2022_CAPS[submix], n)
                rates[(stem, task)] = r * (0.3 if task.endswith("_ii") else 1.0)
            tot = sum(rates.values())
            for key, r in rates.items():
                expected[key] = expected.get(key, 0) + registry.FLAN2022_TOP[submix] / len(stems) * r / tot
    n = 8_000  # tolerances (3 standard errors) 1.6x those of 20,000 samples, at a third of the sampling time
    sampled = [t for t, _ in _sample_tasks("flan2022_submix", n, bert_vocab)]
    got_by_submix: dict[str, int] = {}
    for t in sampled:
        prefix = t.split("_task")[0]
        got_by_submix[prefix] = got_by_submix.get(prefix, 0) + 1
    top = {registry.FLAN2022_FILE_PREFIX[k]: v for k, v in registry.FLAN2022_TOP.items()}
    for prefix, rate in top.items():
        p = rate / sum(top.values())
        se = np.sqrt(p * (1 - p) / n)
        assert abs(got_by_submix.get(prefix, 0) / n - p) < 3 * se, (prefix, got_by_submix, p)
    # second level: task names (summed over template files, which share task names in the fixture)
    exp_task: dict[str, float] = {}
    for (stem, task), p in expected.items():
        exp_task[task] = exp_task.get(task, 0) + p
    for task, p in exp_task.items():
        se = np.sqrt(p * (1 - p) / n)
        assert abs(sampled.count(task) / n - p) < 3 * se + 1e-9, (task, sampled.count(task) / n, p)
    # the paper's file-level ratios
    stems = [stem for _, stem in _sample_tasks("flan2022_paper", n, bert_vocab)]
    present = {k: v for k, v in registry.FLAN2022_PAPER_RATES.items() if k in counts}
    assert "t0_fs_opt" not in present and len(present) == 13  # the released flan_2022_ratio.json's 13 files
    assert not any(k.startswith(("cot_", "dialog_")) and "noopt" in k for k in registry.FLAN2022_PAPER_RATES)
    for stem, rate in present.items():
        p = rate / sum(present.values())
        se = np.sqrt(p * (1 - p) / n)
        assert abs(stems.count(stem) / n - p) < 3 * se, (stem, stems.count(stem) / n, p)
    # the indexed stream (constant-time resume) samples the same flattened rates
    spec = features.FeatureSpec(max_length=128, bos_id=101, eos_id=102, pad_id=0)
    ix = pipeline.IndexedBatches("flan2022_submix", spec, bert_vocab, pipeline.HostSlice(4), seed=3)
    picks = np.concatenate([np.random.default_rng([3, step]).choice(len(ix.names), 4, p=ix.probs)
                            for step in range(n // 4)])
    for task, p in exp_task.items():
        got = sum(np.mean(picks == i) for i, name in enumerate(ix.names) if name.endswith(":" + task))
        assert abs(got - p) < 3 * np.sqrt(p * (1 - p) / n) + 1e-9, (task, got, p)
    it = ix.iterate(0)
    full, positions = [], []
    for _ in range(8):
        full.append(next(it))
        positions.append(ix.position())
    again = pipeline.IndexedBatches("flan2022_submix", spec, bert_vocab, pipeline.HostSlice(4), seed=3)
    resumed = again.iterate(5, positions[4])  # what a checkpoint at step 5 holds
    for want in full[5:]:
        got = next(resumed)
        assert all((got[k] == want[k]).all() for k in want)
    assert any((data_root / "flan2022" / "by_task").rglob("*.offsets.npy"))  # random access: line offsets kept
    with pytest.raises(dlm_jax.errors.InputError, match="data.stream=seqio"):
        next(again.iterate(5, {}))  # a checkpoint of a seqio-streamed run


def test_indexed_stream_hosts_read_only_their_rows_and_together_give_the_global_batch(bert_vocab):
    """Two hosts' rows of the indexed stream are the one host's global batch, also where examples are skipped as
    overlong and redrawn; each host reads and tokenizes only the rows it feeds; every host's counts (what a
    checkpoint saves) are the same."""
    spec = features.FeatureSpec(max_length=20, bos_id=101, eos_id=102, pad_id=0)
    one = pipeline.IndexedBatches("ding_de_en", spec, bert_vocab, pipeline.HostSlice(8), seed=3).iterate(0)
    hosts = [pipeline.IndexedBatches("ding_de_en", spec, bert_vocab, pipeline.HostSlice(8, i, 2), seed=3)
             for i in range(2)]
    its = [h.iterate(0) for h in hosts]
    for _ in range(6):
        want, parts = next(one), [next(i) for i in its]
        assert all((np.concatenate([p[k] for p in parts]) == want[k]).all() for k in want)
    assert all(h.counters.skipped > 0 for h in hosts), [h.counters for h in hosts]  # the redraw path ran
    assert all(h.counters.seen == 6 * 4 + h.counters.skipped for h in hosts)  # only its own rows were read
    assert (hosts[0].taken == hosts[1].taken).all() and hosts[0].taken.sum() == 6 * 8


def test_show_cli_prints_examples(capsys, bert_vocab):
    from dlm_jax.data import show
    show.show("ding_de_en", "test", 2, "bundled", 512)
    out = capsys.readouterr().out
    assert out.count("--- ding_de_en/test") == 2 and "response" in out
    # an unknown task is one error line: tests/test_end_to_end.py BAD_INPUT


def test_pack_keeps_examples_whole_and_deterministic():
    spec = features.FeatureSpec(max_length=12, bos_id=101, eos_id=102, pad_id=0)
    exs = [features.layout(list(range(10, 10 + p)), list(range(50, 50 + r)), spec) for p, r in
           [(2, 2), (5, 3), (1, 1), (3, 4), (6, 2), (2, 1)]]
    rows = features.stack(exs)
    order = [3, 0, 5, 1, 4, 2]
    packed = features.pack(rows, order, 12, pad_id=0)
    lengths = rows["padding_mask"].sum(1)
    seen = []
    for r in range(len(packed["tokens"])):
        seg = packed["segment_ids"][r]
        assert packed["padding_mask"][r].sum() <= 12 and ((seg > 0) == (packed["padding_mask"][r] > 0)).all()
        for s in range(1, seg.max() + 1):
            toks = packed["tokens"][r][seg == s]
            i = next(i for i in range(6) if lengths[i] == len(toks) and (rows["tokens"][i, :len(toks)] == toks).all())
            np.testing.assert_array_equal(packed["response_mask"][r][seg == s], rows["response_mask"][i, :len(toks)])
            seen.append(i)
    assert sorted(seen) == list(range(6)) and len(packed["tokens"]) < 6
    again = features.pack(rows, order, 12, pad_id=0)
    assert all((again[k] == packed[k]).all() for k in packed)


def test_packed_batches_depend_only_on_seed_and_step(bert_vocab):
    spec = features.FeatureSpec(max_length=48, bos_id=101, eos_id=102, pad_id=0)
    ex = pipeline.load_examples("ding_de_en", "validation", spec, bert_vocab, limit=200)
    a = pipeline.PackedBatches(ex, pipeline.HostSlice(8), seed=3, max_length=48, pad_id=0)
    b = pipeline.PackedBatches(ex, pipeline.HostSlice(8), seed=3, max_length=48, pad_id=0)
    per_epoch = a.batches_in(0)
    for step in (0, 5, per_epoch, per_epoch + 2):  # b jumps straight there (a resumed run)
        x, y = a.batch(step), b.batch(step)
        assert all((x[k] == y[k]).all() for k in x)
    assert (a.batch(0)["segment_ids"].max(1) >= 2).any()  # rows really hold several examples
    assert a.batches_in(0) * 8 < 200


def test_global_batches_do_not_depend_on_the_process_count(bert_vocab):
    """Two processes' slices of global batch s, side by side, are one process's batch s (cached, packed, stream)."""
    spec = features.FeatureSpec(max_length=48, bos_id=101, eos_id=102, pad_id=0)
    ex = pipeline.load_examples("ding_de_en", "validation", spec, bert_vocab, limit=120)
    makers = [lambda h: pipeline.CachedBatches(ex, h, seed=1),
              lambda h: pipeline.PackedBatches(ex, h, seed=1, max_length=48, pad_id=0),
              lambda h: pipeline.StreamedBatches("ding_de_en", spec, bert_vocab, h, seed=1, split="validation")]
    for make in makers:
        one = make(pipeline.HostSlice(8)).iterate(3)
        halves = [make(pipeline.HostSlice(8, i, 2)).iterate(3) for i in range(2)]
        for _ in range(2):
            whole, parts = next(one), [next(h) for h in halves]
            for k in whole:
                np.testing.assert_array_equal(whole[k], np.concatenate([p[k] for p in parts]))
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pipeline.HostSlice(8, 0, 3)


def test_streamed_batches_resume_exactly_past_skipped_examples(bert_vocab):
    spec = features.FeatureSpec(max_length=20, bos_id=101, eos_id=102, pad_id=0)  # short: many examples do not fit
    s = pipeline.StreamedBatches("ding_de_en", spec, bert_vocab, pipeline.HostSlice(8), seed=5, split="validation")
    it = s.iterate(0)
    full = [next(it) for _ in range(6)]
    it.close()
    assert s.counters.seen == 48 and s.counters.skipped == 0  # the length filter ran inside tf.data
    resumed = pipeline.StreamedBatches("ding_de_en", spec, bert_vocab, pipeline.HostSlice(8), seed=5,
                                       split="validation").iterate(4)
    for want in full[4:]:
        got = next(resumed)
        assert all((got[k] == want[k]).all() for k in want)
    assert (full[0]["padding_mask"].sum(1) <= 20).all()
    whole = pipeline.load_examples("ding_de_en", "validation", spec, bert_vocab)
    assert whole.counters.skipped > 0  # the same split does hold examples the filter dropped


def test_an_open_stream_does_not_hang_the_interpreter_at_exit(tmp_path):
    import subprocess
    import sys
    script = ("import dlm_jax\nfrom dlm_jax.data import features, pipeline\nfrom dlm_jax.data.vocab import HFVocabulary\n"
              "vocab = HFVocabulary(dlm_jax.load_tokenizer('bundled'))\n"
              "spec = features.FeatureSpec(max_length=48, bos_id=101, eos_id=102, pad_id=0)\n"
              "it = pipeline.StreamedBatches('ding_de_en', spec, vocab, pipeline.HostSlice(4), seed=0,"
              " split='test').iterate(1)\n"
              "print(next(it)['tokens'].shape)\n")  # `it` stays open until the interpreter exits
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and "(4, 48)" in r.stdout, r.stderr[-2000:]
