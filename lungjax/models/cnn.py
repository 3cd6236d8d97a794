"""The study's CNN: three conv + max-pool blocks, dropout, two dense layers, a 3-way head.

head='flatten' (the study's) flattens the last 32x32x128 map into the first dense layer (16.8M weights at 256 px):
every position has its own weights, so a marker in a corner can be learnt where it sits. head='gap' averages the
map over positions first (global average pooling) and keeps only the last dense layer's width before the logits
(128 -> dense_features[-1] -> classes): what the convs find counts the same wherever it is on the film.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lungjax.models import layers

# Keras' defaults (glorot_uniform kernels, zero biases), so the model starts where the study's did.
_KERNEL_INIT = nn.initializers.glorot_uniform()
HEADS = ('flatten', 'gap')


class CNN(nn.Module):
  """Conv 32-64-128 (3x3, same, relu, 2x2 max-pool) → dropout → dense 128-128 → dropout between → logits."""

  num_classes: int = 3
  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: Sequence[int] = (128, 128)
  dropout_rate: float = 0.3
  conv_impl: str = 'xla'  # 'xla' (lax.conv), 'patches' (im2col), 'blas' (CPU custom calls): same maths.
  pool_impl: str = 'reduce_window'  # 'reduce_window' (nn.max_pool), 'reshape', 'cpu_kernel' (relu fused).
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params, logits and loss.
  head: str = 'flatten'  # 'flatten' (the study's) or 'gap' (global average pooling: position-invariant).
  # 'blas' / 'cpu_kernel': the C++ kernels, handed in by lungjax.models.create_model (which also resolves 'auto').
  kernels: layers.KernelOps | None = None

  def __post_init__(self):
    """Rejects an unknown or unresolved conv / pool lowering or dtype, naming the config field."""
    layers.check_impls(self.conv_impl, self.pool_impl, self.dtype)
    if self.head not in HEADS:
      raise ValueError(f'config.model.head={self.head!r} is not one of {HEADS}')
    layers.check_resolved(self.conv_impl, self.pool_impl, self.kernels)
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to class logits; pixels are rescaled by 1/255 here."""
    dtype = jnp.dtype(self.dtype)
    relu_pool = {'reduce_window': lambda x: nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2)),
                 'reshape': lambda x: layers.reshape_max_pool(nn.relu(x)),
                 'cpu_kernel': lambda x: self.kernels.relu_max_pool(x.astype(jnp.float32))}[self.pool_impl]
    x = (images_BHWC.astype(jnp.float32) / 255.0).astype(dtype)
    for index, features in enumerate(self.conv_features):
      name = f'Conv_{index}'  # nn.Conv's own names, whichever lowering: checkpoints and Grad-CAM layers match.
      if self.conv_impl == 'blas':
        x = layers.KernelConv(features, (3, 3), self.kernels.conv_bias, padding='SAME', kernel_init=_KERNEL_INIT,
                              name=name)(x)
      else:
        x = nn.Conv(features, (3, 3), padding='SAME', kernel_init=_KERNEL_INIT, dtype=dtype, name=name,
                    conv_general_dilated=layers.patches_conv if self.conv_impl == 'patches' else None)(x)
      x = relu_pool(x)
    if self.head == 'gap':  # Position-invariant: the map's mean over rows and columns, then one small layer.
      x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(dtype)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.dense_features[-1], kernel_init=_KERNEL_INIT, dtype=dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=dtype)(x).astype(jnp.float32)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    for index, features in enumerate(self.dense_features):
      if index > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(features, kernel_init=_KERNEL_INIT, dtype=dtype)(x))
    return nn.Dense(self.num_classes, kernel_init=_KERNEL_INIT, dtype=dtype)(x).astype(jnp.float32)
