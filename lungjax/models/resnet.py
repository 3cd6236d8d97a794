"""ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks, laid out exactly like keras.applications.ResNet50).

Submodules are named so that joining a module path with '_' gives the Keras layer name: ('conv1_conv',),
('conv2', 'block1', '1_conv') ↔ conv2_block1_1_conv, ... keras_weights.py loads Keras weights by that rule.
The stages are the top-level modules 'conv2' ... 'conv5'; 'conv5' is the last conv stage (Grad-CAM's layer).

Normalisation (config.model.norm): 'batch' is BatchNorm with running statistics in 'batch_stats', updated with
config.model.bn_momentum (Keras' 0.99 by default here, which its ImageNet weights came with); 'group' is GroupNorm
(32 groups, fewer for narrow layers), which normalises each image by its own statistics in train and eval mode alike
and keeps no running statistics. With momentum 0.99, a short run from scratch (~200 images, ~12 steps an epoch) leaves
the running statistics mostly at their initial values (0.99^36 = 0.70 after 3 epochs), so eval mode sees other
activations than training did (lungjax issue 12); configs/resnet.py uses 0.9 (0.9^12 = 0.28 after one epoch). The
momentum changes only eval mode, never the training trajectory. On the study's data at 128 px it took validation
accuracy from 0.28-0.74 (swinging) to 0.86-0.92 over epochs 3-9; GroupNorm rose more slowly (0.66 → 0.84).
The norm layers keep Keras' '*_bn' names with either choice.
"""

import math

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
NORMS = ('batch', 'group')
_BN_EPSILON = 1.001e-5  # Keras' ResNet50.
_GN_GROUPS = 32  # Wu & He (2018), BiT.
_KERNEL_INIT = nn.initializers.he_normal()


def check_norm(norm: str) -> None:
  """Raises ValueError naming config.model.norm unless norm is one of NORMS."""
  if norm not in NORMS:
    raise ValueError(f'config.model.norm={norm!r} is not one of {NORMS}')


def _norm(norm: str, momentum: float, features: int, train: bool, name: str, dtype: str,
          last_in_block: bool = False) -> nn.Module:
  """BatchNorm (eps 1.001e-5 like Keras', running statistics in 'batch_stats' updated with `momentum`) for 'batch';
  for 'group' GroupNorm over gcd(32, features) groups (32 at the default widths), no running statistics, its scale
  starting at 0 on a residual branch's last norm (each block starts as its shortcut: Goyal et al. 2017)."""
  if norm == 'batch':
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=_BN_EPSILON, dtype=dtype,
                        name=name)
  check_norm(norm)
  return nn.GroupNorm(num_groups=math.gcd(_GN_GROUPS, features), epsilon=_BN_EPSILON, dtype=dtype, name=name,
                      scale_init=nn.initializers.zeros if last_in_block else nn.initializers.ones)


