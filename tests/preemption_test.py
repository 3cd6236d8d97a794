"""SIGTERM sets the run's own flag; the previous handler comes back when the run ends."""

import os
import signal

from lungjax import preemption


def test_sigterm_sets_the_flag_and_the_old_handler_is_restored():
  calls = []
  previous = signal.signal(signal.SIGTERM, lambda *a: calls.append(a))
  try:
    with preemption.StopRequest() as stop:
      assert not stop.should_stop(3, manager=None)
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.requested and stop.should_stop(3, manager=None)
    os.kill(os.getpid(), signal.SIGTERM)
    assert len(calls) == 1  # Our handler is gone; the one before is back.
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_preempted_names_the_step():
  assert 'step 12' in str(preemption.Preempted(12, '/w/checkpoints'))
