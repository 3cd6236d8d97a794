"""The dataset audit: metadata found and stripped pixel-identically, folder stats, and the command line end to end."""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lungjax.tools import audit
from lungjax.runtime import workdir
from lungjax.data import duplicates, images
from tests.conftest import needs_shared_data, SHARED_TRAIN
from tests.duplicates_test import blob_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = b'Jane Doe'  # The "patient" that no clean copy may mention.
_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        b'%s dc:creator="Jane Doe"/></rdf:RDF></x:xmpmeta>')


def _exif(orientation: int = 1) -> Image.Exif:
  exif = Image.Exif()
  exif[0x013B] = 'Jane Doe'  # Artist.
  exif[0x010E] = 'Patient Jane Doe, born 1950'  # ImageDescription.
  exif[0x0112] = orientation
  return exif


def _iptc_segment() -> bytes:
  record = b'\x1c\x02\x50' + len(NAME).to_bytes(2, 'big') + NAME  # IPTC 2:80 By-line.
  resource = b'8BIM\x04\x04\x00\x00' + len(record).to_bytes(4, 'big') + record
  payload = b'Photoshop 3.0\0' + resource
  return b'\xff\xed' + (len(payload) + 2).to_bytes(2, 'big') + payload


def _jpeg_with_metadata(path, pixels, orientation: int = 1) -> str:
  """A JPEG with EXIF, XMP, a COM comment, an IPTC APP13 segment and bytes after its end."""
  Image.fromarray(pixels).save(path, quality=90, exif=_exif(orientation), comment=b'patient Jane Doe',
                               xmp=_XMP % b'')
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:2] + _iptc_segment() + data[2:] + b'trailing Jane Doe')
  return str(path)


def _png_with_metadata(path, pixels) -> str:
  """A PNG with tEXt, zTXt, iTXt (also XMP), eXIf and tIME chunks, and bytes after its end."""
  info = PngImagePlugin.PngInfo()
  info.add_text('Author', 'Jane Doe')
  info.add_text('Comment', 'Jane Doe ' * 20, zip=True)
  info.add_itxt('Description', 'Jane Doe')
  info.add_itxt('XML:com.adobe.xmp', (_XMP % b'').decode())
  info.add(b'tIME', b'\x07\xe8\x01\x02\x03\x04\x05')
  Image.fromarray(pixels).save(path, pnginfo=info, exif=_exif())
  with open(path, 'ab') as f:
    f.write(b'trailing Jane Doe')
  return str(path)


def _assert_clean(path: str) -> None:
  data = open(path, 'rb').read()
  assert NAME not in data
  with Image.open(path) as image:
    assert not {'exif', 'comment', 'xmp', 'XML:com.adobe.xmp'} & set(image.info)
    assert getattr(image, 'text', {}) == {}
    assert {marker for marker, _ in getattr(image, 'applist', [])} <= {'APP0', 'APP14'}
    assert not image.getexif()


def _hash(path: str) -> str:
  return images.load_image(str(path), 4).pixel_hash


def _colour_blobs(seed: int) -> np.ndarray:
  return np.stack([blob_image(seed), blob_image(seed + 100), blob_image(seed + 200)], axis=-1)


def test_jpeg_metadata_is_found_and_stripped_bytewise(tmp_path):
  path = _jpeg_with_metadata(tmp_path / 'a.jpg', _colour_blobs(0))
  found = audit.audit_file(path)
  assert found.error is None
  assert found.metadata == ('EXIF', 'IPTC', 'JPEG comment', 'XMP', 'data after the end of the image')
  row = audit.write_clean_copy(path, str(tmp_path / 'clean' / 'a.jpg'), found.pixel_hash, found.orientation)
  assert row == {'copy': str(tmp_path / 'clean' / 'a.jpg'), 'method': 'stripped'}
  assert _hash(row['copy']) == _hash(path)
  _assert_clean(row['copy'])
  assert audit.audit_file(row['copy']).metadata == ()


def test_png_metadata_is_found_and_stripped_bytewise(tmp_path):
  path = _png_with_metadata(tmp_path / 'a.png', blob_image(1))
  found = audit.audit_file(path)
  assert found.metadata == ('EXIF', "PNG iTXt 'Description'", "PNG tEXt 'Author'", "PNG zTXt 'Comment'", 'XMP',
                            'data after the end of the image')
  row = audit.write_clean_copy(path, str(tmp_path / 'clean.png'), found.pixel_hash, found.orientation)
  assert row['method'] == 'stripped'
  assert _hash(row['copy']) == _hash(path)
  _assert_clean(row['copy'])