class BasicBlock(nn.Module):
  """Two 3x3 convs (stride on the first), each normalised; a 1x1 projection shortcut when the shape changes."""

  features: int
  stride: int = 1
  use_bias: bool = False
  norm: str = 'batch'
  bn_momentum: float = 0.99
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Returns relu(shortcut + residual)."""
    shortcut = x_BHWC
    if self.stride != 1 or x_BHWC.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                         kernel_init=_KERNEL_INIT, dtype=self.dtype, name='0_conv')(x_BHWC)
      shortcut = _norm(self.norm, self.bn_momentum, shortcut.shape[-1], train, '0_bn', self.dtype)(shortcut)
    x = nn.Conv(self.features, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)), use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='1_conv')(x_BHWC)
    x = nn.relu(_norm(self.norm, self.bn_momentum, x.shape[-1], train, '1_bn', self.dtype)(x))
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='2_conv')(x)
    x = _norm(self.norm, self.bn_momentum, x.shape[-1], train, '2_bn', self.dtype, last_in_block=True)(x)
    return nn.relu(shortcut + x)


class Bottleneck(nn.Module):
  """Keras' residual_block_v1: 1x1 (carries the stride) → 3x3 → 1x1 (4x features), projection on block 1."""

  features: int
  stride: int = 1
  use_bias: bool = True
  norm: str = 'batch'
  bn_momentum: float = 0.99
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Returns relu(shortcut + residual)."""
    shortcut = x_BHWC
    if self.stride != 1 or x_BHWC.shape[-1] != 4 * self.features:
      shortcut = nn.Conv(4 * self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                         kernel_init=_KERNEL_INIT, dtype=self.dtype, name='0_conv')(x_BHWC)
      shortcut = _norm(self.norm, self.bn_momentum, shortcut.shape[-1], train, '0_bn', self.dtype)(shortcut)
    x = nn.Conv(self.features, (1, 1), strides=self.stride, padding='VALID', use_bias=self.use_bias,
                kernel_init=_KERNEL_INIT, dtype=self.dtype, name='1_conv')(x_BHWC)
    x = nn.relu(_norm(self.norm, self.bn_momentum, x.shape[-1], train, '1_bn', self.dtype)(x))
    x = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=self.use_bias, kernel_init=_KERNEL_INIT,
                name='2_conv')(x)
    x = nn.relu(_norm(self.norm, self.bn_momentum, x.shape[-1], train, '2_bn', self.dtype)(x))
    x = nn.Conv(4 * self.features, (1, 1), padding='VALID', use_bias=self.use_bias, kernel_init=_KERNEL_INIT,
                name='3_conv')(x)
    x = _norm(self.norm, self.bn_momentum, x.shape[-1], train, '3_bn', self.dtype, last_in_block=True)(x)
    return nn.relu(shortcut + x)


class ResNetStage(nn.Module):
  """num_blocks residual blocks named block1, block2, ...; the first one carries the stride."""

  features: int
  num_blocks: int
  stride: int
  bottleneck: bool
  use_bias: bool
  norm: str = 'batch'
  bn_momentum: float = 0.99
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    """Applies the stage's blocks in order."""
    block_class = Bottleneck if self.bottleneck else BasicBlock
    for index in range(self.num_blocks):
      x_BHWC = block_class(self.features, stride=self.stride if index == 0 else 1, use_bias=self.use_bias,
                           norm=self.norm, bn_momentum=self.bn_momentum, dtype=self.dtype,
                           name=f'block{index + 1}')(x_BHWC, train=train)
    return x_BHWC


class ResNet(nn.Module):
  """Stem (7x7/2 conv, norm, relu, 3x3/2 max-pool) → stages conv2..conv5 → global mean pool → dropout → head."""

  num_classes: int = 3
  depth: int = 18
  width: int = 64
  dropout_rate: float = 0.0
  preprocessing: str = 'rescale'
  norm: str = 'batch'  # 'batch' (BatchNorm) or 'group' (GroupNorm): see the module docstring.
  bn_momentum: float = 0.99  # BatchNorm's running statistics: new = momentum * old + (1 - momentum) * batch's.
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params, batch statistics and logits.

  def __post_init__(self):
    """Rejects a depth, preprocessing mode or norm this model does not have, naming the config field."""
    if self.depth not in STAGES:
      raise ValueError(f'config.model.depth={self.depth!r} is not a ResNet depth: use one of {sorted(STAGES)}')
    keras_weights.check_preprocessing(self.preprocessing)
    check_norm(self.norm)
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f'config.model.bn_momentum={self.bn_momentum!r} must be in [0, 1)')
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
    x = nn.relu(_norm(self.norm, self.bn_momentum, self.width, train, 'conv1_bn', self.dtype)(x))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Keras' ZeroPadding2D(1) (inputs are >= 0 after relu).
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for index, num_blocks in enumerate(stage_sizes):
      x = ResNetStage(self.width * 2**index, num_blocks, stride=1 if index == 0 else 2, bottleneck=bottleneck,
                      use_bias=use_bias, norm=self.norm, bn_momentum=self.bn_momentum, dtype=self.dtype,
                      name=f'conv{index + 2}')(x, train=train)
    if features_only:
      return x
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
