"""data/loading.py: config.eval.dir's folders, decoding folders, images shared between folders, the training
thumbnails a run keeps, copies of training images, and the training data's grouped validation split."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lungjax.data import loading
from tests.conftest import CLASSES, write_image_folder


def test_eval_folders_lists_one_or_several_and_names_every_problem(tmp_path):
  a, b = tmp_path / 'x' / 'test', tmp_path / 'y' / 'other'
  a.mkdir(parents=True)
  b.mkdir(parents=True)
  assert loading.eval_folders(f' {a} , {b} ') == [str(a), str(b)]
  assert loading.eval_folders(str(a)) == [str(a)]
  with pytest.raises(ValueError, match='names no folder'):
    loading.eval_folders(' , ')
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    loading.eval_folders(f'{a},{tmp_path / "missing"}')
  twin = tmp_path / 'z' / 'test'
  twin.mkdir(parents=True)
  with pytest.raises(ValueError, match='named by its basename'):
    loading.eval_folders(f'{a},{twin}')
  comma = tmp_path / 'a,b'
  comma.mkdir()
  with pytest.raises(ValueError, match='path holds a comma'):
    loading.eval_folders(str(comma))


def test_shared_images_counts_each_copy_in_every_folder_that_holds_it():
  assert loading.shared_images([['h1', 'h2'], ['h2', 'h3'], ['h4']]) == 2
  assert loading.shared_images([['h1', 'h2'], ['h1', 'h2'], ['h1']]) == 5
  assert loading.shared_images([['h1', 'h1'], ['h2']]) == 0  # Twice in one folder is not across folders.


def test_load_folders_pools_several_folders_as_named_sources(tmp_path, tiny_config):
  write_image_folder(str(tmp_path / 'siteA'), 2, seed=3)
  write_image_folder(str(tmp_path / 'siteB'), 1, seed=4)
  loaded = loading.load_folders(f'{tmp_path / "siteA"},{tmp_path / "siteB"}', tiny_config)
  decoded = loaded.decoded
  assert len(decoded) == 9 and decoded.source_names == ('siteA', 'siteB')
  np.testing.assert_array_equal(np.bincount(decoded.sources_N), [6, 3])
  np.testing.assert_array_equal(np.bincount(decoded.labels_N), [3, 3, 3])
  size = tiny_config.data.image_size
  assert decoded.images_NHWC.shape == (9, size, size, 3)


def test_training_thumbnails_round_trip_and_a_damaged_file_is_named(tmp_path):
  thumbnails = loading.TrainingThumbnails('/data/train', ('Covid/a.png', '/elsewhere/b.png'), ('h1', 'h2'),
                                          np.array([[0.0, 255.0], [3.0, 4.0]], np.float32))
  path = loading.training_thumbnails_path(str(tmp_path))
  assert path == os.path.join(str(tmp_path), loading.TRAINING_THUMBNAILS)
  loading.save_training_thumbnails(thumbnails, path)
  with np.load(path) as stored:
    assert stored['thumbnails_ND'].dtype == np.uint8  # Whole grey values: stored small.
  found = loading.load_training_thumbnails(path)
  assert found.paths == ('/data/train/Covid/a.png', '/elsewhere/b.png') and found.pixel_hashes == ('h1', 'h2')
  np.testing.assert_array_equal(found.thumbnails_ND, thumbnails.thumbnails_ND)
  fractional = loading.TrainingThumbnails('/d', ('a',), ('h',), np.array([[0.5, 1.0]], np.float32))
  loading.save_training_thumbnails(fractional, str(tmp_path / 'f.npz'))
  np.testing.assert_array_equal(loading.load_training_thumbnails(str(tmp_path / 'f.npz')).thumbnails_ND, [[0.5, 1.0]])
  np.savez(tmp_path / 'bad.npz', folder=np.asarray('/d'), relative_paths=np.asarray(['a', 'b']),
           pixel_hashes=np.asarray(['h']), thumbnails_ND=np.zeros((2, 2), np.uint8))
  with pytest.raises(ValueError, match='bad.npz: 2 paths, 1 pixel hashes and 2 thumbnails'):
    loading.load_training_thumbnails(str(tmp_path / 'bad.npz'))


def test_copies_of_training_images_finds_an_exact_copy_from_the_kept_thumbnails(tmp_path, tiny_config):
  train = write_image_folder(str(tmp_path / 'train'), 2, seed=5)
  evaluated = tmp_path / 'eval' / CLASSES[0]
  evaluated.mkdir(parents=True)
  with Image.open(os.path.join(train, CLASSES[1], '001.png')) as image:
    image.save(evaluated / 'copy.png')
  write_image_folder(str(tmp_path / 'eval'), 1, seed=6)
  training = loading.load_folder(train, tiny_config, require_all_classes=True)
  kept = loading.TrainingThumbnails.of(training)
  eval_decoded = loading.load_folder(str(tmp_path / 'eval'), tiny_config, require_all_classes=False).decoded
  copies = loading.copies_of_training_images(eval_decoded, kept, tiny_config.data.near_copy_threshold)
  assert [(os.path.basename(c['file']), c['training_file'], c['kind']) for c in copies] == [
      ('copy.png', os.path.join(train, CLASSES[1], '001.png'), 'exact')]


def test_training_data_splits_train_into_disjoint_stratified_train_and_validation(tiny_config):
  data = loading.load_training_data(tiny_config)
  assert len(data.train) + len(data.val) == 36 and len(data.val) > 0
  assert not set(data.train.paths) & set(data.val.paths)
  assert set(np.asarray(data.val.labels_N).tolist()) == {0, 1, 2}  # Stratified: every class in validation.


def test_write_run_files_writes_the_config_and_the_training_thumbnails(tiny_config, tmp_path):
  data = loading.load_training_data(tiny_config)
  loading.write_run_files(tiny_config, str(tmp_path), data)
  with open(tmp_path / 'config.json') as f:
    assert json.load(f) == json.loads(tiny_config.to_json_best_effort())
  kept = loading.load_training_thumbnails(loading.training_thumbnails_path(str(tmp_path)))
  assert kept.paths == data.train_folder.decoded.paths
  assert kept.pixel_hashes == data.train_folder.decoded.pixel_hashes
