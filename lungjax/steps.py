"""The train state pytree, make_train_step(loss_fn) (the one train step every model uses) and the eval step.

(No `from __future__ import annotations` here: clu reads the metric classes from the annotations.)
"""


import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics
from jax.sharding import Mesh

from lungjax.runtime import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  """Everything training changes: step, parameters, other model variables, optimizer state, dropout key."""

  step: jax.Array
  params: Any
  model_state: Any  # Non-trainable variable collections (e.g. batch_stats); {} for the CNN.
  opt_state: Any
  dropout_key: jax.Array


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  """Per-step training metrics, merged on device between log points."""

  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class LossMetrics(metrics.Collection):
  """Per-step metrics of a model with a loss alone (the autoencoder's stage 1)."""

  loss: metrics.Average.from_output('loss')


def learning_rate_schedule(train_config: ml_collections.ConfigDict, num_steps: int) -> optax.ScalarOrSchedule:
  """config.train.learning_rate held ('constant', the study's) or decayed to 0 over num_steps ('cosine')."""
  if train_config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(train_config.learning_rate, decay_steps=max(num_steps, 1))
  return train_config.learning_rate


def create_optimizer(train_config: ml_collections.ConfigDict, num_steps: int = 1) -> optax.GradientTransformation:
  """Adam with the config's learning rate schedule over num_steps, betas and epsilon (Keras' defaults in the study).

  The optimizer state's structure does not depend on num_steps: restoring for inference may leave it at 1.
  """
  return optax.adam(learning_rate_schedule(train_config, num_steps), b1=train_config.adam_b1, b2=train_config.adam_b2,
                    eps=train_config.adam_eps)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_size: int,
                       rng: jax.Array) -> TrainState:
  """Initialises the model on a dummy uint8 batch and the optimizer on its parameters."""
  init_key, dropout_key = jax.random.split(rng)
  variables = model.init({'params': init_key}, jnp.zeros((1, image_size, image_size, 3), jnp.uint8), train=False)
  params = variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=tx.init(params), dropout_key=dropout_key)


def weighted_cross_entropy(logits_BC: jax.Array, labels_B: jax.Array, class_weights_C: jax.Array) -> jax.Array:
  """Returns sum_i(w[y_i] * CE_i) / B: Keras' `class_weight` with its sum-over-batch-size reduction."""
  per_example_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B)
  return jnp.sum(class_weights_C[labels_B] * per_example_B) / labels_B.shape[0]


# loss_fn(params, model_state, batch, key) -> (loss, (step metrics, new model_state)): what make_train_step
# differentiates. `key` is the state's dropout_key folded with the step (dropout, augmentation).
LossFn = Callable[[Any, Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[Any, Any]]]


def optimizer_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: LossFn,
                   tx: optax.GradientTransformation, frozen_mask: Any = None,
                   freeze_steps: int = 0) -> tuple[TrainState, Any]:
  """One optimizer step on loss_fn's gradient, keyed by fold_in(state.dropout_key, state.step); returns the new
  state and loss_fn's metrics. With `frozen_mask` (a params-shaped pytree of bools), those parameters get zero
  gradients for the first `freeze_steps` steps (e.g. a pretrained backbone while the new head settles)."""
  key = jax.random.fold_in(state.dropout_key, state.step)
  (_, (step_metrics, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.model_state, batch, key)
  if frozen_mask is not None and freeze_steps > 0:
    frozen = state.step < freeze_steps
    grads = jax.tree.map(lambda g, m: jnp.where(frozen & m, jnp.zeros_like(g), g), grads, frozen_mask)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            model_state=new_model_state, opt_state=opt_state)
  return new_state, step_metrics


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh: Mesh, *, frozen_mask: Any = None,
                    freeze_steps: int = 0, compiler_options: dict[str, Any] | None = None):
  """Returns optimizer_step on loss_fn jitted for the mesh: batch sharded, state replicated and donated."""
  def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Any]:
    # Named train_step: XLA's compile events (benchmarks.bench.count_compilations) and profiles say 'jit(train_step)'.
    return optimizer_step(state, batch, loss_fn=loss_fn, tx=tx, frozen_mask=frozen_mask, freeze_steps=freeze_steps)

  replicated = mesh_lib.replicated(mesh)
  return jax.jit(train_step, in_shardings=(replicated, mesh_lib.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0, compiler_options=compiler_options)


def classifier_loss(model: nn.Module, class_weights_C: jax.Array,
                    augment_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> LossFn:
  """The classifier's LossFn: the class-weighted cross-entropy (or per-image weights, batch['weight']) of the
  augmented batch, with dropout; metrics TrainMetrics (loss, accuracy)."""

  def loss_fn(params, model_state, batch, key):
    dropout_key, augment_key = jax.random.split(key)
    images_BHWC = batch['image'] if augment_fn is None else augment_fn(batch['image'], augment_key)
    mutable = list(model_state) or False
    outputs = model.apply({'params': params, **model_state}, images_BHWC, train=True,
                          rngs={'dropout': dropout_key}, mutable=mutable)
    logits_BC, new_model_state = outputs if mutable else (outputs, model_state)
    if 'weight' in batch:  # Per-image weights (config.train.source_weighting): sum_i(w_i * CE_i) / B.
      per_example_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch['label'])
      loss = jnp.sum(batch['weight'] * per_example_B) / batch['label'].shape[0]
    else:
      loss = weighted_cross_entropy(logits_BC, batch['label'], class_weights_C)
    step_metrics = TrainMetrics.single_from_model_output(loss=loss, logits=logits_BC, labels=batch['label'])
    return loss, (step_metrics, new_model_state)

  return loss_fn


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: nn.Module,
               tx: optax.GradientTransformation, class_weights_C: jax.Array,
               augment_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
               frozen_mask: Any = None, freeze_steps: int = 0) -> tuple[TrainState, TrainMetrics]:
  """The classifier's step (unjitted): optimizer_step on classifier_loss."""
  return optimizer_step(state, batch, loss_fn=classifier_loss(model, class_weights_C, augment_fn), tx=tx,
                        frozen_mask=frozen_mask, freeze_steps=freeze_steps)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model: nn.Module) -> jax.Array:
  """Returns the class probabilities of a batch (dropout off)."""
  logits_BC = model.apply({'params': state.params, **state.model_state}, batch['image'], train=False)
  return jax.nn.softmax(logits_BC.astype(jnp.float32), axis=-1)


