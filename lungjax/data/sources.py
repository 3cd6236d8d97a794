"""Labelled training sources: the main data root's train/ plus extra folders of class sub-folders.

A config names its sources with these config.data fields (configs/cnn.py documents them):
- `root` (its train/ folder) is the main source, named `source_name` or, if that is empty, the root folder's
  basename (the Kaggle dataset's name when the root is downloaded). It must hold every class.
- `extra_root`, `extra_class_names` ('FOLDER=Class,...', as config.eval.class_names reads it) and `extra_source_name`
  (default: the folder's basename) add one extra source: a folder of class sub-folders, without a train/ level.
- `extra_sources`, a tuple of 'NAME=DIR' or 'NAME=DIR;FOLDER=Class,FOLDER=Class' strings, adds any number more.
An extra source may hold only some of the classes. Source names must differ (they key per-source metrics).

Metadata tables (data/metadata.py): `metadata` names the main source's CSV, `extra_metadata` extra_root's; an
`extra_sources` entry takes ';metadata=CSV', ';group_by=COLUMN' and ';file_column=COLUMN' parts after its mapping
('cohen=DIR;COVID-19=Covid;metadata=DIR/../metadata.csv;group_by=patientid'). `group_by` (a column, e.g.
'patientid') keeps the films of one value on one side of every split; it applies to every source with a table
unless the source names its own (';group_by=' with no column turns it off for that source). `metadata_file_column`
(default 'file') is the column naming each row's image, unless a source names its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from lungjax.data import folders, images, metadata as metadata_lib


@dataclasses.dataclass(frozen=True)
class Source:
  """One labelled folder of class sub-folders and how its folder names map onto config.data.classes."""

  name: str
  folder: str  # Its folder of class sub-folders (the main root's train/).
  folder_names: tuple[tuple[str, str], ...] = ()  # (folder name, class) pairs; other folders must be named as classes.
  field: str = 'config.data.root'  # The config field it comes from: errors name it.
  metadata: str = ''  # Its metadata CSV ('' none).
  group_by: str | None = None  # Its grouping column; None: config.data.group_by.
  file_column: str = ''  # The table's column naming each image; '': config.data.metadata_file_column.

  @property
  def mapping(self) -> dict[str, str]:
    """{folder name: class name} for folders named otherwise than their class."""
    return dict(self.folder_names)


def main_source_name(config: ml_collections.ConfigDict) -> str:
  """config.data.source_name, else the basename of config.data.root, else the Kaggle dataset's name."""
  name = config.data.source_name
  if name:
    return name
  if config.data.root:
    return os.path.basename(os.path.normpath(config.data.root))
  return config.data.kaggle_dataset.rstrip('/').split('/')[-1]


def _parse_mapping(text: str, classes: Sequence[str], field: str) -> tuple[tuple[str, str], ...]:
  """A 'FOLDER=Class,...' mapping as (folder, class) pairs; ValueError names `field`."""
  return tuple(folders.parse_folder_names(text, classes, field).items())


_SOURCE_OPTIONS = ('metadata', 'group_by', 'file_column')


def _source_options(parts: Sequence[str], entry: str, field: str) -> tuple[dict[str, Any], str]:
  """An extra_sources entry's parts after NAME=DIR: ({option: value} of its metadata / group_by / file_column
  parts, its 'FOLDER=Class,...' mapping ('' none))."""
  options: dict[str, Any] = {}
  mappings = []
  for part in parts:
    key, sep, value = (x.strip() for x in part.partition('='))
    if sep and key in _SOURCE_OPTIONS and ',' not in value:
      if key in options:
        raise ValueError(f'{field}={entry!r}: {key}= is given twice')
      options[key] = value
    elif part.strip():
      mappings.append(part)
  if len(mappings) > 1:
    raise ValueError(f'{field}={entry!r}: more than one FOLDER=Class mapping; the parts after NAME=DIR are one '
                     f'mapping and {", ".join(o + "=" for o in _SOURCE_OPTIONS)} options, separated by ;')
  if options.get('file_column') == '':
    raise ValueError(f'{field}={entry!r}: file_column= names no column')
  if ('group_by' in options or 'file_column' in options) and not options.get('metadata'):
    raise ValueError(f'{field}={entry!r}: group_by= / file_column= need a metadata=CSV table for the source')
  return options, mappings[0] if mappings else ''


