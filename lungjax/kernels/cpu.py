"""XLA:CPU custom calls (cpu.cc) for the study CNN: conv + bias on im2col blocks and OpenBLAS, relu + max-pool.

The C++ source ships with the package and is compiled once per source / jaxlib / OpenBLAS version into a cache
folder (`$LUNGJAX_KERNEL_CACHE`, default `~/.cache/lungjax/kernels`) the first time a model uses
`config.model.conv_impl='blas'` or `pool_impl='cpu_kernel'`. `conv_bias` (stride-1 conv plus bias) and
`relu_max_pool` have custom VJPs whose gradients are custom calls too; the values and gradients are jax.lax's
(tests check them within 1e-4, ties of the max-pool included).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name('cpu.cc')
_SYMBOLS = {'conv_forward': 'LungjaxBlasConvForward', 'conv_input_grad': 'LungjaxBlasConvInputGrad',
            'conv_kernel_grad': 'LungjaxBlasConvKernelGrad', 'relu_max_pool_grad': 'LungjaxReluMaxPoolGrad'}
# -fno-trapping-math lets GCC vectorize the branch-free selects of the pool gradient (no FP traps are used).
_COMPILE_FLAGS = ('-O3', '-fno-trapping-math', '-std=c++17', '-shared', '-fPIC', '-w')
BUILD_TIMEOUT_S = 300


class KernelBuildError(RuntimeError):
  """The C++ conv kernel could not be compiled or loaded (the message says why and what to use instead)."""


def cache_dir() -> pathlib.Path:
  """Where compiled kernels live: $LUNGJAX_KERNEL_CACHE, else ~/.cache/lungjax/kernels."""
  return pathlib.Path(os.environ.get('LUNGJAX_KERNEL_CACHE', pathlib.Path.home() / '.cache' / 'lungjax' / 'kernels'))


def _openblas() -> Any:
  """The scipy-openblas32 package (headers and a shared OpenBLAS), or a KernelBuildError saying how to get it."""
  try:
    import scipy_openblas32  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise KernelBuildError("config.model.conv_impl='blas' / pool_impl='cpu_kernel' need the scipy-openblas32 "
                           "package (pip install scipy-openblas32), or use conv_impl='xla', pool_impl='reshape'") from e
  return scipy_openblas32


def build(directory: pathlib.Path | None = None) -> pathlib.Path:
  """Compiles cpu.cc unless this source / jaxlib / OpenBLAS build is cached; returns the library's path."""
  openblas = _openblas()
  compiler = os.environ.get('CXX', 'g++')
  lib_dir = openblas.get_lib_dir()
  key = hashlib.sha256(b'\0'.join([SOURCE.read_bytes(), jax.__version__.encode(), lib_dir.encode(),
                                   openblas.get_library().encode(), compiler.encode(),
                                   ' '.join(_COMPILE_FLAGS).encode()])).hexdigest()[:16]
  directory = pathlib.Path(directory or cache_dir())
  library = directory / f'lungjax_cpu-{key}.so'
  if library.exists():
    return library
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    partial = pathlib.Path(tmp) / library.name
    command = [compiler, *_COMPILE_FLAGS, '-I', jax.ffi.include_dir(), '-I', openblas.get_include_dir(), str(SOURCE),
               '-L', lib_dir, f'-l{openblas.get_library()}', f'-Wl,-rpath,{lib_dir}', '-o', str(partial)]
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise KernelBuildError(f'could not run the C++ compiler for lungjax.kernels ({e}); install g++ (or set $CXX), '
                             "or use config.model.conv_impl='xla', pool_impl='reshape'") from e
    if result.returncode != 0:
      raise KernelBuildError(f'compiling {SOURCE} failed (exit {result.returncode}):\n{result.stderr[-3000:]}\n'
                             "Use config.model.conv_impl='xla', pool_impl='reshape' instead")
    os.replace(partial, library)  # atomic: concurrent builders each write their own tmp folder
  return library


@functools.cache
def _register() -> None:
  """Builds (or finds) the library and registers its three handlers with XLA:CPU, once per process."""
  library = ctypes.cdll.LoadLibrary(str(build()))
  for name, symbol in _SYMBOLS.items():
    jax.ffi.register_ffi_target(f'lungjax_{name}', jax.ffi.pycapsule(getattr(library, symbol)),
                                platform='cpu')


Padding = tuple[tuple[int, int], tuple[int, int]]


@functools.cache
def available() -> bool:
  """True when the kernels build and load here; else logs why once (config 'auto' then uses XLA's ops)."""
  try:
    _register()
  except KernelBuildError as e:
    logging.warning('lungjax.kernels.cpu unavailable, conv_impl/pool_impl "auto" use XLA: %s', e)
    return False
  return True


