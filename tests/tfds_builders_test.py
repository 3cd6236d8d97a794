"""The TFDS builders: scan order, load_image's pixels, hashes and thumbnails, bad files, Kaggle's fast failure."""

import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lungjax.data import folders, images, tfds_builders
from tests.conftest import CLASSES, write_image_folder

SIZE = 16


def _prepare(builder_cls, root: str, data_dir: str, skip_bad_images: bool = False) -> tfds.core.DatasetBuilder:
  builder = builder_cls(config=tfds_builders.prepared_config(SIZE, CLASSES, skip_bad_images), data_dir=data_dir,
                        file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  return builder


def _source(builder, split='train'):
  return tfds.data_source(builder.name, split=split, data_dir=os.path.dirname(os.path.dirname(
      os.path.dirname(builder.data_dir))), download=False, builder_kwargs={'config': builder.builder_config})


def test_examples_are_load_image_in_scan_order_across_shards(tmp_path, monkeypatch):
  root = str(tmp_path / 'root')
  write_image_folder(os.path.join(root, 'train'), 5, seed=0)
  write_image_folder(os.path.join(root, 'test'), 2, seed=1)
  monkeypatch.setattr(tfds_builders, 'SHARD_BYTES', 4 * 3 * SIZE**2)  # 4 images a shard: 4 shards for 15.
  builder = _prepare(tfds_builders.LungjaxImageFolder, root, str(tmp_path / 'prepared'))
  assert builder.info.splits['train'].num_shards == 4
  assert builder.info.splits['test'].num_examples == 6
  records = folders.scan_split(os.path.join(root, 'train'), CLASSES).records
  source = _source(builder)
  assert len(source) == len(records) == 15
  for record, example in zip(records, source.__getitems__(list(range(15)))):
    loaded = images.load_image(record.path, SIZE)
    assert example['path'].decode() == record.path and example['label'] == record.label
    np.testing.assert_array_equal(example['image'], loaded.pixels_HWC)
    assert example['pixel_hash'].decode() == loaded.pixel_hash
    np.testing.assert_array_equal(example['thumbnail'].astype(np.float32), loaded.thumbnail)
  with np.load(os.path.join(builder.data_dir, tfds_builders.index_file_name('train'))) as index:
    assert index['paths'].tolist() == [r.path for r in records]
    assert index['labels'].tolist() == [r.label for r in records]
    assert index['pixel_hashes'].tolist() == [e['pixel_hash'].decode() for e in source.__getitems__(list(range(15)))]
    np.testing.assert_array_equal(index['thumbnails'], np.stack([e['thumbnail'] for e in source]))
  assert builder.info.metadata['root'] == root
  assert builder.info.metadata['splits']['train']['skipped'] == []


def test_a_root_of_class_folders_is_one_train_split(tmp_path):
  root = write_image_folder(str(tmp_path / 'classes'), 2, seed=0)
  builder = _prepare(tfds_builders.LungjaxImageFolder, root, str(tmp_path / 'prepared'))
  assert list(builder.info.splits) == ['train'] and builder.info.splits['train'].num_examples == 6


def test_bad_files_raise_naming_the_file_or_are_skipped_and_listed(tmp_path):
  root = str(tmp_path / 'root')
  write_image_folder(os.path.join(root, 'train'), 3, seed=0)
  bad = os.path.join(root, 'train', 'Normal', 'broken.png')
  with open(bad, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n not really')
  with open(os.path.join(root, 'train', 'Covid', 'notes.txt'), 'w') as f:
    f.write('not an image')
  with pytest.raises(images.BadImageError, match='broken.png.*skip_bad_images'):
    _prepare(tfds_builders.LungjaxImageFolder, root, str(tmp_path / 'strict'))
  builder = _prepare(tfds_builders.LungjaxImageFolder, root, str(tmp_path / 'lenient'), skip_bad_images=True)
  split = builder.info.metadata['splits']['train']
  assert [path for path, _ in split['skipped']] == [bad]
  assert split['ignored_files'] == [os.path.join(root, 'train', 'Covid', 'notes.txt')]
  assert builder.info.splits['train'].num_examples == 9 and split['n_files'] == 10


def test_config_names_differ_with_every_field_that_changes_the_examples():
  names = {tfds_builders.prepared_config(size, classes, skip).name
           for size in (32, 64) for classes in (CLASSES, CLASSES[::-1]) for skip in (False, True)}
  assert len(names) == 8
  assert tfds_builders.prepared_config(32, CLASSES, False, decode_threads=3).name == \
      tfds_builders.prepared_config(32, CLASSES, False).name


def test_kaggle_builder_reads_a_manual_folder_holding_train(tmp_path, synthetic_root):
  builder = _prepare(tfds_builders.LungjaxCovid19ImageDataset, synthetic_root, str(tmp_path / 'prepared'))
  assert builder.info.splits['train'].num_examples == 36 and builder.info.splits['test'].num_examples == 12


def test_kaggle_download_fails_fast_saying_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path / 'empty cache'))
  monkeypatch.setenv('KAGGLE_CONFIG_DIR', str(tmp_path / 'no credentials'))
  monkeypatch.delenv('KAGGLE_USERNAME', raising=False)
  monkeypatch.delenv('KAGGLE_KEY', raising=False)
  builder = tfds_builders.LungjaxCovid19ImageDataset(
      config=tfds_builders.prepared_config(SIZE, CLASSES, False), data_dir=str(tmp_path / 'prepared'))
  monkeypatch.setattr(tfds_builders.shutil, 'which', lambda name: None)
  with pytest.raises(RuntimeError, match='kaggle.*not installed.*--config.data.root=FOLDER'):
    builder.download_and_prepare()
  monkeypatch.setattr(tfds_builders.shutil, 'which', lambda name: '/usr/bin/kaggle')
  with pytest.raises(RuntimeError, match='no Kaggle credentials'):
    builder.download_and_prepare()
  monkeypatch.setenv('KAGGLE_USERNAME', 'someone')
  monkeypatch.setenv('KAGGLE_KEY', 'not-a-key')
  monkeypatch.setenv('KAGGLE_API_ENDPOINT', 'http://127.0.0.1:9')  # Nothing listens on the discard port.
  start = time.perf_counter()
  with pytest.raises(RuntimeError, match='not reachable'):
    builder.download_and_prepare()
  assert time.perf_counter() - start < 15
