"""Speed beside quality: AR decoding with a KV cache (greedy, beam 5) vs the diffusion sampler (S = 10, 50,
adaptive; with and without the sampler's prefix cache) at the same model size and batch, through the one inference
path (`Generator.generate`). The prefix cache is exact on a `prompt_prefix` run and an approximation on a
bidirectional one (inference/prefix_cache.py).

    python bench/ar_vs_diffusion.py --ar_workdir runs/table1/ar-seed0 --rdm_workdir runs/table1/pretrained-seed0
    python bench/ar_vs_diffusion.py --random bert-tiny      # untrained weights of a named shape, no runs needed

With trained runs (`bash bench/table1_laptop.sh`: the decoder-only AR and the RDM rows are both bert-tiny-shaped)
the prompts are the first `--examples` of ding_de_en's test split; RDM rows decode at the oracle length, AR rows
until `</s>`. With `--random`, both models are randomly initialised of the same shape (the AR one causal) and
every row generates `--length` tokens (an untrained AR model almost never ends early; its `max_len_b` is set to the
length). Prints, per setting: response tokens/s (generated tokens, `</s>` included, over the wall time of the
second call: the first compiles), model calls per row, and for trained runs the BLEU of what was decoded
(sacreBLEU 13a, lower-cased: the bundled BERT's tokenizer is uncased).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dlm_jax.diffusion import DecodeConfig, SamplerConfig  # noqa: E402

SETTINGS = (("AR greedy (KV cache)", "ar", 1), ("AR beam 5 (KV cache)", "ar", 5),
            ("RDM S=10", "rdm", SamplerConfig(steps=10)), ("RDM S=50", "rdm", SamplerConfig(steps=50)),
            ("RDM adaptive 0.9", "rdm", SamplerConfig(steps=64, strategy="adaptive", threshold=0.9)),
            ("RDM S=10, prefix cache", "rdm", SamplerConfig(steps=10, cache="prefix")),
            ("RDM adaptive 0.9, prefix cache", "rdm",
             SamplerConfig(steps=64, strategy="adaptive", threshold=0.9, cache="prefix")))


def _timed(gen, prompts, lengths, sampler, batch):
    gen.generate(prompts, lengths, sampler, jax.random.key(0), batch_size=batch)  # compile
    t0 = time.perf_counter()
    out = gen.generate(prompts, lengths, sampler, jax.random.key(0), batch_size=batch)
    return out, time.perf_counter() - t0


def trained(args) -> tuple[dict, dict, list, list, list]:
    from dlm_jax.inference import restore_run
    from dlm_jax.inference.evaluator import EvalRequest, load_task_data, task_names
    ar, rdm = restore_run(args.ar_workdir), restore_run(args.rdm_workdir)
    task = task_names("ding_de_en", rdm.vocab)[0]
    data = load_task_data(task, rdm.vocab, rdm.feature_spec(), EvalRequest(split="test", limit=args.examples))
    exs = list(data.seqio_evaluator.cached_task_datasets[task].as_numpy_iterator())
    prompts = [list(ex["inputs"]) for ex in exs]
    lengths = [len(ex["targets"]) + 1 for ex in exs]
    refs = [ex["targets_pretokenized"].decode("utf-8") for ex in exs]
    return {"ar": ar.generator(), "rdm": rdm.generator()}, {"ar": ar, "rdm": rdm}, prompts, lengths, refs


def random_models(args) -> tuple[dict, dict, list, list, list]:
    import jax.numpy as jnp
    from dlm_jax.inference import Generator
    from dlm_jax.model import get_config, model_for
    gens = {}
    for kind in ("ar", "rdm"):
        cfg = get_config(args.random, causal=kind == "ar", hidden_dropout=0.0, attention_dropout=0.0)
        model = model_for(cfg)
        params = jax.jit(lambda k: model.init(k, jnp.ones((1, 8), jnp.int32))["params"])(jax.random.key(0))
        gens[kind] = Generator(model, params, bos_id=2, eos_id=3, pad_id=cfg.pad_token_id, mask_id=4,
                               max_length=args.prompt + args.length + 1,
                               decoding=DecodeConfig(max_len_b=args.length) if kind == "ar" else None)
    rng = np.random.default_rng(0)
    vocab = gens["ar"].model.cfg.vocab_size
    prompts = [rng.integers(5, vocab, args.prompt).tolist() for _ in range(args.examples)]
    return gens, {}, prompts, [args.length] * args.examples, []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ar_workdir", default="runs/table1/ar-seed0")
    p.add_argument("--rdm_workdir", default="runs/table1/pretrained-seed0")
    p.add_argument("--random", default="", help="a named model shape: random weights instead of runs")
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt", type=int, default=16, help="--random: prompt tokens")
    p.add_argument("--length", type=int, default=24, help="--random: response tokens incl. </s>")
    args = p.parse_args()
    gens, runs, prompts, lengths, refs = random_models(args) if args.random else trained(args)
    print(f"device: {jax.devices()[0].device_kind}; {len(prompts)} prompts, batch {args.batch}")
    print("| setting | response tokens/s | model calls / row | tokens / row | BLEU |\n|---|---|---|---|---|")
    for name, kind, setting in SETTINGS:
        gen = gens[kind]
        if kind == "ar":
            gen.decoding = dataclasses.replace(gen.decoding, beam_size=setting)
            sampler = SamplerConfig()
        else:
            sampler = setting
        out, wall = _timed(gen, prompts, lengths, sampler, args.batch)
        n = int(out["response_mask"].sum())
        bleu = "-"
        if refs:
            from dlm_jax.data.metrics import bleu as bleu_fn
            from dlm_jax.inference import decode_responses
            run = runs[kind]
            hyps = decode_responses(run.vocab.tokenizer, out, run.vocab.eos_id)
            bleu = f"{bleu_fn(refs, hyps, lowercase=True)['bleu']:.2f}"  # the uncased tokenizer
        print(f"| {name} | {n / wall:,.0f} | {float(np.mean(out['num_evals'])):.1f} | {n / len(prompts):.1f} | "
              f"{bleu} |")


if __name__ == "__main__":
    main()
