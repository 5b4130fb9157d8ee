"""Real multi-process runs on this CPU (gloo collectives): the code path of a pod or a multi-node GPU job.

2 processes must train exactly what 1 process trains on the same devices (the same logged losses, train-time
evaluation and final params, on a data x fsdp x tensor mesh), evaluate and generate alike, stop and resume
together, and the launcher's bad inputs fail in one line.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import set_dotted

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = [sys.executable, str(REPO / "launch" / "local_multiprocess.py")]
# configs/tiny.py with these settings, as flags of the launched processes and in this process (`_tiny`)
TINY = {"num_train_steps": 4, "log_every_steps": 1, "checkpoint_every_steps": 4, "batch_size": 8,
        "data.train_limit": 64}


@pytest.fixture()
def production_compiles(monkeypatch):
    """Bit-identical results are claimed for production compiles: XLA's optimizations on (tests/conftest.py), here
    and in the processes a test launches, for the exact comparisons of inference. The training comparison (losses
    and params within a tolerance) and the tests of stopping, resuming and bad input compile as the suite does."""
    import jax
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _flags(overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in overrides.items()]


TRAIN = ["-m", "dlm_jax.train", "--config", "configs/tiny.py", *_flags(TINY)]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               DLM_DISTRIBUTED_TIMEOUT_S="60")
    return env


def _rows(workdir: Path) -> dict[int, dict]:
    """metrics.jsonl by step (a step's training and evaluation rows merged)."""
    out: dict[int, dict] = {}
    for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()):
        out.setdefault(r["step"], {}).update(r)
    return out


def _tiny(**overrides) -> Any:
    """configs/tiny.py with TRAIN's settings and `overrides` (dotted keys), for runs inside this 8-device process."""
    from configs import tiny
    return set_dotted(tiny.get_config(), {**TINY, **overrides})


def _train_here(workdir: Path, **overrides) -> None:
    """The trainer in this process (8 simulated devices): the 1-process side of each comparison."""
    from dlm_jax.config import parse
    from dlm_jax.training import loop
    loop.run(parse(_tiny(**overrides)), workdir)


