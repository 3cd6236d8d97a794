"""gradcam.py: exact on a hand-split model, names a bad layer, traces for every model, and finds the patch that
decides the class of a trained CNN."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from lungjax import steps
from lungjax.explain import gradcam
from lungjax.models import MODELS, create_model


class _Block(nn.Module):
  """Conv ('conv<features>') → BatchNorm → relu → 2x2 max-pool."""

  features: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.BatchNorm(use_running_average=not train)(nn.Conv(self.features, (3, 3), name=f'conv{self.features}')(x))
    return nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))


class _TwoStage(nn.Module):
  """A nested model whose feature map ('refine') and head can be called apart, to check Grad-CAM by hand."""

  num_classes: int = 3

  def setup(self):
    self.block = _Block(4)
    self.refine = _Block(6)
    self.head = nn.Dense(self.num_classes)

  def features(self, images_BHWC):
    return self.refine(self.block(images_BHWC.astype(jnp.float32) / 255.0, False), False)

  def classify(self, features_BhwK):
    return self.head(features_BhwK.reshape((features_BhwK.shape[0], -1)))

  def __call__(self, images_BHWC, *, train):
    return self.classify(self.features(images_BHWC))


@pytest.fixture(scope='module')
def two_stage():
  """The nested model, its variables (params and batch_stats) and 4 random 16x16 images."""
  model = _TwoStage()
  images_BHWC = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), images_BHWC)
  return model, variables, images_BHWC


def test_gradcam_matches_grad_cam_computed_by_hand(two_stage):
  model, variables, images_BHWC = two_stage
  assert 'batch_stats' in variables  # Collections beside params reach the model.
  class_indices_B = np.array([0, 2, -1, 1], np.int32)
  explain_fn = gradcam.jit_explain(model, 'refine')
  heatmaps_BHW = explain_fn(variables, images_BHWC, class_indices_B)[1]

  features_BhwK = model.apply(variables, images_BHWC, method='features')
  logits_BC = model.apply(variables, features_BhwK, method='classify')
  chosen_B = np.where(class_indices_B >= 0, class_indices_B, np.argmax(logits_BC, -1))

  def logit(feature_hwK, c):
    return model.apply(variables, feature_hwK[None], method='classify')[0, c]

  grads_BhwK = jax.vmap(jax.grad(logit))(features_BhwK, chosen_B)
  cam_Bhw = np.maximum(np.einsum('bhwk,bk->bhw', features_BhwK, grads_BhwK.mean(axis=(1, 2))), 0)
  expected = np.array(jax.image.resize(cam_Bhw, (4, 16, 16), 'linear'))
  expected /= expected.max(axis=(1, 2), keepdims=True)
  assert heatmaps_BHW.shape == (4, 16, 16) and heatmaps_BHW.dtype == jnp.float32
  np.testing.assert_allclose(heatmaps_BHW, expected, atol=1e-5)
  np.testing.assert_allclose(np.max(heatmaps_BHW, axis=(1, 2)), 1.0, atol=1e-6)
  # Another class gives another map; -1 is the predicted class.
  other = explain_fn(variables, images_BHWC, ((chosen_B + 1) % 3).astype(np.int32))[1]
  assert np.abs(np.asarray(other) - expected).max() > 0.1
  predicted = explain_fn(variables, images_BHWC, np.full(4, -1, np.int32))[1]
  by_index = explain_fn(variables, images_BHWC, np.argmax(logits_BC, -1).astype(np.int32))[1]
  np.testing.assert_allclose(predicted, by_index, atol=1e-6)


def test_gradcam_accepts_a_nested_path_and_a_unique_name(two_stage):
  model, variables, images_BHWC = two_stage
  classes_B = np.zeros(4, np.int32)
  by_path = gradcam.gradcam(model, variables, images_BHWC, 'refine/conv6', classes_B)
  by_name = gradcam.gradcam(model, variables, images_BHWC, 'conv6', classes_B)
  np.testing.assert_array_equal(by_path, by_name)
  assert by_path.shape == (4, 16, 16) and float(jnp.min(by_path)) >= 0.0 and float(jnp.max(by_path)) == 1.0
  first_block = gradcam.gradcam(model, variables, images_BHWC, 'block/conv4', classes_B)
  assert np.abs(np.asarray(first_block) - np.asarray(by_path)).max() > 0.1


@pytest.mark.parametrize('layer, message', [
    ('Conv_9', r"config.explain.layer='Conv_9' is not a module of model CNN; available modules: .*'Conv_2'"),
    ('Dense_0', r"config.explain.layer='Dense_0': Grad-CAM needs .* feature map"),
])
def test_a_bad_layer_names_config_explain_layer(layer, message):
  model = create_model(tiny.get_config().model, 3)
  images_BHWC = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images_BHWC)
  with pytest.raises(ValueError, match=message):  # Raised while tracing, before anything compiles.
    gradcam.jit_explain(model, layer).lower(variables, images_BHWC, jax.ShapeDtypeStruct((2,), jnp.int32))


def test_an_ambiguous_layer_name_lists_the_paths(two_stage):
  model, variables, images_BHWC = two_stage
  with pytest.raises(ValueError, match=r"config.explain.layer='BatchNorm_0' is ambiguous \(\['block/BatchNorm_0', "
                     r"'refine/BatchNorm_0'\]\) in model _TwoStage"):
    gradcam.gradcam(model, variables, images_BHWC, 'BatchNorm_0', np.zeros(4, np.int32))


@pytest.mark.parametrize('name', sorted(MODELS))
def test_gradcam_traces_for_every_registered_model(name):
  model = MODELS[name](num_classes=3)
  images_BHWC = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images_BHWC)
  outputs = gradcam.module_outputs(model, variables, images_BHWC)
  feature_maps = [path for path, calls in outputs.items() if '/' not in path and len(calls[0].shape) == 4]
  assert feature_maps, outputs
  for layer in feature_maps:  # Shapes only: traced through the interceptor and the gradient, never run.
    heatmaps = jax.eval_shape(functools.partial(gradcam.gradcam, model, layer=layer), variables, images_BHWC,
                              class_indices_B=jnp.array([-1, 0]))
    assert (heatmaps.shape, heatmaps.dtype) == ((2, 64, 64), jnp.float32), layer


SIZE, PATCH = 32, 12
CORNERS = ((0, 0), (0, SIZE - PATCH), (SIZE - PATCH, 0))  # Where each class's bright patch sits.


def _corner_task(n: int, seed: int):
  """Noise images whose class is a bright square in one of three corners; also the squares' masks."""
  rng = np.random.default_rng(seed)
  labels_N = (np.arange(n) % 3).astype(np.int32)
  images_NHWC = (rng.random((n, SIZE, SIZE, 3)) * 100).astype(np.uint8)
  masks_NHW = np.zeros((n, SIZE, SIZE), bool)
  for i, label in enumerate(labels_N):
    row, column = CORNERS[label]
    images_NHWC[i, row:row + PATCH, column:column + PATCH] = 255
    masks_NHW[i, row:row + PATCH, column:column + PATCH] = True
  return images_NHWC, labels_N, masks_NHW


