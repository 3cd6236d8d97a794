"""A training run's runtime: its workdir held, SIGTERM / Ctrl-C caught, the device mesh, and its metric writer.

open_run(config, workdir) is the one runtime set-up of train.train_and_evaluate: the config's missing fields read
their packaged defaults (run_fields), the workdir's lock is held and a foreign folder refused (workdir), a
StopRequest catches SIGTERM and SIGINT (preemption), and the mesh is built and checked against both batch sizes
(mesh). The writer (event_writer) is opened only when asked, once every check of a resume has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding

from lungjax.runtime import distributed, event_writer, mesh as mesh_lib, preemption, run_fields, workdir as workdir_lib


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """Flattens a nested config dict to {'a.b': value} (sequences as strings) for the hparams writer."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value if isinstance(value, (bool, int, float, str)) else str(value)
  return flat


@dataclasses.dataclass(frozen=True)
class Run:
  """What open_run set up: the config with its defaults filled in, the workdir, the mesh and the stop request."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  stop: preemption.StopRequest

  @property
  def batch_sharding(self) -> NamedSharding:
    """How a global batch is laid over the mesh."""
    return mesh_lib.batch_sharded(self.mesh)

  def open_writer(self) -> Any:
    """clu's writers, TensorBoard event files by tensorboardX (process 0; the others only log), with the config as
    hparams."""
    writer = event_writer.create_default_writer(self.workdir, just_logging=jax.process_index() > 0)
    writer.write_hparams(_flatten(self.config.to_dict()))
    return writer

  def report_progress(self, writer: Any, num_steps: int) -> Any:
    """clu's ReportProgress periodic action (steps per second, ETA) writing to `writer`."""
    return event_writer.periodic_actions().ReportProgress(num_train_steps=num_steps, writer=writer)

  def check_replicas_equal(self, state: Any) -> None:
    """Multi-host: raises unless every process ends with the same train state."""
    distributed.check_replicas_equal(state, 'train state')


@contextlib.contextmanager
def open_run(config: ml_collections.ConfigDict, workdir: str) -> Iterator[Run]:
  """Holds workdir (lungjax/runtime/workdir.py) and a StopRequest for the body; yields the run's Run."""
  config = run_fields.with_defaults(config)  # A field an older config lacks reads its packaged default.
  with workdir_lib.owned(workdir), preemption.StopRequest() as stop:
    os.makedirs(workdir, exist_ok=True)
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(config.train.batch_size, mesh, 'config.train.batch_size')
    mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')
    yield Run(config=config, workdir=workdir, mesh=mesh, stop=stop)
