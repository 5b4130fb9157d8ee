"""Prompt-response features: `<s> prompt response </s>` rows with response, padding masks and lengths.

seqio pads with 0, which is `<s>` for XLM-R; these features never rely on zero padding: every row is built from
the example's own lengths and padded with the tokenizer's pad id, and the padding mask comes from the lengths.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from dlm_jax.errors import ConfigError

OVERLONG = ("skip", "truncate_prompt")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How to lay out examples.

    Attributes:
      max_length: row length (<= the model's position limit: 512 for XLM-R, as the paper).
      bos_id, eos_id, pad_id: special ids of the tokenizer.
      overlong: "skip" (drop and count examples that do not fit, as the paper did) or "truncate_prompt" (drop the
        prompt's leftmost tokens; responses are never cut; a response that cannot fit is skipped).
      separator: `</s>` after the prompt, counted in it (`<s> prompt </s> response </s>`): the encoder-decoder's
        rows, whose source ends at the first `</s>` (`dlm_jax.model.seq2seq`).
    """

    max_length: int
    bos_id: int
    eos_id: int
    pad_id: int
    overlong: str = "skip"
    separator: bool = False

    def __post_init__(self) -> None:
        if self.overlong not in OVERLONG:
            raise ConfigError(f"unknown overlong policy {self.overlong!r}; choose one of {list(OVERLONG)}")
        if self.max_length < 3:
            raise ConfigError(f"max_length must be at least 3, got {self.max_length}")


@dataclasses.dataclass
class Counters:
    seen: int = 0
    skipped: int = 0
    truncated: int = 0


def layout(prompt: Sequence[int], target: Sequence[int], spec: FeatureSpec, counters: Counters | None = None
           ) -> dict[str, np.ndarray] | None:
    """One example -> {tokens, response_mask, padding_mask, prompt_length, response_length} or None (skipped).

    `response_length` counts the response tokens plus `</s>` (the length predictor's target).
    """
    c = counters if counters is not None else Counters()
    c.seen += 1
    prompt, target = list(prompt), list(target)
    if not keeps(len(prompt), len(target), spec):
        c.skipped += 1
        return None
    sep = [spec.eos_id] if spec.separator else []
    if 1 + len(prompt) + len(sep) + len(target) + 1 > spec.max_length:
        room = spec.max_length - 2 - len(sep) - len(target)
        prompt = prompt[len(prompt) - room:] if room > 0 else []
        c.truncated += 1
    prompt = prompt + sep
    row = [spec.bos_id, *prompt, *target, spec.eos_id]
    tokens = np.full(spec.max_length, spec.pad_id, np.int32)
    tokens[:len(row)] = row
    resp = np.zeros(spec.max_length, bool)
    resp[1 + len(prompt):len(row)] = True
    pad = np.zeros(spec.max_length, np.int32)
    pad[:len(row)] = 1
    return {"tokens": tokens, "response_mask": resp, "padding_mask": pad,
            "prompt_length": np.int32(len(prompt) + 1), "response_length": np.int32(len(target) + 1)}


def keeps(prompt_length: Any, target_length: Any, spec: FeatureSpec) -> Any:
    """Whether `layout` keeps an example: `<s> prompt target </s>` fits, or (truncate_prompt) `<s> target </s>` does.

    Plain arithmetic, so the lengths may be Python ints or TF scalars (`fits_tf`)."""
    need = target_length + 2 + int(spec.separator)
    if spec.overlong == "skip":
        need += prompt_length
    return need <= spec.max_length


def fits_tf(example: dict, spec: FeatureSpec) -> Any:
    """`keeps` on a tokenized tf.data example, for filtering inside tf.data."""
    import tensorflow as tf
    return keeps(tf.size(example["inputs"]), tf.size(example["targets"]), spec)


def convert(examples: Iterable[dict], spec: FeatureSpec, counters: Counters | None = None) -> Iterator[dict]:
    """Maps tokenized examples ({"inputs": ids, "targets": ids, ...}) to laid-out rows, skipping what does not fit."""
    for ex in examples:
        row = layout(ex["inputs"], ex["targets"], spec, counters)
        if row is not None:
            yield row


def stack(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def pack(rows: dict[str, np.ndarray], order: Sequence[int], max_length: int, pad_id: int, *,
         open_rows: int = 8) -> dict[str, np.ndarray]:
    """Packs laid-out examples (taken in `order`) into rows of `max_length` tokens.

    First fit over the last `open_rows` rows still being filled, so the order is roughly kept and the result is a
    deterministic function of `order`. Returns {tokens, response_mask, padding_mask, segment_ids} [rows, max_length]
    with `segment_ids` 1, 2, ... per example in a row and 0 on padding (the model restricts attention to a segment
    and restarts positions there, so an example computes what it would alone).
    """
    lengths = rows["padding_mask"].sum(1)
    if lengths.max(initial=0) > max_length:
        raise ConfigError(f"an example has {lengths.max()} tokens, more than the packed length {max_length}")
    bins: list[list[int]] = []
    fill: list[int] = []
    window: list[int] = []
    for i in order:
        n = int(lengths[i])
        for j in window:
            if fill[j] + n <= max_length:
                bins[j].append(int(i))
                fill[j] += n
                break
        else:
            bins.append([int(i)])
            fill.append(n)
            window.append(len(bins) - 1)
            if len(window) > open_rows:
                window.pop(0)
    out = {"tokens": np.full((len(bins), max_length), pad_id, np.int32),
           "response_mask": np.zeros((len(bins), max_length), bool),
           "padding_mask": np.zeros((len(bins), max_length), np.int32),
           "segment_ids": np.zeros((len(bins), max_length), np.int32)}
    for r, members in enumerate(bins):
        at = 0
        for s, i in enumerate(members, start=1):
            n = int(lengths[i])
            out["tokens"][r, at:at + n] = rows["tokens"][i, :n]
            out["response_mask"][r, at:at + n] = rows["response_mask"][i, :n]
            out["padding_mask"][r, at:at + n] = 1
            out["segment_ids"][r, at:at + n] = s
            at += n
    return out


def few_shot_prompt(demos: Sequence[tuple[str, str]], query: str, *, joiner: str = "\n\n",
                    answer_sep: str = " ") -> str:
    """Prompt with demonstrations: each demo is its prompt followed by its answer, joined by `joiner`
    (" | " for MMLU as in the paper), then the query prompt."""
    parts = [f"{p}{answer_sep}{a}".rstrip() if not p.endswith(" ") else f"{p}{a}" for p, a in demos]
    return joiner.join([*parts, query])
