"""Checkpoints: a round trip restores exactly, and an interrupted run resumes to the same parameters."""

import os
import shutil

import jax
import numpy as np
import pytest

from lungjax import checkpoints, steps, train
from lungjax.runtime import mesh as mesh_lib
from lungjax.data import pipeline
from lungjax.models import create_model


def _params_of(workdir: str, config, step: int):
  model = create_model(config.model, 3)
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), config.data.image_size,
                                        mesh_lib.make_mesh())
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  state = checkpoints.restore_state(manager, step, abstract)
  manager.close()
  return jax.device_get(state)


def test_round_trip_restores_state_iterator_and_history(tmp_path, tiny_config):
  model = create_model(tiny_config.model, 3)
  tx = steps.create_optimizer(tiny_config.train)
  mesh = mesh_lib.make_mesh()
  state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(3))
  state = state.replace(step=state.step + 7)
  images = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  dataset = pipeline.train_dataset(images, np.zeros(12, np.int32), global_batch_size=4, num_epochs=2, seed=0)
  data_iter = iter(dataset.to_iter_dataset())
  next(data_iter)
  expected_next = dataset[1]  # The batch that follows the first.
  saved = jax.device_get(state)
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  checkpoints.save(manager, state, data_iter, [{'epoch': 1, 'train_loss': 0.5}], {'val_macro_recall': 0.5})
  manager.wait_until_finished()
  fresh_iter = iter(dataset.to_iter_dataset())
  abstract = steps.abstract_train_state(model, tx, 32, mesh)
  restored = checkpoints.restore_verified(manager, 7, abstract, fresh_iter)
  manager.close()
  assert restored.history['epochs'] == [{'epoch': 1, 'train_loss': 0.5}]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), saved)
  np.testing.assert_array_equal(next(fresh_iter)['image'], expected_next['image'])


def test_eval_step_request_that_does_not_exist_names_the_field(tmp_path, tiny_config):
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  with pytest.raises(FileNotFoundError, match='train first'):
    checkpoints.choose_step(manager, -1, str(tmp_path))


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, tiny_config):
  tiny_config.checkpoint.keep_latest = 2
  tiny_config.train.num_epochs = 3
  straight, interrupted = str(tmp_path / 'straight'), str(tmp_path / 'interrupted')
  summary = train.train_and_evaluate(tiny_config, straight)
  last = summary['num_steps']
  train.train_and_evaluate(tiny_config, interrupted)
  # Pretend the run died during its last epoch: drop the last checkpoint, keep the one before.
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(interrupted), str(last)))
  resumed = train.train_and_evaluate(tiny_config, interrupted)
  assert resumed['first_step_this_run'] == last - summary['steps_per_epoch']
  assert [row['train_loss'] for row in resumed['history']] == [row['train_loss'] for row in summary['history']]
  jax.tree.map(np.testing.assert_array_equal, _params_of(interrupted, tiny_config, last).params,
               _params_of(straight, tiny_config, last).params)


def _saved_run(tmp_path, tiny_config, steps_to_save=(6, 12)):
  """A manager with tiny states saved at steps_to_save; returns (manager, abstract, saved states, dataset)."""
  tiny_config.checkpoint.keep_latest = 5
  model = create_model(tiny_config.model, 3)
  tx = steps.create_optimizer(tiny_config.train)
  mesh = mesh_lib.make_mesh()
  state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(3))
  images = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  dataset = pipeline.train_dataset(images, np.zeros(12, np.int32), global_batch_size=4, num_epochs=2, seed=0)
  data_iter = iter(dataset.to_iter_dataset())
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  saved = {}
  for step in steps_to_save:
    state = state.replace(step=jax.numpy.asarray(step, jax.numpy.int32),
                          params=jax.tree.map(lambda x: x + 1, state.params))
    checkpoints.save(manager, state, data_iter, [{'epoch': step}], {'val_macro_recall': step / 100},
                     {'run': {'seed': 0}, 'host': {}})
    saved[step] = jax.device_get(state)
  checkpoints.wait(manager)
  return manager, steps.abstract_train_state(model, tx, 32, mesh), saved, dataset


def _value_files(workdir, step):
  folder = os.path.join(checkpoints.checkpoint_dir(workdir), str(step), 'state')
  return [os.path.join(p, n) for p, _, ns in os.walk(folder) for n in ns if os.sep + 'd' + os.sep in
          os.path.join(p, n)]


def test_flipped_bytes_in_a_value_file_are_caught_and_resume_uses_the_step_before(tmp_path, tiny_config):
  manager, abstract, saved, _ = _saved_run(tmp_path, tiny_config)
  for path in _value_files(str(tmp_path), 12):  # Flip a byte in the middle of every value file.
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(path, 'wb').write(bytes(data))
  with pytest.raises(checkpoints.CorruptCheckpointError, match='step 12.*fallback_to_good_step'):
    checkpoints.restore_chosen(manager, abstract, str(tmp_path), requested=12)
  fallback = checkpoints.restore_chosen(manager, abstract, str(tmp_path), requested=12, fallback=True)
  assert fallback.step == 6
  good = checkpoints.restore_latest_good(manager, abstract, None)
  assert good.step == 6 and manager.all_steps() == [6]
  assert os.listdir(os.path.join(str(tmp_path), 'checkpoints.corrupt'))[0].startswith('12-')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(good.state.params), saved[6].params)
  manager.close()


