"""Device meshes from config and multi-host initialisation."""
from __future__ import annotations

import logging
import math
import os
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
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. A single process does nothing.
    """
    env = os.environ
    multi = ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
             or "TPU_WORKER_HOSTNAMES" in env and "," in env.get("TPU_WORKER_HOSTNAMES", ""))
    if not multi:
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(env["JAX_NUM_PROCESSES"]), process_id=int(env["JAX_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
