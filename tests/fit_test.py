"""The one training loop (lungjax/fit.py): every model trains through it with unchanged per-step losses, NaN checks
name the step, and SIGTERM stops within one step with a checkpoint that resumes to the same result."""

import csv
import json
import os
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import autoencoder, checkpoints, preemption, segmentation, steps, train
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