def _call(name: str, shapes: Sequence[Sequence[int]], *operands: jax.Array, aliases: dict[int, int] | None = None,
          **attributes: int) -> Any:
  """One float32 custom call to handler `name`; one result per shape (a tuple when more than one).

  `aliases` maps an operand index to a result index that may reuse its buffer (XLA copies when it is live).
  """
  _register()
  results = [jax.ShapeDtypeStruct(tuple(shape), np.float32) for shape in shapes]
  call = jax.ffi.ffi_call(f'lungjax_{name}', results if len(results) > 1 else results[0], vmap_method='sequential',
                          input_output_aliases=aliases or {})
  return call(*operands, **{key: np.int64(value) for key, value in attributes.items()})


def _pads(padding: Padding) -> dict[str, int]:
  (top, bottom), (left, right) = padding
  return {'pad_top': top, 'pad_bottom': bottom, 'pad_left': left, 'pad_right': right}


def _output_shape(x_shape: Sequence[int], kernel_shape: Sequence[int], padding: Padding) -> tuple[int, ...]:
  """NHWC output shape of a stride-1 conv of an NHWC input with an HWIO kernel and explicit pads."""
  (top, bottom), (left, right) = padding
  return (x_shape[0], x_shape[1] + top + bottom - kernel_shape[0] + 1,
          x_shape[2] + left + right - kernel_shape[1] + 1, kernel_shape[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_bias(x_BHWC: jax.Array, kernel_HWIO: jax.Array, bias_F: jax.Array, padding: Padding) -> jax.Array:
  """Stride-1 float32 conv of x (NHWC) with an HWIO kernel and ((top, bottom), (left, right)) pads, plus bias."""
  return _call('conv_forward', [_output_shape(x_BHWC.shape, kernel_HWIO.shape, padding)], x_BHWC, kernel_HWIO,
               bias_F, **_pads(padding))


def _conv_bias_fwd(x_BHWC, kernel_HWIO, bias_F, padding):
  return conv_bias(x_BHWC, kernel_HWIO, bias_F, padding), (x_BHWC, kernel_HWIO)


def _conv_bias_bwd(padding, residuals, dy_BHWF):
  """Input gradient, then kernel and bias gradients: one custom call each (XLA drops the first when x is data)."""
  x_BHWC, kernel_HWIO = residuals
  dx_BHWC = _call('conv_input_grad', [x_BHWC.shape], dy_BHWF, kernel_HWIO, **_pads(padding))
  dkernel_HWIO, dbias_F = _call('conv_kernel_grad', [kernel_HWIO.shape, kernel_HWIO.shape[-1:]], x_BHWC, dy_BHWF,
                                **_pads(padding))
  return dx_BHWC, dkernel_HWIO, dbias_F


conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd)


@jax.custom_vjp
def relu_max_pool(z_BHWC: jax.Array) -> jax.Array:
  """2x2 / stride-2 max-pool of relu(z) (XLA); its gradient is one custom call (ties share it, as jnp.max's)."""
  from lungjax.models import layers  # pylint: disable=g-import-not-at-top  (layers imports this module)
  return layers.reshape_max_pool(jax.nn.relu(z_BHWC))


def _relu_max_pool_fwd(z_BHWC):
  return relu_max_pool(z_BHWC), z_BHWC


def _relu_max_pool_bwd(z_BHWC, dy_BhwC):
  """dz in z's buffer (z is dead after this in a train step; each window is read before it is written)."""
  return (_call('relu_max_pool_grad', [z_BHWC.shape], z_BHWC, dy_BhwC.astype(jnp.float32), aliases={0: 0}),)


relu_max_pool.defvjp(_relu_max_pool_fwd, _relu_max_pool_bwd)


def check_cpu(field: str) -> None:
  """Raises NotImplementedError naming the config field when this run is not on the CPU backend."""
  if jax.default_backend() != 'cpu':
    raise NotImplementedError(f'config.model.{field} selects a CPU kernel; this run is on '
                              f'{jax.default_backend()!r}: use conv_impl="xla", pool_impl="reshape"')


def explicit_padding(padding: Any, kernel_size: Sequence[int], impl: str) -> Padding:
  """flax's 'SAME' / 'VALID' / explicit pads as ((top, bottom), (left, right)); `impl` names the lowering in errors."""
  kh, kw = kernel_size
  if isinstance(padding, str):
    if padding == 'VALID':
      padding = ((0, 0), (0, 0))
    elif padding == 'SAME':
      padding = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    else:
      raise NotImplementedError(f'conv_impl="{impl}" does not support padding {padding!r}')
  (top, bottom), (left, right) = ((int(a), int(b)) for a, b in padding)
  return (top, bottom), (left, right)


def conv_padding(padding: Any, kernel_size: Sequence[int]) -> Padding:
  """explicit_padding for conv_impl='blas', checked for the kernel (0 <= each pad < its kernel size)."""
  (top, bottom), (left, right) = explicit_padding(padding, kernel_size, 'blas')
  kh, kw = kernel_size
  if min(top, bottom, left, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
    raise NotImplementedError(f'conv_impl="blas" needs 0 <= padding < kernel size, got {padding!r}')
  return (top, bottom), (left, right)
