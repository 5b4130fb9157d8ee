"""Continuous batching for an AR run decoded token by token (beam size 1: greedy, or sampled at a request's
temperature), in JetStream's engine shape: a request's prompt is prefilled into a KV cache once, at admission, and
inserted into a free slot of one fixed-shape pool; every engine call steps all slots one token at a time (up to
`steps_per_call`, ending early at the step where a row finishes) and retires the rows that wrote `</s>` or reached
their limit, so a slot freed by a short answer is refilled at the next call instead of waiting for a batch.

A slot steps through `diffusion.autoregressive.next_tokens`, the choice `Generator.generate_ar` makes (its
`greedy_decode`), with the generator's own `cached_decoder`: the same limit (`max_tokens` + `</s>`, the row's room),
`</s>` forbidden first and forced last, and the same key per row (`fold_in(key(seed), request id or seed)`) folded
with the row's own token count. A request's tokens are therefore `generate_ar`'s for it, whatever else decodes beside
it (tests/test_serving.py). Beam search ranks hypotheses across a row's beams and stays with the static batcher.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.diffusion import SamplerConfig
from dlm_jax.diffusion.autoregressive import next_tokens, prompt_rows
from dlm_jax.errors import ConfigError
from dlm_jax.inference.generator import Generator
from dlm_jax.serving.engine import Request, Update, _Queue, ar_decoding


@dataclasses.dataclass
class _Slots:
    """The device state of every slot (rows on the first axis of each array) and its owner."""

    state: dict[str, Any]  # cache, logits [n, V], t, done, limits, temperature, score [n], keys [n, 2], out [n, T]
    owners: list[Request | None]


class ArEngine(_Queue):
    """Continuous-batching KV-cache decoder over an AR run's `Generator` (its `decoding.beam_size` must be 1).

    `slots`: requests decoding at once (rounded up to the micro-batch); `steps_per_call`: tokens one jitted call
    may write per slot; `seed`: row keys are `fold_in(key(seed), request id or seed)`, as the static batcher's.
    Every row has the generator's whole `max_length` of cache.
    """

    def __init__(self, generator: Generator, *, slots: int = 8, max_steps: int = 256, seed: int = 0,
                 steps_per_call: int = 8):
        super().__init__(generator, slots=slots, max_steps=max_steps, seed=seed)
        if generator.decoding is None or generator.decoding.beam_size != 1:
            raise ConfigError("the AR engine decodes one token per slot per step: it needs an AR run with "
                              "decoding.beam_size 1 (beam search: --batching static)")
        if steps_per_call < 1:
            raise ConfigError(f"steps_per_call={steps_per_call} must be at least 1")
        self.steps_per_call = steps_per_call
        self.rows = -(-slots // max(generator.micro_batch, 1)) * max(generator.micro_batch, 1)
        self._slots: _Slots | None = None
        self._fns: dict[str, Callable] = {}

    @property
    def running(self) -> int:
        return 0 if self._slots is None else sum(o is not None for o in self._slots.owners)

    def idle(self) -> bool:
        return not self._waiting and self.running == 0

    def cancel(self, request_id: int) -> bool:
        """Drops a waiting or running request (a running one's slot is free at the next call)."""
        if self._drop_waiting(request_id):
            return True
        for slot, owner in enumerate(self._slots.owners if self._slots else []):
            if owner is not None and owner.id == request_id:
                self._free(slot)
                return True
        return False

    def step(self) -> list[Update]:
        """Admits waiting requests into free slots (each prefilled once), writes up to `steps_per_call` tokens in
        every slot and retires the finished rows; an `Update` for each finished request."""
        self._admit()
        if self.running == 0:
            return []
        slots = self._slots
        slots.state = self._fn("step")(self.gen.params, slots.state, np.int32(self.steps_per_call))
        self.model_calls += 1
        return self._collect()

    def warmup(self) -> int:
        """Compiles the insert, step and clear functions (one shape each), so serving never compiles. Returns 1."""
        slots = self._pool()
        tokens, attn, _ = self._row(Request(-1, [], 2, SamplerConfig(steps=2, strategy="ar")))
        row = dict(tokens=tokens, attn=attn, limit=np.ones((1,), np.int32), keys=np.zeros((1, 2), np.uint32),
                   temperature=np.zeros((1,), np.float32))
        slots.state = self._fn("insert")(self.gen.params, slots.state, np.int32(0), row)
        slots.state = self._fn("clear")(slots.state, np.int32(0))
        slots.state = self._fn("step")(self.gen.params, slots.state, np.int32(1))
        return 1

    # -- internals ---------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        while self._waiting and self.running < self.slots:
            req = self._waiting.popleft()
            slots = self._pool()
            slot = slots.owners.index(None)
            tokens, attn, limit = self._row(req)
            key_data = self.gen.row_keys(self._rng, [req.key_id])
            temperature = 0.0 if req.sampler.argmax else req.sampler.temperature
            row = dict(tokens=tokens, attn=attn, limit=np.asarray([limit], np.int32), keys=key_data,
                       temperature=np.asarray([temperature], np.float32))
            slots.state = self._fn("insert")(self.gen.params, slots.state, np.int32(slot), row)
            slots.owners[slot] = req

    def _row(self, req: Request) -> tuple[np.ndarray, np.ndarray, int]:
        """What the request's prefill reads, as `generate_ar` lays its row out (full width, model ids), and its
        token limit."""
        gen = self.gen
        tokens, resp, attn, limits = gen.ar_layout([req.prompt], ar_decoding(gen.decoding, req.sampler, req.length))
        tokens = gen.vocab_map.to_new(tokens) if gen.vocab_map is not None else tokens
        tokens, prompt = prompt_rows(tokens, resp, attn, gen.model_id(gen.pad_id))
        return np.asarray(tokens, np.int32), np.asarray(prompt, np.int32), int(limits[0])

    def _pool(self) -> _Slots:
        """The slots' state, built at the first admission from one empty prefill's shapes (then reused)."""
        if self._slots is None:
            n, width = self.rows, self.gen.max_length
            empty = jax.eval_shape(lambda p: self.gen.cached_decoder(p)[0](
                jnp.zeros((1, width), jnp.int32), jnp.ones((1, width), jnp.int32)), self.gen.params)
            logits, cache = empty
            rows = lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype)  # noqa: E731
            state = dict(cache=jax.tree.map(rows, cache), logits=rows(logits), t=jnp.zeros((n,), jnp.int32),
                         done=jnp.ones((n,), bool), limits=jnp.ones((n,), jnp.int32),
                         temperature=jnp.zeros((n,), jnp.float32), score=jnp.zeros((n,), jnp.float32),
                         keys=jnp.zeros((n, 2), jnp.uint32), out=jnp.zeros((n, width), jnp.int32))
            self._slots = _Slots(jax.device_put(state, self._sharding()), [None] * n)
        return self._slots

    def _collect(self) -> list[Update]:
        slots = self._slots
        out, t, done, score = jax.device_get(tuple(slots.state[k] for k in ("out", "t", "done", "score")))
        updates = []
        for slot, req in enumerate(slots.owners):
            if req is None or not done[slot]:
                continue
            ids = out[slot, :t[slot]]
            ids = self.gen.vocab_map.to_old(ids) if self.gen.vocab_map is not None else ids
            updates.append(Update(req.id, np.asarray(ids), np.zeros(len(ids), bool), int(t[slot]) + 1, True,
                                  np.full(len(ids), score[slot], np.float32)))
            slots.owners[slot] = None
        return updates

    def _free(self, slot: int) -> None:
        self._slots.owners[slot] = None
        self._slots.state = self._fn("clear")(self._slots.state, np.int32(slot))

    def _fn(self, name: str) -> Callable:
        """The jitted insert / step / clear (compiled once each)."""
        if name not in self._fns:
            eos, pad = self.gen.model_id(self.gen.eos_id), self.gen.model_id(self.gen.pad_id)
            fn, donate = {"insert": (_insert_fn(self.gen), (1,)), "step": (_step_fn(self.gen, eos, pad), (1,)),
                          "clear": (_clear_fn(), (0,))}[name]
            self._fns[name] = jax.jit(fn, donate_argnums=donate, out_shardings=self._sharding())
        return self._fns[name]


