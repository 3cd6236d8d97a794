"""From a config to decoded image sets: resolve the root, scan, decode once, split train / validation."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from lungjax.data import (download, duplicates, folders, images, metadata as metadata_lib, preprocess,
                          sources as sources_lib, splits)
from lungjax.data.extras import PREPARE_EXTRA_MODULES, require_prepare_extra  # pylint: disable=unused-import  (callers' name)


@dataclasses.dataclass(frozen=True)
class FolderImages:
  """A decoded folder and the files in it that were not read (not images, or undecodable)."""

  folder: str
  decoded: images.DecodedImages
  ignored_files: tuple[str, ...]

  def skipped_report(self) -> list[tuple[str, str]]:
    """Returns (path, reason) for every file of the folder that did not become an example."""
    return [(p, 'not a .jpg/.jpeg/.png file') for p in self.ignored_files] + list(self.decoded.skipped)


def load_folder(folder: str, config: ml_collections.ConfigDict, *, require_all_classes: bool,
                folder_names: dict[str, str] | None = None) -> FolderImages:
  """Scans and decodes one folder of class sub-folders (folder_names maps other names to classes)."""
  scan = folders.scan_split(folder, config.data.classes, require_all_classes=require_all_classes,
                            folder_names=folder_names, skip_unreadable=config.data.skip_bad_images)
  decoded = images.decode_records(scan.records, config.data.image_size,
                                  skip_bad_images=config.data.skip_bad_images, threads=config.data.decode_threads,
                                  preprocess=preprocess.settings_of(config))
  if scan.unreadable:  # Dangling links, link loops, unreadable files and folders: skipped and counted like bad images.
    decoded = dataclasses.replace(decoded, skipped=scan.unreadable + decoded.skipped)
  return _logged(FolderImages(folder, decoded, scan.ignored_files), config)


def load_prepared_folder(config: ml_collections.ConfigDict, split: str) -> FolderImages | None:
  """Reads a split of config.data.prepared_dir (pixels stay on disk); None if that split was not prepared."""
  from lungjax.data import prepared  # pylint: disable=g-import-not-at-top  # TFDS only where a prepared dir is read.
  found = prepared.read_split(config, split)
  return None if found is None else _logged(FolderImages(*found), config)


def _logged(loaded: FolderImages, config: ml_collections.ConfigDict) -> FolderImages:
  """Logs a loaded folder's class counts and skipped files; returns it."""
  decoded, folder = loaded.decoded, loaded.folder
  counts = np.bincount(decoded.labels_N, minlength=len(config.data.classes))
  logging.info('%s: %d images (%s)', folder, len(decoded),
               ', '.join(f'{c} {n}' for c, n in zip(config.data.classes, counts)))
  for path, reason in loaded.skipped_report():
    logging.warning('skipped %s: %s', path, reason)
  if loaded.skipped_report():
    logging.warning('%s: %d files skipped (listed above and in the report)', folder, len(loaded.skipped_report()))
  return loaded


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """The decoded training folder split into train and validation parts."""

  root: str
  train_folder: FolderImages
  train: images.DecodedImages
  val: images.DecodedImages
  grouping: Grouping | None = None  # What the split kept together (copies, and a metadata column's groups).

  @property
  def test_dir(self) -> str | None:
    """The root's test/ folder, if it has one."""
    path = os.path.join(self.root, 'test')
    return path if os.path.isdir(path) else None

  def load_test(self, config: ml_collections.ConfigDict) -> FolderImages | None:
    """The test split: prepared (config.data.prepared_dir) or decoded from root/test/; None without one."""
    if config.data.prepared_dir:
      return load_prepared_folder(config, 'test')
    return load_folder(self.test_dir, config, require_all_classes=False) if self.test_dir else None


