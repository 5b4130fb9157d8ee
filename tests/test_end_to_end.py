"""End to end on a tiny trained checkpoint: train -> evaluate (JSON with signature) -> generate (text, HTML)."""
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, run_cli_cases

REPO = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300, env=None, fresh=False):
    """`python -m *args` with one device: in this worker's CLI helper (conftest.cli), or a new process (`fresh`)."""
    return cli(*args, timeout=timeout, env=env, fresh=fresh)


@pytest.fixture()
def trained(tiny_trained):
    return tiny_trained


@pytest.mark.slow
def test_evaluate_writes_json_with_signature_and_sharded_gives_the_same(trained):
    r = _run("dlm_jax.evaluate", "--workdir", str(trained), "--tasks", "ding_de_en", "--oracle_length",
             "--config.sampler.steps=3", "--limit", "12")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((trained / "eval" / "ding_de_en.json").read_text())
    assert set(res) >= {"metrics", "signature", "num_examples", "num_skipped", "sampler", "seed"}
    assert {"bleu", "bleu_cased"} <= set(res["metrics"]) and res["paper_comparable"] == "bleu"
    assert res["signature"].startswith("nrefs:1|case:lc|") and "|case:mixed|" in res["signature_cased"]
    assert "tok:13a" in res["signature"] and res["sampler"]["steps"] == 3
    assert "| ding_de_en | bleu (paper's) |" in r.stdout and "| ding_de_en | bleu_cased |" in r.stdout
    # the same evaluation sharded (in this process; `--mesh` across processes: test_multiprocess.py): params
    # restored straight into 4 devices' shards give the 1-device results
    import jax
    from dlm_jax.inference import EvalRequest, Evaluator, restore_run
    from dlm_jax.parallel import make_mesh
    from dlm_jax.data import registry
    restored = restore_run(trained, mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 1}, devices=jax.devices()[:4]))
    registry.register_all(restored.vocab)
    four = Evaluator(restored.generator(), restored.vocab, restored.run.sampler, restored.feature_spec(),
                     checkpoint_step=restored.step).run_task("ding_de_en", EvalRequest(length="oracle", steps=3,
                                                                                       limit=12))
    assert [e["prediction"] for e in four["examples"]] == [e["prediction"] for e in res["examples"]]
    assert four["metrics"] == res["metrics"]


