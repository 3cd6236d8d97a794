"""Metadata tables joined to images: who the patient is (grouping for splits) and the facts subgroups are cut by.

A table is a CSV file with a header; one column (config's file column, default `file`) names each row's image:
- a path with a '/', relative to the table's own folder (Cohen's `images/COVID-19/x.jpeg` beside
  `metadata.csv`) or to the image folder it describes (`COVID-19/x.jpeg`), or
- a base name (`x.jpeg`), which must then name one image only: two images of that name are an error naming both.
Rows no image matches and images no row matches are counted and listed (Join.summary), never dropped silently.

Grouping (config.data.group_by, issue 30): films whose table gives the same value of the column (e.g. `patientid`)
within one source form a group; merge_groups joins those groups with the copy groups by union-find, so a copy of
patient A's film joins A's group. Films without a value (empty, or no row) stay their own group (counted).

Subgroups (config.eval.subgroups, issue 25): 'COLUMN,COLUMN:BINS,...' (parse_subgroups documents the syntax).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

DEFAULT_FILE_COLUMN = 'file'
UNKNOWN = 'unknown'  # The subgroup of an empty value.
NO_ROW = 'no metadata row'  # The subgroup of an image that no table row names.
OUTSIDE_BINS = 'outside the bins'  # The subgroup of a number that no bin of the column holds.


@dataclasses.dataclass(frozen=True)
class Table:
  """A metadata CSV read whole: its columns and its rows (strings, stripped), keyed by the file column."""

  path: str
  file_column: str
  columns: tuple[str, ...]
  rows: tuple[dict[str, str], ...]


def read_table(path: str, file_column: str = DEFAULT_FILE_COLUMN, field: str = 'config.eval.metadata') -> Table:
  """Reads a metadata CSV. FileNotFoundError / ValueError name `field` and the file: no such file, no header, no
  `file_column`, a row without a file, or two rows naming the same file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{field}={path!r}: no such file')
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    columns = tuple(c.strip() for c in (reader.fieldnames or ()))
    if not columns:
      raise ValueError(f'{field}={path!r}: the table has no header row')
    if file_column not in columns:
      raise ValueError(f'{field}={path!r}: no column {file_column!r} naming each row\'s image (columns: '
                       f'{list(columns)}); set the file column (config.data.metadata_file_column, '
                       'config.eval.metadata_file_column or ;file_column= of an extra source)')
    rows, seen = [], {}
    for line, raw in enumerate(reader, start=2):
      row = {(k or '').strip(): (v or '').strip() for k, v in raw.items() if k is not None}
      key = row.get(file_column, '')
      if not key:
        raise ValueError(f'{field}={path!r} line {line}: empty {file_column!r}: every row must name its image')
      if key in seen:
        raise ValueError(f'{field}={path!r}: lines {seen[key]} and {line} both name {key!r}')
      seen[key] = line
      rows.append(row)
  return Table(path, file_column, columns, tuple(rows))


@dataclasses.dataclass(frozen=True)
class Join:
  """A table joined to a list of images: each image's row (None where no row names it)."""

  table: str
  rows_N: tuple[dict[str, str] | None, ...]
  unmatched_rows: tuple[str, ...]  # The file values of rows that name no image here.
  unmatched_images: tuple[str, ...]  # The images that no row names.

  def summary(self) -> dict[str, Any]:
    """What metrics.json and the logs record of the join: counts, and every unmatched row and image."""
    return {'table': self.table, 'n_images': len(self.rows_N),
            'n_matched': sum(r is not None for r in self.rows_N),
            'n_unmatched_rows': len(self.unmatched_rows), 'n_unmatched_images': len(self.unmatched_images),
            'unmatched_rows': list(self.unmatched_rows), 'unmatched_images': list(self.unmatched_images)}


def _normal(path: str) -> str:
  return os.path.normpath(path).replace(os.sep, '/')