def test_another_steps_valid_state_folder_is_caught_by_the_checksums(tmp_path, tiny_config):
  # Step 6's state/ folder is whole and readable (tensorstore's own checks pass); only lungjax's sha256 of every
  # leaf tells that it is not the state that step 12 saved.
  manager, abstract, saved, _ = _saved_run(tmp_path, tiny_config)
  folder = checkpoints.checkpoint_dir(str(tmp_path))
  shutil.rmtree(os.path.join(folder, '12', 'state'))
  shutil.copytree(os.path.join(folder, '6', 'state'), os.path.join(folder, '12', 'state'))
  with pytest.raises(checkpoints.CorruptCheckpointError, match='step 12.*sha256 mismatch'):
    checkpoints.restore_verified(manager, 12, abstract)
  good = checkpoints.restore_latest_good(manager, abstract, None)
  assert good.step == 6 and manager.all_steps() == [6]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(good.state.params), saved[6].params)
  manager.close()


def test_truncated_or_missing_items_are_corrupt_steps(tmp_path, tiny_config):
  manager, abstract, _, _ = _saved_run(tmp_path, tiny_config)
  for path in _value_files(str(tmp_path), 12):
    os.truncate(path, 3)
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '6', 'integrity'))
  for step in (6, 12):
    with pytest.raises(checkpoints.CorruptCheckpointError, match=f'step {step}'):
      checkpoints.restore_verified(manager, step, abstract)
  assert checkpoints.restore_latest_good(manager, abstract, None) is None
  manager.close()


def test_restoring_into_another_dtype_is_refused(tmp_path, tiny_config):
  manager, abstract, _, _ = _saved_run(tmp_path, tiny_config, (6,))
  bf16 = abstract.replace(params=jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jax.numpy.bfloat16, sharding=x.sharding), abstract.params))
  with pytest.raises(checkpoints.CheckpointMismatchError, match='saved float32.*wanted bfloat16'):
    checkpoints.restore_verified(manager, 6, bf16)
  manager.close()


def test_non_finite_state_is_never_saved(tmp_path, tiny_config):
  manager, _, saved, _ = _saved_run(tmp_path, tiny_config, (6,))
  state = jax.tree.map(jax.numpy.asarray, saved[6])
  bad = state.replace(step=jax.numpy.asarray(7), params=jax.tree.map(lambda x: x * np.nan, state.params))
  data_iter = iter(pipeline.train_dataset(np.zeros((4, 2, 2, 3), np.uint8), np.zeros(4, np.int32),
                                          global_batch_size=4, num_epochs=1, seed=0).to_iter_dataset())
  with pytest.raises(FloatingPointError, match='step 7'):
    checkpoints.save(manager, bad, data_iter, [], None)
  checkpoints.wait(manager)
  assert manager.all_steps() == [6]
  manager.close()


def test_failed_save_is_a_clear_error_and_stale_tmp_folders_are_cleaned(tmp_path, tiny_config, monkeypatch):
  manager, _, saved, _ = _saved_run(tmp_path, tiny_config, (6,))
  manager.close()
  stale = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '9.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(stale, 'state'))
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  assert not os.path.exists(stale) and manager.all_steps() == [6]

  def full_disk(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(manager, 'wait_until_finished', full_disk)
  with pytest.raises(checkpoints.CheckpointSaveError, match='failed: OSError.*No space left.*older steps'):
    checkpoints.wait(manager)


def test_the_one_restore_picks_best_latest_or_a_step(tmp_path, tiny_config):
  model = create_model(tiny_config.model, 3)
  tx = steps.create_optimizer(tiny_config.train)
  mesh = mesh_lib.make_mesh()
  base = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(3))
  images = np.zeros((8, 2, 2, 3), np.uint8)
  dataset = pipeline.train_dataset(images, np.zeros(8, np.int32), global_batch_size=4, num_epochs=2, seed=0)
  data_iter = iter(dataset.to_iter_dataset())
  tiny_config.checkpoint.keep_latest, tiny_config.checkpoint.keep_best = 3, 3
  fingerprint = {'run': {'seed': 0}, 'host': {}}
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  for step, recall in ((1, 0.2), (2, 0.9), (3, 0.4)):  # Step 2 ranks best; 3 is the latest.
    state = base.replace(step=base.step + step, params=jax.tree.map(lambda p, s=step: p + s, base.params))
    checkpoints.save(manager, state, data_iter, [], {'val_macro_recall': recall}, fingerprint)
  manager.wait_until_finished()
  abstract = steps.abstract_train_state(model, tx, 32, mesh)
  assert checkpoints.best_or_latest(manager) == 2 and checkpoints.best_or_latest(manager, ranked=False) == 3
  assert checkpoints.restore(manager, 'best', abstract, workdir=str(tmp_path)).step == 2
  assert checkpoints.restore(manager, 'best', abstract, workdir=str(tmp_path), ranked=False).step == 3
  restored = checkpoints.restore(manager, 1, abstract, workdir=str(tmp_path))
  assert restored.step == 1 and int(restored.state.step) == int(base.step) + 1
  with pytest.raises(ValueError, match='config.eval.step=7 has no checkpoint'):
    checkpoints.restore(manager, 7, abstract, workdir=str(tmp_path))
  for bad in ('latest', -1, True):
    with pytest.raises(ValueError, match='which is'):
      checkpoints.restore(manager, bad, abstract, workdir=str(tmp_path))
  with pytest.raises(TypeError, match='needs data_iter'):
    checkpoints.restore(manager, 'resume', abstract, workdir=str(tmp_path))
  resumed = checkpoints.restore(manager, 'resume', abstract, workdir=str(tmp_path), data_iter=data_iter,
                                checkpoint_config=tiny_config.checkpoint, fingerprint=fingerprint)
  assert isinstance(resumed, checkpoints.Resumed) and resumed.restored.step == 3 and resumed.manager is manager
  manager.close()
