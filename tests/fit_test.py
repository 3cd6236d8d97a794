"""The one training loop (lungjax/fit.py): every model trains through it with unchanged per-step losses, NaN checks
name the step, and SIGTERM stops within one step with a checkpoint that resumes to the same result."""

import csv
import json
import os
import signal
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import tiny
from lungjax import autoencoder, checkpoints, fit as fit_lib, segmentation, steps, train
from lungjax.runtime import mesh as mesh_lib, preemption
from lungjax.data import pipeline
from lungjax.configs import lungs as lungs_config
from tests.conftest import striped_image, write_image_folder

# Per-step losses (float32, as hex) of the three tiny runs below, recorded at main 4c58985 with the three loops
# before they were merged into fit.fit (regenerate: LUNGJAX_RECORD_GOLDEN=path pytest tests/fit_test.py -k golden).
GOLDEN_PATH = os.path.join(os.path.dirname(__file__), 'fit_golden_losses.json')


class _Recorder:
  """Wraps the jitted train steps the runs build, keeping each step's loss (on device; fetched at the end)."""

  def __init__(self, monkeypatch):
    self.losses = []
    if hasattr(steps, 'make_train_step'):
      real = steps.make_train_step
      monkeypatch.setattr(steps, 'make_train_step', lambda *a, **k: self._wrap(real(*a, **k), 'metrics'))
    else:  # The loops before fit.fit (only used to record the golden losses).
      real_cls, real_ae = steps.jit_train_step, autoencoder.jit_train_step
      monkeypatch.setattr(steps, 'jit_train_step', lambda *a, **k: self._wrap(real_cls(*a, **k), 'metrics'))
      monkeypatch.setattr(autoencoder, 'jit_train_step', lambda *a, **k: self._wrap(real_ae(*a, **k), 'loss'))
      real_jit = jax.jit

      def jit(fn, *a, **k):
        jitted = real_jit(fn, *a, **k)
        return self._wrap(jitted, 'metrics') if getattr(fn, 'func', None) is segmentation.train_step else jitted

      monkeypatch.setattr(segmentation.jax, 'jit', jit)

  def _wrap(self, step_fn, kind):
    def wrapped(state, batch):
      state, out = step_fn(state, batch)
      self.losses.append(out.loss.total if kind == 'metrics' else out)
      return state, out
    return wrapped

  def hex_losses(self):
    return [float(np.float32(v)).hex() for v in jax.device_get(self.losses)]


def _classifier_run(tmp_path):
  root = str(tmp_path / 'data')
  for name, per_class, seed in (('covid', 10, 0), ('normal', 7, 1), ('viral', 5, 2)):  # Unequal: class weights.
    write_image_folder(os.path.join(root, 'train'), per_class, seed, classes=(name,))
  config = tiny.get_config()
  config.data.root = root
  config.data.classes = ('covid', 'normal', 'viral')
  config.train.num_epochs = 2
  return train.train_and_evaluate(config, str(tmp_path / 'cls'))


def _ae_config():
  config = tiny.get_config()
  config.autoencoder.enabled = True
  config.autoencoder.num_epochs = 2
  config.autoencoder.batch_size = 4
  return config


def _ae_images(n=12):
  rng = np.random.default_rng(0)
  return np.stack([np.asarray(Image.fromarray(striped_image(i % 3, rng)).resize((32, 32))) for i in range(n)])


def _lungs_metadata(folder, n=14):
  """n synthetic 48x48 films, each with a two-lung mask, one patient each, and their metadata.csv."""
  rng = np.random.default_rng(3)
  os.makedirs(folder, exist_ok=True)
  rows = []
  for i in range(n):
    mask = np.zeros((48, 48), np.uint8)
    top, height = rng.integers(4, 12), rng.integers(24, 34)
    mask[top:top + height, 6:20] = mask[top:top + height, 28:42] = 255
    film = np.clip(rng.normal(60, 20, (48, 48)) + (mask > 0) * 110, 0, 255).astype(np.uint8)
    Image.fromarray(film).save(os.path.join(folder, f'film{i}.png'))
    Image.fromarray(mask).save(os.path.join(folder, f'mask{i}.png'))
    rows.append({'file': f'film{i}.png', 'lung_mask': f'mask{i}.png', 'patientid': str(i), 'view': 'PA'})
  path = os.path.join(folder, 'metadata.csv')
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def _lungs_config(metadata):
  config = lungs_config.get_config()
  config.data.image_size = 32
  config.model.features = (4, 8)
  config.model.downsample = 1
  config.train.num_epochs = 2
  config.train.batch_size = 4
  config.eval.batch_size = 4
  config.lungs.metadata = metadata
  return config


