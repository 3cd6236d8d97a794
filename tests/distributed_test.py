"""Multi-host: 2 CPU processes on 127.0.0.1 (gloo) train and evaluate like 1 process on the same global batches."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from lungjax import checkpoints, steps
from lungjax.runtime import distributed, mesh as mesh_lib
from lungjax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300  # For a whole multi-process run; a stuck process is killed, never waited on for ever.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_processes(commands: list[list[str]], env: dict[str, str], log_dir: str) -> list[str]:
  """Runs the commands side by side; returns their logs. If one fails or all run past TIMEOUT_S, kills the others
  and fails with every process's log tail."""
  logs = [os.path.join(log_dir, f'process_{i}.log') for i in range(len(commands))]
  procs = []
  try:
    for command, log in zip(commands, logs):
      with open(log, 'w') as f:
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  texts = [open(log).read() for log in logs]
  if any(p.returncode != 0 for p in procs):
    tails = '\n'.join(f'--- process {i} (exit {p.returncode}; -9: killed after a failure or {TIMEOUT_S} s):\n'
                      f'{text[-3000:]}' for i, (p, text) in enumerate(zip(procs, texts)))
    pytest.fail(f'a process of {len(procs)} failed:\n{tails}')
  return texts


def _main_command(workdir: str, root: str, *extra: str) -> list[str]:
  # 27 training images, batch 12: 2 steps. Eval batches of 4 over 9 validation images: the last one padded.
  return [sys.executable, '-m', 'lungjax.main', '--config=configs/tiny.py', f'--workdir={workdir}',
          f'--config.data.root={root}', '--config.train.batch_size=12', '--config.train.num_epochs=1',
          '--config.eval.n_bootstrap=20', *extra]


