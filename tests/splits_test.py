"""Grouped, stratified validation splits and class weights."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from lungjax.data import folders, loading, splits
from tests.conftest import CLASSES, needs_shared_data, SHARED_TRAIN, write_image_folder


def test_split_is_stratified_seeded_and_covers_every_index():
  labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
  groups = list(range(100))
  train, val = splits.grouped_stratified_split(labels, groups, 0.2, seed=3)
  assert np.bincount(labels[val]).tolist() == [10, 6, 4]
  assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
  again_train, again_val = splits.grouped_stratified_split(labels, groups, 0.2, seed=3)
  assert (again_val == val).all() and (again_train == train).all()
  _, other_val = splits.grouped_stratified_split(labels, groups, 0.2, seed=4)
  assert other_val.tolist() != val.tolist()


def test_copies_stay_on_one_side_for_every_seed():
  labels = np.array([0] * 20 + [1] * 20)
  groups = [i // 2 for i in range(40)]  # Every image has one exact copy beside it.
  for seed in range(20):
    train, val = splits.grouped_stratified_split(labels, groups, 0.25, seed)
    val_groups = {groups[i] for i in val}
    assert not val_groups & {groups[i] for i in train}
    assert all(abs(count - 5) <= 1 for count in np.bincount(labels[val]))  # Within one group of 25%.


@pytest.fixture
def folder_with_copies(tmp_path, tiny_config):
  """tiny_config on a train/ folder of 12 images per class plus, for two images of each class, an exact copy (the
  file copied) and a near copy (every pixel 3 brighter: another pixel hash, a thumbnail that correlates above
  config.data.near_copy_threshold). Returns (config, [[original, exact copy, near copy] paths per copy group])."""
  train = write_image_folder(str(tmp_path / 'train'), 12, seed=5)
  copy_groups = []
  for name in CLASSES:
    for i in (1, 7):
      original = os.path.join(train, name, f'{i:03d}.png')
      exact, near = os.path.join(train, name, f'{i:03d}_exact.png'), os.path.join(train, name, f'{i:03d}_near.png')
      shutil.copy(original, exact)
      pixels = np.asarray(Image.open(original)).astype(np.int16) + 3  # A little brighter.
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(near)
      copy_groups.append([original, exact, near])
  tiny_config.data.root = str(tmp_path)
  return tiny_config, copy_groups


def test_exact_and_near_copies_share_a_group(folder_with_copies):
  config, copy_groups = folder_with_copies
  decoded = loading.load_training_folder(config)[1].decoded
  index = {p: i for i, p in enumerate(decoded.paths)}
  groups = loading.split_groups(decoded, config)
  for original, exact, near in copy_groups:
    assert decoded.pixel_hashes[index[original]] == decoded.pixel_hashes[index[exact]]
    assert decoded.pixel_hashes[index[original]] != decoded.pixel_hashes[index[near]]  # Found as a near copy.
    assert groups[index[original]] == groups[index[exact]] == groups[index[near]]
  assert len(set(groups.tolist())) == len(decoded) - 2 * len(copy_groups)  # No other image is grouped.


@pytest.mark.parametrize('seed', range(6))
def test_copies_land_on_one_side_of_the_validation_split_and_of_every_fold(folder_with_copies, seed):
  config, copy_groups = folder_with_copies
  config.data.split_seed = seed
  data = loading.load_training_data(config)
  assert len(data.train) + len(data.val) == 12 * len(CLASSES) + 2 * len(copy_groups)
  for group in copy_groups:
    assert sum(p in data.val.paths for p in group) in (0, 3), group
    assert sum(p in data.train.paths for p in group) in (0, 3), group
  # Cross-validation's folds (crossval.cross_validate): the same groups, each in the validation part of one fold.
  decoded = data.train_folder.decoded
  index = {p: i for i, p in enumerate(decoded.paths)}
  folds = splits.grouped_stratified_folds(loading.split_strata(decoded), loading.split_groups(decoded, config), 4,
                                          seed)
  for _, val_indices in folds:
    val = set(val_indices.tolist())
    for group in copy_groups:
      assert sum(index[p] in val for p in group) in (0, 3), group


def test_bad_fraction_names_the_field():
  with pytest.raises(ValueError, match='config.data.val_fraction'):
    splits.grouped_stratified_split([0, 1], [0, 1], 1.0, 0)


def test_balanced_class_weights():
  weights = splits.balanced_class_weights([0, 0, 0, 1], 3)
  np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0], rtol=1e-6)


@needs_shared_data
def test_class_weights_of_the_shared_train():
  labels = [r.label for r in folders.scan_split(SHARED_TRAIN, CLASSES).records]
  np.testing.assert_allclose(splits.balanced_class_weights(labels, 3), [0.7537, 1.1952, 1.1952], atol=1e-4)


def _copy_at_correlation(pixels_HWC: np.ndarray, target: float, seed: int) -> tuple[np.ndarray, float]:
  """pixels plus smooth noise scaled (by bisection) so that its grey thumbnail correlates with the original's at
  `target` (within 0.003): (the copy, its r)."""
  from lungjax.data import images  # pylint: disable=g-import-not-at-top
  height, width = pixels_HWC.shape[:2]
  rough = np.random.default_rng(seed).normal(size=(8, 8)).astype(np.float32)
  noise_HW = np.asarray(Image.fromarray(rough).resize((width, height), Image.Resampling.BILINEAR))
  original = images.grey_thumbnail(pixels_HWC)
  low, high = 0.0, 200.0
  for _ in range(60):
    amplitude = (low + high) / 2
    copy = np.clip(pixels_HWC.astype(np.float64) + amplitude * noise_HW[..., None], 0, 255).astype(np.uint8)
    r = float(np.corrcoef(original, images.grey_thumbnail(copy))[0, 1])
    if abs(r - target) < 0.003:
      return copy, r
    low, high = (amplitude, high) if r > target else (low, amplitude)
  raise AssertionError(f'no amplitude gives r {target}')


def test_the_default_near_copy_threshold_groups_r_097_and_not_r_09(tmp_path, tiny_config):
  """issue 26: the study's threshold (0.96) groups a near copy at r ~0.97 and leaves one at r ~0.90 apart (kills a
  threshold raised to 0.995, or lowered to 0.9)."""
  from configs import cnn  # pylint: disable=g-import-not-at-top
  assert tiny_config.data.near_copy_threshold == cnn.get_config().data.near_copy_threshold
  train = write_image_folder(str(tmp_path / 'train'), 12, seed=5)
  covid = os.path.join(train, 'Covid')
  original = np.asarray(Image.open(os.path.join(covid, '001.png')).convert('RGB'))
  made = {}
  for name, target, seed in (('r97', 0.97, 1), ('r90', 0.90, 2)):
    copy, made[name] = _copy_at_correlation(original, target, seed)
    Image.fromarray(copy).save(os.path.join(covid, f'{name}.png'))
  assert 0.967 <= made['r97'] <= 0.973 and 0.897 <= made['r90'] <= 0.903, made
  tiny_config.data.root = str(tmp_path)
  decoded = loading.load_training_folder(tiny_config)[1].decoded
  index = {os.path.basename(p): i for i, p in enumerate(decoded.paths) if os.path.dirname(p) == covid}
  groups = loading.split_groups(decoded, tiny_config)
  assert groups[index['r97.png']] == groups[index['001.png']]
  assert groups[index['r90.png']] != groups[index['001.png']]
  assert np.count_nonzero(groups == groups[index['r90.png']]) == 1  # Grouped with nothing else either.
  assert len(set(groups.tolist())) == len(decoded) - 1  # The one pair is the only group of two.
