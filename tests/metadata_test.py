"""Metadata tables joined to images, grouping splits by a column (issue 30) and subgroups (issue 25, part 1)."""

import collections
import csv
import math
import os
import shutil

import numpy as np
import pytest

from configs import tiny
from conftest import CLASSES, write_image_folder
from lungjax import config_check
from lungjax.data import loading, metadata, splits


def write_table(path, rows, columns=('file', 'patientid', 'sex', 'age', 'view')):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({c: row.get(c, '') for c in columns})
  return str(path)


# The table's join.


def test_rows_join_by_path_relative_to_the_table_or_the_folder_or_by_base_name(tmp_path):
  folder = tmp_path / 'data' / 'images'
  paths = [str(folder / 'A' / 'x.png'), str(folder / 'B' / 'y.png'), str(folder / 'B' / 'z.png'),
           str(folder / 'A' / 'w.png')]
  table = metadata.Table(str(tmp_path / 'data' / 'metadata.csv'), 'file', ('file', 'sex'), (
      {'file': 'images/A/x.png', 'sex': 'F'},  # Relative to the table's folder (Cohen's layout).
      {'file': 'B/y.png', 'sex': 'M'},  # Relative to the image folder.
      {'file': 'z.png', 'sex': ''},  # A base name.
      {'file': 'gone.png', 'sex': 'M'}))  # No such image: counted, not dropped silently.
  joined = metadata.join(table, paths, str(folder))
  assert [None if r is None else r['sex'] for r in joined.rows_N] == ['F', 'M', '', None]
  assert joined.unmatched_rows == ('gone.png',)
  assert joined.unmatched_images == (paths[3],)
  summary = joined.summary()
  assert (summary['n_matched'], summary['n_unmatched_rows'], summary['n_unmatched_images']) == (3, 1, 1)


def test_an_ambiguous_base_name_is_an_error_naming_both_files(tmp_path):
  paths = [str(tmp_path / 'A' / 'x.png'), str(tmp_path / 'B' / 'x.png')]
  table = metadata.Table(str(tmp_path / 't.csv'), 'file', ('file',), ({'file': 'x.png'},))
  with pytest.raises(ValueError, match=r"'x.png' names two images.*A/x.png.*B/x.png"):
    metadata.join(table, paths, str(tmp_path))


def test_read_table_names_the_field_and_file_of_a_bad_table(tmp_path):
  path = write_table(tmp_path / 't.csv', [{'file': 'a.png'}, {'file': 'a.png'}])
  with pytest.raises(ValueError, match=r"config.eval.metadata=.*t.csv.*lines 2 and 3 both name 'a.png'"):
    metadata.read_table(path)
  with pytest.raises(ValueError, match=r"no column 'image'"):
    metadata.read_table(path, 'image')
  with pytest.raises(FileNotFoundError, match='config.data.metadata'):
    metadata.read_table(str(tmp_path / 'none.csv'), field='config.data.metadata')


# Grouping by a column.


def test_a_copy_across_patients_merges_their_groups():
  copy_groups_N = np.asarray([0, 1, 2, 3, 1, 5])  # Images 1 and 4 are copies.
  keys = [('s', 'A'), ('s', 'A'), ('s', 'B'), None, ('s', 'B'), None]  # 1 is patient A's film, 4 patient B's.
  assert metadata.merge_groups(copy_groups_N, keys).tolist() == [0, 0, 0, 3, 0, 5]
  assert metadata.merge_groups(np.arange(6), keys).tolist() == [0, 0, 2, 3, 2, 5]
  # The same value in another source is another patient.
  assert metadata.merge_groups(np.arange(3), [('s', 'A'), ('t', 'A'), None]).tolist() == [0, 1, 2]


