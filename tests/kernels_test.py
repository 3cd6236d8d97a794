"""lungjax.cpu.kernels: the C++ conv + bias and relu + max-pool custom calls give jax.lax's values and gradients.

Tests that run the kernels skip, with the build's reason, where they cannot build (no C++ compiler, no OpenBLAS);
the tests of what happens then (a failed build, 'auto' falling back to XLA's ops) run everywhere.
"""

import os
import pathlib
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn
from lungjax.cpu import kernels as cpu
from lungjax.models import choose_lowering, create_model, layers

_REPO = pathlib.Path(__file__).parents[1]


@pytest.fixture
def built():
  """Skips the test, saying why, where the kernels do not build and load in this process."""
  if jax.default_backend() != 'cpu':
    pytest.skip(f'the kernels are XLA:CPU custom calls; this run is on {jax.default_backend()}')
  if (reason := cpu.unavailable_reason()) is not None:
    pytest.skip(f'the C++ kernels do not build here: {reason.splitlines()[0]}')


needs_kernels = pytest.mark.usefixtures('built')


def _lax_conv_bias(x, w, b, padding):
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b


@needs_kernels
@pytest.mark.parametrize('shape,kernel,padding', [
    ((2, 9, 7, 3), (3, 3, 3, 5), ((1, 1), (1, 1))),
    ((1, 8, 8, 4), (3, 3, 4, 6), ((0, 0), (0, 0))),
    ((2, 6, 5, 2), (5, 3, 2, 3), ((1, 2), (0, 1))),
    ((2, 6, 6, 3), (1, 1, 3, 4), ((0, 0), (0, 0))),
    ((3, 40, 33, 16), (3, 3, 16, 8), ((1, 1), (1, 1))),  # several row blocks per image, odd width
    # Multiples of 16 features take the AVX-512 direct kernel where the CPU has it (blocks of 24, 12, 6 positions
    # and the one-position edges): widths below and above a block, asymmetric pads, 16 + 32 + 64 feature chunks.
    ((2, 5, 30, 3), (3, 3, 3, 16), ((1, 1), (1, 1))),
    ((2, 9, 13, 5), (3, 3, 5, 32), ((0, 2), (2, 0))),
    ((1, 7, 8, 7), (3, 5, 7, 112), ((1, 1), (2, 2))),
    ((2, 4, 3, 2), (3, 3, 2, 64), ((0, 0), (0, 0))),
])
def test_conv_bias_matches_lax_values_and_gradients(shape, kernel, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
  b = jnp.asarray(rng.normal(size=kernel[-1:]), jnp.float32)
  ours = jax.jit(lambda x, w, b: cpu.conv_bias(x, w, b, padding))
  theirs = jax.jit(lambda x, w, b: _lax_conv_bias(x, w, b, padding))
  np.testing.assert_allclose(ours(x, w, b), theirs(x, w, b), atol=1e-4, rtol=1e-4)
  loss = lambda conv: lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b)))
  for a, e in zip(jax.jit(jax.grad(loss(ours), (0, 1, 2)))(x, w, b), jax.jit(jax.grad(loss(theirs), (0, 1, 2)))(x, w, b)):
    # The weight and bias gradients sum thousands of float32 products (3 x 40 x 33 positions for shape4), in another
    # order than XLA's (which depends on its thread split): 1e-4 of the gradient's scale, not of 1.
    np.testing.assert_allclose(a, e, atol=1e-4 * max(1.0, float(np.abs(e).max())), rtol=1e-4)


def _assert_gradient_is_bitwise_deterministic(compute: str, shape_BHW: tuple[int, int, int], seed: int,
                                              repeats: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The weight and bias gradients of a 3x3 conv (8 -> 16 features) are bit-identical over `repeats` calls."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(*shape_BHW, 8)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(*shape_BHW, 16)), jnp.float32)
  w, b = jnp.zeros((3, 3, 8, 16)), jnp.zeros(16)
  grads = jax.jit(lambda x, dy: jax.vjp(lambda w, b: cpu.conv_bias(x, w, b, ((1, 1), (1, 1)), compute), w, b)[1](dy))
  first = [np.asarray(g) for g in grads(x, dy)]
  for _ in range(repeats):
    for a, e in zip(grads(x, dy), first):
      np.testing.assert_array_equal(np.asarray(a), e)
  return x, w, b


@needs_kernels
def test_kernel_gradient_is_bitwise_deterministic():
  x, w, b = _assert_gradient_is_bitwise_deterministic('float32', (4, 64, 64), seed=1, repeats=5)


@needs_kernels
@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 9, 2), (3, 32, 32, 16)])
def test_relu_max_pool_matches_reshape_pool_with_ties(shape):
  rng = np.random.default_rng(2)
  z = rng.normal(size=shape).astype(np.float32)
  z[0, :4, :4, :] = 0.5  # ties of a positive max (a flat image region through conv + bias)
  z[-1, -4:, :4, :] = 0.0  # relu's kink: every position ties at 0
  z = jnp.asarray(z)
  theirs = lambda z: layers.reshape_max_pool(jax.nn.relu(z))
  np.testing.assert_array_equal(cpu.relu_max_pool(z), theirs(z))
  weights = jnp.asarray(rng.normal(size=theirs(z).shape), jnp.float32)
  loss = lambda pool: lambda z: jnp.sum(jnp.cos(pool(z)) * weights)
  np.testing.assert_allclose(jax.jit(jax.grad(loss(cpu.relu_max_pool)))(z), jax.grad(loss(theirs))(z), atol=1e-6)


