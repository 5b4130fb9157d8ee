"""A step-level denoising engine with continuous batching (JetStream's engine API, as MaxText's `maxengine.py`:
insert a request into a slot, one generate step over all slots, fixed shapes, no recompiles).

State lives on the device in pools of fixed shape, one pool per (row width, response positions) bucket, the same
buckets `inference.Generator` lays rows out in: tokens, attention, response mask and head positions, each slot's
key (`fold_in(seed, request id)`), its `RowSettings` (strategy, steps, schedule table, temperature, threshold) and
its `Canvas`. `Engine.step` admits waiting requests into free slots, runs one `diffusion.denoise_step` over every
pool that holds a request (micro-batches of free or finished slots skip the model) and retires finished rows, so a
slot freed by a short response is refilled at the next step instead of waiting for the batch's slowest row.
Admission (`admission="pack"`, the default) prefers the oldest waiting request whose bucket has a free row in a
micro-batch that is computing anyway, so the live rows gather in few pools (a bounded departure from first come
first served: `max_skips`); `"fcfs"` admits strictly in arrival order.

Every strategy's step is the sampler's own (`denoise_step` with per-row settings), a row's random numbers are its
own and the model runs on fixed micro-batches, so a request's tokens do not depend on when it was admitted or what
else was decoding: they equal `Generator.generate(..., seeds=[request id])`'s (tests/test_serving.py).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.diffusion import SamplerConfig
from dlm_jax.diffusion.sampler import (KINDS, Canvas, RowSettings, check_sampler, denoise_step, finished,
                                       initial_canvas, response_positions, row_settings)
from dlm_jax.errors import ConfigError, InputError
from dlm_jax.inference.generator import Generator, bucket, live_bucket
from dlm_jax.inference.prefix_cache import cached_logits, fill_cache, live_positions, live_slots, response_side


@dataclasses.dataclass
class Request:
    """One generation request: a prompt (ids of the original vocabulary, without `<s>`), its response length (the
    canvas, incl. `</s>`) and sampler settings. `snapshots`: report the canvas after every step (its pool runs one
    step per call); `progress`: report it after every engine call (up to `steps_per_call` steps; enough for a
    settled-prefix stream, which is append-only whatever the granularity)."""

    id: int
    prompt: list[int]
    length: int
    sampler: SamplerConfig
    snapshots: bool = False
    seed: int | None = None  # the key is fold_in(seed of the engine, this or else `id`)
    arrived: float = dataclasses.field(default_factory=time.perf_counter)
    progress: bool = False

    @property
    def reports(self) -> bool:
        """Whether an unfinished step's canvas is reported."""
        return self.snapshots or self.progress

    @property
    def key_id(self) -> int:
        return self.id if self.seed is None else self.seed


@dataclasses.dataclass
class Update:
    """What a step reports for a request: the response canvas (original ids; the mask id where still masked)."""

    id: int
    tokens: np.ndarray  # [length] response positions
    masked: np.ndarray  # [length] bool
    steps: int  # model evaluations so far
    done: bool
    scores: np.ndarray | None = None  # [length] log-probs, when done


@dataclasses.dataclass
class _Pool:
    """The device state of one (width, response positions) bucket and which request owns each slot."""

    width: int
    max_response: int
    max_live: int  # > 0: a cached pool's live slots per row (`prefix_cache`); 0: whole rows every step
    arrays: dict[str, Any]  # tokens-independent inputs: response, attn, positions, keys, settings (and a cache)
    canvas: Canvas
    owners: list[Request | None]
    response: np.ndarray  # [rows, width] bool: a host copy of arrays["response"]

    @property
    def used(self) -> int:
        return sum(o is not None for o in self.owners)