@contextlib.contextmanager
def naming_field(field: str) -> Iterator[None]:
  """A ValueError / FileNotFoundError a folder's decoding raises (a class folder missing or empty, no images) gets
  the config field that named the folder in front ('config.data.root=...: class folder missing: ...'): it is a
  problem of the data, found only when the folder is read, but the user fixes it in that field."""
  try:
    yield
  except (ValueError, FileNotFoundError) as error:
    if type(error) not in (ValueError, FileNotFoundError) or str(error).startswith('config.'):
      raise  # Its own kind (UnreadableError, ...) or already naming a field.
    raise type(error)(f'{field}: {error}') from error


def load_training_folder(config: ml_collections.ConfigDict) -> tuple[str, FolderImages]:
  """Resolves the data root and decodes its train/ folder once (or reads config.data.prepared_dir's train split),
  then every extra source (config.data.extra_root, config.data.extra_sources; data/sources.py): the images come back
  in that order, each with its source (decoded.sources_N, decoded.source_names). The main source must keep an
  image of every class; an extra source may hold some of them only."""
  extras = sources_lib.extra_sources(config)  # Validated first: names the field of a bad entry before decoding.
  if config.data.prepared_dir:
    loaded = load_prepared_folder(config, 'train')
    root = os.path.dirname(loaded.folder)
  else:
    root = download.resolve_data_root(config.data.root, config.data.kaggle_dataset)
    with naming_field(f'config.data.root={root!r}'):
      loaded = load_folder(os.path.join(root, 'train'), config, require_all_classes=True)
  missing = [c for i, c in enumerate(config.data.classes) if not np.any(loaded.decoded.labels_N == i)]
  if missing:
    raise ValueError(f'config.data.root={root!r}: no decodable training images left in {loaded.folder!r} for '
                     f'classes {missing} of config.data.classes')
  parts = [loaded]
  for source in extras:
    try:
      parts.append(load_folder(source.folder, config, require_all_classes=False, folder_names=source.mapping))
    except ValueError as error:
      raise ValueError(f'{source.field} (source {source.name!r}): {error}') from error
  names = [sources_lib.main_source_name(config)] + [source.name for source in extras]
  decoded = sources_lib.concatenate([part.decoded for part in parts], names)
  if extras:
    for name, part in zip(names, parts):
      counts = np.bincount(part.decoded.labels_N, minlength=len(config.data.classes))
      logging.info('source %s (%s): %d images (%s)', name, part.folder, len(part.decoded),
                   ', '.join(f'{c} {n}' for c, n in zip(config.data.classes, counts)))
  return root, FolderImages(loaded.folder, decoded, sum((part.ignored_files for part in parts), ()))


def shared_images(hashes_per_folder: Sequence[Sequence[str]]) -> int:
  """How many images of the folders (each given by its images' pixel hashes) have identical pixels in another of
  them: every such image counts, in each folder that holds it."""
  folders_of: dict[str, set[int]] = {}
  for index, hashes in enumerate(hashes_per_folder):
    for pixel_hash in hashes:
      folders_of.setdefault(pixel_hash, set()).add(index)
  return sum(len(folders_of[h]) > 1 for hashes in hashes_per_folder for h in hashes)


# config.eval.dir value that means "the validation split of config.data.root/train" (as training made it).
VALIDATION = '@validation'


def eval_folders(text: str) -> list[str]:
  """The folders of config.eval.dir ('A' or 'A,B'), listed, not decoded: config_check's hook.

  FileNotFoundError for one that is not a folder; ValueError for none, or for two with the same basename (each
  folder is a source named by its basename; for one folder whose own path holds a comma, which cannot be told from
  two: rename it, or link it under a name without one)."""
  if ',' in text and os.path.isdir(text.strip()):
    raise ValueError(f'config.eval.dir={text!r} is one folder whose path holds a comma, but commas separate folders '
                     'in config.eval.dir: rename it, or pass a link to it whose path has no comma')
  paths = [p.strip() for p in text.split(',') if p.strip()]
  if not paths:
    raise ValueError(f'config.eval.dir={text!r} names no folder')
  for path in paths:
    if not os.path.isdir(path):
      raise FileNotFoundError(f'config.eval.dir={text!r}: {path!r} is not a folder')
  names = [os.path.basename(os.path.normpath(p)) for p in paths]
  if len(set(names)) != len(names):
    raise ValueError(f'config.eval.dir={text!r}: each folder is a source named by its basename, and {names} repeat one')
  return paths


