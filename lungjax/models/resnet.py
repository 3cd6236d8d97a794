"""ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks, laid out exactly like keras.applications.ResNet50).

Submodules are named so that joining a module path with '_' gives the Keras layer name: ('conv1_conv',),
('conv2', 'block1', '1_conv') ↔ conv2_block1_1_conv, ... keras_weights.py loads Keras weights by that rule.
The stages are the top-level modules 'conv2' ... 'conv5'; 'conv5' is the last conv stage (Grad-CAM's layer).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lungjax.models import keras_weights, layers

# depth → (blocks per stage, bottleneck blocks?)
STAGES: dict[int, tuple[tuple[int, ...], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
}
LAST_STAGE = 'conv5'
_BN_EPSILON = 1.001e-5  # Keras' ResNet50.
_KERNEL_INIT = nn.initializers.he_normal()


def _batch_norm(train: bool, name: str, dtype: str) -> nn.BatchNorm:
  """Keras-compatible BatchNorm (momentum 0.99, eps 1.001e-5) keeping running statistics in 'batch_stats'."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=_BN_EPSILON, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs (stride on the first) with BatchNorm; a 1x1 projection shortcut when the shape changes."""

  features: int
  stride: int = 1
  use_bias: bool = False
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Returns relu(shortcut + residual)."""
    shortcut = x_BHWC
    if self.stride != 1 or x_BHWC.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                         kernel_init=_KERNEL_INIT, dtype=self.dtype, name='0_conv')(x_BHWC)
      shortcut = _batch_norm(train, '0_bn', self.dtype)(shortcut)
    x = nn.Conv(self.features, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)), use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='1_conv')(x_BHWC)
    x = nn.relu(_batch_norm(train, '1_bn', self.dtype)(x))
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='2_conv')(x)
    x = _batch_norm(train, '2_bn', self.dtype)(x)
    return nn.relu(shortcut + x)


class Bottleneck(nn.Module):
  """Keras' residual_block_v1: 1x1 (carries the stride) → 3x3 → 1x1 (4x features), projection on block 1."""

  features: int
  stride: int = 1
  use_bias: bool = True
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Returns relu(shortcut + residual)."""
    shortcut = x_BHWC
    if self.stride != 1 or x_BHWC.shape[-1] != 4 * self.features:
      shortcut = nn.Conv(4 * self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                         kernel_init=_KERNEL_INIT, dtype=self.dtype, name='0_conv')(x_BHWC)
      shortcut = _batch_norm(train, '0_bn', self.dtype)(shortcut)
    x = nn.Conv(self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='1_conv')(x_BHWC)
    x = nn.relu(_batch_norm(train, '1_bn', self.dtype)(x))
    x = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=self.use_bias, kernel_init=_KERNEL_INIT,
                name='2_conv')(x)
    x = nn.relu(_batch_norm(train, '2_bn', self.dtype)(x))
    x = nn.Conv(4 * self.features, (1, 1), padding='VALID', use_bias=self.use_bias, kernel_init=_KERNEL_INIT,
                name='3_conv')(x)
    x = _batch_norm(train, '3_bn', self.dtype)(x)
    return nn.relu(shortcut + x)


class ResNetStage(nn.Module):
  """num_blocks residual blocks named block1, block2, ...; the first one carries the stride."""

  features: int
  num_blocks: int
  stride: int
  bottleneck: bool
  use_bias: bool
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Applies the stage's blocks in order."""
    block_class = Bottleneck if self.bottleneck else BasicBlock
    for index in range(self.num_blocks):
      x_BHWC = block_class(self.features, stride=self.stride if index == 0 else 1, use_bias=self.use_bias,
                           dtype=self.dtype, name=f'block{index + 1}')(x_BHWC, train=train)
    return x_BHWC


class ResNet(nn.Module):
  """Stem (7x7/2 conv, BN, relu, 3x3/2 max-pool) → stages conv2..conv5 → global mean pool → dropout → head."""

  num_classes: int = 3
  depth: int = 18
  width: int = 64
  dropout_rate: float = 0.0
  preprocessing: str = 'rescale'
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params, batch statistics and logits.

  def __post_init__(self):
    """Rejects a depth or preprocessing mode this model does not have, naming the config field."""
    if self.depth not in STAGES:
      raise ValueError(f'config.model.depth={self.depth!r} is not a ResNet depth: use one of {sorted(STAGES)}')
    keras_weights.check_preprocessing(self.preprocessing)
    layers.check_impls('xla', 'reduce_window', self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool, features_only: bool = False) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to logits, or with features_only to the conv5 feature map."""
    stage_sizes, bottleneck = STAGES[self.depth]
    use_bias = bottleneck  # Keras' ResNet50 has (redundant) conv biases; the basic-block nets do not.
    x = keras_weights.preprocess(images_BHWC, self.preprocessing).astype(self.dtype)
    x = nn.Conv(self.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='conv1_conv')(x)
    x = nn.relu(_batch_norm(train, 'conv1_bn', self.dtype)(x))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Keras' ZeroPadding2D(1) (inputs are >= 0 after relu).
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for index, num_blocks in enumerate(stage_sizes):
      x = ResNetStage(self.width * 2**index, num_blocks, stride=1 if index == 0 else 2, bottleneck=bottleneck,
                      use_bias=use_bias, dtype=self.dtype, name=f'conv{index + 2}')(x, train=train)
    if features_only:
      return x
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