class _Queue:
    """What both schedulers share: the generator, the waiting requests (first come first served), their checks."""

    def __init__(self, generator: Generator, *, slots: int = 8, max_steps: int = 256, seed: int = 0):
        if slots < 1 or max_steps < 1:
            raise ConfigError(f"slots={slots} and max_steps={max_steps} must be at least 1")
        self.gen, self.slots, self.max_steps = generator, slots, max_steps
        self._rng = jax.random.key(seed)
        self._waiting: collections.deque[Request] = collections.deque()
        self.model_calls = 0  # model evaluations of whole batches / pools

    def check(self, request: Request) -> None:
        """Raises `InputError` / `ConfigError` (one line) for a request this engine cannot decode."""
        check_request(self.gen, request, self.max_steps)

    def submit(self, request: Request) -> None:
        """Queues a request (checked first); it is decoded from a later `step`."""
        self.check(request)
        self._waiting.append(request)

    def _drop_waiting(self, request_id: int) -> bool:
        found = [r for r in self._waiting if r.id == request_id]
        for r in found:
            self._waiting.remove(r)
        return bool(found)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _sharding(self) -> Any:
        """Where an engine's device state lives: replicated over the params' mesh, or on the first device
        (committed, so the jitted functions see the same kind of argument at every call and compile once)."""
        if self.gen.mesh is None:
            return jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.sharding.NamedSharding(self.gen.mesh, jax.sharding.PartitionSpec())

    def run(self, requests: Iterable[Request]) -> dict[int, Update]:
        """Submits `requests` and steps until all are done; their final updates by id (for tests and benches)."""
        out = {}
        for r in requests:
            self.submit(r)
        while not self.idle():
            out.update({u.id: u for u in self.step() if u.done})
        return out


