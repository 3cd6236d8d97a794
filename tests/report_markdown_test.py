"""report.py: metrics.json, report.md (tables, goals, intervals, calibration) and the plots (moved here from
metrics_test)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lungjax import metrics
from lungjax.report import markdown as report
from tests.metrics_test import CLASSES, _one_hot, _sixty_of_sixty_six


def test_the_report_shows_no_recall_for_a_class_the_folder_lacks():
  labels = np.array([0, 0, 1, 1])
  probabilities = _one_hot(np.array([0, 2, 1, 1]))
  result = metrics.with_uncertainty(metrics.classification_metrics(labels, probabilities, CLASSES), labels,
                                    probabilities, n_bootstrap=20, seed=0)
  text = report.report_markdown(result, 'two classes')
  # Precision is defined (one image was called Viral Pneumonia, wrongly); recall, F1 and sensitivity are not.
  row = next(line for line in text.splitlines() if line.startswith('| Viral Pneumonia | 0.000'))
  assert row.count('n/a (no images)') == 2 and row.endswith('| 0 |')
  clinical = [line for line in text.splitlines() if line.startswith('| Viral Pneumonia |')][1]
  assert clinical.startswith('| Viral Pneumonia | n/a (no images) | ')
  assert '| Covid | 1.000 [' in text  # Classes with images keep their figures.


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


def test_report_shows_every_interval_the_auc_table_calibration_and_how_to_read(tmp_path):
  labels, probabilities = _sixty_of_sixty_six()
  result = metrics.with_uncertainty(metrics.classification_metrics(labels, probabilities, CLASSES),
                                    labels, probabilities, n_bootstrap=500, seed=0)
  result['calibration'].update(temperature=1.7, ece_calibrated=0.031, calibrated_by='out of fold', calibrated_how='how')
  report.write_evaluation(result, str(tmp_path), 'cnn on test', labels, probabilities)
  text = (tmp_path / 'report.md').read_text()

  def cell(value, interval):
    return f'{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]'

  assert '| accuracy | | | 0.909 [0.816, 0.958] | 66 |' in text  # Wilson for 60/66.
  row, interval = result['per_class']['Normal'], result['intervals']['per_class']['Normal']
  assert (f'| Normal | {cell(row["precision"], interval["precision"])} | {cell(row["recall"], interval["recall"])} '
          f'| {cell(row["f1"], interval["f1"])} | 20 |') in text
  macro, macro_interval = result['macro_avg'], result['intervals']['macro_avg']
  assert f'| macro avg | {cell(macro["precision"], macro_interval["precision"])} |' in text
  assert f'| macro recall | {cell(macro["recall"], macro_interval["recall"])} |' in text
  assert '| accuracy | 0.909 [0.816, 0.958] | yes | no |' in text  # Met, but not with confidence.
  auc, auc_interval = result['roc_auc'], result['intervals']['roc_auc']
  assert '## ROC AUC' in text and f'| macro | {cell(auc["macro"], auc_interval["macro"])} |' in text
  assert f'| Covid | {cell(auc["per_class"]["Covid"], auc_interval["per_class"]["Covid"])} |' in text
  assert f'confidence bins), raw: {result["calibration"]["ece"]:.3f}.' in text
  assert 'ECE after temperature scaling, out of fold: 0.031 (how).' in text
  assert '## How to read the intervals' in text
  assert 'one image is 1.5 points of accuracy' in text and 'about ±0.07' in text
  assert 'specificity and NPV, are Wilson score intervals from their counts' in text
  assert 'Where every resample gave the same value' not in text  # No bootstrap interval was widened here.
  clinical = result['per_class']['Covid'], result['intervals']['per_class']['Covid']
  assert '| class | sensitivity | specificity | PPV | NPV | PR AUC |' in text
  assert ('| Covid | ' + ' | '.join(cell(clinical[0][k], clinical[1][k])
                                    for k in ('sensitivity', 'specificity', 'ppv', 'npv', 'pr_auc')) + ' |') in text
  assert f'Matthews correlation (multiclass): {cell(result["mcc"], result["intervals"]["mcc"])};' in text
  assert f': {cell(result["brier"], result["intervals"]["brier"])}; log loss: ' in text
  assert f'log loss: {cell(result["log_loss"], result["intervals"]["log_loss"])}.' in text
  # A perfect folder: the report names the intervals the bootstrap could not make.
  perfect = metrics.with_uncertainty(metrics.classification_metrics(labels, np.eye(3)[labels], CLASSES),
                                     labels, np.eye(3)[labels], n_bootstrap=50, seed=0)
  perfect_text = report.report_markdown(perfect, 'perfect')
  assert 'Where every resample gave the same value' in perfect_text and 'per_class.Covid.f1' in perfect_text
  assert '| Covid | 1.000 [0.871, 1.000] | 1.000 [0.912, 1.000] |' in perfect_text  # Wilson 26/26 and 40/40.
  pngs = {}
  for name in ('roc.png', 'reliability.png'):
    with Image.open(tmp_path / name) as png:
      assert png.size[0] > 100 and not png.text and 'exif' not in png.info
      pngs[name] = np.asarray(png.convert('L'))
  assert pngs['roc.png'].std() > 0 and pngs['reliability.png'].std() > 0


def test_write_evaluation_draws_roc_and_reliability_only_given_predictions(tmp_path):
  labels, probabilities = _sixty_of_sixty_six()
  result = metrics.classification_metrics(labels, probabilities, CLASSES)
  report.write_evaluation(result, str(tmp_path / 'old'), 'old call')
  written = sorted(n for n in os.listdir(tmp_path / 'old') if not n.startswith('.'))  # The manifest aside.
  assert written == ['confusion_matrix.png', 'metrics.json', 'report.md']
  with pytest.raises(ValueError, match='both labels_N and probabilities_NC'):
    report.write_evaluation(result, str(tmp_path / 'half'), 'half', labels_N=labels)
  # A folder of one class: every AUC is undefined, and the report and plots say so instead of failing.
  covid = labels == 0
  one_class = metrics.with_uncertainty(metrics.classification_metrics(labels[covid], probabilities[covid], CLASSES),
                                       labels[covid], probabilities[covid], n_bootstrap=50, seed=0)
  report.write_evaluation(one_class, str(tmp_path / 'covid'), 'covid only', labels[covid], probabilities[covid])
  text = (tmp_path / 'covid' / 'report.md').read_text()
  assert '| macro | n/a |' in text and '| Normal | n/a |' in text
  assert os.path.getsize(tmp_path / 'covid' / 'roc.png') > 1000


def test_plots_change_with_what_they_are_given(tmp_path):
  labels, probabilities = _sixty_of_sixty_six()
  shuffled = np.random.default_rng(0).permutation(probabilities)  # A classifier no better than chance.
  drawn = {}
  for name, probabilities_NC in (('good', probabilities), ('chance', shuffled)):
    report.plot_roc(labels, probabilities_NC, CLASSES, str(tmp_path / f'roc_{name}.png'))
    report.plot_reliability(labels, probabilities_NC, str(tmp_path / f'reliability_{name}.png'))
    for kind in ('roc', 'reliability'):
      with Image.open(tmp_path / f'{kind}_{name}.png') as png:
        drawn[kind, name] = np.asarray(png.convert('L'), np.float64)
  for kind in ('roc', 'reliability'):
    assert drawn[kind, 'good'].shape == drawn[kind, 'chance'].shape
    assert np.abs(drawn[kind, 'good'] - drawn[kind, 'chance']).mean() > 0.5, kind