def main_source(config: ml_collections.ConfigDict, folder: str) -> Source:
  """The main source (its train/ folder `folder`) with its metadata table (config.data.metadata)."""
  return Source(main_source_name(config), folder, (), 'config.data.root', config.data.metadata)


def grouping_column(source: Source, config: ml_collections.ConfigDict) -> str:
  """The column a source's films are grouped by ('' none): its own group_by, else config.data.group_by where it
  has a table."""
  if not source.metadata:
    return ''
  return config.data.group_by if source.group_by is None else source.group_by


def file_column(source: Source, config: ml_collections.ConfigDict) -> str:
  """The column of a source's table that names its images."""
  return source.file_column or config.data.metadata_file_column or 'file'


def extra_sources(config: ml_collections.ConfigDict) -> list[Source]:
  """The extra sources a config lists (config.data.extra_root and config.data.extra_sources), validated.

  Raises ValueError naming the field for a malformed entry, a mapping onto unknown classes, a class mapping or
  name without config.data.extra_root, an empty or repeated source name, or a folder that does not exist.
  """
  classes = tuple(config.data.classes)
  found = []
  extra_root = config.data.extra_root
  extra_names, extra_name = config.data.extra_class_names, config.data.extra_source_name
  if extra_root:
    name = extra_name or os.path.basename(os.path.normpath(extra_root))
    found.append(Source(name, extra_root, _parse_mapping(extra_names, classes, 'config.data.extra_class_names'),
                        'config.data.extra_root', config.data.extra_metadata))
  elif extra_names or extra_name or config.data.extra_metadata:
    raise ValueError(f'config.data.extra_class_names={extra_names!r} / config.data.extra_source_name={extra_name!r} '
                     f'/ config.data.extra_metadata={config.data.extra_metadata!r} given without '
                     'config.data.extra_root: set the extra folder too')
  listed = config.data.extra_sources
  if isinstance(listed, str):
    raise ValueError(f'config.data.extra_sources={listed!r} must be a tuple of \'NAME=DIR[;FOLDER=Class,...]\' '
                     'strings, e.g. "(\'adult=/data/adult;COVID=Covid\',)"')
  for i, entry in enumerate(listed):
    field = f'config.data.extra_sources[{i}]'
    head, *parts = str(entry).split(';')
    name, sep, folder = (x.strip() for x in head.partition('='))
    if not sep or not name or not folder:
      raise ValueError(f'{field}={entry!r} must read NAME=DIR or NAME=DIR;FOLDER=Class,FOLDER=Class')
    options, mapping = _source_options(parts, entry, field)
    found.append(Source(name, folder, _parse_mapping(mapping, classes, field), field, **options))
  names = [main_source_name(config)]
  for source in found:
    if not source.name or source.name in names:
      raise ValueError(f'{source.field}: source name {source.name!r} is empty or already used by another source '
                       f'({names}); name it (config.data.extra_source_name, config.data.source_name, or NAME= in '
                       'config.data.extra_sources)')
    names.append(source.name)
    if not os.path.isdir(source.folder):
      raise FileNotFoundError(f'{source.field}: folder {source.folder!r} does not exist')
  return found