def parse_compiler_options(cpu_options: str) -> dict[str, str | bool | int]:
  """config.train.cpu_compiler_options ('name=value;...') as XLA options; ValueError naming the field if malformed.
  Pure (no device is touched): config_check.validate calls it before the backend starts."""
  items = [item.partition('=') for item in cpu_options.split(';') if item.strip()]
  if any(not sep or not name.strip() for name, sep, _ in items):
    raise ValueError(f'config.train.cpu_compiler_options={cpu_options!r} must be "name=value;name=value"')
  return {name.strip(): _option_value(value.strip()) for name, _, value in items}


def compiler_options(cpu_options: str) -> dict[str, str | bool | int] | None:
  """config.train.cpu_compiler_options parsed, on the CPU backend only (None elsewhere or when empty)."""
  if not cpu_options or jax.default_backend() != 'cpu':
    return None
  return parse_compiler_options(cpu_options)


def _option_value(text: str) -> str | bool | int:
  """XLA wants bools and ints typed: 'true' / 'false' become bools, digits ints, the rest stays a string."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  return int(text) if text.lstrip('-').isdigit() else text


def jit_train_step(model: nn.Module, tx: optax.GradientTransformation, class_weights_C: Any, mesh: Mesh, *,
                   augment_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                   frozen_mask: Any = None, freeze_steps: int = 0, compiler_options: dict[str, Any] | None = None):
  """The classifier's train step: make_train_step on classifier_loss."""
  return make_train_step(classifier_loss(model, jnp.asarray(class_weights_C), augment_fn), tx, mesh,
                         frozen_mask=frozen_mask, freeze_steps=freeze_steps, compiler_options=compiler_options)


def jit_eval_step(model: nn.Module, mesh: Mesh, compiler_options: dict[str, Any] | None = None):
  """Returns eval_step jitted for the mesh: batch sharded, probabilities sharded like the batch."""
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)),
                 out_shardings=mesh_lib.batch_sharded(mesh), compiler_options=compiler_options)


def jit_create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_size: int, mesh: Mesh):
  """Returns create_train_state jitted to place the new state replicated on the mesh."""
  return jax.jit(functools.partial(create_train_state, model, tx, image_size),
                 out_shardings=mesh_lib.replicated(mesh))


def abstract_state(create_fn: Callable[[jax.Array], Any], mesh: Mesh) -> Any:
  """The shapes, dtypes and shardings (replicated) of the state create_fn(rng) builds: to restore a checkpoint
  without initialising."""
  shapes = jax.eval_shape(create_fn, jax.random.PRNGKey(0))
  replicated = mesh_lib.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, image_size: int,
                         mesh: Mesh) -> TrainState:
  """Returns the state's shapes, dtypes and shardings (for restoring a checkpoint without initialising)."""
  return abstract_state(functools.partial(create_train_state, model, tx, image_size), mesh)
