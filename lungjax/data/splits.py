"""Seeded, stratified, group-aware validation splits, and the class weights of a label set."""

from __future__ import annotations

import collections
from collections.abc import Hashable, Sequence

import numpy as np


def _groups_by_class(labels_N: np.ndarray, groups_N: Sequence[Hashable]) -> dict[int, list[list[int]]]:
  """Returns {label: [member indices of each group]}, a group filed under the label of its first image."""
  members = collections.defaultdict(list)
  for index, group in enumerate(groups_N):
    members[group].append(index)
  groups_by_class = collections.defaultdict(list)
  for group_members in members.values():
    groups_by_class[int(labels_N[group_members[0]])].append(group_members)
  return groups_by_class


def grouped_stratified_split(
    labels_N: Sequence[int], groups_N: Sequence[Hashable], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train_indices, val_indices): about `val_fraction` of each class in validation.

  Images that share a group (e.g. the same decoded pixels) always land on the same side, so a copy of a
  validation image is never trained on. A group is stratified under the label of its first image.
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'config.data.val_fraction must be in [0, 1), got {val_fraction}')
  labels_N = np.asarray(labels_N)
  groups_by_class = _groups_by_class(labels_N, groups_N)
  rng = np.random.default_rng(seed)
  val = []
  for label in sorted(groups_by_class):
    class_groups = groups_by_class[label]
    target = round(val_fraction * sum(len(g) for g in class_groups))
    taken = 0
    for position in rng.permutation(len(class_groups)):
      size = len(class_groups[position])
      if abs(taken + size - target) < abs(taken - target):  # Take a group only if it brings us closer.
        val.extend(class_groups[position])
        taken += size
  val_indices = np.sort(np.asarray(val, dtype=np.int64))
  train_indices = np.setdiff1d(np.arange(len(labels_N)), val_indices)
  return train_indices, val_indices


def balanced_class_weights(labels_N: Sequence[int], num_classes: int) -> np.ndarray:
  """Returns n / (k * count_c) per class, as Keras users compute `class_weight`; absent classes get 0."""
  counts = np.bincount(np.asarray(labels_N, dtype=np.int64), minlength=num_classes).astype(np.float64)
  weights = np.zeros(num_classes, np.float64)
  present = counts > 0
  weights[present] = counts.sum() / (num_classes * counts[present])
  return weights.astype(np.float32)


# config.train.source_weighting's choices (example_weights).
SOURCE_WEIGHTINGS = ('none', 'balanced', 'within_source')


def example_weights(labels_N: Sequence[int], sources_N: Sequence[int], class_weights_C: np.ndarray,
                    source_weighting: str) -> np.ndarray:
  """The loss weight of each training image: its class's weight, times (source_weighting 'balanced') a factor that
  gives every source present in a class the same total weight within that class.

  Within class c, an image of source s gets n_c / (S_c * n_cs), where n_c counts the class's images, n_cs those of
  source s and S_c the sources that hold the class: each class keeps its total weight (n_c * w_c) and each of its
  sources gets 1/S_c of it. 'none': the class weight alone.

  'within_source' balances the classes inside each source instead, and weighs each source by its size: an image of
  source s and class c gets n_s / (K_s * n_sc), where n_s counts the source's images and K_s its classes (the class
  weights are not used; the mean weight is 1; with one source it is class_weighting='balanced'). Where a class is in
  one source only (the Kaggle set's Viral Pneumonia) and another class in two (Covid), 'balanced' tilts the classes
  the sources share (adult Covid 2 : adult Normal 1 in configs/multisource.py); 'within_source' does not.
  """
  labels_N = np.asarray(labels_N, np.int64)
  weights_N = np.asarray(class_weights_C, np.float64)[labels_N]
  if source_weighting == 'none':
    return weights_N.astype(np.float32)
  if source_weighting not in SOURCE_WEIGHTINGS:
    raise ValueError(f'config.train.source_weighting={source_weighting!r} is not one of {list(SOURCE_WEIGHTINGS)}')
  sources_N = np.asarray(sources_N, np.int64)
  if source_weighting == 'within_source':
    for source in np.unique(sources_N):
      in_source = sources_N == source
      present, counts = np.unique(labels_N[in_source], return_counts=True)
      for label, count in zip(present, counts):
        weights_N[in_source & (labels_N == label)] = in_source.sum() / (len(present) * count)
    return weights_N.astype(np.float32)
  for label in np.unique(labels_N):
    in_class = labels_N == label
    present, counts = np.unique(sources_N[in_class], return_counts=True)
    for source, count in zip(present, counts):
      weights_N[in_class & (sources_N == source)] *= in_class.sum() / (len(present) * count)
  return weights_N.astype(np.float32)


def grouped_stratified_folds(
    labels_N: Sequence[int], groups_N: Sequence[Hashable], num_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
  """Returns num_folds (train_indices, val_indices) pairs; every image is validated exactly once.

  Each group (e.g. a near-copy group) sits in one fold; within each class, groups go, largest first and in a seeded
  order, to the fold that has the fewest images of that class so far.
  """
  if num_folds < 2:
    raise ValueError(f'config.cv.folds must be at least 2, got {num_folds}')
  labels_N = np.asarray(labels_N)
  groups_by_class = _groups_by_class(labels_N, groups_N)
  rng = np.random.default_rng(seed)
  fold_of = np.zeros(len(labels_N), np.int64)
  for label in sorted(groups_by_class):
    class_groups = [groups_by_class[label][i] for i in rng.permutation(len(groups_by_class[label]))]
    class_groups.sort(key=len, reverse=True)  # Stable: the seeded order breaks ties.
    counts = np.zeros(num_folds, np.int64)
    for group_members in class_groups:
      fold = int(np.argmin(counts))
      fold_of[group_members] = fold
      counts[fold] += len(group_members)
  everything = np.arange(len(labels_N))
  return [(everything[fold_of != k], everything[fold_of == k]) for k in range(num_folds)]
