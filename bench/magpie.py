"""Magpie (Xu et al. 2024) instruction data made offline from an instruct model itself: the model continues its own
chat template's pre-query part (everything before a user's words) with sampling, which writes a user turn; the
same model then answers each distinct turn greedily under its template. Seeded and reproducible: the same model
file, seed and settings give the same files, byte for byte.

    python bench/magpie.py --out data/magpie_smollm2 [--model smollm2-135m-instruct] [--pairs 3000] [--seed 0]

Writes OUT/{train,valid,test}.jsonl ({"inputs": user turn, "targets": answer}; a turn's split is fixed by a hash of
its normalised text: 5% test, 5% valid, held out from training) and OUT/manifest.json (model, its file's sha256,
settings, counts). Turns that run past --max_instruction tokens, have fewer than --min_words words, repeat an
earlier turn (case and spacing ignored) or whose answer runs past --max_response tokens are dropped and counted
(--keep_cut keeps the cut ones).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlm_jax.diffusion import DecodeConfig  # noqa: E402
from dlm_jax.inference import restore_pretrained  # noqa: E402
from dlm_jax.inference.chat import ChatModel, chat_ids  # noqa: E402

SENTINEL = "\u2063MAGPIE\u2063"  # a string no template contains: where the user's words would start


def pre_query_ids(tokenizer: Any) -> list[int]:
    """The chat template up to where a user's message starts (Magpie's pre-query template), as ids."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                         add_generation_prompt=False)
    return [int(i) for i in tokenizer(text[:text.index(SENTINEL)], add_special_tokens=False)["input_ids"]]


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def split_of(text: str) -> str:
    """test / valid / train by a stable hash of the normalised turn (5% / 5% / 90%)."""
    h = int.from_bytes(hashlib.sha256(normalise(text).encode()).digest()[:4], "big") % 20
    return "test" if h == 0 else "valid" if h == 1 else "train"


def draw_turns(chat: ChatModel, pre: list[int], a: argparse.Namespace, first_seed: int) -> list[tuple[str, bool]]:
    """`a.round` user turns sampled from the pre-query template with seeds first_seed.. (text, ended in time)."""
    dec = DecodeConfig(beam_size=1, temperature=a.temperature, max_len_b=a.max_instruction)
    ids = chat.complete([pre] * a.round, batch_size=a.batch, decoding=dec, rng=jax.random.key(a.seed),
                        seeds=range(first_seed, first_seed + a.round))
    tok = chat.restored.vocab.tokenizer
    return [(tok.decode(r, skip_special_tokens=True).strip(), len(r) < a.max_instruction - 1) for r in ids]


def answer(chat: ChatModel, turns: list[str], a: argparse.Namespace) -> list[tuple[str, bool]]:
    """Greedy answers under the chat template (text, ended in time)."""
    tok = chat.restored.vocab.tokenizer
    dec = DecodeConfig(beam_size=1, max_len_b=a.max_response)
    ids = chat.complete([chat_ids(tok, [{"role": "user", "content": t}]) for t in turns], batch_size=a.batch,
                        decoding=dec)
    return [(tok.decode(r, skip_special_tokens=True).strip(), len(r) < a.max_response - 1) for r in ids]


def collect(chat: ChatModel, a: argparse.Namespace) -> tuple[list[dict], dict[str, int]]:
    """Rounds of sampled turns until `a.pairs` distinct usable pairs (or `a.max_rounds` rounds)."""
    pre, seen, pairs = pre_query_ids(chat.restored.vocab.tokenizer), set(), []
    dropped = {"turn_too_long": 0, "too_few_words": 0, "repeated": 0, "answer_too_long": 0}
    for r in range(a.max_rounds):
        fresh = []
        for text, ended in draw_turns(chat, pre, a, r * a.round):
            reason = ("turn_too_long" if not (ended or a.keep_cut) else "too_few_words" if len(text.split()) < a.min_words
                      else "repeated" if normalise(text) in seen else None)
            if reason:
                dropped[reason] += 1
                continue
            seen.add(normalise(text))
            fresh.append(text)
        for text, (reply, ended) in zip(fresh, answer(chat, fresh, a) if fresh else []):
            if not (ended or a.keep_cut) or not reply:
                dropped["answer_too_long"] += 1
                continue
            pairs.append({"inputs": text, "targets": reply})
        print(f"round {r + 1}: {len(pairs)} pairs, dropped {dropped}", flush=True)
        if len(pairs) >= a.pairs:
            break
    return pairs[:a.pairs], dropped


def file_sha256(source: str) -> str | None:
    from dlm_jax.model.bundled import resolve_bundled
    path = Path(resolve_bundled(source))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file, HF directory or bundled name")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=3000, help="distinct pairs to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="for the user turns (answers are greedy)")
    p.add_argument("--max_instruction", type=int, default=64, help="tokens of a user turn (with its end)")
    p.add_argument("--max_response", type=int, default=160, help="tokens of an answer (with its end)")
    p.add_argument("--min_words", type=int, default=3)
    p.add_argument("--keep_cut", action="store_true", help="keep turns and answers cut at their token limits")
    p.add_argument("--round", type=int, default=256, help="user turns sampled per round")
    p.add_argument("--max_rounds", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    chat = ChatModel(restore_pretrained(a.model, max_length=a.max_instruction + a.max_response + 128))
    pairs, dropped = collect(chat, a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "valid", "test"):
        rows = [x for x in pairs if split_of(x["inputs"]) == split]
        counts[split] = len(rows)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    settings = {k: v for k, v in vars(a).items() if k != "out"}
    manifest = {"model": a.model, "model_sha256": file_sha256(a.model), "method": "Magpie (Xu et al. 2024)",
                "settings": settings, "counts": counts, "dropped": dropped}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(pairs)} pairs ({counts}) in {out} after {time.perf_counter() - t0:.0f} s; dropped {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
