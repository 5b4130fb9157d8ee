"""python -m dlm_jax.plot RUN [RUN ...] --metric eval_bleu [--x step|wall] [--labels a,b] --out curves.png

Learning curves from runs' metrics.jsonl: one labelled line per run, x in steps or in training wall-clock seconds
(`--x wall`: the first step's compilation plus every logged window's step time; evaluation time excluded, so runs
compare at equal training time). `.png`, `.svg` or `.pdf` by the extension of --out. Needs matplotlib
(`pip install -e ".[plot]"`). Every bad input (a run without metrics.jsonl, a metric no row of a run has, an
unknown extension) is one `error:` line, exit 2, and nothing is written.
"""
from __future__ import annotations

from pathlib import Path

from absl import flags

from dlm_jax import cli, visualize
from dlm_jax.errors import InputError
from dlm_jax.rundir import metric_series

flags.DEFINE_string("metric", None, "The metrics.jsonl key to plot (e.g. loss, eval_bleu, eval/TASK/bleu).")
flags.DEFINE_enum("x", "step", ["step", "wall"], "x axis: training steps, or training wall-clock seconds.")
flags.DEFINE_list("labels", None, "One label per run (default: each run folder's name).")
flags.DEFINE_string("out", None, "The figure: FILE.png, FILE.svg or FILE.pdf.")
flags.DEFINE_string("title", "", "A title over the figure.")
flags.mark_flags_as_required(["metric", "out"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    cli.quiet_logs()
    out = Path(FLAGS.out)
    cli.check_output_file(out, "--out", visualize.FIGURE_FORMATS)
    series = metric_series(argv[1:], FLAGS.metric, FLAGS.x, FLAGS.labels)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError('plotting needs matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from None
    xlabel = "training step" if FLAGS.x == "step" else "training wall-clock seconds (compilation + steps)"
    visualize.curves_figure(series, str(out), xlabel=xlabel, ylabel=FLAGS.metric, title=FLAGS.title)
    print(f"wrote {out} ({len(series)} run(s), {sum(len(ys) for _, ys in series.values())} points)")
    return 0


if __name__ == "__main__":
    cli.run(main)
