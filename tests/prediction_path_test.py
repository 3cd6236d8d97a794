"""One prediction path (issue 27): Model.predict and --mode=eval (TTA views, ensembles, shortcuts, compare, loso,
explain) get their probabilities from one jitted eval step per Model, batches sharded over its mesh, the last padded
and the padding masked away."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from lungjax import evaluate, inference, steps
from tests.conftest import CLASSES
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture: a tiny trained run)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def built_steps(monkeypatch):
  """Every eval step steps.jit_eval_step builds from here on, each wrapped to count its calls:
  [[jitted step, calls, the wrapper callers get]]."""
  built, real_jit = [], steps.jit_eval_step

  def jit_eval_step(model, mesh, compiler_options=None):
    step = real_jit(model, mesh, compiler_options)
    entry = [step, 0, None]
    built.append(entry)

    def counted(state, batch):
      entry[1] += 1
      return step(state, batch)
    entry[2] = counted
    return counted

  monkeypatch.setattr(steps, 'jit_eval_step', jit_eval_step)
  return built


@pytest.fixture
def predicted_batches(monkeypatch):
  """Every inference.predict_batches call: [(its eval step, number of images, batch size)]."""
  calls, real = [], inference.predict_batches

  def record(eval_step, state, images_NHWC, batch_size, mesh, **kwargs):
    calls.append((eval_step, len(images_NHWC), batch_size))
    return real(eval_step, state, images_NHWC, batch_size, mesh, **kwargs)

  monkeypatch.setattr(inference, 'predict_batches', record)
  return calls


def _batches(calls):
  return sum(-(-n // batch_size) for _, n, batch_size in calls)


@pytest.fixture
def eval_probabilities(monkeypatch):
  """The full-precision probabilities each --mode=eval reports (predictions.csv rounds them): [(paths, N x C)]."""
  captured, real_report = [], evaluate.report_predictions

  def capture(probabilities_NC, loaded, *args, **kwargs):
    captured.append((list(loaded.decoded.paths), np.asarray(probabilities_NC)))
    return real_report(probabilities_NC, loaded, *args, **kwargs)

  monkeypatch.setattr(evaluate, 'report_predictions', capture)
  return captured


def _reference(model, images_NHWC):
  """Each image alone through steps.eval_step, not jitted: what any batching, padding and masking must give."""
  state = jax.device_get(model.state)
  return np.concatenate([np.asarray(steps.eval_step(state, {'image': images_NHWC[i:i + 1]}, model=model.module))
                         for i in range(len(images_NHWC))])


def test_eval_and_model_predict_share_one_step_and_agree(trained_workdir, synthetic_root, tiny_config, built_steps,
                                                         predicted_batches, eval_probabilities):
  tiny_config.eval.dir = os.path.join(synthetic_root, 'test')
  evaluate.evaluate_checkpoint(tiny_config, trained_workdir)
  assert len(built_steps) == 1  # The Model eval restored builds the one step ...
  (eval_step, calls, wrapper), = built_steps
  # ... and predicts through it: first the folder's 12 images (3 batches of 4), then report.html's gallery films.
  assert predicted_batches[0][1:] == (12, 4) and {step for step, _, _ in predicted_batches} == {wrapper}
  assert calls == _batches(predicted_batches) and eval_step._cache_size() == 1  # One compile.
  (files, eval_NC), = eval_probabilities
  assert len(files) == 12
  predicted_batches.clear()
  model = inference.load(trained_workdir)
  assert len(built_steps) == 2 and model.eval_step is built_steps[1][2]  # One step per Model.
  predicted_NC = model.predict(files, calibrated=False)
  assert predicted_batches == [(model.eval_step, 12, 4)] and built_steps[1][1] == 3
  assert built_steps[1][0]._cache_size() == 1
  np.testing.assert_allclose(predicted_NC, eval_NC, rtol=0, atol=1e-6)
  np.testing.assert_allclose(predicted_NC, _reference(model, model.pixels(files)), rtol=0, atol=1e-6)
  # Explain's probabilities are the same step's too (Grad-CAM only draws the maps).
  probs_NC, heatmaps_NHW = model.explain_pixels(model.pixels(files[:5]), np.full(5, -1, np.int32))
  assert heatmaps_NHW.shape == (5, 32, 32) and built_steps[1][1] == 5  # 5 images: 2 batches more, the last padded.
  np.testing.assert_allclose(probs_NC, predicted_NC[:5], rtol=0, atol=1e-6)


def test_tta_views_go_through_the_models_one_step(trained_workdir, synthetic_root, tiny_config, built_steps,
                                                  predicted_batches, eval_probabilities):
  tiny_config.eval.dir = os.path.join(synthetic_root, 'test')
  tiny_config.eval.tta_views = 2
  evaluate.evaluate_checkpoint(tiny_config, trained_workdir)
  (eval_step, calls, wrapper), = built_steps
  assert predicted_batches[:3] == [(wrapper, 12, 4)] * 3  # The plain view and 2 augmented, through the one step.
  assert {step for step, _, _ in predicted_batches} == {wrapper}
  assert calls == _batches(predicted_batches) and eval_step._cache_size() == 1  # One compile.
  (_, mean_NC), = eval_probabilities
  assert mean_NC.shape == (12, len(CLASSES))
  np.testing.assert_allclose(mean_NC.sum(axis=1), 1.0, atol=1e-6)


def test_only_a_model_and_the_training_loop_build_an_eval_step():
  """No module jits steps.eval_step again: Model (inference.py) owns it; train.py builds training's own, which the
  final evaluation's Model reuses."""
  builders = {}
  for folder, _, names in os.walk(os.path.join(REPO, 'lungjax')):
    for name in names:
      if name.endswith('.py') and name != 'steps.py':
        text = open(os.path.join(folder, name), encoding='utf-8').read()
        if found := re.findall(r'jit_eval_step\(|jax\.jit\([^)]*eval_step', text):
          builders[os.path.relpath(os.path.join(folder, name), REPO)] = len(found)
  assert builders == {'lungjax/inference.py': 1, 'lungjax/train.py': 1}, builders


