"""DICOM: files built with pydicom from a known picture decode to that picture (rescale, MONOCHROME1, window,
BitsStored), what cannot be read is refused naming the file, predictions match the PNG's, and the audit strips tags."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip('pydicom', reason='the [dicom] extra (pydicom) is not installed')
from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
from pydicom import uid as dicom_uid  # pylint: disable=g-import-not-at-top

from lungjax.tools import audit, predict  # pylint: disable=g-import-not-at-top
from lungjax.data import dicom, folders, images  # pylint: disable=g-import-not-at-top
from tests.conftest import CLASSES, striped_image  # pylint: disable=g-import-not-at-top
from tests.predict_test import trained_workdir  # pylint: disable=g-import-not-at-top,unused-import  (a fixture)

SIZE = 32
PATIENT = 'Doe^Jane'


def picture(seed: int = 0, label: int = 1) -> np.ndarray:
  """A SIZE x SIZE grey uint8 picture spanning exactly 0..255 (so a min..max mapping recovers it)."""
  grey = striped_image(label, np.random.default_rng(seed), SIZE, SIZE)[..., 0].astype(np.float64)
  grey = np.rint((grey - grey.min()) * 255.0 / (grey.max() - grey.min()))
  return grey.astype(np.uint8)


def write_dicom(path, stored_HW: np.ndarray, *, photometric: str = 'MONOCHROME2', bits_stored: int = 12,
                syntax: str = dicom_uid.ExplicitVRLittleEndian, pixel_data: bytes | None = None, frames: int = 1,
                **attributes) -> str:
  """Writes a single-frame (or `frames`) DX image whose stored values are stored_HW (uint16), with patient tags."""
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1.1'  # Digital X-Ray Image Storage - For Presentation.
  meta.MediaStorageSOPInstanceUID = dicom_uid.generate_uid()
  meta.TransferSyntaxUID = syntax
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.StudyInstanceUID = '1.2.3.4.5'
  ds.Modality = 'DX'
  ds.PatientName = PATIENT
  ds.PatientID = 'MRN-0042'
  ds.PatientBirthDate = '19500101'
  ds.InstitutionName = 'St Example Hospital'
  ds.ReferringPhysicianName = 'House^Gregory'
  ds.AccessionNumber = 'ACC42'
  ds.add_new(0x00091010, 'LO', 'private note on Jane Doe')
  ds.Rows, ds.Columns = stored_HW.shape[-2:]
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
  ds.PixelRepresentation = 0
  if frames > 1:
    ds.NumberOfFrames = frames
  for key, value in attributes.items():
    setattr(ds, key, value)
  ds.PixelData = pixel_data if pixel_data is not None else np.ascontiguousarray(stored_HW, '<u2').tobytes()
  ds.save_as(str(path), enforce_file_format=True)
  return str(path)


def decoded(path) -> np.ndarray:
  with images.open_image(str(path)) as image:
    assert image.mode == 'L'
    return np.asarray(image)


def test_monochrome2_12_bit_with_rescale_decodes_to_the_picture(tmp_path):
  grey = picture()
  stored = grey.astype(np.uint16) * 16 + 7  # 12 bits: 7..4087.
  stored |= 1 << 13  # A bit above BitsStored (an overlay bit): must be ignored.
  path = write_dicom(tmp_path / 'a.dcm', stored, RescaleSlope=2, RescaleIntercept=-1000)
  np.testing.assert_array_equal(decoded(path), grey)
  png = tmp_path / 'a.png'
  Image.fromarray(grey).save(png)
  assert images.load_image(path, SIZE).pixel_hash == images.load_image(str(png), SIZE).pixel_hash


def test_monochrome1_is_inverted(tmp_path):
  grey = picture(1)
  path = write_dicom(tmp_path / 'inverted.DCM', (255 - grey.astype(np.uint16)) * 16, photometric='MONOCHROME1')
  np.testing.assert_array_equal(decoded(path), grey)


def test_the_voi_window_sets_the_range_and_clips_outside_it(tmp_path):
  grey = picture(2)
  # Rescaled values 2 * stored - 1000 = 1000 + 4 * grey span 1000..2020: the window's span (in rescaled units).
  stored = 1000 + grey.astype(np.uint16) * 2
  low, high = np.unravel_index(grey.argmin(), grey.shape), np.unravel_index(grey.argmax(), grey.shape)
  stored[low], stored[high] = 0, 4095  # Far outside the window: clipped to black and white.
  window = dict(WindowCenter=1510.5, WindowWidth=1021, RescaleSlope=2, RescaleIntercept=-1000)
  path = write_dicom(tmp_path / 'window.dcm', stored, **window)
  np.testing.assert_array_equal(decoded(path), grey)
  # Without the window the full stored range maps to 0..255 instead: a different image.
  plain = write_dicom(tmp_path / 'plain.dcm', stored, RescaleSlope=2, RescaleIntercept=-1000)
  assert not np.array_equal(decoded(plain), grey)


def test_multi_frame_and_undecodable_files_are_refused_naming_the_file(tmp_path):
  two = np.stack([picture(), picture(1)]).astype(np.uint16)
  path = write_dicom(tmp_path / 'cine.dcm', two[0], frames=2, pixel_data=two.astype('<u2').tobytes())
  with pytest.raises(images.BadImageError, match='multi-frame DICOM \\(2 frames\\)') as caught:
    images.load_image(path, SIZE)
  assert repr(path) in str(caught.value)
  # A codec pydicom has no installed plugin for: the syntax and what to install are named.
  if pydicom.pixels.get_decoder(dicom_uid.JPEGLSLossless).is_available:
    pytest.skip('a JPEG-LS decoder is installed here')
  fake = pydicom.encaps.encapsulate([b'\xff\xd8 not really JPEG-LS'])
  path = write_dicom(tmp_path / 'jls.dcm', picture(), syntax=dicom_uid.JPEGLSLossless, pixel_data=fake)
  with pytest.raises(images.BadImageError, match="JPEG-LS Lossless.*cannot decode: .*pip install 'pylibjpeg") as caught:
    images.load_image(path, SIZE)
  assert repr(path) in str(caught.value)


def test_corrupt_compressed_data_and_missing_pydicom_are_clear_errors(tmp_path, monkeypatch):
  fake = pydicom.encaps.encapsulate([b'not a JPEG 2000 codestream'])
  path = write_dicom(tmp_path / 'j2k.dcm', picture(), syntax=dicom_uid.JPEG2000Lossless, pixel_data=fake)
  with pytest.raises(images.BadImageError, match='JPEG 2000|cannot decode') as caught:
    images.load_image(path, SIZE)
  assert repr(path) in str(caught.value)
  text = tmp_path / 'notes.dcm'
  text.write_text('not DICOM')
  with pytest.raises(images.BadImageError, match='not a DICOM file'):
    images.load_image(str(text), SIZE)
  plain = write_dicom(tmp_path / 'plain.dcm', picture().astype(np.uint16))
  monkeypatch.setitem(sys.modules, 'pydicom', None)  # As if the [dicom] extra were not installed.
  with pytest.raises(images.BadImageError, match=r"pydicom is not installed: pip install 'lungjax\[dicom\]'"):
    images.load_image(plain, SIZE)


def test_folders_list_dicom_files(tmp_path):
  for label, name in enumerate(CLASSES):
    (tmp_path / name).mkdir()
    write_dicom(tmp_path / name / 'x.dcm', picture(label, label).astype(np.uint16) * 16)
  scan = folders.scan_split(str(tmp_path), CLASSES)
  assert [os.path.basename(r.path) for r in scan.records] == ['x.dcm'] * 3 and not scan.ignored_files
  decoded_images = images.decode_records(scan.records, SIZE)
  assert len(decoded_images) == 3 and not decoded_images.skipped


def test_audit_lists_identifying_tags_and_strip_removes_them(tmp_path):
  folder = tmp_path / 'scans'
  folder.mkdir()
  path = write_dicom(folder / 'a.dcm', picture().astype(np.uint16) * 16, RescaleSlope=1, RescaleIntercept=0)
  report = audit.run_audit([str(folder)], str(tmp_path / 'out'), strip_dir=str(tmp_path / 'clean'))
  found = report['metadata'][0]['found']
  for tag in ('PatientName', 'PatientID', 'PatientBirthDate', 'InstitutionName', 'ReferringPhysicianName',
              'AccessionNumber'):
    assert f'DICOM {tag}' in found
  assert 'DICOM private tags' in found and report['folders'][0]['classes']['.']['modes'] == {'DICOM L': 1}
  copy = tmp_path / 'clean' / 'scans' / 'a.dcm'
  assert report['strip']['methods'] == {'dicom': 1}
  clean = pydicom.dcmread(copy)
  original = pydicom.dcmread(path)
  assert clean.PixelData == original.PixelData and clean.PatientIdentityRemoved == 'YES'
  assert dicom.identifying_tags(clean) == ()
  assert clean.StudyInstanceUID != original.StudyInstanceUID
  assert b'Doe' not in copy.read_bytes() and b'MRN-0042' not in copy.read_bytes()
  assert images.load_image(str(copy), SIZE).pixel_hash == images.load_image(path, SIZE).pixel_hash
  with pytest.raises(FileExistsError, match='already exists'):  # Never over an existing copy.
    audit.run_audit([str(folder)], str(tmp_path / 'out2'), strip_dir=str(tmp_path / 'clean'))
  assert json.loads((tmp_path / 'out' / 'audit.json').read_text())['summary']['n_files_with_metadata'] == 1


def test_a_dicom_predicts_like_the_png_of_the_same_picture(tmp_path, trained_workdir):
  from lungjax import inference  # pylint: disable=g-import-not-at-top
  grey = picture(3, 2)
  png = tmp_path / 'x.png'
  Image.fromarray(grey).save(png)
  dcm = write_dicom(tmp_path / 'x.dcm', grey.astype(np.uint16) * 16 + 3, RescaleSlope=0.5, RescaleIntercept=10)
  lines = list(predict.predict_files(inference.load(trained_workdir), predict.expand_inputs([str(png), dcm])))
  assert all('error' not in line for line in lines), lines
  for name in CLASSES:
    assert abs(lines[0]['probabilities'][name] - lines[1]['probabilities'][name]) <= 1e-3


def test_one_saturated_pixel_without_a_window_does_not_darken_the_image(tmp_path, caplog):
  """issue 26 Medium 1: a 16-bit DICOM of 12-bit data with one 65535 pixel and no window decodes as without it."""
  grey = picture(3)
  stored = grey.astype(np.uint16) * 16  # 0..4080
  plain = decoded(write_dicom(tmp_path / 'plain.dcm', stored, bits_stored=16))
  np.testing.assert_array_equal(plain, grey)
  hot = stored.copy()
  hot[5, 7] = 65535
  path = write_dicom(tmp_path / 'hot.dcm', hot, bits_stored=16)
  expected = grey.copy()
  expected[5, 7] = 255
  np.testing.assert_array_equal(decoded(path), expected)
  loaded = images.load_image(path, SIZE)
  assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith('1 pixel(s) far outside the rest'), \
      loaded.warnings
  assert 'full 0..65535' in loaded.warnings[0] and path in caplog.text
  cold = stored + 60000  # A bright image with one pixel at 0: the low end is clipped likewise.
  cold[1, 1] = 0
  expected = grey.copy()
  expected[1, 1] = 0
  np.testing.assert_array_equal(decoded(write_dicom(tmp_path / 'cold.dcm', cold, bits_stored=16)), expected)
  assert dicom.robust_range(np.arange(1000.0)) == (0.0, 999.0, 0)  # No far outliers: the full range exactly.


def test_a_voi_lut_declared_16_bit_with_12_bit_entries_is_read_at_12_bits(tmp_path):
  """issue 26 Medium 2: a LUT whose LUTDescriptor says 16 bits but whose entries stop at 4095 is not 16x dark."""
  grey = picture(4)
  stored = grey.astype(np.uint16) * 16  # 0..4080: the LUT maps stored value v to entry v (identity, 12-bit).
  def with_lut(bits: int, entries: np.ndarray):
    item = Dataset()
    item.LUTDescriptor = [len(entries), 0, bits]
    item.add_new('LUTData', 'US', entries.astype(np.uint16).tolist())
    return [item]
  identity = np.arange(4096)
  path = write_dicom(tmp_path / 'lut.dcm', stored, VOILUTSequence=with_lut(16, identity))
  np.testing.assert_allclose(decoded(path).astype(int), grey, atol=1)
  warnings = images.load_image(path, SIZE).warnings
  assert len(warnings) == 1 and 'declared 16-bit (LUTDescriptor) but its entries reach only 4095' in warnings[0]
  assert '16x too dark' in warnings[0]
  honest = write_dicom(tmp_path / 'honest.dcm', stored, VOILUTSequence=with_lut(12, identity))
  np.testing.assert_array_equal(decoded(honest), decoded(path))
  assert images.load_image(honest, SIZE).warnings == ()
  full = write_dicom(tmp_path / 'full.dcm', stored, VOILUTSequence=with_lut(16, identity * 16))  # Real 16-bit.
  np.testing.assert_allclose(decoded(full).astype(int), grey, atol=1)
  assert images.load_image(full, SIZE).warnings == ()


def test_an_8_bit_dicom_is_read_as_the_same_png_is_not_stretched(tmp_path):
  """Issue 26, Low 5: an 8-bit DICOM (values 60..180, no window) was stretched to 0..255 while the same pixels as a
  PNG were not; both now read the stored grey levels as they are. A 12-bit one without a window still spans its range."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  stored_HW = np.tile(np.linspace(60, 180, 48).astype(np.uint16), (40, 1))
  path = write_dicom(tmp_path / 'eight.dcm', stored_HW, bits_stored=8)
  png = str(tmp_path / 'eight.png')
  Image.fromarray(stored_HW.astype(np.uint8)).save(png)
  np.testing.assert_array_equal(decoded(path), stored_HW.astype(np.uint8))
  np.testing.assert_array_equal(images.load_image(path, 32).pixels_HWC, images.load_image(png, 32).pixels_HWC)
  twelve = decoded(write_dicom(tmp_path / 'twelve.dcm', stored_HW * 16, bits_stored=12))
  assert (twelve.min(), twelve.max()) == (0, 255)  # Deeper than 8 bits and no window: its full range, as before.


