"""run_fields: the one declared list of the fields that define a run, what derives from it, and the defaults."""

import json
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import autoencoder as autoencoder_config, cnn, cnn_augment, multisource, resnet, robust, tiny, vgg
from lungjax import autoencoder, checkpoints
from lungjax.runtime import fingerprint, run_fields

_GROUPS = {'run': tuple(f.field for f in run_fields.RUN_FIELDS), 'stage 1': run_fields.STAGE1_FIELDS,
           'runtime': run_fields.RUNTIME_FIELDS, 'digested': run_fields.DIGESTED_FIELDS,
           'other': run_fields.OTHER_FIELDS}


@pytest.mark.parametrize('module', [autoencoder_config, cnn, cnn_augment, multisource, resnet, robust, tiny, vgg])
def test_every_field_of_every_classifier_config_is_declared(module):
  """A field added to a config must be placed: it defines the run, may change at inference, or neither."""
  fields = run_fields.flat(json.loads(json.dumps(module.get_config().to_dict())))
  undeclared = [f for f in fields if not any(run_fields.covers(paths, f) for paths in _GROUPS.values())]
  assert not undeclared, undeclared


def test_a_run_field_is_never_a_runtime_field():
  """What may change at eval / resume cannot also be what defines the run (it would be silently overridden)."""
  for run_field in run_fields.RUN_FIELDS:
    assert not run_fields.covers(run_fields.RUNTIME_FIELDS, run_field.field), run_field
    assert not any(run_fields.covers((run_field.field,), path) for path in run_fields.RUNTIME_FIELDS), run_field
  assert checkpoints.INFERENCE_FIELDS == run_fields.RUNTIME_FIELDS


def _fake_data(n_train=3, n_val=2):
  def images(n):
    return types.SimpleNamespace(paths=[f'/r/train/Covid/{i}.png' for i in range(n)], labels_N=np.zeros(n, np.int32),
                                 pixel_hashes=[str(i) for i in range(n)], __len__=None)

  class Images:
    def __init__(self, n):
      self.paths, self.labels_N, self.pixel_hashes = images(n).paths, np.zeros(n, np.int32), [str(i) for i in range(n)]

    def __len__(self):
      return len(self.paths)

  return types.SimpleNamespace(train_folder=types.SimpleNamespace(folder='/r/train', decoded=None),
                               train=Images(n_train), val=Images(n_val))


def _changed(value):
  """Another value of the same kind."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value * 2 + 1
  if isinstance(value, str):
    return {'none': 'balanced', 'constant': 'cosine'}.get(value, value + 'x')
  if isinstance(value, (tuple, list)):
    return tuple(value) + (tuple(value)[-1],)
  raise AssertionError(value)


@pytest.mark.parametrize('run_field', run_fields.RUN_FIELDS, ids=lambda f: f.field)
def test_each_run_field_is_in_the_fingerprint_at_its_key(run_field):
  config, data = tiny.get_config(), _fake_data()
  abstract = types.SimpleNamespace(params={'w': jnp.zeros(2)})
  saved = fingerprint.run_fingerprint(config, data, abstract, 2)
  *sections, name = run_field.field.split('.')
  node = config
  for section in sections:
    node = node[section]
  if isinstance(node[name], ml_collections.ConfigDict):  # A whole sub-config (model, augment): change one field.
    node, name = node[name], sorted(k for k, v in node[name].items() if isinstance(v, (int, float, str)))[0]
  node[name] = _changed(node[name])
  changed = fingerprint.diff(saved['run'], fingerprint.run_fingerprint(config, data, abstract, 2)['run'])
  assert len(changed) == 1 and changed[0].startswith(run_field.key), changed
  with pytest.raises(fingerprint.FingerprintMismatchError):
    fingerprint.check_resume(saved, fingerprint.run_fingerprint(config, data, abstract, 2), 'error', 'step 6')
  if run_field.arrays:  # eval / explain / predict refuse it too.
    with pytest.raises(fingerprint.FingerprintMismatchError):
      fingerprint.check_inference(saved, config, 'step 6')
  else:
    fingerprint.check_inference(saved, config, 'step 6')


def test_an_omit_default_field_at_its_default_leaves_the_record_as_before():
  record = run_fields.fingerprint_record(tiny.get_config())
  assert 'lr_schedule' not in record and 'source_weighting' not in record
  assert set(record['optimizer']) == {'learning_rate', 'adam_b1', 'adam_b2', 'adam_eps', 'class_weighting',
                                      'freeze_backbone_epochs'}
  assert set(record['split']) == {'val_fraction', 'split_seed', 'near_copy_threshold'}


def test_an_older_config_reads_the_packaged_defaults():
  config = tiny.get_config()
  with config.unlocked():
    del config.train['source_weighting']
    del config.train['lr_schedule']
    del config['autoencoder']
  filled = run_fields.with_defaults(config)
  assert run_fields.value(filled, 'train.source_weighting') == 'none'
  assert filled.train.source_weighting == 'none' and filled.train.lr_schedule == 'constant'
  assert filled.autoencoder.to_dict() == cnn.get_config().autoencoder.to_dict()
  assert filled.train.num_epochs == tiny.get_config().train.num_epochs  # Given values are kept.
  # The model's fields belong to its model: a ResNet is not given the CNN's conv_features.
  assert run_fields.with_defaults(resnet.get_config()).model.to_dict() == resnet.get_config().model.to_dict()
  assert run_fields.fingerprint_record(config) == run_fields.fingerprint_record(tiny.get_config())


def test_stage1_settings_are_the_declared_fields():
  config = autoencoder_config.get_config()
  settings = autoencoder._settings(config)
  assert list(settings) == [f'config.{field}' for field in run_fields.STAGE1_FIELDS]
  assert settings['config.model.conv_features'] == list(config.model.conv_features)
  assert settings['config.seed'] == config.seed


def _format_0(module) -> dict:
  """module's config as a config.json of a lungjax before format_version (and several later fields) existed."""
  saved = json.loads(json.dumps(module.get_config().to_dict()))
  for section, name in (('', 'format_version'), ('', 'task'), ('', 'shortcuts'), ('train', 'lr_schedule'),
                        ('train', 'keep_freed_host_memory_gb'), ('train', 'cpu_compiler_options'),
                        ('data', 'preprocess'), ('data', 'mask_markers'), ('cv', 'by_source'),
                        ('checkpoint', 'fallback_to_good_step'), ('model', 'head'), ('model', 'dtype')):
    (saved[section] if section else saved).pop(name, None)  # A VGG has no head.
  return saved