class Engine(_Queue):
    """Continuous-batching denoiser over a `Generator`'s model, params, vocabulary and micro-batch.

    `slots`: requests decoding at once (each pool has this many rows, rounded up to the micro-batch); `max_steps`:
    the most steps a fixed-schedule request may ask for (the schedule tables' width); `seed`: keys are
    `fold_in(key(seed), request id)`, as `Generator.generate(..., seeds=ids)`; `steps_per_call`: denoising steps
    one jitted call may run (a `while_loop` that also ends at the step where a row finishes, so retirement and
    refill never wait; 1 while a pool holds a snapshot request). Finished rows are frozen by `denoise_step`, so the
    tokens do not depend on it.
    """

    def __init__(self, generator: Generator, *, slots: int = 8, max_steps: int = 256, seed: int = 0,
                 steps_per_call: int = 8, admission: str = "pack", max_skips: int | None = None):
        super().__init__(generator, slots=slots, max_steps=max_steps, seed=seed)
        if steps_per_call < 1:
            raise ConfigError(f"steps_per_call={steps_per_call} must be at least 1")
        if admission not in ADMISSIONS or (max_skips is not None and max_skips < 0):
            raise ConfigError(f"admission={admission!r} must be one of {ADMISSIONS} and max_skips={max_skips} >= 0")
        self.steps_per_call, self.admission = steps_per_call, admission
        self.max_skips = slots if max_skips is None else max_skips
        self.rows = -(-slots // max(generator.micro_batch, 1)) * max(generator.micro_batch, 1)
        self._pools: dict[tuple[int, int, int], _Pool] = {}
        self._fns: dict[tuple[str, int, int, int], Callable] = {}
        self._layouts: dict[int, tuple] = {}  # waiting request id -> `_layout`
        self._skips: dict[int, int] = {}  # waiting request id -> admissions that passed it over at the queue's head

    # -- requests ----------------------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queues a request (checked first; its row laid out once, for admission's choice of bucket)."""
        super().submit(request)
        self._layouts[request.id] = self._layout(request)

    def cancel(self, request_id: int) -> bool:
        """Drops a waiting or running request (its slot is free for the next step). True if it was found."""
        if self._drop_waiting(request_id):
            self._layouts.pop(request_id, None)
            self._skips.pop(request_id, None)
            return True
        for pool in self._pools.values():
            for slot, owner in enumerate(pool.owners):
                if owner is not None and owner.id == request_id:
                    self._free(pool, slot)
                    return True
        return False

    @property
    def running(self) -> int:
        return sum(p.used for p in self._pools.values())

    def idle(self) -> bool:
        return not self._waiting and self.running == 0

    # -- the step ----------------------------------------------------------------------------------------------
    def step(self) -> list[Update]:
        """Admits waiting requests into free slots, runs one denoising step of every pool that holds a request
        and retires finished rows. Returns an `Update` for every finished request and every request that `reports`."""
        self._admit()
        updates: list[Update] = []
        for pool in self._pools.values():
            if pool.used:
                most = 1 if any(o is not None and o.snapshots for o in pool.owners) else self.steps_per_call
                pool.canvas, done = self._fn("step", pool)(self.gen.params, pool.arrays, pool.canvas,
                                                           np.int32(most))
                self.model_calls += 1
                updates.extend(self._collect(pool, done))
        return updates

    def warmup(self, buckets: Iterable[tuple[int, ...]] | None = None) -> int:
        """Compiles the step of each (width, response positions[, live slots]) bucket (default: every uncached
        bucket of `max_length`; a cached pool compiles when its first request comes), so serving never compiles.
        Returns the number of buckets."""
        keys = list(buckets) if buckets is not None else self.buckets()
        for key in keys:
            pool = self._pool(tuple(key) + (0,) * (3 - len(key)))
            if pool.used:
                continue
            pool.canvas, _ = self._fn("step", pool)(self.gen.params, pool.arrays, pool.canvas, np.int32(1))
            row = jax.tree.map(lambda a: np.asarray(a[:1]), dict(tokens=pool.canvas.tokens, **{
                k: v for k, v in pool.arrays.items() if k not in ("positions", "cache")}))  # an empty slot's own row
            pool.arrays, pool.canvas = self._fn("insert", pool)(pool.arrays, pool.canvas, np.int32(0), row,
                                                                self.gen.params)
            pool.arrays, pool.canvas = self._fn("clear", pool)(pool.arrays, pool.canvas, np.int32(0))
        return len(keys)

    def buckets(self) -> list[tuple[int, int]]:
        """Every (width, response positions) bucket a row of up to `max_length` positions can fall in."""
        widths = sorted({bucket(n, self.gen.max_length) for n in range(3, self.gen.max_length + 1)})
        return [(w, r) for w in widths for r in sorted({bucket(n, w) for n in range(1, w - 1)})]

    # -- internals ---------------------------------------------------------------------------------------------
    def _layout(self, req: Request) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray]:
        """The request's row as `Generator.generate` lays it out (full width), and its bucket, as `_calls`:
        (width, response positions, live slots of a cached decode or 0)."""
        tokens, resp, attn = self.gen.layout([req.prompt], [req.length], fixed_eos=req.sampler.fixed_eos)
        width = bucket(int(attn.sum()), self.gen.max_length)
        r, live = bucket(int(resp.sum()), width), 0
        if req.sampler.cache != "none":
            live = live_bucket(int(live_positions(response_side(resp, attn), resp, req.sampler.cache).sum()), width, r)
        return (width, r, live), tokens[:, :width], resp[:, :width], attn[:, :width]

    def _pool(self, key: tuple[int, int, int]) -> _Pool:
        if key not in self._pools:
            width, r, live = key
            n, t = self.rows, self.max_steps
            i32 = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
            settings = RowSettings(kind=i32(n), steps=i32(n), keep=i32(n, t), rate=jnp.zeros((n, t), jnp.float32),
                                   cond=jnp.zeros((n,), bool), noise=jnp.zeros((n,), jnp.float32),
                                   log_tau=jnp.zeros((n,), jnp.float32), temperature=jnp.ones((n,), jnp.float32),
                                   argmax=jnp.ones((n,), bool))
            attn = i32(n, width).at[:, 0].set(1)
            arrays = dict(response=jnp.zeros((n, width), bool), attn=attn, positions=i32(n, r),
                          keys=jnp.zeros((n, 2), jnp.uint32), settings=settings)
            if live:  # the cache, filled at insert (`prefix_cache.fill_cache`), and each row's live slots
                shapes = jax.eval_shape(lambda p, a: fill_cache(self.gen.cache_model(), p, a, a, a.astype(bool),
                                                                self.gen.micro_batch), self.gen.params, attn)
                arrays.update(cache=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes),
                              live_pos=i32(n, live), live_valid=jnp.zeros((n, live), bool),
                              visible=jnp.zeros((n, width), bool))
            canvas = initial_canvas(jnp.full((n, width), self.gen.model_id(self.gen.pad_id), jnp.int32),
                                    jnp.zeros((n, width), bool), self.gen.model_id(self.gen.mask_id))  # own buffers
            arrays, canvas = self._place((arrays, canvas))
            self._pools[key] = _Pool(width, r, live, arrays, canvas, [None] * n, np.zeros((n, width), bool))
        return self._pools[key]

    def _admit(self) -> None:
        """Waiting requests into free slots of their buckets, in the order `_choose` gives."""
        while self._waiting and self.running < self.slots:
            req = self._choose()
            self._waiting.remove(req)
            self._skips.pop(req.id, None)
            key, tokens, resp, attn = self._layouts.pop(req.id)
            pool = self._pool(key)
            slot = self._slot(pool)
            row = self._row(req, pool, tokens, resp, attn)
            pool.arrays, pool.canvas = self._fn("insert", pool)(pool.arrays, pool.canvas, np.int32(slot), row,
                                                                self.gen.params)
            pool.owners[slot] = req
            pool.response[slot] = resp[0]

    def _choose(self) -> Request:
        """The next request to admit. "fcfs": the oldest. "pack": the oldest whose bucket has a free slot in a
        micro-batch that is already computing (a slot that costs nothing to fill), so live rows gather in few
        pools and micro-batches; the oldest when none has, or once it was passed over `max_skips` times (a
        request waits at most that many admissions at the queue's head)."""
        head = self._waiting[0]
        if self.admission == "fcfs" or self._skips.get(head.id, 0) >= self.max_skips:
            return head
        costless = {key for key, pool in self._pools.items() if _costless(pool, self.gen.micro_batch)}
        for req in self._waiting:
            if self._layouts[req.id][0] in costless:
                if req is not head:
                    self._skips[head.id] = self._skips.get(head.id, 0) + 1
                return req
        return head

    def _slot(self, pool: _Pool) -> int:
        """A free slot of the pool, in the micro-batch with the most live rows (the first such)."""
        live = _live_per_slot(pool, self.gen.micro_batch)
        return max((i for i, o in enumerate(pool.owners) if o is None), key=lambda i: (live[i], -i))

    def _row(self, req: Request, pool: _Pool, tokens: np.ndarray, resp: np.ndarray, attn: np.ndarray
             ) -> dict[str, Any]:
        """The request's row at its pool's width, as host arrays of fixed dtypes (`_insert_fn` places them)."""
        gen = self.gen
        if gen.vocab_map is not None:
            tokens = gen.vocab_map.to_new(tokens)
        row = dict(tokens=np.asarray(tokens, np.int32), response=np.asarray(resp, bool),
                   attn=np.asarray(attn, np.int32), keys=np.asarray(gen.row_keys(self._rng, [req.key_id]), np.uint32),
                   settings=row_settings(req.sampler, resp.sum(1).astype(np.int64), pool.width, self.max_steps))
        if pool.max_live:  # the live slots (`prefix_cache.live_positions`) and the cached columns
            live = live_positions(response_side(resp, attn), resp, req.sampler.cache)
            slots = jax.device_get(live_slots(live, attn, pool.max_live))
            row.update(zip(("live_pos", "live_valid", "visible"), slots))
        return row

    def _collect(self, pool: _Pool, done: jax.Array) -> list[Update]:
        """Updates of the pool's requests after a step; finished ones leave their slots."""
        c = pool.canvas
        tokens, masked, evals, done, scores = jax.device_get((c.tokens, c.is_masked, c.evals, done, c.scores))
        response = pool.response
        out = []
        for slot, req in enumerate(pool.owners):
            if req is None or not (done[slot] or req.reports):
                continue
            cols = np.flatnonzero(response[slot])
            if req.sampler.fixed_eos:  # the released canvas: the fixed </s> closes the response
                cols = np.append(cols, cols[-1] + 1 if len(cols) else 1 + len(req.prompt))
            ids = tokens[slot, cols]
            ids = self.gen.vocab_map.to_old(ids) if self.gen.vocab_map is not None else ids
            out.append(Update(req.id, ids, masked[slot, cols], int(evals[slot]), bool(done[slot]),
                              scores[slot, cols] if done[slot] else None))
            if done[slot]:
                self._free(pool, slot)
        return out

    def _free(self, pool: _Pool, slot: int) -> None:
        pool.owners[slot] = None
        pool.response[slot] = False
        pool.arrays, pool.canvas = self._fn("clear", pool)(pool.arrays, pool.canvas, np.int32(slot))

    def _place(self, tree: Any) -> Any:
        return jax.device_put(tree, self._sharding())

    def _fn(self, name: str, pool: _Pool) -> Callable:
        """The jitted step / insert / clear for a pool's shape (compiled once each)."""
        key = (name, pool.width, pool.max_response, pool.max_live)
        if key not in self._fns:
            mask_id = self.gen.model_id(self.gen.mask_id)
            fn, donate = {"step": (self._step_fn(pool), (2,)), "insert": (_insert_fn(pool, mask_id, self.gen), (0, 1)),
                          "clear": (_clear_fn(), (0, 1))}[name]
            self._fns[key] = jax.jit(fn, donate_argnums=donate, out_shardings=self._sharding())
        return self._fns[key]

    def _step_fn(self, pool: _Pool) -> Callable:
        micro, mask_id = self.gen.micro_batch, self.gen.model_id(self.gen.mask_id)

        def run(params, arrays, canvas, most):
            attn = arrays["attn"]

            side = response_side(arrays["response"], attn)

            def logits_fn(t, positions, rows=None):
                a, sd = (attn, side) if rows is None else (attn[rows], side[rows])
                return self.gen.head(params, t, a, positions, sd)
            if pool.max_live:
                logits_fn = cached_logits(self.gen.cache_model(), params, arrays["cache"], arrays["live_pos"],
                                          arrays["live_valid"], arrays["visible"], self.gen.head_chunk)
            keys, settings = jax.random.wrap_key_data(arrays["keys"]), arrays["settings"]
            before = finished(canvas, settings)

            def more(state):  # another step: until `most` steps or a row finishes (its slot can be refilled)
                i, c = state
                return (i < most) & ~(finished(c, settings) & ~before).any()

            def one(state):
                i, c = state
                return i + 1, denoise_step(logits_fn, c, settings, arrays["response"], keys, mask_id=mask_id,
                                           positions=arrays["positions"], micro_batch=micro, kinds=KINDS,
                                           sampling="rows", noise=True, skip_finished=True)
            _, canvas = jax.lax.while_loop(more, one, (jnp.int32(0), canvas))
            return canvas, finished(canvas, settings)
        return run


