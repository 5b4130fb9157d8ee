"""The OpenAI-compatible request and response shapes, as pure functions: a request body checked field by field into
`GenerationParams` (every problem one `APIError` naming the field), the chat template, and the text a response
returns and streams (cut at `</s>` and at stop strings, the settled left-to-right prefix streamed append-only).

The chat template (documented in the README): the messages' text contents, in order (system / developer first as
given), joined by a blank line; the model reads that as one instruction, as the Flan prompts it was tuned on.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from dlm_jax.diffusion import SamplerConfig
from dlm_jax.diffusion.sampler import check_sampler
from dlm_jax.errors import UserError
from dlm_jax.model import family_of

MAX_STOP = 4  # OpenAI's limit on stop strings
ROLES = ("system", "developer", "user", "assistant")
NEVER_REMASK = ("adaptive", "cmlm", "ar")  # strategies whose committed tokens are final: their prefix can stream
# Every field a body may carry: OpenAI's (completions and chat; those in UNSUPPORTED only at their neutral value) and
# dlm_jax's extensions (strategy, steps, threshold, cache, diffusing). Any other field is a 400 naming it.
COMMON_FIELDS = frozenset({"model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
                           "stream_options", "stop", "seed", "user", "presence_penalty", "frequency_penalty",
                           "strategy", "steps", "threshold", "cache", "diffusing"})
CHAT_FIELDS = frozenset({"messages", "top_logprobs", "tools", "functions", "response_format", "logit_bias",
                         "logprobs"})
COMPLETION_FIELDS = frozenset({"prompt", "logprobs", "best_of", "echo", "suffix", "logit_bias"})
UNSUPPORTED = {"logprobs": None, "top_logprobs": None, "best_of": 1, "echo": False, "suffix": None, "tools": None,
               "functions": None, "logit_bias": None, "response_format": None, "presence_penalty": 0,
               "frequency_penalty": 0}


class APIError(Exception):
    """An error response: HTTP `status` and OpenAI's `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class ServeContext:
    """What request checking needs to know of the model being served."""

    model: str
    max_length: int  # positions of a row (<s>, prompt, response)
    sampler: SamplerConfig  # the run's; requests override strategy, steps, threshold, temperature
    max_steps: int
    encode: Callable[[str], list[int]]
    separator: int = 0  # 1 for an encoder-decoder (the prompt's </s>)
    predict_length: Callable[[list[int]], int] | None = None  # the run's length predictor, when loaded
    default_max_tokens: int = 16
    # an AR run or a pretrained decoder LLM: decoded left to right (greedy or the run's beam), so the diffusion
    # fields are refused and responses report strategy "ar"
    autoregressive: bool = False
    # such a model decoding greedily (beam size 1): a request's temperature samples (seeded as diffusion's);
    # under beam search a temperature is refused
    ar_sampling: bool = False
    # a pretrained decoder LLM served as it is (`serve --pretrained`): chat messages -> its chat template's ids
    chat_ids: Callable[[list[dict[str, str]]], list[int]] | None = None


def context_for(restored: Any, generator: Any, *, model: str, max_steps: int, default_max_tokens: int = 16,
                sampler: SamplerConfig | None = None) -> ServeContext:
    """The request context of a restored run (`inference.RestoredRun`) served through `generator`: its vocabulary's
    encoder, row length, sampler (default: the run's), the encoder-decoder separator and the length predictor when
    the run has one loaded. The server and `bench/serve.py --in_process` both build theirs here."""
    predict = None
    if restored.length_model is not None:
        predict = lambda ids: int(generator.predict_lengths([ids], 1)[0, 0])  # noqa: E731
    return ServeContext(model=model, max_length=restored.max_length, sampler=sampler or restored.run.sampler,
                        max_steps=max_steps, encode=lambda t: list(restored.vocab.encode(t)),
                        separator=int(family_of(restored.model.cfg).prompt_separator), predict_length=predict,
                        default_max_tokens=default_max_tokens, autoregressive=generator.decoding is not None,
                        ar_sampling=generator.decoding is not None and generator.decoding.beam_size == 1)


@dataclasses.dataclass(frozen=True)
class GenerationParams:
    """A checked request: prompt ids, the response canvas length (incl. `</s>`), sampler, stop strings, streaming."""

    chat: bool
    prompt_ids: list[int]
    length: int
    max_tokens: int
    sampler: SamplerConfig
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    diffusing: bool = False
    seed: int | None = None

    @property
    def streams_prefix(self) -> bool:
        """Settled text can stream as it is decided (the strategy never takes a committed token back)."""
        return self.sampler.kind in NEVER_REMASK


