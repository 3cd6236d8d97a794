"""Find the data root: a local folder, or the Kaggle dataset through kagglehub; offline fails fast and says why."""

from __future__ import annotations

import concurrent.futures
import glob
import importlib.util
import os
import socket
import urllib.parse

_PROBE_TIMEOUT_S = 5.0
KAGGLEHUB_MISSING = "downloading needs kagglehub, which is not installed: pip install 'lungjax[kaggle]'"


def _find_split_root(folder: str) -> str | None:
  """Returns the shallowest folder at or below `folder` that holds a train/ sub-folder."""
  for depth in range(4):
    pattern = os.path.join(folder, *(['*'] * depth), 'train')
    hits = sorted(p for p in glob.glob(pattern) if os.path.isdir(p))
    if hits:
      return os.path.dirname(hits[0])
  return None


def kagglehub_cached_copy(dataset: str) -> str | None:
  """Returns the newest kagglehub cache folder of `dataset` (owner/name) that holds train/, if any."""
  cache = os.environ.get('KAGGLEHUB_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'kagglehub'))
  versions = glob.glob(os.path.join(cache, 'datasets', *dataset.split('/'), 'versions', '*'))
  for version in sorted(versions, key=lambda p: int(os.path.basename(p)) if os.path.basename(p).isdigit() else -1,
                        reverse=True):
    root = _find_split_root(version)
    if root:
      return root
  return None


def can_reach(url: str, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
  """True if a TCP connection to the URL's host opens within timeout_s (DNS included)."""
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)

  def connect() -> bool:
    with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
      return True

  pool = concurrent.futures.ThreadPoolExecutor(1)
  try:
    return pool.submit(connect).result(timeout=timeout_s + 1.0)
  except (OSError, concurrent.futures.TimeoutError):
    return False
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


def missing_data_message(dataset: str, reason: str) -> str:
  """Explains how to get the data and which flag points lungjax at it."""
  return (
      f'no data root given (config.data.root is empty) and the Kaggle dataset {dataset!r} cannot be '
      f'downloaded: {reason}.\n'
      f'Get it from https://www.kaggle.com/datasets/{dataset} (or `kaggle datasets download -d {dataset}`), '
      'unzip it, and pass the folder that holds train/ (and test/):\n'
      '  python -m lungjax.main --config=configs/cnn.py --config.data.root=/path/to/Covid19-dataset')


def resolve_data_root(root: str, kaggle_dataset: str, *, kaggle_url: str | None = None) -> str:
  """Returns a folder that holds train/: `root` itself, else a cached or freshly downloaded Kaggle copy."""
  if root:
    if os.path.exists(root) and not os.path.isdir(root):
      raise NotADirectoryError(f'config.data.root={root!r} is a file, not a folder: pass the folder that holds '
                               'train/ (and test/)')
    if not os.path.isdir(root):
      raise FileNotFoundError(f'config.data.root={root!r} does not exist')
    if not os.path.isdir(os.path.join(root, 'train')):
      raise FileNotFoundError(f'config.data.root={root!r} has no train/ folder (one sub-folder per class)')
    return root
  cached = kagglehub_cached_copy(kaggle_dataset)
  if cached:
    return cached
  if importlib.util.find_spec('kagglehub') is None:
    raise RuntimeError(missing_data_message(kaggle_dataset, KAGGLEHUB_MISSING))
  kaggle_url = kaggle_url or os.environ.get('KAGGLE_API_ENDPOINT', 'https://www.kaggle.com')
  if not can_reach(kaggle_url):
    raise RuntimeError(missing_data_message(kaggle_dataset, f'{kaggle_url} is not reachable (offline?)'))
  import kagglehub  # pylint: disable=g-import-not-at-top

  try:
    downloaded = kagglehub.dataset_download(kaggle_dataset)
  except Exception as error:  # kagglehub raises many kinds; all mean "no data".
    raise RuntimeError(missing_data_message(kaggle_dataset, f'kagglehub failed: {error}')) from error
  found = _find_split_root(downloaded)
  if not found:
    raise RuntimeError(missing_data_message(kaggle_dataset, f'no train/ folder inside the download {downloaded!r}'))
  return found
