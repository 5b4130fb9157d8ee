"""A bounded load generator for `python -m dlm_jax.serve` (loopback only), printing vLLM's benchmark set
(completed, failed, request throughput, output tok/s, mean / median / p99 of TTFT, TPOT, ITL, end-to-end) and the
diffusion block (model evaluations per request, tokens per step, slot utilisation sampled from /metrics).

    # start a server with these flags, load it, stop it (SIGTERM); the prompts are a task split's, max_tokens the
    # reference's length, so the response lengths are mixed
    python bench/serve.py --workdir runs/demo --task ding_de_en --num_requests 200 --concurrency 8 \
        --server_args="--slots 8 --batching continuous --config.sampler.strategy=adaptive --config.sampler.threshold=0.9"
    python bench/serve.py --url http://127.0.0.1:8000 --workdir runs/demo --rate 4 ...   # a running server
    python bench/serve.py --workdir runs/demo --in_process --num_requests 20             # the Engine, no HTTP

Every request has a deadline (--request_timeout) and the whole run a hard limit (--time_limit); requests still
open at the limit count as failed. `--json OUT` writes the numbers.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_prompts(workdir: str, task: str, split: str, n: int) -> list[tuple[str, int]]:
    """(prompt text, max_tokens = the reference's token count) for the first `n` examples, cycled."""
    sys.path.insert(0, str(REPO))
    from dlm_jax.data import pipeline
    from dlm_jax.inference import restore_run
    restored = restore_run(workdir)
    ex = pipeline.load_examples(task, split, restored.feature_spec(), restored.vocab, limit=max(n, 1))
    lengths = [int(x) - 1 for x in ex.rows["response_length"]]
    items = list(zip(ex.inputs, lengths))
    return [items[i % len(items)] for i in range(n)]


def one_request(url: str, model: str, prompt: str, max_tokens: int, extra: dict, timeout: float) -> dict:
    """One streamed completion: timestamps of each text chunk, the usage and the diffusion block."""
    u = urllib.parse.urlsplit(url)
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, **extra}
    start = time.perf_counter()
    out = {"start": start, "chunks": [], "ok": False}
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out["error"] = f"{resp.status} {resp.read()[:200]!r}"
            return out
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                out["ok"] = True
                break
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                out["chunks"].append(time.perf_counter())
            if "diffusion" in chunk and "steps" in chunk["diffusion"]:
                out["diffusion"] = chunk["diffusion"]
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        out["error"] = repr(e)
    finally:
        conn.close()
        out["end"] = time.perf_counter()
    return out


def run_load(url: str, model: str, items: list[tuple[str, int]], args: argparse.Namespace) -> tuple[list, float]:
    """Sends every item (concurrency C, or Poisson arrivals at `rate`), bounded by `time_limit`."""
    results: list[dict] = []
    lock = threading.Lock()
    todo: queue.Queue = queue.Queue()
    for it in items:
        todo.put(it)
    extra = json.loads(args.extra)
    deadline = time.perf_counter() + args.time_limit

    def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                prompt, max_tokens = todo.get_nowait()
            except queue.Empty:
                return
            r = one_request(url, model, prompt, max_tokens, extra, min(args.request_timeout,
                                                                         max(deadline - time.perf_counter(), 1)))
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    if args.rate:
        rng, threads = random.Random(0), []
        for _ in items:
            if time.perf_counter() >= deadline:
                break
            threads.append(threading.Thread(target=worker, daemon=True))
            threads[-1].start()  # each thread takes one item and exits when the queue is empty
            time.sleep(rng.expovariate(args.rate))
    else:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
    for t in threads:
        t.join(max(deadline - time.perf_counter(), 0) + 1)
    return results, time.perf_counter() - t0


def sample_utilisation(url: str, stop: threading.Event, samples: list[float]) -> None:
    u = urllib.parse.urlsplit(url)
    while not stop.wait(0.2):
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            conn.request("GET", "/metrics")
            for line in conn.getresponse().read().decode().splitlines():
                if line.startswith("dlm_jax:slot_utilization "):
                    samples.append(float(line.split()[1]))
            conn.close()
        except OSError:
            pass


