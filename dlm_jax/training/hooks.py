"""What the training loop does besides stepping, as periodic hooks (in the spirit of clu's periodic actions).

Each hook is called after every step with (step, state, metrics, host batch), `step` counting completed steps:
- `MetricsLogger`: averages the step metrics over a window, adds step time, tokens/s, TFLOP/s and MFU, and writes
  metrics.jsonl + TensorBoard (process 0); the first (compiling) step of a process is timed apart.
- `NonFiniteGuard`: stops with the last good checkpoint named after `max_bad_steps` non-finite steps in a row.
- `PeriodicEval`: validation through the shared evaluator, its time kept out of the step time.
- `Checkpointer`: orbax saves every `checkpoint_every_steps`, at the end, and when preempted.
- `Preemption`: turns SIGTERM into a flag the loop checks after each step.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from clu import metric_writers
from jax.experimental import multihost_utils
from tqdm import tqdm

from dlm_jax.errors import TrainingError
from dlm_jax.model import ModelConfig
from dlm_jax.rundir import METRICS_FILE, TENSORBOARD_DIR, RunDir
from dlm_jax.training.step import train_flops_per_step


class Preemption:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop checks after each step: the step finishes, one
    checkpoint is written, the run exits 0 with a line saying how to resume.

    A second Ctrl-C more than `FORCE_AFTER_S` seconds after the first stops at once without saving (the last
    complete checkpoint stays); one arriving sooner is the same keypress delivered twice (a terminal signals a
    launcher's whole process group, and the launcher forwards it as well) and is ignored. With several processes,
    `sync()` makes them agree after every step (any process signalled -> all stop at that step), so every process
    saves the same checkpoint: processes signalled a step apart would otherwise enter the collective save at
    different steps and hang.
    """

    FORCE_AFTER_S = 2.0

    def __init__(self) -> None:
        self.signalled = False
        self.requested = False  # agreed by every process (`sync`)
        self._first: float | None = None
        try:
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            pass

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if signum == signal.SIGINT and self._first is not None and now - self._first > self.FORCE_AFTER_S:
            print("stopped at once (second Ctrl-C), without saving; rerun the same command to resume from the last "
                  "complete checkpoint", file=sys.stderr, flush=True)
            os._exit(130)
        if self._first is None:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            logging.warning("%s: finishing this step, saving a checkpoint and exiting (Ctrl-C again to stop at once, "
                            "without saving)", name)
            self._first = now
        self.signalled = True

    def sync(self) -> bool:
        if jax.process_count() == 1:
            self.requested = self.signalled
        else:
            flags = multihost_utils.process_allgather(np.int32(self.signalled))
            self.requested = bool(np.asarray(flags).any())
        return self.requested


def step_line(step: int, total: int, m: dict[str, float]) -> str:
    """One short line for a logged step (every metric is in metrics.jsonl and TensorBoard)."""
    parts = [f"step {step}/{total}"]
    for key, fmt in (("loss", "loss {:.4f}"), ("length_loss", "length_loss {:.4f}"), ("accuracy", "acc {:.3f}"),
                     ("grad_norm", "grad_norm {:.3g}"), ("learning_rate", "lr {:.2e}"),
                     ("tokens_per_s", "{:,.0f} tokens/s"), ("mfu", "MFU {:.1%}")):
        if key in m:
            parts.append(fmt.format(m[key]))
    if m.get("num_dropped", 0) > 0:  # the head's capacity was too small: those tokens were not trained on
        parts.append(f"DROPPED {m['num_dropped']:.1f} tokens/step (raise --config.diffusion.max_predictions)")
    return " | ".join(parts)


class MetricsLog:
    """metrics.jsonl in the workdir + TensorBoard (clu) on process 0.

    A run resumed at step `start` first moves the rows of later steps (logged by a run that died before
    checkpointing them, e.g. a killed process) to `metrics.discarded.jsonl`: those steps are trained again, so
    metrics.jsonl never holds a step twice.
    """

    def __init__(self, workdir: Path, start: int = 0):
        self.path = workdir / METRICS_FILE
        self.enabled = jax.process_index() == 0
        self.writer = None
        if self.enabled:
            self._drop_after(start)
            # TensorBoard only: the step's one log line is MetricsLogger's (clu's default writer logs it again)
            self.writer = metric_writers.SummaryWriter(str(workdir / TENSORBOARD_DIR))

    def _drop_after(self, start: int) -> None:
        if not self.path.exists():
            return
        keep, later = [], []
        for line in self.path.read_text().splitlines():
            if line.strip():
                (keep if json.loads(line).get("step", 0) <= start else later).append(line + "\n")
        if not later:
            return
        with open(self.path.with_name("metrics.discarded.jsonl"), "a") as f:
            f.write("".join(later))
        self.path.write_text("".join(keep))
        logging.warning("resumed at step %d: moved %d logged rows of later steps to metrics.discarded.jsonl",
                        start, len(later))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        self.writer.write_scalars(step, scalars)
        self.writer.flush()


def average_metrics(metrics_list: list[dict[str, Any]], bucket_names: Sequence[str]) -> dict[str, float]:
    """Window averages of step metrics; the per-t-bucket losses as sums over counts; `skipped` as a sum."""
    host = jax.device_get(metrics_list)
    out: dict[str, float] = {}
    for k in host[0]:
        if k in ("t_bucket_loss", "t_bucket_count"):
            continue
        out[k] = float(np.mean([np.asarray(m[k]) for m in host]))
    if "t_bucket_loss" in host[0]:
        tot = np.sum([m["t_bucket_loss"] for m in host], 0)
        cnt = np.sum([m["t_bucket_count"] for m in host], 0)
        for n, s, c in zip(bucket_names, tot, cnt):
            if c > 0:
                out[n] = float(s / c)
    out["skipped"] = float(np.sum([np.asarray(m["skipped"]) for m in host]))
    return out


