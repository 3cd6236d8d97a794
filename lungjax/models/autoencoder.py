"""The study's convolutional autoencoder: the CNN's conv stack as encoder, transposed convs back to the input size."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras' defaults, as in lungjax/models/cnn.py, so the encoder starts where the CNN's conv stack would.
_KERNEL_INIT = nn.initializers.glorot_uniform()


def encoder_layer_names(conv_features: Sequence[int]) -> tuple[str, ...]:
  """The encoder's conv module names: the CNN's own ('Conv_0', 'Conv_1', ...), so parameters map 1:1."""
  return tuple(f'Conv_{index}' for index in range(len(conv_features)))


class ConvAutoencoder(nn.Module):
  """Encoder: conv (3x3, same, relu, 2x2 max-pool) per conv_features; decoder: stride-2 transposed convs, sigmoid."""

  conv_features: Sequence[int] = (32, 64, 128)
  dtype: str = 'float32'  # Compute dtype: 'bfloat16' keeps float32 params and returns float32 reconstructions.

  @nn.compact
  def __call__(self, images_BHWC: jax.Array) -> jax.Array:
    """Maps uint8 (or [0, 255] float) images to reconstructions in [0, 1] of the same height and width."""
    height, width = images_BHWC.shape[1:3]
    factor = 2**len(self.conv_features)
    if height % factor or width % factor:
      raise ValueError(f'ConvAutoencoder needs a height and width divisible by {factor} (2 per conv layer), '
                       f'got {height}x{width}: change config.data.image_size')
    x = (images_BHWC.astype(jnp.float32) / 255.0).astype(self.dtype)
    for name, features in zip(encoder_layer_names(self.conv_features), self.conv_features):
      x = nn.Conv(features, (3, 3), padding='SAME', kernel_init=_KERNEL_INIT, dtype=self.dtype, name=name)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    for index, features in enumerate(reversed(self.conv_features)):
      x = nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding='SAME', kernel_init=_KERNEL_INIT,
                           dtype=self.dtype, name=f'Deconv_{index}')(x)
      x = nn.relu(x)
    x = nn.Conv(images_BHWC.shape[-1], (3, 3), padding='SAME', kernel_init=_KERNEL_INIT, dtype=self.dtype,
                name='Output')(x)
    return nn.sigmoid(x.astype(jnp.float32))
