"""The study's CNN: three conv + max-pool blocks, dropout, two dense layers, a 3-way head."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lungjax.models import layers

# Keras' defaults (glorot_uniform kernels, zero biases), so the model starts where the study's did.
_KERNEL_INIT = nn.initializers.glorot_uniform()


class CNN(nn.Module):
  """Conv 32-64-128 (3x3, same, relu, 2x2 max-pool) → dropout → dense 128-128 → dropout between → logits."""

  num_classes: int = 3
  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: Sequence[int] = (128, 128)
  dropout_rate: float = 0.3
  conv_impl: str = 'xla'  # 'xla' (lax.conv) or 'patches' (im2col matmuls): same values and gradients.
  pool_impl: str = 'reduce_window'  # 'reduce_window' (nn.max_pool) or 'reshape': same values and gradients.
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params, logits and loss.

  def __post_init__(self):
    """Rejects an unknown conv / pool lowering or dtype, naming the config field."""
    layers.check_impls(self.conv_impl, self.pool_impl, self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to class logits; pixels are rescaled by 1/255 here."""
    dtype = jnp.dtype(self.dtype)
    conv = layers.patches_conv if self.conv_impl == 'patches' else None
    pool = layers.reshape_max_pool if self.pool_impl == 'reshape' else (
        lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))
    x = (images_BHWC.astype(jnp.float32) / 255.0).astype(dtype)
    for features in self.conv_features:
      x = nn.Conv(features, (3, 3), padding='SAME', kernel_init=_KERNEL_INIT, dtype=dtype,
                  conv_general_dilated=conv)(x)
      x = pool(nn.relu(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    for index, features in enumerate(self.dense_features):
      if index > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=dtype)(x))
    return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=dtype)(x).astype(jnp.float32)
