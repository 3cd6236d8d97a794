"""Shared fixtures: synthetic image folders and the tiny config."""

import atexit
import os
import shutil
import tempfile

# One XLA compilation cache for the test session and the subprocesses its tests start (set before JAX is imported):
# dozens of tests compile the same tiny model's steps. It starts empty, so every run still compiles each program
# once; it only saves the repeats (about a fifth of the suite's time on 2 cores).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lungjax-tests-xla-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import tiny

CLASSES = ('Covid', 'Normal', 'Viral Pneumonia')
SHARED_TRAIN = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'covid19-image-dataset', 'train')
needs_shared_data = pytest.mark.skipif(not os.path.isdir(SHARED_TRAIN), reason='../shared/data is absent')


def striped_image(label: int, rng: np.random.Generator, height: int = 40, width: int = 48) -> np.ndarray:
  """A smooth random image with a bright vertical band placed by the class: easy to learn, and no two images
  are near copies of each other (their thumbnails correlate well below lungjax's 0.96)."""
  low = (rng.random((4, 5)) * 150).astype(np.float32)
  background = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BILINEAR))
  pixels = background[..., None] + rng.random((height, width, 3)) * 30
  band = width // 3
  pixels[:, label * band:(label + 1) * band] += 70
  return np.clip(pixels, 0, 255).astype(np.uint8)


def write_image_folder(root: str, per_class: int, seed: int, classes=CLASSES) -> str:
  """Writes root/<class>/<i>.png synthetic images and returns root."""
  rng = np.random.default_rng(seed)
  for label, name in enumerate(classes):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      Image.fromarray(striped_image(label, rng)).save(os.path.join(root, name, f'{i:03d}.png'))
  return root


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
  """A data root with train/ (12 per class) and test/ (4 per class) of synthetic striped images."""
  root = str(tmp_path_factory.mktemp('synthetic data'))  # A space in the path, on purpose.
  write_image_folder(os.path.join(root, 'train'), 12, seed=0)
  write_image_folder(os.path.join(root, 'test'), 4, seed=1)
  return root


@pytest.fixture
def tiny_config(synthetic_root) -> ml_collections.ConfigDict:
  """The tiny config pointed at the synthetic data."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  return config
