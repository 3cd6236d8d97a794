"""DICOM (.dcm) radiographs: decode to the 8-bit grey image lungjax reads, and list or remove the tags that
identify a patient. Needs pydicom (the [dicom] extra: pip install 'lungjax[dicom]').

Decoding follows the DICOM display pipeline for a single-frame greyscale image: the stored values (BitsStored
bits) go through the modality transform (Modality LUT, or RescaleSlope / RescaleIntercept), then the VOI transform
(the first VOI LUT, or WindowCenter / WindowWidth) whose output range maps to 0..255; without a VOI transform the
full range of the rescaled values (min..max) does. MONOCHROME1 (higher values darker) is inverted so that, as in
MONOCHROME2 and every PNG, bone is bright. Colour DICOM (RGB, YBR) of 8 bits is read as RGB. Multi-frame files and
compressed transfer syntaxes that no installed pydicom decoder handles are refused with BadImageError naming the
file (and, for the latter, what to install).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from lungjax.data import images

DICOM_EXTENSIONS = ('.dcm', '.dicom')
INSTALL_HINT = "pip install 'lungjax[dicom]'"
# The attributes that identify a patient, taken from the most common of the DICOM basic application level
# confidentiality profile (PS3.15 Annex E, table E.1-1): names, IDs, dates and places of the patient, the people and
# institution that made the image, and free text about the patient. The audit lists those a file holds (never their
# values) and --strip removes them, with every private tag; the instance UIDs are replaced instead (see UID_TAGS).
IDENTIFYING_TAGS = (
    'PatientName', 'PatientID', 'IssuerOfPatientID', 'OtherPatientIDs', 'OtherPatientIDsSequence', 'OtherPatientNames',
    'PatientBirthName', 'PatientMotherBirthName', 'PatientBirthDate', 'PatientBirthTime', 'PatientAge', 'PatientSex',
    'PatientSize', 'PatientWeight', 'PatientAddress', 'PatientTelephoneNumbers', 'CountryOfResidence',
    'RegionOfResidence', 'EthnicGroup', 'Occupation', 'MilitaryRank', 'BranchOfService', 'MedicalRecordLocator',
    'PatientReligiousPreference', 'PatientComments', 'AdditionalPatientHistory', 'AdmittingDiagnosesDescription',
    'ResponsiblePerson', 'PatientInsurancePlanCodeSequence', 'ReferencedPatientSequence',
    'InstitutionName', 'InstitutionAddress', 'InstitutionalDepartmentName', 'StationName', 'DeviceSerialNumber',
    'ReferringPhysicianName', 'ReferringPhysicianAddress', 'ReferringPhysicianTelephoneNumbers',
    'PerformingPhysicianName', 'OperatorsName', 'PhysiciansOfRecord', 'NameOfPhysiciansReadingStudy',
    'RequestingPhysician', 'AccessionNumber', 'StudyID', 'RequestAttributesSequence',
    'StudyDate', 'SeriesDate', 'AcquisitionDate', 'ContentDate', 'StudyTime', 'SeriesTime', 'AcquisitionTime',
    'ContentTime', 'AcquisitionDateTime', 'StudyDescription', 'SeriesDescription', 'ImageComments',
)
# UIDs that could link an image back to its study: replaced by UIDs derived from them by a one-way hash
# (pydicom.uid.generate_uid with the old UID as entropy), so images of one study still share a study UID.
UID_TAGS = ('StudyInstanceUID', 'SeriesInstanceUID', 'SOPInstanceUID', 'FrameOfReferenceUID')
_MONOCHROME = ('MONOCHROME1', 'MONOCHROME2')
_COLOUR = ('RGB', 'YBR_FULL', 'YBR_FULL_422', 'YBR_ICT', 'YBR_RCT', 'YBR_PARTIAL_420')


def is_dicom_path(path: str) -> bool:
  """True for the file names lungjax reads as DICOM (.dcm, .dicom in any letter case)."""
  return path.lower().endswith(DICOM_EXTENSIONS)


def _pydicom(path: str) -> Any:
  """The pydicom module; BadImageError naming the file and the extra to install when it is absent."""
  try:
    import pydicom  # pylint: disable=g-import-not-at-top
    import pydicom.pixels  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as error:
    raise images.BadImageError(path, f'a DICOM file, and pydicom is not installed: {INSTALL_HINT}') from error
  return pydicom


def _install_hint(missing: Sequence[str]) -> str:
  """pip commands from pydicom's 'plugin - requires a>=1 and b>=2' strings."""
  commands = []
  for line in missing:
    _, _, required = line.partition(' - requires ')
    packages = [p for p in re.split(r', | and ', required) if p and p != 'numpy']
    if packages:
      commands.append('pip install ' + ' '.join(f"'{p}'" for p in packages))
  return ' or '.join(commands) or 'a pydicom pixel data plugin for it'


