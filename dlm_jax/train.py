"""Entry point: python -m dlm_jax.train --config configs/FILE.py[:VARIANT] --workdir DIR [--config.key=value ...]

flags -> distributed init -> `config.parse` (every value checked once) -> `training.loop.run`. Rerunning the same
command resumes from the latest complete checkpoint in DIR; SIGTERM saves and exits 0. `--dump` prints the
config as the run would save it and exits.
"""
from __future__ import annotations

import json

import jax
from absl import flags

from dlm_jax import cli, parallel
from dlm_jax.config import parse
from dlm_jax.errors import ConfigError

cli.define_config_file_flag()
flags.adopt_module_key_flags(cli)  # --helpshort lists --config, defined in cli
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and the config.")
flags.DEFINE_bool("dump", False, "Print the resolved config (as config.json will hold it) and exit.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    cli.quiet_logs()
    if FLAGS.dump:
        print(FLAGS.config.to_json_best_effort(indent=2, sort_keys=True))
        return 0
    if not FLAGS.workdir:
        raise ConfigError("--workdir is required (where checkpoints, metrics and the config go)")
    cli.check_workdir(FLAGS.workdir)
    parallel.initialize_distributed()
    run_config = parse(FLAGS.config)  # before anything in the workdir is touched
    if jax.process_index() == 0:
        print(cli.config_line())
    from dlm_jax.training import loop  # deferred: --helpshort, --dump and flag errors need none of it
    last = loop.run(run_config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(json.dumps({"final": last}))
    return 0


if __name__ == "__main__":
    cli.run(main)