def check_tables(config: ml_collections.ConfigDict) -> None:
  """Every training metadata table readable, with its file column and its grouping column; config.data.group_by
  refused where no source has a table. Errors name the field and the file."""
  group_by, column = config.data.group_by, config.data.metadata_file_column
  if not isinstance(group_by, str):
    raise ValueError(f'config.data.group_by={group_by!r} must be a column name or \'\'')
  if not isinstance(column, str) or not column:
    raise ValueError(f'config.data.metadata_file_column={column!r} must name a column')
  if config.data.metadata and config.data.prepared_dir:
    raise ValueError(f'config.data.metadata={config.data.metadata!r} is joined to decoded folders; not with '
                     f'config.data.prepared_dir={config.data.prepared_dir!r}')
  with_tables = [s for s in [main_source(config, '')] + extra_sources(config) if s.metadata]
  if group_by and not with_tables:
    raise ValueError(f'config.data.group_by={group_by!r} needs a metadata table: config.data.metadata, '
                     'config.data.extra_metadata or ;metadata=CSV in config.data.extra_sources')
  for source in with_tables:
    field = 'config.data.metadata' if source.field == 'config.data.root' else (
        'config.data.extra_metadata' if source.field == 'config.data.extra_root' else source.field)
    table = metadata_lib.read_table(source.metadata, file_column(source, config), field)
    grouping = grouping_column(source, config)
    if grouping and grouping not in table.columns:
      raise ValueError(f'{field} (source {source.name!r}): group_by={grouping!r} is not a column of '
                       f'{source.metadata!r} (columns: {list(table.columns)})')


@dataclasses.dataclass(frozen=True, eq=False)
class JoinedImages:
  """Several sources' images as one array-like, each part left where it is: a prepared split's pixels on disk
  (prepared.PreparedImages, read per batch), a decoded folder's in memory. `images[indices_B]` is a B x S x S x 3
  uint8 array; like PreparedImages it has len, shape, dtype, integer / array indexing and subset."""

  parts: tuple[Any, ...]  # Array-likes of N_p x S x S x 3 uint8 images, in source order.
  rows_N: np.ndarray  # int64: the rows of the parts laid end to end that this view serves, in order.
  _starts: np.ndarray  # int64: each part's first row, computed once in `of`.

  @classmethod
  def of(cls, parts: Sequence[Any]) -> JoinedImages:
    if len({tuple(p.shape[1:]) for p in parts}) > 1:
      raise ValueError(f'sources decoded to different image shapes: {[tuple(p.shape[1:]) for p in parts]}')
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]]).astype(np.int64)
    return cls(tuple(parts), np.arange(sum(len(p) for p in parts), dtype=np.int64), starts)

  def __len__(self) -> int:
    return len(self.rows_N)

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.rows_N), *self.parts[0].shape[1:])

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __getitem__(self, key: Any) -> np.ndarray:
    starts = self._starts
    if isinstance(key, (int, np.integer)):
      row = int(self.rows_N[key])
      part = int(np.searchsorted(starts, row, side='right')) - 1
      return np.asarray(self.parts[part][row - int(starts[part])])
    rows_B = np.atleast_1d(self.rows_N[key])
    part_B = np.searchsorted(starts, rows_B, side='right') - 1
    out_BHWC = np.empty((len(rows_B), *self.shape[1:]), np.uint8)
    for part in np.unique(part_B):
      where_B = part_B == part
      out_BHWC[where_B] = self.parts[part][rows_B[where_B] - starts[part]]
    return out_BHWC

  def subset(self, indices: Sequence[int]) -> JoinedImages:
    """The images at `indices`, each still where its part keeps it."""
    return JoinedImages(self.parts, self.rows_N[np.asarray(indices, np.int64)], self._starts)

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    del copy
    everything = self[np.arange(len(self))]
    return everything if dtype is None else everything.astype(dtype)


def concatenate(parts: Sequence[images.DecodedImages], names: Sequence[str]) -> images.DecodedImages:
  """Joins each source's decoded images in order; every image carries its source's index into `names`. Decoded
  pixels are joined into one array; where a part's stay on disk (a prepared main source) they stay there."""
  if len(parts) == 1:
    return dataclasses.replace(parts[0], sources_N=np.zeros(len(parts[0]), np.int32), source_names=tuple(names))
  in_memory = all(isinstance(p.images_NHWC, np.ndarray) for p in parts)
  return images.DecodedImages(
      images_NHWC=(np.concatenate([p.images_NHWC for p in parts]) if in_memory
                   else JoinedImages.of([p.images_NHWC for p in parts])),
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
