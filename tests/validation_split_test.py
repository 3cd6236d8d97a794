"""Issue 26 High 4: `--config.eval.dir=@validation` with another data root is refused, never reported as validation."""

import json
import os
import shutil

import pytest

from configs import tiny
from lungjax import checkpoints, evaluate
from tests.conftest import write_image_folder
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture)


def _validation_config(root):
  config = tiny.get_config()
  config.data.root = root
  config.eval.dir = evaluate.VALIDATION
  config.eval.n_bootstrap = 20
  return config


def test_the_runs_own_root_gives_its_validation_split(trained_workdir, synthetic_root):
  metrics = evaluate.evaluate_checkpoint(_validation_config(synthetic_root), trained_workdir, ['eval.dir'])
  summary = json.load(open(os.path.join(trained_workdir, 'summary.json')))
  assert metrics['n_images'] == summary['n_val'] and metrics['out_dir'].endswith(os.path.join('eval', 'validation'))


def test_another_root_is_refused_naming_the_field_and_counts(trained_workdir, synthetic_root, tmp_path):
  other = str(tmp_path / 'other root')
  write_image_folder(os.path.join(other, 'train'), 14, seed=7)  # 42 images: another split of other images.
  cards = len(json.load(open(os.path.join(trained_workdir, 'model_card.json')))['evaluations'])
  with pytest.raises(evaluate.ValidationMismatchError,
                     match=r"config.eval.dir=@validation with config.data.root='.*other root'.*holds 12 validation "
                           r'images.*validated on 9 other ones'):
    evaluate.evaluate_checkpoint(_validation_config(other), trained_workdir, ['eval.dir', 'data.root'])
  # Nothing appended to the model card as "validation".
  assert len(json.load(open(os.path.join(trained_workdir, 'model_card.json')))['evaluations']) == cards


def test_the_same_count_of_other_images_is_refused_too(trained_workdir, synthetic_root, tmp_path):
  other = str(tmp_path / 'same shape')
  shutil.copytree(synthetic_root, other)
  write_image_folder(os.path.join(other, 'train'), 12, seed=3)  # Same names and counts, other pixels.
  with pytest.raises(evaluate.ValidationMismatchError, match='holds 9 validation images.*validated on 9 other'):
    evaluate.evaluate_checkpoint(_validation_config(other), trained_workdir, ['eval.dir', 'data.root'])


def test_a_checkpoint_without_the_record_warns(trained_workdir, synthetic_root, caplog):
  from lungjax import inference  # pylint: disable=g-import-not-at-top
  from lungjax.data import loading  # pylint: disable=g-import-not-at-top
  config = checkpoints.load_run_config(trained_workdir)
  model = inference.load(trained_workdir)
  data = loading.load_training_data(config)
  evaluate.check_validation_split(data, model, trained_workdir)  # Its own: fine.
  model.run_fingerprint = None
  evaluate.check_validation_split(data, model, trained_workdir)
  assert 'records no validation files' in caplog.text
