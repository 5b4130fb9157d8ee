"""Entry point: python -m dlm_jax.evaluate --workdir DIR [--tasks a,b] [--oracle_length | --length_beam B
   --length_workdir DIR2] [--limit N] [--config.sampler.steps=S --config.sampler.strategy=NAME ...]

restore (params only) -> for each task: examples -> sampler -> metrics -> DIR/eval/TASK.json, and a markdown
table with the paper's numbers beside ours where the setting matches. Each task runs with its own steps and
length rule unless `--config.sampler.steps` (or `--oracle_length` / `--length_beam`) overrides them.
"""
from __future__ import annotations

import json

from absl import flags

from dlm_jax import cli
from dlm_jax.data.registry import get_task_or_mixture
from dlm_jax.errors import ConfigError
from dlm_jax.inference import EvalRequest, Evaluator
from dlm_jax.inference.evaluator import TABLE_HEADER, table_rows
from dlm_jax.rundir import EVAL_DIR, RunDir

cli.define_inference_flags()
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


def request_from_flags() -> EvalRequest:
    overrides = cli.config_overrides()
    if FLAGS.length_beam and FLAGS.oracle_length:
        raise ConfigError("--oracle_length and --length_beam exclude each other; choose one")
    length = "beam" if FLAGS.length_beam else "oracle" if FLAGS.oracle_length else "task"
    return EvalRequest(length=length, beam=FLAGS.length_beam or 0, steps=overrides.get("sampler.steps"),
                       split=FLAGS.split, limit=FLAGS.limit, batch_size=FLAGS.batch_size,
                       rank_samples=FLAGS.rank_samples, seed=FLAGS.seed)


def main(argv: list[str]) -> int:
    del argv
    cli.quiet_logs()
    request = request_from_flags()
    restored = cli.restore_from_flags(step=FLAGS.checkpoint)
    rundir = RunDir(FLAGS.workdir)
    tasks = FLAGS.tasks or [restored.run.data.task]
    for t in tasks:
        get_task_or_mixture(t, restored.vocab)  # unknown names fail here, before any decoding
    evaluator = Evaluator(restored.generator(), restored.vocab, restored.run.sampler, restored.feature_spec(),
                          checkpoint_step=restored.step)
    rows = []
    for t in tasks:
        result = evaluator.run_task(t, request)
        (rundir.path / EVAL_DIR).mkdir(exist_ok=True)
        (rundir.path / EVAL_DIR / f"{t}.json").write_text(json.dumps(result, indent=2, default=str))
        rows += table_rows(t, restored.run.model.name, result)
    print(TABLE_HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    cli.run(main)
