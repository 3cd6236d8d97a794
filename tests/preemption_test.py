"""SIGTERM and SIGINT (Ctrl-C) set the run's own flag; the previous handlers come back when the run ends; Ctrl-C
during training saves a checkpoint and exits 130 without a traceback."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lungjax.runtime import preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_ctrl_c_sets_the_flag_a_second_one_aborts_and_the_old_handler_is_restored():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested and stop.signal_name == 'SIGINT' and stop.should_stop(3, manager=None)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is previous


def test_a_stop_after_ctrl_c_names_it_and_exits_130():
  stopped = preemption.Preempted(7, '/w/checkpoints', 'SIGINT')
  assert str(stopped).startswith('stopped (SIGINT, Ctrl-C): saved checkpoint step 7') and stopped.exit_code == 130
  assert preemption.Preempted(7, '/w/checkpoints').exit_code == 0
  assert str(preemption.Preempted(7, '/w', '')).startswith('preempted (SIGTERM)')  # The multi-process sync point.


def _committed_steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


@pytest.mark.slow  # Starts a training process: 20-60 s on two busy shared cores.
def test_ctrl_c_during_training_saves_and_exits_130_without_a_traceback(tmp_path, synthetic_root):
  workdir = str(tmp_path / 'run')
  process = subprocess.Popen(
      [sys.executable, '-m', 'lungjax.main', '--config=configs/tiny.py', f'--workdir={workdir}',
       f'--config.data.root={synthetic_root}', '--config.train.num_epochs=2000'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 400
    while process.poll() is None and not _committed_steps(workdir) and time.monotonic() < deadline:
      time.sleep(0.05)  # The first checkpoint is saved at the end of epoch 1: the handlers are installed by then.
    assert process.poll() is None, 'training ended before it could be interrupted'
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
      process.communicate()
  assert process.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr and 'press Ctrl-C again' in stderr
  found = re.search(r'stopped \(SIGINT, Ctrl-C\): saved checkpoint step (\d+)', stdout)
  assert found, stdout[-2000:]
  assert int(found.group(1)) == _committed_steps(workdir)[-1]
  assert int(found.group(1)) < 2000 * 6  # It stopped early: 27 training images, batch 4: 6 steps an epoch.
