"""The grain datasets: per-epoch reshuffled train batches, padded and masked eval batches."""

import grain
import numpy as np
import pytest

from lungjax.data import pipeline


def _data(n: int):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  return images, np.arange(n, dtype=np.int32) % 3


def test_train_batches_drop_the_remainder_and_reshuffle_each_epoch():
  images, labels = _data(10)
  dataset = pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=3, seed=7)
  batches = list(dataset)
  assert len(batches) == 6  # 3 epochs x (10 // 4).
  epochs = [np.concatenate([b['image'][:, 0, 0, 0] for b in batches[e * 2:(e + 1) * 2]]) for e in range(3)]
  for ids in epochs:
    assert len(set(ids.tolist())) == 8  # No image twice in an epoch.
  assert epochs[0].tolist() != epochs[1].tolist()
  for batch in batches:
    assert (labels[batch['image'][:, 0, 0, 0]] == batch['label']).all()
  same = list(pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=3, seed=7))
  assert all((a['image'] == b['image']).all() for a, b in zip(batches, same))


def test_eval_batches_count_every_image_once():
  images, labels = _data(10)
  batches = list(pipeline.eval_dataset(images, labels, global_batch_size=4))
  assert [b['image'].shape[0] for b in batches] == [4, 4, 4]
  assert [b['mask'].sum() for b in batches] == [4, 4, 2]
  seen = np.concatenate([b['image'][b['mask'] > 0, 0, 0, 0] for b in batches])
  assert seen.tolist() == list(range(10))


def test_process_shards_together_are_the_one_process_batches():
  """Shard i of n keeps rows [i*B/n, (i+1)*B/n) of every global batch: n processes see one process's batches."""
  images, labels = _data(10)
  one = list(pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=2, seed=3))
  shards = [list(pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=2, seed=3,
                                        shard_options=grain.sharding.ShardOptions(i, 2))) for i in range(2)]
  for whole, *parts in zip(one, *shards):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  evals = [list(pipeline.eval_dataset(images, labels, global_batch_size=4,
                                      shard_options=grain.sharding.ShardOptions(i, 2))) for i in range(2)]
  assert [b['mask'].tolist() for b in evals[0]] == [[1, 1], [1, 1], [1, 1]]
  assert [b['mask'].tolist() for b in evals[1]] == [[1, 1], [1, 1], [0, 0]]  # 10 images: shard 1's last is padding.
  seen = np.concatenate([b['image'][b['mask'] > 0, 0, 0, 0] for pair in zip(*evals) for b in pair])
  assert seen.tolist() == list(range(10))
  with pytest.raises(ValueError, match='does not split over 3 processes'):
    pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=1, seed=0,
                           shard_options=grain.sharding.ShardOptions(0, 3))
