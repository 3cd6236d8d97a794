"""Metrics against hand-computed values, and the report files they become."""

import json
import os

import numpy as np
from PIL import Image

from lungjax import metrics, report

CLASSES = ('Covid', 'Normal', 'Viral Pneumonia')


def _one_hot(predictions):
  return np.eye(3)[predictions]


def test_classification_metrics_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 2])
  predicted = np.array([0, 0, 1, 1, 2, 2])
  result = metrics.classification_metrics(labels, _one_hot(predicted), CLASSES)
  assert result['confusion_matrix'] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
  assert result['accuracy'] == 4 / 6
  covid, normal, viral = (result['per_class'][c] for c in CLASSES)
  assert (covid['precision'], covid['recall'], covid['support']) == (1.0, 2 / 3, 3)
  assert (normal['precision'], normal['recall']) == (0.5, 0.5)
  assert (viral['precision'], viral['recall']) == (0.5, 1.0)
  np.testing.assert_allclose(covid['f1'], 0.8)
  np.testing.assert_allclose(result['macro_avg']['recall'], (2 / 3 + 0.5 + 1.0) / 3)
  np.testing.assert_allclose(result['weighted_avg']['recall'], (3 * 2 / 3 + 2 * 0.5 + 1.0) / 6)


def test_absent_class_has_support_zero_and_is_left_out_of_macro():
  labels = np.array([0, 0, 1])
  result = metrics.classification_metrics(labels, _one_hot(np.array([0, 2, 1])), CLASSES)
  assert result['per_class']['Viral Pneumonia']['support'] == 0
  assert result['per_class']['Viral Pneumonia']['precision'] == 0.0  # Predicted once, never right.
  assert result['macro_avg_classes'] == ['Covid', 'Normal']
  np.testing.assert_allclose(result['macro_avg']['recall'], (0.5 + 1.0) / 2)


def test_mean_cross_entropy():
  probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
  np.testing.assert_allclose(metrics.mean_cross_entropy(np.array([0, 1]), probabilities),
                             -(np.log(0.5) + np.log(0.8)) / 2)


def test_report_files_have_the_study_table_goals_and_no_png_metadata(tmp_path):
  labels = np.array([0, 0, 1, 2])
  result = metrics.classification_metrics(labels, _one_hot(np.array([0, 0, 1, 2])), CLASSES)
  result['checkpoint_step'] = 12
  report.write_evaluation(result, str(tmp_path), 'cnn on val')
  loaded = json.loads((tmp_path / 'metrics.json').read_text())
  assert loaded['accuracy'] == 1.0 and loaded['checkpoint_step'] == 12
  text = (tmp_path / 'report.md').read_text()
  assert '| macro avg | 1.000 | 1.000 | 1.000 | 4 |' in text
  assert '| macro recall | 1.000 | yes |' in text
  with Image.open(tmp_path / 'confusion_matrix.png') as png:
    assert png.size[0] > 100
    assert not png.text and 'exif' not in png.info
  report.plot_curves([{'epoch': 1, 'train_loss': 1.0, 'train_accuracy': 0.5, 'val_loss': 1.1, 'val_accuracy': 0.4},
                      {'epoch': 2, 'train_loss': 0.5, 'train_accuracy': 0.8, 'val_loss': 0.9, 'val_accuracy': 0.6}],
                     os.path.join(tmp_path, 'curves.png'))
  assert os.path.getsize(tmp_path / 'curves.png') > 1000