def is_due(step: int, every: int, total: int) -> bool:
    return step % every == 0 or step == total


class MetricsLogger:
    """Logs window averages every `every` steps (and at the last) with throughput and MFU."""

    def __init__(self, log: MetricsLog, *, every: int, total: int, start: int, bucket_names: Sequence[str],
                 flops_of: Callable[[float], float], peak_flops: float | None):
        self.log, self.every, self.total, self.names = log, every, total, bucket_names
        self.flops_of, self.peak = flops_of, peak_flops  # flops_of(num_masked) -> useful FLOPs of one step
        self.pending: list[dict[str, Any]] = []
        self.compile_s: float | None = None
        self.last: dict[str, float] = {}
        self.bar = _progress(start, total)
        self.restart_window()

    def restart_window(self) -> None:
        """Starts a new timing window (after a log, an evaluation or the compile step)."""
        self.t_window, self.tokens = time.perf_counter(), 0

    def __call__(self, step: int, state: Any, metrics: dict[str, Any], batch: dict[str, np.ndarray]) -> None:
        if self.compile_s is None:  # this process's first step: compilation + one step, not a throughput sample
            jax.block_until_ready(metrics["loss"])
            self.compile_s = time.perf_counter() - self.t_window
            logging.info("first step (compile + run): %.1fs", self.compile_s)
            self.last = {**average_metrics([metrics], self.names), "compile_time_s": self.compile_s}
            if is_due(step, self.every, self.total):  # logged like any step, without throughput figures
                self.log.write(step, self.last)
            self.restart_window()
        else:
            self.pending.append(metrics)
            self.tokens += int(batch["padding_mask"].sum()) * jax.process_count()
        if self.bar is not None:
            self.bar.update(1)
        if self.pending and is_due(step, self.every, self.total):
            self._write(step)

    def _write(self, step: int) -> None:
        last = average_metrics(self.pending, self.names)
        dt = time.perf_counter() - self.t_window
        last.update(step_time_s=dt / len(self.pending), tokens_per_s=self.tokens / dt, compile_time_s=self.compile_s)
        flops = self.flops_of(last.get("num_masked")) * len(self.pending) / dt
        if self.peak:
            last["mfu"] = flops / (self.peak * jax.device_count())
        last["tflops_per_s"] = flops / 1e12
        self.log.write(step, last)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
        else:
            logging.info("%s", step_line(step, self.total, last))
        self.last, self.pending = last, []
        self.restart_window()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(start: int, total: int) -> tqdm | None:
    if not sys.stderr.isatty() or jax.process_index() != 0:
        return None
    return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)


def step_flops(model_config: ModelConfig, length: int, rows: int) -> Callable[[float | None], float]:
    """Useful FLOPs of one step as a function of its masked-position count (None: every position, as in the
    length stage). Coupled sampling's doubled rows count: they are trained."""
    return lambda masked: train_flops_per_step(model_config, length, rows,
                                               length * rows if masked is None else masked)


class NonFiniteGuard:
    """Raises `TrainingError` once `max_bad` non-finite steps in a row are counted (checked at log steps)."""

    def __init__(self, mngr: ocp.CheckpointManager, rundir: RunDir, *, every: int, total: int, max_bad: int):
        self.mngr, self.rundir, self.every, self.total, self.max_bad = mngr, rundir, every, total, max_bad

    def __call__(self, step: int, state: Any, metrics: dict[str, Any], batch: Any) -> None:
        if not is_due(step, self.every, self.total) or int(state["bad_steps"]) < self.max_bad:
            return
        self.mngr.wait_until_finished()
        raise TrainingError(
            f"{int(state['bad_steps'])} non-finite steps in a row at step {step}; stopping. The last good "
            f"checkpoint is step {self.mngr.latest_step()} in {self.rundir.path}/checkpoints. Lower optimizer.lr or "
            "enable optimizer.clip_norm, then rerun to resume.")


class PeriodicEval:
    """Every `every` steps: `evaluate(params) -> scalars`, logged; the timing window restarts after it."""

    def __init__(self, evaluate: Callable[[Any], dict[str, float]], log: MetricsLog, *, every: int,
                 restart_window: Callable[[], None]):
        self.evaluate, self.log, self.every, self.restart_window = evaluate, log, every, restart_window

    def __call__(self, step: int, state: Any, metrics: Any, batch: Any) -> None:
        if step % self.every:
            return
        scalars = self.evaluate(state["params"])
        self.log.write(step, scalars)
        logging.info("step %d eval: %s", step, scalars)
        self.restart_window()  # keep eval time out of step time


class Checkpointer:
    """Saves every `every` steps, at the last step and on preemption (those two forced, the loop then ends)."""

    def __init__(self, mngr: ocp.CheckpointManager, *, every: int, total: int, batch_size: int,
                 preemption: Preemption, position: Callable[[], dict] = dict):
        self.mngr, self.every, self.total, self.batch_size = mngr, every, total, batch_size
        self.preemption, self.position = preemption, position

    def __call__(self, step: int, state: Any, metrics: Any, batch: Any) -> None:
        force = step == self.total or self.preemption.requested
        if step % self.every == 0 or force:
            RunDir.save(self.mngr, step, state, examples_seen=step * self.batch_size, force=force,
                        position=self.position())