@pytest.fixture
def patients(tmp_path):
  """A main root (train/: 30 per class) with a table of patients of 1 to 4 films each (their films in one class),
  5 films with no patient id, and patient P1's first film copied over another patient's film."""
  root = tmp_path / 'main'
  write_image_folder(str(root / 'train'), 30, seed=3)
  rng = np.random.default_rng(0)
  rows, patient = [], 0
  for name in CLASSES:
    files = sorted(os.listdir(root / 'train' / name))
    i = 0
    while i < len(files):
      size = int(rng.integers(1, 5))
      for f in files[i:i + size]:
        rows.append({'file': f'train/{name}/{f}', 'patientid': f'P{patient}', 'sex': 'MF'[patient % 2]})
      patient, i = patient + 1, i + size
  for row in rows[-5:]:
    row['patientid'] = ''
  first = {}
  for row in rows:
    first.setdefault(row['patientid'], row['file'])
  copied_from, copied_to = first['P1'], first['P7']
  shutil.copy(root / copied_from, root / copied_to)
  config = tiny.get_config()
  config.data.root = str(root)
  config.data.metadata = write_table(root / 'metadata.csv', rows)
  config.data.group_by = 'patientid'
  config.data.val_fraction = 0.25
  return config, {os.path.join(str(root), r['file']): r['patientid'] for r in rows}, (copied_from, copied_to)


def _patients_on_both_sides(train_paths, val_paths, patient_of):
  keys = [patient_of[p] or None for p in (*train_paths, *val_paths)]
  return metadata.groups_on_both_sides(keys, ['train'] * len(train_paths) + ['val'] * len(val_paths))


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_no_patient_on_both_sides_of_the_split_and_classes_stay_stratified(patients, seed):
  config, patient_of, _ = patients
  config.data.split_seed = seed
  data = loading.load_training_data(config)
  assert not _patients_on_both_sides(data.train.paths, data.val.paths, patient_of)
  assert data.grouping.description == 'copies and patientid'
  assert data.grouping.sources['main']['n_without_value'] == 5  # Counted: the main source is named 'main'.
  counts = collections.Counter(data.val.labels_N.tolist())
  for label in range(3):
    assert abs(counts[label] - 0.25 * 30) <= 3, counts  # Whole patients of up to 4 films: within 3 of 7.5.


def test_without_group_by_patients_straddle_the_split(patients):
  """The test above can fail: copies alone put some patient on both sides for these seeds."""
  config, patient_of, _ = patients
  config.data.group_by = ''
  straddling = 0
  for seed in range(4):
    config.data.split_seed = seed
    data = loading.load_training_data(config)
    straddling += len(_patients_on_both_sides(data.train.paths, data.val.paths, patient_of))
  assert straddling > 0


@pytest.mark.parametrize('seed', [0, 1])
def test_no_patient_in_two_folds_and_a_copy_joins_the_patients(patients, seed):
  config, patient_of, (copied_from, copied_to) = patients
  root, loaded = loading.load_training_folder(config)
  del root
  decoded = loaded.decoded
  grouped = loading.grouping(decoded, config, loaded.folder)
  index = {p: i for i, p in enumerate(decoded.paths)}
  base = config.data.root
  a, b = index[os.path.join(base, copied_from)], index[os.path.join(base, copied_to)]
  assert grouped.groups_N[a] == grouped.groups_N[b]  # The copy merged patient P1's group with P7's.
  p1 = [index[p] for p, v in patient_of.items() if v == 'P1']
  p7 = [index[p] for p, v in patient_of.items() if v == 'P7']
  assert len(set(grouped.groups_N[p1 + p7].tolist())) == 1
  folds = splits.grouped_stratified_folds(loading.split_strata(decoded), grouped.groups_N, 4, seed)
  fold_of = {}
  for k, (_, val_indices) in enumerate(folds):
    for i in val_indices:
      fold_of[decoded.paths[i]] = k
  by_patient = collections.defaultdict(set)
  for path, patient in patient_of.items():
    if patient:
      by_patient[patient].add(fold_of[path])
  assert all(len(f) == 1 for f in by_patient.values())
  assert fold_of[os.path.join(base, copied_from)] == fold_of[os.path.join(base, copied_to)]
  for _, val_indices in folds:  # Each fold within 4 of a quarter of each class.
    counts = collections.Counter(decoded.labels_N[val_indices].tolist())
    assert all(abs(counts[c] - 7.5) <= 4 for c in range(3)), counts


def test_config_check_names_a_missing_grouping_column_and_a_table_less_group_by(patients):
  config, _, _ = patients
  config.data.group_by = 'patient'
  with pytest.raises(ValueError, match=r"config.data.metadata.*group_by='patient' is not a column"):
    config_check.validate(config)
  config.data.metadata = ''
  with pytest.raises(ValueError, match=r"config.data.group_by='patient' needs a metadata table"):
    config_check.validate(config)


