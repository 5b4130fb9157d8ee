"""Runs several command lines of one entry point in one interpreter, as `python -m MODULE ARGS...` would, and prints
one JSON line per command line: {"rc": exit code, "stderr": what it wrote to stderr}.

    python tests/cli_cases.py dlm_jax.generate '[["--workdir", "W", "--prompt", " "], [...]]'

The one-line-error tests use it so that each entry point's bad inputs cost one import of JAX / TensorFlow / seqio,
not one per case. absl's flags are reset between command lines; the entry point's `main` runs through `cli.run` as
from the shell (flag parsing, the `UserError` catch, the exit code).
"""
import contextlib
import importlib
import io
import json
import logging
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as `python -m` from the repository root


def run_one(module: str, entry, args: list[str], defined: set[str]) -> dict:
    from absl import flags
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - defined:  # a config file's --config.key flags, added per parse by ml_collections
        delattr(flags.FLAGS, name)
    sys.argv = [module, *args]
    err = io.StringIO()
    handlers = logging.getLogger().handlers
    streams = [(h, getattr(h, "stream", None)) for h in handlers]
    for h, _ in streams:  # log lines go where print(..., file=sys.stderr) goes
        if hasattr(h, "setStream"):
            h.setStream(err)
    rc = 0
    with contextlib.redirect_stderr(err):
        try:
            entry()
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - a bug: reported as the shell would see it
            traceback.print_exc()
            rc = 1
    for h, s in streams:
        if s is not None and hasattr(h, "setStream"):
            h.setStream(s)
    return {"rc": rc, "stderr": err.getvalue()}


def main() -> None:
    module, cases = sys.argv[1], json.loads(sys.argv[2])
    sys.argv = [module, *cases[0]]  # modules that read the command line at import see the first case
    mod = importlib.import_module(module)
    from dlm_jax import cli
    from absl import flags
    entry, defined = (lambda: cli.run(mod.main)), set(flags.FLAGS)  # noqa: E731
    for args in cases:
        print(json.dumps(run_one(module, entry, args, defined)), flush=True)


if __name__ == "__main__":
    main()
