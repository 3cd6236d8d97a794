"""ResNet-18/34/50 and VGG-11/16/19: shapes, sizes, BatchNorm statistics, GroupNorm, field errors and configs."""

import functools

import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from configs import resnet as resnet_config
from configs import vgg as vgg_config
from lungjax.models import create_model, keras_weights, resnet, vgg

# Backbone sizes (params + BatchNorm statistics, head excluded). ResNet-18/34: torchvision's parameter counts less
# the fc layer plus 2 x the BatchNorm channels; 50/16/19: keras.applications' include_top=False count_params();
# VGG-11: torchvision's vgg11().features.
BACKBONE_SIZES = {('resnet', 18): 11_186_112, ('resnet', 34): 21_301_696, ('resnet', 50): 23_587_712,
                  ('vgg', 11): 9_220_480, ('vgg', 16): 14_714_688, ('vgg', 19): 20_024_384}
FEATURES = {'resnet': {18: 512, 34: 512, 50: 2048}, 'vgg': {11: 512, 16: 512, 19: 512}}


def _images(batch: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), np.uint8)


def _config(name: str, depth: int, **fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': name, 'depth': depth, **fields})


def _variables(model, images: np.ndarray, seed: int = 0) -> dict:
  """He-normal kernels, BatchNorm's initial values: like model.init, without compiling init (slow on CPU)."""
  rng = np.random.default_rng(seed)
  values = {'kernel': None, 'scale': 1.0, 'bias': 0.0, 'mean': 0.0, 'var': 1.0}
  shapes = traverse_util.flatten_dict(jax.eval_shape(functools.partial(model.init, train=False),
                                                     jax.random.PRNGKey(0), images))
  return traverse_util.unflatten_dict({
      key: (rng.normal(0, np.sqrt(2 / np.prod(x.shape[:-1])), x.shape) if key[-1] == 'kernel'
            else np.full(x.shape, values[key[-1]])).astype(x.dtype) for key, x in shapes.items()})


@pytest.mark.parametrize('name,depth', list(BACKBONE_SIZES))
def test_models_build_with_expected_outputs_and_sizes(name, depth):
  model = create_model(_config(name, depth), 5)
  images = _images(2, 64)
  logits, variables = jax.eval_shape(functools.partial(model.init_with_output, train=False), jax.random.PRNGKey(0),
                                     images)
  assert logits.shape == (2, 5)
  features = jax.eval_shape(functools.partial(model.apply, train=False, features_only=True), variables, images)
  assert features.shape == (2, 2, 2, FEATURES[name][depth])  # Both nets downsample by 32.
  flat = traverse_util.flatten_dict(variables)
  assert sum(leaf.size for key, leaf in flat.items() if not key[1].startswith('head')) == BACKBONE_SIZES[name, depth]
  assert flat['params', 'head', 'kernel'].shape == (FEATURES[name][depth] if name == 'resnet' else 256, 5)


def test_layouts_follow_the_depth():
  params = {depth: jax.eval_shape(functools.partial(create_model(_config('resnet', depth), 3).init, train=False),
                                  jax.random.PRNGKey(0), _images(1, 32))['params'] for depth in (18, 34, 50)}
  for depth in (18, 34, 50):
    assert [len(params[depth][f'conv{stage}']) for stage in (2, 3, 4, 5)] == list(resnet.STAGES[depth][0])
  for depth in (11, 16, 19):
    vgg_params = jax.eval_shape(functools.partial(create_model(_config('vgg', depth), 3).init, train=False),
                                jax.random.PRNGKey(0), _images(1, 32))['params']
    assert [len(vgg_params[f'block{stage}']) for stage in range(1, 6)] == list(vgg.STAGES[depth])
  # Basic blocks: 3x3 convs, projection only where the stride or width changes, no conv biases.
  assert params[18]['conv3']['block1']['1_conv']['kernel'].shape == (3, 3, 64, 128)
  assert '0_conv' not in params[18]['conv2']['block1'] and '0_conv' in params[18]['conv3']['block1']
  assert 'bias' not in params[18]['conv1_conv']
  # Keras' ResNet50: the stride sits on the first 1x1 conv; every stage's block1 projects; convs have biases.
  assert params[50]['conv3']['block1']['1_conv']['kernel'].shape == (1, 1, 256, 128)
  assert params[50]['conv2']['block1']['0_conv']['kernel'].shape == (1, 1, 64, 256)
  assert '0_conv' not in params[50]['conv2']['block2'] and 'bias' in params[50]['conv1_conv']


def test_resnet_batch_stats_update_in_train_mode_only():
  model = create_model(_config('resnet', 18, width=4), 3)
  images = _images(4, 32)
  variables = _variables(model, images)
  apply_train = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  apply_eval = jax.jit(functools.partial(model.apply, train=False, mutable=['batch_stats']))
  logits, updated = apply_train(variables, images)
  before, after = (traverse_util.flatten_dict(v['batch_stats']) for v in (variables, updated))
  assert before.keys() == after.keys() and len(before) == 2 * 20  # Stem + 2 per block (8) + 3 projections.
  assert all(not np.allclose(before[key], after[key]) for key in before)
  _, unchanged = apply_eval(variables, images)
  for key, value in traverse_util.flatten_dict(unchanged['batch_stats']).items():
    np.testing.assert_array_equal(value, before[key])
  # Eval mode normalises with the running statistics: an image's logits do not depend on its batch.
  trained = {'params': variables['params'], 'batch_stats': updated['batch_stats']}
  np.testing.assert_allclose(apply_eval(trained, images[:1])[0], apply_eval(trained, images)[0][:1], atol=1e-5)
  # Train mode normalises with the batch's statistics: it does.
  assert not np.allclose(apply_train(variables, images[:2])[0][:1], logits[:1], atol=1e-5)


def test_group_norm_resnet_keeps_no_statistics_and_evaluates_as_it_trains():
  model = create_model(_config('resnet', 18, width=4, norm='group'), 3)
  images = _images(4, 32)
  variables = _variables(model, images)
  assert list(variables) == ['params']  # No batch_stats: nothing to converge, nothing for steps.py to carry.
  params = traverse_util.flatten_dict(variables['params'])
  assert params['conv1_bn', 'scale'].shape == (4,) and ('conv5', 'block1', '0_bn', 'bias') in params
  # The same parameter count as BatchNorm's trainable part: scale and bias per channel.
  batch_norm_params = _variables(create_model(_config('resnet', 18, width=4), 3), images)['params']
  assert jax.tree.map(np.shape, batch_norm_params) == jax.tree.map(np.shape, variables['params'])
  logits = model.apply(variables, images, train=False)
  # Without dropout, train mode is eval mode; and an image's logits do not depend on its batch.
  np.testing.assert_allclose(model.apply(variables, images, train=True), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.apply(variables, images[:1], train=False), logits[:1], rtol=1e-5, atol=1e-5)


def test_resnet_config_batch_statistics_follow_the_batches_within_an_epoch():
  """lungjax issue 12: ~12 steps an epoch left BatchNorm's momentum-0.99 statistics near their initial values
  (0.99^12 = 0.89 of the way back), so eval mode normalised with other statistics than training did. After one
  such epoch of train-mode steps on a batch, the config's running statistics must be within 30% of the initial gap
  from that batch's statistics, in every BatchNorm layer."""
  config = resnet_config.get_config().model
  assert config.norm == 'batch'
  config.width, config.dropout_rate = 4, 0.0
  model = create_model(config, 3)
  images = _images(8, 32)
  variables = _variables(model, images)
  # Each BatchNorm's input is its conv's output (name '<i>_conv' for '<i>_bn'): captured to get the batch statistics.
  is_conv = lambda module, _: (module.name or '').endswith('_conv')
  apply_train = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats', 'intermediates'],
                                          capture_intermediates=is_conv))
  initial = traverse_util.flatten_dict(variables['batch_stats'])
  for _ in range(12):
    _, updated = apply_train(variables, images)
    variables = {'params': variables['params'], 'batch_stats': updated['batch_stats']}
  conv_outputs = {key[:-2] + (key[-2].replace('_conv', '_bn'),): value[0]  # key: (..., '1_conv', '__call__').
                  for key, value in traverse_util.flatten_dict(updated['intermediates']).items()}
  running = traverse_util.flatten_dict(variables['batch_stats'])
  assert len(running) == 2 * len(conv_outputs) == 2 * 20
  for key, value in running.items():
    outputs_BHWC = np.asarray(conv_outputs[key[:-1]])
    batch = outputs_BHWC.mean((0, 1, 2)) if key[-1] == 'mean' else outputs_BHWC.var((0, 1, 2))
    gap = np.abs(initial[key] - batch)
    assert np.all(np.abs(value - batch) <= 0.3 * gap + 1e-4), (key, np.max(np.abs(value - batch) / (gap + 1e-12)))