def test_a_format_0_config_json_is_upgraded_once_on_read(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(_format_0(tiny)))
  config = checkpoints.load_run_config(str(tmp_path))
  assert config.format_version == run_fields.FORMAT_VERSION == 1 and config.task == 'classify'
  assert config.shortcuts.region == 'mask' and config.train.lr_schedule == 'constant' and not config.cv.by_source
  assert config.data.preprocess.to_dict() == cnn.get_config().data.preprocess.to_dict()
  assert config.data.mask_markers is False and config.checkpoint.fallback_to_good_step is False
  # What lungjax ran with before these fields existed, not today's packaged defaults (2.2 GB, the YNNPACK option).
  assert config.train.keep_freed_host_memory_gb == 0.0 and config.train.cpu_compiler_options == ''
  assert config.model.head == 'flatten' and config.model.dtype == 'float32'  # From the CNN's packaged config.
  assert list(config.model.conv_features) == [4, 8, 8] and config.name == 'tiny'  # Saved values kept.
  # The upgraded config restores against the same fingerprint record as the config it was saved from.
  assert run_fields.fingerprint_record(config) == json.loads(json.dumps(run_fields.fingerprint_record(
      tiny.get_config())))


def test_an_upgrade_fills_a_model_from_its_own_packaged_config():
  saved = _format_0(vgg)
  del saved['model']['pooling'], saved['model']['init_from']
  upgraded = run_fields.upgrade(saved)
  assert upgraded['model'] == json.loads(json.dumps(vgg.get_config().model.to_dict()))
  assert 'conv_features' not in upgraded['model']  # Never the CNN's fields.
  lungs_saved = json.loads(json.dumps(__import__('configs.lungs').lungs.get_config().to_dict()))
  del lungs_saved['format_version'], lungs_saved['lungs']['limit'], lungs_saved['model']['downsample']
  upgraded = run_fields.upgrade(lungs_saved)
  assert upgraded['lungs']['limit'] == 0 and upgraded['model']['downsample'] == 2 and upgraded['task'] == 'lungs'


def test_a_current_config_is_unchanged_by_the_upgrade():
  for module in (cnn, tiny, resnet, vgg, multisource, robust, autoencoder_config):
    saved = json.loads(json.dumps(module.get_config().to_dict()))
    assert run_fields.upgrade(saved) == saved
    assert run_fields.upgrade(run_fields.upgrade(_format_0(module))) == run_fields.upgrade(_format_0(module))


@pytest.mark.parametrize('version', [2, -1, '1', True])
def test_a_format_this_lungjax_cannot_read_is_refused_naming_the_file(tmp_path, version):
  saved = json.loads(json.dumps(tiny.get_config().to_dict()))
  saved['format_version'] = version
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=rf"config.json'?: config.format_version={version!r} is not one"):
    checkpoints.load_run_config(str(tmp_path))
