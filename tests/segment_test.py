"""tools/segment.py (`lungjax segment`): a folder's lung masks, mirrored, equal to lungs.segment; safe output."""

import os

import numpy as np
import pytest
from PIL import Image

from lungjax import lungs
from lungjax.tools import segment as segment_tool
from tests.lungs_test import SIZE, _tiny_model


def _weights(tmp_path, seed=3):
  model = _tiny_model(seed)
  path = str(tmp_path / 'w.npz')
  lungs.save_weights(path, model.params, {'features': [4, 8], 'downsample': 2, 'size': SIZE})
  return path


def test_segment_tool_writes_mirrored_masks_equal_to_the_python_call(tmp_path):
  weights = _weights(tmp_path)
  folder = tmp_path / 'films'
  (folder / 'sub').mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (70, 60), dtype=np.uint8)).save(folder / 'a.png')
  Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)).save(folder / 'sub' / 'b.jpg')
  (folder / 'broken.png').write_bytes(b'not a png')
  out = tmp_path / 'masks'
  assert segment_tool.main([f'--dir={folder}', f'--out={out}', f'--weights={weights}']) == 1  # One unreadable.
  result = segment_tool.segment_folder(str(folder), str(out), weights)  # Again: its own files may be replaced.
  assert sorted(result['written']) == ['a.png', os.path.join('sub', 'b.png')]
  assert [p for p, _ in result['unreadable']] == ['broken.png']
  model = lungs.load_lungs(weights)
  for name in ('a.png', os.path.join('sub', 'b.jpg')):
    expected = lungs.segment(str(folder / name), model)
    written = np.asarray(Image.open(out / (os.path.splitext(name)[0] + '.png'))) > 0
    np.testing.assert_array_equal(written, expected)
  assert not any(p.name.endswith('.tmp') for p in folder.rglob('*'))
  assert sorted(p.name for p in folder.rglob('*')) == ['a.png', 'b.jpg', 'broken.png', 'sub']


def test_segment_tool_refuses_out_inside_dir_and_foreign_files(tmp_path):
  weights = _weights(tmp_path)
  folder = tmp_path / 'films'
  folder.mkdir()
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / 'a.png')
  with pytest.raises(ValueError, match='inside'):
    segment_tool.segment_folder(str(folder), str(folder / 'masks'), weights)
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'a.png').write_bytes(b'mine')
  with pytest.raises(FileExistsError):
    segment_tool.segment_folder(str(folder), str(foreign), weights)
  assert (foreign / 'a.png').read_bytes() == b'mine'
