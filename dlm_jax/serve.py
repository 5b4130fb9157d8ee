"""Entry point: python -m dlm_jax.serve --workdir DIR [--port 8000] [--slots 8] [--mesh data=1,fsdp=4,tensor=2]
   [--batching continuous|static] [--config.sampler.strategy=adaptive --config.sampler.threshold=0.9 ...]
             python -m dlm_jax.serve --pretrained (DIR | FILE.gguf | smollm2-135m-instruct) [--port 8000]

`--pretrained` serves a decoder LLM as it is: chat messages through its own chat template, greedy KV-cache decoding
of up to `max_tokens` tokens (sampled at a request's `temperature` with its `seed`), requests batched statically
(`serving.ChatBatcher`); the diffusion fields are 400s.

A run trained with the AR objective decodes with its KV cache: greedy / sampled runs (`decoding.beam_size` 1) by
continuous batching over slots, each request prefilled once at admission (`serving.ArEngine`); beam-search runs
batch statically (a temperature is then a 400).

An OpenAI-compatible server (dlm_jax/serving/server.py) over a trained run: restore (params only, into `--mesh`)
-> a continuous-batching `Engine` with `--slots` rows -> compile every length bucket (`--warmup`) -> serve on
HOST:PORT (`--port 0` picks a free port; the line `listening on http://HOST:PORT` says which). The run's sampler
(its config with `--config.sampler.*` applied) is every request's default; requests may set `strategy`, `steps`,
`threshold`, `temperature`, `seed`. SIGTERM (or Ctrl-C) stops accepting, finishes the requests in flight (up to
`--drain_seconds`) and exits 0.
"""
from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import Any

from absl import flags

from dlm_jax import cli
from dlm_jax.errors import ConfigError
from dlm_jax.rundir import RunDir

cli.define_inference_flags(pretrained=True)
flags.adopt_module_key_flags(cli)  # --helpshort lists --config and --workdir, defined in cli
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8000, "Port; 0 picks a free one (printed).")
flags.DEFINE_integer("slots", 8, "Requests decoding at once (the engine's rows).")
flags.DEFINE_integer("max_queue", 64, "Requests that may wait for a slot; more get 429 with Retry-After.")
flags.DEFINE_integer("max_steps", 256, "The most denoising steps a request may ask for (fixed-step strategies).")
flags.DEFINE_integer("max_body_bytes", 1 << 20, "Larger request bodies get 413.")
flags.DEFINE_integer("default_max_tokens", 16, "Response tokens when a request gives no max_tokens and the run has "
                     "no length predictor (--length_workdir).")
flags.DEFINE_enum("batching", "continuous", ["continuous", "static"], "continuous: a finished row's slot takes a "
                  "waiting request at the next step; static: batches through Generator.generate (for comparison).")
flags.DEFINE_integer("steps_per_call", 8, "Denoising steps per engine call while no row finishes (a call ends at "
                     "the step where a row finishes, so its slot is refilled at once; 1 while a diffusing stream runs).")
flags.DEFINE_enum("admission", "pack", ["pack", "fcfs"], "Which waiting request takes a free slot: pack: the oldest "
                  "whose length bucket has a free row in a micro-batch already computing (few pools run), else the "
                  "oldest; fcfs: always the oldest.")
flags.DEFINE_integer("max_skips", None, "With --admission pack, the most admissions that may pass over the request "
                     "at the queue's head (default: --slots).")
flags.DEFINE_bool("warmup", True, "Compile every length bucket before listening (no compiles while serving).")
flags.DEFINE_integer("seed", 0, "Sampling seed: a request's key is fold_in(seed, its seed or its id).")
flags.DEFINE_string("served_model_name", None, "The model name clients send (default: the workdir's name).")
flags.DEFINE_float("drain_seconds", 60.0, "On SIGTERM, how long requests in flight may take to finish.")
FLAGS = flags.FLAGS


def _check_serving_installed() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"serving needs {e.name}: pip install -e '.[serve]'") from None


def _check_flags() -> None:
    for name in ("slots", "max_steps", "max_body_bytes", "default_max_tokens", "steps_per_call"):
        if FLAGS[name].value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {FLAGS[name].value}")
    if FLAGS.max_skips is not None and FLAGS.max_skips < 0:
        raise ConfigError(f"--max_skips must be at least 0, got {FLAGS.max_skips}")
    if FLAGS.max_queue < 0 or not 0 <= FLAGS.port < 65536:
        raise ConfigError(f"--max_queue {FLAGS.max_queue} must be >= 0 and --port {FLAGS.port} in 0..65535")
    if FLAGS.length_beam not in (None, 1):
        raise ConfigError(f"--length_beam {FLAGS.length_beam}: the server decodes the length predictor's most "
                          "likely length; pass --length_beam 1 with --length_workdir (or give max_tokens)")


