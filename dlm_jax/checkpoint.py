"""Orbax checkpoints: async saves, keep-latest-K, the data position beside the state, preemption-safe restore.

Orbax writes each step into a temporary directory and renames it when the save is complete, so a checkpoint
left half-written by a crash is never listed by `latest_step()` and a rerun resumes from the last complete one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(workdir: str | Path, *, max_to_keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options,
                                 item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict[str, Any], *, force: bool = False
         ) -> bool:
    saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)), force=force)
    if saved:
        logging.info("checkpoint at step %d (async)", step)
    return saved


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
            ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores into the shardings of `abstract_state` (ShapeDtypeStructs with .sharding); None if nothing saved."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                     data=ocp.args.JsonRestore()))
    logging.info("restored checkpoint at step %d", step)
    return out["state"], dict(out["data"]), step


def abstract_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
