"""The sampler's cache modes at a long prompt (issue 39 item 5): response tokens/s of `cache` none / prefix / dual
and of `block_length`, through `Generator.generate`, with the prompt `--ratio` times the response.

    python bench/prefix_cache.py --random xlmr-base --batch 2 --length 16     # an xlmr-base-shaped model
    python bench/prefix_cache.py --random bert-tiny --batch 16 --length 16    # the demo model's shape
    python bench/prefix_cache.py --workdir runs/demo_prompt_prefix             # a trained run: also its BLEU
    python bench/prefix_cache.py --workdir runs/demo_prompt_prefix --task ding_de_en_4shot --max_length 256

With `--random`, a randomly initialised model of the named shape and random prompt ids (the speed does not depend
on the weights; the layout is `prompt_prefix`, under which `prefix` is exact). With `--workdir`, the run's own
model on `--task`'s test split (`--examples` of it, oracle lengths; sacreBLEU 13a lower-cased), prompts as they
are (the ratio is then the data's). Every setting runs S = `--steps` steps per block; the time
is the second call's (the first compiles). Prints one markdown row per setting: tokens/s, the speed-up over
`none`, and whether the tokens equal `none`'s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dlm_jax.diffusion import SamplerConfig  # noqa: E402

MODES = (("none", {}), ("prefix", dict(cache="prefix")), ("dual", dict(cache="dual")),
         ("block8", dict(block_length=8)), ("prefix+block8", dict(cache="prefix", block_length=8)),
         ("dual+block8", dict(cache="dual", block_length=8)))


def random_model(args) -> tuple:
    """A Generator over random weights of `args.random`'s shape (prompt_prefix layout) and random prompts."""
    import jax.numpy as jnp
    from dlm_jax.inference import Generator
    from dlm_jax.model import get_config, model_for
    cfg = get_config(args.random, hidden_dropout=0.0, attention_dropout=0.0, attention_layout="prompt_prefix")
    model = model_for(cfg)
    params = jax.jit(lambda k: model.init(k, jnp.ones((1, 8), jnp.int32))["params"])(jax.random.key(0))
    prompt = args.ratio * args.length
    gen = Generator(model, params, bos_id=2, eos_id=3, pad_id=cfg.pad_token_id, mask_id=4,
                    max_length=prompt + args.length + 1)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, cfg.vocab_size, prompt).tolist() for _ in range(args.examples)]
    return gen, None, prompts, [args.length] * args.examples, []


def trained(args) -> tuple:
    """The run's Generator and ding_de_en test prompts, oracle lengths and references."""
    from dlm_jax.inference import restore_run
    from dlm_jax.inference.evaluator import EvalRequest, load_task_data, task_names
    from dlm_jax.rundir import RunDir
    config = RunDir(args.workdir).read_config()
    if args.max_length:  # rows longer than the run trained on (k-shot prompts), up to the model's positions
        config.data.max_length = args.max_length
    run = restore_run(args.workdir, config=config)
    task = task_names(args.task, run.vocab)[0]
    data = load_task_data(task, run.vocab, run.feature_spec(), EvalRequest(split="test", limit=args.examples))
    exs = list(data.seqio_evaluator.cached_task_datasets[task].as_numpy_iterator())
    refs = [ex["targets_pretokenized"].decode("utf-8") for ex in exs]
    return run.generator(), run, [list(ex["inputs"]) for ex in exs], [len(ex["targets"]) + 1 for ex in exs], refs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--random", default="", help="a named model shape: random weights")
    p.add_argument("--workdir", default="", help="a trained run (ding_de_en test prompts, BLEU)")
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--task", default="ding_de_en", help="--workdir: the task (e.g. ding_de_en_4shot: long prompts)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=16, help="--random: response tokens incl. </s>")
    p.add_argument("--ratio", type=int, default=16, help="--random: prompt tokens per response token")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--max_length", type=int, default=0, help="--workdir: row length instead of the run's (k-shot)")
    p.add_argument("--modes", default="", help="comma-separated names of MODES to run (default: all)")
    args = p.parse_args()
    if bool(args.random) == bool(args.workdir):
        p.error("give one of --random SHAPE or --workdir RUN")
    gen, run, prompts, lengths, refs = random_model(args) if args.random else trained(args)
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()] or [m for m, _ in MODES]
    print(f"device: {jax.devices()[0].device_kind}; {len(prompts)} prompts of {np.mean([len(x) for x in prompts]):.0f}"
          f" tokens, responses {np.mean(lengths):.1f}, batch {args.batch}, S = {args.steps}, layout "
          f"{gen.model.cfg.attention_layout}")
    print("| mode | response tokens/s | speed-up | tokens equal none's | BLEU |\n|---|---|---|---|---|")
    base = None
    for name, kw in MODES:
        if name not in wanted:
            continue
        sampler = SamplerConfig(steps=args.steps, **kw)
        gen.generate(prompts, lengths, sampler, jax.random.key(0), batch_size=args.batch)  # compile
        t0 = time.perf_counter()
        out = gen.generate(prompts, lengths, sampler, jax.random.key(0), batch_size=args.batch)
        rate = int(out["response_mask"].sum()) / (time.perf_counter() - t0)
        base = (rate, out["tokens"]) if base is None else base
        same = "yes" if np.array_equal(out["tokens"], base[1]) else "no"
        print(f"| {name} | {rate:,.1f} | {rate / base[0]:.2f}x | {same} | {_bleu(run, out, refs)} |", flush=True)


def _bleu(run, out, refs) -> str:
    if not refs:
        return "-"
    from dlm_jax.data.metrics import bleu
    from dlm_jax.inference import decode_responses
    hyps = decode_responses(run.vocab.tokenizer, out, run.vocab.eos_id)
    return f"{bleu(refs, hyps, lowercase=True)['bleu']:.2f}"


if __name__ == "__main__":
    main()
