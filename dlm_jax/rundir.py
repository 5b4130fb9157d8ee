"""The run directory: the one owner of its format, used by the trainer (writes) and by inference (reads).

    DIR/config.json                  the run's config (`RunConfig.source`), read back by `read_config`
    DIR/config_history.jsonl         each resume that changed the config: time, {key: [old, new]}
    DIR/model.json                   the ModelConfig the params have (after vocabulary pruning)
    DIR/vocab_map.npz                the pruned vocabulary (old <-> new ids), when pruned
    DIR/tokenizer/                   the tokenizer, so inference needs nothing outside DIR
    DIR/checkpoints/STEP/state       orbax: {"step", "params", "opt_state", "bad_steps"} (`STATE_KEYS`)
    DIR/checkpoints/STEP/data        orbax JSON: the data position {"step", "examples_seen"}
    DIR/metrics.jsonl, DIR/tensorboard/, DIR/eval/TASK.json

Orbax writes each step into a temporary directory and renames it when the save is complete, so a checkpoint
left half-written by a crash is never listed and a rerun resumes from the last complete one; a listed one that
cannot be read (truncated files) is skipped with a warning (`newest_readable`). Inference restores
the params alone (`restore_params`), straight into the shardings it asks for: no optimizer state is read.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from dlm_jax import config as config_lib
from dlm_jax.errors import CheckpointMismatchError, ConfigError, InputError, NoCheckpointError
from dlm_jax.model import ModelConfig
from dlm_jax.model.prune import VocabMap

CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"  # one line per resume that changed the config: keys, old, new
MODEL_FILE = "model.json"
VOCAB_MAP_FILE = "vocab_map.npz"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
ITEMS = ("state", "data")
STATE_KEYS = ("step", "params", "opt_state", "bad_steps")

State = dict[str, Any]


def new_state(params: Any, opt_state: Any) -> State:
    """A fresh train state with the checkpointed keys (`STATE_KEYS`)."""
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt_state,
            "bad_steps": jnp.zeros((), jnp.int32)}


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with the shardings) of placed arrays: what orbax restores into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A run directory at `path` (see the module docstring for what lives where)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        return self.path / name

    # -- config, model config, vocabulary, tokenizer ---------------------------------------------------------
    def metrics_rows(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (training windows and periodic evaluations), in file order."""
        f = self.file(METRICS_FILE)
        if not f.is_file():
            raise InputError(f"{self.path} has no {METRICS_FILE}; give the --workdir of a training run")
        rows = []
        for n, line in enumerate(f.read_text().splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{f} line {n} is not JSON (a run killed mid-write?); delete that line") from None
        return rows

    def require(self) -> None:
        """Raises `NoCheckpointError` unless this is a dlm_jax run directory."""
        if not self.path.exists():
            raise NoCheckpointError(f"workdir {self.path} does not exist; train first: python -m dlm_jax.train "
                                    f"--config configs/demo.py --workdir {self.path}")
        if not self.file(CONFIG_FILE).exists():
            raise NoCheckpointError(f"{self.path} is not a dlm_jax workdir (no {CONFIG_FILE}); train into it "
                                    "first with python -m dlm_jax.train --config ... --workdir DIR")

    def read_config(self) -> ml_collections.ConfigDict:
        self.require()
        return config_lib.load_saved(self.file(CONFIG_FILE).read_text())

    def has_checkpoints(self) -> bool:
        ckpt = self.path / CHECKPOINT_DIR
        return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())

    def check_resume(self, run: config_lib.RunConfig) -> dict[str, tuple[Any, Any]]:
        """Before a resume: the config's changes against the saved config.json. A change of a key that changes the
        computation (`config.COMPUTATION_KEYS`) is a `ConfigError` naming each key with its old and new value,
        unless `allow_config_change`; every change is appended to config_history.jsonl (process 0)."""
        if not (self.file(CONFIG_FILE).exists() and self.has_checkpoints()):
            return {}
        changes = config_lib.config_changes(self.read_config(), run.source)
        blocked = config_lib.computation_changes(changes)
        if blocked and not run.source.get("allow_config_change", False):
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in blocked.items())
            raise ConfigError(f"{self.path} was trained with another config ({listed}); resume with the saved "
                              "values (config.json), train into a new --workdir, or pass "
                              "--config.allow_config_change=True to continue with the new ones")
        if changes and jax.process_index() == 0:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: list(v) for k, v in changes.items()}}
            with self.file(CONFIG_HISTORY_FILE).open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        return changes

    def write_run(self, run: config_lib.RunConfig, model_config: ModelConfig, tokenizer: Any,
                  vocab_map: VocabMap | None) -> None:
        """Writes what inference reads besides the checkpoints (process 0 only)."""
        if jax.process_index() != 0:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.file(CONFIG_FILE).write_text(run.to_json())
        self.file(MODEL_FILE).write_text(json.dumps(dataclasses.asdict(model_config), indent=2))
        if vocab_map is not None:
            vocab_map.save(self.file(VOCAB_MAP_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(self.file(TOKENIZER_DIR)))

    def read_model_config(self) -> ModelConfig:
        f = self.file(MODEL_FILE)
        if not f.exists():
            raise NoCheckpointError(f"{self.path} has no {MODEL_FILE} (written by dlm_jax.train since the run-directory "
                                    "format of this version); retrain the run with this version")
        return ModelConfig(**json.loads(f.read_text()))

    def read_vocab_map(self) -> VocabMap | None:
        f = self.file(VOCAB_MAP_FILE)
        return VocabMap.load(f) if f.exists() else None

    def read_tokenizer(self) -> Any:
        from dlm_jax.pretrained import load_tokenizer  # transformers: only where a tokenizer is read
        return load_tokenizer(self.file(TOKENIZER_DIR), required=True)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def checkpoint_manager(self, *, max_to_keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        return ocp.CheckpointManager(self.path.resolve() / CHECKPOINT_DIR, options=options, item_names=ITEMS)

    @staticmethod
    def save(mngr: ocp.CheckpointManager, step: int, state: State, *, examples_seen: int, force: bool = False,
             position: dict[str, Any] | None = None) -> bool:
        """`position`: the input stream's state at `step` (`pipeline.IndexedBatches.position`)."""
        data = {"step": step, "examples_seen": examples_seen, "position": position or {}}
        saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ocp.args.JsonSave(data)), force=force)
        if saved:
            logging.info("checkpoint at step %d (async)", step)
        return saved

    @staticmethod
    def restore(mngr: ocp.CheckpointManager, abstract_state: Any) -> tuple[State, dict[str, Any], int] | None:
        """The newest readable train state, into the shardings of `abstract_state`; None if nothing is saved. A
        newer checkpoint that cannot be read (truncated, half-copied) is skipped with one warning line."""
        def load(step: int) -> Any:
            return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                              data=ocp.args.JsonRestore()))
        got = newest_readable(sorted(mngr.all_steps(), reverse=True), load, str(mngr.directory))
        if got is None:
            return None
        step, out = got
        logging.info("restored checkpoint at step %d", step)
        return out["state"], dict(out["data"]), step

    def checkpoint_step(self, step: int | None = None) -> int:
        """`step` if that checkpoint is complete, or the latest complete one; `NoCheckpointError` otherwise."""
        mngr = ocp.CheckpointManager(self.path.resolve() / CHECKPOINT_DIR, item_names=ITEMS)
        try:
            steps = mngr.all_steps()
        finally:
            mngr.close()
        if not steps or (step is not None and step not in steps):
            what = f"checkpoint {step}" if step is not None and steps else "complete checkpoint"
            raise NoCheckpointError(f"no {what} in {self.path}/{CHECKPOINT_DIR} (saved: {sorted(steps)}); train "
                                    "first, or pick a saved step")
        return max(steps) if step is None else step

    def restore_params(self, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
        """The params alone (no optimizer state) of checkpoint `step` (default: the newest readable one, an
        unreadable newer one skipped with a warning), placed straight into the shardings of `abstract_params`
        (ShapeDtypeStructs with `.sharding`)."""
        first = self.checkpoint_step(step)
        mngr = ocp.CheckpointManager(self.path.resolve() / CHECKPOINT_DIR, item_names=ITEMS)
        item = {"params": abstract_params}
        restore_args = jax.tree.map(
            lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype), item)

        def load(k: int) -> Any:
            return mngr.restore(k, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True)))
        try:
            steps = [first] if step is not None else sorted(mngr.all_steps(), reverse=True)
            got, out = newest_readable(steps, load, str(self.path / CHECKPOINT_DIR))
        finally:
            mngr.close()
        return out["state"]["params"], got


