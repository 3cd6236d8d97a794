"""DICOM (.dcm) radiographs: decode to the 8-bit grey image lungjax reads, and list or remove the tags that
identify a patient. Needs pydicom (the [dicom] extra: pip install 'lungjax[dicom]').

Decoding follows the DICOM display pipeline for a single-frame greyscale image: the stored values (BitsStored
bits) go through the modality transform (Modality LUT, or RescaleSlope / RescaleIntercept), then the VOI transform
(the first VOI LUT, or WindowCenter / WindowWidth) whose output range maps to 0..255; without a VOI transform the
full range of the rescaled values (min..max) does, except for 8-bit values (BitsStored <= 8, within 0..255): those are
read as they are, as the same image saved as an 8-bit PNG is (no contrast stretch). MONOCHROME1 (higher values darker) is inverted so that, as in
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

from lungjax.data import decoding, dicom_profile

DICOM_EXTENSIONS = ('.dcm', '.dicom')
INSTALL_HINT = "pip install 'lungjax[dicom]'"
# The most common attributes that identify a patient (names, IDs, dates and places of the patient, the people and
# institution that made the image, free text). The audit and --strip go by the whole DICOM basic application level
# confidentiality profile (PS3.15 Annex E, table E.1-1; data/dicom_profile.py), which holds all of these: this list
# is checked as well, so that nothing here is ever left in a copy.
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
# robust_range: at most this fraction of a DICOM's pixels (at least one) may be clipped as saturated outliers.
OUTLIER_FRACTION = decoding.OUTLIER_FRACTION
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
    raise decoding.BadImageError(path, f'a DICOM file, and pydicom is not installed: {INSTALL_HINT}') from error
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
    raise decoding.BadImageError(path, f'not a DICOM file ({error})') from error
  except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
    raise decoding.BadImageError(path, f'cannot read the DICOM file ({error or type(error).__name__})') from error


def _check_decodable(ds: Any, path: str) -> None:
  """Refuses, naming the file, what this module does not decode: no pixels, several frames, an uninstalled codec."""
  pydicom = _pydicom(path)
  if 'PixelData' not in ds:
    raise decoding.BadImageError(path, 'a DICOM file with no pixel data (PixelData)')
  frames = int(ds.get('NumberOfFrames', 1) or 1)
  if frames > 1:
    raise decoding.BadImageError(path, f'a multi-frame DICOM ({frames} frames): lungjax reads single-frame '
                                     'radiographs; save the frame to classify as its own file')
  interpretation = str(ds.get('PhotometricInterpretation', ''))
  if interpretation not in _MONOCHROME + _COLOUR:
    raise decoding.BadImageError(path, f'DICOM PhotometricInterpretation {interpretation!r} is not read (only '
                                     f'{", ".join(_MONOCHROME + _COLOUR)})')
  if interpretation in _COLOUR and int(ds.get('BitsStored', 8)) != 8:
    raise decoding.BadImageError(path, f'a {ds.BitsStored}-bit colour DICOM: only 8-bit colour is read')
  file_meta = getattr(ds, 'file_meta', None)
  syntax = file_meta.get('TransferSyntaxUID') if file_meta is not None else None
  if syntax is None:
    raise decoding.BadImageError(path, 'a DICOM file without a TransferSyntaxUID in its file meta information')
  syntax = pydicom.uid.UID(syntax)
  try:
    decoder = pydicom.pixels.get_decoder(syntax)
  except NotImplementedError as error:
    raise decoding.BadImageError(path, f'its pixel data is in transfer syntax {syntax.name} ({syntax}), which pydicom '
                                     'cannot decode; convert the file to an uncompressed syntax') from error
  if not decoder.is_available:
    raise decoding.BadImageError(
        path, f'its pixel data is compressed as {syntax.name} ({syntax}), which the installed pydicom cannot decode: '
              f'{_install_hint(decoder.missing_dependencies)}')


def _has_voi_lut(ds: Any) -> bool:
  """Whether apply_voi_lut applies a VOI LUT (not a window) to `ds`."""
  sequence = ds.get('VOILUTSequence')
  return bool(sequence) and sequence[0].get('LUTDescriptor') is not None and sequence[0].get('LUTData') is not None


def _voi_range(ds: Any) -> tuple[float, float] | None:
  """The output range of pydicom.pixels.apply_voi_lut for `ds`, or None when it has no VOI transform."""
  sequence = ds.get('VOILUTSequence')
  if _has_voi_lut(ds):
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


def _lut_entries_range(ds: Any, declared: tuple[float, float]) -> tuple[tuple[float, float], tuple[str, ...]]:
  """The output range of the first VOI LUT: `declared` (0..2^n - 1, n its LUTDescriptor's bits), unless every entry
  fits in a smaller depth of decoding.COMMON_BIT_DEPTHS: then 0..2^b - 1 for the smallest such b, with a warning.

  Encoders that write 12-bit entries into a LUT declared 16-bit are common; read as declared, the image is 16x too
  dark (a mean near 8 of 255). The entries are read through pydicom's own apply_voi_lut (every input it maps).
  """
  import pydicom.pixels  # pylint: disable=g-import-not-at-top
  descriptor = ds.VOILUTSequence[0].LUTDescriptor
  entries, first = int(descriptor[0]) or 1 << 16, int(descriptor[1])
  if first >= 1 << 15:  # LUTDescriptor's first value is US or SS: as US, a negative first input wraps.
    first -= 1 << 16
  lut = pydicom.pixels.apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds)
  top = int(np.max(lut))
  declared_bits = int(descriptor[2])
  bits = next((b for b in decoding.COMMON_BIT_DEPTHS if top < 1 << b), declared_bits)
  if bits >= declared_bits:
    return declared, ()
  return (0.0, float((1 << bits) - 1)), (
      f'its VOI LUT is declared {declared_bits}-bit (LUTDescriptor) but its entries reach only {top}: read as '
      f'{bits}-bit entries (as declared it would be {1 << (declared_bits - bits)}x too dark)',)


def robust_range(values: np.ndarray) -> tuple[float, float, int]:
  """(low, high, clipped) of a DICOM's values without a VOI transform: their min..max, except that outliers far from
  the rest are clipped (the count returned): a single saturated pixel must not darken the whole image 16x.

  The k = max(1, OUTLIER_FRACTION of the pixels) brightest pixels are outliers when they reach more than the span of
  the rest (between the k-th lowest and k-th highest values) beyond it: then high is the k-th highest value; the
  same for the darkest at the low end. An image without such outliers keeps its full range exactly.
  """
  flat = np.asarray(values, np.float64).reshape(-1)
  low, high = float(flat.min()), float(flat.max())
  k = max(1, int(flat.size * OUTLIER_FRACTION))
  if flat.size <= 2 * k + 1:
    return low, high, 0
  ordered = np.partition(flat, (k, flat.size - 1 - k))
  core_low, core_high = float(ordered[k]), float(ordered[flat.size - 1 - k])
  core = core_high - core_low
  clipped = 0
  if core > 0 and high - core_high > core:
    clipped += int(np.count_nonzero(flat > core_high))
    high = core_high
  if core > 0 and core_low - low > core:
    clipped += int(np.count_nonzero(flat < core_low))
    low = core_low
  return low, high, clipped


def grey_uint8(ds: Any, stored_HW: np.ndarray) -> tuple[np.ndarray, str, tuple[str, ...]]:
  """A monochrome DICOM's stored values (H x W) to displayed 8-bit grey, how they were scaled, and warnings.

  Modality transform, then VOI LUT or window (its output range to 0..255; a LUT declared deeper than its entries
  reach is read at their depth, see _lut_entries_range) or else robust_range's min..max to 0..255 (far outliers
  clipped, warned); MONOCHROME1 inverted. Unsigned values are masked to BitsStored bits (bits above may hold
  overlays).
  """
  import pydicom.pixels  # pylint: disable=g-import-not-at-top
  bits = int(ds.get('BitsStored', stored_HW.dtype.itemsize * 8))
  if stored_HW.dtype.kind == 'u' and bits < stored_HW.dtype.itemsize * 8:
    stored_HW = stored_HW & np.asarray((1 << bits) - 1, stored_HW.dtype)
  values_HW = pydicom.pixels.apply_modality_lut(stored_HW, ds)
  voi = _voi_range(ds)
  warnings: tuple[str, ...] = ()
  if voi is not None:
    values_HW = pydicom.pixels.apply_voi_lut(values_HW, ds)
    low, high = voi
    how = 'VOI LUT' if ds.get('VOILUTSequence') else f'window {ds.WindowCenter}/{ds.WindowWidth}'
    if _has_voi_lut(ds):
      (low, high), warnings = _lut_entries_range(ds, voi)
      how += f' (entries read as 0..{high:g})' if warnings else ''
  elif bits <= 8 and float(np.min(values_HW)) >= 0 and float(np.max(values_HW)) <= 255:
    # 8-bit values are the grey levels themselves, read as the same image saved as a PNG is: not stretched.
    low, high, clipped = 0.0, 255.0, 0
    how = 'values as stored (0..255, as an 8-bit PNG)'
  else:
    full_low, full_high = float(np.min(values_HW)), float(np.max(values_HW))
    low, high, clipped = robust_range(values_HW)
    how = f'full range {low:g}..{high:g}'
    if clipped:
      how = f'range {low:g}..{high:g} (full {full_low:g}..{full_high:g})'
      warnings = (f'{clipped} pixel(s) far outside the rest of its values ({low:g}..{high:g}, of {full_low:g}..'
                  f'{full_high:g}; no VOI window) read as saturated outliers and clipped, so they do not darken the '
                  'whole image',)
  values_HW = np.asarray(values_HW, np.float64)
  scaled_HW = (values_HW - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values_HW)
  grey_HW = np.clip(np.rint(scaled_HW), 0, 255).astype(np.uint8)
  if str(ds.PhotometricInterpretation) == 'MONOCHROME1':
    grey_HW = 255 - grey_HW
    how += ', MONOCHROME1 inverted'
  return grey_HW, f'DICOM {bits}-bit {how}', warnings


def decode_bytes_estimate(ds: Any) -> int:
  """The bytes decoding `ds` holds at most: the stored array, float64 modality and VOI copies, the 8-bit result."""
  pixels = int(ds.get('Rows', 0)) * int(ds.get('Columns', 0)) * int(ds.get('SamplesPerPixel', 1))
  return pixels * (int(ds.get('BitsAllocated', 16)) // 8 + 3 * 8 + 1)


def load(path: str) -> tuple[Image.Image, str]:
  """Decodes a single-frame DICOM file to an 8-bit PIL image (L, or RGB for colour) and how it was scaled.

  Reserves decoding.decode_budget for the decode. BadImageError names the file for whatever cannot be decoded.
  What grey_uint8 warns about (clipped outliers, a LUT deeper than its entries) is in the image's
  info[decoding.WARNINGS_INFO_KEY] (load_image lists and logs it as it does its own warnings).
  """
  ds = read(path)
  _check_decodable(ds, path)
  rows, columns = int(ds.get('Rows', 0)), int(ds.get('Columns', 0))
  if rows * columns > (Image.MAX_IMAGE_PIXELS or float('inf')):
    raise decoding.BadImageError(path, f'too many pixels ({columns}x{rows}, more than PIL.Image.MAX_IMAGE_PIXELS='
                                     f'{Image.MAX_IMAGE_PIXELS})')
  with decoding.decode_budget.reserve(decode_bytes_estimate(ds)):
    try:
      stored = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError, OSError) as error:
      raise decoding.BadImageError(path, f'cannot decode its DICOM pixel data ({error or type(error).__name__})'
                                 ) from error
    if str(ds.PhotometricInterpretation) in _COLOUR:  # pixel_array converts YBR to RGB.
      return Image.fromarray(np.asarray(stored, np.uint8), 'RGB'), 'DICOM 8-bit colour'
    if stored.ndim != 2:
      raise decoding.BadImageError(path, f'DICOM pixel data of shape {stored.shape}, not one grey frame')
    try:
      grey_HW, how, warnings = grey_uint8(ds, stored)
    except (ValueError, AttributeError, KeyError, IndexError) as error:  # E.g. a malformed window or LUT.
      raise decoding.BadImageError(path, f'cannot apply its DICOM modality/VOI transform ({error})') from error
  image = Image.fromarray(grey_HW, 'L')
  image.info[decoding.WARNINGS_INFO_KEY] = tuple(f'{warning} ({how})' for warning in warnings)
  return image, how


def _walk(ds: Any) -> Any:
  """Yields `ds` and every dataset nested in its sequences."""
  yield ds
  for element in ds:
    if element.VR == 'SQ':
      for item in element.value:
        yield from _walk(item)


def identifying_tags(ds: Any) -> tuple[str, ...]:
  """The findings for the audit: 'DICOM <keyword>' of every attribute of the PS3.15 basic confidentiality profile
  (data/dicom_profile.py; and of IDENTIFYING_TAGS) present with a real value at any depth, and 'DICOM private tags'
  when there are any; never their values."""
  found = set(dicom_profile.findings(ds))
  private = 'DICOM private tags' in found
  found.discard('DICOM private tags')
  for dataset in _walk(ds):
    found.update(f'DICOM {k}' for k in IDENTIFYING_TAGS
                 if k in dataset and dataset[k].VR != 'SQ' and dicom_profile.has_real_value(dataset[k]))
    found.update(f'DICOM {k}' for k in IDENTIFYING_TAGS if k in dataset and dataset[k].VR == 'SQ' and
                 dataset[k].value and dicom_profile.action_for(dataset[k].tag) != 'D')
  return tuple(sorted(found)) + (('DICOM private tags',) if private else ())


def write_stripped_copy(path: str, copy_path: str, root: str | None = None) -> list[str]:
  """Writes `path` to the new file `copy_path` de-identified by the DICOM PS3.15 Basic Application Level
  Confidentiality Profile at every depth (data/dicom_profile.apply: its attributes removed, emptied or given dummy
  values, UIDs replaced by one-way hashes of themselves, private tags removed), IDENTIFYING_TAGS removed too, and
  PatientIdentityRemoved / DeidentificationMethod(CodeSequence) set; the pixel data is not touched. A copy in which
  the audit still finds an identifying attribute is never written (ValueError naming them).

  Returns what was found (identifying_tags of the original). Never overwrites: FileExistsError names copy_path.
  """
  pydicom = _pydicom(path)
  ds = read(path)
  removed = list(identifying_tags(ds))
  dicom_profile.apply(ds)
  for dataset in _walk(ds):
    for keyword in IDENTIFYING_TAGS:
      if keyword in dataset and dicom_profile.action_for(dataset[keyword].tag) is None:  # Beyond the profile.
        delattr(dataset, keyword)
  for dataset in _walk(ds):
    for keyword in UID_TAGS:
      if keyword in dataset and dicom_profile.action_for(dataset[keyword].tag) is None:  # Not hashed twice.
        setattr(dataset, keyword, pydicom.uid.generate_uid(entropy_srcs=[str(dataset[keyword].value)]))
  if 'SOPInstanceUID' in ds and getattr(ds, 'file_meta', None) is not None:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  dicom_profile.mark_deidentified(ds)
  if left := identifying_tags(ds):  # The profile was applied: nothing may be left that the audit calls identifying.
    raise ValueError(f'{path}: after the confidentiality profile its copy still holds {list(left)}: not written')
  buffer = io.BytesIO()
  ds.save_as(buffer)
  from lungjax.runtime import workdir  # pylint: disable=g-import-not-at-top
  workdir.write_bytes(copy_path, buffer.getvalue(), root=root, exclusive=True)  # Never over a file; in root.
  return removed