def load_folders(text: str, config: ml_collections.ConfigDict,
                 folder_names: dict[str, str] | None = None) -> FolderImages:
  """Decodes config.eval.dir: one folder, or several comma-separated ('A,B'), each its own source named by its
  basename (eval_folders' errors); `folder_names` applies to every folder."""
  paths = eval_folders(text)
  with naming_field(f'config.eval.dir={text!r}'):
    parts = [load_folder(p, config, require_all_classes=False, folder_names=folder_names) for p in paths]
  if len(paths) == 1:
    return parts[0]
  names = [os.path.basename(os.path.normpath(p)) for p in paths]
  shared = shared_images([part.decoded.pixel_hashes for part in parts])
  if shared:
    logging.warning('config.eval.dir=%r: %d images (identical pixels) are in more than one of its folders; pooled, '
                    'each counts once per folder it is in', text, shared)
  decoded = sources_lib.concatenate([part.decoded for part in parts], names)
  return FolderImages(','.join(paths), decoded, sum((part.ignored_files for part in parts), ()))


# The training folder's file names, pixel hashes and thumbnails, kept in the workdir at training time.
TRAINING_THUMBNAILS = 'training_thumbnails.npz'


@dataclasses.dataclass(frozen=True)
class TrainingThumbnails:
  """What copies_of_training_images needs of a training folder, without its pixels: kept in the workdir."""

  folder: str  # The training folder, as the run read it.
  relative_paths: tuple[str, ...]  # Each image's path under `folder` (as read where it is not under it).
  pixel_hashes: tuple[str, ...]
  thumbnails_ND: np.ndarray  # float32, as images.grey_thumbnail makes them.

  @property
  def paths(self) -> tuple[str, ...]:
    """The images' paths as the run read them."""
    return tuple(os.path.join(self.folder, p) for p in self.relative_paths)

  @classmethod
  def of(cls, loaded: FolderImages) -> TrainingThumbnails:
    """The thumbnails of a decoded (or prepared) training folder."""
    under = [os.path.relpath(p, loaded.folder) for p in loaded.decoded.paths]
    relative = tuple(p if r.startswith(os.pardir) else r for p, r in zip(loaded.decoded.paths, under))
    return cls(loaded.folder, relative, loaded.decoded.pixel_hashes,
               np.asarray(loaded.decoded.thumbnails_ND, np.float32))


def training_thumbnails_path(workdir: str) -> str:
  """Where training keeps its training folder's thumbnails."""
  return os.path.join(workdir, TRAINING_THUMBNAILS)


def save_training_thumbnails(thumbnails: TrainingThumbnails, path: str) -> None:
  """Writes thumbnails to path (.npz; grey values as uint8 when they are whole numbers, as decoding makes them)."""
  thumbnails_ND = thumbnails.thumbnails_ND
  whole = bool(np.all((thumbnails_ND >= 0) & (thumbnails_ND <= 255) & (thumbnails_ND == np.round(thumbnails_ND))))
  buffer = io.BytesIO()
  np.savez_compressed(buffer, folder=np.asarray(thumbnails.folder),
                      relative_paths=np.asarray(thumbnails.relative_paths, dtype=str).reshape(-1),
                      pixel_hashes=np.asarray(thumbnails.pixel_hashes, dtype=str).reshape(-1),
                      thumbnails_ND=thumbnails_ND.astype(np.uint8) if whole else thumbnails_ND)
  from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir_lib.write_bytes(path, buffer.getvalue())


def write_run_files(config: ml_collections.ConfigDict, workdir: str, data: TrainingData) -> None:
  """config.json (what eval, explain and predict rebuild the model from) and the training images' thumbnails (what
  eval looks for copies of training images in), in a training run's workdir; process 0 only."""
  from lungjax.runtime import distributed, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if distributed.is_main_process():
    workdir_lib.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
    save_training_thumbnails(TrainingThumbnails.of(data.train_folder), training_thumbnails_path(workdir))


