"""Grouped, stratified validation splits and class weights."""

import numpy as np
import pytest

from lungjax.data import folders, splits
from tests.conftest import CLASSES, needs_shared_data, SHARED_TRAIN


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
