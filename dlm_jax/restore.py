"""Loading a trained workdir for inference: config.json + vocab_map.npz + the latest (or a given) checkpoint."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

from dlm_jax.model import MaskedLM, ModelConfig
from dlm_jax.model.prune import VocabMap, prune_params


class NoCheckpointError(FileNotFoundError):
    pass


@dataclasses.dataclass
class Loaded:
    model: MaskedLM
    params: Any
    tokenizer: Any
    model_config: ModelConfig
    vocab_map: VocabMap | None
    config: ml_collections.ConfigDict
    step: int
    length_model: Any = None
    length_params: Any = None


def read_config(workdir: Path) -> ml_collections.ConfigDict:
    f = workdir / "config.json"
    if not f.exists():
        raise NoCheckpointError(f"{workdir} is not a dlm_jax workdir (no config.json); train into it first with "
                                "python -m dlm_jax.train --config ... --workdir DIR")
    return ml_collections.ConfigDict(json.loads(f.read_text()))


def _restore_params(workdir: Path, params_like: Any, opt_like: Any, step: int | None) -> tuple[Any, int]:
    mngr = ocp.CheckpointManager(workdir.resolve() / "checkpoints", item_names=("state", "data"))
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise NoCheckpointError(f"no complete checkpoint in {workdir}/checkpoints; train first (or pass an HF "
                                "directory as --checkpoint)")
    dev = SingleDeviceSharding(jax.devices()[0])
    sds = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev)  # noqa: E731
    abstract = {"step": sds(jnp.zeros((), jnp.int32)), "bad_steps": sds(jnp.zeros((), jnp.int32)),
                "params": jax.tree.map(sds, params_like), "opt_state": jax.tree.map(sds, opt_like)}
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    mngr.close()
    return out["state"]["params"], step


def load_workdir(workdir: str | Path, *, step: int | None = None,
                 config: ml_collections.ConfigDict | None = None) -> Loaded:
    """The model, params (restored), tokenizer and vocab map of a diffusion-stage workdir."""
    from dlm_jax.setup import build_model, rules_from_config
    from dlm_jax.step import build_optimizer
    from dlm_jax.parallel import make_mesh

    workdir = Path(workdir)
    config = config or read_config(workdir)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    model, params, tokenizer, mcfg = build_model(config, mesh, rules_from_config(config))
    vmap = None
    if (workdir / "vocab_map.npz").exists():
        vmap = VocabMap.load(workdir / "vocab_map.npz")
        if mcfg.vocab_size != vmap.size:
            params, mcfg = prune_params(params, mcfg, vmap)
            model = MaskedLM(mcfg)
    tx, _ = build_optimizer(config.optimizer, config.num_train_steps)
    params, got = _restore_params(workdir, params, jax.eval_shape(tx.init, params), step)
    return Loaded(model, params, tokenizer, mcfg, vmap, config, got)


def load_length_head(length_workdir: str | Path, loaded: Loaded, *, step: int | None = None) -> Loaded:
    """Adds the length predictor trained in `length_workdir` (stage 'length') to `loaded`."""
    from dlm_jax.model.length import LengthPredictor
    from dlm_jax.step import build_optimizer

    length_workdir = Path(length_workdir)
    cfg = read_config(length_workdir)
    head = LengthPredictor(loaded.model_config, num_classes=loaded.model_config.max_positions)
    dummy = jnp.zeros((1, 4, loaded.model_config.hidden_size)), jnp.ones((1, 4), jnp.int32)
    like = jax.eval_shape(lambda: head.init(jax.random.key(0), *dummy)["params"])
    tx, _ = build_optimizer(cfg.optimizer, cfg.num_train_steps)
    params, _ = _restore_params(length_workdir, like, jax.eval_shape(tx.init, like), step)
    return dataclasses.replace(loaded, length_model=head, length_params=params)
