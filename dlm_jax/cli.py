"""What the entry points share: absl flags for a run's config, logging set-up, and the one place user errors are
caught (printed as `error: ...`, exit 2, no traceback; anything else is a bug and shows its traceback).

    python -m dlm_jax.train    --config configs/X.py[:variant] --workdir DIR [--config.key=value ...]
    python -m dlm_jax.evaluate --workdir DIR [--config.sampler.steps=10 ...] [--tasks a,b] ...
    python -m dlm_jax.generate --workdir DIR --prompt TEXT [--config.sampler.strategy=... ...] ...

`evaluate` and `generate` read the run's saved config (DIR/config.json); `--config.key=value` flags override it
there exactly as they override a config file in `train`.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jax
from absl import app, flags
from ml_collections import config_dict, config_flags

from dlm_jax import config as config_lib, parallel
from dlm_jax.errors import ConfigError, InputError, UserError
from dlm_jax.rundir import RunDir

if TYPE_CHECKING:
    from dlm_jax.inference import RestoredRun

FLAGS = flags.FLAGS


def define_config_file_flag() -> None:
    """`--config FILE.py[:arg]` (a `get_config(arg)` file) with `--config.key=value` overrides."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:variant]).",
                                    lock_config=True)


def define_config_override_flag() -> None:
    """`--config.key=value` overrides of a saved run's config (the keys and types of `config.base_config()`)."""
    try:  # ml_collections reads the command line's --config.key overrides here, at definition
        config_flags.DEFINE_config_dict("config", config_lib.base_config(), "Overrides of the run's saved config.",
                                        lock_config=True)
    except (AttributeError, KeyError):
        _fail(unknown_key_message(sys.argv))


def unknown_key_message(argv: list[str]) -> str:
    """The error for a `--config.a.b=...` whose key the config lacks, from the schema (`config.base_config()`, which
    every config file builds on): the first unknown key, the closest existing one, or the keys at that level."""
    base = config_lib.base_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node, walked = base, []
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, config_dict.ConfigDict) or part not in node:
                options = sorted(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
                near = difflib.get_close_matches(part, options, n=1)
                where = ".".join(walked) or "the config"
                hint = (f"did you mean --config.{'.'.join([*walked, near[0], *parts[i + 1:]])}?" if near
                        else f"{where} has {', '.join(options)}" if options else f"{where} is a value, not a group")
                return f"unknown config key {key!r}; {hint} (`python -m dlm_jax.train --config configs/demo.py " \
                       "--dump` prints every key)"
            node, walked = node[part], [*walked, part]
    return ("unknown config key; the keys are those `python -m dlm_jax.train --config configs/demo.py --dump` "
            "prints")


def config_overrides() -> dict[str, object]:
    """The `--config.key=value` values given on the command line, by dotted key."""
    return dict(config_flags.get_override_values(FLAGS["config"]))


def config_spec(argv: list[str]) -> str | None:
    """The `FILE.py[:arg]` of the command line's `--config` (either spelling), if any."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv and argv.index("--config") + 1 < len(argv):
        spec = argv[argv.index("--config") + 1]
    return spec


def config_line(argv: list[str] | None = None) -> str:
    """One line saying which config a run uses: the file, its variant and the command line's overrides."""
    argv = sys.argv if argv is None else argv
    spec = config_spec(argv)
    path, _, variant = (spec or "?").partition(":")
    overrides = ", ".join(f"{k}={v}" for k, v in config_overrides().items())
    return (f"config: {path}" + (f", variant {variant}" if variant else "")
            + (f"; overrides: {overrides}" if overrides else "") + " (--dump prints it whole)")


def check_workdir(path: str | Path, flag: str = "--workdir") -> None:
    """An output folder (a training workdir: new, or a run to resume) must be one this process can write: checked
    before anything is built."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} {p} is a file; give a folder (a new one, or a run to resume)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{flag} {p} cannot be written ({e.strerror or e}); choose a folder you can write")


def check_output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] = ()) -> None:
    """An output file's folder must exist or be creatable and writable, and its name end in one of `suffixes` (the
    formats the command writes, when it picks the format by the name), checked before the work that fills it."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {p}: the file name must end in {' or '.join(suffixes)} (the format is chosen by "
                         "the extension)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        existed = p.exists()
        with p.open("a"):
            pass
        if not existed:
            p.unlink()
    except OSError as e:
        raise InputError(f"{flag} {p} cannot be written ({e.strerror or e}); give a path in a folder you can write")


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


def define_inference_flags(pretrained: bool = False) -> None:
    """The flags `evaluate` and `generate` share: config overrides, the run, its mesh, the length predictor.
    `pretrained`: also `--pretrained` (a model as it is), then one of it and `--workdir` is required."""
    define_config_override_flag()
    flags.DEFINE_string("workdir", None, "The trained run's directory.")
    if pretrained:
        flags.DEFINE_string("pretrained", None, "Instead of --workdir: a pretrained decoder LLM as it is (an HF "
                            "directory, a .gguf file, or smollm2-135m-instruct), decoded left to right with its KV "
                            "cache, greedy unless --config.decoding.beam_size says otherwise.")
        flags.register_multi_flags_validator(
            ["workdir", "pretrained"], lambda f: (f["workdir"] is None) != (f["pretrained"] is None),
            message="give exactly one of --workdir (a trained run) and --pretrained (a model as it is)")
    flags.DEFINE_string("mesh", None, "Restore and sample on a device mesh, e.g. data=1,fsdp=4,tensor=2 (params "
                        "go straight into their shards; default: one device, or in a multi-process launch every "
                        "device as data=-1, the params replicated).")
    flags.DEFINE_integer("length_beam", None, "Length beam size (needs --length_workdir).")
    flags.DEFINE_integer("micro_batch", 8, "Rows per model evaluation inside a batch: each row's scores and samples "
                         "are then bit-identical whatever its batch (0: the whole batch at once; faster on large "
                         "batches, equal only to the last bits).")
    flags.DEFINE_string("length_workdir", None, "Run directory of the length-predictor stage.")
    if not pretrained:
        flags.mark_flags_as_required(["workdir"])


