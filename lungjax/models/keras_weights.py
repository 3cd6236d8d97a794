"""keras.applications compatibility: its 'caffe' input preprocessing, and loading its VGG/ResNet50 weight files.

The mapping is structural: a lungjax module's path joined with '_' is the Keras layer's name (('conv2', 'block1',
'1_conv') ↔ conv2_block1_1_conv, ('block1', 'conv1') ↔ block1_conv1). Each Keras layer's tensors come in Keras'
order: Conv/Dense (kernel, bias); BatchNorm (gamma, beta, moving_mean, moving_variance) → params scale/bias and
batch_stats mean/var. Top-level modules named head* are lungjax's new classifier head and are never loaded.
"""

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

if TYPE_CHECKING:
  import h5py  # The [keras] extra; imported when a weights file is read.

PREPROCESSING_MODES = ('rescale', 'caffe')
CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)  # Keras' ImageNet channel means, BGR order.
HEAD_PREFIX = 'head'
# config.model.name → the depths keras.applications has ImageNet weights for.
KERAS_MODELS: dict[str, tuple[int, ...]] = {'vgg': (16, 19), 'resnet': (50,)}
# Keras' include_top layers: present in some files, never part of a lungjax backbone.
KERAS_TOP_LAYERS = ('fc1', 'fc2', 'predictions')
# (collection, lungjax variable) → index among the Keras layer's tensors.
_TENSOR_INDEX = {('params', 'kernel'): 0, ('params', 'scale'): 0, ('params', 'bias'): 1,
                 ('batch_stats', 'mean'): 2, ('batch_stats', 'var'): 3}
_KERAS_TENSOR_NAMES = {1: ('kernel',), 2: ('kernel', 'bias'), 4: ('gamma', 'beta', 'moving_mean', 'moving_variance')}


def check_preprocessing(mode: str) -> None:
  """Raises ValueError naming config.model.preprocessing unless mode is one of PREPROCESSING_MODES."""
  if mode not in PREPROCESSING_MODES:
    raise ValueError(f'config.model.preprocessing={mode!r} is not one of {PREPROCESSING_MODES}')


