"""Logical axis names used by the model, and the default logical -> mesh axis rules.

Parameters and activations are annotated with these names; the mapping onto mesh axes lives in config
(`mesh.rules`) so the same model shards as data-parallel, FSDP or tensor-parallel without code changes.
"""
from __future__ import annotations

BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
HEADS = "heads"
KV = "kv"
MLP = "mlp"
VOCAB = "vocab"
LAYERS = "layers"
POSITIONS = "positions"
NORM = "norm"
CLASSES = "classes"
# The vocab-sized output head runs vocab-parallel: its input positions are gathered over the FSDP / tensor axes
# (HEAD_BATCH) and the tied table and the logits are split along the vocabulary (HEAD_VOCAB), so no device ever
# holds the whole table or its gradient (for XXL a 250,002 x 4,096 fp32 table is 3.9 GiB); the loss reduces
# across vocabulary shards with small all-reduces.
HEAD_BATCH = "head_batch"
HEAD_VOCAB = "head_vocab"

# Mesh axis names (fixed order: outermost first).
MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Default rules: activations' batch over data+fsdp; weights' embed dim over fsdp (ZeRO-3 style), heads / mlp /
# vocab over tensor; the output head vocab-parallel over fsdp x tensor. Unlisted names (length, kv, layers, norm,
# positions, classes) are replicated: custom `mesh.rules` should keep the two head names, or the head's logits
# are replicated on every device.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (BATCH, ("data", "fsdp")),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (MLP, "tensor"),
    (VOCAB, "tensor"),
    (LENGTH, None),
    (KV, None),
    (LAYERS, None),
    (NORM, None),
    (POSITIONS, None),
    (CLASSES, None),
    (HEAD_BATCH, "data"),
    (HEAD_VOCAB, ("fsdp", "tensor")),
)