def test_gradcam_of_a_trained_cnn_falls_on_the_patch_that_sets_the_class():
  config = tiny.get_config()
  config.model.conv_features = (8, 16, 16)
  config.train.learning_rate = 3e-3
  model = create_model(config.model, 3)
  tx = steps.create_optimizer(config.train)
  state = steps.create_train_state(model, tx, SIZE, jax.random.PRNGKey(0))
  train_step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, class_weights_C=jnp.ones(3)))
  images_NHWC, labels_N, _ = _corner_task(96, seed=0)
  rng = np.random.default_rng(1)
  for _ in range(300):
    index = rng.choice(len(images_NHWC), 16, replace=False)
    state, _ = train_step(state, {'image': images_NHWC[index], 'label': labels_N[index]})

  test_images, test_labels, masks_NHW = _corner_task(30, seed=2)
  probs_NC, heatmaps_NHW = gradcam.jit_explain(model, 'Conv_2')(
      {'params': state.params}, test_images, np.full(30, -1, np.int32))
  assert np.mean(np.argmax(probs_NC, -1) == test_labels) == 1.0
  heatmaps_NHW = np.asarray(heatmaps_NHW)
  inside_N = (heatmaps_NHW * masks_NHW).sum(axis=(1, 2)) / heatmaps_NHW.sum(axis=(1, 2))
  # The patch is 14% of the image; most of the map's mass lies in it, and its peak does for all images.
  assert np.mean(inside_N > 0.5) >= 0.8, np.round(inside_N, 2)
  peaks_N = heatmaps_NHW.reshape(30, -1).argmax(axis=1)
  assert masks_NHW.reshape(30, -1)[np.arange(30), peaks_N].all()