@pytest.mark.slow
def test_generate_prints_text_and_writes_the_trajectory_grid(trained, tmp_path):
    html_path, svg_path = tmp_path / "t.html", tmp_path / "t.svg"
    common = ["dlm_jax.generate", "--workdir", str(trained), "--input_task", "ding_de_en", "--num_examples", "2",
              "--config.sampler.steps=5"]
    r = _run(*common, "--show_steps", "--trajectory", str(html_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("output:") == 2 and r.stdout.count("step ") >= 6  # steps 0..5 of the first example
    page = html_path.read_text()
    assert "<script" not in page  # a static page: readable without JavaScript, printable
    tables = re.findall(r'<table class="grid">(.*?)</table>', page)
    assert len(tables) == 2  # every example of --num_examples
    for table in tables:
        rows = re.findall(r"<tr><th>(\d+)</th>(.*?)</tr>", table)
        assert [int(i) for i, _ in rows] == list(range(6))  # step 0 (all masked) .. 5
        assert set(re.findall(r'<td class="(\w+)"', rows[0][1])) == {"masked"}
        assert "masked" not in re.findall(r'<td class="(\w+)"', rows[-1][1])  # everything committed at the end
        assert 'title="p = ' in table  # confidence on hover
    for key in ("model", "checkpoint step", "strategy", "steps", "seed", "response lengths", "reference", "output"):
        assert f"<dt>{key}</dt>" in page, key
    for state in ("new", "kept", "remasked", "masked"):
        assert f'<span class="{state}">' in page  # the legend
    r = _run(*common, "--trajectory", str(svg_path))
    assert r.returncode == 0, r.stderr[-3000:]
    svg = svg_path.read_text()
    assert svg.startswith("<svg") and svg.count("<rect") >= 2 * 6 and "Example 1" in svg


def test_remasked_cells_keep_the_withdrawn_token_and_render():
    from dlm_jax import visualize
    M = 9
    traj = np.array([[0, 5, M], [0, M, 6], [0, 7, 6]])  # step 1: 5 appears; step 2: 5 is remasked, 6 appears
    scores = np.log(np.array([[1, .5, 1], [1, 1, .25], [1, .9, .8]]))
    steps = visualize.step_cells(traj, np.array([False, True, True]), M, lambda i: f"t{i}", scores)
    assert [[c["state"] for c in row] for row in steps] == [["masked", "masked"], ["new", "masked"],
                                                             ["remasked", "new"], ["new", "kept"]]
    assert steps[2][0]["withdrawn"] == "t5" and steps[2][0]["prob"] is None
    assert steps[3][0]["prob"] == pytest.approx(0.9)
    ex = visualize.Example("p", "t7 t6", steps, "ref")
    page = visualize.trajectory_html([ex], {"model": "m"})
    assert '<td class="remasked"><s>t5</s></td>' in page and 'title="p = 0.900"' in page
    assert visualize.terminal_frames(steps, color=False)[2] == "step   2: t5 t6"  # the withdrawn token, uncoloured
    assert 'text-decoration="line-through">t5<' in visualize.trajectory_svg([ex], {"model": "m"})


def test_settled_steps_and_side_by_side_columns():
    from dlm_jax import visualize
    M = 9
    left = visualize.step_cells(np.array([[1, M, M], [1, 2, M], [1, 2, 3]]), np.ones(3, bool), M, str)
    other = visualize.step_cells(np.array([[M, 2, M], [1, M, 3], [1, 2, 3]]), np.ones(3, bool), M, str)
    assert visualize.settled_steps(left) == [1, 2, 3]  # left to right
    assert visualize.settled_steps(other) == [2, 3, 2]  # position 1 was remasked at step 2 and refilled at 3
    lines = visualize.side_by_side_frames({"ar": left, "reparam": other}, color=False)
    assert lines[0].split() == ["ar", "|", "reparam"] and " ".join(lines[-1].split()) == "settled: 1 2 3 | 2 3 2"
    assert lines[1] == "step   0: [MASK] [MASK] [MASK] | [MASK] [MASK] [MASK]"
    assert lines[-1].index("|") == lines[1].index("|")
    assert lines[2].index("|") == lines[1].index("|")  # columns stay aligned
    page = visualize.comparison_html([[visualize.Example("p", "1 2 3", left, None, "ar"),
                                       visualize.Example("p", "1 2 3", other, None, "reparam")]], {"model": "m"})
    assert page.count('<table class="grid">') == 2 and '<div class="side">' in page
    assert "<h3>ar</h3>" in page and "<h3>reparam</h3>" in page


def test_the_svg_figure_stands_alone_as_the_page_does():
    """Position headers, a step number per row, the settled row and the legend's words, as in the HTML page."""
    import re as re_
    import xml.etree.ElementTree as ET
    from dlm_jax import visualize
    M = 9
    steps = visualize.step_cells(np.array([[M, 2, M], [1, M, 3], [1, 2, 3]]), np.ones(3, bool), M, str)
    svg = visualize.trajectory_svg([visualize.Example("p", "1 2 3", steps)], {"model": "m", "steps": 3})
    texts = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert texts[:2] == ["model: m | steps: 3", "Example 0: p -> 1 2 3"]
    assert texts[2:6] == ["step", "0", "1", "2"]  # the position header
    at = texts.index("settled")
    assert texts[at + 1:at + 4] == ["2", "3", "2"]  # the step each position settled at, as settled_steps
    assert [t.strip() for t in texts if re_.fullmatch(r" *\d+", t or "") and t.startswith(" ")] == ["0", "1", "2", "3"]
    for state, words in visualize.LEGEND.items():
        assert state in texts and words in texts


@pytest.mark.slow
def test_generate_compares_left_to_right_and_diffusive_unmasking(trained, tmp_path):
    page_path = tmp_path / "cmp.html"
    r = _run("dlm_jax.generate", "--workdir", str(trained), "--input_task", "ding_de_en", "--num_examples", "2",
             "--config.sampler.steps=32", "--strategies", "ar,reparam-uncond-deterministic-cosine,adaptive",
             "--show_steps", "--trajectory", str(page_path))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("ar", "reparam-uncond-deterministic-cosine", "adaptive"):
        assert r.stdout.count(f"output [{name}]:") == 2
    settled = next(line for line in r.stdout.splitlines() if line.startswith("settled:"))
    ar_order = [int(x) for x in settled[len("settled:"):].split("|")[0].split()]
    assert ar_order == list(range(1, len(ar_order) + 1))  # the ar strategy settles left to right, one per step
    page = page_path.read_text()
    assert page.count('<div class="side">') == 2 and page.count('<table class="grid">') == 6
    assert "<dt>strategy</dt><dd>ar, reparam-uncond-deterministic-cosine, adaptive</dd>" in page


@pytest.mark.slow
def test_the_trajectory_page_renders_in_a_real_browser(trained, tmp_path):
    import shutil
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium): the page is checked by the tests above")
    page, png = tmp_path / "t.html", tmp_path / "t.png"
    r = _run("dlm_jax.generate", "--workdir", str(trained), "--prompt", "Das Haus ist klein.", "--length", "6",
             "--config.sampler.steps=4", "--trajectory", str(page))
    assert r.returncode == 0, r.stderr[-3000:]
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=900,600", page.as_uri()], capture_output=True, timeout=120)
    assert png.exists() and png.stat().st_size > 5000
    Image = pytest.importorskip("PIL.Image")
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    for colour in ("#ffe066", "#e4e4e4"):  # new and masked cells are painted
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(1) < 8).sum() > 100, colour


