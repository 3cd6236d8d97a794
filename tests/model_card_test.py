"""The model card: training writes it with the run's figures; --mode=eval appends its folder's, leaving the rest."""

import json
import os

import pytest

from lungjax import checkpoints, evaluate
from lungjax.report import model_card
from lungjax.runtime import workdir as workdir_lib
from tests.conftest import CLASSES
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture)


def _card(workdir):
  with open(os.path.join(workdir, model_card.JSON_NAME)) as f:
    return json.load(f)


def test_training_writes_the_card_with_the_runs_figures(trained_workdir):
  card = _card(trained_workdir)
  for key in ('intended_use', 'model', 'training_data', 'preprocessing', 'recipe', 'validation', 'calibration',
              'caveat', 'versions', 'git_commit', 'date'):
    assert key in card, key
  assert 'must not be used for diagnosis' in card['intended_use']
  with open(os.path.join(trained_workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(trained_workdir, 'eval', 'val', 'metrics.json')) as f:
    val = json.load(f)
  with open(os.path.join(trained_workdir, 'calibration.json')) as f:
    calibration = json.load(f)
  config = checkpoints.load_run_config(trained_workdir)
  assert card['model']['n_params'] == summary['n_params'] and card['model']['name'] == config.model.name
  counts = card['training_data']['counts']
  assert sum(counts['train'].values()) == summary['n_train'] and sum(counts['val'].values()) == summary['n_val']
  assert list(counts['train']) == list(CLASSES)
  assert card['training_data']['fingerprint']['train_files']['n'] == summary['n_train']
  assert len(card['training_data']['fingerprint']['train_files']['sha256']) == 64
  assert card['recipe']['learning_rate'] == config.train.learning_rate and card['recipe']['lr_schedule'] == 'constant'
  assert card['recipe']['epochs'] == config.train.num_epochs and card['recipe']['batch_size'] == config.train.batch_size
  assert card['recipe']['augmentation'] == config.augment.enabled
  assert card['preprocessing']['image_size'] == config.data.image_size
  validation = card['validation']
  assert validation['accuracy']['value'] == val['accuracy']
  assert validation['accuracy']['interval'] == val['intervals']['accuracy']['wilson']
  assert validation['macro_recall']['value'] == val['macro_avg']['recall']
  assert validation['per_class']['Covid']['sensitivity']['value'] == val['per_class']['Covid']['sensitivity']
  assert validation['per_class']['Covid']['specificity']['interval'] == (
      val['intervals']['per_class']['Covid']['specificity'])
  assert card['calibration']['temperature'] == calibration['temperature']
  assert card['calibration']['ece_raw'] == calibration['ece_raw']
  assert card['caveat'] == config.eval.caveat
  assert card['versions']['jax'] and card['versions']['flax']
  markdown = open(os.path.join(trained_workdir, model_card.MARKDOWN_NAME)).read()
  assert 'Research only' in markdown and f'{summary["n_params"]:,} parameters' in markdown
  assert f'{val["accuracy"]:.3f}' in markdown and card['training_data']['fingerprint']['train_files']['sha256'] in markdown


def test_eval_appends_its_figures_and_keeps_the_rest(trained_workdir, synthetic_root):
  before_json = _card(trained_workdir)
  markdown_path = os.path.join(trained_workdir, model_card.MARKDOWN_NAME)
  before_markdown = open(markdown_path).read()
  config = checkpoints.load_run_config(trained_workdir)
  with config.unlocked():
    config.eval.dir = os.path.join(synthetic_root, 'test')
  metrics = evaluate.evaluate_checkpoint(config, trained_workdir)
  after = _card(trained_workdir)
  assert {k: v for k, v in after.items() if k != 'evaluations'} == {
      k: v for k, v in before_json.items() if k != 'evaluations'}
  entry = after['evaluations'][-1]
  assert len(after['evaluations']) == len(before_json['evaluations']) + 1
  name = 'folder-' + workdir_lib.folder_identity([config.eval.dir])
  assert entry['name'] == name and entry['n_images'] == metrics['n_images'] == 12
  assert entry['accuracy']['value'] == metrics['accuracy']
  assert entry['accuracy']['interval'] == metrics['intervals']['accuracy']['wilson']
  assert entry['macro_recall']['value'] == metrics['macro_avg']['recall']
  markdown = open(markdown_path).read()
  assert markdown.startswith(before_markdown) and f'## Evaluation: {name}' in markdown[len(before_markdown):]
  assert f'{metrics["accuracy"]:.3f}' in markdown[len(before_markdown):]


def test_a_workdir_without_a_card_gets_none_appended(tmp_path):
  assert model_card.append_evaluation(str(tmp_path), {'accuracy': 1.0}, 'x') is None
  assert not os.listdir(tmp_path)


def test_git_commit_is_absent_outside_a_checkout(monkeypatch, tmp_path):
  monkeypatch.setattr(model_card.os.path, 'abspath', lambda _: str(tmp_path / 'lungjax' / 'model_card.py'))
  (tmp_path / 'lungjax').mkdir()
  monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
  assert model_card.git_commit() is None


if __name__ == '__main__':
  pytest.main([__file__])
