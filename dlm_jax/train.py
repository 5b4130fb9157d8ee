"""Entry point: python -m dlm_jax.train --config configs/FILE.py[:VARIANT] --workdir DIR [--config.key=value ...]

flags -> distributed init -> config checks -> trainer.run. Rerunning the same command resumes from the latest
complete checkpoint in DIR; SIGTERM saves and exits 0.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and the config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax
    from dlm_jax import parallel, trainer
    from dlm_jax.data.tasks import MissingDataError

    parallel.initialize_distributed()
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:  # orbax logs every save step at INFO: keep its warnings only
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or "orbax" not in r.pathname)
    config, workdir = FLAGS.config, Path(FLAGS.workdir)  # trainer.run validates, then makes the workdir
    if jax.process_index() == 0:
        print(config)
    try:
        last = trainer.run(config, workdir)
    except (ValueError, FileNotFoundError, MissingDataError, trainer.TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        print(json.dumps({"final": last}))


if __name__ == "__main__":
    app.run(main)
