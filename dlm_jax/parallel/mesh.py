"""Device meshes from config and multi-host initialisation."""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from dlm_jax.errors import ConfigError
from dlm_jax.model.axes import MESH_AXES


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills one `-1` entry with the remaining devices and checks the product equals `num_devices`.

    Args:
      shape: mesh axis -> size, e.g. {"data": -1, "fsdp": 1, "tensor": 1}; axes missing default to 1.
      num_devices: number of devices to cover.
    Returns:
      axis -> size for every axis in MESH_AXES.
    """
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ConfigError(f"unknown mesh axes {sorted(unknown)}; mesh axes are {list(MESH_AXES)}")
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh axes {free} are all -1; at most one axis may take 'the rest' of the devices")
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ConfigError(f"mesh.{a}={s} is invalid; use a positive size or -1 for 'the rest'")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(f"mesh {sizes}: {num_devices} devices are not divisible by the fixed axes' product "
                             f"{fixed}; change mesh.* so that the fixed sizes divide {num_devices}")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(f"mesh {sizes} needs {math.prod(sizes.values())} devices but {num_devices} are available; "
                         "set one axis to -1 or make the sizes multiply to the device count")
    return sizes


def make_mesh(shape: Mapping[str, int] | None = None, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (linen logical constraints need Auto axes)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = resolve_mesh_shape(shape or {"data": -1}, len(devices))
    dims = tuple(sizes[a] for a in MESH_AXES)
    try:
        from jax.experimental import mesh_utils
        arr = mesh_utils.create_device_mesh(dims, devices=devices)
    except Exception:  # CPU / odd topologies: plain reshape is fine.
        arr = np.asarray(devices, dtype=object).reshape(dims)
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` on multi-process launches (TPU pods, SLURM, env-configured GPUs).

    On a TPU VM pod and under SLURM, JAX discovers the coordinator itself. Elsewhere set
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (`launch/local_multiprocess.py` does; on CPU also
    JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo). A single process does nothing. A coordinator that does not answer
    within DLM_DISTRIBUTED_TIMEOUT_S seconds (default 300) is a `ConfigError` naming the address and the fix.
    A second call does nothing.
    When a process dies (SIGKILL, a lost host), jax's coordinator stops the others once its heartbeat has been
    missing for DLM_HEARTBEAT_TIMEOUT_S seconds (default 100); `launch/local_multiprocess.py` stops them sooner.
    """
    env = os.environ
    multi = ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
             or "TPU_WORKER_HOSTNAMES" in env and "," in env.get("TPU_WORKER_HOSTNAMES", ""))
    if not multi or jax.distributed.is_initialized():
        return
    # heartbeat: how soon the survivors of a killed process stop (jax's default 100 s); DLM_HEARTBEAT_TIMEOUT_S
    kwargs: dict = {"initialization_timeout": int(env.get("DLM_DISTRIBUTED_TIMEOUT_S", "300")),
                    "heartbeat_timeout_seconds": int(env.get("DLM_HEARTBEAT_TIMEOUT_S", "100"))}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs.update(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(env["JAX_NUM_PROCESSES"]), process_id=int(env["JAX_PROCESS_ID"]))
    if "coordinator_address" in kwargs:  # jax's own client aborts the process on a timeout: check first
        _check_coordinator(kwargs["coordinator_address"], kwargs["process_id"], kwargs["initialization_timeout"])
    if env.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"])
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # the coordinator never came up, a wrong address, a process id out of range
        where = kwargs.get("coordinator_address", "the auto-detected coordinator")
        raise ConfigError(
            f"jax.distributed could not start ({type(e).__name__}: {str(e).splitlines()[0][:300]}): coordinator "
            f"{where}, {kwargs.get('num_processes', '?')} processes, timeout {kwargs['initialization_timeout']} s. "
            "Start every process with the same JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES (or use "
            "launch/local_multiprocess.py), check that process 0 is reachable there, or raise "
            "DLM_DISTRIBUTED_TIMEOUT_S") from None
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def _check_coordinator(address: str, process_id: int, timeout_s: float) -> None:
    """Process 0 must be able to bind the coordinator's port; the others must reach it within `timeout_s`.

    Raises `ConfigError` naming the address and the fix (jax's client would abort the process instead)."""
    host, _, port = address.rpartition(":")
    if process_id == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, int(port)))
            except OSError as e:
                raise ConfigError(f"the coordinator port {address} cannot be used ({e.strerror}): another run may "
                                  "hold it; choose another JAX_COORDINATOR_ADDRESS port") from None
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"process {process_id} could not reach the coordinator at {address} within {timeout_s:.0f} s: "
                    "start process 0 too (same JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES; "
                    "launch/local_multiprocess.py starts all of them), check the address, or raise "
                    "DLM_DISTRIBUTED_TIMEOUT_S") from None
            time.sleep(0.5)
