"""Entry point: python -m dlm_jax.generate --workdir DIR (--prompt TEXT | --input FILE.jsonl | --input_task TASK)
   [--length N | --length_beam B --length_workdir DIR2] [--config.sampler.steps=S ...] [--show_steps]
   [--trajectory OUT.html | OUT.svg] [--strategies ar,reparam-uncond-deterministic-cosine]
             python -m dlm_jax.generate --pretrained (DIR | FILE.gguf | smollm2-135m-instruct)
   (--prompt TEXT | --input FILE.jsonl) [--nochat] [--config.decoding.max_len_b=N]

restore (params only) -> tokenize prompts -> sampler -> print text; optionally animate the denoising in the
terminal or write an HTML page of it. The sampler is the run's (`config.json`) with `--config.sampler.*` applied;
`--strategies a,b,...` decodes the same prompts with each strategy (same steps, lengths and seed) and shows their
unmasking orders side by side (`--show_steps` columns, `--trajectory` grids): the paper's Fig. 7(d).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
from absl import flags

from dlm_jax import cli, visualize
from dlm_jax.errors import ConfigError, InputError
from dlm_jax.rundir import RunDir

if TYPE_CHECKING:  # the heavy modules are imported where used: --helpshort and flag errors need none of them
    from dlm_jax.inference import RestoredRun

cli.define_inference_flags(pretrained=True)
flags.adopt_module_key_flags(cli)  # --helpshort lists --config and --workdir, defined in cli
flags.DEFINE_string("prompt", None, "One prompt.")
flags.DEFINE_string("input", None, "JSONL file with a 'prompt' (or 'inputs') field per line.")
flags.DEFINE_string("input_task", None, "Take prompts (and oracle lengths) from a task's split.")
flags.DEFINE_string("split", "test", "With --input_task: the split.")
flags.DEFINE_integer("index", 0, "With --input_task: the first example.")
flags.DEFINE_integer("num_examples", 1, "With --input_task: how many examples.")
flags.DEFINE_integer("length", None, "Response length in tokens, incl. </s>.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_bool("show_steps", False, "Print the sequence after every step.")
flags.DEFINE_string("trajectory", None, "Write the denoising of every example as a grid: an HTML page (.html) or "
                    "a vector figure (.svg).")
flags.DEFINE_list("strategies", None, "Decode with each of these sampler strategies (comma-separated, e.g. "
                  "ar,reparam-uncond-deterministic-cosine) and show their unmasking orders side by side; 'adaptive' takes "
                  "the run's threshold, or 0.9.")
flags.DEFINE_bool("chat", True, "With --pretrained: each prompt is a user turn in the model's chat template "
                  "(--nochat: the text as it is).")
FLAGS = flags.FLAGS


@dataclasses.dataclass
class Item:
    text: str
    ids: list[int]
    oracle_length: int | None = None
    reference: str | None = None


def task_items(restored: RestoredRun) -> list[Item]:
    spec = restored.feature_spec()
    from dlm_jax.data import pipeline
    from dlm_jax.inference import prompts_of
    ex = pipeline.load_examples(FLAGS.input_task, FLAGS.split, spec, restored.vocab,
                                limit=FLAGS.index + FLAGS.num_examples)
    prompts = prompts_of(ex.rows)
    if FLAGS.index >= len(ex.inputs):
        raise InputError(f"--index {FLAGS.index} is past the end: {FLAGS.input_task}/{FLAGS.split} has "
                         f"{len(ex.inputs)} examples that fit (indices 0..{len(ex.inputs) - 1})")
    rows = range(FLAGS.index, min(FLAGS.index + FLAGS.num_examples, len(ex.inputs)))
    return [Item(ex.inputs[i], prompts[i], int(ex.rows["response_length"][i]), ex.targets[i]) for i in rows]


def check_text(t: str) -> None:
    """A prompt must be non-empty UTF-8 text."""
    try:
        t.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the prompt is not valid UTF-8 text (byte {e.start}); pass UTF-8 text")
    if not t or not t.strip():
        raise InputError("empty prompt: give some text to condition on")


def read_input(path: Path) -> list[str]:
    """The prompts of a JSONL file (a "prompt" or "inputs" string per line); every problem is one `InputError`
    naming the file and line."""
    if not path.is_file():
        raise InputError(f"--input {path} does not exist or is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"--input {path} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8")
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"--input {path} line {n} is not JSON ({e.msg}); write one JSON object per line, e.g. "
                             '{"prompt": "Wie spät ist es?"}')
        text = row.get("prompt", row.get("inputs")) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise InputError(f'--input {path} line {n} has no "prompt" (or "inputs") string')
        check_text(text)  # JSON can hold a lone surrogate or an empty string
        texts.append(text)
    if not texts:
        raise InputError(f"--input {path} holds no prompts")
    return texts


def text_items(restored: RestoredRun) -> list[Item]:
    if FLAGS.prompt is not None:
        texts = [FLAGS.prompt]
    else:
        texts = read_input(Path(FLAGS.input))
    items = []
    for t in texts:  # each checked already: --prompt in main, --input's lines in read_input
        ids = list(restored.vocab.encode(t))
        if len(ids) + 3 > restored.max_length:
            raise InputError(f"prompt has {len(ids)} tokens; with <s>, </s> and a response it must fit in "
                             f"{restored.max_length} positions. Shorten it.")
        items.append(Item(t, ids))
    return items


def samplers(restored: RestoredRun) -> list[Any]:
    """The run's sampler, or one per `--strategies` entry (the run's steps; threshold only for `adaptive`)."""
    base = dataclasses.replace(restored.run.sampler, record_trajectory=bool(FLAGS.show_steps or FLAGS.trajectory))
    if not FLAGS.strategies:
        return [base]
    if len(set(FLAGS.strategies)) != len(FLAGS.strategies):
        raise ConfigError(f"--strategies {','.join(FLAGS.strategies)} names a strategy twice; name each once")
    from dlm_jax.diffusion import SamplerConfig
    out = []
    for name in FLAGS.strategies:
        threshold = (base.threshold or 0.9) if name == "adaptive" else None
        out.append(SamplerConfig(**{**dataclasses.asdict(base), "strategy": name, "threshold": threshold}))
    return out


def decode(restored: RestoredRun, items: list[Item], sampler: Any) -> dict[str, Any]:
    gen, rng = restored.generator(), jax.random.key(FLAGS.seed)
    prompts = [it.ids for it in items]
    if gen.decoding is not None:  # an AR run (objective "ar"): KV-cache decoding sets its own lengths
        if FLAGS.length or FLAGS.length_beam or FLAGS.show_steps or FLAGS.trajectory or FLAGS.strategies:
            raise ConfigError("this run is autoregressive (objective 'ar'): it decodes left to right until </s> "
                              "(--config.decoding.beam_size / max_len_b); drop --length, --length_beam, "
                              "--show_steps, --trajectory and --strategies")
        return gen.generate(prompts, [0] * len(prompts), sampler, rng)
    if FLAGS.length_beam:
        return gen.generate_with_beam(prompts, FLAGS.length_beam, sampler, rng)
    lengths = [FLAGS.length or it.oracle_length for it in items]
    if any(n is None for n in lengths):
        raise ConfigError("give --length N (response tokens incl. </s>) or --length_beam B --length_workdir DIR")
    return gen.generate(prompts, lengths, sampler, rng)


def _examples(restored: RestoredRun, items: list[Item], texts: list[str], out: dict[str, Any],
              strategy: str | None) -> list[Any]:
    tokenizer = restored.vocab.tokenizer
    token_text = lambda i: tokenizer.convert_ids_to_tokens(int(i))  # noqa: E731
    scores = out.get("trajectory_scores")
    ran = out["num_evals"]  # the adaptive strategy stops early: its later frames only repeat the last
    return [visualize.Example(it.text, text, visualize.step_cells(
        out["trajectory"][:ran[i], i], out["response_mask"][i], restored.vocab.mask_id, token_text,
        None if scores is None else scores[:ran[i], i]), it.reference, strategy)
        for i, (it, text) in enumerate(zip(items, texts))]


def show_trajectory(restored: RestoredRun, items: list[Item], decoded: dict[str, tuple[list[str], dict[str, Any]]]
                    ) -> None:
    """`--show_steps` frames (first example; one column per strategy) and the `--trajectory` page or SVG figure
    (every example; one grid per strategy side by side). `decoded`: strategy -> (texts, generate output)."""
    compare = len(decoded) > 1
    per = {k: _examples(restored, items, texts, out, k if compare else None) for k, (texts, out) in decoded.items()}
    if FLAGS.show_steps:
        color = sys.stdout.isatty()
        lines = (visualize.side_by_side_frames({k: ex[0].steps for k, ex in per.items()}, color=color) if compare
                 else visualize.terminal_frames(next(iter(per.values()))[0].steps, color=color))
        for line in lines:
            print(line)
    if FLAGS.trajectory and jax.process_index() == 0:  # several processes: one writes the page
        sampler = restored.run.sampler
        first = next(iter(decoded.values()))[1]
        header = {"model": restored.run.model.name, "run": FLAGS.workdir, "checkpoint step": restored.step,
                  "strategy": ", ".join(decoded), "steps": sampler.steps, "seed": FLAGS.seed,
                  "response lengths": ", ".join(str(int(m.sum())) for m in first["response_mask"])}
        if sampler.threshold is not None or "adaptive" in decoded:
            header["threshold"] = sampler.threshold or 0.9
        svg = Path(FLAGS.trajectory).suffix.lower() == ".svg"
        if compare and not svg:
            page = visualize.comparison_html([list(g) for g in zip(*per.values())], header)
        else:  # an SVG figure stacks the strategies' grids of each example
            examples = [ex for g in zip(*per.values()) for ex in g]
            page = (visualize.trajectory_svg if svg else visualize.trajectory_html)(examples, header)
        Path(FLAGS.trajectory).write_text(page, encoding="utf-8")
        print(f"wrote {FLAGS.trajectory}")


def main(argv: list[str]) -> int:
    del argv
    cli.quiet_logs()
    if sum(x is not None for x in (FLAGS.prompt, FLAGS.input, FLAGS.input_task)) != 1:
        raise ConfigError("give exactly one of --prompt, --input, --input_task")
    if FLAGS.num_examples < 1 or FLAGS.index < 0:
        raise ConfigError(f"--num_examples {FLAGS.num_examples} must be >= 1 and --index {FLAGS.index} >= 0")
    if FLAGS.length is not None and FLAGS.length < 2:
        raise ConfigError(f"--length {FLAGS.length}: the response length counts its </s>, so it must be >= 2 "
                          "(e.g. --length 8)")
    if FLAGS.prompt is not None:
        check_text(FLAGS.prompt)
    if FLAGS.pretrained is not None:
        return pretrained_main()
    RunDir(FLAGS.workdir).require()  # a missing run and bad flags are reported before the heavy imports
    if FLAGS.trajectory:
        cli.check_output_file(FLAGS.trajectory, "--trajectory", (".html", ".svg"))  # before the generation
    restored = cli.restore_from_flags()
    items = task_items(restored) if FLAGS.input_task else text_items(restored)
    from dlm_jax.inference import decode_responses
    decoded: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for sampler in samplers(restored):
        t0 = time.perf_counter()
        out = decode(restored, items, sampler)
        wall = time.perf_counter() - t0
        texts = decode_responses(restored.vocab.tokenizer, out, restored.vocab.eos_id)
        label = f" [{sampler.strategy}]" if FLAGS.strategies else ""
        for item, text, evals in zip(items, texts, out["num_evals"]):
            print(f"prompt:    {item.text}")
            if item.reference is not None:
                print(f"reference: {item.reference}")
            print(f"output{label}:    {text}   ({int(evals)} model evaluations)")
        print(f"({len(items)} example(s) in {wall:.2f}s{label})")
        decoded[sampler.strategy] = (texts, out)
    if next(iter(decoded.values()))[1].get("trajectory") is not None:
        show_trajectory(restored, items, decoded)
    return 0


def pretrained_main() -> int:
    """--pretrained: each prompt (a user turn of the chat template unless --nochat) continued left to right."""
    restored = cli.restore_pretrained_from_flags(("input_task", "trajectory", "strategies", "show_steps",
                                                  "length_beam"))
    from dlm_jax.inference.chat import chat_ids, complete, prompt_ids
    tok = restored.vocab.tokenizer
    texts = [FLAGS.prompt] if FLAGS.prompt is not None else read_input(Path(FLAGS.input))
    rows = [chat_ids(tok, [{"role": "user", "content": t}]) if FLAGS.chat else prompt_ids(tok, t) for t in texts]
    t0 = time.perf_counter()
    responses = complete(restored, rows)
    wall = time.perf_counter() - t0
    for text, ids in zip(texts, responses):
        print(f"prompt:    {text}")
        print(f"output:    {tok.decode(ids, skip_special_tokens=True).strip()}   ({len(ids)} tokens)")
    print(f"({len(texts)} prompt(s), {sum(map(len, responses))} tokens in {wall:.2f}s, compilation included)")
    return 0


if __name__ == "__main__":
    cli.run(main)
