"""Keras weight files → lungjax VGG/ResNet: the loaded backbones reproduce keras.applications' features."""

import functools
import os

import h5py
import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from lungjax.models import create_model, keras_weights

os.environ['KERAS_BACKEND'] = 'tensorflow'  # Before keras is first imported.
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
keras = pytest.importorskip('keras')

KERAS_VGG = {16: 'VGG16', 19: 'VGG19'}


def _randomize(keras_model, seed: int):
  """Gives every bias and BatchNorm statistic distinct random values, so a swapped mapping shows."""
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    weights = layer.get_weights()
    if len(weights) == 4:  # gamma, beta, moving_mean, moving_variance; small gammas keep activations O(1).
      layer.set_weights([rng.uniform(0.2, 0.5, weights[0].shape), rng.normal(0, 0.1, weights[1].shape),
                         rng.normal(0, 0.1, weights[2].shape), rng.uniform(0.5, 1.5, weights[3].shape)])
    elif len(weights) == 2:
      layer.set_weights([weights[0], rng.normal(0, 0.1, weights[1].shape)])
  return keras_model


def _model_config(name: str, depth: int, **fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': name, 'depth': depth, 'preprocessing': 'caffe', 'init_from': '',
                                    **fields})


def _abstract_variables(config: ml_collections.ConfigDict, size: int) -> dict:
  """The variables' shapes and dtypes, without running (or compiling) init."""
  init = functools.partial(create_model(config, 3).init, train=False)
  return jax.eval_shape(init, jax.random.PRNGKey(0), _images(size))


def _load(config: ml_collections.ConfigDict, path: str, size: int):
  """Loads path into the model's variables; the head (unused by features_only) is zero-filled."""
  variables, report = keras_weights.load_keras_weights(_abstract_variables(config, size), path, config)
  return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x,
                      variables), report


def _images(size: int) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (2, size, size, 3), np.uint8)


def _keras_features(keras_model, images: np.ndarray) -> np.ndarray:
  inputs = keras.applications.imagenet_utils.preprocess_input(images.astype(np.float32), mode='caffe')
  return np.asarray(keras_model(inputs, training=False))


def _save_all_formats(keras_model, folder) -> dict[str, str]:
  """Keras 3 .weights.h5, legacy model.save .h5 and (writer permitting) legacy weights-only .h5 (ImageNet's)."""
  paths = {'keras3': str(folder / 'w.weights.h5'), 'legacy_model': str(folder / 'model.h5')}
  keras_model.save_weights(paths['keras3'])  # Keras 3's save_weights only writes .weights.h5.
  keras_model.save(paths['legacy_model'])
  try:
    from keras.src.legacy.saving import legacy_h5_format  # Private: the writer of the ImageNet files' format.
  except ImportError:
    return paths
  paths['legacy_weights'] = str(folder / 'w.h5')
  with h5py.File(paths['legacy_weights'], 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, keras_model)
  return paths


@pytest.fixture(scope='module')
def vgg_files(tmp_path_factory) -> dict[int, tuple[object, dict[str, str]]]:
  """depth → (Keras VGG without top at 64px (VGG19: 32px), its weight files)."""
  files = {}
  for depth, size in ((16, 64), (19, 32)):
    keras_model = getattr(keras.applications, KERAS_VGG[depth])(weights=None, include_top=False,
                                                                input_shape=(size, size, 3))
    files[depth] = (_randomize(keras_model, depth),
                    _save_all_formats(keras_model, tmp_path_factory.mktemp(f'vgg{depth}')))
  return files


@pytest.fixture(scope='module')
def resnet50_files(tmp_path_factory) -> tuple[object, dict[str, str]]:
  """(Keras ResNet50's conv5 output model, weight files of the whole ResNet50 with a 5-class top) at 64px."""
  keras_model = _randomize(keras.applications.ResNet50(weights=None, include_top=True, classes=5,
                                                       input_shape=(64, 64, 3)), 50)
  features_model = keras.Model(keras_model.input, keras_model.get_layer('conv5_block3_out').output)
  return features_model, _save_all_formats(keras_model, tmp_path_factory.mktemp('resnet50'))


def _assert_same_variables(a: dict, b: dict):
  flat_a, flat_b = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg='/'.join(key))


def test_preprocessing_matches_keras_caffe_mode():
  images = _images(8)
  expected = keras.applications.imagenet_utils.preprocess_input(images.astype(np.float32), mode='caffe')
  np.testing.assert_allclose(keras_weights.preprocess(images, 'caffe'), expected, atol=1e-4)
  np.testing.assert_allclose(keras_weights.preprocess(images, 'rescale'), images / 255.0, atol=1e-7)
  with pytest.raises(ValueError, match='config.model.preprocessing'):
    keras_weights.preprocess(images, 'torch')


@pytest.mark.parametrize('depth', [16, 19])
def test_loaded_vgg_reproduces_keras_features(vgg_files, depth):
  keras_model, paths = vgg_files[depth]
  images = _images(keras_model.input_shape[1])
  config = _model_config('vgg', depth)
  variables, report = _load(config, paths['keras3'], images.shape[1])
  features = np.asarray(create_model(config, 3).apply(variables, images, train=False, features_only=True))
  expected = _keras_features(keras_model, images)
  assert features.shape == expected.shape
  assert np.abs(expected).max() > 0.1  # Not a trivially small comparison.
  assert np.abs(features - expected).max() <= 1e-4
  assert len(report.loaded) == 2 * sum(1 for layer in keras_model.layers if layer.weights)
  assert report.skipped == []
  assert sorted(report.left_new) == ['params/head/bias', 'params/head/kernel', 'params/head_fc1/bias',
                                     'params/head_fc1/kernel']


