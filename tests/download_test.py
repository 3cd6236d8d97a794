"""Finding the data root: a given folder, or a Kaggle download that fails fast and clearly offline."""

import time

import pytest

from lungjax.data import download


def test_missing_root_names_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.data.root'):
    download.resolve_data_root(str(tmp_path / 'absent'), 'owner/name')
  (tmp_path / 'no_train').mkdir()
  with pytest.raises(FileNotFoundError, match='no train/'):
    download.resolve_data_root(str(tmp_path / 'no_train'), 'owner/name')


def test_given_root_is_used(synthetic_root):
  assert download.resolve_data_root(synthetic_root, 'owner/name') == synthetic_root


def test_kaggle_cache_is_found_without_network(tmp_path, monkeypatch):
  copy = tmp_path / 'datasets' / 'owner' / 'name' / 'versions' / '2' / 'Covid19-dataset'
  (copy / 'train').mkdir(parents=True)
  monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path))
  assert download.resolve_data_root('', 'owner/name', kaggle_url='https://kaggle.invalid') == str(copy)


def test_offline_download_fails_within_seconds_and_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path))
  start = time.monotonic()
  with pytest.raises(RuntimeError, match=r'--config.data.root=') as error:
    download.resolve_data_root('', 'pranavraikokte/covid19-image-dataset', kaggle_url='https://kaggle.invalid')
  assert time.monotonic() - start < 10
  assert 'kaggle.com/datasets/pranavraikokte/covid19-image-dataset' in str(error.value)