def _golden_runs(tmp_path, monkeypatch):
  found = {}
  for name, run in (
      ('classifier', lambda: _classifier_run(tmp_path)),
      ('autoencoder', lambda: autoencoder.train_autoencoder(_ae_config(), str(tmp_path / 'ae'), _ae_images())),
      ('unet', lambda: segmentation.train_and_evaluate(_lungs_config(_lungs_metadata(str(tmp_path / 'films'))),
                                                       str(tmp_path / 'unet')))):
    with monkeypatch.context() as patch:
      recorder = _Recorder(patch)
      run()
    found[name] = recorder.hex_losses()
  return found


def test_every_model_trains_with_the_golden_per_step_losses(tmp_path, monkeypatch):
  """Bit-for-bit on CPU: the classifier (class-weighted CE), stage 1 (MSE) and the U-Net (Dice + CE, augmented)."""
  found = _golden_runs(tmp_path, monkeypatch)
  if os.environ.get('LUNGJAX_RECORD_GOLDEN'):
    with open(os.environ['LUNGJAX_RECORD_GOLDEN'], 'w') as f:
      json.dump(found, f, indent=1)
    pytest.skip('recorded the golden losses')
  with open(GOLDEN_PATH) as f:
    golden = json.load(f)
  for name in golden:
    assert len(found[name]) == len(golden[name]) > 0, name
    assert found[name] == golden[name], (name, [float.fromhex(v) for v in found[name]],
                                         [float.fromhex(v) for v in golden[name]])


# --- fit.fit itself, on a two-parameter least-squares model: cadence, NaN, preemption. ---

class _FakeManager:
  directory = '/nowhere/checkpoints'

  def __init__(self):
    self.closed = False

  def wait_until_finished(self):
    pass

  def close(self):
    self.closed = True


def _least_squares(params, model_state, batch, key):
  del key
  loss = jnp.mean(jnp.square(batch['x'] @ params['w'] - batch['y']))
  return loss, (steps.LossMetrics.single_from_model_output(loss=loss), model_state)


def _fit(batches, num_steps, *, stop, step_hook=None, writer=None, log_every_steps=2):
  mesh = mesh_lib.make_mesh()
  tx = optax.sgd(0.1)
  params = {'w': jnp.zeros(2)}
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={}, opt_state=tx.init(params),
                           dropout_key=jax.random.PRNGKey(0))
  jitted = steps.make_train_step(_least_squares, tx, mesh)

  def train_step(state, batch):
    state, metrics = jitted(state, batch)
    if step_hook is not None:
      step_hook(int(state.step))
    return state, metrics

  saved, ends = [], []
  manager = _FakeManager()
  final = fit_lib.fit(state, iter(batches), manager, stop, train_step=train_step,
                      batch_sharding=mesh_lib.batch_sharded(mesh), num_steps=num_steps, steps_per_epoch=3,
                      save=lambda s, m: saved.append((int(s.step), m)),
                      end_epoch=lambda s, step, row: ends.append((step, row)) or {'val': float(step)},
                      log_every_steps=log_every_steps, writer=writer)
  return final, saved, ends, manager


def _batches(n, nan_at=None):
  rng = np.random.default_rng(0)
  out = []
  for i in range(1, n + 1):
    x = rng.normal(size=(4, 2)).astype(np.float32)
    out.append({'x': x * np.float32(np.nan) if i == nan_at else x, 'y': x @ np.array([1.0, -2.0], np.float32)})
  return out


class _Writer:
  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars):
    self.rows.append((step, scalars))


def test_fit_saves_each_epoch_and_writes_merged_metrics_at_log_points():
  writer = _Writer()
  with preemption.StopRequest() as stop:
    final, saved, ends, _ = _fit(_batches(6), 6, stop=stop, writer=writer)
  assert int(final.step) == 6
  assert saved == [(3, {'val': 3.0}), (6, {'val': 6.0})]
  assert [step for step, _ in writer.rows] == [2, 3, 4, 6]  # Every 2 steps and at each epoch end.
  assert [step for step, _ in ends] == [3, 6] and set(ends[0][1]) == {'train_loss'}
  assert ends[1][1]['train_loss'] < ends[0][1]['train_loss']


def test_fit_names_the_first_non_finite_step_at_the_next_log_point():
  with preemption.StopRequest() as stop, pytest.raises(FloatingPointError, match='at step 5:'):
    _fit(_batches(6, nan_at=5), 6, stop=stop, log_every_steps=0)


def test_sigterm_stops_fit_within_one_step_with_a_checkpoint():
  with preemption.StopRequest() as stop:
    hook = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 4 else None
    with pytest.raises(preemption.Preempted, match='saved checkpoint step 4') as stopped:
      _fit(_batches(6), 6, stop=stop, step_hook=hook)
  assert stopped.value.step == 4 and stopped.value.exit_code == 0


# --- SIGTERM during the autoencoder's stage 1. ---

def _sigterm_at(monkeypatch, at_step):
  """Makes stage 1's jitted step send this process SIGTERM right after step `at_step`."""
  real = autoencoder.jit_train_step

  def jit_train_step(*args, **kwargs):
    jitted = real(*args, **kwargs)

    def step(state, batch):
      state, metrics = jitted(state, batch)
      if int(state.step) == at_step:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, metrics
    return step

  monkeypatch.setattr(autoencoder, 'jit_train_step', jit_train_step)


