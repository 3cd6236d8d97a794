"""XLA:CPU custom calls (kernels.cc) for the study CNN: conv + bias on im2col blocks and OpenBLAS, relu + max-pool.

The C++ source ships with the package and is compiled once per source / jaxlib / OpenBLAS / compiler into a cache
folder (`$LUNGJAX_KERNEL_CACHE`, default `~/.cache/lungjax/kernels`) when lungjax.models.create_model first picks
`conv_impl='blas'` or `pool_impl='cpu_kernel'` (never inside a trace). `conv_bias` (stride-1 conv plus bias) and
`relu_max_pool` have custom VJPs whose gradients are custom calls too; the values and gradients are jax.lax's
(tests check them within 1e-4, ties of the max-pool included). This module needs only JAX and NumPy: the model
code receives these two functions from create_model and never imports this module.
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

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name('kernels.cc')
# kernels.cc includes it (twice: native and emulated bfloat16 loops); both are hashed into the cache key.
SOURCE_BF16 = pathlib.Path(__file__).with_name('kernels_bf16.inc')
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
                           "package (pip install 'lungjax[cpu]'), or use conv_impl='xla', pool_impl='reshape'") from e
  return scipy_openblas32


def build(directory: pathlib.Path | None = None, extra_flags: Sequence[str] = ()) -> pathlib.Path:
  """Compiles kernels.cc unless this source / jaxlib / OpenBLAS / compiler build is cached; returns the library.

  extra_flags: more compiler flags (e.g. '-DLUNGJAX_PORTABLE' builds the code other CPUs than x86-64 compile).
  """
  openblas = _openblas()
  compiler = os.environ.get('CXX', 'g++')
  lib_dir = openblas.get_lib_dir()
  flags = (*_COMPILE_FLAGS, *extra_flags)
  key = hashlib.sha256(b'\0'.join([SOURCE.read_bytes(), SOURCE_BF16.read_bytes(), jax.__version__.encode(), lib_dir.encode(),
                                   openblas.get_library().encode(), compiler.encode(),
                                   ' '.join(flags).encode()])).hexdigest()[:16]
  directory = pathlib.Path(directory or cache_dir())
  library = directory / f'lungjax_cpu-{key}.so'
  if library.exists():
    return library
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    partial = pathlib.Path(tmp) / library.name
    command = [compiler, *flags, '-I', jax.ffi.include_dir(), '-I', openblas.get_include_dir(), str(SOURCE),
               '-L', lib_dir, f'-l{openblas.get_library()}', f'-Wl,-rpath,{lib_dir}', '-o', str(partial)]
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise KernelBuildError(f'could not run the C++ compiler {compiler!r} ({e}); install g++ (or set $CXX), '
                             "or use config.model.conv_impl='xla', pool_impl='reshape'") from e
    if result.returncode != 0:  # The first line is the summary; the compiler's output follows.
      raise KernelBuildError(f'compiling {SOURCE} with {compiler!r} failed (exit {result.returncode}); use '
                             f"config.model.conv_impl='xla', pool_impl='reshape'\n{result.stderr[-3000:]}")
    os.replace(partial, library)  # atomic: concurrent builders each write their own tmp folder
  return library


@functools.cache
def _library() -> ctypes.CDLL:
  """The built (or cached) library, loaded once per process."""
  return ctypes.cdll.LoadLibrary(str(build()))


@functools.cache
def _register() -> None:
  """Builds (or finds) the library and registers its handlers with XLA:CPU, once per process."""
  library = _library()
  for name, symbol in _SYMBOLS.items():
    jax.ffi.register_ffi_target(f'lungjax_{name}', jax.ffi.pycapsule(getattr(library, symbol)),
                                platform='cpu')


# How the convs compute: 'float32', 'bfloat16' (x, kernel and dY rounded to bfloat16, float32 sums, with the CPU's
# vdpbf16ps: needs avx512_bf16) or 'bfloat16_emulated' (the same loops and packing, each dot product in scalar
# code: for tests on any CPU, slow). The handlers' `bf16` attribute.
COMPUTES = {'float32': 0, 'bfloat16': 1, 'bfloat16_emulated': 2}
# Set to 0 (or 'off'), the kernels act as on a CPU without bfloat16 dot products (tests; a user's way out).
BF16_ENV = 'LUNGJAX_CPU_BF16'


def bf16_dot_unavailable_reason() -> str | None:
  """None when this CPU computes bfloat16 dot products natively (avx512_bf16) and the kernels load, else why not.

  $LUNGJAX_CPU_BF16=0 (or 'off') forces the answer 'no', as on a CPU without them.
  """
  if os.environ.get(BF16_ENV, '').strip().lower() in ('0', 'off', 'false', 'no'):
    return f'bfloat16 dot products turned off by ${BF16_ENV}={os.environ[BF16_ENV]}'
  if (reason := unavailable_reason()) is not None:
    return reason.splitlines()[0]
  if not _library().LungjaxCpuHasBf16Dot():
    return 'this CPU has no avx512_bf16 dot products'
  return None


Padding = tuple[tuple[int, int], tuple[int, int]]


@functools.cache
def unavailable_reason() -> str | None:
  """None when the kernels build (or are cached) and load here, else the KernelBuildError's message (once a process).

  The handlers are registered for XLA:CPU: the caller checks the backend (check_cpu).
  """
  try:
    _register()
  except KernelBuildError as e:
    return str(e)
  return None


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


def conv_bias(x_BHWC: jax.Array, kernel_HWIO: jax.Array, bias_F: jax.Array, padding: Padding,
              compute: str = 'float32') -> jax.Array:
  """Stride-1 conv of float32 x (NHWC) with an HWIO kernel and ((top, bottom), (left, right)) pads, plus bias.

  compute: one of COMPUTES; in 'bfloat16' x, the kernel and (in the gradients) dY are rounded to bfloat16 and the
  products summed in float32 (results and the bias in float32). Raises NotImplementedError for a pad outside
  [0, kernel size) (the kernels' im2col covers those only), ValueError for an unknown compute.
  """
  if compute not in COMPUTES:
    raise ValueError(f'compute={compute!r} is not one of {sorted(COMPUTES)}')
  check_padding(padding, kernel_HWIO.shape[:2])
  return _conv_bias(x_BHWC, kernel_HWIO, bias_F, tuple((int(a), int(b)) for a, b in padding), COMPUTES[compute])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_bias(x_BHWC: jax.Array, kernel_HWIO: jax.Array, bias_F: jax.Array, padding: Padding,
               bf16: int) -> jax.Array:
  """conv_bias's custom call, its padding checked."""
  return _call('conv_forward', [_output_shape(x_BHWC.shape, kernel_HWIO.shape, padding)], x_BHWC, kernel_HWIO,
               bias_F, **_pads(padding), bf16=bf16)


def _conv_bias_fwd(x_BHWC, kernel_HWIO, bias_F, padding, bf16):
  return _conv_bias(x_BHWC, kernel_HWIO, bias_F, padding, bf16), (x_BHWC, kernel_HWIO)


def _conv_bias_bwd(padding, bf16, residuals, dy_BHWF):
  """Input gradient, then kernel and bias gradients: one custom call each (XLA drops the first when x is data)."""
  x_BHWC, kernel_HWIO = residuals
  dy_BHWF = dy_BHWF.astype(jnp.float32)
  dx_BHWC = _call('conv_input_grad', [x_BHWC.shape], dy_BHWF, kernel_HWIO, **_pads(padding), bf16=bf16)
  dkernel_HWIO, dbias_F = _call('conv_kernel_grad', [kernel_HWIO.shape, kernel_HWIO.shape[-1:]], x_BHWC, dy_BHWF,
                                **_pads(padding), bf16=bf16)
  return dx_BHWC, dkernel_HWIO, dbias_F


_conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd)


@jax.custom_vjp
def relu_max_pool(z_BHWC: jax.Array) -> jax.Array:
  """2x2 / stride-2 max-pool of relu(z) (XLA); its gradient is one custom call (ties share it, as jnp.max's).

  The forward is lungjax.models.layers.reshape_max_pool's reshape + max (an odd last row / column is dropped).
  """
  b, h, w, c = z_BHWC.shape
  y_BHWC = jax.nn.relu(z_BHWC[:, :h // 2 * 2, :w // 2 * 2, :])
  return y_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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


def check_padding(padding: Padding, kernel_size: Sequence[int]) -> None:
  """Raises NotImplementedError unless 0 <= each of ((top, bottom), (left, right)) < its kernel size."""
  (top, bottom), (left, right) = padding
  kh, kw = kernel_size
  if min(top, bottom, left, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
    raise NotImplementedError(f'conv_impl="blas" needs 0 <= padding < kernel size, got {padding!r}')
