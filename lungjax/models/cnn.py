"""The study's CNN: three conv + max-pool blocks, dropout, two dense layers, a 3-way head."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras' defaults (glorot_uniform kernels, zero biases), so the model starts where the study's did.
_KERNEL_INIT = nn.initializers.glorot_uniform()


class CNN(nn.Module):
  """Conv 32-64-128 (3x3, same, relu, 2x2 max-pool) → dropout → dense 128-128 → dropout between → logits."""

  num_classes: int = 3
  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: Sequence[int] = (128, 128)
  dropout_rate: float = 0.3

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to class logits; pixels are rescaled by 1/255 here."""
    x = images_BHWC.astype(jnp.float32) / 255.0
    for features in self.conv_features:
      x = nn.Conv(features, (3, 3), padding='SAME', kernel_init=_KERNEL_INIT)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    for index, features in enumerate(self.dense_features):
      if index > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(features, kernel_init=_KERNEL_INIT)(x))
    return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT)(x)