_TWO_DEVICES = textwrap.dedent('''
    import jax, numpy as np
    from configs import tiny
    from lungjax import inference, steps
    from lungjax.runtime import mesh as mesh_lib
    from lungjax.models import create_model
    assert jax.device_count() == 2, jax.devices()
    config = tiny.get_config()
    module = create_model(config.model, 3)
    mesh = mesh_lib.make_mesh()
    state = steps.jit_create_train_state(module, steps.create_optimizer(config.train), 32, mesh)(
        jax.random.PRNGKey(0))
    images_NHWC = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), np.uint8)
    host_state = jax.device_get(state)
    expected_NC = np.concatenate([np.asarray(steps.eval_step(host_state, {'image': images_NHWC[i:i + 1]},
                                                             model=module)) for i in range(5)])
    for batch_size, padded in ((4, 4), (3, 4), (1, 2)):
      config.eval.batch_size = batch_size
      model = inference.Model(config, module, state, 0, '.', mesh=mesh)
      assert model.batch_size == padded, (batch_size, model.batch_size)
      real_step, seen = model.eval_step, []
      def record(state, batch, real_step=real_step, seen=seen):
        image = batch['image']
        seen.append((image.shape[0], len(image.sharding.device_set),
                     [s.data.shape[0] for s in image.addressable_shards]))
        return real_step(state, batch)
      model.eval_step = record
      probabilities_NC = model.probabilities(images_NHWC)
      assert probabilities_NC.shape == (5, 3), probabilities_NC.shape
      np.testing.assert_allclose(probabilities_NC, expected_NC, rtol=0, atol=1e-6)
      assert seen == [(padded, 2, [padded // 2] * 2)] * -(-5 // padded), seen
      assert real_step._cache_size() == 1
      print('batch', batch_size, 'as', padded, 'on 2 devices:', len(seen), 'batches')
    print('5 images predicted on 2 devices')
''')


def test_an_odd_number_of_images_is_predicted_fully_on_two_devices():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', _TWO_DEVICES], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '5 images predicted on 2 devices' in result.stdout, result.stdout
