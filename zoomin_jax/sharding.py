"""The device mesh, the shardings derived from it, and host batches assembled into global arrays.

Data parallelism on one `data` axis: batches are split along their first dimension, parameters are replicated.
Everything goes through `jax.jit` with explicit shardings (never pmap).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(num_data: int = -1) -> Mesh:
    """A 1-D mesh named 'data' over the first `num_data` devices (-1: all, across all hosts)."""
    devices = jax.devices()
    n = len(devices) if num_data == -1 else num_data
    if not 1 <= n <= len(devices):
        raise ValueError(f"mesh.data={num_data} but {len(devices)} devices are visible")
    return Mesh(np.asarray(devices[:n]), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def to_global(batch, mesh: Mesh):
    """Assembles this host's part of a batch (a pytree of numpy arrays) into global arrays sharded on 'data'.

    Each host passes its own `global_batch / process_count` rows; on one host that is the whole batch.
    """
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
