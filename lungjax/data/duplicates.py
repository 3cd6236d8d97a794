"""Exact and near copies among decoded images, and the copy groups a split must keep on one side."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

# Rows of the correlation matrix computed at once: BLOCK_ROWS x N float32 (80 MB for 20k images).
BLOCK_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class CopyPair:
  """Images a < b that are copies: 'exact' (same decoded pixels, score 1.0) or 'near' (score: Pearson r)."""

  a: int
  b: int
  kind: Literal['exact', 'near']
  score: float


def standardise(thumbnails_ND: np.ndarray) -> np.ndarray:
  """Returns each row minus its mean over its norm, so row dot products are Pearson r; flat rows become 0."""
  centred_ND = np.asarray(thumbnails_ND, np.float64)
  centred_ND = centred_ND - centred_ND.mean(axis=1, keepdims=True)
  norms_N1 = np.linalg.norm(centred_ND, axis=1, keepdims=True)
  return np.divide(centred_ND, norms_N1, out=np.zeros_like(centred_ND), where=norms_N1 > 1e-6).astype(np.float32)


def find_copy_pairs(
    pixel_hashes: Sequence[str], thumbnails_ND: np.ndarray, near_threshold: float, *, block_rows: int = BLOCK_ROWS
) -> list[CopyPair]:
  """Returns exact pairs (equal hashes) then near pairs (thumbnail r >= near_threshold, by falling r).

  An exact pair is not reported again as near. Correlations run as one matrix product per block of rows,
  over the upper triangle only. A flat (single-colour) thumbnail correlates 0 with every image.
  """
  thumbnails_ND = np.asarray(thumbnails_ND)
  if thumbnails_ND.ndim != 2 or thumbnails_ND.shape[0] != len(pixel_hashes):
    raise ValueError(f'thumbnails_ND must have one row per pixel hash ({len(pixel_hashes)}), '
                     f'got shape {thumbnails_ND.shape}')
  if not 0.0 < near_threshold <= 1.0:
    raise ValueError(f'near_threshold must be in (0, 1], got {near_threshold}')
  if block_rows < 1:
    raise ValueError(f'block_rows must be positive, got {block_rows}')
  hash_ids_N = np.unique(np.asarray(list(pixel_hashes), dtype=str), return_inverse=True)[1].reshape(-1)
  exact = []
  members = {}
  for index, hash_id in enumerate(hash_ids_N.tolist()):
    exact.extend(CopyPair(first, index, 'exact', 1.0) for first in members.get(hash_id, ()))
    members.setdefault(hash_id, []).append(index)
  z_ND = standardise(thumbnails_ND)
  near = []
  for start in range(0, len(z_ND), block_rows):
    stop = min(start + block_rows, len(z_ND))
    r_BM = z_ND[start:stop] @ z_ND[start:].T  # Row i of the block against images start.. onwards.
    rows, cols = np.nonzero(r_BM >= near_threshold)
    a_K, b_K = rows + start, cols + start
    keep = (b_K > a_K) & (hash_ids_N[a_K] != hash_ids_N[b_K])
    scores_K = np.clip(r_BM[rows[keep], cols[keep]], -1.0, 1.0)
    near.extend(CopyPair(int(a), int(b), 'near', float(s)) for a, b, s in zip(a_K[keep], b_K[keep], scores_K))
  near.sort(key=lambda pair: (-pair.score, pair.a, pair.b))
  return exact + near


def copy_groups(n: int, pairs: Iterable[CopyPair]) -> np.ndarray:
  """Returns an int64 group id per image: the index of the first image it is linked to by copy pairs."""
  parent_N = np.arange(n, dtype=np.int64)

  def root(i: int) -> int:
    while parent_N[i] != i:
      parent_N[i] = parent_N[parent_N[i]]  # Path halving.
      i = int(parent_N[i])
    return i

  for pair in pairs:
    if not (0 <= pair.a < n and 0 <= pair.b < n):
      raise ValueError(f'copy pair {pair} names an image outside 0..{n - 1}')
    root_a, root_b = root(pair.a), root(pair.b)
    parent_N[max(root_a, root_b)] = min(root_a, root_b)  # The smallest index is every group's root.
  return np.asarray([root(i) for i in range(n)], np.int64)
