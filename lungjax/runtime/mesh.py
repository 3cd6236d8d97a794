"""The device mesh: batches sharded over every device on the 'data' axis, state replicated (no pmap)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh() -> Mesh:
  """Returns a 1-D mesh over all devices of all processes, axis name 'data'.

  Devices are ordered by process, so process i's devices hold rows [i*B/n, (i+1)*B/n) of a global batch: the
  rows pipeline.GatherBatch gives process i.
  """
  return Mesh(np.asarray(sorted(jax.devices(), key=lambda d: (d.process_index, d.id))), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of parameters and optimizer state: a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The sharding of batches: the leading (batch) axis split over the 'data' axis."""
  return NamedSharding(mesh, PartitionSpec('data'))


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> None:
  """Raises ValueError naming `field` unless the batch splits evenly over the mesh's devices."""
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(f'{field}={batch_size} must be a positive multiple of the {mesh.size} devices')


def to_global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's rows into global jax.Arrays sharded over the mesh."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