@pytest.mark.parametrize('source', ['exif', 'xmp'])
def test_a_rotated_jpeg_becomes_a_lossless_png_that_decodes_identically(tmp_path, source):
  pixels = _colour_blobs(2)[:, :150]  # 180 high, 150 wide as stored.
  path = str(tmp_path / 'rotated.jpg')
  if source == 'exif':
    _jpeg_with_metadata(path, pixels, orientation=6)
  else:  # Orientation in XMP only: lungjax's decoder (Pillow) applies it too.
    Image.fromarray(pixels).save(path, quality=90, xmp=_XMP % b'tiff:Orientation="6"')
  found = audit.audit_file(path)
  assert (found.orientation, found.width, found.height) == (6, 180, 150)  # Sizes as lungjax decodes it.
  row = audit.write_clean_copy(path, str(tmp_path / 'clean' / 'rotated.jpg'), found.pixel_hash, found.orientation)
  assert row['method'] == 'png' and 'orientation 6' in row['why']
  assert row['copy'] == str(tmp_path / 'clean' / 'rotated.jpg.png')
  assert Image.open(row['copy']).format == 'PNG'
  assert _hash(row['copy']) == _hash(path)
  _assert_clean(row['copy'])


def test_a_file_without_metadata_is_copied_byte_for_byte(tmp_path):
  path = tmp_path / 'plain.jpg'
  Image.fromarray(blob_image(3)).save(path, quality=80)
  found = audit.audit_file(str(path))
  assert found.metadata == ()
  row = audit.write_clean_copy(str(path), str(tmp_path / 'copy.jpg'), found.pixel_hash, found.orientation)
  assert row['method'] == 'copied'
  assert open(row['copy'], 'rb').read() == path.read_bytes()


def test_undecodable_files_are_reported_not_raised(tmp_path):
  (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  (tmp_path / 'empty.png').write_bytes(b'')
  bad, empty = audit.audit_files([str(tmp_path / 'bad.jpg'), str(tmp_path / 'empty.png')])
  assert bad.error and empty.error == 'the file is empty'
  assert bad.pixel_hash == '' and bad.thumbnail is None


def _segment(marker: int, payload: bytes) -> bytes:
  return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, 'big') + payload


def test_jpeg_text_in_app0_and_app14_segments_is_found_and_stripped(tmp_path):
  """Text hidden in segments that look harmless: a non-JFIF APP0, a JFIF APP0 with bytes after its header, an Adobe
  APP14 longer than its 12 bytes, and an APP12 (Ducky) segment."""
  path = tmp_path / 'a.jpg'
  Image.fromarray(_colour_blobs(5)).save(path, quality=90)
  data = path.read_bytes()
  assert data[2:4] == b'\xff\xe0' and data[6:11] == b'JFIF\0'  # Pillow's JFIF APP0 comes first.
  jfif_end = 4 + int.from_bytes(data[4:6], 'big')
  jfif = _segment(0xE0, data[6:jfif_end] + b' Jane Doe')
  adobe = _segment(0xEE, b'Adobe\x00\x64\x00\x00\x00\x00\x01' + b'Jane Doe')
  path.write_bytes(data[:2] + jfif + _segment(0xE0, b'AVI1\0patient Jane Doe') + adobe +
                   _segment(0xEC, b'Ducky\0Jane Doe') + data[jfif_end:])
  found = audit.audit_file(str(path))
  assert found.error is None
  assert found.metadata == ('JPEG APP0 (JFIF) with extra bytes', 'JPEG APP0 segment', 'JPEG APP12 segment',
                            'JPEG APP14 (Adobe) with extra bytes')
  row = audit.write_clean_copy(str(path), str(tmp_path / 'clean' / 'a.jpg'), found.pixel_hash, found.orientation)
  assert _hash(row['copy']) == _hash(path)
  _assert_clean(row['copy'])
  assert audit.audit_file(row['copy']).metadata == ()


def test_an_exact_jfif_and_adobe_header_are_kept(tmp_path):
  path = tmp_path / 'cmyk.jpg'
  Image.fromarray(_colour_blobs(6)).convert('CMYK').save(path, quality=90)  # Pillow writes an Adobe APP14.
  assert b'Adobe' in path.read_bytes()
  found = audit.audit_file(str(path))
  assert found.metadata == ()
  row = audit.write_clean_copy(str(path), str(tmp_path / 'copy.jpg'), found.pixel_hash, found.orientation)
  assert row['method'] == 'copied'


