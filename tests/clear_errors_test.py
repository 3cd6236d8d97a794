"""Issue 26, Low 1: bad input gets an error that names the field or file and says what is wrong."""

import json
import os

import pytest

from configs import tiny
from conftest import write_image_folder
from lungjax import checkpoints, config_check, inference
from lungjax.runtime import workdir as workdir_lib
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


def test_an_animated_png_is_refused_like_a_multi_frame_dicom(tmp_path):
  """Issue 26, Low 5: an APNG's first frame was used silently; now it is refused, naming the file and its frames."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (30, 200)]
  animated = str(tmp_path / 'cine.png')
  frames[0].save(animated, save_all=True, append_images=frames[1:])
  with Image.open(animated) as check:
    assert check.n_frames == 2
  with pytest.raises(images.BadImageError, match=r'cine.png.*animated PNG \(APNG, 2 frames\)'):
    images.load_image(animated, 32)
  single = str(tmp_path / 'still.png')
  frames[0].save(single)
  assert images.load_image(single, 32).pixels_HWC.shape == (32, 32, 3)


def test_two_eval_folders_sharing_identical_images_are_warned_with_the_count(tmp_path, caplog):
  """Issue 26, Low 5: folders A and B sharing 2 images were pooled with no warning; now the count is logged."""
  import shutil  # pylint: disable=g-import-not-at-top
  a, b = str(tmp_path / 'A'), str(tmp_path / 'B')
  write_image_folder(a, 2, seed=3)
  write_image_folder(b, 2, seed=4)
  for name in ('000.png', '001.png'):
    shutil.copy(os.path.join(a, 'Normal', name), os.path.join(b, 'Normal', f'copy-{name}'))
  with caplog.at_level('WARNING'):
    loaded = loading.load_folders(f'{a},{b}', tiny.get_config())
  assert len(loaded.decoded) == 14
  assert '4 images (identical pixels) are in more than one of its folders' in caplog.text  # 2 in A, 2 in B.
  assert loading.shared_images([['x', 'y'], ['z'], ['x']]) == 2
  assert loading.shared_images([['x'], ['y']]) == 0
