"""Where the time goes: sum the kernel times of a `jax.profiler` perfetto trace by kernel (or op) name.

    python bench/mfu.py --profile /tmp/prof ...          # on the accelerator
    python bench/trace_summary.py /tmp/prof/**/perfetto_trace.json.gz --process GPU --top 30

Prints, per process whose name contains `--process` (e.g. "/device:GPU:0"), the busy time of each thread (stream)
and the `--top` names by total duration, with counts and their share of that process's summed kernel time. Names are
grouped after stripping numeric suffixes (`fusion.123` -> `fusion`) unless `--exact`.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re


def load_events(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def summarize(events: list[dict], process: str, top: int, exact: bool) -> str:
    procs = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    lines = []
    for pid, pname in sorted(procs.items()):
        if process.lower() not in pname.lower():
            continue
        by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
        by_thread: dict[str, float] = collections.Counter()
        span = [float("inf"), 0.0]
        for e in events:
            if e.get("ph") != "X" or e["pid"] != pid:
                continue
            name = e["name"] if exact else re.sub(r"[._]\d+$", "", e["name"])
            by_name[name][0] += e["dur"]
            by_name[name][1] += 1
            by_thread[threads.get((pid, e["tid"]), str(e["tid"]))] += e["dur"]
            span = [min(span[0], e["ts"]), max(span[1], e["ts"] + e["dur"])]
        total = sum(v[0] for v in by_name.values())
        lines.append(f"## {pname}: {total / 1e3:.2f} ms of events over a {(span[1] - span[0]) / 1e3:.2f} ms span")
        for t, d in sorted(by_thread.items(), key=lambda kv: -kv[1])[:8]:
            lines.append(f"  thread {t}: {d / 1e3:.2f} ms")
        lines.append("| name | ms | count | share |")
        lines.append("|---|---|---|---|")
        for name, (dur, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
            lines.append(f"| {name[:90]} | {dur / 1e3:.2f} | {n} | {100 * dur / max(total, 1e-9):.1f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--process", default="GPU")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--exact", action="store_true")
    args = ap.parse_args()
    print(summarize(load_events(args.trace), args.process, args.top, args.exact))


if __name__ == "__main__":
    main()