def test_png_splt_palette_name_is_found_and_stripped(tmp_path):
  path = tmp_path / 'a.png'
  Image.fromarray(blob_image(7)).save(path)
  data = path.read_bytes()
  payload = b'Jane Doe\0\x08' + bytes([10, 20, 30, 255, 0, 1])  # Name, depth 8, one RGBA entry and its frequency.
  chunk = len(payload).to_bytes(4, 'big') + b'sPLT' + payload + zlib.crc32(b'sPLT' + payload).to_bytes(4, 'big')
  end_of_ihdr = 8 + 25
  path.write_bytes(data[:end_of_ihdr] + chunk + data[end_of_ihdr:])
  found = audit.audit_file(str(path))
  assert found.error is None and found.metadata == ('PNG sPLT palette name',)
  row = audit.write_clean_copy(str(path), str(tmp_path / 'clean.png'), found.pixel_hash, found.orientation)
  assert row['method'] == 'stripped' and _hash(row['copy']) == _hash(path)
  _assert_clean(row['copy'])


def _folder_with_unreadable_paths(tmp_path) -> str:
  """data/ with two decodable images, a dangling link and a link loop named like images, and a secret/ sub-folder
  and secret.png that the tests make unreadable."""
  data = tmp_path / 'data'
  for i in range(2):
    _save(blob_image(60 + i), data / 'Covid' / f'{i}.png')
  _save(blob_image(62), data / 'secret' / 'hidden.png')
  _save(blob_image(63), data / 'Covid' / 'secret.png')
  os.symlink(str(tmp_path / 'gone.png'), data / 'Covid' / 'dangling.png')
  os.symlink('loop.jpg', data / 'Covid' / 'loop.jpg')
  return str(data)


def test_unreadable_files_and_folders_are_reported_not_raised(tmp_path, monkeypatch):
  """Root reads and lists chmod-000 paths (the tests run as root), so os.access and os.scandir are made to refuse
  secret.png and secret/; the links are real."""
  data = _folder_with_unreadable_paths(tmp_path)
  real_access, real_scandir = os.access, os.scandir
  monkeypatch.setattr(os, 'access', lambda path, mode, **kw: 'secret.png' not in str(path) and real_access(path, mode))

  def scandir(path='.'):
    if os.path.basename(str(path)) == 'secret':
      raise PermissionError(13, 'Permission denied', str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, 'scandir', scandir)
  report = audit.run_audit([data], str(tmp_path / 'out'), strip_dir=str(tmp_path / 'clean'))
  stats = report['folders'][0]
  reasons = {os.path.basename(row['path']): row['reason'] for row in stats['unreadable']}
  assert set(reasons) == {'dangling.png', 'loop.jpg', 'secret.png', 'secret'}
  assert reasons['dangling.png'].startswith('a dangling symbolic link')
  assert reasons['loop.jpg'] == 'a symbolic link loop'
  assert reasons['secret.png'] == 'no permission to read it' and 'cannot list the folder' in reasons['secret']
  assert stats['undecodable'] == [] and stats['classes']['Covid']['n_unreadable'] == 3
  assert report['summary']['n_images'] == 2 and report['summary']['n_unreadable'] == 4
  assert json.loads((tmp_path / 'out' / 'audit.json').read_text())['summary']['n_unreadable'] == 4
  assert report['strip']['methods'] == {'copied': 2, 'skipped': 3}


