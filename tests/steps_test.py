"""The jitted train and eval steps: weighted loss, learning, every image evaluated once, NaN stops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from lungjax import evaluate, fit as fit_lib, steps
from lungjax.runtime import mesh as mesh_lib
from lungjax.data import images as images_lib
from lungjax.models import create_model
from tests.conftest import striped_image


def _setup(config=None):
  config = config or tiny.get_config()
  model = create_model(config.model, 3)
  tx = steps.create_optimizer(config.train)
  mesh = mesh_lib.make_mesh()
  state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(0))
  return config, model, tx, mesh, state


def _batch(n: int, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = np.arange(n, dtype=np.int32) % 3
  images = np.stack([np.asarray(jax.image.resize(striped_image(int(c), rng), (size, size, 3), 'linear'))
                     for c in labels]).astype(np.uint8)
  return {'image': images, 'label': labels}


def test_weighted_cross_entropy_is_keras_class_weight_math():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 3.0]])
  labels = jnp.array([0, 1, 2])
  weights = jnp.array([0.5, 2.0, 1.0])
  log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
  expected = -(0.5 * log_p[0, 0] + 2.0 * log_p[1, 1] + 1.0 * log_p[2, 2]) / 3
  np.testing.assert_allclose(steps.weighted_cross_entropy(logits, labels, weights), expected, rtol=1e-6)


def test_loss_falls_on_a_fixed_batch():
  config = tiny.get_config()
  config.train.learning_rate = 3e-3
  config, model, tx, mesh, state = _setup(config)
  train_step = steps.jit_train_step(model, tx, np.ones(3, np.float32), mesh)
  batch = mesh_lib.to_global_batch(_batch(12), mesh_lib.batch_sharded(mesh))
  losses = []
  for _ in range(30):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics.compute()['loss']))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]


def test_the_cosine_schedule_decays_the_learning_rate_to_zero_over_the_run():
  config = tiny.get_config()
  assert steps.learning_rate_schedule(config.train, 100) == config.train.learning_rate  # The study's: constant.
  config.train.lr_schedule = 'cosine'
  schedule = steps.learning_rate_schedule(config.train, 100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100), schedule(150)],
                             [config.train.learning_rate, config.train.learning_rate / 2, 0.0, 0.0], atol=1e-9)
  # The step's updates follow it: at the last step the parameters no longer move.
  config, model, tx, mesh, state = _setup(config)
  tx = steps.create_optimizer(config.train, num_steps=2)
  state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(0))
  train_step = steps.jit_train_step(model, tx, np.ones(3, np.float32), mesh)
  batch = mesh_lib.to_global_batch(_batch(12), mesh_lib.batch_sharded(mesh))
  moved = []
  for _ in range(3):
    before = jax.tree.map(np.asarray, state.params)
    state, _ = train_step(state, batch)
    moved.append(max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before),
                                                                  jax.tree.leaves(state.params))))
  assert moved[0] > 1e-4 and moved[1] > 1e-4 and moved[2] == 0.0  # Learning rates 1, 0.5 and 0 x learning_rate.


def test_eval_counts_every_image_exactly_once():
  config, model, tx, mesh, state = _setup()
  batch = _batch(10)
  decoded = images_lib.DecodedImages(batch['image'], batch['label'], tuple(map(str, range(10))),
                                     tuple(map(str, range(10))), np.zeros((10, 4), np.float32), ())
  eval_step = steps.jit_eval_step(model, mesh)
  probabilities = evaluate.predict_probabilities(eval_step, state, decoded, 4, mesh)
  assert probabilities.shape == (10, 3)
  one_by_one = np.concatenate([
      jax.nn.softmax(model.apply({'params': state.params}, batch['image'][i:i + 1], train=False)) for i in range(10)])
  np.testing.assert_allclose(probabilities, one_by_one, atol=1e-5)
  metrics = evaluate.evaluation_metrics(decoded.labels_N, probabilities, ('a', 'b', 'c'))
  assert metrics['n_images'] == 10 and np.sum(metrics['confusion_matrix']) == 10


def test_non_finite_loss_raises_naming_the_step():
  config, model, tx, mesh, state = _setup()
  train_step = steps.jit_train_step(model, tx, np.array([1.0, np.nan, 1.0], np.float32), mesh)
  batch = mesh_lib.to_global_batch(_batch(4), mesh_lib.batch_sharded(mesh))
  window = []
  for step in (1, 2):
    state, metrics = train_step(state, batch)
    window.append((step, metrics))
  with pytest.raises(FloatingPointError, match='at step 1'):
    fit_lib.check_finite(window)


def test_cpu_compiler_options_are_parsed_typed_and_reach_the_compiler():
  options = steps.compiler_options('xla_cpu_experimental_ynn_fusion_type=; xla_cpu_use_xnnpack=true')
  assert options == {'xla_cpu_experimental_ynn_fusion_type': '', 'xla_cpu_use_xnnpack': True}
  assert steps.compiler_options('') is None
  with pytest.raises(ValueError, match='config.train.cpu_compiler_options'):
    steps.compiler_options('xla_cpu_use_xnnpack')
  config, model, tx, mesh, state = _setup()
  bad = steps.jit_eval_step(model, mesh, compiler_options={'xla_cpu_not_an_option': True})
  batch = mesh_lib.to_global_batch(_batch(4), mesh_lib.batch_sharded(mesh))
  with pytest.raises(Exception, match='xla_cpu_not_an_option'):
    bad(state, batch)
