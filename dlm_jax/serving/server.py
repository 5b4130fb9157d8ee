"""The OpenAI-compatible HTTP server (FastAPI + uvicorn, the surface of vLLM's `entrypoints/openai/`) over an
`Engine` stepped by one background thread.

    POST /v1/completions        {"prompt": ..., "max_tokens", "stop", "temperature", "seed", "stream", ...}
    POST /v1/chat/completions   {"messages": [...], ...}   (the chat template: protocol.chat_prompt)
    GET  /v1/models, /health, /metrics (Prometheus)

Request extensions: `strategy`, `steps`, `threshold` (the sampler's), `diffusing` (stream whole-canvas snapshots);
every response has `diffusion: {strategy, steps, tokens_per_step}`. Errors are OpenAI's
`{"error": {message, type, param, code}}` with a 4xx status naming the field; a full queue is 429 with
`Retry-After`. A client that disconnects has its request cancelled, so its slot is free at the next step.

Threads: the event loop parses requests and writes responses; `EngineLoop` owns the engine (only it calls `step`)
and hands each request's updates to the event loop (`call_soon_threadsafe`) through the request's queue.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable

from dlm_jax.errors import UserError
from dlm_jax.serving.engine import Request, Update
from dlm_jax.serving.metrics import Metrics
from dlm_jax.serving.protocol import (APIError, GenerationParams, ServeContext, TextStream, canvas_text, chunk_body,
                                      diffusion_info, parse_request, response_body, usage_chunk)

log = logging.getLogger(__name__)
Sink = Callable[[Any], None]  # receives Updates, then possibly an Exception (the engine failed)


class EngineLoop:
    """Owns an engine (`Engine` or `StaticBatcher`) on a background thread: requests arrive through `submit` /
    `cancel` from any thread, the thread admits them between steps, steps while anything is in flight and sends
    each update to its request's sink. `max_queue`: requests that may wait for a slot before 429."""

    def __init__(self, engine: Any, *, max_queue: int, metrics: Metrics | None = None):
        self.engine, self.max_queue, self.metrics = engine, max_queue, metrics
        self._inbox: queue.Queue = queue.Queue()
        self._sinks: dict[int, Sink] = {}
        self._lock = threading.Lock()
        self._inflight = 0
        self._stop = threading.Event()
        self._ids = itertools.count()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dlm_jax-engine", daemon=True)

    def start(self) -> "EngineLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def next_id(self) -> int:
        return next(self._ids)

    def submit(self, request: Request, sink: Sink) -> None:
        """Queues a checked request; `APIError` 429 when slots and queue are full, 503 when the engine failed."""
        if not self.alive:
            raise APIError(503, f"the engine stopped ({self.error!r}); restart the server", type="server_error",
                           code="engine_stopped")
        with self._lock:
            capacity = getattr(self.engine, "slots", 1) + self.max_queue
            if self._inflight >= capacity:
                raise APIError(429, f"the server is full ({self._inflight} requests in flight); retry shortly",
                               type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
            self._inflight += 1
        self._inbox.put(("submit", request, sink))

    def cancel(self, request_id: int) -> None:
        self._inbox.put(("cancel", request_id, None))

    # -- the thread ----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain(block=self.engine.idle())
            if self.engine.idle():
                continue
            try:
                updates = self.engine.step()
            except Exception as e:  # a bug or a device failure: every request in flight gets it, health says 503
                log.exception("engine step failed")
                self.error = e
                for rid in list(self._sinks):
                    self._finish(rid, e)
                return
            for u in updates:
                self._sinks.get(u.id, _drop)(u)
                if u.done:
                    self._finish(u.id)
            self._gauges()

    def _drain(self, *, block: bool) -> None:
        """Takes every queued command (waits for one when the engine is idle)."""
        while True:
            try:
                cmd = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if cmd is None:
                return
            kind, arg, sink = cmd
            if kind == "submit":
                self._sinks[arg.id] = sink
                self.engine.submit(arg)
            elif arg in self._sinks and self.engine.cancel(arg):
                self._finish(arg)
            self._gauges()

    def _finish(self, request_id: int, error: BaseException | None = None) -> None:
        sink = self._sinks.pop(request_id, None)
        if error is not None and sink is not None:
            sink(error)
        with self._lock:
            self._inflight -= 1

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.engine_state(self.engine.running, self.engine.waiting + self._inbox.qsize(),
                                      self.engine.model_calls)


def _drop(update: Update) -> None:
    del update


@dataclasses.dataclass
class ServerState:
    """What the handlers share: the request context, the engine loop, the tokenizer and the metrics."""

    ctx: ServeContext
    loop: EngineLoop
    tokenizer: Any
    eos_id: int
    mask_id: int
    metrics: Metrics
    max_body_bytes: int = 1 << 20

    def request(self, params: GenerationParams) -> Request:
        """The engine request of checked params; one-line engine checks (e.g. `ar` steps) become 400s. A
        `diffusing` stream gets every step's canvas; a settled-prefix stream the canvas after every engine call."""
        req = Request(self.loop.next_id(), params.prompt_ids, params.length, params.sampler,
                      snapshots=params.stream and params.diffusing, seed=params.seed,
                      progress=params.stream and params.streams_prefix)
        try:
            self.loop.engine.check(req)
        except UserError as e:
            raise APIError(400, str(e), param=e.field) from None
        return req

    def text_stream(self, params: GenerationParams) -> TextStream:
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
        return TextStream(decode, self.ctx.encode, self.eos_id, params.max_tokens, params.stop)

    def canvas(self, update: Update) -> str:
        return canvas_text(update.tokens, update.masked, self.tokenizer.decode, self.mask_id, self.eos_id)


async def read_json(request: Any, limit: int) -> Any:
    """The body as JSON: 413 past `limit` bytes (by Content-Length, then as read), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body has {declared} bytes; at most {limit}", code="body_too_large")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise APIError(413, f"the request body is over {limit} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e}); send a JSON object",
                       code="invalid_json") from None


async def generate(state: ServerState, request: Any, *, chat: bool) -> Any:
    """One completion request end to end: parse, submit, then a JSON body or an SSE stream."""
    from fastapi.responses import JSONResponse, StreamingResponse
    arrived = time.perf_counter()
    params = parse_request(await read_json(request, state.max_body_bytes), state.ctx, chat=chat)
    req = state.request(params)
    updates: asyncio.Queue = asyncio.Queue()
    aloop = asyncio.get_running_loop()
    state.loop.submit(req, lambda u: aloop.call_soon_threadsafe(updates.put_nowait, u))
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    reply = Reply(state, params, req, rid, int(time.time()), arrived)
    if params.stream:
        return StreamingResponse(reply.stream(updates), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return JSONResponse(await reply.whole(updates, request))


@dataclasses.dataclass
class Reply:
    """The response to one request, from its engine updates."""

    state: ServerState
    params: GenerationParams
    req: Request
    rid: str
    created: int
    arrived: float
    first_token: float | None = None

    async def whole(self, updates: asyncio.Queue, request: Any) -> dict[str, Any]:
        """Waits for the final update (cancelling the request if the client goes away) -> the response body."""
        while True:
            try:
                u = await asyncio.wait_for(updates.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    self.state.loop.cancel(self.req.id)
                    raise asyncio.CancelledError from None
                continue
            self._raise_if_error(u)
            if u.done:
                text, reason, n = self.state.text_stream(self.params).final(u.tokens)
                self._record(u, n, reason)
                return response_body(self.params, self.rid, self.state.ctx.model, self.created, text, reason, n,
                                     u.steps)

    async def stream(self, updates: asyncio.Queue) -> AsyncIterator[str]:
        """SSE chunks: (chat) the role, then settled-prefix deltas or canvas snapshots, the finish reason, the
        usage when asked, `[DONE]`. The request is cancelled when the client leaves before the end."""
        done = False
        text = self.state.text_stream(self.params)
        try:
            if self.params.chat:
                yield _sse(self._chunk("", role=True))
            while not done:
                u = await updates.get()
                if isinstance(u, BaseException):
                    yield _sse(APIError(500, f"the engine failed: {u!r}", type="server_error").body())
                    break
                for chunk in self._chunks(u, text):
                    yield _sse(chunk)
                done = u.done
            yield "data: [DONE]\n\n"
        finally:
            if not done:
                self.state.loop.cancel(self.req.id)

    def _chunks(self, u: Update, text: TextStream) -> list[dict[str, Any]]:
        p = self.params
        if not u.done:
            content = self.state.canvas(u) if p.diffusing else text.update(u.tokens, u.masked)
            if content and not p.diffusing and self.first_token is None:
                self.first_token = time.perf_counter()
            extra = {"diffusion": {"step": u.steps, "masked": int(u.masked.sum())}} if p.diffusing else None
            return [self._chunk(content, extra=extra)] if content or p.diffusing else []
        if p.diffusing:
            text = self.state.text_stream(p)  # the final snapshot is the whole text (replace semantics)
        rest, reason, n = text.final(u.tokens)
        self._record(u, n, reason)
        out = [self._chunk(rest)] if rest and not p.diffusing else []
        out.append(self._chunk(rest if p.diffusing else None, finish_reason=reason,
                               extra={"diffusion": diffusion_info(p.sampler.strategy, u.steps, n)}))
        if p.include_usage:
            out.append(usage_chunk(p, self.rid, self.state.ctx.model, self.created, n))
        return out

    def _chunk(self, content: str | None, **kw: Any) -> dict[str, Any]:
        return chunk_body(self.params, self.rid, self.state.ctx.model, self.created, content, **kw)

    def _record(self, u: Update, completion_tokens: int, reason: str) -> None:
        now = time.perf_counter()
        self.state.metrics.finished(prompt_tokens=len(self.params.prompt_ids), completion_tokens=completion_tokens,
                                    evaluations=u.steps, ttft=(self.first_token or now) - self.arrived,
                                    e2e=now - self.arrived, reason=reason)

    @staticmethod
    def _raise_if_error(u: Any) -> None:
        if isinstance(u, BaseException):
            raise APIError(500, f"the engine failed: {u!r}; see the server log", type="server_error")


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
