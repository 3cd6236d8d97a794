"""Training keeps its images' thumbnails in the workdir; eval finds copies of training images with them alone."""

import copy
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import evaluate, train
from lungjax.data import loading
from tests.conftest import write_image_folder


def _decoded_folder(folder, config):
  return loading.load_folder(folder, config, require_all_classes=False)


def test_kept_thumbnails_match_decoding_and_find_the_same_copies(tmp_path, tiny_config):
  training = _decoded_folder(write_image_folder(str(tmp_path / 'train'), 3, seed=3), tiny_config)
  path = str(tmp_path / 'run' / loading.TRAINING_THUMBNAILS)
  os.makedirs(os.path.dirname(path))
  loading.save_training_thumbnails(loading.TrainingThumbnails.of(training), path)
  kept = loading.load_training_thumbnails(path)
  left = [n for n in os.listdir(os.path.dirname(path)) if n != '.lungjax-outputs.json']  # The writer's manifest aside.
  assert left == [loading.TRAINING_THUMBNAILS]  # No partial file left behind.
  assert kept.folder == training.folder
  assert kept.relative_paths[0] == os.path.join('Covid', '000.png')
  assert kept.paths == training.decoded.paths
  assert kept.pixel_hashes == training.decoded.pixel_hashes
  assert kept.thumbnails_ND.dtype == np.float32
  np.testing.assert_array_equal(kept.thumbnails_ND, training.decoded.thumbnails_ND)

  # An evaluated folder with an exact copy and a near copy (brightened) of training images.
  evaluated_dir = write_image_folder(str(tmp_path / 'evaluated'), 2, seed=4, classes=('Normal',))
  shutil.copy(os.path.join(training.folder, 'Covid', '001.png'), os.path.join(evaluated_dir, 'Normal', 'copy.png'))
  pixels = np.asarray(Image.open(os.path.join(training.folder, 'Normal', '002.png')), np.int16)
  Image.fromarray(np.clip(pixels + 9, 0, 255).astype(np.uint8)).save(os.path.join(evaluated_dir, 'Normal', 'near.png'))
  evaluated = _decoded_folder(evaluated_dir, tiny_config).decoded
  threshold = tiny_config.data.near_copy_threshold
  from_kept = loading.copies_of_training_images(evaluated, kept, threshold)
  assert from_kept == loading.copies_of_training_images(evaluated, training.decoded, threshold)
  assert [(os.path.basename(c['file']), c['training_file'], c['kind']) for c in from_kept] == [
      ('copy.png', os.path.join(training.folder, 'Covid', '001.png'), 'exact'),
      ('near.png', os.path.join(training.folder, 'Normal', '002.png'), 'near')]


def test_thumbnails_that_are_not_whole_grey_values_keep_their_values(tmp_path):
  thumbnails = loading.TrainingThumbnails('/data/train', ('a.png', '/elsewhere/b.png'), ('h1', 'h2'),
                                          np.asarray([[0.5] * 4, [254.25] * 4], np.float32))
  path = str(tmp_path / loading.TRAINING_THUMBNAILS)
  loading.save_training_thumbnails(thumbnails, path)
  kept = loading.load_training_thumbnails(path)
  np.testing.assert_array_equal(kept.thumbnails_ND, thumbnails.thumbnails_ND)
  assert kept.paths == ('/data/train/a.png', '/elsewhere/b.png')
  assert kept.pixel_hashes == ('h1', 'h2')


def test_a_damaged_file_is_named(tmp_path):
  path = str(tmp_path / loading.TRAINING_THUMBNAILS)
  np.savez(path, folder=np.asarray('/x'), relative_paths=np.asarray(['a.png', 'b.png']), pixel_hashes=np.asarray(['h']),
           thumbnails_ND=np.zeros((2, 4), np.uint8))
  with pytest.raises(ValueError, match='training_thumbnails.npz'):
    loading.load_training_thumbnails(path)


@pytest.mark.slow
def test_eval_lists_copies_of_training_images_after_the_training_folder_moved(tmp_path, synthetic_root):
  root = str(tmp_path / 'data root')
  shutil.copytree(synthetic_root, root)
  config = tiny.get_config()
  config.data.root = root
  config.train.num_epochs = 1
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  kept_path = loading.training_thumbnails_path(workdir)
  kept = loading.load_training_thumbnails(kept_path)
  decoded = _decoded_folder(os.path.join(root, 'train'), config).decoded
  assert kept.paths == decoded.paths and kept.pixel_hashes == decoded.pixel_hashes
  np.testing.assert_array_equal(kept.thumbnails_ND, decoded.thumbnails_ND)

  folder = write_image_folder(str(tmp_path / 'external'), 2, seed=6, classes=('Covid', 'Normal'))
  original = os.path.join(root, 'train', 'Normal', '005.png')
  shutil.copy(original, os.path.join(folder, 'Normal', 'copy.png'))
  eval_config = copy.deepcopy(config)
  eval_config.eval.dir = folder
  expected = [('copy.png', original, 'exact')]

  def listed_copies():
    metrics = evaluate.evaluate_checkpoint(eval_config, workdir)
    if 'overlap_with_training' not in metrics:
      return None
    return [(os.path.basename(o['file']), o['training_file'], o['kind']) for o in metrics['overlap_with_training']]

  os.rename(kept_path, kept_path + '.aside')  # A workdir older than the file: the training folder is decoded again.
  assert listed_copies() == expected
  shutil.move(os.path.join(root, 'train'), str(tmp_path / 'moved train'))
  assert listed_copies() is None  # Neither at hand: not checked (and a warning says so).
  os.rename(kept_path + '.aside', kept_path)
  assert listed_copies() == expected