def _stats(name: str, xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
    return {f"mean_{name}_ms": 1e3 * statistics.fmean(xs), f"median_{name}_ms": 1e3 * statistics.median(xs),
            f"p99_{name}_ms": 1e3 * p99}


def summarise(results: list[dict], wall: float, n: int, utilisation: list[float]) -> dict:
    ok = [r for r in results if r["ok"]]
    out_tokens = [r.get("usage", {}).get("completion_tokens", 0) for r in ok]
    ttft = [(r["chunks"][0] if r["chunks"] else r["end"]) - r["start"] for r in ok]
    e2e = [r["end"] - r["start"] for r in ok]
    tpot = [(r["end"] - t - r["start"]) / (k - 1) for r, t, k in zip(ok, ttft, out_tokens) if k > 1]
    itl = [b - a for r in ok for a, b in zip(r["chunks"], r["chunks"][1:])]
    evals = [r["diffusion"]["steps"] for r in ok if "diffusion" in r]
    out = {"completed": len(ok), "failed": n - len(ok), "duration_s": wall,
           "request_throughput": len(ok) / wall, "output_throughput": sum(out_tokens) / wall,
           **_stats("ttft", ttft), **_stats("tpot", tpot), **_stats("itl", itl), **_stats("e2el", e2e),
           "evaluations_per_request": statistics.fmean(evals) if evals else 0.0,
           "tokens_per_step": sum(out_tokens) / sum(evals) if evals and sum(evals) else 0.0,
           "slot_utilization": statistics.fmean(utilisation) if utilisation else None}
    errors = [r.get("error") for r in results if not r["ok"]]
    if errors:
        out["first_error"] = errors[0]
    return out


def launch(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "dlm_jax.serve", "--workdir", args.workdir, "--port", "0",
           *args.server_args.split()]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            sys.exit(f"error: the server did not start ({' '.join(cmd)})")
    return proc, line.split("listening on ")[1].split()[0]


def in_process(args: argparse.Namespace, items: list[tuple[str, int]]) -> dict:
    """The same requests through the Engine one at a time, no HTTP (the reference for HTTP overhead)."""
    from dlm_jax.inference import restore_run
    from dlm_jax.serving import Engine, Request
    from dlm_jax.serving.protocol import context_for, parse_request
    restored = restore_run(args.workdir)
    gen = restored.generator()
    engine = Engine(gen, slots=1)
    ctx = context_for(restored, gen, model="m", max_steps=engine.max_steps)
    extra, e2e, tokens = json.loads(args.extra), [], 0
    reqs = [parse_request({"model": "m", "prompt": p, "max_tokens": n, **extra}, ctx, chat=False) for p, n in items]
    engine.warmup()  # every bucket compiled, as the server's --warmup
    t0 = time.perf_counter()
    for i, r in enumerate(reqs):
        t = time.perf_counter()
        engine.run([Request(100 + i, r.prompt_ids, r.length, r.sampler)])
        e2e.append(time.perf_counter() - t)
        tokens += r.max_tokens
    wall = time.perf_counter() - t0
    return {"completed": len(reqs), "duration_s": wall, "request_throughput": len(reqs) / wall,
            **_stats("e2el", e2e)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="the served run (prompts are tokenized with its vocabulary)")
    p.add_argument("--url", help="a running server on loopback; default: launch one with --server_args")
    p.add_argument("--server_args", default="", help="flags for python -m dlm_jax.serve when launching")
    p.add_argument("--model", default=None, help="the served model name (default: the workdir's name)")
    p.add_argument("--task", default="ding_de_en")
    p.add_argument("--split", default="test")
    p.add_argument("--num_requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rate", type=float, default=0.0, help="Poisson arrivals per second (0: --concurrency)")
    p.add_argument("--extra", default="{}", help='request fields as JSON, e.g. \'{"strategy": "adaptive"}\'')
    p.add_argument("--time_limit", type=float, default=600.0)
    p.add_argument("--request_timeout", type=float, default=120.0)
    p.add_argument("--in_process", action="store_true", help="time the Engine directly, one request at a time")
    p.add_argument("--warmup_requests", type=int, default=4, help="requests sent (and not counted) first")
    p.add_argument("--json", default=None)
    p.add_argument("--dump_prompts", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dump_prompts:
        Path(args.dump_prompts).write_text(json.dumps(load_prompts(args.workdir, args.task, args.split,
                                                                   args.num_requests)))
        return
    items = prompts_from_subprocess(args) if args.in_process else load_prompts(args.workdir, args.task, args.split,
                                                                                args.num_requests)
    if args.in_process:
        report = in_process(args, items)
    else:
        report = http_run(args, items)
    report["args"] = {k: v for k, v in vars(args).items()}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def prompts_from_subprocess(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The prompts, read in a child process: the in-process timing then runs without TensorFlow (the task
    pipeline's) in the same process, as the server does."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prompts.json"
        subprocess.run([sys.executable, __file__, "--workdir", args.workdir, "--task", args.task, "--split",
                        args.split, "--num_requests", str(args.num_requests), "--dump_prompts", str(out)],
                       check=True, cwd=REPO)
        return [tuple(x) for x in json.loads(out.read_text())]


def http_run(args: argparse.Namespace, items: list[tuple[str, int]]) -> dict:
    proc = None
    url = args.url
    if url is None:
        proc, url = launch(args)
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"error: {url} is not on loopback; this load generator only loads local servers")
    model = args.model or Path(args.workdir).resolve().name
    try:
        warm = argparse.Namespace(**{**vars(args), "concurrency": min(args.concurrency, args.warmup_requests),
                                     "rate": 0.0})
        run_load(url, model, items[:args.warmup_requests], warm)  # compiles of the buckets the load uses
        stop, util = threading.Event(), []
        sampler = threading.Thread(target=sample_utilisation, args=(url, stop, util), daemon=True)
        sampler.start()
        results, wall = run_load(url, model, items, args)
        stop.set()
        return summarise(results, wall, len(items), util)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


if __name__ == "__main__":
    os.environ.setdefault("XLA_FLAGS", "")
    main()