def test_strip_applies_the_confidentiality_profile_at_every_depth(tmp_path):
  """Issue 26 High 7: attributes beyond the old list, and a PersonName inside ContentSequence, are listed by the
  audit and gone from the copy that says PatientIdentityRemoved=YES."""
  folder = tmp_path / 'scans'
  folder.mkdir()
  person = Dataset()
  person.RelationshipType, person.ValueType, person.PersonName = 'CONTAINS', 'PNAME', 'Nurse^Ratched'
  region = Dataset()  # A sequence the profile keeps: its items are cleaned all the same.
  region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = 'T-D3000', 'SRT', 'Chest'
  region.PatientName = 'Doe^Nested'
  request = Dataset()
  request.RequestedProcedureID = 'RP-NESTED'
  identifying = {
      'AdmissionID': 'ADM-991', 'PlacerOrderNumberImagingServiceRequest': 'PLACER-17',
      'FillerOrderNumberImagingServiceRequest': 'FILLER-18', 'RequestedProcedureID': 'RP-7',
      'CurrentPatientLocation': 'Ward 9 bed 4', 'ContentCreatorName': 'Smith^John',
      'InstanceCreationDate': '20200304', 'StudyDate': '20200304', 'ContentDate': '20200305'}
  path = write_dicom(folder / 'a.dcm', picture().astype(np.uint16) * 16, **identifying,
                     ContentSequence=pydicom.Sequence([person]), AnatomicRegionSequence=pydicom.Sequence([region]),
                     RequestAttributesSequence=pydicom.Sequence([request]))
  ds = pydicom.dcmread(path)
  ds.add_new(0x60003000, 'OW', b'\x01\x00' * 8)  # Overlay data (a repeating group of the profile).
  ds.add_new(0x60004000, 'LT', 'burnt-in name: Jane Doe')  # Overlay comments.
  ds.save_as(path)
  report = audit.run_audit([str(folder)], str(tmp_path / 'out'), strip_dir=str(tmp_path / 'clean'))
  found = set(report['metadata'][0]['found'])
  expected = {f'DICOM {k}' for k in (*identifying, 'PersonName', 'PatientName', 'RequestAttributesSequence',
                                     'OverlayComments', 'OverlayData')}
  assert expected <= found, expected - found
  clean_path = tmp_path / 'clean' / 'scans' / 'a.dcm'
  clean = pydicom.dcmread(clean_path)
  raw = clean_path.read_bytes()
  for value in (*identifying.values(), 'Nurse', 'Ratched', 'Doe', 'RP-NESTED', 'Jane'):
    assert value.encode() not in raw, value
  assert clean.PatientIdentityRemoved == 'YES'
  assert clean.DeidentificationMethodCodeSequence[0].CodeValue == '113100'
  assert dicom.identifying_tags(clean) == ()
  assert clean.ContentSequence[0].PersonName == 'ANONYMIZED'  # D: a dummy; its sequence kept.
  assert clean.AnatomicRegionSequence[0].CodeMeaning == 'Chest' and clean.AnatomicRegionSequence[0].PatientName == ''
  assert 'RequestAttributesSequence' not in clean and 'AdmissionID' not in clean and 0x60003000 not in clean
  assert clean.PixelData == pydicom.dcmread(path).PixelData
