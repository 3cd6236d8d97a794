"""Alternative lowerings of conv and max-pool with the same values and gradients as jax.lax's (faster on CPU).

`patches_conv` is a drop-in `conv_general_dilated` for `flax.linen.Conv` (stride 1, NHWC x HWIO): the conv is one
matmul over im2col patches, and its custom VJP makes both gradients matmuls too (the kernel's: patches^T @ dY; the
input's: dY @ W^T folded back by shifted adds), where XLA's CPU conv gradients are slow. `reshape_max_pool` is a
2x2 / stride 2 max-pool as a reshape + max, whose gradient is cheaper than reduce_window's select-and-scatter.
Both are plain JAX. The C++ kernels ('blas', 'cpu_kernel') live in lungjax.cpu.kernels: lungjax.models.create_model
chooses the lowering once and hands their two functions to the model as a `KernelOps`; nothing here imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# 'blas': KernelConv with the C++ conv + bias of lungjax.cpu.kernels (CPU; float32, or in dtype bfloat16 bfloat16
# inputs with float32 sums where the CPU has avx512_bf16); 'cpu_kernel': relu + reshape pool whose gradient is one
# C++ pass; 'auto': lungjax.models.create_model picks those two on one CPU device when the kernels build, else
# xla / reshape.
CONV_IMPLS = ('auto', 'xla', 'patches', 'blas')
POOL_IMPLS = ('auto', 'reduce_window', 'reshape', 'cpu_kernel')
DTYPES = ('float32', 'bfloat16')


def check_impls(conv_impl: str, pool_impl: str, dtype: str) -> None:
  """Raises ValueError naming the config field of an unknown conv / pool lowering or compute dtype."""
  for field, value, allowed in (('conv_impl', conv_impl, CONV_IMPLS), ('pool_impl', pool_impl, POOL_IMPLS),
                                ('dtype', dtype, DTYPES)):
    if value not in allowed:
      raise ValueError(f'config.model.{field}={value!r} is not one of {allowed}')


Padding = tuple[tuple[int, int], tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class KernelOps:
  """The C++ kernels' two entry points (lungjax.cpu.kernels), handed to a model by lungjax.models.create_model."""

  conv_bias: Callable[[jax.Array, jax.Array, jax.Array, Padding], jax.Array]  # (x_BHWC, kernel_HWIO, bias_F, pads)
  relu_max_pool: Callable[[jax.Array], jax.Array]  # reshape_max_pool(relu(z)), its gradient one C++ pass


def check_resolved(conv_impl: str, pool_impl: str, kernels: KernelOps | None) -> None:
  """Raises ValueError when 'auto' is left or the kernels a lowering needs were not handed in (build with
  lungjax.models.create_model, which chooses the lowering)."""
  if 'auto' in (conv_impl, pool_impl):
    raise ValueError(f'conv_impl={conv_impl!r}, pool_impl={pool_impl!r}: "auto" is chosen when the model is built; '
                     'build it with lungjax.models.create_model')
  if kernels is None and (conv_impl == 'blas' or pool_impl == 'cpu_kernel'):
    raise ValueError(f'conv_impl={conv_impl!r}, pool_impl={pool_impl!r} need the C++ kernels: build the model with '
                     'lungjax.models.create_model')


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


def _patches(x_BHWC: jax.Array, kh: int, kw: int) -> jax.Array:
  """im2col of an already padded input: B x H' x W' x (kh*kw*C), taps ordered (i, j, c) like an HWIO kernel."""
  height, width = x_BHWC.shape[1] - kh + 1, x_BHWC.shape[2] - kw + 1
  return jnp.concatenate([x_BHWC[:, i:i + height, j:j + width, :] for i in range(kh) for j in range(kw)], axis=-1)


@jax.custom_vjp
def _conv_valid(x_BHWC: jax.Array, kernel_HWIO: jax.Array) -> jax.Array:
  """VALID, stride-1 conv of a padded input as one matmul over its patches."""
  kh, kw, cin, cout = kernel_HWIO.shape
  return _patches(x_BHWC, kh, kw) @ kernel_HWIO.reshape(kh * kw * cin, cout)


def _conv_valid_fwd(x_BHWC, kernel_HWIO):
  return _conv_valid(x_BHWC, kernel_HWIO), (x_BHWC, kernel_HWIO)


def _conv_valid_bwd(residuals, dy_BHWF):
  """Kernel gradient: one matmul of the patches with dY; input gradient: dY @ W^T, then col2im by shifted adds."""
  x_BHWC, kernel_HWIO = residuals
  kh, kw, cin, cout = kernel_HWIO.shape
  patches_BHWP = _patches(x_BHWC, kh, kw)
  dkernel = jnp.einsum('bhwp,bhwf->pf', patches_BHWP, dy_BHWF,
                       preferred_element_type=jnp.float32).astype(kernel_HWIO.dtype).reshape(kernel_HWIO.shape)
  dcols_BHWP = dy_BHWF @ kernel_HWIO.reshape(kh * kw * cin, cout).T
  dx_BHWC = sum(jnp.pad(dcols_BHWP[..., (i * kw + j) * cin:(i * kw + j + 1) * cin].astype(jnp.float32),
                        ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
                for i in range(kh) for j in range(kw))
  return dx_BHWC.astype(x_BHWC.dtype), dkernel


_conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


def patches_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                 lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                 dimension_numbers: Any = None, feature_group_count: int = 1, precision: Any = None,
                 **unused: Any) -> jax.Array:
  """`lax.conv_general_dilated` for 2-D NHWC x HWIO, stride 1, no dilation or groups, as im2col matmuls."""
  del dimension_numbers, precision, unused  # flax passes NHWC / HWIO; float32 matmuls are exact on CPU.
  if lhs.ndim != 4 or tuple(window_strides) != (1, 1) or feature_group_count != 1 or any(
      d != 1 for d in tuple(lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1))):
    raise NotImplementedError('conv_impl="patches" supports 2-D, stride-1, undilated, ungrouped convs only; '
                              'use config.model.conv_impl="xla" for this model')
  (top, bottom), (left, right) = explicit_padding(padding, rhs.shape[:2], 'patches')
  x_BHWC = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  return _conv_valid(x_BHWC, rhs)


def reshape_max_pool(x_BHWC: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, VALID (an odd last row / column is dropped, as nn.max_pool does)."""
  b, h, w, c = x_BHWC.shape
  x_BHWC = x_BHWC[:, :h // 2 * 2, :w // 2 * 2, :]
  return x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class KernelConv(nn.Module):
  """nn.Conv's parameters ('kernel' HWIO, 'bias') and output for stride-1 convs, computed by `conv_bias`
  (KernelOps.conv_bias: one custom call forward and one per gradient; float32 results, in bfloat16 or float32
  arithmetic as create_model chose)."""

  features: int
  kernel_size: Sequence[int]
  conv_bias: Callable[[jax.Array, jax.Array, jax.Array, Padding], jax.Array]
  padding: Any = 'SAME'
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """conv(x, kernel) + bias, a float32 result (a bfloat16 x is widened exactly)."""
    kernel_HWIO = self.param('kernel', self.kernel_init, (*self.kernel_size, x_BHWC.shape[-1], self.features))
    bias_F = self.param('bias', self.bias_init, (self.features,))
    padding = explicit_padding(self.padding, self.kernel_size, 'blas')
    return self.conv_bias(x_BHWC.astype(jnp.float32), kernel_HWIO, bias_F, padding)
