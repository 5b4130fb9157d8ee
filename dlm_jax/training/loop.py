"""The training loop: setup -> restore -> for each step: batch -> step -> hooks (`dlm_jax.training.hooks`).

`run(run_config, workdir)` trains to `num_train_steps`, resuming from the workdir's latest complete checkpoint;
rerunning the same command after a preemption continues exactly where it stopped (batches are a function of
(seed, step)).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jax.experimental.compilation_cache import compilation_cache

from dlm_jax import parallel
from dlm_jax.config import RunConfig
from dlm_jax.diffusion import RDMConfig
from dlm_jax.diffusion.objective import bucket_names
from dlm_jax.inference import EvalRequest, Evaluator, Generator
from dlm_jax.rundir import RunDir, abstract_like
from dlm_jax.training import hooks
from dlm_jax.training.setup import Setup, setup
from dlm_jax.training.step import peak_flops_per_device


def set_compilation_cache(path: str) -> None:
    """Points XLA's persistent compilation cache at `path` (programs that took over a second to compile are kept)."""
    compilation_cache.set_cache_dir(str(path))
    compilation_cache.reset_cache()  # initialised on first use: a path set after that would be silently ignored
    logging.info("XLA compilation cache: %s", path)


def validation_metrics(s: Setup, params: Any) -> dict[str, float]:
    """The task's validation metrics (e.g. `eval_bleu`) with the oracle length and the run's sampler, or for AR
    runs the run's decoding (the diffusion stage only)."""
    if s.run.stage != "diffusion":
        return {}
    gen = Generator.with_vocab(s.model, params, s.vocab, s.spec.max_length, vocab_map=s.vocab_map, mesh=s.mesh,
                               decoding=s.run.decoding if s.run.objective == "ar" else None)
    evaluator = Evaluator(gen, s.vocab, s.run.sampler, s.spec)
    own = bool(s.run.data.eval_tasks)  # configured tasks: each task's own protocol
    request = EvalRequest(length="task" if own else "oracle", steps=None if own else s.run.sampler.steps,
                          rank_samples=0, seed=s.run.seed)
    out: dict[str, float] = {}
    for data in s.eval_data:
        prefix = f"eval/{data.task}/" if own else "eval_"
        out.update({prefix + k: v for k, v in evaluator.evaluate(data, request)["metrics"].items()})
    return out


def _hooks(s: Setup, rundir: RunDir, mngr: Any, start: int, preemption: hooks.Preemption
           ) -> tuple[hooks.MetricsLogger, list]:
    """The metrics logger (whose last metrics `run` returns) and every hook, in the order they run."""
    run = s.run
    log = hooks.MetricsLog(rundir.path, start)
    # Useful FLOPs of a logged step: the body on every row (coupled sampling trains two corruptions of each) and
    # the head at the positions actually masked (the step's `num_masked`), not at its padded capacity.
    rows = run.batch_size * (2 if run.stage == "diffusion" and run.objective == "rdm" and run.diffusion.coupled else 1)
    metrics = hooks.MetricsLogger(
        log, every=run.log_every_steps, total=run.num_train_steps, start=start,
        bucket_names=bucket_names(RDMConfig(mask_id=0, num_timesteps=run.diffusion.num_timesteps)),
        flops_of=hooks.step_flops(s.model.cfg, s.spec.max_length, rows), peak_flops=peak_flops_per_device(
            run.peak_tflops))
    out: list = [metrics, hooks.NonFiniteGuard(mngr, rundir, every=run.log_every_steps, total=run.num_train_steps,
                                                max_bad=run.max_bad_steps)]
    if s.eval_data and run.eval_every_steps:
        out.append(hooks.PeriodicEval(lambda p: validation_metrics(s, p), log, every=run.eval_every_steps,
                                      restart_window=metrics.restart_window))
    out.append(hooks.Checkpointer(mngr, every=run.checkpoint_every_steps, total=run.num_train_steps,
                                  batch_size=run.batch_size, preemption=preemption,
                                  position=s.train_data.position))
    return metrics, out


def run(run_config: RunConfig, workdir: str | Path) -> dict[str, float]:
    """Trains to `num_train_steps` (resuming from the workdir's latest checkpoint); returns the last metrics."""
    rundir = RunDir(workdir)
    if run_config.compilation_cache_dir:
        set_compilation_cache(run_config.compilation_cache_dir)
    rundir.check_resume(run_config)  # a resume that changes the computation is refused before anything is built
    s = setup(run_config)  # raises on what parsing cannot see (data, shapes x mesh) before the workdir is touched
    rundir.write_run(run_config, s.model.cfg, s.tokenizer, s.vocab_map)
    mngr = rundir.checkpoint_manager(max_to_keep=run_config.keep_checkpoints)
    state, start, data_state = s.state, 0, {}
    restored = RunDir.restore(mngr, abstract_like(s.state))
    if restored is not None:
        state, data_state, start = restored
        logging.info("resuming at step %d (data position %s)", start, data_state)
    preemption = hooks.Preemption()
    logger, step_hooks = _hooks(s, rundir, mngr, start, preemption)
    batches = s.train_data.iterate(start, data_state.get("position"))
    done = start
    try:
        with parallel.mesh_rules(s.mesh, run_config.mesh.rules):
            for step in range(start, run_config.num_train_steps):
                local = next(batches)
                state, metrics = s.step_fn(state, parallel.global_batch(local, s.mesh, run_config.mesh.rules),
                                           s.frozen)
                done = step + 1
                preemption.sync()  # before the hooks: the checkpointer saves at once when preempted
                for hook in step_hooks:
                    hook(done, state, metrics, local)
                if preemption.requested:
                    break
    finally:
        mngr.wait_until_finished()
        mngr.close()
        logger.close()
    if preemption.requested:
        logging.warning("preempted: checkpoint saved at step %d; rerun the same command to resume", done)
    return logger.last
