"""Runs an unchanged dlm_jax entry point as N JAX processes on this machine (the multi-host code path of a pod).

    python launch/local_multiprocess.py --num_processes 2 --devices_per_process 2 -- \
        -m dlm_jax.train --config configs/tiny.py --workdir runs/tiny2
    python launch/local_multiprocess.py --num_processes 8 --platform gpu -- -m dlm_jax.train ...   # one GPU each

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (read by
`dlm_jax.parallel.initialize_distributed`); on CPU also gloo collectives and `--devices_per_process` simulated
devices, on GPU one visible device per process. SIGTERM / Ctrl-C is passed on to every process (they save one
consistent checkpoint and exit 0). When one process fails, the others are stopped after `--grace_s` seconds and
the launcher exits with the failing process's code. Output: process 0's on the terminal, every process's in
`--log_dir` (default: a temporary folder, printed).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port(port: int) -> int:
    """`port` if it is free (0: any free port); a clear error naming the port otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("localhost", port))
        except OSError as e:
            raise SystemExit(f"error: port {port} is in use ({e.strerror}); pass another --port or --port 0 for any "
                             "free port") from None
        return s.getsockname()[1]


def process_env(i: int, n: int, port: int, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(n),
               JAX_PROCESS_ID=str(i))
    if args.platform == "cpu":
        env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices_per_process}")
    else:
        env.update(CUDA_VISIBLE_DEVICES=str(i))
    return env


def launch(command: list[str], args: argparse.Namespace) -> int:
    n = args.num_processes
    port = free_port(args.port)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="dlm_jax_procs_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        out = None if i == 0 else open(log_dir / f"process_{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, *command], env=process_env(i, n, port, args),
                                      stdout=out, stderr=subprocess.STDOUT if out else None))
    print(f"{n} processes (coordinator localhost:{port}); logs of processes 1..{n - 1} in {log_dir}",
          file=sys.stderr)

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return wait_all(procs, args.grace_s)


def wait_all(procs: list[subprocess.Popen], grace_s: float) -> int:
    """Waits for every process; once one fails, the rest get `grace_s` seconds, then are killed."""
    failed_at = None
    while any(p.poll() is None for p in procs):
        bad = [p for p in procs if p.poll() not in (None, 0)]
        if bad and failed_at is None:
            failed_at = time.monotonic()
            code = bad[0].returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            print(f"error: process {procs.index(bad[0])} {how}; stopping the others. Rerun the same command to "
                  "resume from the last complete checkpoint", file=sys.stderr)
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    return next((c for c in codes if c != 0), 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("error: usage: launch/local_multiprocess.py [options] -- -m dlm_jax.train --config ... (see --help)",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_processes", type=int, required=True)
    ap.add_argument("--devices_per_process", type=int, default=1, help="simulated CPU devices per process")
    ap.add_argument("--platform", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--port", type=int, default=0, help="coordinator port (0: any free port)")
    ap.add_argument("--grace_s", type=float, default=30.0, help="after a failure, seconds before the rest are killed")
    ap.add_argument("--log_dir", default=None)
    args = ap.parse_args(argv[:split])
    problems = [f"--{name} must be at least {low}, got {getattr(args, name)}"
                for name, low in (("num_processes", 1), ("devices_per_process", 1), ("grace_s", 0))
                if getattr(args, name) < low]
    if problems or not argv[split + 1:]:
        print(f"error: {problems[0] if problems else 'no command after --'}; e.g. --num_processes 2 "
              "--devices_per_process 2 -- -m dlm_jax.train --config configs/tiny.py --workdir runs/tiny2",
              file=sys.stderr)
        return 2
    return launch(argv[split + 1:], args)


if __name__ == "__main__":
    sys.exit(main())
