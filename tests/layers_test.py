"""The alternative conv / max-pool lowerings give jax.lax's values and gradients (within 1e-4)."""

import ast
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn
from lungjax.cpu import kernels
from lungjax.models import create_model, layers

_REPO = pathlib.Path(__file__).parents[1]


def _lax_conv(x, w, padding):
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('shape,kernel,padding', [
    ((2, 9, 7, 3), (3, 3, 3, 5), 'SAME'),
    ((1, 8, 8, 4), (3, 3, 4, 6), 'VALID'),
    ((2, 6, 5, 2), (5, 3, 2, 3), ((1, 2), (0, 1))),
    ((2, 6, 6, 3), (1, 1, 3, 4), 'SAME'),
])
def test_patches_conv_matches_lax_values_and_gradients(shape, kernel, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel), jnp.float32)

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))

  ours = jax.jit(lambda x, w: layers.patches_conv(x, w, (1, 1), padding))
  theirs = jax.jit(lambda x, w: _lax_conv(x, w, padding))
  np.testing.assert_allclose(ours(x, w), theirs(x, w), atol=1e-4, rtol=1e-4)
  grads_ours = jax.jit(jax.grad(loss(ours), (0, 1)))(x, w)
  grads_theirs = jax.jit(jax.grad(loss(theirs), (0, 1)))(x, w)
  for a, b in zip(grads_ours, grads_theirs):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_patches_conv_refuses_what_it_does_not_lower():
  x, w = jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(NotImplementedError, match='conv_impl'):
    layers.patches_conv(x, w, (2, 2), 'SAME')
  with pytest.raises(NotImplementedError, match='conv_impl'):
    layers.patches_conv(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2))


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 9, 2)])
def test_reshape_max_pool_matches_reduce_window_values_and_gradients(shape):
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  theirs = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_allclose(layers.reshape_max_pool(x), theirs(x), atol=1e-6)
  loss = lambda pool: lambda x: jnp.sum(jnp.cos(pool(x)) * jnp.arange(pool(x).size).reshape(pool(x).shape))
  np.testing.assert_allclose(jax.grad(loss(layers.reshape_max_pool))(x), jax.grad(loss(theirs))(x), atol=1e-6)


def test_study_cnn_lowerings_agree_in_logits_and_every_gradient():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
  labels = jnp.array([0, 2])
  results = []
  lowerings = [('xla', 'reduce_window'), ('patches', 'reshape'), ('auto', 'auto')]
  if kernels.unavailable_reason() is None:  # else 'auto' is xla / reshape; tests/kernels_test.py says why
    lowerings.append(('blas', 'cpu_kernel'))
  for conv_impl, pool_impl in lowerings:
    config = cnn.get_config().model
    config.conv_features, config.dense_features = (4, 8, 8), (16, 16)
    config.conv_impl, config.pool_impl = conv_impl, pool_impl
    model = create_model(config, 3)
    params = model.init(jax.random.PRNGKey(0), images, train=False)['params']

    def loss(params, model=model):
      logits = model.apply({'params': params}, images, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
      return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    results.append(jax.jit(jax.value_and_grad(loss))(params))
  (loss_ref, grads_ref), *others = results
  for loss_value, grads in others:
    np.testing.assert_allclose(loss_value, loss_ref, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), grads, grads_ref)


def test_unknown_lowering_or_dtype_names_the_config_field():
  for field, value in (('conv_impl', 'winograd'), ('pool_impl', 'avg'), ('dtype', 'float16')):
    config = cnn.get_config().model
    config[field] = value
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      create_model(config, 3)


def test_the_portable_lowerings_import_nothing_of_lungjax_cpu():
  code = ('import sys; from configs import cnn; from lungjax.models import create_model\n'
          'config = cnn.get_config().model; config.conv_impl, config.pool_impl = "patches", "reshape"\n'
          'model = create_model(config, 3)\n'
          'print(model.conv_impl, model.pool_impl, sorted(m for m in sys.modules if m.startswith("lungjax.cpu")))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600, check=True,
                          cwd=_REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.stdout.split() == ['patches', 'reshape', '[]'], result.stderr[-2000:]


def test_only_the_model_registry_and_the_start_up_import_lungjax_cpu():
  """The kernels are chosen where the model is built; the host memory policy is applied at start-up."""
  importers = {}
  for path in sorted((_REPO / 'lungjax').rglob('*.py')):
    if path.parent.name == 'cpu':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [f'{node.module}.{alias.name}' for alias in node.names]
      elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      else:
        continue
      for name in names:
        if name.startswith('lungjax.cpu'):
          importers.setdefault(name, set()).add(str(path.relative_to(_REPO)))
  assert importers.pop('lungjax.cpu.kernels') == {'lungjax/models/__init__.py'}
  # main applies the policy; data/batches hands the loader's scratch back; config_check checks its setting (its hook);
  # benchmarks/bench.py times it.
  assert importers.pop('lungjax.cpu.host_memory') <= {'lungjax/main.py', 'lungjax/data/batches.py', 'lungjax/config_check.py'}
  assert not importers, importers
