"""The CNN's position-invariant head (config.model.head='gap'; issue 23 part 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn as cnn_config
from configs import tiny
from lungjax import config_check
from lungjax.models import create_model


def _model(head: str, size: int = 64):
  config = tiny.get_config().model
  config.head = head
  config.conv_impl, config.pool_impl = 'xla', 'reduce_window'
  module = create_model(config, 3)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.uint8), train=False)
  return module, params


def _blob(row: int, col: int, size: int = 64) -> np.ndarray:
  image = np.zeros((size, size, 3), np.uint8)
  image[row:row + 6, col:col + 6] = 220
  return image


def test_gap_does_not_see_where_a_marker_is():
  images_BHWC = jnp.asarray(np.stack([_blob(8, 8), _blob(40, 32)]))  # Moved by multiples of the 8x pooling.
  module, params = _model('gap')
  logits_BC = module.apply(params, images_BHWC, train=False)
  np.testing.assert_allclose(logits_BC[0], logits_BC[1], atol=1e-5)
  module, params = _model('flatten')
  logits_BC = module.apply(params, images_BHWC, train=False)
  assert np.abs(np.asarray(logits_BC[0] - logits_BC[1])).max() > 1e-4  # The study's head does.


def test_gap_head_is_small_at_the_study_size():
  config = cnn_config.get_config().model
  config.conv_impl, config.pool_impl = 'xla', 'reduce_window'
  counts = {}
  for head in ('flatten', 'gap'):
    config.head = head
    shapes = jax.eval_shape(lambda m=create_model(config, 3): m.init(jax.random.PRNGKey(0),
                                                                     jnp.zeros((1, 256, 256, 3), jnp.uint8),
                                                                     train=False))
    counts[head] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert counts['flatten'] > 16_000_000
  assert counts['gap'] < 120_000  # Convs 93k + 128x128 + 128x3.


def test_an_unknown_head_is_named():
  config = tiny.get_config()
  config.model.head = 'attention'
  with pytest.raises(ValueError, match='config.model.head'):
    config_check.validate(config)
