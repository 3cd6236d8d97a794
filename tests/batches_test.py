"""data/batches.py: the class and per-image loss weights, and training_batches (the run's batches and weights)."""

import ml_collections
import numpy as np

from configs import cnn_augment
from lungjax.data import augment, batches, loading, pipeline


def test_class_weights_are_balanced_over_the_training_labels_or_all_ones():
  config = ml_collections.ConfigDict({'data': {'classes': ('a', 'b', 'c')}, 'train': {'class_weighting': 'balanced'}})
  np.testing.assert_allclose(batches.class_weights(np.array([0, 0, 0, 1]), config), [4 / 9, 4 / 3, 0.0], rtol=1e-6)
  config.train.class_weighting = 'none'
  weights = batches.class_weights(np.array([0, 0, 0, 1]), config)
  assert weights.dtype == np.float32 and weights.tolist() == [1.0, 1.0, 1.0]


def test_training_batches_are_the_pipelines_seeded_batches_with_the_runs_weights(tiny_config):
  tiny_config.train.num_epochs = 2
  data = loading.load_training_data(tiny_config)
  made = batches.training_batches(tiny_config, data)
  assert made.steps_per_epoch == len(data.train) // tiny_config.train.batch_size > 0
  assert made.num_steps == 2 * made.steps_per_epoch and made.num_threads == batches.READ_OPTIONS.num_threads
  np.testing.assert_allclose(made.weights_C, batches.class_weights(data.train.labels_N, tiny_config))
  assert made.weights_N is None and made.augment_fn is None  # source_weighting 'none'; augment off in tiny.
  expected = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                    global_batch_size=tiny_config.train.batch_size, num_epochs=2, seed=tiny_config.seed)
  got = list(made.data_iter)
  assert len(got) == made.num_steps == len(expected)
  for index in (0, made.num_steps - 1):  # The same seed: the same images in the same order, both epochs.
    np.testing.assert_array_equal(got[index]['image'], expected[index]['image'])
    np.testing.assert_array_equal(got[index]['label'], expected[index]['label'])


def test_training_batches_carry_the_configs_augmentation_and_per_image_weights(tiny_config):
  tiny_config.augment = cnn_augment.get_config().augment
  tiny_config.train.source_weighting = 'balanced'
  data = loading.load_training_data(tiny_config)
  made = batches.training_batches(tiny_config, data)
  assert made.augment_fn is not None and augment.make_augment_fn(tiny_config.augment) is not None
  assert made.weights_N is not None and made.weights_N.shape == (len(data.train),)
  first = next(made.data_iter)
  assert 'weight' in first and first['weight'].shape == (tiny_config.train.batch_size,)
