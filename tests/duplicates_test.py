"""Exact and near copies from decoded thumbnails, and copy groups that keep copies on one side of a split."""

import numpy as np
import pytest
from PIL import Image

from lungjax.data import duplicates, images, splits

THRESHOLD = 0.96


def blob_image(seed: int, height: int = 180, width: int = 220) -> np.ndarray:
  """A smooth grey image made of random Gaussian blobs: structured like a film, different for every seed."""
  rng = np.random.default_rng(seed)
  y_H1, x_1W = np.mgrid[0:height, 0:width]
  field_HW = np.zeros((height, width))
  for _ in range(7):
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    sigma = rng.uniform(0.08, 0.2) * width
    field_HW += rng.uniform(-1, 1) * np.exp(-((y_H1 - cy)**2 + (x_1W - cx)**2) / (2 * sigma**2))
  field_HW = (field_HW - field_HW.min()) / (np.ptp(field_HW) or 1.0)
  return np.rint(field_HW * 230 + 10).astype(np.uint8)


def _decode(paths):
  loaded = [images.load_image(str(path), 8) for path in paths]
  return [x.pixel_hash for x in loaded], np.stack([x.thumbnail for x in loaded])


def _pairs(paths, threshold=THRESHOLD):
  return duplicates.find_copy_pairs(*_decode(paths), threshold)


def test_reencoded_and_resized_copy_is_near(tmp_path):
  original = Image.fromarray(blob_image(0))
  original.save(tmp_path / 'a.png')
  small = original.resize((int(original.width * 0.8), int(original.height * 0.8)), Image.Resampling.BICUBIC)
  small.convert('RGB').save(tmp_path / 'b.jpg', quality=60)
  [pair] = _pairs([tmp_path / 'a.png', tmp_path / 'b.jpg'])
  assert (pair.a, pair.b, pair.kind) == (0, 1, 'near')
  assert THRESHOLD <= pair.score < 1.0


@pytest.mark.parametrize('edge', ['left', 'right', 'top', 'bottom'])
def test_lightly_cropped_copy_is_near(tmp_path, edge):
  pixels = blob_image(1)
  cut_h, cut_w = int(pixels.shape[0] * 0.04), int(pixels.shape[1] * 0.04)  # 4% off one edge.
  cropped = {'left': pixels[:, cut_w:], 'right': pixels[:, :-cut_w], 'top': pixels[cut_h:],
             'bottom': pixels[:-cut_h]}[edge]
  Image.fromarray(pixels).save(tmp_path / 'a.png')
  Image.fromarray(cropped).save(tmp_path / 'b.png')
  [pair] = _pairs([tmp_path / 'a.png', tmp_path / 'b.png'])
  assert pair.kind == 'near' and pair.score >= THRESHOLD


def test_different_images_are_not_copies(tmp_path):
  paths = []
  for seed in range(10, 22):
    paths.append(tmp_path / f'{seed}.png')
    Image.fromarray(blob_image(seed)).save(paths[-1])
  assert _pairs(paths) == []
  # Far from the threshold, not just under it.
  assert duplicates.find_copy_pairs(*_decode(paths), 0.9) == []


def test_exact_copies_are_exact_and_not_near_again(tmp_path):
  pixels = Image.fromarray(blob_image(2))
  pixels.save(tmp_path / 'a.png', compress_level=1)
  pixels.save(tmp_path / 'b.png', compress_level=9)  # Other bytes, same pixels.
  pixels.convert('RGB').save(tmp_path / 'c.png')  # Grey stored as RGB: decodes to the same RGB pixels.
  Image.fromarray(blob_image(3)).save(tmp_path / 'd.png')
  pairs = _pairs([tmp_path / name for name in ('a.png', 'b.png', 'c.png', 'd.png')])
  assert [(p.a, p.b, p.kind, p.score) for p in pairs] == [(0, 1, 'exact', 1.0), (0, 2, 'exact', 1.0),
                                                          (1, 2, 'exact', 1.0)]


def test_scores_are_pearson_r_and_blocks_do_not_change_the_pairs():
  rng = np.random.default_rng(0)
  base_ND = rng.normal(size=(30, 64))
  thumbnails_ND = np.concatenate([base_ND, base_ND[:10] * 3 + 7 + rng.normal(scale=0.2, size=(10, 64))])
  hashes = [str(i) for i in range(40)]
  pairs = duplicates.find_copy_pairs(hashes, thumbnails_ND, 0.9)
  assert sorted((p.a, p.b) for p in pairs) == [(i, 30 + i) for i in range(10)]
  for pair in pairs:
    assert pair.score == pytest.approx(np.corrcoef(thumbnails_ND[pair.a], thumbnails_ND[pair.b])[0, 1], abs=1e-5)
  assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
  for block_rows in (1, 7, 64):
    blocked = duplicates.find_copy_pairs(hashes, thumbnails_ND, 0.9, block_rows=block_rows)
    assert [(p.a, p.b) for p in blocked] == [(p.a, p.b) for p in pairs]
    np.testing.assert_allclose([p.score for p in blocked], [p.score for p in pairs], atol=1e-6)


def test_flat_thumbnails_correlate_with_nothing():
  thumbnails_ND = np.stack([np.full(16, 5.0), np.full(16, 200.0), np.arange(16.0)])
  assert duplicates.find_copy_pairs(['a', 'b', 'c'], thumbnails_ND, 0.01) == []


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='near_threshold'):
    duplicates.find_copy_pairs(['a'], np.zeros((1, 4)), 1.5)
  with pytest.raises(ValueError, match='one row per pixel hash'):
    duplicates.find_copy_pairs(['a', 'b'], np.zeros((3, 4)), 0.9)
  with pytest.raises(ValueError, match='outside 0..2'):
    duplicates.copy_groups(3, [duplicates.CopyPair(1, 3, 'near', 0.99)])


def test_copy_groups_follow_chains_of_pairs():
  pairs = [duplicates.CopyPair(4, 5, 'near', 0.97), duplicates.CopyPair(1, 2, 'exact', 1.0),
           duplicates.CopyPair(0, 2, 'near', 0.99)]
  assert duplicates.copy_groups(7, pairs).tolist() == [0, 0, 0, 3, 4, 4, 6]
  assert duplicates.copy_groups(3, []).tolist() == [0, 1, 2]


def test_a_split_by_copy_groups_keeps_near_copies_on_one_side():
  rng = np.random.default_rng(1)
  base_ND = rng.normal(size=(20, 64))
  thumbnails_ND = np.concatenate([base_ND, base_ND + rng.normal(scale=0.05, size=base_ND.shape)])
  labels_N = np.tile(np.arange(20) % 2, 2)
  pairs = duplicates.find_copy_pairs([str(i) for i in range(40)], thumbnails_ND, THRESHOLD)
  groups_N = duplicates.copy_groups(40, pairs)
  assert len(pairs) == 20 and len(set(groups_N.tolist())) == 20
  for seed in range(10):
    train, val = splits.grouped_stratified_split(labels_N, groups_N, 0.3, seed)
    assert not set(groups_N[train].tolist()) & set(groups_N[val].tolist())
