"""Entry point: python -m dlm_jax.generate --workdir DIR (--prompt TEXT | --input FILE.jsonl | --input-task TASK)
   [--length N | --length-beam B --length-workdir DIR2] [--steps S] [--strategy NAME] [--show-steps]
   [--trajectory OUT.html]

restore -> tokenize prompts -> sampler -> print text; optionally animate the denoising or write an HTML page.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m dlm_jax.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--input", help="JSONL file with a 'prompt' (or 'inputs') field per line")
    src.add_argument("--input-task", help="take prompts (and oracle lengths) from a task's split")
    ap.add_argument("--split", default="test")
    ap.add_argument("--index", type=int, default=0, help="with --input-task: first example")
    ap.add_argument("-n", type=int, default=1, help="with --input-task: number of examples")
    ap.add_argument("--length", type=int, default=None, help="response length in tokens, incl. </s>")
    ap.add_argument("--length-beam", type=int, default=None)
    ap.add_argument("--length-workdir", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--strategy", default=None)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-steps", action="store_true", help="print the sequence after every step")
    ap.add_argument("--trajectory", default=None, help="write an HTML page of the denoising (first example)")
    return ap.parse_args(argv)


def _prompts(args, loaded, voc, max_length):
    """[(prompt text, prompt ids, oracle length or None)]"""
    if args.input_task:
        from dlm_jax.data import features as F, pipeline
        from dlm_jax.generation import prompts_of
        spec = F.FeatureSpec(max_length=max_length, bos_id=voc.bos_id, eos_id=voc.eos_id, pad_id=voc.pad_id)
        ex = pipeline.load_examples(args.input_task, args.split, spec, limit=args.index + args.n)
        prompts = prompts_of(ex.rows)
        rows = range(args.index, min(args.index + args.n, len(ex.inputs)))
        return [(ex.inputs[i], prompts[i], int(ex.rows["response_length"][i]), ex.targets[i]) for i in rows]
    if args.prompt is not None:
        texts = [args.prompt]
    else:
        p = Path(args.input)
        if not p.exists():
            raise FileNotFoundError(f"--input {p} does not exist")
        texts = [(lambda d: d.get("prompt", d.get("inputs")))(json.loads(line)) for line in p.read_text().splitlines()
                 if line.strip()]
    out = []
    for t in texts:
        if not t or not t.strip():
            raise ValueError("empty prompt: give some text to condition on")
        ids = voc.encode(t)
        if len(ids) + 3 > max_length:
            raise ValueError(f"prompt has {len(ids)} tokens; with <s>, </s> and a response it must fit in "
                             f"{max_length} positions. Shorten it.")
        out.append((t, list(ids), None, None))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from dlm_jax.data.tasks import MissingDataError
    from dlm_jax.restore import NoCheckpointError, load_length_head, load_workdir
    try:
        if not Path(args.workdir).exists():
            raise NoCheckpointError(f"workdir {args.workdir} does not exist; train first")
        return _run(args, load_workdir, load_length_head)
    except (NoCheckpointError, MissingDataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args, load_workdir, load_length_head) -> int:
    import jax
    from dlm_jax import visualize
    from dlm_jax.data import vocab as V
    from dlm_jax.diffusion import SamplerConfig
    from dlm_jax.generation import Generator, decode_responses

    loaded = load_workdir(args.workdir)
    if args.length_beam:
        if not args.length_workdir:
            raise ValueError("--length-beam needs --length-workdir (a run of configs/length_predictor.py)")
        loaded = load_length_head(args.length_workdir, loaded)
    voc = V.set_active_tokenizer(loaded.tokenizer)
    max_length = min(loaded.config.data.max_length, loaded.model_config.max_length)
    items = _prompts(args, loaded, voc, max_length)
    sc = loaded.config.sampler
    strategy = args.strategy or sc.strategy
    sampler = SamplerConfig(steps=args.steps or sc.steps, strategy=strategy, argmax=sc.argmax,
                            temperature=sc.temperature,
                            threshold=args.threshold if strategy == "adaptive" else None,
                            record_trajectory=bool(args.show_steps or args.trajectory))
    gen = Generator(loaded.model, loaded.params, voc.bos_id, voc.eos_id, voc.pad_id, voc.mask_id, max_length,
                    loaded.vocab_map, loaded.length_model, loaded.length_params)
    prompts = [p for _, p, _, _ in items]
    rng = jax.random.key(args.seed)
    t0 = time.perf_counter()
    if args.length_beam:
        out = gen.generate_with_beam(prompts, args.length_beam, sampler, rng)
    else:
        lengths = [args.length or oracle for _, _, oracle, _ in items]
        if any(n is None for n in lengths):
            raise ValueError("give --length N (response tokens incl. </s>) or --length-beam B --length-workdir DIR")
        out = gen.generate(prompts, lengths, sampler, rng)
    wall = time.perf_counter() - t0
    texts = decode_responses(voc.tokenizer, out, voc.eos_id)
    for (prompt, _, _, ref), text, evals in zip(items, texts, out["num_evals"]):
        print(f"prompt:    {prompt}")
        if ref is not None:
            print(f"reference: {ref}")
        print(f"output:    {text}   ({int(evals)} model evaluations)")
    print(f"({len(items)} example(s) in {wall:.2f}s)")
    if out.get("trajectory") is not None:
        token_text = lambda i: voc.tokenizer.convert_ids_to_tokens(int(i))  # noqa: E731
        steps = visualize.step_cells(out["trajectory"][:, 0], out["response_mask"][0], voc.mask_id, token_text)
        if args.show_steps:
            for line in visualize.terminal_frames(steps, color=sys.stdout.isatty()):
                print(line)
        if args.trajectory:
            Path(args.trajectory).parent.mkdir(parents=True, exist_ok=True)
            Path(args.trajectory).write_text(visualize.trajectory_html(items[0][0], steps), encoding="utf-8")
            print(f"wrote {args.trajectory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
