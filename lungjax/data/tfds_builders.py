"""TFDS builders that decode image folders once into array_record files: any image-folder root, or the Kaggle set.

Each example holds the image decoded by `images.load_image` (RGB uint8 at the config's size) and what the grouped
split needs without the pixels: the label, the file's path, the sha256 of its full-size decoded pixels and its grey
thumbnail. Examples keep the scan order of `folders.scan_split` and are written shard by shard
(`tfds.core.ShardBasedBuilder`), so preparing holds one shard in memory whatever the number of images. Files that
were skipped (`skip_bad_images`) or are not images are listed in the dataset's metadata.json.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from lungjax.data import extras

extras.require_prepare_extra('the TFDS builders (lungjax prepare)')

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position

from lungjax.data import download, folders, images  # pylint: disable=wrong-import-position

VERSION = tfds.core.Version('1.0.0')
KAGGLE_DATASET = 'pranavraikokte/covid19-image-dataset'
# The pixels of one shard stay in memory while it is written: shards hold about this many bytes of images.
SHARD_BYTES = 64 << 20
MANUAL_INSTRUCTIONS = (
    'Unzip the Kaggle "Covid-19 Image Dataset" (https://www.kaggle.com/datasets/{dataset}, or '
    '`kaggle datasets download -d {dataset}`) and pass the folder that holds train/ (and test/) as the manual_dir '
    '(with lungjax: `python -m lungjax.tools.prepare --config=configs/cnn.py --config.data.root=FOLDER '
    '--config.data.prepared_dir=DIR`).').format(dataset=KAGGLE_DATASET)


@dataclasses.dataclass(eq=False)
class PreparedConfig(tfds.core.BuilderConfig):
  """What a prepared dataset depends on: the image size, the class order and whether bad files are skipped."""

  image_size: int = 256
  classes: tuple[str, ...] = ()
  skip_bad_images: bool = False
  decode_threads: int = 0  # 0: one per CPU core. Does not change the data.


def prepared_config(image_size: int, classes: Sequence[str], skip_bad_images: bool,
                    decode_threads: int = 0) -> PreparedConfig:
  """Returns the builder config; its name encodes every field that changes the examples."""
  classes = tuple(classes)
  digest = hashlib.sha256(json.dumps([classes, bool(skip_bad_images)]).encode()).hexdigest()[:8]
  name = f'{image_size}px{"_skipbad" if skip_bad_images else ""}_{digest}'
  return PreparedConfig(name=name, version=VERSION, image_size=image_size, classes=classes,
                        skip_bad_images=bool(skip_bad_images), decode_threads=decode_threads,
                        description=f'{image_size}x{image_size} RGB uint8, classes {list(classes)}, '
                        f'skip_bad_images={bool(skip_bad_images)}')


def features(image_size: int, classes: Sequence[str]) -> tfds.features.FeaturesDict:
  """The features of one example; pixels and thumbnails are stored as raw bytes (uint8, not upcast)."""
  raw = tfds.features.Encoding.BYTES
  return tfds.features.FeaturesDict({
      'image': tfds.features.Tensor(shape=(image_size, image_size, 3), dtype=np.uint8, encoding=raw),
      'label': tfds.features.ClassLabel(names=list(classes)),
      'path': tfds.features.Text(),
      'pixel_hash': tfds.features.Text(),  # sha256 of the full-size decoded pixels: equal for exact copies.
      # images.grey_thumbnail is integer-valued in [0, 255]: uint8 holds it exactly.
      'thumbnail': tfds.features.Tensor(shape=(images.THUMBNAIL_SIZE**2,), dtype=np.uint8, encoding=raw),
  })


class IndexedMetadata(tfds.core.MetadataDict):
  """The dataset's metadata.json, plus index-<split>.npz per split: what splits need, without the pixels.

  Each index holds, in example order, `labels` (int32), `paths` and `pixel_hashes` (str) and `thumbnails`
  (uint8, images.THUMBNAIL_SIZE^2 per image); the examples hold the same values.
  """

  def __init__(self):
    super().__init__()
    self.columns: dict[str, dict[str, list]] = {}

  def add(self, split: str, record: folders.Record, loaded: images.LoadedImage) -> None:
    """Appends one written example to its split's index."""
    columns = self.columns.setdefault(split, {'labels': [], 'paths': [], 'pixel_hashes': [], 'thumbnails': []})
    columns['labels'].append(record.label)
    columns['paths'].append(record.path)
    columns['pixel_hashes'].append(loaded.pixel_hash)
    columns['thumbnails'].append(loaded.thumbnail.astype(np.uint8))

  def save_metadata(self, data_dir) -> None:
    super().save_metadata(data_dir)
    for split, columns in self.columns.items():
      buffer = io.BytesIO()
      np.savez(buffer, labels=np.asarray(columns['labels'], np.int32), paths=np.asarray(columns['paths'], str),
               pixel_hashes=np.asarray(columns['pixel_hashes'], str),
               thumbnails=np.asarray(columns['thumbnails'], np.uint8).reshape(-1, images.THUMBNAIL_SIZE**2))
      from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
      workdir_lib.write_bytes(os.path.join(os.fspath(data_dir), index_file_name(split)), buffer.getvalue())