def test_an_extra_source_names_its_table_and_grouping_column(tmp_path):
  extra = write_image_folder(str(tmp_path / 'extra'), 2, seed=1, classes=('Covid',))
  table = write_table(tmp_path / 'meta.csv', [{'file': '000.png', 'patientid': '1'}, {'file': '001.png',
                                                                                      'patientid': '1'}])
  config = tiny.get_config()
  config.data.root = str(tmp_path)
  config.data.extra_sources = (f'adult={extra};metadata={table};group_by=patientid',)
  from lungjax.data import sources
  (source,) = sources.extra_sources(config)
  assert (source.metadata, source.group_by, source.mapping) == (table, 'patientid', {})
  assert sources.grouping_column(source, config) == 'patientid'
  config.data.extra_sources = (f'adult={extra};COVID=Covid;group_by=patientid',)
  with pytest.raises(ValueError, match=r'extra_sources\[0\].*need a metadata=CSV'):
    sources.extra_sources(config)


# Subgroups.


def test_parse_subgroups_reads_columns_and_bins():
  parsed = metadata.parse_subgroups('sex,view,age:0-18,18-40,40-65,65-')
  assert [s.column for s in parsed] == ['sex', 'view', 'age']
  age = parsed[2]
  assert age.bins == ((0, 18), (18, 40), (40, 65), (65, math.inf))
  assert [age.label(v) for v in ('17.9', '18', '64', '65', '90', '', '-1')] == [
      '0-18', '18-40', '40-65', '65-', '65-', 'unknown', 'outside the bins']
  assert parsed[0].label('') == 'unknown' and parsed[0].label('F') == 'F'
  assert [s.column for s in metadata.parse_subgroups('age:0-50,50-,sex')] == ['age', 'sex']
  for bad, match in (('18-40,sex', 'follows no'), ('age:0-20,10-30', 'ascend'), ('sex,,view', 'empty item'),
                     ('age:40-20', 'empty'), ('sex,sex', 'twice'), ('age:x-', 'not a bin')):
    with pytest.raises(ValueError, match=match):
      metadata.parse_subgroups(bad)


def test_a_numeric_column_named_without_bins_is_cut_at_its_quartiles(tmp_path):
  """'age' alone (issue 25's `--config.eval.subgroups=sex,view,age`) gives four groups, not one per year."""
  paths = [str(tmp_path / f'{i:03d}.png') for i in range(44)]
  # Ages 0..39 for films 0-39, film 40 empty, 41 and 42 'M'/'F' only, film 43 without a row.
  rows = [{'file': f'{i:03d}.png', 'age': str(i), 'sex': 'FM'[i % 2], 'view': str(i % 3)} for i in range(40)]
  rows += [{'file': '040.png', 'sex': 'F'}, {'file': '041.png', 'sex': 'M'}, {'file': '042.png', 'sex': 'F'}]
  joined = metadata.join(metadata.read_table(write_table(tmp_path / 'meta.csv', rows)), paths, str(tmp_path))
  age = metadata.with_bins(joined, metadata.Subgroup('age'))
  # By hand: quartiles of 0..39 are 9.75, 19.5, 29.25 -> 10, 20 (half to even), 29; the first bin starts at the
  # smallest value, the last is open.
  assert age.bins == ((0, 10), (10, 20), (20, 29), (29, math.inf)) and age.bins_from == 'quartiles'
  labels = metadata.subgroup_labels(joined, age)
  assert collections.Counter(labels) == {'0-10': 10, '10-20': 10, '20-29': 9, '29-': 11, 'unknown': 3,
                                         'no metadata row': 1}
  assert metadata.ordered_values(labels, age) == ['0-10', '10-20', '20-29', '29-', 'unknown', 'no metadata row']
  # Words, few distinct numbers (view: 0, 1, 2) and given bins stay as they are.
  for kept in (metadata.Subgroup('sex'), metadata.Subgroup('view'), metadata.parse_subgroups('age:0-18,18-')[0]):
    assert metadata.with_bins(joined, kept) == kept
  # Eleven distinct numbers are binned; ten are not (AUTO_BIN_MIN_VALUES).
  few = metadata.join(metadata.read_table(write_table(tmp_path / 'few.csv', rows[:metadata.AUTO_BIN_MIN_VALUES])),
                      paths, str(tmp_path))
  assert metadata.with_bins(few, metadata.Subgroup('age')).bins == ()
  more = metadata.join(metadata.read_table(write_table(tmp_path / 'more.csv',
                                                       rows[:metadata.AUTO_BIN_MIN_VALUES + 1])), paths, str(tmp_path))
  assert metadata.with_bins(more, metadata.Subgroup('age')).bins_from == 'quartiles'


