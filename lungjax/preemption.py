"""Preemption: on SIGTERM, save at the next step boundary, wait for the save, and stop (exit 0).

With jax.distributed (several processes) orbax's preemption sync point decides, so every process stops at the same
step; a single process uses its own SIGTERM handler. The flag lives in a StopRequest owned by one training run, and
the previous handler is restored when the run ends.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp


class Preempted(Exception):
  """Training stopped on request after saving step `step`; rerunning the same command resumes there."""

  def __init__(self, step: int, directory: str):
    super().__init__(f'preempted (SIGTERM): saved checkpoint step {step} in {directory!r}; rerun the same command '
                     'to resume')
    self.step = step


class StopRequest:
  """A context manager that installs a SIGTERM handler setting `requested`, and restores the old one on exit."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self.requested = False
    self._signals = signals
    self._previous: dict[int, Any] = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.requested = True

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():  # Handlers can only be set from the main thread.
      for signum in self._signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def should_stop(self, step: int, manager: ocp.CheckpointManager) -> bool:
    """True when training should save `step` and stop: orbax's sync point across processes, else our flag."""
    if jax.process_count() > 1:
      return manager.reached_preemption(step)
    return self.requested
