"""The training input: decoded, split images (loading) turned into the training run's seeded batches.

training_batches(config, data) owns everything between the decoded images and the loop: the host's decoding
scratch handed back (cpu.host_memory), the class and per-image loss weights (splits, sources), the host-side
augmentation (augment) and the grain iterator whose state the checkpoints save (pipeline). It lives apart from
pipeline.py and loading.py because augment's grid command imports both of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grain
import jax
import ml_collections
import numpy as np
from absl import logging

from lungjax.cpu import host_memory
from lungjax.data import augment, images, loading, pipeline, sources as sources_lib, splits

# Threads and prefetch of the training iterator; the thread count is part of the run fingerprint.
READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass
class TrainingBatches:
  """A run's batches: the grain iterator (checkpointed), its length and the loss weights it was built with."""

  data_iter: grain.DatasetIterator
  weights_C: np.ndarray  # Each class's loss weight.
  weights_N: np.ndarray | None  # Each training image's loss weight (config.train.source_weighting), or None.
  steps_per_epoch: int
  num_steps: int
  num_threads: int
  augment_fn: Callable[[jax.Array, jax.Array], jax.Array] | None  # The on-device part of config.augment, or None.


def class_weights(labels_N: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """The loss weight of each class: balanced over the training labels, or all ones."""
  num_classes = len(config.data.classes)
  if config.train.class_weighting == 'none':
    return np.ones(num_classes, np.float32)
  return splits.balanced_class_weights(labels_N, num_classes)


def example_weights(config: ml_collections.ConfigDict, train: images.DecodedImages, weights_C: np.ndarray) -> np.ndarray | None:
  """Per-image loss weights with config.train.source_weighting (logged per source and class), or None."""
  if config.train.source_weighting == 'none':
    return None
  classes = tuple(config.data.classes)
  sources_N, source_names = sources_lib.source_indices(train)
  weights_N = splits.example_weights(train.labels_N, sources_N, weights_C, config.train.source_weighting)
  logging.info('source weighting %s: mean weight per (source, class): %s', config.train.source_weighting, {
      f'{name}/{c}': round(float(weights_N[(sources_N == s) & (train.labels_N == k)].mean()), 4)
      for s, name in enumerate(source_names) for k, c in enumerate(classes)
      if np.any((sources_N == s) & (train.labels_N == k))})
  return weights_N


def training_batches(config: ml_collections.ConfigDict, data: loading.TrainingData) -> TrainingBatches:
  """config.train.num_epochs of seeded, shuffled (and host-augmented) batches of data.train, with their loss
weights and the on-device augmentation the train step applies to them."""
  host_memory.release_free_memory()  # The decoders' full-size scratch goes back to the system before training.
  classes = tuple(config.data.classes)
  weights_C = class_weights(data.train.labels_N, config)
  logging.info('class weights: %s%s', dict(zip(classes, np.round(weights_C, 4).tolist())),
               ' (not used: source_weighting within_source weighs each image, below)'
               if config.train.source_weighting == 'within_source' else '')
  weights_N = example_weights(config, data.train, weights_C)
  steps_per_epoch = len(data.train) // config.train.batch_size
  dataset = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                   global_batch_size=config.train.batch_size,
                                   num_epochs=config.train.num_epochs, seed=config.seed, weights_N=weights_N,
                                   host_augment=augment.host_augment_fn(config.augment))
  return TrainingBatches(data_iter=iter(dataset.to_iter_dataset(READ_OPTIONS)), weights_C=weights_C,
                         weights_N=weights_N, steps_per_epoch=steps_per_epoch,
                         num_steps=steps_per_epoch * config.train.num_epochs, num_threads=READ_OPTIONS.num_threads,
                         augment_fn=augment.make_augment_fn(config.augment))