def preprocess(images_BHWC: jax.Array, mode: str) -> jax.Array:
  """float32 model inputs from [0, 255] RGB: 'rescale' x/255, or Keras' 'caffe' (RGB→BGR minus ImageNet means)."""
  check_preprocessing(mode)
  pixels_BHWC = images_BHWC.astype(jnp.float32)
  if mode == 'rescale':
    return pixels_BHWC / 255.0
  return pixels_BHWC[..., ::-1] - jnp.asarray(CAFFE_MEANS_BGR, jnp.float32)


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What load_keras_weights did: lungjax tensors loaded, Keras tensors skipped, lungjax tensors left new."""

  path: str
  loaded: list[str]
  skipped: list[str]
  left_new: list[str]

  def summary(self) -> str:
    """A few human-readable lines for the training log."""
    lines = [f'loaded {len(self.loaded)} lungjax tensors from {self.path}',
             f'skipped {len(self.skipped)} Keras tensors: {", ".join(self.skipped) or "none"}',
             f'left {len(self.left_new)} lungjax tensors new: {", ".join(self.left_new) or "none"}']
    return '\n'.join(lines)


def _keras_tensor_name(layer: str, num_tensors: int, index: int) -> str:
  """'layer/kernel', 'layer/moving_mean', ...: a Keras tensor's name from its layer's tensor count and index."""
  names = _KERAS_TENSOR_NAMES.get(num_tensors, ())
  return f'{layer}/{names[index] if index < len(names) else index}'


def _text(value: Any) -> str:
  """An HDF5 string attribute as str (older files store bytes)."""
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _legacy_layers(group: 'h5py.Group') -> dict[str, list[np.ndarray]]:
  """Layers of a Keras 2 / legacy .h5 weights group (layer_names and weight_names attributes), in order."""
  layers = {}
  for layer in map(_text, group.attrs['layer_names']):
    weight_names = [_text(name) for name in group[layer].attrs.get('weight_names', [])]
    if weight_names:
      layers[layer] = [np.asarray(group[layer][name]) for name in weight_names]
  return layers


def _keras3_layers(group: 'h5py.Group', path: str) -> dict[str, list[np.ndarray]]:
  """Layers of a Keras 3 .weights.h5 group (layers/<auto name>/vars/<i>, named by the vars' 'name' attribute)."""
  layers = {}
  for key, child in group['layers'].items():
    if 'layers' in child:  # A nested model.
      nested = _keras3_layers(child, path)
      duplicates = sorted(set(nested) & set(layers))
      if duplicates:
        raise ValueError(f'{path}: Keras layer names {duplicates} occur more than once')
      layers.update(nested)
    variables = child.get('vars')
    if variables is not None and len(variables):
      name = _text(variables.attrs.get('name', key))
      if name in layers:
        raise ValueError(f'{path}: Keras layer name {name!r} occurs more than once')
      layers[name] = [np.asarray(variables[index]) for index in sorted(variables, key=int)]
  return layers


def read_keras_layers(path: str) -> dict[str, list[np.ndarray]]:
  """Keras layer name → its tensors in Keras' order, from a .h5 (legacy) or .weights.h5 (Keras 3) file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Keras weights file {path!r} (config.model.init_from) does not exist')
  try:
    import h5py  # pylint: disable=g-import-not-at-top,redefined-outer-name
  except ImportError as e:
    raise ImportError(f"reading the Keras weights file {path!r} (config.model.init_from) needs h5py: "
                      "pip install 'lungjax[keras]'") from e
  try:
    handle = h5py.File(path, 'r')
  except OSError as e:
    raise ValueError(f'Keras weights file {path!r} is not an HDF5 file: {e}') from e
  with handle:
    group = handle['model_weights'] if 'model_weights' in handle else handle  # A whole legacy model.save(.h5).
    if 'layer_names' in group.attrs:
      return _legacy_layers(group)
    if 'layers' in group:
      return _keras3_layers(group, path)
  raise ValueError(f'{path!r} holds no Keras weights (neither legacy layer_names nor Keras 3 layers/)')


def check_model_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the config field unless keras.applications has weights for this model."""
  name = model_config.name
  if name not in KERAS_MODELS:
    raise ValueError(f'config.model.name={name!r} has no keras.applications weights: use one of {KERAS_MODELS}')
  if model_config.depth not in KERAS_MODELS[name]:
    raise ValueError(f'config.model.depth={model_config.depth!r}: keras.applications has {name} weights only for '
                     f'depths {KERAS_MODELS[name]}')
  preprocessing = model_config.get('preprocessing', 'rescale')
  if preprocessing != 'caffe':
    raise ValueError(f"config.model.preprocessing={preprocessing!r}: Keras' ImageNet weights expect 'caffe'")
  norm = model_config.get('norm', 'batch')
  if name == 'resnet' and norm != 'batch':
    raise ValueError(f"config.model.norm={norm!r}: Keras' ImageNet weights carry BatchNorm statistics: use 'batch'")


def load_keras_weights(variables: dict, path: str,
                       model_config: ml_collections.ConfigDict) -> tuple[dict, LoadReport]:
  """Returns variables with every backbone tensor replaced by the Keras file's (shapes checked), and a report.

  variables: {'params': ..., 'batch_stats': ...} of the model config.model builds (arrays or ShapeDtypeStructs).
  Every non-head lungjax tensor must be in the file, and every Keras layer in the file must be used, except
  Keras' own classifier (KERAS_TOP_LAYERS): that catches a VGG19 file given to a VGG16 model, for instance.
  """
  check_model_config(model_config)
  keras_layers = read_keras_layers(path)
  flat = traverse_util.flatten_dict(variables)
  tensors_per_module: dict[tuple[str, ...], int] = {}
  for _, *module_path, _ in flat:
    tensors_per_module[tuple(module_path)] = tensors_per_module.get(tuple(module_path), 0) + 1
  new_flat, loaded, left_new, used = {}, [], [], set()
  for key, leaf in flat.items():
    collection, *module_path, variable = key
    name = '/'.join(key)
    new_flat[key] = leaf
    if module_path and module_path[0].startswith(HEAD_PREFIX):
      left_new.append(name)
      continue
    layer = '_'.join(module_path)
    if layer not in keras_layers:
      raise ValueError(f'{path}: no Keras layer {layer!r} for lungjax tensor {name} '
                       f'(config.model: {model_config.name} depth {model_config.depth})')
    keras_tensors = keras_layers[layer]
    if len(keras_tensors) != tensors_per_module[tuple(module_path)] or (collection, variable) not in _TENSOR_INDEX:
      raise ValueError(f'{path}: Keras layer {layer!r} has {len(keras_tensors)} tensors, which do not map onto '
                       f'lungjax module {"/".join(module_path)} ({tensors_per_module[tuple(module_path)]} tensors)')
    index = _TENSOR_INDEX[(collection, variable)]
    value = keras_tensors[index]
    keras_name = _keras_tensor_name(layer, len(keras_tensors), index)
    if value.shape != tuple(leaf.shape):
      raise ValueError(f'{path}: Keras tensor {keras_name} has shape {value.shape} but lungjax tensor {name} has '
                       f'{tuple(leaf.shape)} (check config.model.depth and config.model.width)')
    new_flat[key] = jnp.asarray(value, leaf.dtype)
    loaded.append(name)
    used.add(layer)
  unexpected = sorted(set(keras_layers) - used - set(KERAS_TOP_LAYERS))
  if unexpected:
    raise ValueError(f'{path} has Keras layers {unexpected} that config.model ({model_config.name} depth '
                     f'{model_config.depth}) lacks: is the file for another architecture?')
  skipped = [_keras_tensor_name(layer, len(keras_tensors), index) for layer, keras_tensors in keras_layers.items()
             if layer not in used for index in range(len(keras_tensors))]
  report = LoadReport(path=path, loaded=loaded, skipped=skipped, left_new=left_new)
  return traverse_util.unflatten_dict(new_flat), report


def backbone_mask(params: dict) -> Any:
  """A pytree like params: True for backbone leaves, False for the head (top-level modules named head*)."""
  mask = {}
  for name, subtree in params.items():
    is_backbone = not name.startswith(HEAD_PREFIX)
    mask[name] = jax.tree.map(lambda _: is_backbone, subtree)
  return mask
