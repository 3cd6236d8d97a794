"""The model registry: config.model.name → a flax.linen module built from config.model's fields.

The CNN's conv / pool lowering is chosen here, when the model is built (choose_lowering, once per process and
setting, logged in one line): 'auto' becomes the C++ kernels of lungjax.cpu.kernels ('blas', 'cpu_kernel') on one
CPU device when they build, else XLA's ops ('xla', 'reshape'). In dtype bfloat16 the kernels' convs compute with
bfloat16 inputs and float32 sums where the CPU has avx512_bf16 dot products, else in float32 (the log line says so). This is the one place in lungjax that
imports the kernels; the model receives their functions as a layers.KernelOps.
"""

import dataclasses
import functools
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import ml_collections

from lungjax.models import keras_weights, layers
from lungjax.models.cnn import CNN
from lungjax.models.resnet import ResNet
from lungjax.models.unet import UNet
from lungjax.models.vgg import VGG

MODELS: dict[str, type[nn.Module]] = {'cnn': CNN, 'resnet': ResNet, 'vgg': VGG}  # The classifiers config.model names.
# Lung segmentation (issue 24): one mask logit per pixel, not a classifier, so not a config.model.name until the
# trainer can train it (a U-Net named there would pass validation and fail after the data is decoded).
SEGMENTATION_MODELS: dict[str, type[nn.Module]] = {'unet': UNet}
# config.model fields that configure training around the module, not the module itself.
NON_MODULE_FIELDS = ('name', 'init_from')
# Module fields that create_model fills in itself (the CNN's kernels follow from its lowering).
_BUILT_FIELDS = ('kernels',)


@dataclasses.dataclass(frozen=True)
class Lowering:
  """The CNN's lowering as built: no 'auto' left, the kernels' functions where 'blas' / 'cpu_kernel' use them."""

  conv_impl: str
  pool_impl: str
  kernels: layers.KernelOps | None
  reason: str  # Why: 'as configured', or what 'auto' found.
  # How the C++ convs compute (lungjax.cpu.kernels.COMPUTES): 'float32', or in dtype bfloat16 'bfloat16' where the
  # CPU has avx512_bf16; '' where conv_impl is not 'blas'.
  conv_compute: str = ''


def _kernels_blocker(dtype: str) -> str | None:
  """Why 'auto' cannot use the C++ kernels in this process (None: it can); compiles them on first use."""
  del dtype  # float32 or bfloat16 (kernel_compute says how a bfloat16 model's convs compute)
  if jax.default_backend() != 'cpu':
    return f'the {jax.default_backend()} backend (the kernels are XLA:CPU custom calls)'
  if jax.device_count() > 1 or jax.process_count() > 1:
    return f'{jax.device_count()} devices in {jax.process_count()} processes (the kernels run on one CPU device)'
  from lungjax.cpu import kernels  # pylint: disable=g-import-not-at-top  (only where they may be used)
  reason = kernels.unavailable_reason()
  if reason is None:
    return None
  first, *details = reason.splitlines()
  if details:
    logging.debug('lungjax.cpu.kernels build output:\n%s', '\n'.join(details))
  return f'the C++ kernels are not available here: {first}' + (' (compiler output: --v=1)' if details else '')


def _kernel_compute(dtype: str, explicit: bool) -> tuple[str, str]:
  """How the C++ convs compute for this dtype here, and why: bfloat16 needs the CPU's bfloat16 dot products.

  dtype bfloat16 where the CPU lacks them: float32 under 'auto' (said in the log line), an error naming
  config.model.conv_impl when 'blas' was asked for by name. $LUNGJAX_CPU_BF16=emulate computes the bfloat16 loops
  in scalar code (tests; slow).
  """
  if dtype == 'float32':
    return 'float32', ''
  from lungjax.cpu import kernels  # pylint: disable=g-import-not-at-top
  if os.environ.get(kernels.BF16_ENV, '').strip().lower() == 'emulate':
    return 'bfloat16_emulated', f'bfloat16 convs emulated in scalar code (${kernels.BF16_ENV}=emulate)'
  if (reason := kernels.bf16_dot_unavailable_reason()) is None:
    return 'bfloat16', 'bfloat16 convs on the CPU\'s avx512_bf16 dot products, float32 sums'
  if explicit:
    raise ValueError(f"config.model.conv_impl='blas' with config.model.dtype={dtype!r} needs bfloat16 dot products "
                     f"({reason}): use conv_impl='auto' (float32 convs) or 'xla'")
  return 'float32', f'dtype {dtype}, but {reason}: the convs compute in float32'


