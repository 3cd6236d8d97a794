"""Prepare a config's data root with the TFDS builders, and read it back as DecodedImages whose pixels stay on disk.

`config.data.prepared_dir` is a TFDS data_dir. With `config.data.root` set the generic `lungjax_image_folder`
builder prepares that root; without it the `lungjax_covid19_image_dataset` builder prepares the Kaggle dataset
(kagglehub cache, else TFDS' Kaggle download). Reading gives the same records in the same order as decoding the
raw folders, so splits and batches are the same; the pixels are read from the array_record files per batch.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from lungjax.data import extras

extras.require_prepare_extra('prepared data (config.data.prepared_dir, lungjax prepare)')

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position

from lungjax.runtime import workdir as workdir_lib  # pylint: disable=wrong-import-position
from lungjax.data import folders, images, tfds_builders  # pylint: disable=wrong-import-position


def builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of config's data under config.data.prepared_dir: image folder if config.data.root, else Kaggle."""
  if not config.data.prepared_dir:
    raise ValueError('config.data.prepared_dir is empty: set it to the folder the prepared data goes to')
  builder_cls = tfds_builders.LungjaxImageFolder if config.data.root else tfds_builders.LungjaxCovid19ImageDataset
  builder_config = tfds_builders.prepared_config(config.data.image_size, config.data.classes,
                                                 config.data.skip_bad_images, config.data.decode_threads)
  return builder_cls(config=builder_config, data_dir=config.data.prepared_dir, file_format='array_record')


