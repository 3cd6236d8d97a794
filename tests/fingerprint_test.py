"""The run fingerprint: a diff names every changed field; 'fresh' starts over; a host change only warns."""

import pytest

from configs import tiny
from lungjax import config_check
from lungjax.runtime import fingerprint


def _fp(**run):
  base = {'seed': 0, 'batch_size': 4, 'model': {'name': 'cnn', 'conv_features': (4, 8)}, 'classes': ['a', 'b']}
  return {'run': {**base, **run}, 'host': {'cpu_count': 2, 'device_count': 1, 'platform': 'cpu'}}


def test_same_run_resumes():
  assert fingerprint.check_resume(_fp(), _fp(), 'error', 'step 6')


def test_changed_fields_are_refused_with_a_diff():
  with pytest.raises(fingerprint.FingerprintMismatchError) as error:
    fingerprint.check_resume(_fp(), _fp(seed=1, model={'name': 'cnn', 'conv_features': (4, 16)}), 'error', 'step 6')
  message = str(error.value)
  assert 'seed: saved 0, now 1' in message
  assert 'model.conv_features: saved [4, 8], now [4, 16]' in message
  assert 'batch_size' not in message and 'on_mismatch=fresh' in message


def test_fresh_start_on_request_and_missing_fingerprint(capsys):
  assert not fingerprint.check_resume(_fp(), _fp(batch_size=8), 'fresh', 'step 6')
  with pytest.raises(fingerprint.FingerprintMismatchError, match='has none'):
    fingerprint.check_resume(None, _fp(), 'error', 'step 6')
  config = tiny.get_config()
  config.checkpoint.on_mismatch = 'ignore'  # Checked once, with every field, before a run starts.
  with pytest.raises(ValueError, match=r"config.checkpoint.on_mismatch='ignore' is not one of"):
    config_check.validate(config)


def test_changed_cpu_count_warns_that_bits_will_differ(capsys):
  other_host = _fp()
  other_host['host']['cpu_count'] = 1
  assert fingerprint.check_resume(other_host, _fp(), 'error', 'step 6')
  assert 'bits will differ' in capsys.readouterr().err


def test_run_fingerprint_covers_the_issue_fields(tiny_config):
  import jax
  from lungjax import steps
  from lungjax.runtime import mesh as mesh_lib
  from lungjax.data import loading
  from lungjax.models import create_model
  data = loading.load_training_data(tiny_config)
  model = create_model(tiny_config.model, 3)
  abstract = steps.abstract_train_state(model, steps.create_optimizer(tiny_config.train), 32, mesh_lib.make_mesh())
  fp = fingerprint.run_fingerprint(tiny_config, data, abstract, 2)
  assert set(fp['run']) >= {'model', 'param_dtypes', 'seed', 'batch_size', 'classes', 'train_files', 'val_files',
                            'split', 'process_count', 'loader_threads'}
  assert fp['run']['param_dtypes'] == ['float32'] and fp['run']['process_count'] == jax.process_count()
  assert fp['run']['train_files']['n'] == len(data.train)
  tiny_config.seed = 5
  assert fingerprint.diff(fp['run'], fingerprint.run_fingerprint(tiny_config, data, abstract, 2)['run']) == [
      'seed: saved 0, now 5']
  # Switching augmentation on (or changing how strong it is) changes what was trained on: a resume is refused.
  tiny_config.seed = 0
  tiny_config.augment.enabled = True
  assert fingerprint.diff(fp['run'], fingerprint.run_fingerprint(tiny_config, data, abstract, 2)['run']) == [
      'augment.enabled: saved False, now True']
  tiny_config.augment.rotation_degrees = (-30.0, 30.0)
  with pytest.raises(fingerprint.FingerprintMismatchError, match=r'augment\.rotation_degrees'):
    fingerprint.check_resume(fp, fingerprint.run_fingerprint(tiny_config, data, abstract, 2), 'error', 'step 6')


def test_a_field_an_older_checkpoint_lacks_is_unchanged_only_at_its_packaged_default():
  # config.model.head came after the first fingerprints: an older checkpoint restores with the default ('flatten'),
  # not with another head.
  saved = {'model': {'name': 'cnn'}, 'data': {'image_size': 256}}
  assert fingerprint.diff(saved, {'model': {'name': 'cnn', 'head': 'flatten'}, 'data': {'image_size': 256}}) == []
  assert fingerprint.diff(saved, {'model': {'name': 'cnn', 'head': 'gap'}, 'data': {'image_size': 256}}) == [
      "model.head: saved '<absent>', now 'gap'"]
  assert fingerprint.diff({'model': {'name': 'cnn', 'head': 'gap'}}, {'model': {'name': 'cnn', 'head': 'flatten'}})
