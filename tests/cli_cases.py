"""Runs command lines of the entry points in one interpreter, as `python -m MODULE ARGS...` would, so that the tests
pay one import of JAX / TensorFlow / seqio / transformers (about 12 s of CPU here) per interpreter instead of one
per command line.

    python tests/cli_cases.py --each '[["dlm_jax.evaluate", ["--workdir", "w"]], ["dlm_jax.generate", [...]]]'
        those command lines one after another in this interpreter (test_multiprocess: one launch of N processes
        runs several entry points)
    python tests/cli_cases.py --serve
        a helper that reads {"module": M, "args": [...], "env": {...}} lines on stdin and answers each with one JSON
        line on the file descriptor DLM_CLI_REPLY_FD (tests/conftest.py `cli`, one helper per test worker)

Each command line starts from a fresh entry module: absl's flags are reset, the flags every entry module defined
are removed and the module is imported again (evaluate / generate read `--config.key` overrides when their flags
are defined, at import), then its `main` runs through `cli.run` as from the shell (flag parsing, the `UserError`
catch, the exit code). What a command cannot change in a shared interpreter (the device count: XLA_FLAGS; the
first-import output) stays with a fresh process (conftest).
"""
import contextlib
import importlib
import io
import json
import logging
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as `python -m` from the repository root


def _fresh_entry(module: str, args: list[str], base: set[str]):
    """`module`'s main behind `cli.run`, imported anew with `sys.argv` = the command line and only absl's own
    flags (`base`) defined before it."""
    from absl import flags
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - base:  # every entry module's flags and the config files' --config.key flags
        delattr(flags.FLAGS, name)
    for name in [m for m in sys.modules if m == module or m in ENTRY_MODULES]:
        del sys.modules[name]
    sys.argv = [module, *args]
    mod = importlib.import_module(module)
    if module in ARGV_MAINS:  # not absl: `if __name__ == "__main__": sys.exit(main(sys.argv[1:]))`
        return lambda: sys.exit(mod.main(list(args)))
    from dlm_jax import cli
    return lambda: cli.run(mod.main)


# entry modules that define absl flags at import (imported anew for each command line)
ENTRY_MODULES = {"dlm_jax.train", "dlm_jax.evaluate", "dlm_jax.generate", "dlm_jax.export", "dlm_jax.serve",
                 "dlm_jax.lm_eval", "dlm_jax.plot", "dlm_jax.data.prepare", "dlm_jax.data.show",
                 "launch.local_multiprocess"}
# entry modules whose main parses its own argv (lm-eval's argparse command line) instead of absl's flags
ARGV_MAINS = {"dlm_jax.lm_eval"}


def run_one(module: str, args: list[str], base: set[str], env: dict | None = None) -> dict:
    """Runs one command line; its exit code and what it printed. `env`: variables set for this command only."""
    out, err = io.StringIO(), io.StringIO()
    saved_env = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    _jax_compile_mode()
    handlers = logging.getLogger().handlers
    streams = [(h, getattr(h, "stream", None)) for h in handlers]
    for h, _ in streams:  # log lines go where print(..., file=sys.stderr) goes
        if hasattr(h, "setStream"):
            h.setStream(err)
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _fresh_entry(module, args, base)()
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - a bug: reported as the shell would see it
            traceback.print_exc()
            rc = 1
    for h, s in streams:
        if s is not None and hasattr(h, "setStream"):
            h.setStream(s)
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _jax_compile_mode() -> None:
    """JAX_DISABLE_MOST_OPTIMIZATIONS as the caller has it now (read by jax at import; set anew per command)."""
    if "jax" in sys.modules:
        value = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "0").lower() not in ("0", "false", "")
        sys.modules["jax"].config.update("jax_disable_most_optimizations", value)


def _base_flags() -> set[str]:
    from absl import app, flags
    import absl.logging  # noqa: F401  (its flags are absl's own)
    app.define_help_flags()  # defined once per interpreter, by the first app.run
    return set(flags.FLAGS)


def serve() -> None:
    """The helper: one command line per stdin line, one reply per line on DLM_CLI_REPLY_FD."""
    import signal
    base = _base_flags()
    reply = os.fdopen(int(os.environ["DLM_CLI_REPLY_FD"]), "w")
    for line in sys.stdin:
        req = json.loads(line)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        res = run_one(req["module"], req["args"], base, req.get("env"))
        for s, h in handlers.items():  # a training run's stop handlers end with it
            signal.signal(s, h)
        reply.write(json.dumps(res) + "\n")
        reply.flush()


def run_each(commands: list[list]) -> int:
    """`--each`: each [module, args] of `commands` in turn in this interpreter, printing as it runs (a line
    `=== MODULE` on stdout before each), as a launcher's process would run them one after another; the first
    non-zero exit code ends it."""
    base = _base_flags()
    for module, args in commands:
        print(f"=== {module}", flush=True)
        try:
            _fresh_entry(module, args, base)()
        except SystemExit as e:
            if e.code not in (0, None):
                return e.code if isinstance(e.code, int) else 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
elif __name__ == "__main__" and sys.argv[1:2] == ["--each"]:
    sys.exit(run_each(json.loads(sys.argv[2])))
