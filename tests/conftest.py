"""Test setup: 8 simulated CPU devices (must be set before jax is imported) and shared fixtures."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test models are tiny: compiling them costs far more than running them, so tests (and the processes they
# start) compile with XLA's optimizations mostly off (about a third less time). What they check is behaviour;
# the modules whose claims are about production compiles, bit-identical results across batches and processes
# (test_batch_invariance.py, test_multiprocess.py), turn optimizations back on (`full_optimization`).
# DLM_TEST_FULL_OPTIMIZATION=1 compiles everything as in production.
if not os.environ.get("DLM_TEST_FULL_OPTIMIZATION"):
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A persistent compilation cache for this test session only (subprocesses inherit it): the trainer tests run the
# same tiny train step several times (full run, killed run, resumed run), and each would otherwise recompile it.
# Set DLM_TEST_NO_COMPILATION_CACHE=1 to compile everything afresh.
if not os.environ.get("DLM_TEST_NO_COMPILATION_CACHE") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="dlm_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import pytest  # noqa: E402


def set_dotted(config, overrides: dict):
    """`config` with each "a.b.c" key of `overrides` set (as `--config.a.b.c=value` would); returns `config`."""
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config


@pytest.fixture(scope="module")
def full_optimization():
    """XLA's optimizations on, in this process and the processes it starts, for a whole module (see the top of
    this file); a module uses it as an autouse fixture so that its other module fixtures compile under it too."""
    import jax
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
        before = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", False)
        yield
        jax.config.update("jax_disable_most_optimizations", before)


def run_cli_cases(module: str, argvs: list[list[str]], timeout: int = 600) -> list[dict]:
    """Each command line `python -m MODULE *argv` run by `cli` (this worker's helper interpreter): [{"rc",
    "stdout", "stderr"}] in order."""
    out = []
    for argv in argvs:
        r = cli(module, *argv, timeout=timeout)
        out.append({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr})
    return out


_HELPER: dict = {}  # this worker's tests/cli_cases.py --serve process and the pipe it answers on


def cli(module: str, *args: str, env: dict | None = None, timeout: int = 300, fresh: bool = False):
    """`python -m MODULE *args` from the repository root with one device (XLA_FLAGS=""), as a CompletedProcess
    (returncode, stdout, stderr). It runs in this worker's helper interpreter (tests/cli_cases.py --serve: flags
    reset and the entry module imported anew for each command line), which pays the imports of JAX / TF / seqio /
    transformers once per worker instead of once per command. `fresh` (or an XLA_FLAGS in `env`, which a running
    interpreter cannot change): a new process, for what depends on it (start-up output, the device count)."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    if fresh or "XLA_FLAGS" in (env or {}):
        return subprocess.run([sys.executable, "-m", module, *args], cwd=repo, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "XLA_FLAGS": "", **(env or {})})
    request = {"module": module, "args": list(args), "env": {
        **(env or {}), "JAX_DISABLE_MOST_OPTIMIZATIONS": os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")}}
    reply = _ask_helper(repo, request, timeout)
    return subprocess.CompletedProcess([module, *args], reply["rc"], reply["stdout"], reply["stderr"])


def _ask_helper(repo, request: dict, timeout: int) -> dict:
    """Sends one command line to the helper (started on first use) and waits up to `timeout` s for its reply; a
    helper that dies or hangs is killed (the next call starts another) and the call fails."""
    import json
    import select
    import subprocess
    import sys
    if _HELPER.get("proc") is None or _HELPER["proc"].poll() is not None:
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen([sys.executable, str(repo / "tests" / "cli_cases.py"), "--serve"], cwd=repo,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                text=True, pass_fds=(write_fd,),
                                env={**os.environ, "XLA_FLAGS": "", "DLM_CLI_REPLY_FD": str(write_fd)})
        os.close(write_fd)
        _HELPER.update(proc=proc, reply=os.fdopen(read_fd))
        atexit.register(proc.kill)
    proc, reply = _HELPER["proc"], _HELPER["reply"]
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    ready, _, _ = select.select([reply], [], [], timeout)
    line = reply.readline() if ready else ""
    if not line:
        proc.kill()
        _HELPER["proc"] = None
        raise subprocess.TimeoutExpired(request["module"], timeout) if not ready else RuntimeError(
            f"the CLI helper died running {request}")
    return json.loads(line)


def torch_or_skip():
    """Imports torch or skips the calling test (parity tests need it; the library never does)."""
    return pytest.importorskip("torch", reason="torch is not installed; parity tests need `pip install torch==2.13.0`")


def _shared_dir(tmp_path_factory, name: str):
    """A folder every pytest-xdist worker of this session sees (the workers' common base), and its lock."""
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    return root / name, FileLock(str(root / f"{name}.lock"))


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """A tiny run trained for 8 steps by the real CLI (configs/tiny.py), shared by the end-to-end tests: trained
    once per test session, by whichever xdist worker asks first (the others wait for it and copy it, so tests that
    write into it do not race). Each worker's copy is its own."""
    import shutil
    shared, lock = _shared_dir(tmp_path_factory, "tiny_trained")
    with lock:
        if not (shared / "done").exists():
            _train_tiny(tmp_path_factory, shared / "e2e")
            (shared / "done").write_text("")
    wd = tmp_path_factory.mktemp("e2e")
    shutil.copytree(shared / "e2e", wd, dirs_exist_ok=True)
    shutil.copy(shared / "train_output.json", wd.parent / "train_output.json")
    return wd


def _train_tiny(tmp_path_factory, wd):
    import subprocess
    import sys
    from pathlib import Path
    wd.mkdir(parents=True)
    cache = tmp_path_factory.mktemp("xla_cache")  # the config key, not the test session's cache (env var unset)
    r = subprocess.run([sys.executable, "-m", "dlm_jax.train", "--config", "configs/tiny.py", "--workdir", str(wd),
                        "--config.num_train_steps=8", f"--config.compilation_cache_dir={cache}"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert any(cache.iterdir()), "compilation_cache_dir was not used"
    (wd.parent / "train_output.json").write_text(__import__("json").dumps({"stdout": r.stdout, "stderr": r.stderr}))


@pytest.fixture(scope="module")
def bert_vocab():
    """The bundled BERT's vocabulary with every task registered over it."""
    import dlm_jax
    from dlm_jax.data import registry
    from dlm_jax.data.vocab import HFVocabulary
    vocab = HFVocabulary(dlm_jax.load_tokenizer("bundled"))
    registry.register_all(vocab)
    return vocab


def tiny_rdm_batch(b=8, length=12, vocab=50, seed=0):
    """Rows `<random prompt> <response at 5..9>` + 2 padding positions, as NumPy (the training tests' batch)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab, (b, length)).astype(np.int32)
    resp = np.zeros((b, length), bool)
    resp[:, 5:10] = True
    pad = np.ones((b, length), np.int32)
    pad[:, 10:] = 0
    tokens[:, 10:] = 1
    return {"tokens": tokens, "response_mask": resp, "padding_mask": pad}


# Modules whose tests take the longest (multi-process launches, CLI subprocesses), collected first so that the two
# xdist workers start on them and finish together instead of one long test running alone at the end. The order
# inside a module is kept (module-scoped fixtures are set up once per worker).
HEAVY_FIRST = ("test_multiprocess.py", "test_lm_eval.py", "test_end_to_end.py", "test_modernbert.py",
               "test_paper_eval.py", "test_baselines.py", "test_serving.py", "test_training.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))  # stable sort
