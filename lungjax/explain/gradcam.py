"""Grad-CAM of any registered model: which pixels raised a class's logit (Selvaraju et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp


def module_outputs(model: nn.Module, variables: dict[str, Any], images_BHWC: jax.Array) -> dict[str, tuple[Any, ...]]:
  """Returns {'a/b': (output shape per call, ...)} for every submodule's __call__ (traced for shapes only)."""
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=['intermediates']),
      variables, images_BHWC)
  flat = flax.traverse_util.flatten_dict(state['intermediates'])
  return {'/'.join(key[:-1]): value for key, value in flat.items() if key[-1] == '__call__' and len(key) > 1}


def _find_layer(model: nn.Module, variables: dict[str, Any], images_BHWC: jax.Array,
                layer: str) -> tuple[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Resolves `layer` (a module path 'a/b', or a name unique among them) to its path and output shape."""
  outputs = module_outputs(model, variables, images_BHWC)
  matches = [path for path in outputs if path == layer] or [p for p in outputs if p.split('/')[-1] == layer]
  model_name = type(model).__name__
  if len(matches) != 1:
    problem = 'is not a module of' if not matches else f'is ambiguous ({matches}) in'
    raise ValueError(f'config.explain.layer={layer!r} {problem} model {model_name}; available modules: '
                     f'{sorted(outputs)}')
  path = matches[0]
  calls = outputs[path]
  if len(calls) != 1 or not hasattr(calls[0], 'shape') or len(calls[0].shape) != 4:
    shapes = [getattr(c, 'shape', type(c).__name__) for c in calls]
    raise ValueError(f'config.explain.layer={layer!r}: Grad-CAM needs a module called once that returns a '
                     f'B x h x w x K feature map; {path!r} of model {model_name} returned {shapes}')
  return tuple(path.split('/')), calls[0]


def check_layer(model: nn.Module, variables: dict[str, Any], image_size: int, layer: str) -> None:
  """Raises ValueError naming config.explain.layer unless `layer` resolves to one B x h x w x K feature map of
  `model` (traced for shapes only, on one image_size x image_size RGB image): before any image is decoded."""
  _find_layer(model, variables, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8), layer)


def _gradcam_and_logits(model: nn.Module, variables: dict[str, Any], images_BHWC: jax.Array, layer: str,
                        class_indices_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns (heatmaps_BHW, logits_BC); see gradcam."""
  path, feature_shape = _find_layer(model, variables, images_BHWC, layer)

  def is_layer(module: nn.Module, method_name: str) -> bool:
    return method_name == '__call__' and tuple(module.path) == path

  def chosen_logits(perturbation_BhwK: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    def add_perturbation(next_fun, args, kwargs, context):
      outputs = next_fun(*args, **kwargs)
      return outputs + perturbation_BhwK if is_layer(context.module, context.method_name) else outputs

    with nn.intercept_methods(add_perturbation):
      logits_BC, state = model.apply(variables, images_BHWC, train=False, capture_intermediates=is_layer,
                                     mutable=['intermediates'])
    activations_BhwK = flax.traverse_util.flatten_dict(state['intermediates'])[(*path, '__call__')][0]
    chosen_B = jnp.where(class_indices_B >= 0, class_indices_B, jnp.argmax(logits_BC, axis=-1))
    # Images are independent, so d(sum of each image's chosen logit)/dA is each image's own gradient.
    total = jnp.take_along_axis(logits_BC, chosen_B[:, None], axis=1).sum()
    return total, (logits_BC, activations_BhwK)

  zeros_BhwK = jnp.zeros(feature_shape.shape, feature_shape.dtype)
  grads_BhwK, (logits_BC, activations_BhwK) = jax.grad(chosen_logits, has_aux=True)(zeros_BhwK)
  weights_BK = grads_BhwK.astype(jnp.float32).mean(axis=(1, 2))
  cam_Bhw = nn.relu(jnp.einsum('bhwk,bk->bhw', activations_BhwK.astype(jnp.float32), weights_BK))
  height, width = images_BHWC.shape[1:3]
  cam_BHW = jax.image.resize(cam_Bhw, (cam_Bhw.shape[0], height, width), 'linear')
  peak_B11 = cam_BHW.max(axis=(1, 2), keepdims=True)
  heatmaps_BHW = jnp.clip(cam_BHW / jnp.where(peak_B11 > 0, peak_B11, 1.0), 0.0, 1.0)
  return heatmaps_BHW, logits_BC


def gradcam(model: nn.Module, variables: dict[str, Any], images_BHWC: jax.Array, layer: str,
            class_indices_B: jax.Array) -> jax.Array:
  """Grad-CAM heatmaps (float32 in [0, 1], image size) of the named submodule for each image's class.

  `layer` is a module path ('Conv_2', 'block/Conv_0') or a name unique among the modules; a class index
  below 0 picks the image's predicted class. Classic Grad-CAM: each channel weighs the spatial mean of
  d(logit)/d(activation), the map is relu of the weighted sum, bilinearly upsampled, divided by its maximum.
  """
  return _gradcam_and_logits(model, variables, images_BHWC, layer, class_indices_B)[0]


def jit_explain(model: nn.Module, layer: str) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Returns jitted fn(variables, images_BHWC, class_indices_B) -> (probs_BC, heatmaps_BHW), model and layer bound."""

  def explain_batch(variables, images_BHWC, class_indices_B):
    heatmaps_BHW, logits_BC = _gradcam_and_logits(model, variables, images_BHWC, layer, class_indices_B)
    return jax.nn.softmax(logits_BC.astype(jnp.float32), axis=-1), heatmaps_BHW

  return jax.jit(explain_batch)
