"""A small U-Net for lung segmentation: a chest film in, one logit per pixel out (lung vs not lung).

Four levels (config.model.features, e.g. (16, 32, 64, 128)): two 3x3 conv + ReLU at each, 2x2 max pooling down,
2x2 transposed convs up with the skip connection concatenated, a 1x1 conv to one logit. It takes the classifiers'
input (uint8 RGB, B x H x W x 3, H and W divisible by 2**(levels-1)), reads its grey level (the channel mean / 255,
so an RGB and a greyscale copy of a film give the same mask), averages it down by `downsample` (2: a 256 px film
is segmented at 128 px, four times cheaper on a CPU; lung outlines are smooth), and returns logits_BHW upsampled
bilinearly to the input's size. No batch statistics: the
TrainState's model_state stays {} and a mask depends only on its own film.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class UNet(nn.Module):
  """U-Net of len(features) levels; num_classes must be 1 (the lung logit). Returns logits_BHW in float32."""

  num_classes: int = 1
  features: Sequence[int] = (16, 32, 64, 128)
  downsample: int = 2
  dtype: str = 'float32'

  def _block(self, x_BHWC: jax.Array, features: int) -> jax.Array:
    for _ in range(2):
      x_BHWC = nn.relu(nn.Conv(features, (3, 3), padding='SAME', dtype=self.dtype)(x_BHWC))
    return x_BHWC

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout, no batch statistics.
    if self.num_classes != 1:
      raise ValueError(f'the U-Net predicts one lung logit per pixel: num_classes must be 1, got {self.num_classes}')
    factor = 2**(len(self.features) - 1) * self.downsample
    height, width = images_BHWC.shape[1:3]
    if height % factor or width % factor:
      raise ValueError(f'the U-Net of {len(self.features)} levels takes sides divisible by {factor}, got '
                       f'{height}x{width}')
    x_BHWC = jnp.mean(images_BHWC.astype(jnp.float32), axis=-1, keepdims=True) / 255.0
    if self.downsample > 1:
      x_BHWC = nn.avg_pool(x_BHWC, (self.downsample, self.downsample), strides=(self.downsample, self.downsample))
    x_BHWC = x_BHWC.astype(self.dtype)
    skips = []
    for level, features in enumerate(self.features):
      x_BHWC = self._block(x_BHWC, features)
      if level < len(self.features) - 1:
        skips.append(x_BHWC)
        x_BHWC = nn.max_pool(x_BHWC, (2, 2), strides=(2, 2))
    for features, skip_BHWC in zip(reversed(self.features[:-1]), reversed(skips)):
      x_BHWC = nn.ConvTranspose(features, (2, 2), strides=(2, 2), dtype=self.dtype)(x_BHWC)
      x_BHWC = self._block(jnp.concatenate([x_BHWC, skip_BHWC], axis=-1), features)
    logits_BHW = nn.Conv(1, (1, 1), dtype=self.dtype)(x_BHWC)[..., 0].astype(jnp.float32)
    if self.downsample > 1:
      logits_BHW = jax.image.resize(logits_BHW, (logits_BHW.shape[0], height, width), 'bilinear')
    return logits_BHW
