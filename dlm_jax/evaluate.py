"""Entry point: python -m dlm_jax.evaluate --workdir DIR [--tasks a,b] [--oracle_length | --length_beam B
   --length_workdir DIR2] [--limit N] [--config.sampler.steps=S --config.sampler.strategy=NAME ...]

restore (params only) -> for each task (a mixture: each of its tasks) seqio.Evaluator with the sampler as its
predict_fn -> DIR/eval/TASK.json, DIR/eval/MIXTURE.json for a mixture, and a markdown table with the paper's numbers
beside ours where the setting matches. Each task runs with its own steps, length rule, canvas and metric unless
`--config.sampler.steps` (or `--oracle_length` / `--length_beam`) overrides them. The paper's own eval sets:
`--tasks paper_zero_shot` / `--tasks paper_few_shot` (after `python -m dlm_jax.data.prepare diffusionllm_instruct`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import jax
from absl import flags

from dlm_jax import cli
from dlm_jax.errors import ConfigError
from dlm_jax.rundir import EVAL_DIR, RunDir

if TYPE_CHECKING:
    from dlm_jax.inference import EvalRequest

cli.define_inference_flags()
flags.adopt_module_key_flags(cli)  # --helpshort lists --config and --workdir, defined in cli
flags.DEFINE_integer("checkpoint", None, "Checkpoint step (default: the latest).")
flags.DEFINE_list("tasks", None, "Tasks to evaluate (default: the training task).")
flags.DEFINE_string("split", None, "Split (default: each task's evaluation split).")
flags.DEFINE_bool("oracle_length", False, "Decode with the reference response length.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N examples.")
flags.DEFINE_integer("batch_size", 64, "Sequences per sampler call.")
flags.DEFINE_integer("rank_samples", 8, "Monte Carlo ELBO samples per option for rank classification of "
                     "multiple-choice tasks (0: generative scoring only).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
FLAGS = flags.FLAGS


def request_from_flags() -> "EvalRequest":
    overrides = cli.config_overrides()
    if FLAGS.limit is not None and FLAGS.limit <= 0:
        raise ConfigError(f"--limit {FLAGS.limit} would evaluate nothing; give a positive number of examples or "
                          "leave --limit out to evaluate the whole split")
    if FLAGS.length_beam and FLAGS.oracle_length:
        raise ConfigError("--oracle_length and --length_beam exclude each other; choose one")
    if FLAGS.batch_size < 1:
        raise ConfigError(f"--batch_size {FLAGS.batch_size} must be at least 1 (sequences per sampler call)")
    if FLAGS.rank_samples < 0:
        raise ConfigError(f"--rank_samples {FLAGS.rank_samples} must be >= 0 (0 turns rank classification off)")
    from dlm_jax.inference import EvalRequest  # deferred, as every heavy import: a bad flag is reported first
    length = "beam" if FLAGS.length_beam else "oracle" if FLAGS.oracle_length else "task"
    return EvalRequest(length=length, beam=FLAGS.length_beam or 0, steps=overrides.get("sampler.steps"),
                       split=FLAGS.split, limit=FLAGS.limit, batch_size=FLAGS.batch_size,
                       rank_samples=FLAGS.rank_samples, seed=FLAGS.seed)


def result_file(rundir: RunDir, name: str) -> Path:
    """eval/NAME.json (":" of task names such as "paper:mmlu:0shot" becomes ".")."""
    return rundir.path / EVAL_DIR / f"{name.replace(':', '.')}.json"


def main(argv: list[str]) -> int:
    del argv
    RunDir(FLAGS.workdir).require()  # a missing run and bad flags are reported before the heavy imports
    request = request_from_flags()
    from dlm_jax.inference import Evaluator
    from dlm_jax.inference.evaluator import (TABLE_HEADER, check_available, mixture_summary, paper_model,
                                            table_rows, task_names)
    cli.quiet_logs()
    restored = cli.restore_from_flags(step=FLAGS.checkpoint)
    rundir = RunDir(FLAGS.workdir)
    requested = FLAGS.tasks or [restored.run.data.task]
    expanded = {name: task_names(name, restored.vocab) for name in requested}  # unknown names fail here
    tasks = list(dict.fromkeys(t for ts in expanded.values() for t in ts))
    check_available(tasks, restored.vocab, FLAGS.split)  # every missing file of every task, before decoding
    evaluator = Evaluator(restored.generator(), restored.vocab, restored.run.sampler, restored.feature_spec(),
                          checkpoint_step=restored.step)
    writer = jax.process_index() == 0  # several processes compute the same results; one writes them
    (rundir.path / EVAL_DIR).mkdir(exist_ok=True)
    results, rows = {}, []
    for t in tasks:
        results[t] = evaluator.run_task(t, request)
        if writer:
            result_file(rundir, t).write_text(json.dumps(results[t], indent=2, default=str))
        rows += table_rows(t, paper_model(restored.run), results[t])
    print(TABLE_HEADER)
    print("\n".join(rows))
    for name, ts in expanded.items():
        if ts != [name]:  # a mixture: the per-task summary and its mean
            summary = mixture_summary(name, {t: results[t] for t in ts})
            if writer:
                result_file(rundir, name).write_text(json.dumps(summary, indent=2))
            print(f"{name}: macro average {summary['macro_average']:.2f} over {len(ts)} tasks "
                  f"({result_file(rundir, name)})")
    return 0


if __name__ == "__main__":
    cli.run(main)