ADMISSIONS = ("pack", "fcfs")


def _live_per_slot(pool: _Pool, micro_batch: int) -> list[int]:
    """For each slot, how many live rows its micro-batch holds."""
    m = max(micro_batch, 1)
    live = [o is not None for o in pool.owners]
    return [sum(live[i - i % m:i - i % m + m]) for i in range(len(live))]


def _costless(pool: _Pool, micro_batch: int) -> bool:
    """Whether the pool has a free slot in a micro-batch with a live row (filling it adds no model work)."""
    live = _live_per_slot(pool, micro_batch)
    return any(o is None and n > 0 for o, n in zip(pool.owners, live))


def check_request(gen: Generator, request: Request, max_steps: int) -> None:
    """`InputError` / `ConfigError` (one line) for a request that cannot be decoded: too long for the model, more
    steps than the schedule tables hold, or an `ar` strategy with fewer steps than the response."""
    room = gen.max_length - gen.row_positions(request.prompt)
    if request.length < 1 or request.length > room:
        raise InputError(f"the prompt has {len(request.prompt)} tokens and the response {request.length}: "
                         f"together with <s> they must fit in {gen.max_length} positions", field="max_tokens")
    check_sampler(request.sampler, np.asarray([request.length - int(request.sampler.fixed_eos)]),
                  max_steps=max_steps)
    check_servable(request.sampler)