def _metadata(prepared: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """A prepared dataset's metadata.json (root, and per split: folder, skipped and ignored files)."""
  return dict(prepared.info.metadata.items())  # items() loads TFDS' lazy metadata; get() would not.


def _prepared_root(prepared: tfds.core.DatasetBuilder) -> str:
  """The folder a prepared dataset was built from, as its metadata records it."""
  return _metadata(prepared).get('root', '')


# ---- the root a prepared dataset was built from, as it was (issue 26 High 5) ----------------------------------------

LISTING = 'lungjax-root-listing.json'  # Beside the prepared files: every image file of the root, size and mtime.
_SHOWN = 5


class PreparedRootChangedError(ValueError):
  """The data root changed after it was prepared: the prepared data no longer holds its images."""


def root_listing(split_folders: dict[str, str]) -> dict[str, list[int]]:
  """{'<split>/<relative path>': [size, mtime_ns]} of every image file (folders.is_image_file; not dot-files)
  under each split's folder: what check_root compares a prepared dataset's root against."""
  listing = {}
  for split, folder in sorted(split_folders.items()):
    for parent, dirs, names in os.walk(folder):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      for name in sorted(names):
        if name.startswith('.') or not folders.is_image_file(name):
          continue
        path = os.path.join(parent, name)
        try:
          status = os.stat(path)
        except OSError:  # A dangling link, a loop: listed as unreadable (-1), as the scan skips or refuses it.
          listing[f'{split}/{os.path.relpath(path, folder)}'] = [-1, -1]
          continue
        listing[f'{split}/{os.path.relpath(path, folder)}'] = [status.st_size, status.st_mtime_ns]
  return listing


def _split_folders(prepared: tfds.core.DatasetBuilder) -> dict[str, str]:
  return {name: split['folder'] for name, split in _metadata(prepared).get('splits', {}).items()}


def _listing_path(prepared: tfds.core.DatasetBuilder) -> str:
  return os.path.join(os.fspath(prepared.data_dir), LISTING)


def write_root_listing(prepared: tfds.core.DatasetBuilder) -> str:
  """Records the prepared root's image files (root_listing of its splits' folders) beside the prepared data."""
  return workdir_lib.write_json(_listing_path(prepared), {
      'written_by': 'lungjax', 'root': _prepared_root(prepared), 'files': root_listing(_split_folders(prepared))})


def _shown(names: Sequence[str]) -> str:
  return ', '.join(names[:_SHOWN]) + (f' ... ({len(names)} in all)' if len(names) > _SHOWN else '')


def root_changes(recorded: dict[str, list[int]], current: dict[str, list[int]]) -> dict[str, list[str]]:
  """{'added', 'removed', 'changed'}: the files of current not in recorded, the reverse, and those whose size or
  modification time differ."""
  return {'added': sorted(set(current) - set(recorded)), 'removed': sorted(set(recorded) - set(current)),
          'changed': sorted(k for k in set(recorded) & set(current) if list(recorded[k]) != list(current[k]))}


def check_root(prepared: tfds.core.DatasetBuilder, what: str) -> None:
  """PreparedRootChangedError naming the files added, removed or changed in the prepared root since it was
  prepared (LISTING); a warning for data prepared by a lungjax before listings (nothing to compare with)."""
  listing = _listing_path(prepared)
  if not os.path.isfile(listing):
    logging.warning('%s: %s has no %s (prepared by an older lungjax): cannot check that the root %r still holds '
                    'the prepared images; prepare again into an empty config.data.prepared_dir to be sure', what,
                    prepared.data_dir, LISTING, _prepared_root(prepared))
    return
  recorded = workdir_lib.read_json(listing)
  changes = root_changes(recorded.get('files', {}), root_listing(_split_folders(prepared)))
  if any(changes.values()):
    parts = [f'{len(files)} {kind} ({_shown(files)})' for kind, files in changes.items() if files]
    raise PreparedRootChangedError(
        f'{what}: config.data.prepared_dir={os.fspath(prepared.data_dir)!r} was prepared from '
        f'{_prepared_root(prepared)!r} ({len(recorded.get("files", {}))} image files), which has changed since: '
        + '; '.join(parts) + '. The prepared data no longer holds the root\'s images: prepare again into an empty '
        'config.data.prepared_dir (or restore the files)')


def prepare(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Decodes config's data root once into array_record files (reuses them if already prepared, once the root's
  files are checked against the listing written when it was prepared); returns a summary."""
  prepared = builder(config)
  root = os.path.abspath(config.data.root) if config.data.root else ''
  if root and not os.path.isdir(root):
    raise FileNotFoundError(f'config.data.root={config.data.root!r} does not exist')
  reused = prepared.is_prepared()
  if reused and root and _prepared_root(prepared) != root:
    raise ValueError(f'{prepared.data_dir} was prepared from {_prepared_root(prepared)!r}, not config.data.root='
                     f'{root!r}: choose another config.data.prepared_dir')
  if reused:
    check_root(prepared, 'lungjax prepare')  # PreparedRootChangedError: images added, removed or changed since.
  start = time.perf_counter()
  if not reused:
    prepared.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root or None))
    write_root_listing(prepared)
  seconds = time.perf_counter() - start
  metadata = _metadata(prepared)
  return {
      'builder': prepared.name, 'config': prepared.builder_config.name, 'data_dir': os.fspath(prepared.data_dir),
      'root': metadata.get('root', ''), 'reused': reused, 'seconds': round(seconds, 2),
      'splits': {name: {'n_images': split.num_examples, 'n_shards': split.num_shards,
                        'n_skipped': len(metadata['splits'][name]['skipped']),
                        'n_ignored': len(metadata['splits'][name]['ignored_files'])}
                 for name, split in prepared.info.splits.items()}}


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedImages:
  """Images of a prepared split, read from disk on indexing: `images[indices_B]` is a Bx S x S x 3 uint8 array.

  Stands for `DecodedImages.images_NHWC` (len, shape, dtype, integer / array indexing, subset); np.asarray of it
  reads every image into memory.
  """

  source: Sequence[dict[str, Any]]  # A tfds data source of one split.
  rows_N: np.ndarray  # int64: the source rows this view serves, in order.
  image_size: int

  def __len__(self) -> int:
    return len(self.rows_N)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self.rows_N), self.image_size, self.image_size, 3)

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __getitem__(self, key: Any) -> np.ndarray:
    if isinstance(key, (int, np.integer)):
      return self.source[int(self.rows_N[key])]['image']
    rows = self.rows_N[key].tolist()
    if not rows:
      return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
    return np.stack([example['image'] for example in self.source.__getitems__(rows)])

  def subset(self, indices: Sequence[int]) -> PreparedImages:
    """The images at `indices`, still on disk."""
    return PreparedImages(self.source, self.rows_N[np.asarray(indices, np.int64)], self.image_size)

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    del copy
    everything = self[np.arange(len(self))]
    return everything if dtype is None else everything.astype(dtype)


def read_split(config: ml_collections.ConfigDict,
               split: str) -> tuple[str, images.DecodedImages, tuple[str, ...]] | None:
  """Reads a prepared split's index: (source folder, DecodedImages with PreparedImages pixels, ignored files).

  Returns None when the split was not prepared (e.g. no test/). The pixels are not read: labels, paths, pixel
  hashes and thumbnails come from the split's index file (tfds_builders.IndexedMetadata).
  """
  prepared = builder(config)
  if not prepared.is_prepared():
    raise FileNotFoundError(
        f'no prepared data at {prepared.data_dir} (builder {prepared.name}, for config.data.image_size='
        f'{config.data.image_size}, classes and skip_bad_images as configured): run python -m lungjax.tools.prepare '
        f'--config=... with the same config.data fields and --config.data.prepared_dir={config.data.prepared_dir}')
  if split not in prepared.info.splits:
    return None
  root = os.path.abspath(config.data.root) if config.data.root else ''
  if root and _prepared_root(prepared) != root:
    logging.warning('%s was prepared from %r, config.data.root is %r: reading the prepared data', prepared.data_dir,
                    _prepared_root(prepared), root)
  check_root(prepared, f'the prepared {split} split')  # Training on deleted or changed files: refused.
  source = tfds.data_source(prepared.name, split=split, data_dir=config.data.prepared_dir, download=False,
                            builder_kwargs={'config': prepared.builder_config})
  index_path = os.path.join(os.fspath(prepared.data_dir), tfds_builders.index_file_name(split))
  with np.load(index_path) as index:
    labels_N, thumbnails_ND = index['labels'], index['thumbnails'].astype(np.float32)
    paths, hashes = tuple(index['paths'].tolist()), tuple(index['pixel_hashes'].tolist())
  if not len(labels_N) == len(paths) == len(hashes) == len(thumbnails_ND) == len(source):
    raise ValueError(f'{index_path} lists {len(labels_N)} images, the {split} split holds {len(source)}: prepare '
                     f'again into an empty config.data.prepared_dir')
  info = _metadata(prepared)['splits'][split]
  decoded = images.DecodedImages(
      images_NHWC=PreparedImages(source, np.arange(len(source), dtype=np.int64), config.data.image_size),
      labels_N=labels_N, paths=paths, pixel_hashes=hashes, thumbnails_ND=thumbnails_ND,
      skipped=tuple((path, reason) for path, reason in info['skipped']))
  return info['folder'], decoded, tuple(info['ignored_files'])
