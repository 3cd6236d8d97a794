"""config_check.validate: every field refused in one place, naming the field, before any work."""

import pytest

from configs import autoencoder, cnn, cnn_augment, multisource, resnet, tiny, vgg
from lungjax import config_check


@pytest.mark.parametrize('module', [autoencoder, cnn, cnn_augment, resnet, tiny, vgg])
def test_the_shipped_configs_pass_every_mode(module):
  for mode in config_check.MODES:
    config = module.get_config()
    assert config_check.validate(config, mode) is None
    # validate really read this config in this mode: the same config with one field broken is refused, by name.
    config.eval.batch_size = 0
    with pytest.raises(ValueError, match=r'config\.eval\.batch_size'):
      config_check.validate(config, mode)
  # And the training checks read the shipped values: an image size the model cannot take is refused.
  config = module.get_config()
  config.data.image_size = 4
  with pytest.raises(ValueError, match=r'config\.data\.image_size=4'):
    config_check.validate(config, 'train')
  assert tuple(module.get_config().data.classes) == ('Covid', 'Normal', 'Viral Pneumonia')


@pytest.mark.parametrize('field, value, message', [
    ('data.classes', ('Covid',), 'config.data.classes'),
    ('data.classes', ('Covid', 'Covid'), 'config.data.classes'),
    ('data.image_size', 4, 'config.data.image_size=4'),
    ('data.val_fraction', 1.5, 'config.data.val_fraction'),
    ('train.num_epochs', 0, 'config.train.num_epochs=0'),
    ('train.learning_rate', 0.0, 'config.train.learning_rate=0.0'),
    ('train.log_every_steps', 0, 'config.train.log_every_steps=0'),
    ('train.class_weighting', 'inverse', 'config.train.class_weighting'),
    ('train.source_weighting', 'by_size', 'config.train.source_weighting'),
    ('train.lr_schedule', 'step', 'config.train.lr_schedule'),
    ('checkpoint.keep_latest', 0, 'config.checkpoint.keep_latest=0'),
    ('checkpoint.keep_best', -1, 'config.checkpoint.keep_best=-1'),
    ('cv.folds', 1, 'config.cv.folds=1'),
    ('seeds', 0, 'config.seeds=0'),
    ('augment.rotation_prob', 1.5, 'config.augment.rotation_prob'),
    ('data.extra_class_names', 'COVID=Covid', 'config.data.extra_class_names'),
])
def test_a_bad_training_field_is_named(field, value, message):
  config = tiny.get_config()
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, 'train')


@pytest.mark.parametrize('mode', config_check.MODES)
@pytest.mark.parametrize('field, value, message', [
    ('checkpoint.best_metric', 'auc', 'config.checkpoint.best_metric'),
    ('checkpoint.on_mismatch', 'ignore', 'config.checkpoint.on_mismatch'),
    ('eval.tta_views', -1, 'config.eval.tta_views'),
    ('eval.n_bootstrap', 0, 'config.eval.n_bootstrap=0'),
    ('train.keep_freed_host_memory_gb', -1.0, 'config.train.keep_freed_host_memory_gb'),
])
def test_a_bad_field_of_every_mode_is_named(mode, field, value, message):
  config = tiny.get_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, mode)


def test_folds_and_seeds_together_are_refused():
  config = tiny.get_config()
  config.cv.folds, config.seeds = 3, 2
  with pytest.raises(ValueError, match='config.cv.folds=3 and config.seeds=2'):
    config_check.validate(config)


def test_distributed_fields_are_checked_only_when_enabled():
  config = tiny.get_config()
  config.distributed.num_processes = -1
  config_check.validate(config)
  config.distributed.enabled = True
  with pytest.raises(ValueError, match='config.distributed.num_processes'):
    config_check.validate(config)


def test_an_unknown_mode_is_refused():
  with pytest.raises(ValueError, match='--mode'):
    config_check.validate(tiny.get_config(), 'predict')


def test_a_missing_extra_source_folder_is_named():
  config = multisource.get_config()
  config.data.extra_root = '/no/such/folder'
  with pytest.raises(FileNotFoundError, match='config.data.extra_root'):
    config_check.validate(config)