def restore_from_flags(step: int | None = None) -> "RestoredRun":
    """The run of `--workdir` (its saved config with the `--config.*` overrides) restored into `--mesh`, with the
    length predictor of `--length_workdir` when `--length_beam` is given. Starts `jax.distributed` first in a
    multi-process launch (the same environment as `train`'s): every process then restores its shards of the params
    and runs the same inference."""
    parallel.initialize_distributed()
    if FLAGS.length_beam and not FLAGS.length_workdir:
        raise ConfigError("--length_beam needs --length_workdir (a run of configs/length_predictor.py)")
    from dlm_jax.inference import restore_run  # deferred: --helpshort and flag errors need none of it
    rundir = RunDir(FLAGS.workdir)
    if FLAGS.micro_batch < 0:
        raise ConfigError(f"--micro_batch must be >= 0, got {FLAGS.micro_batch}")
    restored = restore_run(rundir.path, config=apply_overrides(rundir.read_config()),
                           mesh=inference_mesh(FLAGS.mesh), step=step, micro_batch=FLAGS.micro_batch)
    return restored.with_length_head(FLAGS.length_workdir) if FLAGS.length_beam else restored


def restore_pretrained_from_flags(unused: tuple[str, ...] = (), why: str = "") -> "RestoredRun":
    """The model of `--pretrained` as it is, in `--mesh`, with the `--config.*` overrides (e.g. decoding.*).
    `unused`: the entry point's flags that configure what `--pretrained` does not run (`why`): given on the command
    line, they are one error line naming each, before anything loads."""
    given = [f"--{name}" for name in (*unused, "micro_batch", "length_workdir") if FLAGS[name].present]
    if given:
        raise ConfigError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --pretrained ("
                          f"{why or 'a decoder LLM decoded left to right with its KV cache'}): drop "
                          f"{'it' if len(given) == 1 else 'them'}, or pass --workdir for a trained diffusion run")
    parallel.initialize_distributed()
    from dlm_jax.inference import restore_pretrained
    return restore_pretrained(FLAGS.pretrained, mesh=inference_mesh(FLAGS.mesh), overrides=config_overrides())


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
    """INFO logs from dlm_jax only (libraries' INFO chatter, e.g. seqio's registry listings, jax's backend probing,
    orbax's per-save lines, is dropped; their warnings and errors pass); TensorFlow's C++ logs off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_own_info)


def _own_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}dlm_jax{os.sep}" in record.pathname


def _fail(message: str) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with its errors (a bad value, an unknown flag or config key, a config file that fails
    to load) as one `error:` line and exit 2 instead of "FATAL Flags parsing error" and a traceback."""
    try:
        return FLAGS(argv)
    except UserError as e:
        _fail(e)
    except OSError as e:
        _fail(f"cannot read the config file: {e}; give an existing file, e.g. --config configs/demo.py")
    except (AttributeError, KeyError):
        _fail(unknown_key_message(argv))
    except flags.Error as e:
        failed = config_file_error(argv)  # ml_collections folds a config file's exception into its own text
        _fail(failed if failed is not None else f"{str(e).strip().splitlines()[0]}; see --helpshort")
    return []


def config_file_error(argv: list[str]) -> str | None:
    """The message of the exception `get_config(arg)` of the command line's `--config FILE[:arg]` raises (a bad
    variant or argument), from calling it again ourselves; None when it loads or there is no --config file."""
    spec = config_spec(argv)
    path, _, arg = (spec or "").partition(":")
    if not path.endswith(".py") or not Path(path).is_file():
        return None
    import importlib.util
    module_spec = importlib.util.spec_from_file_location("_dlm_jax_config_check", path)
    try:
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        module.get_config(*([arg] if arg else []))
    except Exception as e:  # noqa: BLE001 - whatever the file raises is its message to the user
        return f"{path}: {e}" if not isinstance(e, UserError) else str(e)
    return None


def load_config_flag() -> None:
    """Loads `--config` (a config file is read lazily by ml_collections) so that a missing file or an unknown
    `--config.key` is a `ConfigError` here rather than a traceback later."""
    if "config" not in FLAGS:
        return
    try:
        FLAGS.config.to_dict()  # the first use loads the file and applies the overrides
    except OSError as e:
        why = re.search(r"\[Errno \d+\] ([^\n]*)", str(e))
        raise ConfigError(f"cannot read the config file: {why.group(1) if why else ' '.join(str(e).split())}; "
                          "give an existing file, e.g. --config configs/demo.py") from None
    except (AttributeError, KeyError):
        raise ConfigError(unknown_key_message(sys.argv)) from None


def run(main: Callable[[list[str]], int | None]) -> None:
    """`absl.app.run(main)`, with `UserError` (and flag errors) printed as one line and exit code 2."""
    def guarded(argv: list[str]) -> int | None:
        try:
            load_config_flag()
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and exits 0 instead)
            print("interrupted (Ctrl-C); nothing was lost: results are written as each finishes, and a training "
                  "run resumes from its last complete checkpoint when the same command is rerun", file=sys.stderr)
            return 130
    app.run(guarded, flags_parser=parse_flags)