def _bad(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _typed(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    """body[name] when present and of one of `kinds` (bool never counts as a number), else `default`."""
    if name not in body or body[name] is None:
        return default
    v = body[name]
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise _bad(f"'{name}' must be {want}, got {type(v).__name__}", name)
    return v


def _check_unsupported(body: dict[str, Any]) -> None:
    n = _typed(body, "n", (int,), 1)
    if n != 1:
        raise _bad(f"n={n} is not supported: one choice per request (send {n} requests)", "n", "unsupported")
    for name, neutral in UNSUPPORTED.items():
        v = body.get(name)
        if v is not None and v != neutral and v is not False:
            raise _bad(f"'{name}' is not supported by dlm_jax's server", name, "unsupported")
    top_p = _typed(body, "top_p", (int, float), 1.0)
    if top_p != 1:
        raise _bad(f"top_p={top_p} is not supported (diffusion sampling uses temperature); omit it or send 1",
                   "top_p", "unsupported")


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _bad("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    if len(stops) > MAX_STOP:
        raise _bad(f"'stop' has {len(stops)} strings; at most {MAX_STOP}", "stop")
    return tuple(stops)


def _sampler(body: dict[str, Any], ctx: ServeContext, length: int) -> SamplerConfig:
    """The run's sampler with the request's strategy, steps, threshold, cache and temperature (0: argmax); `ar`
    defaults to one step per response position. Checked where every sampler is (`SamplerConfig`,
    `check_sampler` with the server's --max_steps): a 400 naming the setting at fault."""
    base = ctx.sampler
    strategy = _typed(body, "strategy", (str,), base.strategy)
    response = length - int(base.fixed_eos)
    steps = _typed(body, "steps", (int,), response if strategy == "ar" else base.steps)
    threshold = _typed(body, "threshold", (int, float), base.threshold if strategy == "adaptive" else None)
    if strategy == "adaptive" and threshold is None:
        threshold = 0.9
    temperature = _temperature(body)
    argmax = base.argmax if temperature is None else temperature == 0
    temp = base.temperature if not temperature else float(temperature)
    cache = _typed(body, "cache", (str,), base.cache)
    try:
        config = SamplerConfig(steps=steps, strategy=strategy, argmax=argmax, temperature=temp,
                               threshold=None if threshold is None else float(threshold), fixed_eos=base.fixed_eos,
                               cache=cache)
        check_sampler(config, [response], max_steps=ctx.max_steps)
    except UserError as e:
        raise _bad(str(e), e.field) from None
    return config


def _length(body: dict[str, Any], ctx: ServeContext, prompt_ids: list[int]) -> tuple[int, int]:
    """(canvas length incl. </s>, max_tokens): `max_tokens` + 1, or the run's length predictor, or the default."""
    max_tokens = _typed(body, "max_completion_tokens", (int,), None)
    max_tokens = _typed(body, "max_tokens", (int,), max_tokens)
    if max_tokens is not None and max_tokens < 1:
        raise _bad(f"max_tokens={max_tokens} must be at least 1", "max_tokens")
    room = ctx.max_length - 1 - ctx.separator - len(prompt_ids)
    if max_tokens is None:
        length = ctx.predict_length(prompt_ids) if ctx.predict_length else ctx.default_max_tokens + 1
        length = max(2, min(length, room))
        if room < 2:
            raise _bad(f"the prompt has {len(prompt_ids)} tokens and leaves no room for a response in the model's "
                       f"{ctx.max_length} positions; shorten it", "prompt", "context_length_exceeded")
        return length, length - 1
    if room < 2:
        raise _bad(f"the prompt has {len(prompt_ids)} tokens and leaves no room for a response in the model's "
                   f"{ctx.max_length} positions; shorten it", "prompt", "context_length_exceeded")
    if max_tokens + 1 > room:
        raise _bad(f"the prompt ({len(prompt_ids)} tokens) and max_tokens={max_tokens} (+1 for </s>) exceed the "
                   f"model's {ctx.max_length} positions; at most max_tokens={max(room - 1, 0)} for this prompt",
                   "max_tokens", "context_length_exceeded")
    return max_tokens + 1, max_tokens


def chat_prompt(messages: Any) -> str:
    """The chat template (module docstring): text contents joined by blank lines."""
    text = "\n\n".join(m["content"] for m in chat_messages(messages) if m["content"].strip())
    if not text.strip():
        raise _bad("the messages hold no text", "messages")
    return text


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """The messages checked, as [{"role", "content"}] with text contents (content parts joined)."""
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list of {role, content} objects", "messages")
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}] needs a 'role' of {', '.join(ROLES)}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _bad(f"messages[{i}].content parts must be text parts", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string", f"messages[{i}].content")
        parts.append({"role": m["role"], "content": content})
    return parts


def parse_request(body: Any, ctx: ServeContext, *, chat: bool) -> GenerationParams:
    """A `/v1/completions` (chat=False) or `/v1/chat/completions` body -> GenerationParams, or `APIError`."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", None)
    known = COMMON_FIELDS | (CHAT_FIELDS if chat else COMPLETION_FIELDS)
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"unrecognized request argument {unknown[0]!r}"
                   + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                   + f"; this route takes {', '.join(sorted(known))}", unknown[0], "unknown_parameter")
    if body.get("model") is None:
        raise _bad(f"you must provide a model parameter ('model': {ctx.model!r})", "model", "missing_required_parameter")
    model = _typed(body, "model", (str,), ctx.model)
    if model != ctx.model:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {ctx.model!r}",
                       param="model", code="model_not_found")
    _check_unsupported(body)
    if ctx.autoregressive:
        _check_autoregressive(body, ctx)
    if chat and ctx.chat_ids is not None:
        text = None
    elif chat:
        text = chat_prompt(body.get("messages"))
    else:
        text = body.get("prompt")
        if isinstance(text, list) and len(text) == 1 and isinstance(text[0], str):
            text = text[0]
        if not isinstance(text, str) or not text.strip():
            raise _bad("'prompt' must be a non-empty string (one prompt per request)", "prompt")
    ids = list(ctx.encode(text)) if text is not None else ctx.chat_ids(chat_messages(body.get("messages")))
    length, max_tokens = _length(body, ctx, ids)
    options = _typed(body, "stream_options", (dict,), {})
    seed = _typed(body, "seed", (int,), None)
    if seed is not None and not 0 <= seed < 2 ** 31:
        raise _bad(f"seed={seed} must be in [0, 2**31)", "seed")
    sampler = _ar_sampler(body, length) if ctx.autoregressive else _sampler(body, ctx, length)
    return GenerationParams(chat, ids, length, max_tokens, sampler, _stop(body),
                            bool(_typed(body, "stream", (bool,), False)),
                            bool(options.get("include_usage", False)),
                            bool(_typed(body, "diffusing", (bool,), False)), seed)


def _check_autoregressive(body: dict[str, Any], ctx: ServeContext) -> None:
    """An AR model decodes left to right: the diffusion fields are 400s; a sampling temperature is one too under
    beam search (`ctx.ar_sampling` False). Greedy decoding draws no random numbers, so a seed changes nothing."""
    for name in ("strategy", "steps", "threshold", "cache", "diffusing"):
        if name in body:
            raise _bad(f"{name!r} is a diffusion setting; this server decodes an autoregressive model left to right: "
                       f"drop {name!r}", name, "unsupported_parameter")
    if body.get("temperature") not in (None, 0) and not ctx.ar_sampling:
        raise _bad(f"temperature={body['temperature']}: this server decodes an autoregressive model with beam "
                   "search, without sampling; send temperature 0 or omit it", "temperature", "unsupported_parameter")


def _ar_sampler(body: dict[str, Any], length: int) -> SamplerConfig:
    """Left to right, one token per step: the argmax, or sampled at the request's temperature in (0, 2]."""
    temperature = _temperature(body)
    return SamplerConfig(steps=length, strategy="ar", argmax=not temperature, temperature=float(temperature or 1.0))


def _temperature(body: dict[str, Any]) -> float | None:
    """The request's `temperature` (None when absent), a 400 outside [0, 2]."""
    temperature = _typed(body, "temperature", (int, float), None)
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise _bad(f"temperature={temperature} must be in [0, 2]", "temperature")
    return temperature


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` that may be the start of a stop string (or of an unfinished character)."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                n = max(n, k)
                break
    return max(n, len(text) - len(text.rstrip("\ufffd")))


@dataclasses.dataclass
class TextStream:
    """The returned text of one request, built from its response canvas (ids; `masked` where still masked).

    `update(ids, masked)` returns the newly settled text: the left-to-right prefix of committed tokens up to the
    first masked one (and up to `</s>`), minus its last token and anything that could begin a stop string, so the
    deltas only append and never show part of a stop string. `final(ids)` returns the rest and the finish reason.
    """

    decode: Callable[[list[int]], str]
    encode: Callable[[str], list[int]]
    eos_id: int
    max_tokens: int
    stops: tuple[str, ...] = ()
    emitted: str = ""

    def _text(self, ids: Sequence[int]) -> tuple[str, bool, int]:
        ids = [int(i) for i in ids]
        end = ids.index(self.eos_id) if self.eos_id in ids else len(ids)
        ended = end <= self.max_tokens and end < len(ids)  # a </s> inside max_tokens: "stop"
        ids = ids[:min(end, self.max_tokens)]
        text, stopped = _cut_at_stop(self.decode(ids), self.stops)
        return text, ended or stopped, (len(self.encode(text)) if stopped else len(ids))

    def update(self, ids: Sequence[int], masked: Sequence[bool]) -> str:
        first = next((i for i, m in enumerate(masked) if m), len(ids))
        text, ended, _ = self._text(ids[:max(first - 1, 0)] if first < len(ids) else ids[:max(len(ids) - 1, 0)])
        if not ended:
            text = text[:len(text) - _held_back(text, self.stops)]
        return self._emit(text)

    def final(self, ids: Sequence[int]) -> tuple[str, str, int]:
        """(the text not yet emitted, finish_reason "stop" | "length", completion tokens of the whole text)."""
        text, ended, n = self._text(ids)
        return self._emit(text), "stop" if ended else "length", n

    def _emit(self, text: str) -> str:
        if not text.startswith(self.emitted) or len(text) <= len(self.emitted):
            return ""
        delta, self.emitted = text[len(self.emitted):], text
        return delta

    def whole(self) -> str:
        return self.emitted


def canvas_text(ids: Sequence[int], masked: Sequence[bool], decode_with_specials: Callable[[list[int]], str],
                mask_id: int, eos_id: int) -> str:
    """A canvas snapshot for `diffusing` streams: committed tokens and the mask token where still masked, up to
    a committed `</s>`."""
    out = []
    for tok, m in zip(ids, masked):
        if not m and int(tok) == eos_id:
            break
        out.append(mask_id if m else int(tok))
    return decode_with_specials(out)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def diffusion_info(strategy: str, steps: int, completion_tokens: int) -> dict[str, Any]:
    """The `diffusion` block of every response: the strategy, its model evaluations and tokens per evaluation."""
    return {"strategy": strategy, "steps": steps,
            "tokens_per_step": round(completion_tokens / steps, 4) if steps else 0.0}


def _choice(chat: bool, content: str | None, finish_reason: str | None, *, delta: bool, role: bool = False
            ) -> dict[str, Any]:
    if not chat:
        return {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish_reason}
    if not delta:
        return {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                "finish_reason": finish_reason}
    part: dict[str, Any] = {"role": "assistant"} if role else {}
    if content is not None:
        part["content"] = content
    return {"index": 0, "delta": part, "logprobs": None, "finish_reason": finish_reason}


def response_body(params: GenerationParams, rid: str, model: str, created: int, text: str, finish_reason: str,
                  completion_tokens: int, steps: int) -> dict[str, Any]:
    """A whole (non-streamed) completion or chat completion."""
    return {"id": rid, "object": "chat.completion" if params.chat else "text_completion", "created": created,
            "model": model, "choices": [_choice(params.chat, text, finish_reason, delta=False)],
            "usage": usage(len(params.prompt_ids), completion_tokens),
            "diffusion": diffusion_info(params.sampler.strategy, steps, completion_tokens)}


def chunk_body(params: GenerationParams, rid: str, model: str, created: int, content: str | None = None, *,
               finish_reason: str | None = None, role: bool = False, extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """One streamed chunk: `content` appended (or, in `diffusing` streams, the whole canvas: replace semantics)."""
    out = {"id": rid, "object": "chat.completion.chunk" if params.chat else "text_completion", "created": created,
           "model": model, "choices": [_choice(params.chat, content, finish_reason, delta=True, role=role)]}
    return {**out, **(extra or {})}


def usage_chunk(params: GenerationParams, rid: str, model: str, created: int, completion_tokens: int
                ) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk" if params.chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage(len(params.prompt_ids), completion_tokens)}
