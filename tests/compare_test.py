"""compare: paired differences (B minus A) with bootstrap intervals, McNemar's exact test, and the command line."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lungjax import metrics as metrics_lib
from lungjax.tools import compare
from tests.conftest import CLASSES
from tests.ensemble_test import two_runs  # pylint: disable=unused-import  (a fixture: two tiny runs, seeds 0 and 1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_hot(predictions_N, num_classes=3):
  return np.eye(num_classes)[np.asarray(predictions_N)] * 0.8 + 0.2 / num_classes


@pytest.mark.parametrize('b, c, p', [(0, 6, 0.03125), (6, 0, 0.03125), (5, 5, 1.0), (0, 0, 1.0), (0, 1, 1.0),
                                     (1, 9, 2 * (1 + 10) / 1024), (2, 8, 2 * (1 + 10 + 45) / 1024)])
def test_mcnemar_exact_p_is_the_two_sided_binomial_tail(b, c, p):
  assert compare.mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_p_agrees_with_scipy_where_installed():
  stats = pytest.importorskip('scipy.stats')
  for b, c in [(3, 37), (12, 20), (40, 41), (0, 30), (400, 460)]:
    assert compare.mcnemar_exact_p(b, c) == pytest.approx(stats.binomtest(b, b + c).pvalue, rel=1e-9)


def test_mcnemar_rejects_negative_counts():
  with pytest.raises(ValueError, match='b=-1'):
    compare.mcnemar_exact_p(-1, 3)


def test_small_example_counted_by_hand():
  labels_N = np.asarray([0, 0, 0, 0, 1, 1, 2, 2])
  # A: right on 0,1,2,4,6 (5 of 8); B: right on 0,1,4,5,6,7 (6 of 8). b (only A): image 2; c (only B): 5, 7.
  probabilities_a_NC = _one_hot([0, 0, 0, 1, 1, 0, 2, 0])
  probabilities_b_NC = _one_hot([0, 0, 1, 1, 1, 1, 2, 2])
  result = compare.paired_comparison(labels_N, probabilities_a_NC, probabilities_b_NC, n_bootstrap=500, seed=3)
  assert result['accuracy_a'] == 5 / 8 and result['accuracy_b'] == 6 / 8
  assert result['discordant'] == {'a_right_b_wrong': 1, 'a_wrong_b_right': 2}
  assert result['both_right'] == 4 and result['both_wrong'] == 1
  assert result['mcnemar_p'] == 1.0  # 2 * P(X <= 1; 3, 1/2) = 2 * 4/8.
  # Macro recall as the evaluation reports it: A (3/4 + 1/2 + 1/2) / 3, B (2/4 + 1 + 1) / 3.
  for key, probabilities_NC in (('a', probabilities_a_NC), ('b', probabilities_b_NC)):
    expected = metrics_lib.classification_metrics(labels_N, probabilities_NC, CLASSES)['macro_avg']['recall']
    assert result[f'macro_recall_{key}'] == pytest.approx(expected)
  assert result['difference']['accuracy'][0] == pytest.approx(1 / 8)
  assert result['difference']['macro_recall'][0] == pytest.approx((2.5 - 1.75) / 3)
  assert result['difference_is'] == 'B minus A'


def test_a_model_compared_with_itself_differs_by_zero():
  labels_N = np.repeat([0, 1, 2], 10)
  probabilities_NC = np.random.default_rng(0).dirichlet(np.ones(3), size=30)
  result = compare.paired_comparison(labels_N, probabilities_NC, probabilities_NC, n_bootstrap=200, seed=0)
  assert result['difference'] == {'accuracy': [0.0, 0.0, 0.0], 'macro_recall': [0.0, 0.0, 0.0]}
  assert result['mcnemar_p'] == 1.0 and result['discordant'] == {'a_right_b_wrong': 0, 'a_wrong_b_right': 0}


def test_paired_interval_holds_the_difference_and_is_narrower_than_unpaired_for_correlated_models():
  rng = np.random.default_rng(7)
  labels_N = np.repeat([0, 1, 2], 100)
  correct_a_N = rng.random(300) < 0.7
  correct_b_N = correct_a_N.copy()
  correct_b_N[rng.choice(np.flatnonzero(~correct_a_N), 15, replace=False)] = True
  correct_b_N[rng.choice(np.flatnonzero(correct_a_N), 5, replace=False)] = False
  wrong_N = (labels_N + 1) % 3
  probabilities_a_NC = _one_hot(np.where(correct_a_N, labels_N, wrong_N))
  probabilities_b_NC = _one_hot(np.where(correct_b_N, labels_N, wrong_N))
  result = compare.paired_comparison(labels_N, probabilities_a_NC, probabilities_b_NC, n_bootstrap=2000, seed=0)
  assert result['discordant'] == {'a_right_b_wrong': 5, 'a_wrong_b_right': 15}
  assert result['mcnemar_p'] == pytest.approx(compare.mcnemar_exact_p(5, 15))
  for metric in ('accuracy', 'macro_recall'):
    value, low, high = result['difference'][metric]
    assert value == pytest.approx(10 / 300)
    assert low <= value <= high
    # The unpaired interval: A and B resampled independently.
    indices_a_BN, indices_b_BN = (metrics_lib.stratified_bootstrap_indices(labels_N, 2000, seed) for seed in (1, 2))
    samples_a = compare.resampled_scores(correct_a_N, labels_N, indices_a_BN)
    samples_b = compare.resampled_scores(correct_b_N, labels_N, indices_b_BN)
    unpaired_low, unpaired_high = np.quantile(samples_b[metric] - samples_a[metric], (0.025, 0.975))
    assert high - low < 0.6 * (unpaired_high - unpaired_low)
  assert result['difference']['accuracy'][1] > 0  # Paired, the gain of 10 in 300 images is clear; unpaired it is not.
  assert unpaired_low < 0


def test_mismatched_inputs_are_named():
  labels_N = np.asarray([0, 1, 2])
  with pytest.raises(ValueError, match='probabilities_b_NC'):
    compare.paired_comparison(labels_N, _one_hot([0, 1, 2]), _one_hot([0, 1]), n_bootstrap=10)
  with pytest.raises(ValueError, match='differ in shape'):
    compare.paired_comparison(labels_N, _one_hot([0, 1, 2]), _one_hot([0, 1, 1], 4), n_bootstrap=10)
  with pytest.raises(ValueError, match='n_bootstrap'):
    compare.paired_comparison(labels_N, _one_hot([0, 1, 2]), _one_hot([0, 1, 2]), n_bootstrap=0)


def _fake_workdir(path, classes):
  os.makedirs(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'name': 'fake', 'data': {'classes': list(classes)}}, f)
  return str(path)


def test_runs_trained_on_different_classes_are_refused_naming_both(tmp_path):
  workdir_a = _fake_workdir(tmp_path / 'a', CLASSES)
  workdir_b = _fake_workdir(tmp_path / 'b', ('Covid', 'Normal'))
  with pytest.raises(ValueError, match='different classes') as raised:
    compare.compare_runs(workdir_a, workdir_b, str(tmp_path / 'folder'))
  assert workdir_a in str(raised.value) and workdir_b in str(raised.value)
  assert not os.path.exists(os.path.join(workdir_a, 'compare'))


def test_default_out_dir_is_under_workdir_a():
  out_dir = compare.default_out_dir('/runs/a', '/runs/b/', '/data/external set/')
  assert out_dir.startswith('/runs/a/compare/b-external set-') and len(os.path.basename(out_dir)) == len('b-external set-') + 8
  assert compare.default_out_dir('/runs/a', '/runs/b', '/data/external set') == out_dir
  assert compare.default_out_dir('/runs/a', '/other/b', '/data/external set') != out_dir  # Another run named b.
  assert compare.default_out_dir('/runs/a', '/runs/b', '/site2/external set') != out_dir  # Another folder.


def _result():
  labels_N = np.asarray([0, 1, 2, 2])
  result = compare.paired_comparison(labels_N, _one_hot([0, 1, 0, 2]), _one_hot([0, 1, 2, 2]), n_bootstrap=50)
  run = {'workdir': '/runs/x', 'checkpoint_step': 4, 'model': 'cnn', 'config': 'tiny', 'image_size': 32}
  return {'a': run, 'b': {**run, 'workdir': '/runs/y'}, 'folder': '/data/f', 'classes': list(CLASSES), **result}


def test_outputs_never_overwrite_files_compare_did_not_write(tmp_path):
  out_dir = str(tmp_path / 'out')
  os.makedirs(out_dir)
  with open(os.path.join(out_dir, 'notes.txt'), 'w') as f:
    f.write('mine')
  paths = compare.write_outputs(_result(), out_dir)
  assert sorted(os.listdir(out_dir)) == ['.complete', '.lungjax-outputs.json', 'compare.json', 'compare.md', 'notes.txt']
  assert open(os.path.join(out_dir, 'notes.txt')).read() == 'mine'
  written = json.load(open(paths['compare.json']))
  assert written['tool'] == 'lungjax.compare' and written['difference']['accuracy'][0] == 0.25
  markdown = open(paths['compare.md']).read()
  assert 'B has the higher accuracy, by 25.0 points' in markdown and 'B minus A' in markdown
  compare.write_outputs(_result(), out_dir)  # Its own files: rewritten.

  for name, text in (('compare.json', '{"accuracy": 1}'), ('compare.md', '# notes of my own\n')):
    foreign = str(tmp_path / name.replace('.', '_'))
    os.makedirs(foreign)
    with open(os.path.join(foreign, name), 'w') as f:
      f.write(text)
    with pytest.raises(FileExistsError, match=name):
      compare.write_outputs(_result(), foreign)
    assert open(os.path.join(foreign, name)).read() == text
    assert os.listdir(foreign) == [name]


def test_outputs_go_through_the_safe_writer_never_through_a_link(tmp_path):
  """compare.json planted as a link to a file that looks like compare's own: workdir's writer refuses the link
  (what _check_ours alone would let through) and the target is untouched."""
  from lungjax.runtime import workdir as workdir_lib
  precious = tmp_path / 'precious.json'
  precious.write_text('{"tool": "lungjax.compare"}')
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  (out_dir / 'compare.json').symlink_to(precious)
  with pytest.raises(workdir_lib.ForeignFileError, match='compare.json'):
    compare.write_outputs(_result(), str(out_dir))
  assert precious.read_text() == '{"tool": "lungjax.compare"}'


def test_verdict_says_whether_the_interval_excludes_zero():
  assert 'excludes 0: B is better' in compare._verdict('accuracy', 0.1, 0.02, 0.18)
  assert 'excludes 0: A is better' in compare._verdict('accuracy', -0.1, -0.18, -0.02)
  assert 'includes 0' in compare._verdict('accuracy', 0.05, -0.01, 0.1)
  assert compare._verdict('accuracy', 0.0, 0.0, 0.0).startswith('A and B have the same accuracy')


@pytest.mark.slow
def test_a_run_compared_with_itself(two_runs, synthetic_root):
  _, workdir = two_runs[0]
  folder = os.path.join(synthetic_root, 'test')
  result = compare.compare_runs(workdir, workdir, folder, n_bootstrap=100)
  assert result['out_dir'] == compare.default_out_dir(workdir, workdir, folder)
  assert result['difference'] == {'accuracy': [0.0, 0.0, 0.0], 'macro_recall': [0.0, 0.0, 0.0]}
  assert result['mcnemar_p'] == 1.0 and result['n_images'] == 12
  assert result['a']['checkpoint_step'] == json.load(open(os.path.join(workdir, 'summary.json')))['best_step']
  assert sorted(os.listdir(result['out_dir'])) == ['.complete', '.lungjax-outputs.json', 'compare.json', 'compare.md']


@pytest.mark.slow
def test_two_runs_compared_on_their_validation_split(two_runs):
  (_, workdir_a), (_, workdir_b) = two_runs
  result = compare.compare_runs(workdir_a, workdir_b, '@validation', n_bootstrap=100)
  assert result['out_dir'] == compare.default_out_dir(workdir_a, workdir_b, '@validation')
  assert os.path.basename(result['out_dir']).startswith(f'{os.path.basename(workdir_b)}-validation-')
  for key, workdir in (('a', workdir_a), ('b', workdir_b)):
    validated = json.load(open(os.path.join(workdir, 'eval', 'val', 'metrics.json')))
    assert result['n_images'] == validated['n_images']
    assert result[f'accuracy_{key}'] == pytest.approx(validated['accuracy'])


@pytest.mark.slow
def test_two_runs_from_the_command_line(two_runs, synthetic_root, tmp_path):
  (_, workdir_a), (_, workdir_b) = two_runs
  folder = str(tmp_path / 'external')
  shutil.copytree(os.path.join(synthetic_root, 'test'), folder)
  os.rename(os.path.join(folder, 'Covid'), os.path.join(folder, 'COVID'))
  out_dir = str(tmp_path / 'out')
  os.makedirs(out_dir)
  open(os.path.join(out_dir, 'keep.txt'), 'w').write('not compare\'s')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  finished = subprocess.run([sys.executable, '-m', 'lungjax.tools.compare', workdir_a, workdir_b, f'--dir={folder}',
                             '--class_names=COVID=Covid', f'--out={out_dir}', '--n_bootstrap=300', '--seed=2'],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert os.path.join(out_dir, 'compare.md') in finished.stdout
  result = json.load(open(os.path.join(out_dir, 'compare.json')))
  assert set(result) >= {'a', 'b', 'n_images', 'accuracy_a', 'accuracy_b', 'difference', 'mcnemar_p', 'discordant'}
  assert open(os.path.join(out_dir, 'keep.txt')).read() == 'not compare\'s'
  assert result['n_images'] == 12 and result['n_bootstrap'] == 300 and result['seed'] == 2
  for key, workdir in (('a', workdir_a), ('b', workdir_b)):
    # The same images and checkpoint as the evaluation at the end of training.
    evaluated = json.load(open(os.path.join(workdir, 'eval', 'test', 'metrics.json')))
    assert result[key]['workdir'] == workdir and result[key]['model'] == 'cnn'
    assert result[key]['checkpoint_step'] == evaluated['checkpoint_step']
    assert result[f'accuracy_{key}'] == pytest.approx(evaluated['accuracy'])
    assert result[f'macro_recall_{key}'] == pytest.approx(evaluated['macro_avg']['recall'])
  value, low, high = result['difference']['accuracy']
  assert value == pytest.approx(result['accuracy_b'] - result['accuracy_a']) and low <= value <= high
  discordant = result['discordant']
  assert value == pytest.approx((discordant['a_wrong_b_right'] - discordant['a_right_b_wrong']) / 12)
  assert result['mcnemar_p'] == compare.mcnemar_exact_p(discordant['a_right_b_wrong'], discordant['a_wrong_b_right'])
  assert 'McNemar' in open(os.path.join(out_dir, 'compare.md')).read()

  unmapped = subprocess.run([sys.executable, '-m', 'lungjax.tools.compare', workdir_a, workdir_b, f'--dir={folder}',
                             f'--out={tmp_path / "unmapped"}'], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
  assert unmapped.returncode != 0 and 'class_names' in unmapped.stderr


# McNemar p-values of the old integer tail sum (main at ef26524), which scipy.stats.binomtest replaced.
_OLD_MCNEMAR = {(0,0): 1.0, (1,2): 1.0, (5,15): 0.04138946533203125, (3,3): 1.0, (0,9): 0.00390625, (20,40): 0.01348929373119186, (7,1): 0.0703125}


@pytest.mark.parametrize('b, c', sorted(_OLD_MCNEMAR))
def test_mcnemar_exact_p_equals_the_old_tail_sum(b, c):
  assert compare.mcnemar_exact_p(b, c) == pytest.approx(_OLD_MCNEMAR[b, c], rel=1e-12, abs=0)


# Per subgroup (--metadata, --subgroups; issue 25).


def _subgrouped():
  """13 films: 8 'F' (the hand-counted example above), 4 'M' that A gets all right and B half wrong, 1 unknown."""
  from lungjax.data import metadata
  labels_N = np.asarray([0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2])
  probabilities_a_NC = _one_hot([0, 0, 0, 1, 1, 0, 2, 0, 0, 0, 1, 1, 2])
  probabilities_b_NC = _one_hot([0, 0, 1, 1, 1, 1, 2, 2, 1, 2, 1, 1, 2])
  sex = ['F'] * 8 + ['M'] * 4 + [metadata.UNKNOWN]
  return labels_N, probabilities_a_NC, probabilities_b_NC, [(metadata.Subgroup('sex'), sex)]


def test_paired_difference_per_subgroup_counted_by_hand():
  labels_N, probabilities_a_NC, probabilities_b_NC, values = _subgrouped()
  result = compare.paired_by_subgroup(labels_N, probabilities_a_NC, probabilities_b_NC, values, min_images=3,
                                      n_bootstrap=400, seed=1)
  sex = result['columns']['sex']
  assert result['min_images'] == 3 and list(sex['groups']) == ['F', 'M']
  assert sex['too_small'] == [{'value': 'unknown', 'n_images': 1}]
  assert sex['n_images'] == {'F': 8, 'M': 4, 'unknown': 1}
  # The hand-computed table: (n, accuracy A, accuracy B, macro recall A, macro recall B, only A right, only B right,
  # McNemar p). F as in test_small_example_counted_by_hand; M: A right on all 4, B wrong on both Covid films.
  table = {'F': (8, 5 / 8, 6 / 8, 1.75 / 3, 2.5 / 3, 1, 2, 1.0),
           'M': (4, 1.0, 0.5, 1.0, 0.5, 2, 0, 0.5)}  # M: 2 * P(X <= 0; 2, 1/2) = 0.5.
  for value, (n, acc_a, acc_b, rec_a, rec_b, only_a, only_b, p) in table.items():
    row = sex['groups'][value]
    assert row['n_images'] == n
    assert (row['accuracy_a'], row['accuracy_b']) == (pytest.approx(acc_a), pytest.approx(acc_b))
    assert (row['macro_recall_a'], row['macro_recall_b']) == (pytest.approx(rec_a), pytest.approx(rec_b))
    assert row['discordant'] == {'a_right_b_wrong': only_a, 'a_wrong_b_right': only_b}
    assert row['mcnemar_p'] == pytest.approx(p)
    for metric, (a, b) in (('accuracy', (acc_a, acc_b)), ('macro_recall', (rec_a, rec_b))):
      diff, low, high = row['difference'][metric]
      assert diff == pytest.approx(b - a) and low <= diff <= high
    # Each subgroup's paired comparison is the whole's on its films alone.
    rows = np.asarray(values[0][1]) == value
    alone = compare.paired_comparison(labels_N[rows], probabilities_a_NC[rows], probabilities_b_NC[rows], 400, 1)
    assert row == alone
  # M: every resample keeps both Covid films B gets wrong; the accuracy difference is -0.5 in every resample.
  assert sex['groups']['M']['difference']['accuracy'] == [-0.5, -0.5, -0.5]


def test_per_subgroup_markdown_names_the_small_groups():
  labels_N, probabilities_a_NC, probabilities_b_NC, values = _subgrouped()
  result = _result()
  result['per_subgroup'] = {
      'metadata': {'table': '/t.csv', 'n_images': 13, 'n_matched': 12, 'n_unmatched_images': 1,
                   'n_unmatched_rows': 0},
      **compare.paired_by_subgroup(labels_N, probabilities_a_NC, probabilities_b_NC, values, 3, 100, 0)}
  text = compare.markdown(result)
  assert '## Per subgroup' in text and '### sex' in text
  assert '| M | 4 | 1.000 | 0.500 | -0.500 [-0.500, -0.500] | 1.000 | 0.500 |' in text
  assert 'Too small to say anything (under 3 images, no numbers): unknown (1).' in text


def test_subgroup_flags_are_checked_before_any_work(tmp_path):
  table = tmp_path / 'meta.csv'
  table.write_text('file,sex\na.png,F\n')
  with pytest.raises(ValueError, match='give both or neither'):
    compare.read_subgroups(str(table), '')
  with pytest.raises(ValueError, match="'view' is not a column of --metadata"):
    compare.read_subgroups(str(table), 'sex,view')
  with pytest.raises(FileNotFoundError, match='--metadata'):
    compare.read_subgroups(str(tmp_path / 'none.csv'), 'sex')
  assert [s.column for s in compare.read_subgroups(str(table), 'sex')[1]] == ['sex']
  workdir_a = _fake_workdir(tmp_path / 'a', CLASSES)
  with pytest.raises(ValueError, match='give both or neither'):
    compare.compare_runs(workdir_a, workdir_a, str(tmp_path), subgroups='sex')
  with pytest.raises(ValueError, match='min_images'):
    compare.compare_runs(workdir_a, workdir_a, str(tmp_path), min_images=0)


@pytest.mark.slow
def test_two_runs_compared_per_subgroup(two_runs, synthetic_root, tmp_path):
  from lungjax.data import metadata
  (_, workdir_a), (_, workdir_b) = two_runs
  folder = os.path.join(synthetic_root, 'test')
  files = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)
  table = tmp_path / 'meta.csv'
  table.write_text('file,site\n' + ''.join(f'{f},{"ab"[i % 2]}\n' for i, f in enumerate(files[:-1])))
  result = compare.compare_runs(workdir_a, workdir_b, folder, out_dir=str(tmp_path / 'out'), n_bootstrap=100,
                                metadata=str(table), subgroups='site', min_images=2)
  site = result['per_subgroup']['columns']['site']
  assert result['per_subgroup']['metadata']['n_unmatched_images'] == 1
  assert site['n_images'] == {'a': 6, 'b': 5, metadata.NO_ROW: 1} and set(site['groups']) == {'a', 'b'}
  assert site['too_small'] == [{'value': metadata.NO_ROW, 'n_images': 1}]
  written = json.load(open(tmp_path / 'out' / 'compare.json'))
  assert written['per_subgroup']['columns']['site']['groups']['a']['n_images'] == 6
  assert sum(g['discordant']['a_right_b_wrong'] for g in site['groups'].values()) <= \
      result['discordant']['a_right_b_wrong']
  assert '### site' in open(tmp_path / 'out' / 'compare.md').read()
