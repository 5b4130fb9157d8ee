"""`python -m dlm_jax.plot`: learning curves from metrics.jsonl, by step or training wall-clock seconds."""
import json
import xml.etree.ElementTree as ET

import pytest
from conftest import run_cli_cases

from dlm_jax.errors import InputError
from dlm_jax.rundir import metric_curve, metric_series


def _run(tmp_path, name, rows):
    wd = tmp_path / name
    wd.mkdir()
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return wd


ROWS = [{"step": 5, "loss": 2.0, "step_time_s": 0.5, "compile_time_s": 10.0},
        {"step": 10, "loss": 1.5, "step_time_s": 0.4, "compile_time_s": 10.0},
        {"step": 10, "eval_bleu": 1.0},
        {"step": 15, "loss": 1.2, "step_time_s": 0.4, "compile_time_s": 3.0},  # resumed: a new process compiled
        {"step": 15, "eval_bleu": 2.5}]


def test_curves_by_step_and_by_training_seconds():
    assert metric_curve(ROWS, "loss") == ([5.0, 10.0, 15.0], [2.0, 1.5, 1.2])
    # step 1 is the compilation + run; then 4 steps at 0.5 s, 5 at 0.4, a resume's compile and 4 more at 0.4
    xs, ys = metric_curve(ROWS, "loss", "wall")
    assert xs == pytest.approx([12.0, 14.0, 18.6]) and ys == [2.0, 1.5, 1.2]
    assert metric_curve(ROWS, "eval_bleu", "wall") == (pytest.approx([14.0, 18.6]), [1.0, 2.5])  # its step's time


def test_plot_writes_one_labelled_line_per_run_and_bad_input_is_one_line(tmp_path):
    a = _run(tmp_path, "a", ROWS)
    b = _run(tmp_path, "b", [{"step": 5, "loss": 3.0, "step_time_s": 1.0, "compile_time_s": 5.0}])
    from dlm_jax import visualize
    series = metric_series([str(a), str(b)], "loss", "wall", ["pretrained", "scratch"])
    visualize.curves_figure(series, str(tmp_path / "c.svg"), xlabel="x", ylabel="loss")
    svg = (tmp_path / "c.svg").read_text()  # matplotlib draws text as paths, each after a comment with its words
    ET.fromstring(svg)
    assert "<!-- pretrained -->" in svg and "<!-- scratch -->" in svg and svg.count('id="line2d_') >= 2
    with pytest.raises(InputError, match="has no metric 'los' \\(did you mean 'loss'\\?\\)"):
        metric_series([str(a)], "los", "step", None)
    rows = run_cli_cases("dlm_jax.plot", [
        [str(a), str(b), "--metric", "loss", "--x", "wall", "--out", str(tmp_path / "ok.png")],
        [str(a), "--metric", "loss", "--out", str(tmp_path / "c.gif")],
        [str(tmp_path / "nope"), "--metric", "loss", "--out", str(tmp_path / "n.png")],
        [str(a), "--metric", "bleu", "--out", str(tmp_path / "m.png")],
        [str(a), str(b), "--metric", "loss", "--labels", "one", "--out", str(tmp_path / "l.png")]])
    assert rows[0]["rc"] == 0 and (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"
    for r, needle in zip(rows[1:], ("must end in .png or .svg or .pdf", "has no metrics.jsonl", "has no metric 'bleu'",
                                    "--labels has 1 labels for 2 runs")):
        lines = [line for line in r["stderr"].splitlines() if line.strip()]
        assert r["rc"] == 2 and lines[-1].startswith("error: ") and needle in lines[-1], r["stderr"]
        assert "Traceback" not in r["stderr"]
    assert not any((tmp_path / f).exists() for f in ("c.gif", "n.png", "m.png", "l.png"))  # nothing written
