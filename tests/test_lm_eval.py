"""dlm_jax as an lm-evaluation-harness model, fully offline: task YAMLs and JSONL written here, a tiny trained run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import cli

pytest.importorskip("lm_eval", reason='lm-eval is an optional extra: pip install -e ".[lmeval]"')

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
QUESTIONS = ["wie spät ist es", "das haus ist klein", "ich bin müde", "wo ist der bahnhof", "danke schön",
             "guten morgen", "das wetter ist gut", "ich habe hunger", "er liest ein buch", "wir gehen nach hause"]
CHOICES = [["what time is it", "the house", "thank you"], ["the house is small", "good morning", "i am tired"],
           ["i am tired", "where is it", "the book"]]


def _write_tasks(root: Path) -> Path:
    mc = [{"question": q, "choices": CHOICES[i % 3], "label": i % 3} for i, q in enumerate(QUESTIONS)]
    gen = [{"src": q, "tgt": "the house"} for q in QUESTIONS[:4]]
    for name, rows in (("mc", mc), ("gen", gen)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "dlm_mc.yaml").write_text(f"""task: dlm_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / 'mc.jsonl'}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
""")
    (root / "dlm_gen.yaml").write_text(f"""task: dlm_test_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / 'gen.jsonl'}
output_type: generate_until
test_split: test
doc_to_text: "{{{{src}}}}"
doc_to_target: tgt
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
""")
    return root


def _results(out: Path) -> dict:
    return json.loads(next(out.rglob("results_*.json")).read_text())["results"]


@pytest.mark.slow
def test_lm_eval_cli_matches_our_rank_classification_at_any_batch_size_and_process_count(tmp_path, tiny_trained, monkeypatch):
    """The CLI in two processes (launch/local_multiprocess.py, 1 device each) at batch 4, one writer, against this
    process at batch 1 and against dlm_jax's own rank classification: the same loglikelihoods and accuracy."""
    tasks = _write_tasks(tmp_path)
    r = subprocess.run([sys.executable, "launch/local_multiprocess.py", "--num_processes", "2",
                        "--devices_per_process", "1", "--log_dir", str(tmp_path / "logs"), "--", "-m",
                        "dlm_jax.lm_eval", "--model_args", f"workdir={tiny_trained},mc_samples=4,steps=2", "--tasks",
                        "dlm_test_mc,dlm_test_gen", "--include_path", str(tasks), "--log_samples", "--batch_size",
                        "4", "--output_path", str(tmp_path / "two")], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env={**os.environ, **OFFLINE, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "two").rglob("results_*.json"))) == 1
    config = json.loads(next((tmp_path / "two").rglob("results_*.json")).read_text())["config"]
    assert config["device"] == "cpu x2" and config["jax_devices"] == 2 and config["dlm_jax_checkpoint_step"] == 8
    logs = r.stderr + "".join(p.read_text() for p in (tmp_path / "logs").glob("*"))
    assert "Monte Carlo samples each, mean standard error" in logs, logs[-3000:]  # the README's promise
    got = _results(tmp_path / "two")
    assert "acc,none" in got["dlm_test_mc"] and "exact_match,none" in got["dlm_test_gen"]
    # the same items through dlm_jax's own rank classification (same ids, same seed, same samples)
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    from dlm_jax.lm_eval import DlmJaxLM
    lm = DlmJaxLM(workdir=str(tiny_trained), mc_samples=4, steps=2, batch_size=1)
    prompts = [lm._encode(q) for q in QUESTIONS]
    options = [[lm._encode(" " + c) for c in CHOICES[i % 3]] for i in range(len(QUESTIONS))]
    picks = lm.generator.rank_options(prompts, options, jax.random.key(0), num_samples=4, batch_size=3)
    ours = float(np.mean(picks == np.arange(len(QUESTIONS)) % 3))
    assert got["dlm_test_mc"]["acc,none"] == pytest.approx(ours, abs=1e-12)
    # batch size 1 through the model class in one process: the same loglikelihoods as two processes at batch 4
    (f,) = list((tmp_path / "two").rglob("samples_dlm_test_mc_*.jsonl"))
    samples = [json.loads(line) for line in f.read_text().splitlines()]

    class Req:
        def __init__(self, *args):
            self.args = args
    reqs = [Req(s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]) for s in samples]
    ll = lm.loglikelihood(reqs)
    assert [float(x) for x, _ in ll] == pytest.approx([float(s["resps"][0][0][0]) for s in samples], abs=0, rel=0)
    assert lm.last_stderr is not None and (lm.last_stderr >= 0).all()


def test_bad_model_args_and_rolling_are_one_line_errors(tmp_path, tiny_trained):
    from dlm_jax.errors import ConfigError, InputError
    from dlm_jax.lm_eval import DlmJaxLM, ModelArgs
    with pytest.raises(ConfigError, match="unknown dlm_jax model args: colour"):
        ModelArgs.parse({"workdir": "x", "colour": "red"})
    with pytest.raises(ConfigError, match="mc_samples must be a positive integer"):
        ModelArgs.parse({"workdir": "x", "mc_samples": 0})
    with pytest.raises(ConfigError, match="needs --model_args workdir"):
        ModelArgs.parse({})
    lm = DlmJaxLM(workdir=str(tiny_trained), mc_samples=2)
    from dlm_jax.lm_eval import _sampler
    assert _sampler(lm.run, ModelArgs.parse({"workdir": "x", "cache": "prefix"})).cache == "prefix"
    with pytest.raises(ConfigError, match="sampler cache='full'"):
        _sampler(lm.run, ModelArgs.parse({"workdir": "x", "cache": "full"}))
    with pytest.raises(InputError, match="not defined for a diffusion LM"):
        lm.loglikelihood_rolling([])

    class Req:
        args = ("wort " * 200, " ende")
    with pytest.raises(InputError, match="truncation=left"):
        lm.loglikelihood([Req()])
    lm.args = ModelArgs.parse({"workdir": "x", "truncation": "left", "mc_samples": 2})
    (ll, greedy), = lm.loglikelihood([Req()])
    assert np.isfinite(ll) and ll < 0 and greedy in (True, False)
    r = cli("dlm_jax.lm_eval", "--model_args", f"workdir={tiny_trained},bogus=1", "--tasks", "dlm_test_mc",
            "--include_path", str(_write_tasks(tmp_path)), env=OFFLINE)
    assert r.returncode == 2 and "error: unknown dlm_jax model args: bogus" in r.stderr
    assert "Traceback" not in r.stderr