def check_servable(sampler: SamplerConfig) -> None:
    """The engines decode a whole response per request: semi-autoregressive decoding (`block_length`) is for
    `generate` / `evaluate`; a `ConfigError` naming it (the server checks its run's sampler at start-up too)."""
    if sampler.block_length:
        raise ConfigError(f"block_length={sampler.block_length}: the serving engine decodes whole responses; "
                          "semi-autoregressive decoding runs in generate / evaluate (serve with "
                          "--config.sampler.block_length=0)", field="block_length")



class StaticBatcher(_Queue):
    """Static batching through `Generator.generate`, for comparison: up to `slots` waiting requests with the
    first one's sampler settings decode as one batch, and the next batch starts when all of them are done (the
    batch waits for its slowest row). The same interface as `Engine`; updates only when done. An AR run's
    requests (the generator's `decoding`) batch by length and decode with the run's greedy / beam settings up to
    their `max_tokens` and `</s>` (`Generator.generate_ar`, `max_len_b` = the request's length)."""

    running = 0  # a batch runs inside `step`

    def cancel(self, request_id: int) -> bool:
        """Drops a waiting request (a batch being decoded runs to its end)."""
        return self._drop_waiting(request_id)

    def idle(self) -> bool:
        return not self._waiting

    def step(self) -> list[Update]:
        first, length = self._waiting[0].sampler, self._waiting[0].length
        ar = self.gen.decoding is not None  # one decoding limit per batch: requests of one length
        batch = [r for r in self._waiting if r.sampler == first and (not ar or r.length == length)][:self.slots]
        for r in batch:
            self._waiting.remove(r)
        if ar:  # an AR run: up to the requests' max_tokens and </s> (`length`), at their temperature
            decoding = ar_decoding(self.gen.decoding, first, batch[0].length)
            out = self.gen.generate_ar([r.prompt for r in batch], decoding, batch_size=self.slots, rng=self._rng,
                                       seeds=[r.key_id for r in batch])
        else:
            out = self.gen.generate([r.prompt for r in batch], [r.length for r in batch], first, self._rng,
                                    batch_size=self.slots, seeds=[r.key_id for r in batch])
        self.model_calls += int(np.max(out["num_evals"]))
        updates = []
        for j, r in enumerate(batch):
            cols = np.flatnonzero(out["response_mask"][j])
            if r.sampler.fixed_eos:
                cols = np.append(cols, cols[-1] + 1)
            updates.append(Update(r.id, out["tokens"][j, cols], np.zeros(len(cols), bool), int(out["num_evals"][j]),
                                  True, out["scores"][j, cols]))
        return updates