def _restore_params(workdir: str) -> tuple[int, dict]:
  """The latest step's parameters of a workdir (saved by any number of processes), restored on this one."""
  config = tiny.get_config()
  model = create_model(config.model, 3)
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), 32, mesh_lib.make_mesh())
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  step = manager.latest_step()
  state = checkpoints.restore_state(manager, step, abstract)
  manager.close()
  return step, {k: np.asarray(v) for k, v in _flat(state.params).items()}


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    out.update(_flat(value, f'{prefix}{key}/') if isinstance(value, dict) else {f'{prefix}{key}': value})
  return out


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path, synthetic_root):
  """2 processes of 1 CPU device each end bit for bit where 1 process with 2 devices ends (same split of every
  batch over 2 devices; 1 process with 1 device differs by about 6e-8, the rounding of a different reduction)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, XLA_FLAGS='')
  one = str(tmp_path / 'one process')
  _run_processes([_main_command(one, synthetic_root)],
                 dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=2'), str(tmp_path))
  two = str(tmp_path / 'two processes')
  port = _free_port()
  logs = _run_processes([_main_command(two, synthetic_root, '--config.distributed.enabled=True',
                                       f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                                       '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}',
                                       '--config.distributed.initialization_timeout_s=60')
                         for i in range(2)], env, str(tmp_path))
  assert 'process 1 of 2' in logs[1]
  assert all('train state: bit-identical on all 2 processes' in log for log in logs)  # Each process's own copy.

  summaries = [json.load(open(os.path.join(w, 'summary.json'))) for w in (one, two)]
  assert [s['num_steps'] for s in summaries] == [2, 2]
  assert len(summaries[0]['devices']) == len(summaries[1]['devices']) == 2
  # The per-epoch history holds the training loss (a mean over both processes' rows) and validation metrics.
  for key in ('train_loss', 'train_accuracy', 'val_loss', 'val_accuracy', 'val_macro_recall'):
    assert summaries[1]['history'][0][key] == summaries[0]['history'][0][key], key

  # Same parameters after 2 steps (orbax saved them collectively from both processes).
  (step_1, params_1), (step_2, params_2) = _restore_params(one), _restore_params(two)
  assert step_1 == step_2 == 2 and params_1.keys() == params_2.keys()
  diffs = {k: float(np.max(np.abs(params_1[k] - params_2[k]))) for k in params_1}
  assert all(np.array_equal(params_1[k], params_2[k]) for k in params_1), f'max abs differences: {diffs}'

  # Evaluation: each of the 9 validation images counted once, in file order, with the same probabilities.
  for split in ('val', 'test'):
    metrics = [json.load(open(os.path.join(w, 'eval', split, 'metrics.json'))) for w in (one, two)]
    assert metrics[0]['n_images'] == metrics[1]['n_images'] == (9 if split == 'val' else 12)
    assert metrics[0]['confusion_matrix'] == metrics[1]['confusion_matrix']
    rows = [open(os.path.join(w, 'eval', split, 'predictions.csv')).read().splitlines() for w in (one, two)]
    assert len(rows[0]) == 1 + metrics[0]['n_images'] and rows[0] == rows[1]  # File, labels, probabilities.


@pytest.mark.parametrize('address', ['10.0.0.2:8476', 'host-0.pod:1234', '[::1]:8476'])
def test_good_coordinator_addresses_pass(address, monkeypatch):
  config = tiny.get_config()
  config.distributed.coordinator_address = address
  assert distributed.check_config(config.distributed) is None
  # initialize hands exactly that address (and nothing undetected) to jax.distributed.initialize.
  calls, updates = [], []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(jax.config, 'update', lambda name, value: updates.append((name, value)))
  config.distributed.enabled = True
  config.distributed.num_processes, config.distributed.process_id = 2, 1
  assert distributed.initialize(config) is True
  assert calls == [{'initialization_timeout': config.distributed.initialization_timeout_s,
                    'coordinator_address': address, 'num_processes': 2, 'process_id': 1}]
  assert updates == [('jax_cpu_collectives_implementation', 'gloo')]
  # One character off and the same field is refused, naming it.
  config.distributed.coordinator_address = address.rsplit(':', 1)[0]
  with pytest.raises(ValueError, match=r'config\.distributed\.coordinator_address'):
    distributed.check_config(config.distributed)


def test_disabled_config_does_not_initialize():
  assert not distributed.initialize(tiny.get_config())
  assert distributed.is_main_process()


@pytest.mark.parametrize('field, value', [('coordinator_address', 'localhost'), ('num_processes', -1),
                                          ('process_id', 2), ('cpu_collectives', 'nccl'),
                                          ('initialization_timeout_s', 0)])
def test_bad_distributed_values_name_the_field(field, value):
  config = tiny.get_config()
  config.distributed.num_processes = 2
  config.distributed[field] = value
  with pytest.raises(ValueError, match=f'config.distributed.{field}'):
    distributed.check_config(config.distributed)


def _enabled(**fields):
  config = tiny.get_config()
  config.distributed.enabled = True
  for key, value in fields.items():
    config.distributed[key] = value
  return config


def test_empty_fields_leave_the_cluster_to_jax(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  assert distributed.initialize(_enabled())  # A Cloud TPU VM: JAX reads the coordinator and ids itself.
  assert calls == [{'initialization_timeout': 300}]
  assert distributed.initialize(_enabled(coordinator_address='10.0.0.2:8476', num_processes=4, process_id=3))
  assert calls[1] == {'initialization_timeout': 300, 'coordinator_address': '10.0.0.2:8476', 'num_processes': 4,
                      'process_id': 3}


def test_a_failed_initialize_says_which_fields_to_set(monkeypatch):
  def fail(**kwargs):
    raise ValueError('coordinator_address should be defined.')
  monkeypatch.setattr(jax.distributed, 'initialize', fail)
  with pytest.raises(RuntimeError, match='config.distributed.coordinator_address, num_processes and process_id'):
    distributed.initialize(_enabled(num_processes=2))
