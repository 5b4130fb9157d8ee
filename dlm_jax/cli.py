"""What the entry points share: absl flags for a run's config, logging set-up, and the one place user errors are
caught (printed as `error: ...`, exit 2, no traceback; anything else is a bug and shows its traceback).

    python -m dlm_jax.train    --config configs/X.py[:variant] --workdir DIR [--config.key=value ...]
    python -m dlm_jax.evaluate --workdir DIR [--config.sampler.steps=10 ...] [--tasks a,b] ...
    python -m dlm_jax.generate --workdir DIR --prompt TEXT [--config.sampler.strategy=... ...] ...

`evaluate` and `generate` read the run's saved config (DIR/config.json); `--config.key=value` flags override it
there exactly as they override a config file in `train`.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import jax
from absl import app, flags
from ml_collections import config_dict, config_flags

from dlm_jax import config as config_lib, parallel
from dlm_jax.errors import ConfigError, UserError
from dlm_jax.inference import RestoredRun, restore_run
from dlm_jax.rundir import RunDir

FLAGS = flags.FLAGS


def define_config_file_flag() -> None:
    """`--config FILE.py[:arg]` (a `get_config(arg)` file) with `--config.key=value` overrides."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:variant]).",
                                    lock_config=True)


def define_config_override_flag() -> None:
    """`--config.key=value` overrides of a saved run's config (the keys and types of `config.base_config()`)."""
    config_flags.DEFINE_config_dict("config", config_lib.base_config(), "Overrides of the run's saved config.",
                                    lock_config=True)


def config_overrides() -> dict[str, object]:
    """The `--config.key=value` values given on the command line, by dotted key."""
    return dict(config_flags.get_override_values(FLAGS["config"]))


def apply_overrides(saved: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """The saved config with the command line's `--config.key=value` overrides applied."""
    out = config_dict.ConfigDict(saved.to_dict())
    for key, value in config_overrides().items():
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return out


def define_inference_flags() -> None:
    """The flags `evaluate` and `generate` share: config overrides, the run, its mesh, the length predictor."""
    define_config_override_flag()
    flags.DEFINE_string("workdir", None, "The trained run's directory.")
    flags.DEFINE_string("mesh", None, "Restore and sample on a device mesh, e.g. data=1,fsdp=4,tensor=2 (params "
                        "go straight into their shards; default: one device, or in a multi-process launch every "
                        "device as data=-1, the params replicated).")
    flags.DEFINE_integer("length_beam", None, "Length beam size (needs --length_workdir).")
    flags.DEFINE_integer("micro_batch", 8, "Rows per model evaluation inside a batch: each row's scores and samples "
                         "are then bit-identical whatever its batch (0: the whole batch at once; faster on large "
                         "batches, equal only to the last bits).")
    flags.DEFINE_string("length_workdir", None, "Run directory of the length-predictor stage.")
    flags.mark_flags_as_required(["workdir"])


def restore_from_flags(step: int | None = None) -> RestoredRun:
    """The run of `--workdir` (its saved config with the `--config.*` overrides) restored into `--mesh`, with the
    length predictor of `--length_workdir` when `--length_beam` is given. Starts `jax.distributed` first in a
    multi-process launch (the same environment as `train`'s): every process then restores its shards of the params
    and runs the same inference."""
    parallel.initialize_distributed()
    if FLAGS.length_beam and not FLAGS.length_workdir:
        raise ConfigError("--length_beam needs --length_workdir (a run of configs/length_predictor.py)")
    rundir = RunDir(FLAGS.workdir)
    if FLAGS.micro_batch < 0:
        raise ConfigError(f"--micro_batch must be >= 0, got {FLAGS.micro_batch}")
    restored = restore_run(rundir.path, config=apply_overrides(rundir.read_config()),
                           mesh=inference_mesh(FLAGS.mesh), step=step, micro_batch=FLAGS.micro_batch)
    return restored.with_length_head(FLAGS.length_workdir) if FLAGS.length_beam else restored


def inference_mesh(spec: str | None) -> Any:
    """`--mesh data=1,fsdp=4,tensor=2` -> a device mesh for restoring and sampling (None: one device; several
    processes: every device of every process, rows split over them, params replicated)."""
    if not spec:
        return None if jax.process_count() == 1 else parallel.make_mesh({"data": -1})
    shape = {}
    for part in spec.split(","):
        axis, _, size = part.partition("=")
        if not size.lstrip("-").isdigit():
            raise ConfigError(f"--mesh {spec!r}: write axis=size pairs, e.g. --mesh data=1,fsdp=4,tensor=2")
        shape[axis.strip()] = int(size)
    return parallel.make_mesh(shape)


def quiet_logs() -> None:
    """INFO logs on, except orbax's per-save chatter; TensorFlow's C++ logs off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or "orbax" not in r.pathname)


def run(main: Callable[[list[str]], int | None]) -> None:
    """`absl.app.run(main)`, with `UserError` printed as one line and exit code 2."""
    def guarded(argv: list[str]) -> int | None:
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and exits 0 instead)
            print("interrupted (Ctrl-C); nothing was lost: results are written as each finishes, and a training "
                  "run resumes from its last complete checkpoint when the same command is rerun", file=sys.stderr)
            return 130
    app.run(guarded)