def test_eval_and_audit_bin_a_numeric_column_named_without_bins(tmp_path):
  from lungjax import evaluate
  from lungjax.tools import audit
  folder = write_image_folder(str(tmp_path / 'eval'), 6, seed=2)
  paths = sorted(os.path.join(folder, c, f) for c in CLASSES for f in os.listdir(os.path.join(folder, c)))
  rows = [{'file': os.path.relpath(p, folder), 'age': str(20 + 3 * i), 'sex': 'FM'[i % 2]} for i, p in enumerate(paths)]
  config = tiny.get_config()
  config.eval.metadata, config.eval.subgroups = write_table(tmp_path / 'meta.csv', rows), 'sex,age'
  joined = metadata.join(metadata.read_table(config.eval.metadata), paths, folder)
  (sex, _), (age, labels) = evaluate.subgroup_values(joined, config)
  # 18 ages 20, 23, ..., 71: quartiles 32.75, 45.5, 58.25 -> 33, 46 (half to even), 58.
  assert sex.bins == () and age.labels == ['20-33', '33-46', '46-58', '58-'] and age.bins_from == 'quartiles'
  assert collections.Counter(labels) == {'20-33': 5, '33-46': 4, '46-58': 4, '58-': 5}
  _, columns = evaluate.subgroup_tables(np.zeros(18, int), np.eye(3)[np.zeros(18, int)], [(age, labels)],
                                        tuple(CLASSES), 1, 10, 0)
  assert columns['age']['bins_from'] == 'quartiles' and list(columns['age']['counts']) == age.labels
  found = audit.metadata_report(config.eval.metadata, 'file', 'age', '', paths, [folder], np.zeros(18, int),
                                np.arange(18))
  assert list(found['subgroups']['age']['counts']) == age.labels


def test_class_counts_per_subgroup_and_their_sentence():
  subgroup = metadata.Subgroup('view')
  counts = metadata.class_counts([0, 0, 0, 1, 1, 0], ['AP Supine', 'AP Supine', 'AP Supine', 'PA', 'PA', 'unknown'],
                                 subgroup, ('Covid', 'Normal'))
  assert counts == {'AP Supine': {'n_images': 3, 'per_class': {'Covid': 3, 'Normal': 0}},
                    'PA': {'n_images': 2, 'per_class': {'Covid': 0, 'Normal': 2}},
                    'unknown': {'n_images': 1, 'per_class': {'Covid': 1, 'Normal': 0}}}
  assert metadata.counts_sentence('AP Supine', counts['AP Supine']) == 'AP Supine: 3 of 3 are Covid'


# Metrics per subgroup (evaluate.report_predictions with config.eval.metadata and config.eval.subgroups).