def test_sigterm_during_stage1_saves_within_one_step_and_resumes_to_the_same_params(tmp_path, monkeypatch):
  config, images_NHWC = _ae_config(), _ae_images()  # 3 steps an epoch, 6 in all.
  straight = autoencoder.train_autoencoder(config, str(tmp_path / 'straight'), images_NHWC)
  workdir = str(tmp_path / 'stopped')
  with monkeypatch.context() as patch:
    _sigterm_at(patch, 4)
    with pytest.raises(preemption.Preempted, match='saved checkpoint step 4') as stopped:
      autoencoder.train_autoencoder(config, workdir, images_NHWC)
  assert stopped.value.step == 4
  assert os.listdir(os.path.join(autoencoder.stage_dir(workdir), 'checkpoints')) == ['4']
  resumed = autoencoder.train_autoencoder(config, workdir, images_NHWC)
  assert (resumed.first_step, resumed.num_steps, resumed.reused) == (4, 6, False)
  assert [row['epoch'] for row in resumed.history] == [1, 2] and resumed.history[0] == straight.history[0]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params), jax.device_get(straight.params))


def test_sigterm_in_stage1_of_a_training_run_stops_the_run_there(tmp_path, monkeypatch, tiny_config):
  tiny_config.autoencoder.enabled = True
  tiny_config.autoencoder.batch_size = 4
  workdir = str(tmp_path / 'run')
  _sigterm_at(monkeypatch, 1)
  with pytest.raises(preemption.Preempted, match='saved checkpoint step 1') as stopped:
    train.train_and_evaluate(tiny_config, workdir)
  assert os.path.join('autoencoder', 'checkpoints') in str(stopped.value)
  assert os.listdir(os.path.join(autoencoder.stage_dir(workdir), 'checkpoints')) == ['1']
  assert not os.path.isdir(checkpoints.checkpoint_dir(workdir)) or not [
      n for n in os.listdir(checkpoints.checkpoint_dir(workdir)) if n.isdigit()]


@flax.struct.dataclass
class _OldAutoencoderState:
  """Stage 1's state class before fit.fit (autoencoder.AutoencoderState at 4c58985)."""

  step: Any
  params: Any
  opt_state: Any


def test_a_stage1_checkpoint_of_the_old_state_class_gets_a_clear_error(tmp_path):
  config, images_NHWC = _ae_config(), _ae_images()
  workdir = str(tmp_path / 'old')
  autoencoder.train_autoencoder(config, workdir, images_NHWC)
  manager = autoencoder.create_manager(workdir)
  restored = checkpoints.restore_verified(manager, 6, autoencoder.abstract_state(
      autoencoder.create_model(config), autoencoder.create_optimizer(config), 32, mesh_lib.make_mesh()))
  old = _OldAutoencoderState(restored.state.step, restored.state.params, restored.state.opt_state)
  data_iter = iter(pipeline.train_dataset(images_NHWC, np.zeros(12, np.int32), global_batch_size=4, num_epochs=1,
                                          seed=0).to_iter_dataset())
  checkpoints.save_items(manager, 7, old, data_iter, {'epochs': restored.history['epochs'][:1], 'n_images': 12},
                         None)
  checkpoints.wait(manager)
  manager.close()
  with pytest.raises(checkpoints.CheckpointMismatchError, match='older lungjax'):
    autoencoder.train_autoencoder(config, workdir, images_NHWC)


def test_sigterm_during_the_unet_run_saves_that_step_and_the_rerun_resumes_there(tmp_path, monkeypatch):
  config = _lungs_config(_lungs_metadata(str(tmp_path / 'films')))
  workdir = str(tmp_path / 'unet')
  real, seen, kill_at = steps.make_train_step, [], [1]

  def make_train_step(*args, **kwargs):
    jitted = real(*args, **kwargs)

    def step(state, batch):
      seen.append(int(state.step))
      state, metrics = jitted(state, batch)
      if int(state.step) in kill_at:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, metrics
    return step

  with monkeypatch.context() as patch:
    patch.setattr(steps, 'make_train_step', make_train_step)
    with pytest.raises(preemption.Preempted, match='saved checkpoint step 1'):
      segmentation.train_and_evaluate(config, workdir)
  assert [n for n in os.listdir(checkpoints.checkpoint_dir(workdir)) if n.isdigit()] == ['1']
  seen.clear()
  kill_at.clear()  # The rerun is not stopped.
  with monkeypatch.context() as patch:
    patch.setattr(steps, 'make_train_step', make_train_step)
    summary = segmentation.train_and_evaluate(config, workdir)
  assert seen[0] == 1 and seen[-1] == summary['num_steps'] - 1  # Resumed after step 1, ran to the end.
  assert [row['epoch'] for row in summary['history']] == [1, 2]
