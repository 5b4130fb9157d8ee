"""Entry point: python -m dlm_jax.export --workdir DIR --out HF_DIR [--checkpoint STEP]

Writes a trained run as a HuggingFace masked-LM directory (`inference.export.export_run`, which scripts and tests
call in-process: importing this module defines its command-line flags).
"""
from __future__ import annotations

from pathlib import Path

from absl import flags

from dlm_jax import cli

flags.DEFINE_string("workdir", None, "The trained run's directory.")
flags.DEFINE_string("out", None, "The HuggingFace directory to write.")
flags.DEFINE_integer("checkpoint", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out folder, first removing the files an export "
                  "writes (config, safetensors shards and index, tokenizer files); other files are kept.")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    cli.quiet_logs()
    from dlm_jax.inference.export import check_out, export_run
    check_out(Path(FLAGS.out), FLAGS.overwrite)
    print(f"wrote {export_run(FLAGS.workdir, FLAGS.out, step=FLAGS.checkpoint)}")
    return 0


if __name__ == "__main__":
    cli.run(main)
