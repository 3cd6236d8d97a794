"""Labelled training sources: the main data root's train/ plus extra folders of class sub-folders.

A config names its sources with these config.data fields (configs/cnn.py documents them):
- `root` (its train/ folder) is the main source, named `source_name` or, if that is empty, the root folder's
  basename (the Kaggle dataset's name when the root is downloaded). It must hold every class.
- `extra_root`, `extra_class_names` ('FOLDER=Class,...', as config.eval.class_names reads it) and `extra_source_name`
  (default: the folder's basename) add one extra source: a folder of class sub-folders, without a train/ level.
- `extra_sources`, a tuple of 'NAME=DIR' or 'NAME=DIR;FOLDER=Class,FOLDER=Class' strings, adds any number more.
An extra source may hold only some of the classes. Source names must differ (they key per-source metrics).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from lungjax.data import folders, images


@dataclasses.dataclass(frozen=True)
class Source:
  """One labelled folder of class sub-folders and how its folder names map onto config.data.classes."""

  name: str
  folder: str  # Its folder of class sub-folders (the main root's train/).
  folder_names: tuple[tuple[str, str], ...] = ()  # (folder name, class) pairs; other folders must be named as classes.
  field: str = 'config.data.root'  # The config field it comes from: errors name it.

  @property
  def mapping(self) -> dict[str, str]:
    """{folder name: class name} for folders named otherwise than their class."""
    return dict(self.folder_names)


def _data(config: ml_collections.ConfigDict, key: str, default):
  """config.data.<key>, or `default` for configs saved before the field existed."""
  return config.data.get(key, default)


def main_source_name(config: ml_collections.ConfigDict) -> str:
  """config.data.source_name, else the basename of config.data.root, else the Kaggle dataset's name."""
  name = _data(config, 'source_name', '')
  if name:
    return name
  if config.data.root:
    return os.path.basename(os.path.normpath(config.data.root))
  return config.data.kaggle_dataset.rstrip('/').split('/')[-1]


def _parse_mapping(text: str, classes: Sequence[str], field: str) -> tuple[tuple[str, str], ...]:
  """A 'FOLDER=Class,...' mapping as (folder, class) pairs; ValueError names `field`."""
  return tuple(folders.parse_folder_names(text, classes, field).items())


def extra_sources(config: ml_collections.ConfigDict) -> list[Source]:
  """The extra sources a config lists (config.data.extra_root and config.data.extra_sources), validated.

  Raises ValueError naming the field for a malformed entry, a mapping onto unknown classes, a class mapping or
  name without config.data.extra_root, an empty or repeated source name, or a folder that does not exist.
  """
  classes = tuple(config.data.classes)
  found = []
  extra_root = _data(config, 'extra_root', '')
  extra_names, extra_name = _data(config, 'extra_class_names', ''), _data(config, 'extra_source_name', '')
  if extra_root:
    name = extra_name or os.path.basename(os.path.normpath(extra_root))
    found.append(Source(name, extra_root, _parse_mapping(extra_names, classes, 'config.data.extra_class_names'),
                        'config.data.extra_root'))
  elif extra_names or extra_name:
    raise ValueError(f'config.data.extra_class_names={extra_names!r} / config.data.extra_source_name={extra_name!r} '
                     'given without config.data.extra_root: set the extra folder too')
  listed = _data(config, 'extra_sources', ())
  if isinstance(listed, str):
    raise ValueError(f'config.data.extra_sources={listed!r} must be a tuple of \'NAME=DIR[;FOLDER=Class,...]\' '
                     'strings, e.g. "(\'adult=/data/adult;COVID=Covid\',)"')
  for i, entry in enumerate(listed):
    field = f'config.data.extra_sources[{i}]'
    head, _, mapping = str(entry).partition(';')
    name, sep, folder = (x.strip() for x in head.partition('='))
    if not sep or not name or not folder:
      raise ValueError(f'{field}={entry!r} must read NAME=DIR or NAME=DIR;FOLDER=Class,FOLDER=Class')
    found.append(Source(name, folder, _parse_mapping(mapping, classes, field), field))
  names = [main_source_name(config)]
  for source in found:
    if not source.name or source.name in names:
      raise ValueError(f'{source.field}: source name {source.name!r} is empty or already used by another source '
                       f'({names}); name it (config.data.extra_source_name, config.data.source_name, or NAME= in '
                       'config.data.extra_sources)')
    names.append(source.name)
    if not os.path.isdir(source.folder):
      raise FileNotFoundError(f'{source.field}: folder {source.folder!r} does not exist')
  if found and config.data.prepared_dir:
    raise ValueError(f'config.data.prepared_dir={config.data.prepared_dir!r} holds one data root only: it cannot '
                     f'serve the extra training sources {[s.name for s in found]} (config.data.extra_root / '
                     'extra_sources); set config.data.prepared_dir=\'\' to decode every source')
  return found


def concatenate(parts: Sequence[images.DecodedImages], names: Sequence[str]) -> images.DecodedImages:
  """Joins each source's decoded images in order; every image carries its source's index into `names`."""
  if len(parts) == 1:
    return dataclasses.replace(parts[0], sources_N=np.zeros(len(parts[0]), np.int32), source_names=tuple(names))
  return images.DecodedImages(
      images_NHWC=np.concatenate([np.asarray(p.images_NHWC) for p in parts]),
      labels_N=np.concatenate([p.labels_N for p in parts]).astype(np.int32),
      paths=sum((p.paths for p in parts), ()),
      pixel_hashes=sum((p.pixel_hashes for p in parts), ()),
      thumbnails_ND=np.concatenate([p.thumbnails_ND for p in parts]),
      skipped=sum((p.skipped for p in parts), ()),
      warnings=sum((p.warnings for p in parts), ()),
      sources_N=np.concatenate([np.full(len(p), s, np.int32) for s, p in enumerate(parts)]),
      source_names=tuple(names))


def source_indices(decoded: images.DecodedImages) -> tuple[np.ndarray, tuple[str, ...]]:
  """(sources_N, names): every image's source index; one unnamed source ('') for images decoded without any."""
  if decoded.sources_N is None:
    return np.zeros(len(decoded), np.int32), ('',)
  return np.asarray(decoded.sources_N, np.int32), tuple(decoded.source_names)


def strata(labels_N: np.ndarray, sources_N: np.ndarray | None, num_sources: int) -> np.ndarray:
  """The stratum of each image for splits: its source, then its class (source * num_classes + label).

  The main source (0) comes first, so its strata are its labels and a seeded split draws them first, as it does
  with no extra source: adding a source leaves the main source's validation images where they were (unless a copy
  group joins images across sources). With one source the strata are the labels themselves.
  """
  labels_N = np.asarray(labels_N, np.int64)
  if sources_N is None or num_sources <= 1:
    return labels_N
  num_classes = int(labels_N.max(initial=-1)) + 1
  return np.asarray(sources_N, np.int64) * num_classes + labels_N


def missing_classes(decoded: images.DecodedImages, classes: Sequence[str]) -> dict[str, list[str]]:
  """{source name: [classes it holds no image of]} for every source that lacks some."""
  sources_N, names = source_indices(decoded)
  missing = {}
  for s, name in enumerate(names):
    held = set(np.asarray(decoded.labels_N)[sources_N == s].tolist())
    lacking = [c for i, c in enumerate(classes) if i not in held]
    if lacking:
      missing[name] = lacking
  return missing
