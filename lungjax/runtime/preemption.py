"""Preemption and Ctrl-C: on SIGTERM or SIGINT, save at the next step boundary, wait for the save, and stop.

SIGTERM (a scheduler's preemption) ends the process with status 0, SIGINT (Ctrl-C) with 130 (the shell's 128 + 2,
so `train && next` does not go on); either way the checkpoint is whole and rerunning the same command resumes. A
second Ctrl-C aborts at once, without saving (Python's KeyboardInterrupt, with its traceback); the checkpoints
already committed stay valid.

With jax.distributed (several processes) orbax's preemption sync point decides, so every process stops at the same
step on SIGTERM; Ctrl-C is left to Python there (it aborts that process), since one process cannot stop the others
at the same step. A single process uses its own handlers. The flag lives in a StopRequest owned by one training
run, and the previous handlers are restored when the run ends.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp

INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.


class Preempted(Exception):
  """Training stopped on request after saving step `step`; rerunning the same command resumes there."""

  def __init__(self, step: int, directory: str, signal_name: str = 'SIGTERM'):
    signal_name = signal_name or 'SIGTERM'  # With several processes orbax's sync point (SIGTERM) stopped the run.
    what = 'stopped (SIGINT, Ctrl-C)' if signal_name == 'SIGINT' else f'preempted ({signal_name})'
    super().__init__(f'{what}: saved checkpoint step {step} in {directory!r}; rerun the same command to resume')
    self.step = step
    self.signal_name = signal_name

  @property
  def exit_code(self) -> int:
    """The process's exit status: 0 after SIGTERM (a preemption is no failure), 130 after Ctrl-C."""
    return INTERRUPT_EXIT_CODE if self.signal_name == 'SIGINT' else 0


class StopRequest:
  """A context manager that installs SIGTERM and SIGINT handlers setting `requested`, and restores the old ones.

  `signal_name` is the first signal received ('SIGTERM' or 'SIGINT'). A SIGINT after a request raises
  KeyboardInterrupt: the second Ctrl-C aborts without saving.
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
    self.requested = False
    self.signal_name = ''
    self._signals = signals
    self._previous: dict[int, Any] = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # The second Ctrl-C: abort now, without saving.
    if not self.requested:
      self.requested, self.signal_name = True, signal.Signals(signum).name
    if signum == signal.SIGINT:  # os.write: print() from a signal handler can hit a reentrant buffered write.
      os.write(2, b'\nCtrl-C: saving a checkpoint after the current training step, then stopping; press Ctrl-C '
               b'again to abort at once without saving\n')

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():  # Handlers can only be set from the main thread.
      several = jax.distributed.is_initialized()  # Does not start a backend, unlike jax.process_count().
      for signum in self._signals:
        if not (several and signum == signal.SIGINT):
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
