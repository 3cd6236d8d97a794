"""evaluate.py: sharded, padded, masked prediction in image order; metrics and per-source metrics; the predictions
CSV round trip; test-time augmentation keys (--mode=eval end to end: main_test, predict_test)."""

import jax
import numpy as np
import pytest

from configs import tiny
from lungjax import evaluate, metrics as metrics_lib
from lungjax.runtime import mesh as mesh_lib
from lungjax.data import images

CLASSES = ('Covid', 'Normal', 'Viral Pneumonia')


def _decoded(labels, sources_N=None, names=()):
  n = len(labels)
  pixels = (np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8))
  return images.DecodedImages(pixels, np.asarray(labels, np.int32), tuple(f'{c}/{i}.png' for i, c in enumerate(labels)),
                              tuple(f'h{i}' for i in range(n)), np.zeros((n, 4), np.float32), (),
                              sources_N=None if sources_N is None else np.asarray(sources_N, np.int32),
                              source_names=tuple(names))


def test_predict_probabilities_keeps_every_image_once_in_order_and_drops_the_padding():
  decoded = _decoded([0, 1, 2, 0, 1])
  seen = []

  def eval_step(state, batch):
    assert state == 'state' and batch['image'].shape[0] == 4  # 5 images: two batches of 4, the last padded.
    seen.append(batch['image'].shape)
    first_pixel_B = batch['image'][:, 0, 0, 0].astype(np.float32)
    return jax.numpy.stack([first_pixel_B, jax.nn.one_hot(batch['label'], 3)[:, 1], jax.numpy.zeros(4)], axis=-1)

  found = evaluate.predict_probabilities(eval_step, 'state', decoded, 4, mesh_lib.make_mesh())
  assert len(seen) == 2 and found.shape == (5, 3)
  np.testing.assert_array_equal(found[:, 0], [0, 1, 2, 3, 4])  # Each image's own row, in order.
  np.testing.assert_array_equal(found[:, 1], [0, 1, 0, 0, 1])


def test_evaluation_metrics_add_the_mean_cross_entropy():
  labels = np.array([0, 1, 2, 2])
  probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]])
  found = evaluate.evaluation_metrics(labels, probabilities, CLASSES)
  np.testing.assert_allclose(found['loss'], -np.mean(np.log([0.7, 0.8, 0.6, 0.25])))
  assert found['accuracy'] == 0.75 and found == {**metrics_lib.classification_metrics(labels, probabilities, CLASSES),
                                                 'loss': found['loss']}


def test_per_source_metrics_are_each_sources_rows_alone_and_empty_for_one_source():
  config = tiny.get_config()
  config.eval.n_bootstrap = 20
  probabilities = np.eye(3)[[0, 1, 2, 1, 1, 2]]
  decoded = _decoded([0, 1, 2, 0, 1, 2], sources_N=[0, 0, 0, 1, 1, 1], names=('kids', 'adult'))
  found = evaluate.per_source_metrics(decoded, probabilities, config)
  assert sorted(found) == ['adult', 'kids'] and found['kids']['accuracy'] == 1.0
  np.testing.assert_allclose(found['adult']['accuracy'], 2 / 3)
  assert found['adult']['n_images'] == 3 and 'intervals' in found['adult']
  assert evaluate.per_source_metrics(_decoded([0, 1]), np.eye(3)[[0, 1]], config) == {}


def test_validation_row_is_the_val_columns_with_each_sources_recall_and_the_worst():
  config = tiny.get_config()
  config.data.classes, config.eval.batch_size = CLASSES, 4
  decoded = _decoded([0, 1, 2, 0, 1, 2], sources_N=[0, 0, 0, 1, 1, 1], names=('kids', 'adult'))
  predicted = np.asarray([0, 1, 2, 1, 1, 2])  # kids all right; adult's Covid called Normal.

  def eval_step(state, batch):  # The image's first pixel is its index (_decoded): its row of `predicted`.
    index_B = batch['image'][:, 0, 0, 0].astype(np.int32)
    return jax.numpy.asarray(np.eye(3, dtype=np.float32)[predicted[np.minimum(np.asarray(index_B), 5)]] * 0.98 + 0.01)

  row = evaluate.validation_row(eval_step, 'state', decoded, config, mesh_lib.make_mesh())
  assert row['val_macro_recall/kids'] == 1.0
  np.testing.assert_allclose(row['val_macro_recall/adult'], 2 / 3)  # Covid 0, Normal 1, Viral Pneumonia 1.
  assert row['val_worst_source_macro_recall'] == row['val_macro_recall/adult']
  np.testing.assert_allclose(row['val_accuracy'], 5 / 6)
  assert {'val_loss', 'val_macro_precision', 'val_macro_recall', 'val_macro_f1'} <= set(row)
  one_source = evaluate.validation_row(eval_step, 'state', _decoded([0, 1, 2, 0]), config, mesh_lib.make_mesh())
  assert one_source['val_worst_source_macro_recall'] == one_source['val_macro_recall']
  assert evaluate.validation_row(eval_step, 'state', _decoded([]), config, mesh_lib.make_mesh()) == {}


def test_predictions_csv_round_trips_files_labels_and_six_decimals(tmp_path):
  decoded = _decoded([2, 0, 1])
  probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3333333, 0.3333334, 0.3333333]])
  path = str(tmp_path / 'predictions.csv')
  evaluate.write_predictions(decoded, probabilities, CLASSES, path)
  lines = (tmp_path / 'predictions.csv').read_text().splitlines()
  assert lines[0] == 'file,true,predicted,Covid,Normal,Viral Pneumonia'
  assert lines[1] == '2/0.png,Viral Pneumonia,Viral Pneumonia,0.100000,0.200000,0.700000'
  files, labels_N, probabilities_NC = evaluate.read_predictions(path, CLASSES)
  assert files == list(decoded.paths) and labels_N.tolist() == [2, 0, 1]
  np.testing.assert_allclose(probabilities_NC, probabilities, atol=5e-7)


def test_view_keys_are_the_plain_view_then_one_distinct_seeded_key_per_view():
  keys = evaluate.view_keys(3, 2)
  assert len(keys) == 3 and keys[0] is None
  assert not np.array_equal(jax.random.key_data(keys[1]), jax.random.key_data(keys[2]))
  np.testing.assert_array_equal(jax.random.key_data(keys[2]), jax.random.key_data(evaluate.view_keys(3, 2)[2]))
  assert evaluate.view_keys(0, 0) == [None]
  with pytest.raises(ValueError, match='config.eval.tta_views=-1'):
    evaluate.view_keys(0, -1)
