"""grain datasets over decoded images: seeded shuffled train batches, padded and masked eval batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import grain
import numpy as np


class ImageSource(Protocol):
  """Random access to N images: an in-memory NxHxWx3 array, or prepared.PreparedImages (read from disk)."""

  def __len__(self) -> int: ...

  def __getitem__(self, indices_B: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True, eq=False)
class GatherBatch:
  """Maps a global batch of indices to this process's rows {'image': BxHxWx3 uint8, 'label': B int32}, plus
  'weight' (B float32, each image's loss weight) when weights_N is given."""

  images_NHWC: ImageSource
  labels_N: np.ndarray
  start: int
  size: int
  weights_N: np.ndarray | None = None

  def __call__(self, indices_B: np.ndarray) -> dict[str, np.ndarray]:
    indices_B = indices_B[self.start:self.start + self.size]
    batch = {'image': self.images_NHWC[indices_B], 'label': self.labels_N[indices_B]}
    if self.weights_N is not None:
      batch['weight'] = self.weights_N[indices_B]
    return batch


@dataclasses.dataclass(frozen=True)
class PadBatch:
  """Pads a batch to `batch_size` rows and adds 'mask' (1 for real rows, 0 for padding)."""

  batch_size: int

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(batch['label'])
    padded = {k: np.concatenate([v, np.zeros((self.batch_size - n, *v.shape[1:]), v.dtype)])
              for k, v in batch.items()}
    padded['mask'] = (np.arange(self.batch_size) < n).astype(np.float32)
    return padded


def process_batch_size(global_batch_size: int, shard_options: grain.sharding.ShardOptions | None = None) -> int:
  """Returns this process's share of a global batch; the batch must split evenly over processes."""
  shard_count = (shard_options or grain.sharding.ShardByJaxProcess()).shard_count
  if global_batch_size % shard_count:
    raise ValueError(f'batch size {global_batch_size} does not split over {shard_count} processes')
  return global_batch_size // shard_count


def process_rows(global_batch_size: int, shard_options: grain.sharding.ShardOptions | None) -> tuple[int, int]:
  """(start, size) of this process's rows in every global batch: shard i of n keeps rows [i*B/n, (i+1)*B/n)."""
  shard_options = shard_options or grain.sharding.ShardByJaxProcess()
  per_process = process_batch_size(global_batch_size, shard_options)
  return shard_options.shard_index * per_process, per_process


def train_dataset(
    images_NHWC: ImageSource, labels_N: np.ndarray, *, global_batch_size: int, num_epochs: int, seed: int,
    shard_options: grain.sharding.ShardOptions | None = None, weights_N: np.ndarray | None = None,
    host_augment: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None
) -> grain.MapDataset:
  """Returns num_epochs x (n // batch) batches, reshuffled each epoch, the remainder dropped.

  With weights_N (each image's loss weight, e.g. splits.example_weights) every batch carries 'weight'.
  host_augment (e.g. augment.JpegReencode) runs on each batch on the host with a generator seeded by `seed` and
  the batch's index: the same draws after a resume.
  Every process shuffles the same way and keeps its own slice of each global batch (shard_options: by JAX
  process unless given).
  """
  if len(labels_N) < global_batch_size:
    raise ValueError(f'{len(labels_N)} training images are fewer than one batch of {global_batch_size}: '
                     'lower config.train.batch_size or config.data.val_fraction')
  start, per_process = process_rows(global_batch_size, shard_options)
  dataset = grain.MapDataset.range(len(labels_N)).shuffle(seed=seed)
  dataset = dataset.batch(global_batch_size, drop_remainder=True)
  gather = GatherBatch(images_NHWC, labels_N, start, per_process,
                       None if weights_N is None else np.asarray(weights_N, np.float32))
  dataset = dataset.map(gather).repeat(num_epochs)
  return dataset if host_augment is None else dataset.random_map(host_augment, seed=seed)


def eval_dataset(images_NHWC: ImageSource, labels_N: np.ndarray, *, global_batch_size: int,
                 shard_options: grain.sharding.ShardOptions | None = None) -> grain.MapDataset:
  """Returns batches in file order, the last one padded, each with a 'mask' so every image counts once.

  Each process keeps its slice of every global batch (padded to its share), like train_dataset.
  """
  start, per_process = process_rows(global_batch_size, shard_options)
  dataset = grain.MapDataset.range(len(labels_N)).batch(global_batch_size, drop_remainder=False)
  return dataset.map(GatherBatch(images_NHWC, labels_N, start, per_process)).map(PadBatch(per_process))
