"""The orbax CheckpointManager: save state + grain iterator + history, keep latest and best, restore."""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from lungjax.steps import TrainState

# Validation metrics a checkpoint can be ranked by, and whether higher is better.
BEST_METRICS = {'macro_recall': 'max', 'macro_f1': 'max', 'macro_precision': 'max', 'accuracy': 'max',
                'loss': 'min'}


def checkpoint_dir(workdir: str) -> str:
  """Where a workdir keeps its checkpoints."""
  return os.path.abspath(os.path.join(workdir, 'checkpoints'))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """Returns the config a training run saved in workdir/config.json (for predict and explain)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path!r} not found: --workdir must be a folder that lungjax.main trained in')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def create_manager(workdir: str, checkpoint_config: ml_collections.ConfigDict, *,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager that keeps the `keep_latest` newest steps and the `keep_best` best by validation metric."""
  metric = checkpoint_config.best_metric
  if metric not in BEST_METRICS:
    raise ValueError(f'config.checkpoint.best_metric={metric!r} is not one of {sorted(BEST_METRICS)}')
  mode = BEST_METRICS[metric]

  def metric_value(metrics: dict[str, float]) -> float:
    return metrics[f'val_{metric}']

  sign = 1.0 if mode == 'max' else -1.0
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=checkpoint_config.keep_latest),
      checkpoint_managers.BestN(get_metric_fn=lambda m: sign * metric_value(m), n=checkpoint_config.keep_best,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=metric_value, best_mode=mode, preservation_policy=None if read_only else policy,
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=('state', 'data_iter', 'history'))


def save(manager: ocp.CheckpointManager, state: TrainState, data_iter: grain.DatasetIterator,
         history: list[dict[str, float]], metrics: dict[str, float] | None) -> None:
  """Saves (asynchronously) the state, the iterator position and the per-epoch history at state.step."""
  manager.save(int(state.step), metrics=metrics, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter),
      history=ocp.args.JsonSave({'epochs': history})))


def restore_for_training(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState,
                         data_iter: grain.DatasetIterator) -> tuple[TrainState, list[dict[str, float]]]:
  """Restores state, iterator position (in place) and history of `step`, to resume training."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=grain.checkpoint.CheckpointRestore(data_iter),
      history=ocp.args.JsonRestore()))
  return restored.state, list(restored.history['epochs'])


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState) -> TrainState:
  """Restores only the train state of `step` (for evaluation)."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored.state


def choose_step(manager: ocp.CheckpointManager, requested: int, workdir: str) -> int:
  """Returns `requested` if >= 0 (it must exist), else the best step (or the latest if none is ranked)."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {checkpoint_dir(workdir)!r}: train first with --workdir={workdir}')
  if requested >= 0:
    if requested not in steps:
      raise ValueError(f'config.eval.step={requested} has no checkpoint in {checkpoint_dir(workdir)!r}; '
                       f'saved steps: {sorted(steps)}')
    return requested
  best = manager.best_step()
  return best if best is not None else manager.latest_step()