BAD_INPUT = [
    (["dlm_jax.evaluate", "--workdir", "/nonexistent/run"], "does not exist"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "   ", "--length", "4"], "empty prompt"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Haus " * 200, "--length", "4"], "Shorten it"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--tasks", "no_such_task"], "unknown task"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--limit", "0"], "would evaluate nothing"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Haus", "--length", "-3"], "must be >= 2"),
    (["dlm_jax.generate", "--workdir", "WD", "--input", "BADJSON"], "line 2 is not JSON"),
    (["dlm_jax.generate", "--workdir", "WD", "--input", "LATIN1"], "is not UTF-8 text"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.num_train_steps=0"],
     "would train nothing"),
    (["dlm_jax.export", "--workdir", "WD", "--out", "NONEMPTY"], "pass --overwrite"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "WD", "--config.batch_size=16"],
     "batch_size: 8 -> 16"),
    (["dlm_jax.train", "--config", "configs/nope.py", "--workdir", "TMP"], "No such file or directory"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.nope=1"], "unknown config key"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.batch_size=abc"],
     "invalid literal for int()"),
    (["dlm_jax.train", "--config", "configs/iwslt14.py:bogus", "--workdir", "TMP"], "unknown size 'bogus'"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "LATIN1"], "is a file"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--config.nope=1"], "unknown config key"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Hallo", "--length", "4", "--trajectory",
      "LATIN1/t.html"], "--trajectory"),
    (["dlm_jax.data.prepare", "mmlu", "--src", "TMP", "--out", "LATIN1/x"], "cannot be written"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--tasks", "wmt14_en_de_tfds"], "is not prepared under"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--split", "bogus"], "has no split 'bogus'"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--batch_size", "0"], "must be at least 1"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--rank_samples", "-1"], "must be >= 0"),
    (["dlm_jax.generate", "--workdir", "WD", "--input_task", "ding_de_en", "--index", "99999"], "past the end"),
    (["dlm_jax.generate", "--workdir", "WD", "--input_task", "ding_de_en", "--split", "bogus"], "no split 'bogus'"),
    (["dlm_jax.data.show", "ding_de_en", "--split", "tset"], "(did you mean 'test'?)"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Hallo", "--length", "4", "--trajectory", "TMP/t.png"],
     "must end in .html or .svg"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.optimizer.lrr=1"],
     "did you mean --config.optimizer.lr?"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--config.samplr.steps=3"], "did you mean --config.sampler.steps?"),
    (["dlm_jax.train", "--config", "configs/tiny.py:foo", "--workdir", "TMP"], "takes no variant"),
    (["dlm_jax.train", "--config", "configs/demo.py:stepz=3", "--workdir", "TMP"], "unknown config argument 'stepz'"),
    (["dlm_jax.evaluate", "--workdir", "WD", "--mesh", "data=two"], "axis=size pairs"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Haus", "--length", "8", "--config.sampler.steps=4",
      "--strategies", "ar,cmlm"], "the ar strategy writes one token per step"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Hallo", "--length", "3",
      "--config.sampler.strategy=adaptive"], "threshold"),
    (["dlm_jax.generate", "--workdir", "NOCKPT", "--prompt", "Hallo", "--length", "3"], "no complete checkpoint"),
    (["dlm_jax.data.show", "no_such_task", "--num_examples=1"], "unknown task or mixture 'no_such_task'"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.optimizer.learning_rate=1"],
     "unknown config key 'optimizer.learning_rate'"),
    (["launch.local_multiprocess", "--num_processes", "2", "--devices_per_process", "0", "--", "-m",
      "dlm_jax.train"], "--devices_per_process must be at least 1"),
    (["dlm_jax.serve", "--workdir", "WD", "--port", "0", "--config.sampler.block_length=4"],
     "the serving engine decodes whole responses"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Hallo", "--length", "3", "--config.sampler.block_length=-1"],
     "block_length must be an integer >= 0"),
    (["dlm_jax.generate", "--workdir", "WD", "--prompt", "Hallo", "--length", "3", "--config.sampler.cache=full"],
     "sampler cache='full'; choose one of ['none', 'prefix', 'dual']"),
    (["dlm_jax.train", "--config", "configs/tiny.py", "--workdir", "TMP", "--config.model.attention_layout=block"],
     "model.attention_layout='block'; choose one of ['bidirectional', 'prompt_prefix']"),
]
# The cases run in the worker's CLI helper (conftest.cli: one import of JAX / TF / seqio for all of them), each
# command line from freshly defined flags and a freshly imported entry module; the launcher runs as its own process.