def build_state(restored: Any) -> Any:
    """The server's state for a restored run: engine (continuous or static), its loop, the request context."""
    from pathlib import Path

    from dlm_jax.serving import ArEngine, Engine, EngineLoop, Metrics, ServerState, StaticBatcher, context_for
    from dlm_jax.serving.engine import check_servable
    gen = restored.generator()
    sampler, ar = restored.run.sampler, gen.decoding is not None
    check_servable(sampler)
    static = FLAGS.batching == "static" or (ar and gen.decoding.beam_size > 1)
    if ar:
        logging.info("an AR run (objective 'ar'): KV-cache decoding, %s", "batched statically (beam search)"
                     if static else "continuous batching over slots (prefilled at admission)")
    max_steps = max(FLAGS.max_steps, sampler.steps, restored.max_length)  # `ar`: a step per position
    kw = {} if static else {"steps_per_call": FLAGS.steps_per_call} if ar else {
        "steps_per_call": FLAGS.steps_per_call, "admission": FLAGS.admission, "max_skips": FLAGS.max_skips}
    kind = StaticBatcher if static else ArEngine if ar else Engine
    engine = kind(gen, slots=FLAGS.slots, max_steps=max_steps, seed=FLAGS.seed, **kw)
    ctx = context_for(restored, gen, model=FLAGS.served_model_name or Path(FLAGS.workdir).resolve().name,
                      max_steps=max_steps, default_max_tokens=FLAGS.default_max_tokens, sampler=sampler)
    metrics = Metrics(FLAGS.slots)
    loop = EngineLoop(engine, max_queue=FLAGS.max_queue, metrics=metrics)
    return ServerState(ctx, loop, restored.vocab.tokenizer, restored.vocab.eos_id, gen.mask_id, metrics,
                       max_body_bytes=FLAGS.max_body_bytes)


def build_pretrained_state(restored: Any) -> Any:
    """The server's state for a pretrained decoder LLM (`restore_pretrained`): `ChatBatcher` over a `ChatModel`,
    chat messages through the model's template."""
    from pathlib import Path

    from dlm_jax.inference.chat import ChatModel, chat_ids, prompt_ids
    from dlm_jax.serving import EngineLoop, Metrics, ServerState
    from dlm_jax.serving.engine import ChatBatcher
    from dlm_jax.serving.protocol import ServeContext
    chat, tok = ChatModel(restored), restored.vocab.tokenizer
    ctx = ServeContext(model=FLAGS.served_model_name or Path(FLAGS.pretrained).name.removesuffix(".gguf"),
                       max_length=chat.max_length, sampler=restored.run.sampler, max_steps=FLAGS.max_steps,
                       encode=lambda t: prompt_ids(tok, t),
                       default_max_tokens=FLAGS.default_max_tokens, autoregressive=True,
                       ar_sampling=chat.decoding.beam_size == 1,
                       chat_ids=lambda m: chat_ids(tok, m))
    metrics = Metrics(FLAGS.slots)
    loop = EngineLoop(ChatBatcher(chat, slots=FLAGS.slots), max_queue=FLAGS.max_queue, metrics=metrics)
    return ServerState(ctx, loop, tok, chat.eos_id, -1, metrics, max_body_bytes=FLAGS.max_body_bytes)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in FLAGS.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((FLAGS.host, FLAGS.port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {FLAGS.host}:{FLAGS.port} ({e.strerror}); pick another --port "
                          "(0: any free one)") from None
    sock.listen(512)
    return sock


def main(argv: list[str]) -> int:
    del argv
    cli.quiet_logs()
    _check_flags()
    _check_serving_installed()
    if FLAGS.pretrained is None:
        RunDir(FLAGS.workdir).require()
    sock = _listen()  # a taken port fails before the restore and the compiles
    state = (build_pretrained_state(cli.restore_pretrained_from_flags(
        ("length_beam", "batching", "steps_per_call", "admission", "max_skips", "max_steps"),
        "a decoder LLM decoded left to right, batched statically")) if FLAGS.pretrained is not None
             else build_state(cli.restore_from_flags()))
    if FLAGS.warmup and hasattr(state.loop.engine, "warmup"):
        n = state.loop.engine.warmup()
        print(f"compiled {n} length buckets", flush=True)
    import uvicorn

    from dlm_jax.serving.app import build_app
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=int(FLAGS.drain_seconds)))
    terminated = []
    signal.signal(signal.SIGTERM, lambda sig, frame: terminated.append(sig))  # uvicorn re-raises it on exit
    state.loop.start()
    host, port = sock.getsockname()[:2]
    batching = "static (greedy, left to right)" if FLAGS.pretrained is not None else FLAGS.batching
    print(f"listening on http://{host}:{port} (model {state.ctx.model!r}, {FLAGS.slots} slots, "
          f"{batching} batching)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        state.loop.stop()
    print("stopped: every request in flight was answered" if terminated or server.should_exit else "stopped",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