@needs_kernels
def test_the_cpu_kernels_keep_nn_conv_parameters():
  images = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), np.uint8)
  trees = []
  for conv_impl, pool_impl in (('xla', 'reshape'), ('blas', 'cpu_kernel')):
    config = cnn.get_config().model
    config.conv_features, config.dense_features = (4, 8, 8), (16, 16)
    config.conv_impl, config.pool_impl = conv_impl, pool_impl
    trees.append(create_model(config, 3).init(jax.random.PRNGKey(0), images, train=False)['params'])
  jax.tree.map(np.testing.assert_array_equal, trees[0], trees[1])  # same names, shapes and initial values


@pytest.fixture
def bf16_env(monkeypatch):
  """Sets $LUNGJAX_CPU_BF16 for one test; choose_lowering's cache is emptied before and after."""
  def set_env(value):
    monkeypatch.setenv(cpu.BF16_ENV, value)
    choose_lowering.cache_clear()
  yield set_env
  choose_lowering.cache_clear()


@needs_kernels
def test_auto_picks_the_kernels_on_one_cpu_device(bf16_env):
  bf16_env('0')  # as on a CPU without bfloat16 dot products
  assert jax.device_count() == 1
  resolved = lambda *impls: (lambda l: (l.conv_impl, l.pool_impl, l.conv_compute))(choose_lowering(*impls))
  assert resolved('auto', 'auto', 'float32') == ('blas', 'cpu_kernel', 'float32')
  assert resolved('auto', 'auto', 'bfloat16') == ('blas', 'cpu_kernel', 'float32')
  assert resolved('patches', 'auto', 'float32') == ('patches', 'cpu_kernel', '')
  assert resolved('xla', 'reshape', 'float32') == ('xla', 'reshape', '')
  assert choose_lowering('xla', 'reshape', 'float32').kernels is None
  model = create_model(cnn.get_config().model, 3)  # 'auto' is resolved when the model is built
  assert (model.conv_impl, model.pool_impl, model.kernels.conv_bias.func) == ('blas', 'cpu_kernel', cpu.conv_bias)


@needs_kernels
def test_auto_in_bfloat16_says_in_one_line_how_the_convs_compute(bf16_env, caplog):
  bf16_env('0')
  with caplog.at_level('INFO'):
    lowering = choose_lowering('auto', 'auto', 'bfloat16')
  lines = [r.getMessage() for r in caplog.records if 'CNN lowering' in r.getMessage()]
  assert len(lines) == 1 and 'turned off by $LUNGJAX_CPU_BF16=0: the convs compute in float32' in lines[0], lines
  assert lowering.kernels.conv_bias.keywords == {'compute': 'float32'}
  bf16_env('emulate')
  assert choose_lowering('auto', 'auto', 'bfloat16').conv_compute == 'bfloat16_emulated'
  bf16_env('')
  native = choose_lowering('auto', 'auto', 'bfloat16')
  assert native.conv_compute == ('bfloat16' if cpu.bf16_dot_unavailable_reason() is None else 'float32')
  assert choose_lowering('auto', 'auto', 'float32').conv_compute == 'float32'


def _round_bf16(a):
  """a rounded to bfloat16 (nearest even) and back, with the identity's gradient (no rounding of the cotangent)."""
  return a + jax.lax.stop_gradient(a.astype(jnp.bfloat16).astype(jnp.float32) - a)


def _bf16_computes():
  """'bfloat16_emulated' everywhere; 'bfloat16' (vdpbf16ps) where this CPU has it, else a skip saying why."""
  reason = cpu.bf16_dot_unavailable_reason() if cpu.unavailable_reason() is None else 'the kernels do not build'
  return ['bfloat16_emulated', pytest.param('bfloat16', marks=pytest.mark.skipif(
      reason is not None, reason=f'native bfloat16: {reason}'))]


