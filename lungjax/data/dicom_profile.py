"""The DICOM PS3.15 Basic Application Level Confidentiality Profile (Annex E, table E.1-1), applied at every depth.

The attribute table is dicom-anonymizer's (KitwareMedical, BSD; the [dicom] extra), transcribed from the standard's
table E.1-1 (its 2026c edition): each attribute with its action, D (replace with a dummy), Z (zero length), X
(remove), U (replace the UID) or a choice of them. lungjax applies the table itself, to the file's dataset and to
every dataset nested in its sequences (dicom-anonymizer's own pass reaches nested attributes only through a sequence
the table names), with the strictest choice of each: a choice with X removes the attribute; Z empties it (a
sequence: no items); D gives a dummy value of its VR ('ANONYMIZED', date 00010101, 0 ...), and a D sequence (e.g.
ContentSequence) keeps its items, each cleaned by the same table. UIDs are replaced by UIDs derived from them by a
one-way hash, so the images of one study still share a study UID. Private attributes are removed (the profile's
'X' for private tags), and so are the curve data, overlay comments and overlay data repeating groups.

findings() lists, for the audit, every attribute of the table a dataset holds with a real value (never the values).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

PROFILE_EDITION = 'dicomfields_2026c'  # dicom-anonymizer's transcription of PS3.15 table E.1-1.
INSTALL_HINT = "pip install 'lungjax[dicom]' (pydicom and dicom-anonymizer)"
# Dummy values for D, by VR (those of dicom-anonymizer's replace, which follows the standard's examples).
DUMMY_TEXT = 'ANONYMIZED'
_DUMMY_BY_VR: dict[str, Any] = {
    **{vr: DUMMY_TEXT for vr in ('AE', 'CS', 'LO', 'LT', 'PN', 'SH', 'ST', 'UC', 'UT')},
    'AS': '000Y', 'UR': 'http://anonymized.invalid', 'DS': '0', 'IS': '0',
    **{vr: 0 for vr in ('FD', 'FL', 'SS', 'US', 'SL', 'UL')},
    'DA': '00010101', 'DT': '00010101010101.000000+0000', 'TM': '000000.00', 'OB': b'', 'UN': b'',
}
_DUMMIES = {str(v) for v in _DUMMY_BY_VR.values()} | {''}
# The code of what was applied (PS3.16 CID 7050): DeidentificationMethodCodeSequence's item.
PROFILE_CODE = ('113100', 'DCM', 'Basic Application Confidentiality Profile')


class ProfileUnavailableError(ImportError):
  """dicom-anonymizer (the attribute table) is not installed."""


@functools.cache
def table() -> tuple[dict[tuple[int, int], str], tuple[tuple[int, int, int, int, str], ...]]:
  """({(group, element): action}, ((group, element, group mask, element mask, action), ...)): the profile's
  attributes and its repeating-group patterns, each with the strictest of its choices: 'X', 'Z', 'D' or 'U'."""
  try:
    from dicomanonymizer import dicomfields_selector  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ProfileUnavailableError(
        f'the DICOM confidentiality profile needs dicom-anonymizer: {INSTALL_HINT}') from error
  categories = dicomfields_selector.dicom_anonymization_database_selector(PROFILE_EDITION)
  strictest = {'D_TAGS': 'D', 'Z_TAGS': 'Z', 'X_TAGS': 'X', 'U_TAGS': 'U', 'Z_D_TAGS': 'Z', 'X_Z_TAGS': 'X',
               'X_D_TAGS': 'X', 'X_Z_D_TAGS': 'X', 'X_Z_U_STAR_TAGS': 'X'}
  order = {'X': 0, 'Z': 1, 'U': 2, 'D': 3}  # Where the standard lists a tag twice, the stricter action wins.
  exact: dict[tuple[int, int], str] = {}
  patterns: dict[tuple[int, int, int, int], str] = {}
  for category, action in strictest.items():
    for tag in categories[category]:
      target = exact if len(tag) == 2 else patterns
      key = tuple(tag)
      if key not in target or order[action] < order[target[key]]:
        target[key] = action
  return exact, tuple((*k, v) for k, v in patterns.items())


def action_for(tag: Any) -> str | None:
  """The profile's action for a tag (a pydicom BaseTag): 'X', 'Z', 'D', 'U', or None where the profile keeps it.
  Private tags are 'X'."""
  if tag.is_private:
    return 'X'
  exact, patterns = table()
  found = exact.get((tag.group, tag.element))
  if found is not None:
    return found
  for group, element, group_mask, element_mask, action in patterns:
    if tag.group & group_mask == group & group_mask and tag.element & element_mask == element & element_mask:
      return action
  return None


def _datasets(ds: Any) -> Iterator[Any]:
  """ds and every dataset nested in its sequences (depth first)."""
  yield ds
  for element in ds:
    if element.VR == 'SQ' and element.value is not None:
      for item in element.value:
        yield from _datasets(item)


def _name(tag: Any) -> str:
  from pydicom import datadict  # pylint: disable=g-import-not-at-top
  keyword = datadict.keyword_for_tag(tag) if not tag.is_private else ''
  return keyword or f'({tag.group:04X},{tag.element:04X})'


def has_real_value(element: Any) -> bool:
  """Whether an attribute holds a value that is neither empty nor one of the profile's dummies."""
  value = element.value
  if value is None:
    return False
  if element.VR == 'SQ':
    return len(value) > 0
  if isinstance(value, (bytes, bytearray)):
    return len(value) > 0
  values = list(value) if element.VM > 1 else [value]
  return any(str(v) not in _DUMMIES for v in values)