def index_file_name(split: str) -> str:
  """The file, in the dataset's folder, that holds a split's index (see IndexedMetadata)."""
  return f'index-{split}.npz'


def load_in_order(records: Sequence[folders.Record], size: int, *, skip_bad_images: bool, threads: int,
                  skipped: list[list[str]]) -> Iterator[tuple[folders.Record, images.LoadedImage]]:
  """Decodes records with `images.load_image` on a thread pool, a bounded window ahead, and yields them in order.

  A bad file raises images.BadImageError (naming it), or with skip_bad_images is appended to `skipped`.
  """
  threads = threads or os.cpu_count() or 1

  def load(path: str) -> images.LoadedImage | images.BadImageError:
    try:
      return images.load_image(path, size)
    except images.BadImageError as error:
      return error

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    pending = collections.deque()
    queue = iter(records)
    while True:
      while len(pending) < 4 * threads and (record := next(queue, None)) is not None:
        pending.append((record, pool.submit(load, record.path)))
      if not pending:
        return
      record, future = pending.popleft()
      loaded = future.result()
      if isinstance(loaded, images.BadImageError):
        if not skip_bad_images:
          for _, other in pending:
            other.cancel()
          raise images.BadImageError(loaded.path, loaded.reason + ' (set config.data.skip_bad_images=True to skip it)')
        skipped.append([loaded.path, loaded.reason])
        continue
      yield record, loaded


def _example(record: folders.Record, loaded: images.LoadedImage) -> dict[str, Any]:
  """The feature dict of one decoded file."""
  return {'image': loaded.pixels_HWC, 'label': record.label, 'path': record.path, 'pixel_hash': loaded.pixel_hash,
          'thumbnail': loaded.thumbnail.astype(np.uint8)}


