"""A pretrained decoder LLM as it is: prompts and chat messages as its own template lays them out, decoded left to
right with the KV cache (`Generator.generate_ar`).

A row is exactly the ids the model's tokenizer gives (`chat_ids`: the chat template with the assistant's turn
opened, as transformers' `apply_chat_template(..., add_generation_prompt=True)`; `prompt_ids`: the tokenizer's
own special tokens, e.g. Llama's `<s>`), so greedy decoding here is transformers' greedy `generate` token for
token. The row's first id takes the `<s>` slot of dlm_jax's rows (`Generator.bos_id`), nothing is prepended.
"""
from __future__ import annotations

from typing import Any, Sequence

from dlm_jax.errors import InputError
from dlm_jax.inference.generator import Generator, response_ids
from dlm_jax.inference.restored import RestoredRun


def chat_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The ids of `messages` ([{"role", "content"}]) under the tokenizer's chat template with the assistant's turn
    opened; a tokenizer without one gets the contents joined by blank lines (its own special tokens added)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return [int(i) for i in ids]
    return prompt_ids(tokenizer, "\n\n".join(m["content"] for m in messages))


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """A plain prompt as the tokenizer encodes it for its model (with its own special tokens, e.g. `<s>`)."""
    return [int(i) for i in tokenizer(text)["input_ids"]]


def _free_id(candidates: Sequence[int | None], used: set[int]) -> int:
    """The first candidate id outside `used`: the padding id of rows that must not contain it (a row's attention
    is its non-padding positions, and SmolLM2's file names `<|im_start|>`, which every turn holds, as padding)."""
    return next(int(i) for i in candidates if i is not None and int(i) not in used)


class ChatModel:
    """A pretrained decoder LLM's `RestoredRun` (`restore_pretrained`) with its compiled decoders kept between
    calls (one `Generator` per first id and padding id of the rows, each compiling once per width bucket)."""

    def __init__(self, restored: RestoredRun):
        self.restored = restored
        self._generators: dict[tuple[int, int], Generator] = {}

    @property
    def eos_id(self) -> int:
        return int(self.restored.vocab.tokenizer.eos_token_id)

    @property
    def decoding(self) -> Any:
        """The run's `decoding.*` (a `DecodeConfig`: greedy for a pretrained model unless overridden)."""
        return self.restored.run.decoding

    @property
    def max_length(self) -> int:
        """Positions of a row: the prompt's ids and the response."""
        return min(self.restored.run.data.max_length, self.restored.model.cfg.max_length)

    def complete(self, rows: Sequence[Sequence[int]], *, batch_size: int = 64, decoding: Any = None,
                 rng: Any = None, seeds: Sequence[int] | None = None) -> list[list[int]]:
        """The response ids (up to, without, the end-of-turn id) that `decoding` (default: the run's `decoding.*`;
        greedy for a pretrained model) continues each row with. Rows must share their first id (a template's or
        `<s>`). With `decoding.temperature` > 0 a row's sample is drawn with `fold_in(rng, its seed)`
        (`Generator.generate_ar`)."""
        if not rows or any(len(r) < 1 for r in rows):
            raise InputError("every prompt needs at least one token")
        first = {int(r[0]) for r in rows}
        if len(first) > 1:
            raise InputError(f"these prompts start with different tokens {sorted(first)}; decode them in separate "
                             "calls (a chat template starts every prompt alike)")
        run, tok, eos = self.restored, self.restored.vocab.tokenizer, self.eos_id
        pad = _free_id([tok.pad_token_id, *range(len(tok))], {eos, *(int(i) for r in rows for i in r)})
        key = (first.pop(), pad)
        if key not in self._generators:
            self._generators[key] = Generator(
                run.model, run.params, bos_id=key[0], eos_id=eos, pad_id=pad, mask_id=-1,
                max_length=self.max_length, mesh=run.mesh, micro_batch=run.micro_batch, decoding=self.decoding)
        out = self._generators[key].generate_ar([list(r[1:]) for r in rows], decoding or self.decoding,
                                                batch_size=batch_size, rng=rng, seeds=seeds)
        return response_ids(out["tokens"], out["response_mask"], eos)


def complete(restored: RestoredRun, rows: Sequence[Sequence[int]], *, batch_size: int = 64) -> list[list[int]]:
    """`ChatModel(restored).complete(rows)` (compiles anew: keep a `ChatModel` to decode more than once)."""
    return ChatModel(restored).complete(rows, batch_size=batch_size)
