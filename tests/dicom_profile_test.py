"""data/dicom_profile.py: the PS3.15 E.1-1 table, what a dataset holds that it removes, and its application."""

import pytest

pydicom = pytest.importorskip('pydicom', reason='the [dicom] extra (pydicom) is not installed')
pytest.importorskip('dicomanonymizer', reason='the [dicom] extra (dicom-anonymizer) is not installed')
from pydicom.dataset import Dataset  # pylint: disable=g-import-not-at-top
from pydicom.tag import Tag  # pylint: disable=g-import-not-at-top

from lungjax.data import dicom_profile  # pylint: disable=g-import-not-at-top


def test_the_profile_table_is_the_standards():
  exact, patterns = dicom_profile.table()
  assert len(exact) > 600 and len(patterns) == 3
  for keyword, action in (('PatientName', 'Z'), ('AdmissionID', 'X'), ('StudyInstanceUID', 'U'),
                          ('PersonName', 'D'), ('InstitutionName', 'X'), ('Modality', None), ('Rows', None)):
    assert dicom_profile.action_for(Tag(keyword)) == action, keyword
  assert dicom_profile.action_for(Tag(0x0009, 0x1010)) == 'X'  # Private.
  assert dicom_profile.action_for(Tag(0x6002, 0x3000)) == 'X'  # Overlay data of any overlay group.


def _dataset() -> Dataset:
  ds = Dataset()
  ds.PatientName, ds.PatientID, ds.Modality = 'Doe^Jane', '', 'DX'
  ds.StudyInstanceUID = '1.2.3.4'
  ds.InstitutionName = 'ANONYMIZED'  # Already a dummy: not a finding.
  item = Dataset()
  item.PatientBirthDate = '19700101'
  ds.AnatomicRegionSequence = pydicom.Sequence([item])
  ds.add_new(Tag(0x0009, 0x1010), 'LO', 'vendor')
  return ds


def test_has_real_value_ignores_empty_values_and_the_profiles_dummies():
  ds = _dataset()
  assert dicom_profile.has_real_value(ds['PatientName'])
  assert not dicom_profile.has_real_value(ds['PatientID'])  # Empty.
  assert not dicom_profile.has_real_value(ds['InstitutionName'])  # A dummy.
  assert dicom_profile.has_real_value(ds['AnatomicRegionSequence'])


def test_findings_list_real_identifying_values_at_every_depth_and_private_tags_never_values():
  found = dicom_profile.findings(_dataset())
  assert found == ('DICOM PatientBirthDate', 'DICOM PatientName', 'DICOM private tags')
  assert not any('Doe' in f or '1970' in f for f in found)


def test_apply_removes_empties_and_hashes_and_leaves_nothing_to_find():
  ds = _dataset()
  changed = dicom_profile.apply(ds)
  assert 'DICOM PatientName: emptied' in changed and 'DICOM private tags: removed' in changed
  assert 'DICOM StudyInstanceUID: replaced by a hash' in changed and changed == sorted(changed)
  assert ds.StudyInstanceUID != '1.2.3.4' and ds.Modality == 'DX' and Tag(0x0009, 0x1010) not in ds
  assert dicom_profile.findings(ds) == ()
  again = _dataset()
  dicom_profile.apply(again)
  assert again.StudyInstanceUID == ds.StudyInstanceUID  # A one-way hash of the UID: one study, one new UID.
  dicom_profile.mark_deidentified(ds)
  assert ds.PatientIdentityRemoved == 'YES'
  assert ds.DeidentificationMethodCodeSequence[0].CodeValue == dicom_profile.PROFILE_CODE[0]