def test_keras_resnet_weights_need_batch_norm():
  config = _config('resnet', 50, preprocessing='caffe', norm='group')
  with pytest.raises(ValueError, match="config.model.norm='group'.*'batch'"):
    keras_weights.check_model_config(config)
  config.norm = 'batch'
  keras_weights.check_model_config(config)


def test_vgg_head_fields():
  images = _images(2, 64)
  flatten = create_model(_config('vgg', 11, width=4, pooling='flatten', dense_features=(16, 8)), 3)
  params = _variables(flatten, images)['params']
  assert params['head_fc1']['kernel'].shape == (2 * 2 * 32, 16)  # 64px / 32 = 2x2 positions of 8 x 4 features.
  assert params['head_fc2']['kernel'].shape == (16, 8) and params['head']['kernel'].shape == (8, 3)
  logits = flatten.apply({'params': params}, images, train=False)
  dropped = flatten.apply({'params': params}, images, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  assert logits.shape == (2, 3) and not np.allclose(logits, dropped)
  no_hidden = create_model(_config('vgg', 11, width=4, dense_features=()), 3)
  params = _variables(no_hidden, images)['params']
  assert sorted(k for k in params if k.startswith('head')) == ['head']
  assert params['head']['kernel'].shape == (32, 3)  # Global average pool: 8 x 4 features.


def test_rescale_preprocessing_takes_uint8_or_float_pixels():
  model = create_model(_config('resnet', 18, width=4), 3)
  images = _images(2, 32)
  variables = _variables(model, images)
  np.testing.assert_allclose(model.apply(variables, images, train=False),
                             model.apply(variables, images.astype(np.float32), train=False), atol=1e-6)
  caffe = create_model(_config('resnet', 18, width=4, preprocessing='caffe'), 3)
  assert not np.allclose(model.apply(variables, images, train=False), caffe.apply(variables, images, train=False))


@pytest.mark.parametrize('name,fields,field', [
    ('resnet', {'depth': 101}, 'config.model.depth'),
    ('vgg', {'depth': 13}, 'config.model.depth'),
    ('vgg', {'depth': 16, 'pooling': 'max'}, 'config.model.pooling'),
    ('resnet', {'depth': 18, 'preprocessing': 'torch'}, 'config.model.preprocessing'),
    ('resnet', {'depth': 18, 'norm': 'layer'}, 'config.model.norm'),
    ('resnet', {'depth': 18, 'bn_momentum': 1.0}, 'config.model.bn_momentum'),
])
def test_bad_fields_raise_naming_the_config_field(name, fields, field):
  with pytest.raises(ValueError, match=field):
    create_model(ml_collections.ConfigDict({'name': name, **fields}), 3)


@pytest.mark.parametrize('config_module,model_module,stage_features,stride',
                         [(resnet_config, resnet, 512, 32), (vgg_config, vgg, 512, 16)])
def test_configs_build_and_name_the_gradcam_layer(config_module, model_module, stage_features, stride):
  config = config_module.get_config()
  assert config.train.batch_size == 16 and config.data.image_size == 256
  assert config.explain.layer == model_module.LAST_STAGE
  model = create_model(config.model, len(config.data.classes))
  images = _images(1, config.data.image_size)
  layer = config.explain.layer
  (logits, variables) = jax.eval_shape(functools.partial(
      model.init_with_output, train=False, capture_intermediates=lambda module, _: module.name == layer),
      jax.random.PRNGKey(0), images)
  assert logits.shape == (1, 3)
  (activations,) = variables['intermediates'][layer]['__call__']  # A top-level module: its name is its path.
  size = config.data.image_size // stride
  assert activations.shape == (1, size, size, stage_features)