class _ImageFolderBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
  """Shared by both builders: split folders of class sub-folders, decoded once, shard by shard, in scan order."""

  # No BUILDER_CONFIGS: every config is made by prepared_config (TFDS refuses a custom config named like a listed one).
  VERSION = VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if config is None:
      raise ValueError(f'{self.name} needs config=lungjax.data.tfds_builders.prepared_config(size, classes, skip)')
    if not config.classes:
      raise ValueError(f'{self.name}: the builder config lists no classes')
    return self.dataset_info_from_configs(
        features=features(config.image_size, config.classes),
        description=f'Image folders decoded once by lungjax: {config.description}.',
        metadata=IndexedMetadata(),
    )

  def _split_folders(self, dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    """Returns {split name: folder of class sub-folders}."""
    raise NotImplementedError

  def _shard_iterators_per_split(
      self, dl_manager: tfds.download.DownloadManager) -> dict[str, list[Callable[[], Iterator[tuple[int, dict]]]]]:
    config = self.builder_config
    split_folders = self._split_folders(dl_manager)
    self.info.metadata['splits'] = {}
    per_shard = max(1, SHARD_BYTES // (3 * config.image_size**2))
    generators = {}
    for split, folder in split_folders.items():
      scan = folders.scan_split(folder, config.classes, require_all_classes=split == 'train',
                                skip_unreadable=config.skip_bad_images)
      skipped: list[list[str]] = [list(item) for item in scan.unreadable]
      self.info.metadata['splits'][split] = {
          'folder': folder, 'n_files': len(scan.records), 'ignored_files': list(scan.ignored_files),
          'skipped': skipped}  # Filled while the shards are written; saved after them.

      def shard(start: int, records=scan.records, skipped=skipped, split_name=split) -> Iterator[tuple[int, dict]]:
        chunk = records[start:start + per_shard]
        for offset, (record, loaded) in enumerate(load_in_order(
            chunk, config.image_size, skip_bad_images=config.skip_bad_images, threads=config.decode_threads,
            skipped=skipped)):
          self.info.metadata.add(split_name, record, loaded)
          yield start + offset, _example(record, loaded)

      generators[split] = [lambda start=start, shard=shard: shard(start)
                           for start in range(0, len(scan.records), per_shard)]
    return generators


class LungjaxImageFolder(_ImageFolderBuilder):
  """Any image-folder root (the manual_dir): root/train/<class>/ (and root/test/<class>/), or root/<class>/ as train."""

  def _split_folders(self, dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    root = os.fspath(dl_manager.manual_dir)
    self.info.metadata['root'] = root
    if not os.path.isdir(os.path.join(root, 'train')):
      return {'train': root}
    test = os.path.join(root, 'test')
    return {'train': os.path.join(root, 'train'), **({'test': test} if os.path.isdir(test) else {})}


def kaggle_download_problem(kaggle_url: str = 'https://www.kaggle.com') -> str | None:
  """Why TFDS' Kaggle download (the `kaggle` CLI) cannot run here, or None; checks take seconds, never hang."""
  if shutil.which('kaggle') is None:
    return 'the `kaggle` command that TFDS downloads with is not installed (pip install kaggle)'
  config_dir = os.environ.get('KAGGLE_CONFIG_DIR', os.path.join(os.path.expanduser('~'), '.kaggle'))
  has_env = os.environ.get('KAGGLE_USERNAME') and os.environ.get('KAGGLE_KEY')
  if not has_env and not os.path.isfile(os.path.join(config_dir, 'kaggle.json')):
    return (f'no Kaggle credentials (KAGGLE_USERNAME and KAGGLE_KEY, or {os.path.join(config_dir, "kaggle.json")}; '
            'see https://github.com/Kaggle/kaggle-api#api-credentials)')
  if not download.can_reach(kaggle_url):
    return f'{kaggle_url} is not reachable (offline?)'
  return None


class LungjaxCovid19ImageDataset(_ImageFolderBuilder):
  """The Kaggle Covid-19 Image Dataset: from the manual_dir, else the kagglehub cache, else TFDS' Kaggle download."""

  def _split_folders(self, dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    manual = dl_manager._manual_dir  # pylint: disable=protected-access  # Optional here: .manual_dir raises.
    if manual and os.path.isdir(manual) and os.listdir(manual):
      found = download._find_split_root(os.fspath(manual))  # pylint: disable=protected-access
      if not found:
        raise FileNotFoundError(f'manual_dir {os.fspath(manual)!r} holds no train/ folder. {MANUAL_INSTRUCTIONS}')
    else:
      found = download.kagglehub_cached_copy(KAGGLE_DATASET)
    if not found:
      problem = kaggle_download_problem(os.environ.get('KAGGLE_API_ENDPOINT', 'https://www.kaggle.com'))
      if problem:
        raise RuntimeError(f'cannot download {KAGGLE_DATASET} with TFDS: {problem}. {MANUAL_INSTRUCTIONS}')
      downloaded = os.fspath(dl_manager.download_kaggle_data(KAGGLE_DATASET))
      found = download._find_split_root(downloaded)  # pylint: disable=protected-access
      if not found:
        raise RuntimeError(f'no train/ folder inside the Kaggle download {downloaded!r}')
    self.info.metadata['root'] = found
    test = os.path.join(found, 'test')
    return {'train': os.path.join(found, 'train'), **({'test': test} if os.path.isdir(test) else {})}