@needs_kernels
@pytest.mark.parametrize('compute', _bf16_computes())
@pytest.mark.parametrize('shape,kernel,padding', [
    ((2, 9, 10, 3), (3, 3, 3, 32), ((1, 1), (1, 1))),  # odd input channels (padded to a pair), 32 features
    ((2, 8, 30, 32), (3, 3, 32, 64), ((1, 1), (1, 1))),  # blocks of 6 positions, edges, odd kernel-grad slices
    ((1, 7, 9, 64), (3, 3, 64, 128), ((0, 2), (2, 0))),  # asymmetric pads, odd output width (a zero dY pair)
    ((2, 5, 6, 5), (3, 5, 5, 16), ((1, 1), (2, 2))),  # 16 features: blocks of 24 positions never fill
    ((2, 6, 5, 4), (3, 3, 4, 8), ((1, 1), (1, 1))),  # 8 features: rounded inputs on the float32 path
])
def test_bfloat16_conv_is_lax_on_bfloat16_rounded_inputs(compute, shape, kernel, padding):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
  b = jnp.asarray(rng.normal(size=kernel[-1:]), jnp.float32)
  ours = lambda x, w, b: cpu.conv_bias(x, w, b, padding, compute)
  theirs = lambda x, w, b: jax.lax.conv_general_dilated(
      _round_bf16(x), _round_bf16(w), (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision='highest') + b
  y = jax.jit(ours)(x, w, b)
  np.testing.assert_allclose(y, jax.jit(theirs)(x, w, b), atol=1e-4 * float(np.abs(y).max()), rtol=1e-5)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  ours_grads = jax.jit(lambda *a: jax.vjp(ours, *a)[1](dy))(x, w, b)
  # dY is rounded too in the input and kernel gradients; the bias gradient sums dY as it is, in float32.
  rounded = jax.jit(lambda *a: jax.vjp(theirs, *a)[1](_round_bf16(dy)))(x, w, b)
  exact = jax.jit(lambda *a: jax.vjp(theirs, *a)[1](dy))(x, w, b)
  for a, e in zip(ours_grads, (rounded[0], rounded[1], exact[2])):
    np.testing.assert_allclose(a, e, atol=1e-4 * float(np.abs(e).max()), rtol=1e-5)


@needs_kernels
def test_bfloat16_conv_rounds_what_float32_keeps():
  x = jnp.full((1, 4, 4, 2), 1.0 + 2.0 ** -10, jnp.float32)  # not a bfloat16: rounds to 1.0
  w, b = jnp.ones((1, 1, 2, 16), jnp.float32), jnp.zeros(16, jnp.float32)
  np.testing.assert_array_equal(cpu.conv_bias(x, w, b, ((0, 0), (0, 0)), 'bfloat16_emulated'), 2.0)
  np.testing.assert_array_equal(cpu.conv_bias(x, w, b, ((0, 0), (0, 0))), 2.0 + 2.0 ** -9)


@needs_kernels
def test_bfloat16_kernel_gradient_is_bitwise_deterministic():
  _assert_gradient_is_bitwise_deterministic('bfloat16_emulated', (3, 24, 20), seed=5, repeats=3)


@needs_kernels
def test_native_bfloat16_is_refused_on_a_cpu_without_it():
  if cpu.bf16_dot_unavailable_reason() is None:
    pytest.skip('this CPU has avx512_bf16: the native bfloat16 convs run here (tests above)')
  x, w, b = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 16)), jnp.zeros(16)
  with pytest.raises(Exception, match='avx512_bf16'):
    jax.block_until_ready(cpu.conv_bias(x, w, b, ((1, 1), (1, 1)), 'bfloat16'))
  with pytest.raises(ValueError, match='compute='):
    cpu.conv_bias(x, w, b, ((1, 1), (1, 1)), 'float16')


@needs_kernels
def test_a_bfloat16_cnn_on_the_kernels_follows_xla_bfloat16(bf16_env):
  bf16_env('emulate')
  images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), np.uint8)
  outputs = {}
  for conv_impl, pool_impl, dtype in (('xla', 'reshape', 'float32'), ('blas', 'cpu_kernel', 'bfloat16'),
                                      ('blas', 'cpu_kernel', 'float32')):
    config = cnn.get_config().model
    config.conv_features, config.dense_features = (16, 16, 32), (16, 16)
    config.conv_impl, config.pool_impl, config.dtype = conv_impl, pool_impl, dtype
    model = create_model(config, 3)
    params = model.init(jax.random.PRNGKey(0), images, train=False)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    outputs[conv_impl, dtype] = np.asarray(jax.jit(lambda p, m=model: m.apply(p, images, train=False))(params))
  scale = float(np.abs(outputs['xla', 'float32']).max())
  np.testing.assert_allclose(outputs['blas', 'float32'], outputs['xla', 'float32'], atol=1e-4 * scale)
  np.testing.assert_allclose(outputs['blas', 'bfloat16'], outputs['xla', 'float32'], atol=0.05 * scale)
  assert np.abs(outputs['blas', 'bfloat16'] - outputs['xla', 'float32']).max() > 1e-4 * scale  # it did round