# a tensor-parallel mesh needs sizes the tensor axis divides: the unpruned vocabulary (30,522) and an even MLP
TENSOR_OK = {"model.prune_vocab": False, "model.overrides.intermediate_size": 40}


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_and_resume_in_one(tmp_path):
    """data=2 x fsdp=2 x tensor=2 over 2 processes x 4 devices vs 1 process x 8 devices: the same losses at every
    step and the same train-time evaluation (the sampler across processes); the 2-process checkpoint at step 4
    then resumes in 1 process and ends with the uninterrupted run's params."""
    import jax
    from dlm_jax.inference import restore_run
    mesh = {"mesh.shape.data": 2, "mesh.shape.fsdp": 2, "mesh.shape.tensor": 2, **TENSOR_OK,
            "eval_every_steps": 4, "data.eval_examples": 4}
    one, two = tmp_path / "one", tmp_path / "two"
    _train_here(one, **mesh, num_train_steps=6)
    r = subprocess.run([*LAUNCHER, "--num_processes", "2", "--devices_per_process", "4", "--log_dir",
                        str(tmp_path / "logs"), "--", *TRAIN, "--workdir", str(two), *_flags(mesh)], cwd=REPO,
                       env=_env(4), capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert r.returncode == 0, r.stderr[-3000:] + logs[-2000:]
    a, b = _rows(one), _rows(two)
    assert sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([a[s]["loss"] for s in b], [b[s]["loss"] for s in b], rtol=1e-5)
    assert "eval_bleu" in b[4] and b[4]["eval_bleu"] == pytest.approx(a[4]["eval_bleu"], abs=1e-6)
    _train_here(two, **mesh, num_train_steps=6)  # resumes the 2-process checkpoint in one process
    b = _rows(two)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([a[5]["loss"], a[6]["loss"]], [b[5]["loss"], b[6]["loss"]], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(restore_run(one).params), jax.tree.leaves(restore_run(two).params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def _launch_each(commands: list[tuple[str, list[str]]], tmp_path: Path, devices: int) -> list[str]:
    """One launch of 2 processes x `devices` running the entry points `commands` one after another in each process
    (tests/cli_cases.py --each: one start-up for all of them); process 0's stdout of each command."""
    r = subprocess.run([*LAUNCHER, "--num_processes", "2", "--devices_per_process", str(devices), "--log_dir",
                        str(tmp_path / "logs"), "--", str(REPO / "tests" / "cli_cases.py"), "--each",
                        json.dumps(commands)], cwd=REPO, env=_env(devices), capture_output=True, text=True,
                       timeout=600)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert r.returncode == 0, r.stderr[-3000:] + logs[-2000:]
    return r.stdout.split("=== ")[1:]


@pytest.mark.slow
def test_evaluate_generate_and_an_ar_run_in_two_processes_give_the_one_process_results(tmp_path,
                                                                                       production_compiles):
    """Sharded inference across processes, launched as 2 processes x 2 devices (one launch, the entry points run
    one after another in each process): `evaluate` and `generate` on a data=2 x tensor=2 mesh, then an AR run (the
    encoder-decoder, beam search with a KV cache) through the unchanged `evaluate` on a data=4 mesh. Each restores
    the checkpoint into the mesh and gives exactly what the same mesh of 4 devices gives in one process (the
    evaluator and generator here; process 0 writes the files)."""
    import dataclasses
    import jax
    from dlm_jax.data import pipeline
    from dlm_jax.inference import EvalRequest, Evaluator, decode_responses, prompts_of, restore_run
    from dlm_jax.parallel import make_mesh
    wd, ar = tmp_path / "w", tmp_path / "ar"
    _train_here(wd, **TENSOR_OK, num_train_steps=2, checkpoint_every_steps=2)
    _train_here(ar, **{"model.name": "transformer-tiny-test", "model.overrides.max_positions": 64,
                       "objective": "ar", "model.causal": True, "num_train_steps": 2, "checkpoint_every_steps": 2})
    common = ["--workdir", str(wd), "--mesh", "data=2,fsdp=1,tensor=2"]
    out = _launch_each([("dlm_jax.evaluate", [*common, "--limit", "6", "--batch_size", "4"]),
                        ("dlm_jax.generate", [*common, "--input_task", "ding_de_en", "--num_examples", "3",
                                              "--config.sampler.steps=5"]),
                        ("dlm_jax.evaluate", ["--workdir", str(ar), "--mesh", "data=4", "--limit", "6",
                                              "--batch_size", "4", "--config.decoding.max_len_b=12"])], tmp_path, 2)
    generated = [line for line in out[1].splitlines() if line.startswith("output:")]

    def here(run_dir: Path, mesh: dict, **decoding) -> tuple[dict, Any]:
        restored = restore_run(run_dir, mesh=make_mesh(mesh, devices=jax.devices()[:4]))
        gen = restored.generator()
        if decoding:
            gen.decoding = restored.run.decoding.__class__(**decoding)
        return json.loads((run_dir / "eval" / "ding_de_en.json").read_text()), (restored, Evaluator(
            gen, restored.vocab, restored.run.sampler, restored.feature_spec(), checkpoint_step=restored.step
        ).run_task("ding_de_en", EvalRequest(limit=6, batch_size=4)))

    for run_dir, mesh, decoding in ((ar, {"data": 4}, {"max_len_b": 12}), (wd, {"data": 2, "fsdp": 1, "tensor": 2},
                                                                            {})):
        evaluated, (restored, mine) = here(run_dir, mesh, **decoding)
        assert evaluated["num_examples"] == mine["num_examples"] == 6
        assert evaluated["length"] == mine["length"] and evaluated["metrics"] == mine["metrics"]
        assert [e["prediction"] for e in evaluated["examples"]] == [e["prediction"] for e in mine["examples"]]
        assert (mine["length"] == "ar-beam5") == (run_dir == ar)
    ex = pipeline.load_examples("ding_de_en", "test", restored.feature_spec(), restored.vocab, limit=3)
    out = restored.generator().generate(prompts_of(ex.rows), [int(n) for n in ex.rows["response_length"][:3]],
                                        dataclasses.replace(restored.run.sampler, steps=5), jax.random.key(0))
    texts = decode_responses(restored.vocab.tokenizer, out, restored.vocab.eos_id)
    assert generated == [f"output:    {t}   ({int(n)} model evaluations)" for t, n in zip(texts, out["num_evals"])]


def test_launcher_bad_inputs_fail_in_one_line(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*LAUNCHER, "--num_processes", "2", "--port", str(port), "--", "-c", "print(1)"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and f"port {port} is in use" in r.stderr and "Traceback" not in r.stderr
    # a batch the processes cannot split: one line from every process, exit 2, no traceback
    r = subprocess.run([*LAUNCHER, "--num_processes", "2", "--log_dir", str(tmp_path), "--", *TRAIN, "--workdir",
                        str(tmp_path / "w"), "--config.batch_size=7"], cwd=REPO, env=_env(1), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "number of processes (2)" in r.stderr and "Traceback" not in r.stderr


def test_a_coordinator_that_never_comes_up_is_a_bounded_one_line_error(tmp_path):
    env = _env(1)
    env.update(JAX_COORDINATOR_ADDRESS="localhost:1", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1",
               DLM_DISTRIBUTED_TIMEOUT_S="5", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    r = subprocess.run([sys.executable, *TRAIN, "--workdir", str(tmp_path / "w")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "could not reach the coordinator at localhost:1 within 5 s" in r.stderr
    assert "Traceback" not in r.stderr


def _run_until(cmd: list[str], wd: Path, rows: int) -> subprocess.Popen:
    """Starts the launcher and returns once metrics.jsonl has `rows` rows."""
    import time
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    deadline = time.time() + 300
    while time.time() < deadline and not ((wd / "metrics.jsonl").exists() and
                                          len((wd / "metrics.jsonl").read_text().splitlines()) >= rows):
        time.sleep(0.3)
    return proc


def _checkpoints(wd: Path) -> list[int]:
    return sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_ctrl_c_then_sigkill_across_processes_and_every_step_logged_once(tmp_path):
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it: each process gets it directly and
    again forwarded by the launcher): every process stops at one step, one consistent checkpoint, all exit 0. The
    rerun resumes there; kill -9 of one process then stops the other within the launcher's grace period with a one-line
    error; the next run resumes from the last complete checkpoint, and metrics.jsonl holds every step once."""
    import signal
    import time
    wd = tmp_path / "w"
    base = [*LAUNCHER, "--num_processes", "2", "--devices_per_process", "1", "--grace_s", "5", "--log_dir",
            str(tmp_path / "logs"), "--", *TRAIN, "--workdir", str(wd), "--config.num_train_steps=100000"]
    proc = _run_until([*base, "--config.checkpoint_every_steps=100000"], wd, 3)
    os.killpg(proc.pid, signal.SIGINT)
    code, err = proc.wait(240), proc.stderr.read().decode()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "rerun the same command to resume" in err
    assert len(_checkpoints(wd)) == 1  # one consistent checkpoint, written by both processes
    first = _checkpoints(wd)[0]
    proc = _run_until([*base, "--config.checkpoint_every_steps=2"], wd, first + 4)  # resumed: saves every 2 steps
    pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                           text=True).stdout.split()]
    assert len(pids) == 2, pids
    t0 = time.time()
    os.kill(max(pids), signal.SIGKILL)  # process 1 (started second)
    code, err = proc.wait(120), proc.stderr.read().decode()
    assert code != 0 and time.time() - t0 < 60, err[-2000:]
    assert "was killed by signal 9; stopping the others" in err and "Rerun the same command" in err
    stop = _checkpoints(wd)[-1] + 2
    # the last complete checkpoint resumes (in this process: the 2-process checkpoint restores anywhere)
    _train_here(wd, num_train_steps=stop)
    steps = [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, stop + 1))  # no step repeated or missing across both restarts
