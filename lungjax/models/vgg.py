"""VGG-11/16/19: five stages of 3x3 convs + 2x2 max-pools (keras.applications.VGG16/VGG19's layout), a new head.

Submodules are named so that joining a module path with '_' gives the Keras layer name: ('block1', 'conv1') ↔
block1_conv1; keras_weights.py loads Keras weights by that rule. The stages are the top-level modules
'block1' ... 'block5' (convs only, the pool follows); 'block5' is the last conv stage (Grad-CAM's layer).
The head's layers are named head_fc1, head_fc2, ... and head: never part of a Keras file.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lungjax.models import keras_weights, layers

# depth → convs per stage (Simonyan & Zisserman's configurations A, D, E).
STAGES: dict[int, tuple[int, ...]] = {11: (1, 1, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
LAST_STAGE = 'block5'
POOLINGS = ('avg', 'flatten')
# Keras' defaults (glorot_uniform kernels, zero biases), as keras.applications builds VGG.
_KERNEL_INIT = nn.initializers.glorot_uniform()


class VGGStage(nn.Module):
  """num_convs 3x3 'same' convs with relu, named conv1, conv2, ...; no pooling."""

  features: int
  num_convs: int
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """Applies the stage's convs in order."""
    for index in range(self.num_convs):
      x_BHWC = nn.relu(nn.Conv(self.features, (3, 3), padding='SAME', kernel_init=_KERNEL_INIT,
                               dtype=self.dtype, name=f'conv{index + 1}')(x_BHWC))
    return x_BHWC


class VGG(nn.Module):
  """Stages block1..block5 (width x 1, 2, 4, 8, 8), each followed by a 2x2 max-pool → pool → dense head."""

  num_classes: int = 3
  depth: int = 16
  width: int = 64
  pooling: str = 'avg'  # 'avg': global average pool; 'flatten': keep every position (fixes the input size).
  dense_features: Sequence[int] = (256,)
  dropout_rate: float = 0.5
  preprocessing: str = 'rescale'
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params and logits.

  def __post_init__(self):
    """Rejects a depth, pooling or preprocessing mode this model does not have, naming the config field."""
    if self.depth not in STAGES:
      raise ValueError(f'config.model.depth={self.depth!r} is not a VGG depth: use one of {sorted(STAGES)}')
    if self.pooling not in POOLINGS:
      raise ValueError(f'config.model.pooling={self.pooling!r} is not one of {POOLINGS}')
    keras_weights.check_preprocessing(self.preprocessing)
    layers.check_impls('xla', 'reduce_window', self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool, features_only: bool = False) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to logits, or with features_only to the last pool's feature map."""
    x = keras_weights.preprocess(images_BHWC, self.preprocessing).astype(self.dtype)
    for index, num_convs in enumerate(STAGES[self.depth]):
      x = VGGStage(self.width * min(2**index, 8), num_convs, self.dtype, name=f'block{index + 1}')(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    if features_only:
      return x
    x = jnp.mean(x, axis=(1, 2)) if self.pooling == 'avg' else x.reshape((x.shape[0], -1))
    for index, features in enumerate(self.dense_features):
      x = nn.relu(nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=self.dtype, name=f'head_fc{index + 1}')(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=self.dtype, name='head')(x).astype(jnp.float32)