def join(table: Table, paths: Sequence[str], folder: str | Sequence[str],
         field: str = 'config.eval.metadata') -> Join:
  """Joins `table` to the images at `paths` (under `folder`, the image folder the table describes, or several).

  A row's file value with a '/' is a path relative to the table's folder or to `folder`; one without is a base
  name. ValueError (naming `field`) where a base name names two images, or two rows name one image.
  """
  by_path: dict[str, int] = {}
  for i, path in enumerate(paths):
    for form in {_normal(os.path.abspath(path)), _normal(os.path.realpath(path))}:
      by_path.setdefault(form, i)
  by_name = collections.defaultdict(list)
  for i, path in enumerate(paths):
    by_name[os.path.basename(path)].append(i)
  table_dir = os.path.dirname(os.path.abspath(table.path))
  row_of: dict[int, dict[str, str]] = {}
  unmatched_rows = []
  for row in table.rows:
    key = row[table.file_column]
    if '/' in key.replace('\\', '/'):
      key = key.replace('\\', '/')
      found = None
      for base in (table_dir, *([folder] if isinstance(folder, str) else folder)):
        candidate = _normal(os.path.abspath(os.path.join(base, key)))
        if candidate in by_path:
          found = by_path[candidate]
          break
        real = _normal(os.path.realpath(os.path.join(base, key)))
        if real in by_path:
          found = by_path[real]
          break
    else:
      named = by_name.get(key, [])
      if len(named) > 1:
        raise ValueError(f'{field}={table.path!r}: the base name {key!r} names two images, {paths[named[0]]!r} and '
                         f'{paths[named[1]]!r}: name them by path relative to the folder')
      found = named[0] if named else None
    if found is None:
      unmatched_rows.append(row[table.file_column])
      continue
    if found in row_of:
      raise ValueError(f'{field}={table.path!r}: rows {row_of[found][table.file_column]!r} and {key!r} both name '
                       f'{paths[found]!r}')
    row_of[found] = row
  rows_N = tuple(row_of.get(i) for i in range(len(paths)))
  return Join(table.path, rows_N, tuple(unmatched_rows), tuple(p for p, r in zip(paths, rows_N) if r is None))


# Grouping (issue 30).


def group_keys(join_: Join, column: str, source: str) -> tuple[list[Hashable | None], int]:
  """(key per image, count without a value): (source, value) of `column` where the image's row has a value; None
  for an empty value or no row (the image stays its own group)."""
  keys: list[Hashable | None] = []
  for row in join_.rows_N:
    value = '' if row is None else row.get(column, '')
    keys.append((source, value) if value else None)
  return keys, sum(k is None for k in keys)


def merge_groups(groups_N: Sequence[int], keys_N: Sequence[Hashable | None]) -> np.ndarray:
  """Union-find over images: the given groups (e.g. copy groups), joined wherever two images share a key (not
  None). Returns an int64 group id per image: the smallest index of its merged group."""
  n = len(groups_N)
  if len(keys_N) != n:
    raise ValueError(f'{len(keys_N)} keys for {n} images')
  parent_N = np.arange(n, dtype=np.int64)

  def root(i: int) -> int:
    while parent_N[i] != i:
      parent_N[i] = parent_N[parent_N[i]]
      i = int(parent_N[i])
    return i

  def union(a: int, b: int) -> None:
    root_a, root_b = root(a), root(b)
    parent_N[max(root_a, root_b)] = min(root_a, root_b)

  first_of: dict[Hashable, int] = {}
  for i, (group, key) in enumerate(zip(np.asarray(groups_N).tolist(), keys_N)):
    union(i, first_of.setdefault(('group', group), i))
    if key is not None:
      union(i, first_of.setdefault(('key', key), i))
  return np.asarray([root(i) for i in range(n)], np.int64)


