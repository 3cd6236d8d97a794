"""Multi-host runs: join the processes (jax.distributed), gather arrays to every process, and who writes files."""

from __future__ import annotations

import re
import zlib
from typing import Any

import jax
import numpy as np
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

_ADDRESS = re.compile(r'^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$')  # host:port; an IPv6 host in brackets.


def check_config(distributed: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the config.distributed field whose value cannot work."""
  address, n, pid = distributed.coordinator_address, distributed.num_processes, distributed.process_id
  if address and not _ADDRESS.match(address):
    raise ValueError(f'config.distributed.coordinator_address={address!r} must be host:port, e.g. 10.0.0.2:8476')
  if n < 0:
    raise ValueError(f'config.distributed.num_processes={n} must be >= 1, or 0 to detect it')
  if pid < -1 or (n > 0 and pid >= n):
    raise ValueError(f'config.distributed.process_id={pid} must be in [0, num_processes={n}), or -1 to detect it')
  if distributed.cpu_collectives not in ('gloo', 'mpi'):
    raise ValueError(f'config.distributed.cpu_collectives={distributed.cpu_collectives!r} must be gloo or mpi')
  if distributed.initialization_timeout_s < 1:
    raise ValueError(f'config.distributed.initialization_timeout_s={distributed.initialization_timeout_s} must be >= 1')


def initialize(config: ml_collections.ConfigDict) -> bool:
  """Joins this process to a multi-host run when config.distributed.enabled; returns whether it did.

  Empty fields (address '', num_processes 0, process_id -1) are left to JAX's cluster detection (Cloud TPU, SLURM,
  Open MPI, ...). Must run before anything touches a device. The fields are checked by config_check.validate
  (distributed.check_config).
  """
  distributed = config.distributed
  if not distributed.enabled:
    return False
  jax.config.update('jax_cpu_collectives_implementation', distributed.cpu_collectives)  # CPU processes only.
  kwargs: dict[str, Any] = {'initialization_timeout': distributed.initialization_timeout_s}
  if distributed.coordinator_address:
    kwargs['coordinator_address'] = distributed.coordinator_address
  if distributed.num_processes:
    kwargs['num_processes'] = distributed.num_processes
  if distributed.process_id >= 0:
    kwargs['process_id'] = distributed.process_id
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise RuntimeError(
        f'jax.distributed.initialize({", ".join(f"{k}={v!r}" for k, v in kwargs.items())}) failed: {e}. Set '
        'config.distributed.coordinator_address, num_processes and process_id, or run where JAX detects the '
        'cluster (Cloud TPU VM, SLURM, Open MPI); config.distributed.enabled=False runs one process.') from e
  logging.info('process %d of %d: %d local of %d devices', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def is_main_process() -> bool:
  """Whether this process writes the run's reports, plots and summaries (process 0; the only one when alone)."""
  return jax.process_index() == 0


def fetch(tree: Any) -> Any:
  """Copies a pytree of (possibly multi-process) jax.Arrays to numpy on every process, global rows in order."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (so that process 0's files exist for all)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_replicas_equal(tree: Any, name: str) -> None:
  """Raises RuntimeError unless every process holds bit-identical copies of a replicated pytree (crc32 per leaf)."""
  if jax.process_count() == 1:
    return
  leaves = jax.tree.leaves(tree)
  crcs_L = np.asarray([zlib.crc32(np.ascontiguousarray(x.addressable_data(0)).tobytes()) for x in leaves], np.uint32)
  crcs_PL = np.asarray(multihost_utils.process_allgather(crcs_L))  # One row per process.
  differ = sorted({int(p) for p in np.nonzero((crcs_PL != crcs_PL[0]).any(axis=1))[0]})
  if differ:
    raise RuntimeError(f'{name}: the copies of processes {differ} differ from process 0\'s: the processes diverged')
  logging.info('%s: bit-identical on all %d processes (%d arrays)', name, jax.process_count(), len(leaves))