def read(path: str, *, stop_before_pixels: bool = False) -> Any:
  """pydicom.dcmread of `path`; BadImageError names the file when it is not DICOM or pydicom is absent."""
  pydicom = _pydicom(path)
  try:
    return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
  except pydicom.errors.InvalidDicomError as error:
    raise images.BadImageError(path, f'not a DICOM file ({error})') from error
  except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
    raise images.BadImageError(path, f'cannot read the DICOM file ({error or type(error).__name__})') from error


def _check_decodable(ds: Any, path: str) -> None:
  """Refuses, naming the file, what this module does not decode: no pixels, several frames, an uninstalled codec."""
  pydicom = _pydicom(path)
  if 'PixelData' not in ds:
    raise images.BadImageError(path, 'a DICOM file with no pixel data (PixelData)')
  frames = int(ds.get('NumberOfFrames', 1) or 1)
  if frames > 1:
    raise images.BadImageError(path, f'a multi-frame DICOM ({frames} frames): lungjax reads single-frame '
                                     'radiographs; save the frame to classify as its own file')
  interpretation = str(ds.get('PhotometricInterpretation', ''))
  if interpretation not in _MONOCHROME + _COLOUR:
    raise images.BadImageError(path, f'DICOM PhotometricInterpretation {interpretation!r} is not read (only '
                                     f'{", ".join(_MONOCHROME + _COLOUR)})')
  if interpretation in _COLOUR and int(ds.get('BitsStored', 8)) != 8:
    raise images.BadImageError(path, f'a {ds.BitsStored}-bit colour DICOM: only 8-bit colour is read')
  file_meta = getattr(ds, 'file_meta', None)
  syntax = file_meta.get('TransferSyntaxUID') if file_meta is not None else None
  if syntax is None:
    raise images.BadImageError(path, 'a DICOM file without a TransferSyntaxUID in its file meta information')
  syntax = pydicom.uid.UID(syntax)
  try:
    decoder = pydicom.pixels.get_decoder(syntax)
  except NotImplementedError as error:
    raise images.BadImageError(path, f'its pixel data is in transfer syntax {syntax.name} ({syntax}), which pydicom '
                                     'cannot decode; convert the file to an uncompressed syntax') from error
  if not decoder.is_available:
    raise images.BadImageError(
        path, f'its pixel data is compressed as {syntax.name} ({syntax}), which the installed pydicom cannot decode: '
              f'{_install_hint(decoder.missing_dependencies)}')