def groups_on_both_sides(keys_N: Sequence[Hashable | None], sides_N: Sequence[Any]) -> dict[Hashable, list[Any]]:
  """{key: the sides it is on} of every key (not None) whose images lie on more than one side (e.g. 'train' and
  'val', or two folders)."""
  sides = collections.defaultdict(set)
  for key, side in zip(keys_N, sides_N):
    if key is not None:
      sides[key].add(side)
  return {key: sorted(found, key=str) for key, found in sides.items() if len(found) > 1}


# Subgroups (issue 25).

_BIN = re.compile(r'^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)?\s*$')


@dataclasses.dataclass(frozen=True)
class Subgroup:
  """A column to cut images by: its values as they are, or (bins) numbers in half-open ranges [low, high)."""

  column: str
  bins: tuple[tuple[float, float], ...] = ()  # (low, high); high math.inf for an open 'LOW-' bin.
  # How the bins came: 'given' (COLUMN:BINS) or, for a numeric column named without bins, 'quartiles' (with_bins).
  bins_from: str = 'given'

  def label(self, value: str) -> str:
    """The subgroup of one value: itself, UNKNOWN when empty, or its bin's label ('18-40', '65-')."""
    if not value:
      return UNKNOWN
    if not self.bins:
      return value
    try:
      number = float(value)
    except ValueError:
      raise ValueError(f'config.eval.subgroups: column {self.column!r} is binned but holds {value!r}, not a '
                       'number') from None
    for low, high in self.bins:
      if low <= number < high:
        return _bin_label(low, high)
    return OUTSIDE_BINS

  @property
  def labels(self) -> list[str]:
    """The bins' labels in order ([] for a column of values)."""
    return [_bin_label(low, high) for low, high in self.bins]