@pytest.fixture
def evaluated(tmp_path):
  """A folder of 20 images per class; a table with sex (F for even indices, M for odd, 2 Covid films empty), an age
  (one per film) and no row for one Normal film; and probabilities that get exactly the films listed in
  `wrong` wrong."""
  folder = write_image_folder(str(tmp_path / 'eval'), 20, seed=4)
  config = tiny.get_config()
  config.eval.n_bootstrap = 200
  rows, ages = [], [5, 30, 50, 70]
  for name in CLASSES:
    for i in range(20):
      if name == 'Normal' and i == 19:
        continue
      sex = '' if name == 'Covid' and i in (0, 2) else 'FM'[i % 2]
      rows.append({'file': f'{name}/{i:03d}.png', 'sex': sex, 'age': str(ages[i % 4]), 'view': 'PA'})
  config.eval.metadata = write_table(tmp_path / 'meta.csv', rows + [{'file': 'Covid/999.png', 'sex': 'F'}])
  config.eval.subgroups = 'sex,age:0-18,18-65,65-'
  config.eval.subgroup_min_images = 5
  loaded = loading.load_folder(folder, config, require_all_classes=False)
  labels_N = loaded.decoded.labels_N
  # Covid recall: F 10 of 10 right except 4 wrong (i = 4, 6, 8, 10); M all right. Normal: every film right.
  wrong = {os.path.join(folder, 'Covid', f'{i:03d}.png') for i in (4, 6, 8, 10)}
  probabilities_NC = np.full((len(labels_N), 3), 0.1)
  for n, (path, label) in enumerate(zip(loaded.decoded.paths, labels_N)):
    probabilities_NC[n, (label + 1) % 3 if path in wrong else label] = 0.8
  return config, loaded, probabilities_NC


def test_every_metric_per_subgroup_as_per_source_with_gaps_and_small_groups(evaluated, tmp_path):
  import json
  from lungjax import evaluate, metrics as metrics_lib
  config, loaded, probabilities_NC = evaluated
  metrics = evaluate.report_predictions(probabilities_NC, loaded, config, str(tmp_path / 'out'), 'eval', 1)
  written = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
  labels_N = loaded.decoded.labels_N
  sex = {os.path.relpath(p, loaded.folder): None for p in loaded.decoded.paths}
  for row in metadata.read_table(config.eval.metadata).rows:
    sex[row['file']] = row['sex']
  sex_N = np.asarray([sex[os.path.relpath(p, loaded.folder)] for p in loaded.decoded.paths], dtype=object)
  assert set(written['per_subgroup']['sex']) == {'F', 'M'}  # 'unknown' (2) and 'no metadata row' (1) too small.
  for value in ('F', 'M'):
    rows = sex_N == value
    alone = metrics_lib.with_uncertainty(
        evaluate.evaluation_metrics(labels_N[rows], probabilities_NC[rows], CLASSES), labels_N[rows],
        probabilities_NC[rows], n_bootstrap=config.eval.n_bootstrap, seed=config.seed)
    assert json.loads(json.dumps(alone)) == written['per_subgroup']['sex'][value]  # per_source's structure.
  # By hand: F holds Covid films 4, 6, ..., 18 (8 films; 0 and 2 are unknown), 4 of them wrong.
  assert written['per_subgroup']['sex']['F']['per_class']['Covid']['recall'] == pytest.approx(4 / 8)
  assert written['per_subgroup']['sex']['M']['per_class']['Covid']['recall'] == 1.0
  described = written['subgroups']['columns']['sex']
  assert described['too_small'] == [{'value': 'unknown', 'n_images': 2}, {'value': 'no metadata row', 'n_images': 1}]
  assert described['counts']['F'] == {'n_images': 8 + 10 + 10, 'per_class': {'Covid': 8, 'Normal': 10,
                                                                             'Viral Pneumonia': 10}}
  gap = described['recall_gaps']['Covid']
  assert (gap['high'], gap['low'], gap['gap']) == ('M', 'F', pytest.approx(0.5))
  assert gap['interval'][0] > 0 and gap['interval'][1] <= 1.0
  assert described['recall_gaps']['Normal']['gap'] == 0.0
  age = written['subgroups']['columns']['age']
  assert age['bins'] == ['0-18', '18-65', '65-']
  assert {k: v['n_images'] for k, v in age['counts'].items()} == {'0-18': 15, '18-65': 30, '65-': 14,
                                                                   'no metadata row': 1}
  assert written['subgroups']['metadata']['unmatched_rows'] == ['Covid/999.png']
  assert written['subgroups']['metadata']['unmatched_images'] == [os.path.join(loaded.folder, 'Normal', '019.png')]
  markdown = (tmp_path / 'out' / 'report.md').read_text()
  assert '## Per subgroup' in markdown and '| F | 28 |' in markdown
  assert 'Too small to say anything (under 5 images, no numbers): unknown (2), no metadata row (1).' in markdown
  assert '- Covid recall: largest gap 0.500' in markdown
  assert metrics['per_subgroup'].keys() == {'sex', 'age'}


