"""Logical axis rules -> NamedShardings, sharded initialisation and global batches."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlm_jax.errors import ConfigError
from dlm_jax.model.axes import DEFAULT_RULES

Rules = Sequence[tuple[str, Any]]


@contextlib.contextmanager
def mesh_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """The context to trace sharded code in: `jax.set_mesh(mesh)` plus flax's logical axis rules.

    With current JAX, `with mesh:` no longer makes `nn.with_logical_constraint` effective (it silently does
    nothing), so activations would lose their batch sharding; `jax.set_mesh` does.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def logical_to_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for a (possibly boxed, i.e. nn.Partitioned) abstract tree; unannotated leaves replicate.

    Raises ValueError, before anything is compiled, when a mesh would split an array axis unevenly (jit cannot
    place such an array), naming the array, the axis, the mesh axes and what to change.
    """
    specs = nn.get_partition_spec(abstract_tree)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s if s is not None else P()), mesh_specs,
                             is_leaf=lambda x: isinstance(x, P) or x is None)
    check_even_split(nn.unbox(abstract_tree), shardings, specs)
    return shardings


def sharded_abstract(abstract_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Unboxed ShapeDtypeStructs of a (boxed) abstract tree, each with its NamedSharding on `mesh`: what
    checkpoints restore straight into."""
    shardings = logical_to_shardings(abstract_tree, mesh, rules)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(abstract_tree),
                        shardings)


def check_even_split(abstract_tree: Any, shardings: Any, logical_specs: Any = None) -> None:
    """Every array axis must be divisible by the number of devices its sharding splits it over."""
    is_spec = lambda x: isinstance(x, P) or x is None  # noqa: E731
    leaves = jax.tree_util.tree_flatten_with_path(abstract_tree)[0]
    shards = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    logical = (jax.tree.leaves(logical_specs, is_leaf=is_spec) if logical_specs is not None
               else [None] * len(leaves))
    problems = []
    for (path, leaf), sharding, names in zip(leaves, shards, logical):
        shape = getattr(leaf, "shape", None)
        if shape is None:
            continue
        for dim, axes in enumerate(sharding.spec):
            if axes is None or dim >= len(shape):
                continue
            mesh_axes = (axes,) if isinstance(axes, str) else tuple(axes)
            ways = int(np.prod([sharding.mesh.shape[a] for a in mesh_axes]))
            if shape[dim] % ways:
                fits = max(n for n in range(1, ways) if shape[dim] % n == 0)
                name = f" (logical axis {names[dim]!r})" if names is not None and dim < len(names) else ""
                problems.append(
                    f"{jax.tree_util.keystr(path)} {tuple(shape)}: axis {dim}{name} of size {shape[dim]} is split "
                    f"over mesh axes {mesh_axes} = {ways} devices, which does not divide it (the largest split "
                    f"under {ways} that does: {fits})")
    if problems:
        raise ConfigError(
            "the device mesh cannot split these arrays evenly:\n  " + "\n  ".join(problems[:8])
            + (f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else "")
            + "\nChoose mesh.shape values (mesh.shape.tensor, mesh.shape.fsdp) whose product along those axes "
              "divides the size, or map the logical axis to other mesh axes in mesh.rules.")


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args: Any) -> tuple[Any, Any]:
    """Initialises straight into shardings: eval_shape -> specs -> jit(init, out_shardings).

    Nothing is materialised on a single device first, so a model larger than one device's memory initialises.
    Returns (unboxed params, their shardings).
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = logical_to_shardings(abstract, mesh, rules)
    with mesh_rules(mesh, rules):
        params = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return params, shardings


def optimizer_state_shardings(tx: Any, params: Any, mesh: Mesh) -> Any:
    """Shardings of `tx.init(params)`: every leaf that mirrors a parameter (Adam's mu / nu, ...) is sharded like
    that parameter, everything else (step counts) is replicated.

    `jax.jit(tx.init)` alone would not do this: zeros_like does not depend on the parameters' values, so no
    sharding propagates and the whole optimizer state lands on one device (or, replicated, on every device).
    `params` may be arrays or ShapeDtypeStructs with shardings.
    """
    rep = NamedSharding(mesh, P())
    abstract = jax.eval_shape(tx.init, params)
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    return optax.tree_utils.tree_map_params(tx, lambda _, s: s, abstract, param_shardings,
                                            transform_non_params=lambda _: rep)


def init_optimizer_state(tx: Any, params: Any, mesh: Mesh) -> Any:
    """`tx.init(params)` created straight into `optimizer_state_shardings`."""
    return jax.jit(tx.init, out_shardings=optimizer_state_shardings(tx, params, mesh))(params)


def replicate_unplaced(tree: Any, mesh: Mesh) -> Any:
    """Leaves not already placed on the mesh (step counters, a freshly initialised head) become replicated on it.

    A leaf counts as placed only with a NamedSharding over this mesh: a scalar on the one device of a 1-device mesh
    has the mesh's devices but not its sharding type, and the step's outputs would then differ from its inputs in
    type, which made the second train step compile the whole step again."""
    rep = NamedSharding(mesh, P())

    def placed(x: Any) -> bool:
        return isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh

    return jax.tree.map(lambda x: x if placed(x) else jax.device_put(x, rep), tree)


def jit_train_step(step_fn: Callable, state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Callable:
    """`jax.jit` of a `(state, batch, frozen) -> (state, metrics)` step with the state's own shardings in and out
    (donated), the batch split over the `batch` rule's mesh axes. `state` leaves are placed arrays or
    ShapeDtypeStructs with shardings; trace (call or lower) the result under `mesh_rules(mesh, rules)`."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    bsh = batch_sharding(mesh, rules, ndim=1)  # P(batch axes): valid for every leaf rank
    return jax.jit(step_fn, in_shardings=(shardings, bsh, None), out_shardings=(shardings, None),
                   donate_argnums=(0,))


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] input array: batch over the mesh axes the `batch` rule names."""
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
    return NamedSharding(mesh, spec)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict[str, jax.Array]:
    """Assembles per-process host arrays into global jax.Arrays sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
            for k, v in local.items()}


def batch_mesh_axes(rules: Rules = DEFAULT_RULES) -> tuple[str, ...]:
    """The mesh axes the `batch` logical axis is split over under `rules`."""
    spec = nn.logical_to_mesh_axes(("batch",), rules)[0]
    return (spec,) if isinstance(spec, str) else tuple(spec or ())


def data_parallel_size(mesh_shape: Mapping[str, int], rules: Rules = DEFAULT_RULES) -> int:
    """How many ways the batch dimension is split on a mesh of `mesh_shape` (axis -> size, e.g. `mesh.shape`)."""
    return math.prod(mesh_shape[a] for a in batch_mesh_axes(rules))
