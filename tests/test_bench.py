"""The GPU benchmarking tools run (on the simulated CPU mesh): bench/mfu.py's step and bench/trace_summary.py."""
import glob
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_mfu_step_runs_sharded_and_its_profile_summarises(tmp_path):
    import jax
    import mfu
    import trace_summary
    r = mfu.run_one("tiny-test", batch=16, length=32, grad_accum=1, remat="none", attention="xla", dropout=0.0,
                    head_capacity=0.9, steps=2, dtype="float32", profile=str(tmp_path))
    assert r["devices"] == jax.device_count() == 8 and r["dropped"] == 0
    # The head runs at the masked positions only: about half of each row's 16 response tokens on average.
    assert 2 < r["masked_per_seq"] < 14 and r["model_tflops_per_step"] > 0 and r["step_s"] > 0
    assert r["mfu"] is None  # no peak is known for a CPU: nothing invented
    traces = glob.glob(str(tmp_path / "**" / "perfetto_trace.json.gz"), recursive=True)
    assert traces
    text = trace_summary.summarize(trace_summary.load_events(traces[0]), "CPU", top=5, exact=False)
    assert text.startswith("## /host:CPU") and "| name | ms | count | share |" in text


def test_mfu_attention_check_compares_with_float32():
    import mfu
    errs = mfu.check_attention("tiny-test", "xla", "float32")
    assert errs["einsum"] == 0.0 and errs["xla"] < 1e-5
    with pytest.raises(ValueError, match="16-bit"):
        mfu.check_attention("tiny-test", "cudnn", "float32")


def test_head_bench_variants_agree():
    """bench/head.py: every head / CE variant computes the same loss (the padded table and the hand-written CE
    gradient change speed, not results)."""
    import head
    rows = [head.run("tiny-test", 16, v, repeats=1) for v in head.VARIANTS]
    assert all(r["ms"] > 0 for r in rows)
    losses = [r["loss"] for r in rows]
    assert max(losses) - min(losses) < 1e-2 * abs(losses[0]), losses  # bf16 compute: agree to its precision
    with pytest.raises(ValueError, match="unknown variant"):
        head.head_step(None, "nope")


def test_input_pipeline_bench_checks_ids_and_prints_rates(capsys):
    import input_pipeline
    assert input_pipeline.main(["--split", "test", "--batch-sizes", "7,64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| seqio") or line.startswith("| batched")]
    assert len(rows) == 3 and len({r.split("|")[2] for r in rows}) == 1  # every variant read the same examples


def test_compile_memory_sample_mode_reports_the_samplers_memory():
    import subprocess
    r = subprocess.run([sys.executable, "bench/compile_memory.py", "--mode", "sample", "--model", "tiny-test",
                        "--devices", "4", "--batch", "8", "--length", "32", "--response", "16", "--remat", "none",
                        "--no-scan", "--dtype", "float32", "--steps", "4"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "# sampler: batch 8 x 32 tokens" in r.stdout and "peak per device" in r.stdout and "fits" in r.stdout


def test_compile_memory_compiles_the_train_step_for_a_tpu_topology():
    """The TPU compiler itself (libtpu, `pip install "jax[tpu]"`), no TPU: skipped where libtpu is not installed."""
    import subprocess
    pytest.importorskip("libtpu", reason="libtpu is not installed (optional: pip install \"jax[tpu]\")")
    r = subprocess.run([sys.executable, "bench/compile_memory.py", "--tpu", "v5p:2x2x1", "--model", "tiny-test",
                        "--batch", "16", "--length", "32", "--remat", "none", "--no-scan"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "XLA_FLAGS": "", "TPU_SKIP_MDS_QUERY": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(4 TPU v5p:2x2x1 devices)" in r.stdout and "95 GiB HBM, 459 bf16 TFLOP/s per device" in r.stdout
    assert "roofline step >=" in r.stdout and "fits in 95 GiB" in r.stdout