def load_training_thumbnails(path: str) -> TrainingThumbnails:
  """Reads save_training_thumbnails' file; ValueError names it when its arrays disagree."""
  with np.load(path, allow_pickle=False) as stored:
    found = TrainingThumbnails(str(stored['folder']), tuple(stored['relative_paths'].tolist()),
                               tuple(stored['pixel_hashes'].tolist()), stored['thumbnails_ND'].astype(np.float32))
  if not len(found.relative_paths) == len(found.pixel_hashes) == len(found.thumbnails_ND):
    raise ValueError(f'{path}: {len(found.relative_paths)} paths, {len(found.pixel_hashes)} pixel hashes and '
                     f'{len(found.thumbnails_ND)} thumbnails: the file is damaged')
  return found


def copies_of_training_images(evaluated: images.DecodedImages, training: images.DecodedImages | TrainingThumbnails,
                              threshold: float) -> list[dict[str, object]]:
  """Lists the evaluated images that are exact or near copies of a training image (the audit's test, across sets).

  `training`: the decoded training images, or the TrainingThumbnails a run kept in its workdir.
  """
  n, training_paths = len(evaluated), training.paths
  pairs = duplicates.find_copy_pairs(evaluated.pixel_hashes + training.pixel_hashes,
                                     np.concatenate([evaluated.thumbnails_ND, training.thumbnails_ND]), threshold)
  return [{'file': evaluated.paths[p.a], 'training_file': training_paths[p.b - n], 'kind': p.kind,
           'score': round(p.score, 4)} for p in pairs if p.a < n <= p.b]


def split_groups(decoded: images.DecodedImages, config: ml_collections.ConfigDict, main_folder: str = '') -> np.ndarray:
  """The group of each image that splits keep on one side (grouping(...).groups_N)."""
  return grouping(decoded, config, main_folder).groups_N


@dataclasses.dataclass(frozen=True)
class Grouping:
  """What splits keep on one side: copy groups merged with a metadata column's groups (config.data.group_by)."""

  groups_N: np.ndarray  # int64 group id per image (the smallest index of its group).
  keys_N: tuple[Any, ...]  # (source, value) of the grouping column per image; None without a value or table.
  paths: tuple[str, ...]
  description: str  # 'copies' or 'copies and patientid' (the column names, in source order).
  sources: dict[str, dict[str, Any]]  # {source: its table, column, films with and without a value, join summary}.

  def record(self) -> dict[str, Any]:
    """The grouping as the run records it (model card, summary): no per-image lists beyond unmatched files."""
    return {'grouped_by': self.description, 'n_groups': int(len(np.unique(self.groups_N))),
            'n_images': len(self.groups_N), 'sources': self.sources}


def _copy_groups(decoded: images.DecodedImages, config: ml_collections.ConfigDict) -> np.ndarray:
  """Exact copies and near copies (thumbnail r at or above config.data.near_copy_threshold, as
  `python -m lungjax.tools.audit` finds them) share a group. Every source is compared with every other, so a copy found
  in two sources lands on one side too."""
  pairs = duplicates.find_copy_pairs(decoded.pixel_hashes, decoded.thumbnails_ND, config.data.near_copy_threshold)
  for pair in pairs:
    logging.info('%s copy (r %.3f) kept on one side of every split: %s ~ %s', pair.kind, pair.score,
                 decoded.paths[pair.a], decoded.paths[pair.b])
  return duplicates.copy_groups(len(decoded), pairs)


def training_sources(config: ml_collections.ConfigDict, main_folder: str) -> list[sources_lib.Source]:
  """The main source (its folder `main_folder`) and every extra source, in the order decoded images hold them."""
  return [sources_lib.main_source(config, main_folder)] + sources_lib.extra_sources(config)