def ar_decoding(decoding: Any, sampler: SamplerConfig, length: int) -> Any:
    """The AR model's `decoding` for a batch of requests with `sampler` ("ar": argmax or a temperature) and
    `length` response tokens at most (max_tokens + </s>)."""
    temperature = 0.0 if sampler.argmax else sampler.temperature
    return dataclasses.replace(decoding, max_len_a=0.0, max_len_b=length, temperature=temperature)


class ChatBatcher(StaticBatcher):
    """A pretrained decoder LLM (`serve --pretrained`) through `inference.chat.ChatModel`: up to `slots` waiting
    requests of one length decode as one KV-cache batch with the model's `decoding.*` (greedy unless overridden) up
    to their `max_tokens`. A request's prompt is its whole row (the chat template's ids); its response ends with
    the end-of-turn id when the model ended it (the server's "stop"), without it when cut ("length")."""

    def __init__(self, chat: Any, *, slots: int = 8, max_steps: int = 256, seed: int = 0):
        super().__init__(chat, slots=slots, max_steps=max_steps, seed=seed)  # `gen`: the ChatModel
        self.chat = chat

    def check(self, request: Request) -> None:
        room = self.chat.max_length - len(request.prompt)
        if request.length < 2 or request.length > room:
            raise InputError(f"the prompt has {len(request.prompt)} tokens and the response {request.length}: "
                             f"together they must fit in {self.chat.max_length} positions", field="max_tokens")

    def step(self) -> list[Update]:
        length, sampler = self._waiting[0].length, self._waiting[0].sampler
        batch = [r for r in self._waiting if r.length == length and r.sampler == sampler][:self.slots]
        for r in batch:
            self._waiting.remove(r)
        out = self.chat.complete([r.prompt for r in batch], decoding=ar_decoding(self.chat.decoding, sampler, length),
                                 batch_size=self.slots, rng=self._rng, seeds=[r.key_id for r in batch])
        self.model_calls += max(len(ids) for ids in out) + 1
        updates = []
        for r, ids in zip(batch, out):
            tokens = np.asarray(ids + [self.chat.eos_id] if len(ids) < length - 1 else ids, np.int64)
            updates.append(Update(r.id, tokens, np.zeros(len(tokens), bool), len(ids) + 1, True,
                                  np.zeros(len(tokens), np.float32)))
        return updates


def _insert_fn(pool: _Pool, mask_id: int, gen: Generator) -> Callable:
    """Writes a request's row (host arrays, `Engine._row`) into a slot: its inputs, head positions and canvas, and
    in a cached pool its prompt's keys and values (the prefill: once per request)."""
    def insert(arrays, canvas, slot, row, params):
        response = row["response"]
        full = {**{k: v for k, v in row.items() if k != "tokens"},
                "positions": response_positions(response, pool.max_response)}
        start = initial_canvas(row["tokens"], response, mask_id)
        if pool.max_live:
            full["cache"] = fill_cache(gen.cache_model(), params, start.tokens, row["attn"],
                                       response_side(response, row["attn"]), gen.micro_batch)
        put = lambda a, r: jax.lax.dynamic_update_index_in_dim(a, r[0].astype(a.dtype), slot, 0)  # noqa: E731
        return jax.tree.map(put, arrays, full), jax.tree.map(put, canvas, start)
    return insert


def _clear_fn() -> Callable:
    """A freed slot: no response and no steps left, so it is finished and its micro-batch can skip the model."""
    def clear(arrays, canvas, slot):
        response = arrays["response"].at[slot].set(False)
        settings = arrays["settings"]._replace(steps=arrays["settings"].steps.at[slot].set(0),
                                               kind=arrays["settings"].kind.at[slot].set(0))
        return {**arrays, "response": response, "settings": settings}, canvas._replace(
            is_masked=canvas.is_masked.at[slot].set(False))
    return clear
