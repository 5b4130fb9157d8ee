"""Meshes, logical sharding rules, sharded initialisation and global batches."""
from dlm_jax.parallel.mesh import initialize_distributed, make_mesh, resolve_mesh_shape
from dlm_jax.parallel.sharding import (batch_mesh_axes, batch_sharding, data_parallel_size, global_batch,
                                       init_optimizer_state, jit_train_step, logical_to_shardings, mesh_rules,
                                       optimizer_state_shardings, replicate_unplaced, sharded_abstract,
                                       sharded_init)

__all__ = ["make_mesh", "resolve_mesh_shape", "initialize_distributed", "logical_to_shardings", "sharded_init",
           "batch_mesh_axes", "batch_sharding", "global_batch", "data_parallel_size", "optimizer_state_shardings",
           "init_optimizer_state", "mesh_rules", "replicate_unplaced", "jit_train_step", "sharded_abstract"]