@functools.cache
def choose_lowering(conv_impl: str, pool_impl: str, dtype: str) -> Lowering:
  """Resolves config.model.conv_impl / pool_impl for this process and logs the choice and why in one line.

  'auto' takes the C++ kernels where they apply (one CPU device) and build, else 'xla' / 'reshape'.
  'blas' or 'cpu_kernel' named explicitly raise where the kernels cannot run (another backend, no compiler).
  """
  layers.check_impls(conv_impl, pool_impl, dtype)
  auto = 'auto' in (conv_impl, pool_impl)
  blocker = _kernels_blocker(dtype) if auto else None
  resolved = (('blas' if blocker is None else 'xla') if conv_impl == 'auto' else conv_impl,
              ('cpu_kernel' if blocker is None else 'reshape') if pool_impl == 'auto' else pool_impl)
  kernel_ops = None
  if resolved[0] == 'blas' or resolved[1] == 'cpu_kernel':
    from lungjax.cpu import kernels  # pylint: disable=g-import-not-at-top
    kernels.check_cpu('conv_impl' if resolved[0] == 'blas' else 'pool_impl')
    if (reason := kernels.unavailable_reason()) is not None:
      raise kernels.KernelBuildError(reason)
    compute, compute_why = ('', '')
    if resolved[0] == 'blas':
      compute, compute_why = _kernel_compute(dtype, explicit=conv_impl == 'blas')
    kernel_ops = layers.KernelOps(conv_bias=functools.partial(kernels.conv_bias, compute=compute or 'float32'),
                                  relu_max_pool=kernels.relu_max_pool)
  else:
    compute, compute_why = '', ''
  if not auto:
    why = 'as configured'
  elif blocker is None:
    why = f'auto: {dtype} on one CPU device, the C++ kernels built'
  else:
    why = f'auto: {blocker}'
  if compute_why:
    why += f'; {compute_why}'
  lowering = Lowering(*resolved, kernels=kernel_ops, reason=why, conv_compute=compute)
  log = logging.warning if blocker and 'kernels are not available' in blocker else logging.info
  log('CNN lowering: conv_impl=%s, pool_impl=%s (%s)', lowering.conv_impl, lowering.pool_impl, why)
  return lowering


def _module_fields(model_config: ml_collections.ConfigDict) -> tuple[type[nn.Module], dict]:
  """The registered class and its fields from config.model; ValueError naming config.model.name or a stray field."""
  if model_config.name not in MODELS:
    raise ValueError(f'config.model.name={model_config.name!r} is not one of the registered models {sorted(MODELS)}')
  fields = {k: v for k, v in model_config.items() if k not in NON_MODULE_FIELDS}
  module_class = MODELS[model_config.name]
  unknown = sorted(set(fields) - (set(module_class.__dataclass_fields__) - set(_BUILT_FIELDS)))
  if unknown:
    raise ValueError(f'config.model has fields {unknown} that model {model_config.name!r} does not take')
  return module_class, fields


def _is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# Fields several models share, checked by the registry's hook for whichever model takes them: (what it must be, test).
_SHARED_FIELDS = {
    'dropout_rate': ('a number in [0, 1)', lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and
                     0 <= v < 1),
    'width': ('an integer >= 1', _is_count),
    'conv_features': ('a non-empty tuple of integers >= 1', lambda v: isinstance(v, (tuple, list)) and len(v) >= 1
                      and all(map(_is_count, v))),
    'dense_features': ('a tuple of integers >= 1', lambda v: isinstance(v, (tuple, list)) and all(map(_is_count, v))),
}


def check(model_config: ml_collections.ConfigDict, num_classes: int) -> None:
  """config.model's check hook (config_check.validate calls it before any data is read): the name, the fields the
  model takes, and the module's own field checks (its __post_init__: depth, norm, head, lowering names, ...), by
  constructing it, without choosing a lowering, building kernels or initialising parameters; with
  config.model.init_from, whether Keras has weights for it."""
  module_class, fields = _module_fields(model_config)
  for field, (allowed, ok) in _SHARED_FIELDS.items():
    if field in fields and not ok(fields[field]):
      raise ValueError(f'config.model.{field}={fields[field]!r} is not allowed: it must be {allowed}')
  if fields.get('head') == 'gap' and not fields.get('dense_features', (1,)):
    raise ValueError("config.model.dense_features=() and config.model.head='gap': the gap head's dense layer is "
                     'dense_features[-1], so it needs at least one')
  if 'kernels' in module_class.__dataclass_fields__:
    defaults = {k: module_class.__dataclass_fields__[k].default for k in ('conv_impl', 'pool_impl', 'dtype')}
    layers.check_impls(*(str(fields.get(k, default)) for k, default in defaults.items()))
    fields.update(conv_impl='xla', pool_impl='reshape')  # Names checked above; create_model resolves them.
  module_class(num_classes=num_classes, **fields)
  if model_config.init_from:  # Every classifier's packaged config has it (run_fields.upgrade fills it).
    keras_weights.check_model_config(model_config)


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the registered module named by model_config.name with the config's other fields.

  The CNN's lowering is chosen here (choose_lowering); the module gets it resolved, with the kernels it needs.
  """
  module_class, fields = _module_fields(model_config)
  if 'kernels' in module_class.__dataclass_fields__:
    defaults = {k: module_class.__dataclass_fields__[k].default for k in ('conv_impl', 'pool_impl', 'dtype')}
    lowering = choose_lowering(*(str(fields.get(k, default)) for k, default in defaults.items()))
    fields.update(conv_impl=lowering.conv_impl, pool_impl=lowering.pool_impl, kernels=lowering.kernels)
  return module_class(num_classes=num_classes, **fields)
