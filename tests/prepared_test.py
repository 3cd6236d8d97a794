"""Prepared data: the same split and batches as the raw folders, pixels read from disk, clear errors."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lungjax import train
from lungjax.data import loading, pipeline, prepared


def _prepared_config(config, tmp_path):
  config = copy.deepcopy(config)
  config.data.prepared_dir = str(tmp_path / 'prepared data')
  prepared.prepare(config)
  return config


def _batches(dataset):
  return [{k: np.asarray(v) for k, v in batch.items()} for batch in dataset]


def test_prepared_data_gives_the_same_split_and_batches_as_the_raw_folders(tmp_path, tiny_config):
  raw = loading.load_training_data(tiny_config)
  config = _prepared_config(tiny_config, tmp_path)
  data = loading.load_training_data(config)
  assert isinstance(data.train.images_NHWC, prepared.PreparedImages)
  for raw_part, part in ((raw.train, data.train), (raw.val, data.val)):
    assert part.paths == raw_part.paths and part.pixel_hashes == raw_part.pixel_hashes
    np.testing.assert_array_equal(part.labels_N, raw_part.labels_N)
    np.testing.assert_array_equal(part.thumbnails_ND, raw_part.thumbnails_ND)
  kwargs = dict(global_batch_size=4, num_epochs=2, seed=3)
  raw_batches = _batches(pipeline.train_dataset(raw.train.images_NHWC, raw.train.labels_N, **kwargs))
  batches = _batches(pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N, **kwargs))
  assert len(batches) == len(raw_batches) == 2 * (len(raw.train) // 4)
  for a, b in zip(raw_batches, batches):
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  for a, b in zip(_batches(pipeline.eval_dataset(raw.val.images_NHWC, raw.val.labels_N, global_batch_size=4)),
                  _batches(pipeline.eval_dataset(data.val.images_NHWC, data.val.labels_N, global_batch_size=4))):
    assert all((a[k] == b[k]).all() for k in a)
  test, raw_test = data.load_test(config), raw.load_test(tiny_config)
  assert test.decoded.paths == raw_test.decoded.paths
  np.testing.assert_array_equal(np.asarray(test.decoded.images_NHWC), raw_test.decoded.images_NHWC)


def test_prepared_images_index_like_an_array(tmp_path, tiny_config):
  config = _prepared_config(tiny_config, tmp_path)
  _, decoded, _ = prepared.read_split(config, 'train')
  everything = np.asarray(decoded.images_NHWC)
  assert everything.shape == decoded.images_NHWC.shape == (36, 32, 32, 3) and everything.dtype == np.uint8
  np.testing.assert_array_equal(decoded.images_NHWC[5], everything[5])
  np.testing.assert_array_equal(decoded.images_NHWC[np.array([7, 2, 7])], everything[[7, 2, 7]])
  assert decoded.images_NHWC[np.array([], np.int64)].shape == (0, 32, 32, 3)
  part = decoded.subset([30, 1, 4])
  assert isinstance(part.images_NHWC, prepared.PreparedImages) and len(part.images_NHWC) == 3
  np.testing.assert_array_equal(part.images_NHWC[np.arange(3)], everything[[30, 1, 4]])
  np.testing.assert_array_equal(part.images_NHWC[1:], everything[[1, 4]])


def test_the_study_config_makes_its_builder(tmp_path):
  from configs import cnn  # pylint: disable=g-import-not-at-top
  config = cnn.get_config()
  config.data.prepared_dir = str(tmp_path)
  assert prepared.builder(config).builder_config.name.startswith('256px_')
  config.data.root = str(tmp_path)
  assert prepared.builder(config).name == 'lungjax_image_folder'


def test_unprepared_or_mismatched_data_name_what_to_do(tmp_path, tiny_config, synthetic_root):
  config = copy.deepcopy(tiny_config)
  config.data.prepared_dir = str(tmp_path / 'nothing here')
  with pytest.raises(FileNotFoundError, match='python -m lungjax.tools.prepare'):
    loading.load_training_data(config)
  config = _prepared_config(tiny_config, tmp_path)
  config.data.image_size = 16  # Not prepared at this size.
  with pytest.raises(FileNotFoundError, match='image_size=16'):
    loading.load_training_data(config)
  other = _prepared_config(tiny_config, tmp_path)
  assert prepared.prepare(other)['reused']
  other.data.root = os.path.join(synthetic_root, 'test')
  with pytest.raises(ValueError, match='was prepared from .*choose another config.data.prepared_dir'):
    prepared.prepare(other)


def test_skipped_files_are_reported_as_for_raw_folders(tmp_path, tiny_config):
  root = str(tmp_path / 'root')
  from tests.conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  write_image_folder(os.path.join(root, 'train'), 4, seed=0)
  with open(os.path.join(root, 'train', 'Covid', 'zz broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff garbage')
  config = copy.deepcopy(tiny_config)
  config.data.root, config.data.skip_bad_images = root, True
  raw = loading.load_training_folder(config)[1]
  loaded = loading.load_training_folder(_prepared_config(config, tmp_path))[1]
  assert loaded.skipped_report() == raw.skipped_report() and len(loaded.skipped_report()) == 1


@pytest.mark.slow
def test_training_from_prepared_data_matches_training_from_the_folders(tmp_path, tiny_config):
  raw = train.train_and_evaluate(tiny_config, str(tmp_path / 'raw'))
  config = copy.deepcopy(tiny_config)
  config.data.prepared_dir = str(tmp_path / 'prepared data')
  command = [sys.executable, '-m', 'lungjax.tools.prepare', '--config=configs/tiny.py',
             f'--config.data.root={tiny_config.data.root}', f'--config.data.prepared_dir={config.data.prepared_dir}']
  out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300,
                       cwd=os.path.join(os.path.dirname(__file__), '..')).stdout
  assert json.loads(out[out.index('\n{') + 1:out.rindex('}') + 1])['splits']['train']['n_images'] == 36
  summary = train.train_and_evaluate(config, str(tmp_path / 'from prepared'))
  for a, b in zip(raw['history'], summary['history']):
    assert {k: v for k, v in a.items() if k != 'wall_s'} == {k: v for k, v in b.items() if k != 'wall_s'}
  assert summary['evaluations']['test']['accuracy'] == raw['evaluations']['test']['accuracy']


def test_a_changed_root_is_refused_at_prepare_and_at_training(tmp_path, tiny_config, synthetic_root):
  """Issue 26 High 5: images deleted, added or changed in the root after it was prepared are named, never reused."""
  import shutil  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(tiny_config)
  config.data.root = str(tmp_path / 'root')
  shutil.copytree(synthetic_root, config.data.root)
  config = _prepared_config(config, tmp_path)
  listing = os.path.join(os.fspath(prepared.builder(config).data_dir), prepared.LISTING)
  assert len(json.load(open(listing))['files']) == 48  # 36 train + 12 test images.
  assert prepared.prepare(config)['reused'] is True  # Unchanged: reused.
  gone = os.path.join(config.data.root, 'train', 'Normal', '003.png')
  os.remove(gone)
  for run in (lambda: prepared.prepare(config), lambda: loading.load_training_data(config)):
    with pytest.raises(prepared.PreparedRootChangedError, match=r'1 removed \(train/Normal/003.png\)'):
      run()
  shutil.copy(os.path.join(synthetic_root, 'train', 'Normal', '003.png'), gone)  # Back, but a new mtime.
  os.utime(gone, ns=(1, 1))
  with open(os.path.join(config.data.root, 'test', 'Covid', 'new.png'), 'wb') as f:
    f.write(open(os.path.join(synthetic_root, 'test', 'Covid', '000.png'), 'rb').read())
  with pytest.raises(prepared.PreparedRootChangedError,
                     match=r'1 added \(test/Covid/new.png\); 1 changed \(train/Normal/003.png\)'):
    prepared.prepare(config)
  with pytest.raises(prepared.PreparedRootChangedError, match='the prepared train split'):
    loading.load_training_data(config)
