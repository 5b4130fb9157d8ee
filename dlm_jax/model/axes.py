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

# Mesh axis names (fixed order: outermost first).
MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Default rules: activations' batch over data+fsdp; weights' embed dim over fsdp (ZeRO-3 style), heads / mlp /
# vocab over tensor. Unlisted names (length, kv, layers, norm, positions, classes) are replicated.
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
)