def test_command_line_reports_dangling_links_and_loops(tmp_path):
  data = _folder_with_unreadable_paths(tmp_path)
  result = subprocess.run([sys.executable, '-m', 'lungjax.tools.audit', data, '--out=out'], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'unreadable  data/Covid/loop.jpg: a symbolic link loop' in result.stdout
  report = json.loads((tmp_path / 'out' / 'audit.json').read_text())
  assert [row['path'] for row in report['folders'][0]['unreadable']] == ['data/Covid/dangling.png',
                                                                          'data/Covid/loop.jpg']


def test_strip_never_overwrites_a_file(tmp_path):
  data = tmp_path / 'data'
  for i in range(2):
    _save(blob_image(70 + i), data / 'Normal' / f'{i}.png')
  mine = tmp_path / 'clean' / 'data' / 'Normal' / '1.png'
  mine.parent.mkdir(parents=True)
  mine.write_bytes(b'my own file')
  with pytest.raises(FileExistsError, match='clean/data/Normal/1.png'):
    audit.run_audit([str(data)], str(tmp_path / 'out'), strip_dir=str(tmp_path / 'clean'))
  assert mine.read_bytes() == b'my own file'
  assert not (mine.parent / '0.png').exists() and not (tmp_path / 'out').exists()
  with pytest.raises(FileExistsError, match='never overwrites'):  # And a copy written one at a time refuses too.
    audit.write_clean_copy(str(data / 'Normal' / '1.png'), str(mine), _hash(data / 'Normal' / '1.png'), 1)
  assert mine.read_bytes() == b'my own file'


def test_bad_arguments_are_named_before_decoding(tmp_path):
  (tmp_path / 'a' / 'x').mkdir(parents=True)
  (tmp_path / 'b').mkdir()
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  out = str(tmp_path / 'out')
  with pytest.raises(ValueError, match='--drop_from'):
    audit.run_audit([a, b], out, drop_from=str(tmp_path))
  with pytest.raises(ValueError, match='--drop_from needs at least one other folder'):
    audit.run_audit([a], out, drop_from=a)
  with pytest.raises(ValueError, match='overlap'):
    audit.run_audit([a, os.path.join(a, 'x')], out)
  with pytest.raises(ValueError, match='--near_threshold'):
    audit.run_audit([a], out, near_threshold=0.0)
  for strip_dir in (os.path.join(a, 'clean'), str(tmp_path)):  # Inside it, or it would overwrite a/ itself.
    with pytest.raises(ValueError, match='--strip'):
      audit.run_audit([a], out, strip_dir=strip_dir)
  with pytest.raises(ValueError, match='--out'):
    audit.run_audit([a], os.path.join(a, 'x', 'out'))
  with pytest.raises(FileNotFoundError, match='missing'):
    audit.run_audit([str(tmp_path / 'missing')], out)
  assert not os.path.exists(out)


def _save(pixels: np.ndarray, path, **kwargs) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, **kwargs)


