"""Serving: the continuous-batching engine gives every request the tokens it gets alone (and from
`Generator.generate`), request checking and streamed text as pure functions, the engine thread's admission
control, and a real server process driven by the official `openai` client."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.diffusion import SamplerConfig
from dlm_jax.errors import ConfigError
from dlm_jax.serving import APIError, EngineLoop, Request, ServeContext, Update, parse_request
from dlm_jax.serving.protocol import TextStream, canvas_text

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = [SamplerConfig(strategy="adaptive", threshold=0.5),
              SamplerConfig(steps=6, strategy="reparam-uncond-deterministic-cosine")]


@pytest.fixture(scope="module")
def generator(tiny_trained):
    from dlm_jax.inference import restore_run
    restored = restore_run(tiny_trained)
    return restored, restored.generator()


def _final(engine, updates):
    return {u.id: u for u in updates if u.done}


@pytest.mark.slow
@pytest.mark.parametrize("cfg", STRATEGIES, ids=lambda c: c.strategy)
def test_engine_request_alone_equals_mixed_batch_admitted_mid_flight(generator, cfg):
    from dlm_jax.serving import Engine
    restored, gen = generator
    enc = lambda t: list(restored.vocab.encode(t))  # noqa: E731
    prompts = [enc(t) for t in ["Das Haus ist klein.", "Wie spät ist es?", "Ich habe Hunger", "Guten Morgen"]]
    lengths = [6, 3, 7, 5]
    target = dict(id=7, prompt=prompts[0], length=lengths[0], sampler=cfg)
    alone = Engine(gen, slots=3).run([Request(**target)])[7]

    engine = Engine(gen, slots=3)
    engine.warmup([(16, 8)])
    for i in (1, 2):
        engine.submit(Request(i, prompts[i], lengths[i], cfg))
    done = _final(engine, engine.step() + engine.step())  # two requests are decoding when the target arrives
    engine.submit(Request(**target))
    engine.submit(Request(3, prompts[3], lengths[3], cfg))
    while not engine.idle():
        done.update(_final(engine, engine.step()))
    assert sorted(done) == [1, 2, 3, 7]
    mixed = done[7]
    np.testing.assert_array_equal(mixed.tokens, alone.tokens)
    np.testing.assert_array_equal(mixed.scores, alone.scores)
    assert mixed.steps == alone.steps
    ref = gen.generate([prompts[0]], [lengths[0]], cfg, jax.random.key(0), seeds=[7])
    cols = np.flatnonzero(ref["response_mask"][0])
    np.testing.assert_array_equal(alone.tokens, ref["tokens"][0, cols])
    assert alone.steps == int(ref["num_evals"][0])
    # one compile per function and bucket: the warm-up's, none while requests came and went
    assert {k[1:] for k in engine._fns} == {(16, 8, 0)}
    assert all(f._cache_size() == 1 for f in engine._fns.values())


def test_progress_reports_every_call_and_snapshots_every_step_with_the_same_tokens(generator):
    """A settled-prefix stream (`progress`) is reported after each engine call of up to `steps_per_call` steps; a
    `diffusing` stream (`snapshots`) after each step; neither changes the tokens."""
    from dlm_jax.serving import Engine
    restored, gen = generator
    prompt = list(restored.vocab.encode("Das Haus ist klein."))
    cfg = SamplerConfig(steps=6, strategy="reparam-uncond-deterministic-cosine")
    seen, final = {}, {}
    for kind, kw in (("plain", {}), ("progress", {"progress": True}), ("snapshots", {"snapshots": True})):
        engine = Engine(gen, slots=2, steps_per_call=4)
        engine.submit(Request(1, prompt, 6, cfg, **kw))
        while not engine.idle():
            for u in engine.step():
                seen.setdefault(kind, []).append(u.steps)
                final[kind] = u
    assert seen == {"plain": [6], "progress": [4, 6], "snapshots": [1, 2, 3, 4, 5, 6]}
    for kind in ("progress", "snapshots"):
        np.testing.assert_array_equal(final[kind].tokens, final["plain"].tokens)
        np.testing.assert_array_equal(final[kind].scores, final["plain"].scores)


@pytest.mark.parametrize("admission, admitted, left", [("pack", ["a1", "a2", "b1", "b2"], ["a3"]),
                                                         ("fcfs", ["a1", "a2", "a3", "b1"], ["b2"])])
def test_admission_packs_live_micro_batches_and_bounds_the_wait(generator, admission, admitted, left):
    """"pack": a request whose bucket has a free row in a computing micro-batch goes first, the queue's head at the
    latest after `max_skips` passes; rows fill the micro-batch that has live rows. "fcfs": arrival order."""
    import dataclasses
    from dlm_jax.serving import Engine
    restored, gen = generator
    enc = lambda t: list(restored.vocab.encode(t))  # noqa: E731
    engine = Engine(dataclasses.replace(gen, micro_batch=2), slots=4, admission=admission, max_skips=1)
    short, long = (enc("Das Haus"), 3), (enc("Wie spät ist es heute?"), 24)  # two length buckets
    names = {}
    for i, (name, (prompt, n)) in enumerate(zip(["a1", "b1", "a2", "a3", "b2"], [short, long, short, short, long])):
        engine.submit(Request(i, prompt, n, SamplerConfig(steps=4)))
        names[i] = name
    engine._admit()
    placed = {names[o.id]: (key, slot) for key, p in engine._pools.items() for slot, o in enumerate(p.owners) if o}
    assert sorted(placed) == admitted and [names[r.id] for r in engine._waiting] == left
    assert len({placed[n][0] for n in ("a1", "b1")}) == 2  # two buckets
    if admission == "pack":  # each bucket's two rows share micro-batch 0
        assert sorted(slot for _, slot in placed.values()) == [0, 0, 1, 1]
    from dlm_jax.errors import ConfigError
    with pytest.raises(ConfigError, match="admission"):
        Engine(gen, admission="lifo")


# -- request checking and returned text (pure) ---------------------------------------------------------------------
WORDS = ["<s>", "</s>", "<mask>", "the", "cat", "sat", "on", "mat", "END", "."]
CTX = ServeContext(model="m", max_length=16, sampler=SamplerConfig(steps=4), max_steps=32,
                   encode=lambda t: [WORDS.index(w) for w in t.split()])


@pytest.mark.parametrize("body, status, param", [
    ([1], 400, None), ({"model": "m", "prompt": ""}, 400, "prompt"), ({"model": "m", "prompt": 3}, 400, "prompt"),
    ({"model": "m"}, 400, "prompt"), ({"prompt": "the"}, 400, "model"), ({"model": None, "prompt": "the"}, 400, "model"),
    ({"model": "m", "prompt": "the", "max_token": 3}, 400, "max_token"),
    ({"model": "m", "prompt": "the", "messages": []}, 400, "messages"),
    ({"model": "m", "prompt": "the", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"model": "m", "prompt": "the", "max_tokens": 0}, 400, "max_tokens"), ({"model": "m", "prompt": "the", "max_tokens": "8"}, 400, "max_tokens"),
    ({"model": "m", "prompt": "the cat", "max_tokens": 13}, 400, "max_tokens"), ({"model": "m", "prompt": "the", "temperature": 2.5}, 400,
                                                                    "temperature"),
    ({"model": "m", "prompt": "the", "strategy": "nope"}, 400, "strategy"), ({"model": "m", "prompt": "the", "threshold": 0.5}, 400, "threshold"),
    ({"model": "m", "prompt": "the", "strategy": "adaptive", "threshold": 1.5}, 400, "threshold"),
    ({"model": "m", "prompt": "the", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"), ({"model": "m", "prompt": "the", "stop": [1]}, 400, "stop"),
    ({"model": "m", "prompt": "the", "n": 2}, 400, "n"), ({"model": "m", "prompt": "the", "logprobs": 1}, 400, "logprobs"),
    ({"model": "m", "prompt": "the", "best_of": 3}, 400, "best_of"), ({"model": "m", "prompt": "the", "top_p": 0.9}, 400, "top_p"),
    ({"model": "m", "prompt": "the", "steps": 0}, 400, "steps"), ({"model": "m", "prompt": "the", "steps": 33}, 400, "steps"),
    ({"model": "m", "prompt": "the", "strategy": "ar", "steps": 3, "max_tokens": 5}, 400, "steps"),
    ({"model": "m", "prompt": "the", "stream": "yes"}, 400, "stream"), ({"prompt": "the", "model": "other"}, 404, "model"),
    ({"model": "m", "prompt": "the", "cache": "full"}, 400, "cache"), ({"model": "m", "prompt": "the", "cache": 1}, 400, "cache"),
])
def test_bad_requests_name_the_field(body, status, param):
    with pytest.raises(APIError) as e:
        parse_request(body, CTX, chat=False)
    assert (e.value.status, e.value.param) == (status, param)
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"} and e.value.message


def test_requests_parse_into_the_engines_terms():
    p = parse_request({"model": "m", "prompt": "the cat", "max_tokens": 5, "strategy": "adaptive", "temperature": 0,
                       "stop": "mat", "stream": True, "stream_options": {"include_usage": True}}, CTX, chat=False)
    assert (p.prompt_ids, p.length, p.max_tokens, p.stop) == ([3, 4], 6, 5, ("mat",))
    assert p.sampler.strategy == "adaptive" and p.sampler.threshold == 0.9 and p.sampler.argmax
    assert p.stream and p.include_usage and p.streams_prefix and p.sampler.cache == "none"
    assert parse_request({"model": "m", "prompt": "the", "cache": "prefix"}, CTX, chat=False).sampler.cache == "prefix"
    ar = parse_request({"model": "m", "prompt": "the", "strategy": "ar", "max_tokens": 5}, CTX, chat=False)
    assert ar.sampler.steps == 6  # one step per response position unless asked
    chat = parse_request({"model": "m", "messages": [{"role": "system", "content": "the"}, {"role": "user", "content": [
        {"type": "text", "text": "cat"}]}]}, CTX, chat=True)
    assert chat.prompt_ids == [3, 4] and chat.length == 16 - 1 - 2  # no max_tokens: 16 + 1, cut to the room
    for bad in ([], [{"role": "bot", "content": "x"}], [{"role": "user", "content": 3}], [{"role": "user"}]):
        with pytest.raises(APIError, match="messages"):
            parse_request({"model": "m", "messages": bad}, CTX, chat=True)


def _stream(stops=(), max_tokens=8):
    return TextStream(lambda ids: " ".join(WORDS[i] for i in ids), CTX.encode, eos_id=1, max_tokens=max_tokens,
                      stops=stops)


def test_streamed_text_only_appends_and_never_shows_part_of_a_stop_string():
    ts, out = _stream(stops=("on mat",)), []
    canvas = [3, 4, 5, 6, 7, 1]
    for settled in range(len(canvas) + 1):  # left to right, one position per step
        out.append(ts.update(canvas, [i >= settled for i in range(len(canvas))]))
    # k settled positions show k - 1 tokens (the last may still change its spelling); "on" may begin "on mat"
    assert out == ["", "", "the", " cat", " sat", " ", ""]
    assert ts.final(canvas) == ("", "stop", 3)
    ts = _stream()
    ts.update([3, 4, 2, 9], [False, False, True, False])  # a masked hole: only the prefix before it, minus a token
    assert ts.whole() == "the"
    assert ts.final([3, 4, 5, 9]) == (" cat sat .", "length", 4)
    assert _stream(max_tokens=2).final([3, 4, 5, 1]) == ("the cat", "length", 2)
    assert canvas_text([3, 2, 1, 5], [False, True, False, False], lambda ids: " ".join(WORDS[i] for i in ids),
                       mask_id=2, eos_id=1) == "the <mask>"


# -- the engine thread ---------------------------------------------------------------------------------------------
class _SlowEngine:
    """A fake engine: each request finishes after `steps` steps; `fail` makes the next step raise."""

    slots, model_calls, fail = 2, 0, False

    def __init__(self, steps=3):
        self.steps, self.live, self.cancelled = steps, {}, []

    def check(self, r):
        pass

    def submit(self, r):
        self.live[r.id] = 0

    def cancel(self, rid):
        self.cancelled.append(rid)
        return self.live.pop(rid, None) is not None

    def idle(self):
        return not self.live

    running = property(lambda self: len(self.live))
    waiting = 0

    def step(self):
        time.sleep(0.01)
        if self.fail:
            raise RuntimeError("device lost")
        out = []
        for rid in list(self.live):
            self.live[rid] += 1
            done = self.live[rid] >= self.steps
            out.append(Update(rid, np.zeros(2, int), np.zeros(2, bool), self.live[rid], done))
            if done:
                del self.live[rid]
        return out


def _req(i):
    return Request(i, [3], 2, SamplerConfig())


def test_engine_loop_admits_up_to_capacity_cancels_and_reports_failure():
    eng = _SlowEngine(steps=10 ** 6)
    loop = EngineLoop(eng, max_queue=1).start()
    got: dict[int, list] = {0: [], 1: [], 2: []}
    for i in range(3):
        loop.submit(_req(i), got[i].append)
    with pytest.raises(APIError) as e:
        loop.submit(_req(3), lambda u: None)
    assert e.value.status == 429 and e.value.headers == {"Retry-After": "1"}
    loop.cancel(0)  # a client went away: its room is free again
    deadline = time.time() + 10
    while 0 not in eng.cancelled and time.time() < deadline:
        time.sleep(0.01)
    loop.submit(_req(4), lambda u: None)
    eng.fail = True
    while loop.alive and time.time() < deadline:
        time.sleep(0.01)
    assert not loop.alive and isinstance(got[1][-1], RuntimeError)
    with pytest.raises(APIError) as e:
        loop.submit(_req(5), lambda u: None)
    assert e.value.status == 503
    loop.stop()


def test_engine_loop_delivers_every_update_and_frees_finished_requests():
    loop = EngineLoop(_SlowEngine(steps=3), max_queue=0).start()
    got: dict[int, list] = {i: [] for i in range(6)}
    for i in range(6):  # capacity 2: each waits for room, as a client retrying after 429 would
        while True:
            try:
                loop.submit(_req(i), got[i].append)
                break
            except APIError:
                time.sleep(0.01)
    deadline = time.time() + 10
    while not all(g and g[-1].done for g in got.values()) and time.time() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert all([u.steps for u in g] == [1, 2, 3] for g in got.values())


# -- a real server -------------------------------------------------------------------------------------------------
def _post(url, body, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _start_server(workdir, *args):
    proc = subprocess.Popen([sys.executable, "-m", "dlm_jax.serve", "--workdir", str(workdir), "--port", "0",
                             "--nowarmup", "--slots", "2", "--max_body_bytes", "4096", "--max_steps", "2000", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "XLA_FLAGS": ""})
    line = ""
    while "listening on" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-3000:])
    return proc, line.split("listening on ")[1].split()[0]


@pytest.mark.slow
def test_server_speaks_openai_rejects_bad_input_and_drains_on_sigterm(tiny_trained):
    openai = pytest.importorskip("openai")
    proc, url = _start_server(tiny_trained, "--served_model_name", "tiny")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        out = client.completions.create(model="tiny", prompt="Das Haus ist klein.", max_tokens=6, seed=3)
        assert out.choices[0].finish_reason in ("stop", "length") and out.usage.prompt_tokens > 0
        assert out.model_extra["diffusion"]["steps"] == 4 and out.usage.completion_tokens <= 6
        again = client.completions.create(model="tiny", prompt="Das Haus ist klein.", max_tokens=6, seed=3)
        assert again.choices[0].text == out.choices[0].text  # same seed, same text, whatever else is running
        chunks = list(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Das Haus ist klein."}], max_tokens=6, stream=True,
            stream_options={"include_usage": True}, extra_body={"strategy": "adaptive", "threshold": 0.5}))
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.completion_tokens >= 0
        assert chunks[-2].choices[0].finish_reason in ("stop", "length")
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        whole = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Das Haus ist klein."}], max_tokens=6,
            extra_body={"strategy": "adaptive", "threshold": 0.5})
        assert whole.choices[0].message.content == streamed.strip()
        snaps = list(client.completions.create(model="tiny", prompt="Wie spät ist es?", max_tokens=4, stream=True,
                                               extra_body={"strategy": "adaptive", "diffusing": True}))
        assert "[MASK]" in snaps[0].choices[0].text and snaps[-1].choices[0].finish_reason
        _bad_inputs_then_valid(url)
        _sigterm_drains(proc, url)
    finally:
        proc.kill()
        proc.wait()


def _bad_inputs_then_valid(url):
    cases = [(b"{not json", 400), ({"model": "tiny", "prompt": ""}, 400), ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400),
             ({"model": "tiny", "prompt": "x", "max_tokens": 400}, 400), ({"model": "tiny", "prompt": "x", "temperature": 9}, 400),
             ({"model": "tiny", "prompt": "x", "strategy": "zzz"}, 400), ({"model": "tiny", "prompt": "x", "n": 3}, 400),
             ({"prompt": "x", "model": "gpt-4"}, 404), ({"model": "tiny", "prompt": "x" * 5000}, 413)]
    for body, status in cases:
        got, err, _ = _post(f"{url}/v1/completions", body)
        assert got == status and err["error"]["message"], (body, got, err)
    got, err, _ = _post(f"{url}/v1/chat/completions", {"model": "tiny", "messages": []})
    assert got == 400 and err["error"]["param"] == "messages"
    got, err, _ = _post(f"{url}/v1/nowhere", {})
    assert got == 404 and err["error"]["code"] == "not_found"
    got, ok, _ = _post(f"{url}/v1/completions", {"model": "tiny", "prompt": "Wie spät ist es?", "max_tokens": 3})
    assert got == 200 and ok["choices"][0]["text"] is not None
    # a client that leaves mid-stream frees its slot
    req = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(
        {"model": "tiny", "prompt": "Wie spät ist es?", "max_tokens": 8, "steps": 2000, "stream": True, "diffusing": True}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        r.readline()
    deadline = time.time() + 20
    while time.time() < deadline:
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        if "dlm_jax:num_requests_running 0.0" in metrics:
            break
        time.sleep(0.1)
    assert "dlm_jax:num_requests_running 0.0" in metrics and "dlm_jax:request_success_total" in metrics


def _sigterm_drains(proc, url):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=_post(f"{url}/v1/completions", {
        "model": "tiny", "prompt": "Das Haus ist klein.", "max_tokens": 8, "steps": 2000})))
    t.start()
    time.sleep(0.5)  # in flight
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result["r"][0] == 200 and result["r"][1]["diffusion"]["steps"] == 2000
    assert proc.wait(60) == 0


SERVE_FLAG_CASES = [
    (["--workdir", "/nonexistent/run", "--slots", "0"], "--slots must be at least 1"),
    (["--workdir", "/nonexistent/run", "--steps_per_call", "0"], "--steps_per_call must be at least 1"),
    (["--workdir", "/nonexistent/run", "--max_skips", "-1"], "--max_skips must be at least 0"),
    (["--workdir", "/nonexistent/run", "--admission", "lifo"], "--admission=lifo"),
    (["--workdir", "/nonexistent/run", "--length_beam", "3"], "--length_beam 3"),
    (["--workdir", "/nonexistent/run", "--port", "70000"], "--port 70000"),
    (["--workdir", "/nonexistent/run"], "/nonexistent/run"),
    (["--workdir", "/nonexistent/run", "--pretrained", "m.gguf"], "exactly one of --workdir"),
    (["--pretrained", "/nonexistent/m.gguf", "--port", "0", "--batching", "static", "--max_skips", "1"],
     "--batching, --max_skips do not apply to --pretrained"),
    (["--pretrained", "/nonexistent/m.gguf", "--port", "0"], "/nonexistent/m.gguf does not exist"),
]


def test_serve_flags_fail_in_one_line():
    """Every SERVE_FLAG_CASES command line (run by `python -m dlm_jax.serve`'s code in one interpreter): exit 2 and
    one `error:` line naming the flag; a failure lists every failing case."""
    from conftest import run_cli_cases
    results = run_cli_cases("dlm_jax.serve", [args for args, _ in SERVE_FLAG_CASES])
    failures = []
    for (args, message), r in zip(SERVE_FLAG_CASES, results):
        lines = [line for line in r["stderr"].splitlines() if line.strip()]
        if not (r["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]):
            failures.append(f"{args} -> rc {r['rc']}, wanted {message!r}: {r['stderr'][-800:]}")
    assert not failures, "\n".join(failures)


def test_a_prompt_that_fills_the_model_names_the_prompt_and_no_invalid_max_tokens():
    for extra in ({"max_tokens": 1}, {}):  # the room left is one position: the response's </s> alone
        with pytest.raises(APIError) as e:
            parse_request({"model": "m", "prompt": "the " * 14, **extra}, CTX, chat=False)
        assert e.value.param == "prompt" and "shorten it" in e.value.message and "max_tokens=0" not in e.value.message
    with pytest.raises(APIError) as e:  # room for some response: the most max_tokens that fits, at least 1
        parse_request({"model": "m", "prompt": "the " * 10, "max_tokens": 9}, CTX, chat=False)
    assert e.value.param == "max_tokens" and "at most max_tokens=4" in e.value.message


def test_one_check_of_sampler_settings_reports_its_field_everywhere():
    """`SamplerConfig` and `check_sampler` are the one check: what they refuse, the server refuses with a 400 whose
    param is their field and whose message is theirs (no second copy of a rule in the protocol)."""
    from dlm_jax.diffusion.sampler import check_sampler
    from dlm_jax.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        check_sampler(SamplerConfig(strategy="ar", steps=2), np.asarray([5]))
    assert e.value.field == "steps"
    with pytest.raises(ConfigError, match="max_steps=32") as e:
        check_sampler(SamplerConfig(steps=33), [3], max_steps=32)
    assert e.value.field == "steps"
    check_sampler(SamplerConfig(steps=33, strategy="adaptive", threshold=0.5), [3], max_steps=32)  # S is a cap
    for kwargs, field in (({"strategy": "nope"}, "strategy"), ({"steps": 0}, "steps"), ({"temperature": 0.0},
                          "temperature"), ({"threshold": 0.5}, "threshold"), ({"strategy": "adaptive"}, "threshold")):
        with pytest.raises(ConfigError) as e:
            SamplerConfig(**kwargs)
        assert e.value.field == field, kwargs
    for body, rule in (({"steps": 40}, lambda: check_sampler(SamplerConfig(steps=40), [2], max_steps=32)),
                       ({"strategy": "ar", "steps": 3, "max_tokens": 5},
                        lambda: check_sampler(SamplerConfig(strategy="ar", steps=3), [6])),
                       ({"threshold": 0.5}, lambda: SamplerConfig(steps=4, threshold=0.5))):
        with pytest.raises(ConfigError) as want:
            rule()
        with pytest.raises(APIError) as got:
            parse_request({"model": "m", "prompt": "the", **body}, CTX, chat=False)
        assert (got.value.param, got.value.message) == (want.value.field, str(want.value))


def test_an_ar_run_is_served_up_to_max_tokens_and_refuses_diffusion_fields():
    """An AR run (the generator has `decoding`): each batch decodes with the run's beam / greedy settings and the
    requests' own limit (max_tokens + </s>); requests of other lengths wait for their own batch; the diffusion
    fields (and under beam search a sampling temperature) are 400s and a request reports the `ar` decoding that runs;
    a greedy AR model samples at a request's temperature with its seed."""
    import dataclasses as dc
    from dlm_jax.diffusion import DecodeConfig, SamplerConfig
    from dlm_jax.serving import Request, StaticBatcher
    from dlm_jax.serving.protocol import APIError, ServeContext, parse_request

    class FakeAR:  # records the decoding each batch ran with; answers ids 10, 11, ... then </s> at the limit
        decoding, max_length, eos_id, micro_batch = DecodeConfig(beam_size=5, max_len_b=200), 64, 2, 8
        calls: list = []

        def row_positions(self, prompt):
            return 1 + len(prompt)

        def generate_ar(self, prompts, config, *, batch_size, rng=None, seeds=None):
            self.calls.append((len(prompts), config, list(seeds)))
            n, width = config.max_len_b, 1 + max(map(len, prompts)) + config.max_len_b
            tokens, resp = np.zeros((len(prompts), width), np.int64), np.zeros((len(prompts), width), bool)
            for i, p in enumerate(prompts):
                tokens[i, 1 + len(p):1 + len(p) + n] = [*range(10, 10 + n - 1), 2]
                resp[i, 1 + len(p):1 + len(p) + n] = True
            return dict(tokens=tokens, response_mask=resp, scores=np.zeros(tokens.shape, np.float32),
                        num_evals=np.full(len(prompts), n, np.int32))

    gen = FakeAR()
    batcher = StaticBatcher(gen, slots=4, max_steps=256)
    ar = lambda n: SamplerConfig(steps=n, strategy="ar")  # noqa: E731  what parse_request gives an AR context
    for i, length in enumerate([4, 6, 4]):
        batcher.submit(Request(i, [5, 6, 7], length, ar(length)))
    first, second = batcher.step(), batcher.step()
    assert [u.id for u in first] == [0, 2] and [u.id for u in second] == [1]
    assert [c for _, c, _ in gen.calls] == [dc.replace(FakeAR.decoding, max_len_a=0.0, max_len_b=n) for n in (4, 6)]
    assert first[0].tokens.tolist() == [10, 11, 12, 2] and second[0].tokens.tolist() == [10, 11, 12, 13, 14, 2]
    ctx = ServeContext(model="m", max_length=64, sampler=SamplerConfig(), max_steps=256, encode=lambda t: [5, 6],
                       autoregressive=True)
    params = parse_request({"model": "m", "prompt": "x", "max_tokens": 3, "seed": 1}, ctx, chat=False)
    assert params.length == 4 and params.sampler.strategy == "ar"
    for extra, field in (({"steps": 4}, "steps"), ({"strategy": "cmlm"}, "strategy"), ({"diffusing": True},
                                                                                       "diffusing"),
                         ({"temperature": 0.5}, "temperature")):
        with pytest.raises(APIError) as e:
            parse_request({"model": "m", "prompt": "x", **extra}, ctx, chat=False)
        assert e.value.status == 400 and e.value.param == field
    # a greedy AR model (beam size 1) samples at a request's temperature, keyed by its seed (or id)
    greedy = dc.replace(ctx, ar_sampling=True)
    hot = parse_request({"model": "m", "prompt": "x", "max_tokens": 3, "temperature": 0.5, "seed": 9}, greedy,
                        chat=False).sampler
    assert (hot.strategy, hot.argmax, hot.temperature) == ("ar", False, 0.5)
    with pytest.raises(APIError) as e:
        parse_request({"model": "m", "prompt": "x", "temperature": 2.5}, greedy, chat=False)
    assert e.value.param == "temperature"
    gen.decoding, gen.calls = DecodeConfig(beam_size=1, max_len_b=200), []
    batcher.submit(Request(7, [5, 6], 4, hot, seed=9))
    batcher.submit(Request(8, [5, 6], 4, ar(4)))  # the argmax: another batch
    batcher.step(), batcher.step()
    assert [(c.temperature, sd) for _, c, sd in gen.calls] == [(0.5, [9]), (0.0, [8])]


@pytest.mark.parametrize("name", ["tiny-test", "transformer-tiny-test"])
def test_ar_engine_slots_decode_what_generate_ar_decodes_admitted_mid_flight(name):
    """Continuous batching of an AR run (random init; decoder-only causal and the encoder-decoder): requests of
    different prompts, limits and temperatures, more than the slots, admitted as slots free up, each give
    `Generator.generate_ar`'s tokens for that request alone (greedy and sampled with its seed)."""
    from dlm_jax.diffusion import DecodeConfig
    from dlm_jax.inference import Generator
    from dlm_jax.model import get_config, model_for
    from dlm_jax.serving.ar_engine import ArEngine
    from dlm_jax.serving.engine import ar_decoding
    cfg = get_config(name, vocab_size=40, causal=True, max_positions=32)
    model = model_for(cfg)
    params = model.init(jax.random.key(0), jnp.ones((1, 32), jnp.int32))["params"]
    gen = Generator(model, params, bos_id=0, eos_id=2, pad_id=1, mask_id=-1, max_length=32,
                    decoding=DecodeConfig(beam_size=1), prompt_separator=name.startswith("transformer"))
    engine = ArEngine(gen, slots=2, steps_per_call=3, seed=7)
    assert engine.warmup() == 1 and engine.idle()
    reqs = [Request(i, [5 + i, 9, 11 + 2 * i][:1 + i % 3], n, SamplerConfig(steps=n, strategy="ar", argmax=i % 2 == 0,
                                                                         temperature=1.5))
            for i, n in enumerate([4, 9, 6, 3, 12])]
    got = engine.run(reqs)
    assert engine.idle() and engine.model_calls > 3
    for r in reqs:
        want = gen.generate_ar([r.prompt], ar_decoding(gen.decoding, r.sampler, r.length), rng=jax.random.key(7),
                               seeds=[r.id])
        ids = want["tokens"][0][want["response_mask"][0]]
        assert got[r.id].tokens.tolist() == ids.tolist(), r
        assert 1 <= len(ids) <= r.length
    # the static path compiles per response bucket, not per max_tokens (its limits are per-row inputs)
    gen._jitted.clear()
    for n in (3, 5, 7):
        gen.generate_ar([[5, 9]], DecodeConfig(beam_size=1, max_len_b=n))
    assert len(gen._jitted) == 1
    with pytest.raises(ConfigError, match="beam_size 1"):
        ArEngine(dataclasses.replace(gen, decoding=DecodeConfig(beam_size=2)))