def _voi_range(ds: Any) -> tuple[float, float] | None:
  """The output range of pydicom.pixels.apply_voi_lut for `ds`, or None when it has no VOI transform."""
  sequence = ds.get('VOILUTSequence')
  if sequence and sequence[0].get('LUTDescriptor') is not None and sequence[0].get('LUTData') is not None:
    return 0.0, float(2**int(sequence[0].LUTDescriptor[2]) - 1)  # apply_voi_lut prefers the LUT.
  if ds.get('WindowCenter') is None or ds.get('WindowWidth') is None:
    return None
  bits = int(ds.BitsStored)  # As apply_windowing: the range of the stored values after the modality transform.
  if ds.get('ModalityLUTSequence'):
    low, high = 0.0, float(2**int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
  elif int(ds.get('PixelRepresentation', 0)) == 0:
    low, high = 0.0, float(2**bits - 1)
  else:
    low, high = float(-(2**(bits - 1))), float(2**(bits - 1) - 1)
  if ds.get('RescaleSlope') is not None and ds.get('RescaleIntercept') is not None:
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    low, high = sorted((low * slope + intercept, high * slope + intercept))
  return low, high


def grey_uint8(ds: Any, stored_HW: np.ndarray) -> tuple[np.ndarray, str]:
  """A monochrome DICOM's stored values (H x W) to displayed 8-bit grey, and how they were scaled.

  Modality transform, then VOI LUT or window (its output range to 0..255) or else min..max to 0..255; MONOCHROME1
  inverted. Unsigned values are masked to BitsStored bits (bits above it may hold overlays).
  """
  import pydicom.pixels  # pylint: disable=g-import-not-at-top
  bits = int(ds.get('BitsStored', stored_HW.dtype.itemsize * 8))
  if stored_HW.dtype.kind == 'u' and bits < stored_HW.dtype.itemsize * 8:
    stored_HW = stored_HW & np.asarray((1 << bits) - 1, stored_HW.dtype)
  values_HW = pydicom.pixels.apply_modality_lut(stored_HW, ds)
  voi = _voi_range(ds)
  if voi is not None:
    values_HW = pydicom.pixels.apply_voi_lut(values_HW, ds)
    low, high = voi
    how = 'VOI LUT' if ds.get('VOILUTSequence') else f'window {ds.WindowCenter}/{ds.WindowWidth}'
  else:
    low, high = float(np.min(values_HW)), float(np.max(values_HW))
    how = f'full range {low:g}..{high:g}'
  values_HW = np.asarray(values_HW, np.float64)
  scaled_HW = (values_HW - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values_HW)
  grey_HW = np.clip(np.rint(scaled_HW), 0, 255).astype(np.uint8)
  if str(ds.PhotometricInterpretation) == 'MONOCHROME1':
    grey_HW = 255 - grey_HW
    how += ', MONOCHROME1 inverted'
  return grey_HW, f'DICOM {bits}-bit {how}'


def decode_bytes_estimate(ds: Any) -> int:
  """The bytes decoding `ds` holds at most: the stored array, float64 modality and VOI copies, the 8-bit result."""
  pixels = int(ds.get('Rows', 0)) * int(ds.get('Columns', 0)) * int(ds.get('SamplesPerPixel', 1))
  return pixels * (int(ds.get('BitsAllocated', 16)) // 8 + 3 * 8 + 1)


def load(path: str) -> tuple[Image.Image, str]:
  """Decodes a single-frame DICOM file to an 8-bit PIL image (L, or RGB for colour) and how it was scaled.

  Reserves images.decode_budget for the decode. BadImageError names the file for whatever cannot be decoded.
  """
  ds = read(path)
  _check_decodable(ds, path)
  rows, columns = int(ds.get('Rows', 0)), int(ds.get('Columns', 0))
  if rows * columns > (Image.MAX_IMAGE_PIXELS or float('inf')):
    raise images.BadImageError(path, f'too many pixels ({columns}x{rows}, more than PIL.Image.MAX_IMAGE_PIXELS='
                                     f'{Image.MAX_IMAGE_PIXELS})')
  with images.decode_budget.reserve(decode_bytes_estimate(ds)):
    try:
      stored = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError, OSError) as error:
      raise images.BadImageError(path, f'cannot decode its DICOM pixel data ({error or type(error).__name__})'
                                 ) from error
    if str(ds.PhotometricInterpretation) in _COLOUR:  # pixel_array converts YBR to RGB.
      return Image.fromarray(np.asarray(stored, np.uint8), 'RGB'), 'DICOM 8-bit colour'
    if stored.ndim != 2:
      raise images.BadImageError(path, f'DICOM pixel data of shape {stored.shape}, not one grey frame')
    try:
      grey_HW, how = grey_uint8(ds, stored)
    except (ValueError, AttributeError, KeyError, IndexError) as error:  # E.g. a malformed window or LUT.
      raise images.BadImageError(path, f'cannot apply its DICOM modality/VOI transform ({error})') from error
  return Image.fromarray(grey_HW, 'L'), how


def _walk(ds: Any) -> Any:
  """Yields `ds` and every dataset nested in its sequences."""
  yield ds
  for element in ds:
    if element.VR == 'SQ':
      for item in element.value:
        yield from _walk(item)


def identifying_tags(ds: Any) -> tuple[str, ...]:
  """The findings for the audit: 'DICOM <keyword>' of each IDENTIFYING_TAGS attribute present with a value (at any
  depth), and 'DICOM private tags' when there are any; never their values."""
  found, private = set(), False
  for dataset in _walk(ds):
    found.update(k for k in IDENTIFYING_TAGS if k in dataset and dataset[k].value not in (None, '', b''))
    private = private or any(element.tag.is_private for element in dataset)
  return tuple(sorted(f'DICOM {k}' for k in found)) + (('DICOM private tags',) if private else ())


def write_stripped_copy(path: str, copy_path: str, root: str | None = None) -> list[str]:
  """Writes `path` to the new file `copy_path` without IDENTIFYING_TAGS and private tags (at any depth), with
  UID_TAGS replaced by one-way hashes of themselves and PatientIdentityRemoved set; the pixel data is not touched.

  Returns what was removed. Never overwrites: FileExistsError names an existing copy_path.
  """
  pydicom = _pydicom(path)
  ds = read(path)
  removed = list(identifying_tags(ds))
  for dataset in _walk(ds):
    for keyword in IDENTIFYING_TAGS:
      if keyword in dataset:
        delattr(dataset, keyword)
  ds.remove_private_tags()
  for dataset in _walk(ds):
    for keyword in UID_TAGS:
      if keyword in dataset:
        setattr(dataset, keyword, pydicom.uid.generate_uid(entropy_srcs=[str(dataset[keyword].value)]))
  if 'SOPInstanceUID' in ds and getattr(ds, 'file_meta', None) is not None:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  ds.PatientIdentityRemoved = 'YES'
  ds.DeidentificationMethod = 'lungjax audit --strip (basic profile tags)'  # LO: 64 characters at most.
  buffer = io.BytesIO()
  ds.save_as(buffer)
  from lungjax import workdir  # pylint: disable=g-import-not-at-top
  workdir.write_bytes(copy_path, buffer.getvalue(), root=root, exclusive=True)  # Never over a file; in root.
  return removed
