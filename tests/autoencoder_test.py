"""The autoencoder variant: reconstruction learns, the encoder maps onto the CNN, stage 1 resumes and is reused."""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import autoencoder as autoencoder_config, cnn, tiny
from lungjax import autoencoder, checkpoints, config_check, fit as fit_lib, steps, train
from lungjax.runtime import mesh as mesh_lib
from lungjax.models import create_model, warm_start
from lungjax.data import images as images_lib, loading
from lungjax.models.autoencoder import ConvAutoencoder, encoder_layer_names
from tests.conftest import striped_image

# PNG chunks that hold pixels and layout only: no text, time, EXIF, ICC profile or software tag.
PIXEL_CHUNKS = {'IHDR', 'PLTE', 'tRNS', 'pHYs', 'IDAT', 'IEND'}


def _png_chunks(path: str) -> set[str]:
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n', path
  chunks, position = set(), 8
  while position < len(data):
    length = int.from_bytes(data[position:position + 4], 'big')
    chunks.add(data[position + 4:position + 8].decode('latin-1'))
    position += 12 + length
  return chunks


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([np.asarray(Image.fromarray(striped_image(i % 3, rng)).resize((size, size)))
                   for i in range(n)])


def _ae_config(root: str = ''):
  config = tiny.get_config()
  config.data.root = root
  config.autoencoder.enabled = True
  config.autoencoder.num_epochs = 2
  config.autoencoder.batch_size = 4
  return config


def _classifier_variables(config):
  model = create_model(config.model, len(config.data.classes))
  init = functools.partial(model.init, train=False)
  return init(jax.random.PRNGKey(1), jnp.zeros((1, config.data.image_size, config.data.image_size, 3), jnp.uint8))


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def _trees_equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), jax.device_get(a),
                                          jax.device_get(b))))


def test_reconstruction_loss_falls_on_a_fixed_batch():
  config = _ae_config()
  config.autoencoder.learning_rate = 3e-3  # 1e-2 stalls at the mean image on this batch.
  model, tx, mesh = autoencoder.create_model(config), autoencoder.create_optimizer(config), mesh_lib.make_mesh()
  state = jax.jit(functools.partial(autoencoder.create_state, model, tx, 32))(jax.random.PRNGKey(0))
  train_step = autoencoder.jit_train_step(model, tx, mesh)
  batch_BHWC = _images(8)
  losses = []
  for _ in range(60):
    state, metrics = train_step(state, {'image': batch_BHWC})
    losses.append(float(metrics.loss.total))
  assert int(state.step) == 60
  assert losses[-1] < 0.5 * losses[0], losses


def test_reconstruction_loss_is_mse_against_pixels_over_255():
  images_BHWC = jnp.full((1, 2, 2, 3), 255, jnp.uint8).at[0, 0, 0, 0].set(0)
  reconstructions_BHWC = jnp.ones((1, 2, 2, 3), jnp.float32)
  np.testing.assert_allclose(autoencoder.reconstruction_loss(reconstructions_BHWC, images_BHWC), 1.0 / 12)


@pytest.mark.parametrize('conv_features', [(4, 8, 8), (32, 64, 128)])
def test_encoder_params_map_one_to_one_onto_the_cnn(conv_features):
  config = _ae_config()
  config.model.conv_features = conv_features
  images_BHWC = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  ae_params = jax.eval_shape(ConvAutoencoder(conv_features).init, jax.random.PRNGKey(0), images_BHWC)['params']
  cnn_model = create_model(config.model, 3)
  cnn_params = jax.eval_shape(functools.partial(cnn_model.init, train=False), jax.random.PRNGKey(0),
                              images_BHWC)['params']
  names = encoder_layer_names(conv_features)
  assert names == tuple(f'Conv_{i}' for i in range(3))
  assert {n for n in ae_params if n.startswith('Conv_')} == {n for n in cnn_params if n.startswith('Conv_')}
  for name in names:
    assert jax.tree.map(lambda x: x.shape, ae_params[name]) == jax.tree.map(lambda x: x.shape, cnn_params[name])
  out = jax.eval_shape(ConvAutoencoder(conv_features).apply, {'params': ae_params}, images_BHWC)
  assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32