def metric_curve(rows: list[dict[str, Any]], metric: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(xs, ys) of `metric` over a run's metrics rows, by step or (`x="wall"`) by training seconds: the first
    step's compilation (`compile_time_s`) plus each logged window's `step_time_s` x its steps, evaluation time
    excluded. A row without the metric contributes no point; an evaluation row's wall time is that of its step."""
    wall, last, seen, walls = 0.0, 0, None, {}
    for r in sorted((r for r in rows if "step_time_s" in r), key=lambda r: r["step"]):
        steps, compiled = r["step"] - last, r.get("compile_time_s")
        if compiled is not None and compiled != seen:  # a process's first step: its compilation + run (resumes too)
            wall, steps, seen = wall + float(compiled), steps - 1, compiled
        wall += float(r["step_time_s"]) * max(steps, 0)
        last, walls[r["step"]] = r["step"], wall
    xs, ys = [], []
    for r in rows:
        if metric in r and isinstance(r[metric], (int, float)):
            if x == "wall":
                done = [s for s in walls if s <= r["step"]]
                xs.append(walls[max(done)] if done else 0.0)
            else:
                xs.append(float(r["step"]))
            ys.append(float(r[metric]))
    return xs, ys


def metric_series(runs: list[str], metric: str, x: str = "step", labels: list[str] | None = None
                  ) -> dict[str, tuple[list[float], list[float]]]:
    """label -> (xs, ys) of `metric` per run; one `InputError` naming the run and its metrics when one lacks it."""
    if not runs:
        raise InputError("name at least one run, e.g. python -m dlm_jax.plot runs/demo --metric loss --out l.png")
    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"--labels has {len(labels)} labels for {len(runs)} runs; give one per run")
    series = {}
    for run, label in zip(runs, labels or [Path(r).name for r in runs]):
        rows = RunDir(run).metrics_rows()
        xs, ys = metric_curve(rows, metric, x)
        if not ys:
            known = sorted({k for r in rows for k in r if k != "step"})
            near = difflib.get_close_matches(metric, known, n=1)
            raise InputError(f"{run} has no metric {metric!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + f"; its metrics: {', '.join(known)}")
        series[label] = (xs, ys)
    return series


def _short_reason(e: BaseException, limit: int = 100) -> str:
    """`Type: the first words of the message`, without object reprs (`<... at 0x...>`), at most `limit` chars."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-f]+>", "", " ".join(str(e).split()))
    text = text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _abandoned_read(unraisable: Any) -> bool:
    """What tensorstore reports (through `sys.unraisablehook`) when a read orbax abandoned (a damaged checkpoint)
    completes after orbax closed its event loop: harmless, one traceback per array."""
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and any(f.name == "call_soon_threadsafe" for f in frames))


def _quiet_abandoned_reads() -> None:
    """After a checkpoint failed to load, `_abandoned_read` reports are dropped (hundreds to thousands of lines
    for one damaged checkpoint); every other unraisable exception is printed as before."""
    hook = sys.unraisablehook
    if getattr(hook, "drops_abandoned_reads", False):
        return

    def unraisablehook(unraisable: Any) -> None:
        if not _abandoned_read(unraisable):
            hook(unraisable)

    unraisablehook.drops_abandoned_reads = True  # type: ignore[attr-defined]
    sys.unraisablehook = unraisablehook
    # ... and asyncio's report of the same abandoned reads' futures ("Future exception was never retrieved")
    logging.getLogger("asyncio").addFilter(lambda r: not str(r.msg).startswith("Future exception was never"))


def newest_readable(steps: list[int], load: Any, where: str) -> tuple[int, Any] | None:
    """(step, load(step)) of the first of `steps` (newest first) that loads; each unreadable newer one is skipped
    with one warning line. None without steps; `CheckpointMismatchError` (one line, the newest error) when none
    loads, e.g. after a change of the model's shape."""
    errors = []
    for step in steps:
        try:
            out = load(step)
        except Exception as e:  # noqa: BLE001 - orbax / tensorstore raise many kinds for a damaged checkpoint
            _quiet_abandoned_reads()
            logging.debug("checkpoint %d: %r", step, e)  # the whole error, for --verbosity=1
            errors.append((step, _short_reason(e)))
            continue
        for bad, why in errors:
            logging.warning("checkpoint %d in %s is incomplete or unreadable (%s); using step %d instead",
                            bad, where, why, step)
        return step, out
    if not errors:
        return None
    raise CheckpointMismatchError(
        f"no checkpoint in {where} could be restored (tried steps {[s for s, _ in errors]}; step {errors[0][0]}: "
        f"{errors[0][1]}); if the config's model shape changed since the run saved, use the saved config or a new "
        "--workdir")