def test_what_the_kernels_do_not_cover_is_refused_by_name(bf16_env):
  bf16_env('0')
  config = cnn.get_config().model
  config.conv_impl, config.pool_impl, config.dtype = 'blas', 'reshape', 'bfloat16'
  with pytest.raises(ValueError, match='config.model.conv_impl'):
    create_model(config, 3)
  with pytest.raises(NotImplementedError, match='conv_impl'):
    layers.explicit_padding('CIRCULAR', (3, 3), 'blas')
  with pytest.raises(NotImplementedError, match='padding < kernel size'):
    cpu.check_padding(((3, 3), (1, 1)), (3, 3))
  with pytest.raises(ValueError, match='create_model'):  # 'auto' is chosen at build time, by the registry
    layers.check_resolved('auto', 'reshape', None)
  with pytest.raises(ValueError, match='C\+\+ kernels'):
    layers.check_resolved('blas', 'reshape', None)


def test_a_failed_build_names_the_compiler_and_the_alternative(tmp_path):
  code = ('import pytest; from lungjax.cpu import kernels as cpu\n'
          'with pytest.raises(cpu.KernelBuildError, match="conv_impl=.xla.") as e: cpu.build()\n'
          'print(e.value)\n')
  env = {**os.environ, 'CXX': str(tmp_path / 'no-such-compiler'), 'LUNGJAX_KERNEL_CACHE': str(tmp_path / 'cache'),
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=_REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'C++ compiler' in result.stdout
  assert not list((tmp_path / 'cache').glob('*.so'))  # nothing half-written is left to be loaded later


_NO_COMPILER = '''
import jax, numpy as np
from configs import tiny
from lungjax import steps
from lungjax.runtime import mesh as mesh_lib
from lungjax.models import create_model
config = tiny.get_config()  # conv_impl = pool_impl = 'auto', as the study config
model = create_model(config.model, 3)
create_model(config.model, 3)  # a second build: the choice is not made (nor logged) again
mesh = mesh_lib.make_mesh()
tx = steps.create_optimizer(config.train)
state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(0))
train_step = steps.jit_train_step(model, tx, np.ones(3, np.float32), mesh)
rng = np.random.default_rng(0)
batch = mesh_lib.to_global_batch({'image': rng.integers(0, 256, (4, 32, 32, 3), np.uint8),
                                  'label': np.array([0, 1, 2, 0], np.int32)}, mesh_lib.batch_sharded(mesh))
state, metrics = train_step(state, batch)
print(model.conv_impl, model.pool_impl, model.kernels, int(state.step), bool(np.isfinite(metrics.compute()['loss'])))
'''


def test_without_a_compiler_auto_trains_with_xla_ops_after_one_line(tmp_path):
  env = {**os.environ, 'CXX': '/nonexistent', 'LUNGJAX_KERNEL_CACHE': str(tmp_path / 'cache'), 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', _NO_COMPILER], env=env, capture_output=True, text=True, timeout=600,
                          cwd=_REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['xla', 'reshape', 'None', '1', 'True']
  lines = [line for line in result.stderr.splitlines() if 'lowering' in line or 'compiler' in line]
  assert len(lines) == 1, result.stderr[-3000:]
  assert "conv_impl=xla, pool_impl=reshape" in lines[0] and "'/nonexistent'" in lines[0], lines
  assert 'Traceback' not in result.stderr


def test_the_portable_build_compiles_without_the_x86_code(tmp_path):
  """-DLUNGJAX_PORTABLE compiles what a CPU other than x86-64 compiles (no <immintrin.h>, no AVX-512)."""
  try:
    native, portable = cpu.build(), cpu.build(tmp_path, extra_flags=('-DLUNGJAX_PORTABLE',))
  except cpu.KernelBuildError as e:
    pytest.skip(f'the C++ kernels do not build here: {str(e).splitlines()[0]}')
  nm = lambda *args: subprocess.run(['nm', *args], capture_output=True, text=True, check=True).stdout
  exported = nm('-D', '--defined-only', str(portable))
  assert all(symbol in exported for symbol in cpu._SYMBOLS.values())  # pylint: disable=protected-access
  if platform.machine() == 'x86_64':
    assert 'DirectBlock' in nm('-C', str(native))  # the AVX-512 direct conv, left out of the portable build
  assert 'DirectBlock' not in nm('-C', str(portable))