def test_replace_encoder_copies_the_convs_and_keeps_the_head():
  config = _ae_config()
  variables = _classifier_variables(config)
  model = autoencoder.create_model(config)
  ae_params = model.init(jax.random.PRNGKey(7), jnp.zeros((1, 32, 32, 3), jnp.uint8))['params']
  loaded = autoencoder.replace_encoder(variables, ae_params, config.model.conv_features)
  for name in ('Conv_0', 'Conv_1', 'Conv_2'):
    _assert_trees_equal(loaded['params'][name], ae_params[name])
    assert not _trees_equal(loaded['params'][name], variables['params'][name])
  for name in ('Dense_0', 'Dense_1', 'Dense_2'):
    _assert_trees_equal(loaded['params'][name], variables['params'][name])
  other = ConvAutoencoder((4, 8, 16)).init(jax.random.PRNGKey(7), jnp.zeros((1, 32, 32, 3), jnp.uint8))['params']
  with pytest.raises(ValueError, match='config.model.conv_features'):
    autoencoder.replace_encoder(variables, other, (4, 8, 16))


def test_encoder_mask_marks_exactly_the_conv_leaves():
  params = _classifier_variables(_ae_config())['params']
  mask = autoencoder.encoder_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  for name, subtree in mask.items():
    assert set(jax.tree.leaves(subtree)) == {name.startswith('Conv_')}, name


def test_configs_defaults_and_the_autoencoder_variant():
  base = cnn.get_config().autoencoder
  assert (base.enabled, base.num_epochs, base.learning_rate, base.batch_size, tuple(base.extra_dirs),
          base.freeze_encoder) == (False, 10, 1e-3, 16, (), True)
  config = autoencoder_config.get_config()
  assert config.name == 'autoencoder' and config.autoencoder.enabled and config.model.name == 'cnn'
  config_check.validate(config, 'train')


@pytest.mark.parametrize('field, value, message', [
    ('model.name', 'vgg', 'config.model.name'),
    ('data.image_size', 36, 'config.data.image_size'),
    ('autoencoder.batch_size', 0, 'config.autoencoder.batch_size'),
    ('autoencoder.num_epochs', 0, 'config.autoencoder.num_epochs'),
    ('autoencoder.learning_rate', 0.0, 'config.autoencoder.learning_rate'),
    ('autoencoder.extra_dirs', ('',), 'config.autoencoder.extra_dirs'),
    ('model.init_from', 'vgg16.h5', 'config.model.init_from'),
])
def test_bad_settings_name_the_field(field, value, message):
  config = _ae_config()
  config_check.validate(config, 'train')
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, 'train')
  config.autoencoder.enabled = False  # Stage 1's fields are checked only when it runs.
  if section == 'autoencoder':
    config_check.validate(config, 'train')


def test_too_few_images_for_a_batch_names_the_field(tmp_path):
  config = _ae_config()
  config.autoencoder.batch_size = 8
  with pytest.raises(ValueError, match='config.autoencoder.batch_size=8'):
    autoencoder.train_autoencoder(config, str(tmp_path), _images(4))


def test_nan_loss_names_the_step_and_saves_nothing(tmp_path):
  config = _ae_config()
  config.autoencoder.learning_rate = float('inf')  # Step 1 is finite; its update makes every later loss NaN.
  with pytest.raises(FloatingPointError, match='stage-1 step 2:'):
    autoencoder.train_autoencoder(config, str(tmp_path), _images(8))
  manager = autoencoder.create_manager(str(tmp_path), read_only=True)
  assert manager.latest_step() is None
  manager.close()


def _write_png(path, pixels):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path)


