"""Issue 26, Low 1: bad input gets an error that names the field or file and says what is wrong."""

import json
import os

import pytest

from configs import tiny
from conftest import write_image_folder
from lungjax import checkpoints, config_check, inference, workdir as workdir_lib
from lungjax.data import download, images, loading


def test_a_data_root_that_is_a_file_is_named_as_a_file(tmp_path):
  afile = tmp_path / 'root.zip'
  afile.write_bytes(b'PK')
  with pytest.raises(NotADirectoryError, match=r"config.data.root='.*root.zip' is a file, not a folder"):
    download.resolve_data_root(str(afile), 'owner/dataset')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    download.resolve_data_root(str(tmp_path / 'absent'), 'owner/dataset')


def test_a_workdir_that_is_a_file_is_named_as_a_file(tmp_path):
  afile = tmp_path / 'run.txt'
  afile.write_text('x')
  with pytest.raises(NotADirectoryError, match=r"--workdir='.*run.txt' is a file, not a folder"):
    checkpoints.load_run_config(str(afile))
  with pytest.raises(FileNotFoundError, match='config.json'):
    checkpoints.load_run_config(str(tmp_path))


def test_a_corrupt_config_json_names_the_file(tmp_path):
  (tmp_path / 'config.json').write_text('{"data": {"image_size": 3')  # Cut short.
  with pytest.raises(workdir_lib.CorruptFileError, match=r'config.json'):
    checkpoints.load_run_config(str(tmp_path))


@pytest.mark.parametrize('field, value, allowed', [
    ('image_size', 7, 'it must be an integer >= 8'),
    ('num_epochs', 0, 'it must be an integer >= 1'),
    ('learning_rate', -1.0, 'it must be a number > 0'),
])
def test_a_refused_value_says_what_the_field_allows(field, value, allowed):
  config = tiny.get_config()
  section = config.data if field == 'image_size' else config.train
  section[field] = value
  with pytest.raises(ValueError, match=f'config.[a-z]+.{field}={value!r} is not allowed: {allowed}'):
    config_check.validate(config, 'train')


def test_a_fifo_or_a_link_loop_is_named_for_what_it_is(tmp_path):
  fifo = str(tmp_path / 'scan.png')
  os.mkfifo(fifo)
  with pytest.raises(images.BadImageError, match='a FIFO .named pipe., not a regular file'):
    inference.read_image(fifo, 32)  # Never opened: reading a FIFO would block.
  loop = str(tmp_path / 'loop.png')
  os.symlink(loop, loop)
  with pytest.raises(images.BadImageError, match='a symbolic link loop'):
    inference.read_image(loop, 32)
  with pytest.raises(images.BadImageError, match='no such file'):
    inference.read_image(str(tmp_path / 'absent.png'), 32)


def test_an_eval_folder_whose_path_holds_a_comma_is_refused_naming_it(tmp_path):
  folder = str(tmp_path / 'ward 3, 2024')
  write_image_folder(folder, 1, seed=0)
  with pytest.raises(ValueError, match=r"config.eval.dir='.*ward 3, 2024' is one folder whose path holds a comma"):
    loading.load_folders(folder, tiny.get_config())