def test_legacy_vgg_files_load_the_same_tensors(vgg_files):
  keras_model, paths = vgg_files[16]
  config = _model_config('vgg', 16)
  variables = _abstract_variables(config, 64)
  loaded = {kind: keras_weights.load_keras_weights(variables, path, config) for kind, path in paths.items()}
  for kind in set(paths) - {'keras3'}:
    _assert_same_variables(loaded[kind][0], loaded['keras3'][0])
    assert loaded[kind][1].loaded == loaded['keras3'][1].loaded


def test_loaded_resnet50_reproduces_keras_features(resnet50_files):
  features_model, paths = resnet50_files
  images = _images(64)
  config = _model_config('resnet', 50)
  variables, report = _load(config, paths['keras3'], images.shape[1])
  features = np.asarray(create_model(config, 3).apply(variables, images, train=False, features_only=True))
  expected = _keras_features(features_model, images)
  assert features.shape == expected.shape == (2, 2, 2, 2048)
  assert np.abs(expected).max() > 0.1
  assert np.abs(features - expected).max() <= 1e-4
  assert report.skipped == ['predictions/kernel', 'predictions/bias']
  assert sorted(report.left_new) == ['params/head/bias', 'params/head/kernel']
  assert 'batch_stats/conv5/block3/3_bn/var' in report.loaded
  assert 'predictions/kernel' in report.summary() and '318' in report.summary()
  # The BatchNorm statistics went into batch_stats, in Keras' order (moving_mean, moving_variance).
  keras_bn = features_model.get_layer('conv2_block1_0_bn').get_weights()
  np.testing.assert_array_equal(variables['batch_stats']['conv2']['block1']['0_bn']['mean'], keras_bn[2])
  np.testing.assert_array_equal(variables['batch_stats']['conv2']['block1']['0_bn']['var'], keras_bn[3])


def test_legacy_resnet50_files_load_the_same_tensors(resnet50_files):
  _, paths = resnet50_files
  config = _model_config('resnet', 50)
  variables = _abstract_variables(config, 64)
  keras3, _ = keras_weights.load_keras_weights(variables, paths['keras3'], config)
  for kind in set(paths) - {'keras3'}:
    _assert_same_variables(keras_weights.load_keras_weights(variables, paths[kind], config)[0], keras3)


def _backbone_size(config: ml_collections.ConfigDict) -> int:
  variables = _abstract_variables(config, 32)
  return sum(leaf.size for key, leaf in traverse_util.flatten_dict(variables).items()
             if not key[1].startswith(keras_weights.HEAD_PREFIX))


def test_backbone_sizes_equal_keras_without_top(vgg_files, resnet50_files):
  assert _backbone_size(_model_config('vgg', 16)) == vgg_files[16][0].count_params() == 14_714_688
  assert _backbone_size(_model_config('resnet', 50)) == resnet50_files[0].count_params() == 23_587_712


def test_mismatched_files_and_configs_raise_naming_the_problem(vgg_files, resnet50_files, tmp_path):
  vgg16_paths, vgg19_paths = vgg_files[16][1], vgg_files[19][1]
  config = _model_config('vgg', 16)
  variables = _abstract_variables(config, 32)
  with pytest.raises(ValueError, match=r"\['block3_conv4', 'block4_conv4', 'block5_conv4'\]"):  # VGG19's file.
    keras_weights.load_keras_weights(variables, vgg19_paths['keras3'], config)
  with pytest.raises(ValueError, match="no Keras layer 'block1_conv1'"):  # A ResNet50 file for a VGG16.
    keras_weights.load_keras_weights(variables, resnet50_files[1]['keras3'], config)
  narrow = _model_config('vgg', 16, width=32)
  narrow_variables = _abstract_variables(narrow, 32)
  with pytest.raises(ValueError, match=r'Keras tensor block1_conv1/\w+ has shape .* tensor params/block1/conv1/'):
    keras_weights.load_keras_weights(narrow_variables, vgg16_paths['keras3'], narrow)
  with pytest.raises(ValueError, match='config.model.depth'):
    keras_weights.load_keras_weights({}, resnet50_files[1]['keras3'], _model_config('resnet', 18))
  with pytest.raises(ValueError, match='config.model.name'):
    keras_weights.load_keras_weights({}, vgg16_paths['keras3'], _model_config('cnn', 16))
  with pytest.raises(ValueError, match='config.model.preprocessing'):
    keras_weights.load_keras_weights(variables, vgg16_paths['keras3'], _model_config('vgg', 16,
                                                                                       preprocessing='rescale'))
  with pytest.raises(FileNotFoundError, match='missing.h5'):
    keras_weights.load_keras_weights(variables, str(tmp_path / 'missing.h5'), config)
  (tmp_path / 'text.h5').write_text('not hdf5')
  with pytest.raises(ValueError, match='text.h5'):
    keras_weights.load_keras_weights(variables, str(tmp_path / 'text.h5'), config)


def test_backbone_mask_is_false_only_for_the_head():
  config = _model_config('vgg', 11, width=4, dense_features=(8, 8))
  params = _abstract_variables(config, 32)['params']
  mask = traverse_util.flatten_dict(keras_weights.backbone_mask(params))
  assert mask.keys() == traverse_util.flatten_dict(params).keys()
  assert sorted('/'.join(key) for key, trainable in mask.items() if not trainable) == [
      'head/bias', 'head/kernel', 'head_fc1/bias', 'head_fc1/kernel', 'head_fc2/bias', 'head_fc2/kernel']
  assert sum(mask.values()) == 2 * 8  # VGG-11's 8 convs, kernel and bias each.