def test_extra_dirs_are_walked_recursively_and_validation_copies_dropped(tmp_path):
  pixels = _images(4, size=40)
  extra = tmp_path / 'extra'
  _write_png(str(extra / 'a' / 'one.png'), pixels[0])
  _write_png(str(extra / 'a' / 'deeper' / 'TWO.PNG'), pixels[1])
  Image.fromarray(pixels[2]).save(str(extra / 'a' / 'deeper' / 'three.jpeg'), quality=95)
  _write_png(str(extra / 'a' / 'copy_of_val.png'), pixels[3])
  _write_png(str(extra / '.hidden' / 'ignored.png'), pixels[0])
  _write_png(str(extra / 'a' / '.ignored.png'), pixels[0])
  (extra / 'a' / 'notes.txt').write_text('not an image')
  (extra / 'a' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  second = tmp_path / 'second'
  _write_png(str(second / 'four.png'), pixels[1])
  config = _ae_config()
  config.autoencoder.extra_dirs = (str(extra), str(second))
  with pytest.raises(images_lib.BadImageError, match='broken.png'):
    autoencoder.load_extra_images(config)
  config.data.skip_bad_images = True
  val_hash = images_lib.load_image(str(extra / 'a' / 'copy_of_val.png'), 32).pixel_hash
  decoded = autoencoder.load_extra_images(config, exclude_hashes=(val_hash,))
  assert sorted(os.path.relpath(p, tmp_path) for p in decoded.paths) == [
      'extra/a/deeper/TWO.PNG', 'extra/a/deeper/three.jpeg', 'extra/a/one.png', 'second/four.png']
  assert decoded.images_NHWC.shape == (4, 32, 32, 3) and decoded.images_NHWC.dtype == np.uint8
  assert [os.path.basename(p) for p, _ in decoded.skipped] == ['broken.png']


def test_missing_or_empty_extra_dir_names_the_field(tmp_path):
  config = _ae_config()
  config.autoencoder.extra_dirs = (str(tmp_path / 'nowhere'),)
  with pytest.raises(FileNotFoundError, match='config.autoencoder.extra_dirs.*nowhere'):
    autoencoder.load_extra_images(config)
  (tmp_path / 'empty').mkdir()
  config.autoencoder.extra_dirs = (str(tmp_path / 'empty'),)
  with pytest.raises(ValueError, match='config.autoencoder.extra_dirs.*no .jpg'):
    autoencoder.load_extra_images(config)


@pytest.fixture(scope='module')
def stage1(tmp_path_factory, synthetic_root):
  """A finished 2-epoch stage 1 on the synthetic train split: (config, data, workdir, result)."""
  config = _ae_config(synthetic_root)
  data = loading.load_training_data(config)
  workdir = str(tmp_path_factory.mktemp('stage1'))
  result = autoencoder.train_autoencoder(config, workdir, data.train.images_NHWC)
  return config, data, workdir, result


def test_stage1_trains_every_epoch_and_checkpoints_the_last(stage1):
  config, data, workdir, result = stage1
  steps_per_epoch = len(data.train) // config.autoencoder.batch_size
  assert (result.first_step, result.num_steps, result.reused) == (0, 2 * steps_per_epoch, False)
  assert [row['epoch'] for row in result.history] == [1, 2]
  assert result.history[1]['mse'] < result.history[0]['mse']
  assert os.listdir(os.path.join(autoencoder.stage_dir(workdir), 'checkpoints')) == [str(result.num_steps)]
  _assert_trees_equal(autoencoder.restore_params(config, workdir), result.params)


def test_stage1_resumes_after_a_crash_to_identical_params(stage1, tmp_path, monkeypatch):
  config, data, straight_dir, straight = stage1
  workdir = str(tmp_path / 'crashed')
  real_check = fit_lib.check_finite
  calls = []

  def crash_in_epoch_2(window, *args):
    calls.append(len(window))
    if len(calls) == 2:
      raise KeyboardInterrupt('killed during epoch 2')
    return real_check(window, *args)

  monkeypatch.setattr(fit_lib, 'check_finite', crash_in_epoch_2)
  with pytest.raises(KeyboardInterrupt):
    autoencoder.train_autoencoder(config, workdir, data.train.images_NHWC)
  monkeypatch.setattr(fit_lib, 'check_finite', real_check)
  resumed = autoencoder.train_autoencoder(config, workdir, data.train.images_NHWC)
  assert resumed.first_step == straight.num_steps // 2 and not resumed.reused
  assert resumed.history == straight.history
  _assert_trees_equal(resumed.params, straight.params)
  # With its last (and only) checkpoint deleted, stage 1 starts over and still ends where it did.
  shutil.rmtree(os.path.join(autoencoder.stage_dir(workdir), 'checkpoints', str(resumed.num_steps)))
  again = autoencoder.train_autoencoder(config, workdir, data.train.images_NHWC)
  assert again.first_step == 0 and not again.reused
  _assert_trees_equal(again.params, straight.params)


def test_finished_stage1_is_reused_not_retrained(stage1, monkeypatch):
  config, data, workdir, result = stage1

  def no_training(*args, **kwargs):
    raise AssertionError('a finished stage 1 must not train again')

  monkeypatch.setattr(autoencoder, 'jit_train_step', no_training)
  monkeypatch.setattr(autoencoder, 'load_extra_images', no_training)
  encoder = autoencoder.pretrain(config, workdir, data)
  assert 'reused a finished stage 1' in encoder.description
  assert f'{result.history[-1]["mse"]:.5f}' in encoder.description
  _assert_trees_equal(encoder.params, result.params)
  model, tx = create_model(config.model, 3), steps.create_optimizer(config.train)
  fresh = steps.jit_create_train_state(model, tx, 32, mesh_lib.make_mesh())(jax.random.PRNGKey(1))
  state = warm_start.warm_start(config, workdir, fresh, tx, encoder)
  for name in ('Conv_0', 'Conv_1', 'Conv_2'):
    _assert_trees_equal(state.params[name], result.params[name])
  _assert_trees_equal(state.params['Dense_2'], fresh.params['Dense_2'])
  with open(os.path.join(workdir, 'warm_start.txt')) as f:
    assert f.read() == encoder.description + '\n'
  with open(os.path.join(autoencoder.stage_dir(workdir), 'history.json')) as f:
    assert json.load(f)['epochs'] == result.history
  for path in (os.path.join(workdir, 'reconstructions.png'),
               os.path.join(autoencoder.stage_dir(workdir), 'reconstructions.png')):
    assert _png_chunks(path) <= PIXEL_CHUNKS, path


def test_stage1_trained_with_other_settings_names_the_field(stage1, tmp_path):
  config, data, workdir, _ = stage1
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  config = _ae_config(config.data.root)
  config.model.conv_features = (4, 8, 16)
  with pytest.raises(ValueError, match=r'config.model.conv_features was \[4, 8, 8\], now \[4, 8, 16\]'):
    autoencoder.train_autoencoder(config, copy, data.train.images_NHWC)


def _best_params(config, workdir: str):
  model = create_model(config.model, 3)
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), config.data.image_size,
                                        mesh_lib.make_mesh())
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  state = checkpoints.restore_state(manager, checkpoints.choose_step(manager, -1, workdir), abstract)
  manager.close()
  return jax.device_get(state.params)