def _own_process(args):
    return args[0] == "launch.local_multiprocess"


def _bad_input_cases(tiny_trained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "bad.jsonl").write_text('{"prompt": "Hallo"}\n{"prompt": \n')
    (tmp / "latin1.jsonl").write_bytes('{"prompt": "spät"}\n'.encode("latin-1"))
    (tmp / "nonempty").mkdir()
    (tmp / "nonempty" / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    (tmp / "nockpt").mkdir()
    (tmp / "nockpt" / "config.json").write_text((tiny_trained / "config.json").read_text())  # a run never saved
    paths = {"WD": tiny_trained, "BADJSON": tmp / "bad.jsonl", "LATIN1": tmp / "latin1.jsonl",
             "TMP": tmp / "run", "NONEMPTY": tmp / "nonempty", "NOCKPT": tmp / "nockpt"}
    head = lambda a: a.split("/")[0]  # noqa: E731  "LATIN1/t.html": a path under a file
    argvs = [[str(paths[head(a)]) + a[len(head(a)):] if head(a) in paths else a for a in args]
             for args, _ in BAD_INPUT]
    out, groups = {}, {}
    for i, argv in enumerate(argvs):
        if _own_process(argv):
            r = _run(*argv, fresh=True)
            out[i] = {"rc": r.returncode, "stderr": r.stderr}
        else:
            groups.setdefault(argv[0], []).append(i)
    for module, idx in groups.items():
        out.update(zip(idx, run_cli_cases(module, [argvs[i][1:] for i in idx])))
    return out, str(tmp)


@pytest.mark.slow
def test_bad_input_gives_a_clear_message(tiny_trained, tmp_path_factory):
    """Every BAD_INPUT command line: exit 2, the needle in one `error:` line (the last; only log lines before it),
    no traceback, nothing lost. One test (one worker, one run of the cases); a failure lists every failing case."""
    results, tmp = _bad_input_cases(tiny_trained, tmp_path_factory)
    failures = []
    for i, (args, needle) in enumerate(BAD_INPUT):
        err = results[i]["stderr"]
        *before, last = err.strip().splitlines() or [""]
        if not (results[i]["rc"] == 2 and needle in err and "Traceback" not in err and last.startswith("error: ")
                and all(re.match(r"[IW]\d{4} ", line) for line in before)):
            failures.append(f"{' '.join(args)[:120]} -> rc {results[i]['rc']}, wanted {needle!r}:\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert (Path(tmp) / "nonempty" / "model-00001-of-00002.safetensors").read_bytes() == b"stale"  # nothing lost


@pytest.mark.slow
def test_length_stage_and_length_beam(trained, tmp_path):
    length_wd = tmp_path / "length"
    r = _run("dlm_jax.train", "--config", f"configs/length_predictor.py:{trained},fast", "--workdir", str(length_wd),
             "--config.num_train_steps=4", "--config.batch_size=8", "--config.data.train_limit=64")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l) for l in (length_wd / "metrics.jsonl").read_text().splitlines()]
    assert "length_loss" in rows[-1]
    r = _run("dlm_jax.evaluate", "--workdir", str(trained), "--tasks", "ding_de_en", "--length_beam", "3",
             "--length_workdir", str(length_wd), "--config.sampler.steps=2", "--limit", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((trained / "eval" / "ding_de_en.json").read_text())
    assert res["length"] == "beam3" and res["num_examples"] == 6


@pytest.mark.slow
def test_multiple_choice_is_scored_generatively_and_by_rank_classification(trained, tmp_path):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "validation.jsonl").write_text("\n".join(json.dumps(
        {"question": f"{i} + 1 = ?", "subject": "math", "choices": ["one", "two", "three"], "answer": i % 3})
        for i in range(6)))
    r = _run("dlm_jax.evaluate", "--workdir", str(trained), "--tasks", "mmlu", "--rank_samples", "2",
             env={"DLM_DATA_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((trained / "eval" / "mmlu.json").read_text())
    assert set(res["metrics"]) == {"accuracy", "accuracy_macro", "rank_accuracy", "rank_accuracy_macro"}
    assert res["sampler"]["steps"] == 1 and res["num_examples"] == 6
    assert 0.0 <= res["metrics"]["rank_accuracy"] <= 100.0


@pytest.mark.slow
def test_generate_takes_the_sampler_from_config_overrides(trained):
    r = _run("dlm_jax.generate", "--workdir", str(trained), "--prompt", "Das Haus ist klein.", "--length", "6",
             "--config.sampler.strategy=adaptive", "--config.sampler.threshold=0.5", "--config.sampler.steps=6")
    assert r.returncode == 0, r.stderr[-3000:]
    evals = int(re.search(r"\((\d+) model evaluations\)", r.stdout).group(1))
    assert 1 <= evals <= 6  # adaptive: at most `steps`, threshold taken from the command line


def test_restore_reads_params_only_straight_into_a_mesh(trained, monkeypatch):
    import jax
    import numpy as np
    from dlm_jax import pretrained
    from dlm_jax.inference import restore_run
    from dlm_jax.parallel import make_mesh
    from dlm_jax.training import step

    def forbidden(*a, **k):
        raise AssertionError("inference must not load a HuggingFace checkpoint or build an optimizer")
    monkeypatch.setattr(pretrained, "load_pretrained", forbidden)
    monkeypatch.setattr(step, "build_optimizer", forbidden)
    one = restore_run(trained)
    mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, devices=jax.devices()[:2])  # the tiny MLP is 37 wide
    sharded = restore_run(trained, mesh=mesh)
    kernel = sharded.params["layers_0"]["mlp"]["wo"]["kernel"]
    assert kernel.sharding.mesh.shape == mesh.shape and "fsdp" in str(kernel.sharding.spec)
    assert one.step == sharded.step == 8
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(sharded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_export_unprunes_to_a_huggingface_model_that_computes_the_same(trained, tmp_path):
    import jax.numpy as jnp
    import numpy as np
    from tests.conftest import torch_or_skip
    torch = torch_or_skip()
    import transformers
    from dlm_jax.inference import restore_run
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model-00002-of-00002.safetensors").write_bytes(b"stale shard of an earlier export")
    (tmp_path / "hf" / "NOTES.md").write_text("mine")
    r = _run("dlm_jax.export", "--workdir", str(trained), "--out", str(tmp_path / "hf"), "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "hf" / "model-00002-of-00002.safetensors").exists()  # replaced, not left beside
    assert (tmp_path / "hf" / "NOTES.md").read_text() == "mine"  # files an export does not write are kept
    run = restore_run(trained)
    vmap = run.vocab_map
    assert vmap is not None and vmap.size < len(vmap.old_to_new)  # the tiny config prunes
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == len(vmap.old_to_new)
    old = np.asarray(vmap.new_to_old)[np.random.default_rng(0).integers(0, vmap.size, (2, 12))]
    old[:, 0] = run.vocab.bos_id
    with torch.no_grad():
        theirs = hf(torch.as_tensor(old, dtype=torch.long)).logits.numpy()
    ours = np.asarray(run.model.apply({"params": run.params}, jnp.asarray(vmap.to_new(old))))
    np.testing.assert_allclose(theirs[..., vmap.new_to_old], ours, atol=1e-4)
    unkept = np.setdiff1d(np.arange(len(vmap.old_to_new)), vmap.new_to_old)
    assert theirs[..., unkept].max() < -1e8  # never predicted: the full softmax equals the pruned one


@pytest.mark.slow
def test_an_unreadable_latest_checkpoint_is_skipped_with_one_warning(trained, tmp_path):
    """A truncated newest checkpoint: inference and resume use the newest good one; nothing is deleted."""
    import shutil

    import numpy as np
    from dlm_jax.inference import restore_run
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    shutil.copytree(wd / "checkpoints" / "8", wd / "checkpoints" / "16")  # a newer checkpoint, then damaged
    damaged = [f for f in (wd / "checkpoints" / "16" / "state").rglob("*") if f.is_file() and f.stat().st_size > 64]
    assert damaged
    for f in damaged:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    good = restore_run(trained)
    run = restore_run(wd)
    assert run.step == 8
    for a, b in zip(__import__("jax").tree.leaves(run.params), __import__("jax").tree.leaves(good.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    r = _run("dlm_jax.train", "--config", "configs/tiny.py", "--workdir", str(wd), "--config.num_train_steps=10",
             fresh=True)  # what a user sees on stderr: every thread's and library's output, as a new process has it
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checkpoint 16" in r.stderr and "using step 8 instead" in r.stderr and "resuming at step 8" in r.stderr
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr  # orbax's abandoned reads
    warning = [line for line in r.stderr.splitlines() if "checkpoint 16" in line]
    assert len(warning) == 1 and len(warning[0]) < 300 and " at 0x" not in warning[0], warning
    assert {"8", "10", "16"} <= {p.name for p in (wd / "checkpoints").iterdir()}  # saved; the damaged one kept


def test_a_run_starts_quietly(trained):
    """No TensorFlow / XLA / CUDA start-up lines, the config as one line, one line per logged step."""
    out = json.loads((trained.parent / "train_output.json").read_text())
    for noise in ("oneDNN", "cuda", "cuInit", "InitializeLog", "xla_bridge", "TaskRegistry", "cpu_feature_guard"):
        assert noise not in out["stderr"], (noise, out["stderr"][:3000])
    assert out["stdout"].splitlines()[0].startswith("config: configs/tiny.py; overrides: num_train_steps=8")
    assert "model:" not in out["stdout"] and "optimizer:" not in out["stdout"]  # not the whole config as YAML
    steps = [line for line in out["stderr"].splitlines() if "step 5/8" in line]
    assert len(steps) == 1 and "loss " in steps[0], out["stderr"][-3000:]


@pytest.mark.slow
def test_the_decoder_only_ar_baseline_trains_through_the_same_command(tmp_path):
    """objective=ar with causal attention trains with the usual command; inference decodes it with the KV cache,
    and restoring it as an RDM run is one line."""
    wd = tmp_path / "ar"
    r = _run("dlm_jax.train", "--config", "configs/tiny.py", "--workdir", str(wd), "--config.num_train_steps=4",
             "--config.log_every_steps=2", "--config.objective=ar", "--config.model.causal=True",
             "--config.ar.label_smoothing=0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert "num_tokens" in rows[-1] and np.isfinite(rows[-1]["loss"]) and "loss_t01-10" not in rows[-1]
    saved = json.loads((wd / "config.json").read_text())
    assert saved["objective"] == "ar" and saved["model"]["causal"] is True
    from dlm_jax.config import parse
    from dlm_jax.errors import ConfigError
    from dlm_jax.inference import restore_run
    from dlm_jax.rundir import RunDir
    assert restore_run(wd).generator().decoding is not None  # AR decoding (beam search with a KV cache)
    rdm = RunDir(wd).read_config()
    rdm.objective = "rdm"
    with pytest.raises(ConfigError, match="trained with objective='ar'"):  # `evaluate` / `generate` in one line
        restore_run(wd, config=rdm)
    with pytest.raises(ConfigError, match="objective: 'ar' -> 'rdm'"):  # a resume with the other objective
        RunDir(wd).check_resume(parse(rdm))


@pytest.mark.parametrize("module, required", [("dlm_jax.train", ("--config", "--workdir")),
                                              ("dlm_jax.generate", ("--config", "--workdir", "--prompt")),
                                              ("dlm_jax.evaluate", ("--config", "--workdir", "--tasks"))])
def test_helpshort_lists_the_flags_a_user_must_pass(module, required):
    r = _run(module, "--helpshort", timeout=120)
    shown = {line.split(":")[0].strip().replace("[no]", "") for line in r.stdout.splitlines()
             if line.strip().startswith("--")}
    assert set(required) <= shown, r.stdout[-2000:]