def _number(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else str(x)


def _bin_label(low: float, high: float) -> str:
  return f'{_number(low)}-' + ('' if math.isinf(high) else _number(high))


def parse_subgroups(text: str, field: str = 'config.eval.subgroups') -> tuple[Subgroup, ...]:
  """Parses 'sex,view,age:0-18,18-40,40-65,65-' into Subgroups.

  Syntax: comma-separated items. An item is a column name, or 'COLUMN:BIN' which starts that column's bins; every
  item after it that reads as a bin belongs to the same column. A bin is 'LOW-HIGH' (LOW <= value < HIGH) or 'LOW-'
  (value >= LOW); bins ascend and do not overlap. A column's name can never read as a bin, so the text has one
  reading. Empty values are the group 'unknown'; a number outside every bin the group 'outside the bins'.
  """
  found: list[Subgroup] = []
  bins: list[tuple[float, float]] = []
  column = None

  def close() -> None:
    if column is not None:
      found.append(Subgroup(column, tuple(bins)))

  for item in (x.strip() for x in text.split(',')):
    if not item:
      raise ValueError(f'{field}={text!r}: an empty item (two commas, or a comma at an end)')
    head, colon, tail = item.partition(':')
    if not colon and _BIN.match(item):
      if column is None or not bins:
        raise ValueError(f'{field}={text!r}: bin {item!r} follows no \'COLUMN:BIN\' item (write age:0-18,18-40)')
      bins.append(_parse_bin(item, text, field))
      continue
    close()
    column, bins = head.strip(), []
    if not column or _BIN.match(column):
      raise ValueError(f'{field}={text!r}: {item!r} is not a column name')
    if colon:
      bins.append(_parse_bin(tail, text, field))
  close()
  columns = [s.column for s in found]
  if len(set(columns)) != len(columns):
    raise ValueError(f'{field}={text!r}: a column is named twice ({columns})')
  for subgroup in found:
    for (low_a, high_a), (low_b, _) in zip(subgroup.bins, subgroup.bins[1:]):
      if low_b < high_a or low_b <= low_a:
        raise ValueError(f'{field}={text!r}: the bins of {subgroup.column!r} must ascend without overlapping '
                         f'({_bin_label(low_a, high_a)} then {_bin_label(low_b, _)})')
  return tuple(found)


def _parse_bin(item: str, text: str, field: str) -> tuple[float, float]:
  match = _BIN.match(item)
  if not match:
    raise ValueError(f'{field}={text!r}: {item!r} is not a bin LOW-HIGH or LOW- (numbers)')
  low = float(match.group(1))
  high = math.inf if match.group(2) is None else float(match.group(2))
  if not high > low:
    raise ValueError(f'{field}={text!r}: bin {item!r} is empty (HIGH must exceed LOW)')
  return low, high


AUTO_BIN_MIN_VALUES = 10  # A numeric column named without bins, with more distinct values than this, is binned.


def with_bins(join_: Join, subgroup: Subgroup) -> Subgroup:
  """`subgroup` itself, or, where it has no bins and the joined rows' non-empty values of its column are all numbers
  with more than AUTO_BIN_MIN_VALUES distinct ones (ages, days), the same column in four bins cut at the values'
  quartiles (rounded to whole numbers; ties merge bins): 'age' alone means 'age:12-47,47-60,60-71,71-' on Cohen's
  films, four groups of about equal size instead of one group per year. bins_from='quartiles' records it."""
  if subgroup.bins:
    return subgroup
  texts = [row.get(subgroup.column, '') for row in join_.rows_N if row is not None]
  try:
    numbers = np.asarray([float(t) for t in texts if t], np.float64)
  except ValueError:
    return subgroup  # A column of words (sex, view): its values are the groups.
  if len(np.unique(numbers)) <= AUTO_BIN_MIN_VALUES or not np.all(np.isfinite(numbers)):
    return subgroup
  low = float(np.floor(numbers.min()))
  cuts = sorted({float(np.round(q)) for q in np.quantile(numbers, (0.25, 0.5, 0.75))} - {low})
  edges = [low, *(c for c in cuts if c > low), math.inf]
  return Subgroup(subgroup.column, tuple(zip(edges[:-1], edges[1:])), 'quartiles')


def subgroup_labels(join_: Join, subgroup: Subgroup) -> list[str]:
  """Each image's subgroup of one column: its value's label, UNKNOWN for an empty value, NO_ROW without a row.
  ValueError where the table has no such column."""
  matched = [r for r in join_.rows_N if r is not None]  # No row matched: every image is NO_ROW, whatever the column.
  if matched and all(subgroup.column not in r for r in matched):
    raise ValueError(f'config.eval.subgroups: the table {join_.table!r} has no column {subgroup.column!r}')
  return [NO_ROW if row is None else subgroup.label(row.get(subgroup.column, '')) for row in join_.rows_N]


def ordered_values(labels: Sequence[str], subgroup: Subgroup) -> list[str]:
  """The subgroups present, in order: a binned column's bins first, else by value; UNKNOWN, OUTSIDE_BINS and NO_ROW
  last."""
  present = set(labels)
  special = [v for v in (OUTSIDE_BINS, UNKNOWN, NO_ROW) if v in present]
  if subgroup.bins:
    return [v for v in subgroup.labels if v in present] + special
  return sorted(present - set(special)) + special


def class_counts(labels_N: Sequence[int], values: Sequence[str], subgroup: Subgroup,
                 classes: Sequence[str]) -> dict[str, dict[str, Any]]:
  """{subgroup: {'n_images', 'per_class': {class: count}}}: what the audit shows before a model learns a confound."""
  labels_N = np.asarray(labels_N, np.int64)
  values_N = np.asarray(values, dtype=object)
  out = {}
  for value in ordered_values(values, subgroup):
    counts = np.bincount(labels_N[values_N == value], minlength=len(classes))
    out[value] = {'n_images': int(counts.sum()), 'per_class': dict(zip(classes, counts.tolist()))}
  return out


def counts_sentence(value: str, row: dict[str, Any]) -> str:
  """'AP Supine: 74 of 75 are Covid' for a subgroup's class counts (its largest class)."""
  name, count = max(row['per_class'].items(), key=lambda kv: kv[1])
  return f'{value}: {count} of {row["n_images"]} are {name}'
