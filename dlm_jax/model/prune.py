"""Vocabulary pruning: keep only the token ids a task uses (rows of the tied embedding / output head).

The paper's task-specific finetuning prunes XLM-R's 250k-row output head to the task's tokens; at the demo's BERT
size the 30,522-row head is 3.9M of 4.4M parameters. Data are remapped with `old_to_new` before the model sees
them, and generated ids are mapped back with `new_to_old` before decoding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.errors import ConfigError
from dlm_jax.model.configs import ModelConfig


@dataclasses.dataclass(frozen=True)
class VocabMap:
    new_to_old: np.ndarray  # [V_new] int32
    old_to_new: np.ndarray  # [V_old] int32, ids not kept map to `unk_new`
    unk_new: int

    @classmethod
    def build(cls, keep_ids: Iterable[int], old_size: int, *, unk_id: int, specials: Iterable[int]) -> "VocabMap":
        keep = np.unique(np.concatenate([np.fromiter(keep_ids, np.int64), np.fromiter(specials, np.int64),
                                         [unk_id]]))
        if keep.min() < 0 or keep.max() >= old_size:
            raise ValueError(f"token ids to keep must be in [0, {old_size}); got {keep.min()}..{keep.max()}")
        old_to_new = np.full(old_size, -1, np.int32)
        old_to_new[keep] = np.arange(len(keep), dtype=np.int32)
        unk_new = int(old_to_new[unk_id])
        old_to_new[old_to_new < 0] = unk_new
        return cls(keep.astype(np.int32), old_to_new, unk_new)

    @property
    def size(self) -> int:
        return len(self.new_to_old)

    def to_new(self, ids: np.ndarray) -> np.ndarray:
        return self.old_to_new[np.asarray(ids)]

    def to_old(self, ids: np.ndarray) -> np.ndarray:
        return self.new_to_old[np.asarray(ids)]

    def save(self, path: str | Path) -> None:
        np.savez(path, new_to_old=self.new_to_old, old_to_new=self.old_to_new, unk_new=self.unk_new)

    @classmethod
    def load(cls, path: str | Path) -> "VocabMap":
        z = np.load(path)
        return cls(z["new_to_old"], z["old_to_new"], int(z["unk_new"]))


def prune_params(params: Any, cfg: ModelConfig, vmap: VocabMap) -> tuple[Any, ModelConfig]:
    """Gathers the kept rows of the word embedding (= tied decoder) and the output bias."""
    if "head_bias" not in params:
        raise ConfigError(f"model.prune_vocab needs an output bias (unkept ids are blocked through it); the "
                          f"{cfg.family} family has none: set --config.model.prune_vocab=False")
    idx = jnp.asarray(vmap.new_to_old)
    out = jax.tree.map(lambda x: x, params)  # shallow copy of the nesting
    out["word"] = {"embedding": jnp.take(params["word"]["embedding"], idx, axis=0)}
    out["head_bias"] = jnp.take(params["head_bias"], idx, axis=0)
    return out, cfg.replace(vocab_size=vmap.size, sep_token_id=int(vmap.old_to_new[cfg.sep_token_id]),
                            mask_token_id=_remapped(cfg.mask_token_id, vmap.old_to_new))


def _remapped(i: int, table: np.ndarray) -> int:
    return int(table[i]) if i >= 0 else i


def tokenizer_mask_id(cfg: ModelConfig, vmap: VocabMap | None) -> int | None:
    """The mask id a run's vocabulary takes over its tokenizer's (`ModelConfig.mask_token_id`, a row the tokenizer
    cannot name), in the tokenizer's id space; None: the tokenizer's own mask token."""
    if cfg.mask_token_id < 0:
        return None
    return _remapped(cfg.mask_token_id, vmap.new_to_old) if vmap is not None else cfg.mask_token_id


# A logit bias that no kept token's logit can come near: an un-kept id's probability is exp(-1e9) = 0.
UNKEPT_BIAS = -1e9


def unprune_params(params: Any, cfg: ModelConfig, vmap: VocabMap) -> tuple[Any, ModelConfig]:
    """The pruned model in the original vocabulary, computing exactly what the pruned model computes.

    An id that was not kept reads the `<unk>` row (the pruned model sees `<unk>` for it) and gets the output bias
    `UNKEPT_BIAS`, so it is never predicted; kept ids keep their rows and biases. Logits at kept ids equal the
    pruned model's, and the softmax over the full vocabulary equals the pruned one.
    """
    old_to_new = jnp.asarray(vmap.old_to_new)
    kept = jnp.zeros(len(vmap.old_to_new), bool).at[jnp.asarray(vmap.new_to_old)].set(True)
    out = jax.tree.map(lambda x: x, params)
    out["word"] = {"embedding": jnp.take(params["word"]["embedding"], old_to_new, axis=0)}
    bias = jnp.take(params["head_bias"], old_to_new, axis=0)
    out["head_bias"] = jnp.where(kept, bias, jnp.asarray(UNKEPT_BIAS, bias.dtype))
    return out, cfg.replace(vocab_size=len(vmap.old_to_new), sep_token_id=int(vmap.new_to_old[cfg.sep_token_id]),
                            mask_token_id=_remapped(cfg.mask_token_id, vmap.new_to_old))


def mean_init_rows(params: Any, cfg: ModelConfig, ids: list[int]) -> tuple[Any, ModelConfig]:
    """Rows for ids added to the tokenizer (e.g. `<mask>`, `<pad>`): the table grows to hold them, and each one's
    input embedding and output row is the mean of the rows below the first of them (the released LLaMA
    adaptation, `src/utils.py`; also for ids that land in a table's padding rows, as Qwen's)."""
    if not ids:
        return params, cfg
    size, old = max(cfg.vocab_size, max(ids) + 1), min(ids)
    idx = jnp.asarray(ids)

    def fill(table: jax.Array, axis: int) -> jax.Array:
        pad = [(0, 0)] * table.ndim
        pad[axis] = (0, size - table.shape[axis])
        table = jnp.pad(table, pad)
        mean = jnp.take(table, jnp.arange(old), axis=axis).mean(axis, keepdims=True)
        return table.at[idx].set(mean[0]) if axis == 0 else table.at[:, idx].set(mean)
    out = jax.tree.map(lambda x: x, params)
    out["word"] = {"embedding": fill(params["word"]["embedding"], 0)}
    if "lm_head" in params:
        out["lm_head"] = {"kernel": fill(params["lm_head"]["kernel"], 1)}  # [embed, vocab]
    if "head_bias" in params:
        out["head_bias"] = fill(params["head_bias"], 0)
    return out, cfg.replace(vocab_size=size)