def _insert_fn(gen: Generator) -> Callable:
    """Prefills a request's row (batch of one) and writes its cache, next-token logits and settings into a slot."""
    def insert(params, state, slot, row):
        logits, cache = gen.cached_decoder(params)[0](row["tokens"], row["attn"])
        put = lambda a, r: jax.lax.dynamic_update_index_in_dim(a, r[0].astype(a.dtype), slot, 0)  # noqa: E731
        new = dict(cache=cache, logits=logits, t=jnp.zeros((1,), jnp.int32), done=jnp.zeros((1,), bool),
                   limits=row["limit"], temperature=row["temperature"], score=jnp.zeros((1,), jnp.float32),
                   keys=row["keys"], out=jnp.zeros((1, state["out"].shape[1]), jnp.int32))
        return jax.tree.map(put, state, new)
    return insert


def _step_fn(gen: Generator, eos: int, pad: int) -> Callable:
    """Up to `most` tokens in every live slot, ending after the step where a live row finishes."""
    def run(params, state, most):
        step = gen.cached_decoder(params)[1]
        keys, before = jax.random.wrap_key_data(state["keys"]), state["done"]
        rows = jnp.arange(before.shape[0])

        def more(c):
            i, s = c
            return (i < most) & ~(s["done"] & ~before).any() & ~s["done"].all()

        def one(c):
            i, s = c
            tok, logp = next_tokens(s["logits"], s["t"], s["limits"], s["done"], s["temperature"], keys,
                                    eos_id=eos, pad_id=pad)
            live, col = ~s["done"], jnp.minimum(s["t"], s["out"].shape[1] - 1)
            out = s["out"].at[rows, col].set(jnp.where(live, tok, s["out"][rows, col]))
            logits, cache = step(s["cache"], jnp.where(live, tok, eos))
            return i + 1, {**s, "cache": cache, "logits": logits, "out": out, "score": s["score"] + logp,
                           "t": s["t"] + live.astype(jnp.int32), "done": s["done"] | (tok == eos)}
        return jax.lax.while_loop(more, one, (jnp.int32(0), state))[1]
    return run


def _clear_fn() -> Callable:
    """A freed slot: done, so it writes nothing more (its cache is overwritten by the next insert)."""
    def clear(state, slot):
        return {**state, "done": state["done"].at[slot].set(True)}
    return clear