def test_command_line_finds_copies_across_folders_and_writes_the_drop_list(tmp_path):
  for i in range(4):
    _save(blob_image(i), tmp_path / 'train' / 'Covid' / f'{i}.png')
    _save(blob_image(10 + i), tmp_path / 'train' / 'Normal' / f'{i}.png')
  _save(blob_image(0), tmp_path / 'train' / 'Normal' / 'copy.png')  # An exact copy across classes.
  (tmp_path / 'train' / 'notes.txt').write_text('not an image')
  resized = Image.fromarray(blob_image(1)).resize((176, 144), Image.Resampling.BICUBIC)
  _save(np.asarray(resized.convert('RGB')), tmp_path / 'eval set' / 'Covid' / 'resized.jpg', quality=60)
  _save(blob_image(30), tmp_path / 'eval set' / 'Covid' / 'new.png')
  _save(blob_image(11)[:, 9:], tmp_path / 'eval set' / 'Normal' / 'cropped.png')
  _save(blob_image(12), tmp_path / 'eval set' / 'Normal' / 'same.png')
  _jpeg_with_metadata(tmp_path / 'eval set' / 'Normal' / 'meta.jpg', _colour_blobs(40))
  (tmp_path / 'eval set' / 'Normal' / 'broken.jpg').write_bytes(b'\xff\xd8 cut short')

  result = subprocess.run(
      [sys.executable, '-m', 'lungjax.tools.audit', 'train', 'eval set', '--out=out', '--drop_from=eval set',
       '--strip=clean'], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'drop_list.txt (3 images)' in result.stdout

  report = json.loads((tmp_path / 'out' / 'audit.json').read_text())
  assert [(p['a'], p['b'], p['kind']) for p in report['pairs']] == [
      ('train/Covid/0.png', 'train/Normal/copy.png', 'exact'),
      ('train/Normal/2.png', 'eval set/Normal/same.png', 'exact'),
      ('train/Covid/1.png', 'eval set/Covid/resized.jpg', 'near'),
      ('train/Normal/1.png', 'eval set/Normal/cropped.png', 'near')]
  assert [p['score'] for p in report['pairs'][:2]] == [1.0, 1.0]
  assert all(0.96 <= p['score'] < 1.0 for p in report['pairs'][2:])
  assert (tmp_path / 'out' / 'drop_list.txt').read_text().splitlines() == [
      'eval set/Covid/resized.jpg', 'eval set/Normal/cropped.png', 'eval set/Normal/same.png']

  train, evaluation = report['folders']
  assert train['folder'] == 'train' and train['ignored_files'] == ['train/notes.txt']
  assert {name: row['n_images'] for name, row in train['classes'].items()} == {'Covid': 4, 'Normal': 5}
  assert train['largest_to_smallest_class'] == 1.25
  assert train['classes']['Covid']['modes'] == {'L': 4}
  assert evaluation['classes']['Covid']['width'] == {'min': 176, 'median': 198.0, 'max': 220}
  assert evaluation['classes']['Covid']['modes'] == {'L': 1, 'RGB': 1}
  assert evaluation['classes']['Normal']['n_files'] == 4 and evaluation['classes']['Normal']['n_undecodable'] == 1
  [undecodable] = evaluation['undecodable']
  assert undecodable['path'] == 'eval set/Normal/broken.jpg' and undecodable['reason']
  assert report['metadata'] == [{'path': 'eval set/Normal/meta.jpg',
                                 'found': ['EXIF', 'IPTC', 'JPEG comment', 'XMP', 'data after the end of the image']}]
  assert report['summary'] == {'n_files': 15, 'n_images': 14, 'n_undecodable': 1, 'n_unreadable': 0,
                               'n_exact_pairs': 2, 'n_near_pairs': 2, 'n_files_with_metadata': 1}

  assert report['strip']['methods'] == {'copied': 13, 'skipped': 1, 'stripped': 1}
  for name in ('train/Covid/0.png', 'eval set/Normal/meta.jpg', 'eval set/Covid/resized.jpg'):
    assert _hash(tmp_path / 'clean' / name) == _hash(tmp_path / name)
    _assert_clean(str(tmp_path / 'clean' / name))
  assert not (tmp_path / 'clean' / 'eval set' / 'Normal' / 'broken.jpg').exists()

  with Image.open(tmp_path / 'out' / 'pairs.png') as sheet:
    assert sheet.format == 'PNG' and sheet.text == {}
    assert sheet.height > 1.4 * sheet.width  # One row of two images per flagged pair: 4 rows.


def test_a_folder_without_copies_gets_an_empty_sheet(tmp_path):
  for i in range(3):
    _save(blob_image(50 + i), tmp_path / 'data' / f'{i}.png')  # Images at the top level: class '.'.
  report = audit.run_audit([str(tmp_path / 'data')], str(tmp_path / 'out'))
  assert report['pairs'] == [] and report['copy_groups'] == []
  assert list(report['folders'][0]['classes']) == ['.']
  assert not (tmp_path / 'out' / 'drop_list.txt').exists()
  with Image.open(tmp_path / 'out' / 'pairs.png') as sheet:
    assert sheet.text == {} and sheet.height < 400


@pytest.mark.slow  # Decodes all 251 shared images: 18-31 s on two busy shared cores.
@needs_shared_data
def test_the_shared_train_copies_are_found_and_nothing_else():
  paths, ignored, unlisted = audit.list_folder(SHARED_TRAIN)
  assert not unlisted
  audits = audit.audit_files(paths)
  stats = audit.folder_stats(SHARED_TRAIN, audits, ignored)
  assert {name: row['n_images'] for name, row in stats['classes'].items()} == {
      'Covid': 111, 'Normal': 70, 'Viral Pneumonia': 70}
  assert stats['undecodable'] == []
  names = [os.path.relpath(path, SHARED_TRAIN) for path in paths]
  # The clean copies (2026-12-02): six Covid JPEGs carry an encoder's JPEG comment, nothing else has text.
  assert {name: a.metadata for name, a in zip(names, audits) if a.metadata} == {
      f'Covid/{n}.jpg': ('JPEG comment',) for n in ('015', '068', '071', '073', '074', '076')}

  hashes, thumbnails_ND = [a.pixel_hash for a in audits], np.stack([a.thumbnail for a in audits])

  def pairs(threshold):
    return [(names[p.a], names[p.b], p.kind, round(p.score, 3))
            for p in duplicates.find_copy_pairs(hashes, thumbnails_ND, threshold)]

  expected = [('Normal/019.jpeg', 'Normal/020.jpeg', 'exact', 1.0),
              ('Normal/093.jpeg', 'Normal/094.jpeg', 'exact', 1.0),
              ('Viral Pneumonia/019.jpeg', 'Viral Pneumonia/020.jpeg', 'exact', 1.0),
              ('Covid/COVID-00033.jpg', 'Covid/COVID-00037.jpg', 'near', 1.0),  # Same pixels to r 1.000, other bytes.
              ('Covid/057.jpeg', 'Covid/078.jpeg', 'near', 0.992)]
  assert pairs(audit.NEAR_THRESHOLD) == expected
  assert pairs(0.95)[5:] == [('Viral Pneumonia/062.jpeg', 'Viral Pneumonia/065.jpeg', 'near', 0.955)]


def test_audit_counts_classes_per_subgroup_and_finds_a_patient_in_two_folders(tmp_path):
  from tests.conftest import write_image_folder
  train = write_image_folder(str(tmp_path / 'train'), 4, seed=0, classes=('Covid', 'Normal'))
  test = write_image_folder(str(tmp_path / 'test'), 2, seed=1, classes=('Covid', 'Normal'))
  rows = ['file,patientid,view']
  rows += [f'train/Covid/{i:03d}.png,p{i},{"AP Supine" if i < 3 else "PA"}' for i in range(4)]
  rows += [f'train/Normal/{i:03d}.png,n{i},PA' for i in range(4)]
  rows += ['test/Covid/000.png,p2,AP Supine', 'test/Covid/001.png,,PA', 'test/Normal/000.png,n9,',
           'gone/x.png,q,PA']
  table = tmp_path / 'meta.csv'
  table.write_text('\n'.join(rows) + '\n')
  report = audit.run_audit([train, test], str(tmp_path / 'out'), metadata=str(table), subgroups='view',
                           group_by='patientid')
  found = report['metadata_table']
  assert found['table']['n_unmatched_rows'] == 1 and found['table']['unmatched_images'] == [
      os.path.join(test, 'Normal', '001.png')]
  counts = found['subgroups']['view']['counts']
  assert counts['AP Supine'] == {'n_images': 4, 'per_class': {'Covid': 4, 'Normal': 0}}
  assert 'AP Supine: 4 of 4 are Covid' in found['subgroups']['view']['largest_class']
  assert counts['unknown']['n_images'] == 1 and counts['no metadata row']['n_images'] == 1
  # The whole table by hand: AP Supine train Covid 0-2 + test Covid 0; PA train Covid 3, Normal 0-3 + test Covid 1;
  # test Normal 0 has an empty view, test Normal 1 no row.
  assert counts == {'AP Supine': {'n_images': 4, 'per_class': {'Covid': 4, 'Normal': 0}},
                    'PA': {'n_images': 6, 'per_class': {'Covid': 2, 'Normal': 4}},
                    'unknown': {'n_images': 1, 'per_class': {'Covid': 0, 'Normal': 1}},
                    'no metadata row': {'n_images': 1, 'per_class': {'Covid': 0, 'Normal': 1}}}
  (across,) = found['group_by']['groups_across_folders']  # Patient p2: a film in train and one in test.
  assert across['values'] == ['p2'] and len(across['folders']) == 2
  assert found['group_by']['n_without_value'] == 2
  with pytest.raises(ValueError, match='--group_by'):
    audit.run_audit([train], str(tmp_path / 'out2'), metadata=str(table), group_by='patient')


def test_audit_never_replaces_a_users_drop_list_nor_writes_through_links(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  for folder, seed in ((a, 70), (b, 71)):
    _save(blob_image(seed), folder / 'Normal' / '0.png')
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'drop_list.txt').write_text('my own list\n')
  with pytest.raises(workdir.ForeignFileError, match='drop_list.txt.*lungjax did not write it'):
    audit.run_audit([str(a), str(b)], str(out), drop_from=str(b))
  assert (out / 'drop_list.txt').read_text() == 'my own list\n' and not (out / 'audit.json').exists()
  precious = tmp_path / 'precious.json'
  precious.write_text('precious')
  out2 = tmp_path / 'out2'
  out2.mkdir()
  (out2 / 'audit.json').symlink_to(precious)
  with pytest.raises(workdir.ForeignFileError, match='audit.json.*symbolic link'):
    audit.run_audit([str(a)], str(out2))
  assert precious.read_text() == 'precious'
  clean, elsewhere = tmp_path / 'clean', tmp_path / 'elsewhere'
  clean.mkdir()
  elsewhere.mkdir()
  (clean / 'a').symlink_to(elsewhere, target_is_directory=True)  # A planted link inside --strip.
  with pytest.raises(workdir.ForeignFileError, match='symbolic link'):
    audit.run_audit([str(a)], str(tmp_path / 'out3'), strip_dir=str(clean))
  assert os.listdir(elsewhere) == []