def findings(ds: Any) -> tuple[str, ...]:
  """'DICOM <keyword>' of every attribute the profile removes, empties or replaces that ds holds with a real value,
  at any depth (a D sequence such as ContentSequence is not itself listed: its items' attributes are), and 'DICOM
  private tags' when there are any. UIDs (U) are not listed: --strip replaces them. Never the values."""
  found, private = set(), False
  for dataset in _datasets(ds):
    for element in dataset:
      if element.tag.is_private:
        private = True
        continue
      action = action_for(element.tag)
      if action in ('X', 'Z', 'D') and not (action == 'D' and element.VR == 'SQ') and has_real_value(element):
        found.add(f'DICOM {_name(element.tag)}')
  return tuple(sorted(found)) + (('DICOM private tags',) if private else ())


def apply(ds: Any) -> list[str]:
  """Applies the profile to ds in place, at every depth (see the module docstring); returns what it changed,
  'DICOM <keyword>: removed / emptied / replaced' (UIDs: 'replaced by a hash'), sorted."""
  import pydicom  # pylint: disable=g-import-not-at-top
  changed = set()
  for dataset in list(_datasets(ds)):
    for element in list(dataset):
      action = action_for(element.tag)
      if action is None:
        continue
      name = 'private tags' if element.tag.is_private else _name(element.tag)
      if action == 'X':
        del dataset[element.tag]
        changed.add(f'DICOM {name}: removed')
      elif action == 'Z':
        element.value = pydicom.Sequence([]) if element.VR == 'SQ' else (b'' if element.VR in ('OB', 'UN', 'OW')
                                                                         else None)
        changed.add(f'DICOM {name}: emptied')
      elif action == 'U':
        if element.VR == 'UI' and element.value:
          values = list(element.value) if element.VM > 1 else [element.value]
          hashed = [pydicom.uid.generate_uid(entropy_srcs=[str(v)]) for v in values]
          element.value = hashed if element.VM > 1 else hashed[0]
          changed.add(f'DICOM {name}: replaced by a hash')
        elif element.VR != 'UI':
          del dataset[element.tag]
          changed.add(f'DICOM {name}: removed')
      elif element.VR != 'SQ':  # D; a D sequence keeps its items, cleaned on their own turn of this loop.
        if element.VR in _DUMMY_BY_VR:
          element.value = _DUMMY_BY_VR[element.VR]
          changed.add(f'DICOM {name}: replaced')
        else:  # No dummy of this VR (OW, AT ...): removed, the stricter choice.
          del dataset[element.tag]
          changed.add(f'DICOM {name}: removed')
  if 'SOPInstanceUID' in ds and getattr(ds, 'file_meta', None) is not None:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  return sorted(changed)


def mark_deidentified(ds: Any) -> None:
  """PatientIdentityRemoved = YES, DeidentificationMethod and its code sequence naming this profile."""
  import pydicom  # pylint: disable=g-import-not-at-top
  ds.PatientIdentityRemoved = 'YES'
  ds.DeidentificationMethod = 'lungjax audit --strip: PS3.15 E.1-1 basic profile'  # LO: 64 characters at most.
  code = pydicom.Dataset()
  code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
  ds.DeidentificationMethodCodeSequence = pydicom.Sequence([code])
