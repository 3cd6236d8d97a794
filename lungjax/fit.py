"""fit(...): the one training loop the classifier, the autoencoder's stage 1 and the lung U-Net train through.

The step it runs is steps.make_train_step(loss_fn, ...): jitted, state donated, batch sharded over the mesh. The
loop never waits for the device between log points: each step's metrics stay on device until a log point (every
`log_every_steps` steps and at each epoch end), where they are fetched once, checked for NaN / inf (a
FloatingPointError names the first bad step) and merged into `train_*` scalars. At each epoch end the caller's
`end_epoch` runs (validation, history) and the state is saved. The preemption handler is asked after every step: on
SIGTERM or SIGINT the step just taken is saved, the save awaited, and preemption.Preempted raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Sharding

from lungjax import checkpoints
from lungjax.runtime import mesh as mesh_lib, preemption, progress

Window = list[tuple[int, Any]]  # (step, that step's clu metrics collection, still on device).


def check_finite(window: Window, what: str = 'training', hint: str = '', step_label: str = 'step') -> None:
  """Fetches the window's losses; raises FloatingPointError naming the first step whose loss is NaN or inf."""
  losses = jax.device_get([m.loss.total for _, m in window])
  for (step, _), loss in zip(window, losses):
    if not np.isfinite(loss):
      raise FloatingPointError(f'{what} loss is {loss} at {step_label} {step}: stopping (nothing since the last checkpoint '
                               f'is saved){hint}')


def merge(window: Window) -> dict[str, float]:
  """The window's metrics merged (in step order) and fetched, as train_<name>."""
  merged = window[0][1]
  for _, m in window[1:]:
    merged = merged.merge(m)
  return {f'train_{k}': float(v) for k, v in merged.compute().items()}


def fit(state: Any, batches: Iterator[dict[str, np.ndarray]], manager: ocp.CheckpointManager,
        stop: preemption.StopRequest, *, train_step: Callable[[Any, dict[str, jax.Array]], tuple[Any, Any]],
        batch_sharding: Sharding, num_steps: int, steps_per_epoch: int,
        save: Callable[[Any, dict[str, float] | None], None],
        end_epoch: Callable[[Any, int, dict[str, float]], dict[str, float] | None] | None = None,
        log_every_steps: int = 0, writer: Any = None, report_progress: Callable[[int], Any] | None = None,
        what: str = 'training', hint: str = '', step_label: str = 'step') -> Any:
  """Trains `state` from state.step to num_steps; returns the final state (saves awaited).

  batches: host batches (a grain iterator, whose position `save` checkpoints). save(state, metrics): one checkpoint
  of state.step, with validation metrics (or None: a mid-epoch stop). end_epoch(state, step, train_row) runs at
  each epoch end and returns the metrics to save with that epoch's checkpoint. With a writer, the train_* scalars
  of each log point are written. `what`, `hint` and `step_label` word the NaN error.
  """
  first_step = int(state.step)
  epoch_window: Window = []
  log_window: Window = []
  for step in progress.progress(range(first_step + 1, num_steps + 1), num_steps - first_step,
                                f'{what}: {num_steps // steps_per_epoch} epochs x {steps_per_epoch} steps'):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, step_metrics = train_step(state, mesh_lib.to_global_batch(next(batches), batch_sharding))
    epoch_window.append((step, step_metrics))
    log_window.append((step, step_metrics))
    if report_progress is not None:
      report_progress(step)
    epoch_end = step % steps_per_epoch == 0
    if (log_every_steps and step % log_every_steps == 0) or epoch_end:
      check_finite(log_window, what, hint, step_label)
      if writer is not None:
        writer.write_scalars(step, merge(log_window))
      log_window = []
    if epoch_end:
      train_row = merge(epoch_window)
      epoch_window = []
      save(state, end_epoch(state, step, train_row) if end_epoch is not None else None)
    if stop.should_stop(step, manager):
      if not epoch_end:
        check_finite(log_window, what, hint, step_label)  # Never save a state that a NaN step produced.
        save(state, None)
      checkpoints.wait(manager)
      manager.close()
      raise preemption.Preempted(step, str(manager.directory), stop.signal_name)
  checkpoints.wait(manager)
  return state