def grouping(decoded: images.DecodedImages, config: ml_collections.ConfigDict, main_folder: str = '') -> Grouping:
  """The copy groups, merged (union-find) with the groups of each source's grouping column where its metadata
  table names one (config.data.group_by, or the source's own): films of one patient land on one side of every split
  and fold, and a copy of patient A's film joins A's group. Films without a value stay their own group (logged)."""
  groups_N = _copy_groups(decoded, config)
  sources_N, names = sources_lib.source_indices(decoded)
  keys_N: list[Any] = [None] * len(decoded)
  described, columns = {}, []
  for s, source in enumerate(training_sources(config, main_folder)[:len(names)]):
    column = sources_lib.grouping_column(source, config)
    if not column:
      continue
    rows = np.flatnonzero(sources_N == s)
    table = metadata_lib.read_table(source.metadata, sources_lib.file_column(source, config),
                                    f'{source.field} (source {source.name!r}) metadata')
    if column not in table.columns:
      raise ValueError(f'{source.field} (source {source.name!r}): group_by={column!r} is not a column of '
                       f'{source.metadata!r} (columns: {list(table.columns)})')
    joined = metadata_lib.join(table, [decoded.paths[i] for i in rows], source.folder or main_folder,
                               f'{source.field} metadata')
    keys, without = metadata_lib.group_keys(joined, column, source.name)
    for i, key in zip(rows.tolist(), keys):
      keys_N[i] = key
    summary = joined.summary()
    logging.info('source %s: grouped by %s from %s: %d of %d films have a value (%d groups); %d without a value '
                 'stay their own group; %d table rows name no image here', source.name, column, source.metadata,
                 len(rows) - without, len(rows), len({k for k in keys if k is not None}), without,
                 summary['n_unmatched_rows'])
    for path in summary['unmatched_images']:
      logging.warning('source %s: no row of %s names %s: its own group', source.name, source.metadata, path)
    described[source.name] = {'column': column, 'n_images': len(rows), 'n_with_value': len(rows) - without,
                              'n_without_value': without, 'n_values': len({k for k in keys if k is not None}),
                              'join': summary}
    if column not in columns:
      columns.append(column)
  if columns:
    merged_N = metadata_lib.merge_groups(groups_N, keys_N)
    logging.info('%d copy groups and the %s groups merged into %d groups of %d images', len(np.unique(groups_N)),
                 ', '.join(columns), len(np.unique(merged_N)), len(decoded))
    groups_N = merged_N
  return Grouping(groups_N, tuple(keys_N), tuple(decoded.paths), ' and '.join(['copies', *columns]), described)


def split_strata(decoded: images.DecodedImages) -> np.ndarray:
  """What splits and folds stratify by: the class, and with several sources the class and the source."""
  sources_N, names = sources_lib.source_indices(decoded)
  return sources_lib.strata(decoded.labels_N, sources_N, len(names))


def load_training_data(config: ml_collections.ConfigDict) -> TrainingData:
  """Decodes train/ (and every extra source) once and splits off a grouped validation part, stratified by class
  and source."""
  root, loaded = load_training_folder(config)
  decoded = loaded.decoded
  grouped = grouping(decoded, config, loaded.folder)
  train_indices, val_indices = splits.grouped_stratified_split(
      split_strata(decoded), grouped.groups_N, config.data.val_fraction, config.data.split_seed)
  logging.info('split %d images: %d train, %d validation (split seed %d, grouped by %s: kept on one side)',
               len(decoded), len(train_indices), len(val_indices), config.data.split_seed, grouped.description)
  if config.data.val_fraction > 0 and not len(val_indices):
    raise ValueError(f'config.data.val_fraction={config.data.val_fraction} left no validation image: the copy groups '
                     f'(config.data.near_copy_threshold={config.data.near_copy_threshold}) are too large to split; '
                     'raise the threshold or the fraction, or set the fraction to 0')
  return TrainingData(root, loaded, decoded.subset(train_indices), decoded.subset(val_indices), grouped)