def test_recall_gap_with_too_few_images_reports_no_number():
  from lungjax import metrics as metrics_lib
  gap = metrics_lib.recall_gap(np.zeros(7, int), np.zeros(7, int), ['a'] * 5 + ['b'] * 2, 0, 5)
  assert gap['gap'] is None and gap['too_few'] == [{'group': 'b', 'n_class_images': 2}]
  assert 'fewer than two subgroups' in gap['reason']


def test_recall_gaps_leave_out_the_films_no_table_row_names(evaluated, tmp_path):
  import json
  from lungjax import evaluate
  config, loaded, probabilities_NC = evaluated
  config.eval.subgroup_min_images = 1
  # The one film without a row (Normal/019) predicted wrong: with it as a group, Normal's gap would be 1.0 against it.
  no_row = loaded.decoded.paths.index(os.path.join(loaded.folder, 'Normal', '019.png'))
  probabilities_NC = probabilities_NC.copy()
  probabilities_NC[no_row] = [0.8, 0.1, 0.1]
  evaluate.report_predictions(probabilities_NC, loaded, config, str(tmp_path / 'out'), 'eval', 1)
  written = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
  normal = written['subgroups']['columns']['sex']['recall_gaps']['Normal']
  assert metadata.NO_ROW not in normal['recalls'] and normal['gap'] == 0.0
  assert metadata.NO_ROW in written['per_subgroup']['sex']  # Still reported as a group of its own.


def test_subgroup_tables_against_a_hand_computed_table_with_seeds_pooled():
  from lungjax import evaluate
  # 8 films, classes 0/1; view PA films 0-3, AP films 4-7. Two seeds' predictions (repeats=2, seed-major blocks).
  labels_N = np.asarray([0, 0, 1, 1, 0, 0, 1, 1])
  seed_0 = [0, 0, 1, 1, 0, 1, 1, 0]  # PA all right; AP: film 5 (class 0) and film 7 (class 1) wrong.
  seed_1 = [0, 1, 1, 1, 0, 1, 1, 1]  # PA: film 1 wrong; AP: film 5 wrong.
  probabilities_NC = np.eye(2)[np.asarray(seed_0 + seed_1)] * 0.8 + 0.1
  values = [(metadata.Subgroup('view'), ['PA'] * 4 + ['AP'] * 4)]
  per_subgroup, columns = evaluate.subgroup_tables(np.tile(labels_N, 2), probabilities_NC, values, ('a', 'b'), 2,
                                                   200, 0, repeats=2)
  # By hand: accuracy PA (4 + 3) / 8, AP (2 + 3) / 8; class-0 recall PA (2 + 1) / 4, AP (1 + 1) / 4;
  # class-1 recall PA 4 / 4, AP (1 + 2) / 4.
  table = {'PA': (7 / 8, 3 / 4, 1.0), 'AP': (5 / 8, 2 / 4, 3 / 4)}
  for value, (accuracy, recall_a, recall_b) in table.items():
    row = per_subgroup['view'][value]
    assert row['accuracy'] == pytest.approx(accuracy)
    assert row['per_class']['a']['recall'] == pytest.approx(recall_a)
    assert row['per_class']['b']['recall'] == pytest.approx(recall_b)
    assert row['intervals']['repeats'] == 2
  assert columns['view']['counts']['PA'] == {'n_images': 4, 'per_class': {'a': 2, 'b': 2}}  # Films, not rows.
  gap_a, gap_b = columns['view']['recall_gaps']['a'], columns['view']['recall_gaps']['b']
  assert (gap_a['high'], gap_a['low'], gap_a['gap']) == ('PA', 'AP', pytest.approx(0.25))
  assert (gap_b['high'], gap_b['low'], gap_b['gap']) == ('PA', 'AP', pytest.approx(0.25))
  assert gap_a['n_class_images'] == {'PA': 2, 'AP': 2}
  assert gap_a['interval'][0] <= 0.25 <= gap_a['interval'][1]
  with pytest.raises(ValueError, match='repeat'):
    evaluate.subgroup_tables(labels_N, probabilities_NC, values, ('a', 'b'), 2, 10, 0, repeats=1)