@pytest.mark.slow
@pytest.mark.parametrize('freeze_encoder', [True, False])
def test_one_command_runs_both_stages(tiny_config, tmp_path, freeze_encoder):
  tiny_config.autoencoder.enabled = True
  tiny_config.autoencoder.num_epochs = 2
  tiny_config.autoencoder.batch_size = 4
  tiny_config.autoencoder.freeze_encoder = freeze_encoder
  workdir = str(tmp_path / 'run')
  summary = train.train_and_evaluate(tiny_config, workdir)
  encoder = autoencoder.restore_params(tiny_config, workdir)
  classifier = _best_params(tiny_config, workdir)
  for name in ('Conv_0', 'Conv_1', 'Conv_2'):
    assert _trees_equal(classifier[name], encoder[name]) == freeze_encoder, name
  with open(os.path.join(autoencoder.stage_dir(workdir), 'history.json')) as f:
    assert [row['epoch'] for row in json.load(f)['epochs']] == [1, 2]
  with open(os.path.join(workdir, 'warm_start.txt')) as f:
    assert 'final reconstruction MSE' in f.read()
  assert _png_chunks(os.path.join(workdir, 'reconstructions.png')) <= PIXEL_CHUNKS
  with Image.open(os.path.join(workdir, 'reconstructions.png')) as grid:
    assert grid.width > grid.height  # 8 columns, 2 rows.
  assert os.path.exists(os.path.join(workdir, 'eval', 'val', 'report.md')) and summary['best_step'] > 0
