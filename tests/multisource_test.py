"""Several labelled training sources (lungjax/data/sources.py) and every metric per source (issue 16, parts 1-2)."""

import collections
import copy
import json
import os
import shutil
import types

import jax
import numpy as np
import pytest
from PIL import Image

from configs import multisource, tiny
from conftest import CLASSES, striped_image, write_image_folder
from lungjax import config_check, evaluate, metrics as metrics_lib, train
from lungjax.runtime import fingerprint
from lungjax.report import markdown as report
from lungjax.data import batches as batches_lib, loading, sources, splits

EXTRA_FOLDERS = ('COVID', 'NORMAL')  # The second source names its folders otherwise and has no Viral Pneumonia.
MAPPING = 'COVID=Covid,NORMAL=Normal'


@pytest.fixture
def two_sources(tmp_path):
  """A main root (train/: 12 per class, 3 classes) and an extra source 'adult' (20 per class, 2 classes, other
  folder names, 64x64 JPEGs instead of 40x48 PNGs), with one image of the main source copied into the extra."""
  main = tmp_path / 'main'
  write_image_folder(str(main / 'train'), 12, seed=0)
  extra = tmp_path / 'adult'
  rng = np.random.default_rng(5)
  for label, name in enumerate(EXTRA_FOLDERS):
    os.makedirs(extra / name)
    for i in range(20):
      Image.fromarray(striped_image(label, rng, 64, 64)).save(extra / name / f'x{i:03d}.jpg', quality=95)
  shutil.copy(main / 'train' / 'Covid' / '003.png', extra / 'COVID' / 'copy.png')
  config = tiny.get_config()
  config.data.root = str(main)
  config.data.source_name = 'kids'
  config.data.extra_root = str(extra)
  config.data.extra_class_names = MAPPING
  return config


def test_extra_sources_read_the_fields(two_sources, tmp_path):
  found = sources.extra_sources(two_sources)
  assert [(s.name, s.mapping) for s in found] == [('adult', {'COVID': 'Covid', 'NORMAL': 'Normal'})]
  other = tmp_path / 'other'
  write_image_folder(str(other), 2, seed=9, classes=('Normal',))
  two_sources.data.extra_source_name = 'rsna'
  two_sources.data.extra_sources = (f'more={other}', f'same={other};Normal=Normal')
  assert [s.name for s in sources.extra_sources(two_sources)] == ['rsna', 'more', 'same']
  assert sources.main_source_name(two_sources) == 'kids'
  two_sources.data.source_name = ''
  assert sources.main_source_name(two_sources) == 'main'


@pytest.mark.parametrize('field, value, message', [
    ('extra_class_names', 'COVID=Adult', 'config.data.extra_class_names'),
    ('extra_source_name', 'kids', 'already used'),
    ('extra_root', '/no/such/folder', 'config.data.extra_root'),
    ('extra_sources', ('nameless',), r'config.data.extra_sources\[0\]'),
])
def test_bad_source_fields_are_refused_naming_the_field(two_sources, field, value, message):
  setattr(two_sources.data, field, value)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    config_check.validate(two_sources)


def test_class_names_without_extra_root_is_refused(tiny_config):
  tiny_config.data.extra_class_names = MAPPING
  with pytest.raises(ValueError, match='without config.data.extra_root'):
    config_check.validate(tiny_config)


def test_sources_are_decoded_mapped_and_resized_alike(two_sources):
  _, loaded = loading.load_training_folder(two_sources)
  decoded = loaded.decoded
  assert decoded.source_names == ('kids', 'adult')
  assert decoded.images_NHWC.shape == (36 + 41, 32, 32, 3)  # 40x48 PNGs and 64x64 JPEGs: one size.
  kids, adult = decoded.sources_N == 0, decoded.sources_N == 1
  assert np.bincount(decoded.labels_N[kids]).tolist() == [12, 12, 12]
  assert np.bincount(decoded.labels_N[adult], minlength=3).tolist() == [21, 20, 0]  # COVID→Covid, NORMAL→Normal.
  assert all(os.sep + 'COVID' + os.sep in decoded.paths[i] for i in np.flatnonzero(adult & (decoded.labels_N == 0)))
  assert sources.missing_classes(decoded, CLASSES) == {'adult': ['Viral Pneumonia']}


def test_the_main_source_still_needs_every_class(two_sources, tmp_path):
  shutil.rmtree(os.path.join(two_sources.data.root, 'train', 'Viral Pneumonia'))
  with pytest.raises(FileNotFoundError, match='Viral Pneumonia'):
    loading.load_training_folder(two_sources)


def test_an_unmapped_extra_folder_is_refused_naming_the_source(two_sources):
  two_sources.data.extra_class_names = 'COVID=Covid'
  with pytest.raises(ValueError, match=r"config.data.extra_root \(source 'adult'\).*NORMAL"):
    loading.load_training_folder(two_sources)


@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4, 5])
def test_validation_is_stratified_by_class_and_source_and_keeps_copies_together(two_sources, seed):
  two_sources.data.split_seed = seed
  data = loading.load_training_data(two_sources)
  counts = dict(collections.Counter(zip(data.val.sources_N.tolist(), data.val.labels_N.tolist())))
  # 25% of each (source, class): 3 of 12 kids per class; 5 of 20 (or 21) adult Covid and Normal.
  assert counts == {(0, 0): 3, (0, 1): 3, (0, 2): 3, (1, 0): 5, (1, 1): 5}
  copies = [os.path.join(two_sources.data.root, 'train', 'Covid', '003.png'),
            os.path.join(two_sources.data.extra_root, 'COVID', 'copy.png')]
  assert all(p in data.train.paths + data.val.paths for p in copies)
  assert sum(p in data.val.paths for p in copies) in (0, 2)  # The copy across sources is on one side.
  assert set(data.val.pixel_hashes).isdisjoint(data.train.pixel_hashes)
  groups = loading.split_groups(data.train_folder.decoded, two_sources)
  index = {p: i for i, p in enumerate(data.train_folder.decoded.paths)}
  assert groups[index[copies[0]]] == groups[index[copies[1]]]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_an_extra_source_leaves_the_main_sources_validation_images_in_place(two_sources, seed):
  """Strata order the main source first, so its seeded draw is the one a single-source run makes: comparing a run
  with and without the extra source compares them on the same main-source validation images."""
  two_sources.data.split_seed = seed
  os.remove(os.path.join(two_sources.data.extra_root, 'COVID', 'copy.png'))  # No group across the sources.
  with_extra = loading.load_training_data(two_sources)
  two_sources.data.extra_root, two_sources.data.extra_class_names = '', ''
  alone = loading.load_training_data(two_sources)
  main_val = [p for p in with_extra.val.paths if p.startswith(two_sources.data.root + os.sep)]
  assert sorted(main_val) == sorted(alone.val.paths)


def test_a_prepared_main_source_with_a_decoded_extra_gives_the_same_split_and_batches(two_sources, tmp_path):
  """The TFDS prepared path with several sources: the main source's pixels stay in its array_record files, the
  extra source is decoded from its folder; the split, sources, weights and batches equal decoding both."""
  from lungjax.data import pipeline, prepared  # pylint: disable=g-import-not-at-top  # TFDS only here.
  raw = loading.load_training_data(two_sources)
  config = copy.deepcopy(two_sources)
  config.data.prepared_dir = str(tmp_path / 'prepared')
  assert prepared.prepare(config)['splits']['train']['n_images'] == 36
  data = loading.load_training_data(config)
  assert isinstance(data.train.images_NHWC, sources.JoinedImages)
  assert any(isinstance(part, prepared.PreparedImages) for part in data.train.images_NHWC.parts)
  for raw_part, part in ((raw.train, data.train), (raw.val, data.val)):
    assert part.paths == raw_part.paths and part.source_names == raw_part.source_names == ('kids', 'adult')
    np.testing.assert_array_equal(part.labels_N, raw_part.labels_N)
    np.testing.assert_array_equal(part.sources_N, raw_part.sources_N)
    np.testing.assert_array_equal(np.asarray(part.images_NHWC), raw_part.images_NHWC)
  assert set(data.val.sources_N.tolist()) == {0, 1}
  weights_N = splits.example_weights(raw.train.labels_N, raw.train.sources_N, np.ones(3, np.float32), 'balanced')
  kwargs = dict(global_batch_size=4, num_epochs=2, seed=3, weights_N=weights_N)
  raw_batches = list(pipeline.train_dataset(raw.train.images_NHWC, raw.train.labels_N, **kwargs))
  batches = list(pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N, **kwargs))
  assert len(batches) == len(raw_batches) == 2 * (len(raw.train) // 4)
  for a, b in zip(raw_batches, batches):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  assert data.train.images_NHWC[3].shape == (32, 32, 3)


def test_folds_are_stratified_by_source():
  labels_N = np.asarray([0] * 8 + [0] * 4)
  sources_N = np.asarray([0] * 8 + [1] * 4)
  folds = splits.grouped_stratified_folds(sources.strata(labels_N, sources_N, 2), np.arange(12), 4, seed=0)
  for _, val in folds:
    assert sources_N[val].tolist() == [0, 0, 1]


def test_source_balanced_weights():
  labels_N = np.asarray([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
  sources_N = np.asarray([0, 0, 0, 0, 1, 1, 0, 0, 0, 0])
  class_weights_C = splits.balanced_class_weights(labels_N, 2)
  none_N = splits.example_weights(labels_N, sources_N, class_weights_C, 'none')
  np.testing.assert_allclose(none_N, class_weights_C[labels_N])
  balanced_N = splits.example_weights(labels_N, sources_N, class_weights_C, 'balanced')
  for label in (0, 1):  # Each class keeps its total weight...
    np.testing.assert_allclose(balanced_N[labels_N == label].sum(), none_N[labels_N == label].sum(), rtol=1e-6)
  # ...and within class 0 the two sources share it equally (4 images vs 2).
  np.testing.assert_allclose(balanced_N[(labels_N == 0) & (sources_N == 0)].sum(),
                             balanced_N[(labels_N == 0) & (sources_N == 1)].sum(), rtol=1e-6)
  with pytest.raises(ValueError, match='config.train.source_weighting'):
    splits.example_weights(labels_N, sources_N, class_weights_C, 'by_size')


def test_within_source_weights_balance_each_sources_classes_and_weigh_sources_by_size():
  # Source 0: classes 0 and 1, 6 + 2 images; source 1: classes 0 and 2, 1 + 3 images.
  labels_N = np.asarray([0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 2, 2])
  sources_N = np.asarray([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
  weights_N = splits.example_weights(labels_N, sources_N, np.asarray([9.0, 9.0, 9.0]), 'within_source')
  totals = {(s, c): weights_N[(sources_N == s) & (labels_N == c)].sum() for s, c in ((0, 0), (0, 1), (1, 0), (1, 2))}
  np.testing.assert_allclose([totals[0, 0], totals[0, 1]], [4.0, 4.0])  # Source 0: 8 images, its 2 classes halves.
  np.testing.assert_allclose([totals[1, 0], totals[1, 2]], [2.0, 2.0])  # Source 1: 4 images.
  np.testing.assert_allclose(weights_N.mean(), 1.0, rtol=1e-6)  # The class weights (9) are not used.
  # With one source it is the balanced class weighting.
  one_N = splits.example_weights(labels_N, np.zeros_like(labels_N), np.ones(3), 'within_source')
  np.testing.assert_allclose(one_N, splits.balanced_class_weights(labels_N, 3)[labels_N], rtol=1e-6)


def test_the_fingerprint_names_every_source(two_sources):
  data = loading.load_training_data(two_sources)
  abstract = types.SimpleNamespace(params={'w': np.zeros(1, np.float32)})
  print_ = fingerprint.run_fingerprint(two_sources, data, abstract, 2)['run']
  assert [s['name'] for s in print_['sources']] == ['kids', 'adult']
  assert print_['sources'][1]['class_names'] == {'COVID': 'Covid', 'NORMAL': 'Normal'}
  assert print_['sources'][1]['files']['n'] == 41
  two_sources.train.source_weighting = 'balanced'
  two_sources.data.extra_source_name = 'renamed'
  changed = fingerprint.diff(print_, fingerprint.run_fingerprint(two_sources, data, abstract, 2)['run'])
  assert any(line.startswith('sources') for line in changed) and any('source_weighting' in l for l in changed)


def test_a_single_source_fingerprint_has_no_sources_field(tiny_config):
  data = loading.load_training_data(tiny_config)
  abstract = types.SimpleNamespace(params={'w': np.zeros(1, np.float32)})
  assert 'sources' not in fingerprint.run_fingerprint(tiny_config, data, abstract, 2)['run']


def test_per_source_metrics_equal_each_source_alone(two_sources, tmp_path):
  data = loading.load_training_data(two_sources)
  val = data.val
  rng = np.random.default_rng(0)
  probabilities_NC = rng.dirichlet(np.ones(3), size=len(val))
  loaded = loading.FolderImages('val', val, ())
  metrics = evaluate.report_predictions(probabilities_NC, loaded, two_sources, str(tmp_path / 'out'), 'val', 1)
  written = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
  assert set(written['per_source']) == {'kids', 'adult'}
  for s, name in enumerate(('kids', 'adult')):
    rows = val.sources_N == s
    alone = metrics_lib.with_uncertainty(
        evaluate.evaluation_metrics(val.labels_N[rows], probabilities_NC[rows], CLASSES), val.labels_N[rows],
        probabilities_NC[rows], n_bootstrap=two_sources.eval.n_bootstrap, seed=two_sources.seed)
    assert json.loads(json.dumps(alone)) == written['per_source'][name]
    assert set(written['per_source'][name]) <= set(written)
  assert metrics['source_missing_classes'] == {'adult': ['Viral Pneumonia']}
  markdown = (tmp_path / 'out' / 'report.md').read_text()
  assert '## Per source' in markdown and '| adult | 10 |' in markdown and '| pooled | 19 |' in markdown
  assert 'adult has no Viral Pneumonia images' in markdown
  assert '## Caveat' in markdown


def test_one_source_has_no_per_source_section(tmp_path):
  metrics = {'per_source': {}, 'classes': list(CLASSES)}
  assert report._per_source_markdown(metrics) == []


def test_eval_folders_are_each_a_source(two_sources, tmp_path):
  a, b = tmp_path / 'A', tmp_path / 'B'
  write_image_folder(str(a), 2, seed=3)
  write_image_folder(str(b), 3, seed=4, classes=('Covid', 'Normal'))
  loaded = loading.load_folders(f'{a},{b}', two_sources)
  assert loaded.decoded.source_names == ('A', 'B')
  assert np.bincount(loaded.decoded.sources_N).tolist() == [6, 6]
  with pytest.raises(ValueError, match='config.eval.dir'):
    loading.load_folders(f'{a},{a}', two_sources)


@pytest.mark.slow
def test_two_source_training_and_eval_of_two_folders(two_sources, tmp_path):
  workdir = str(tmp_path / 'work')
  with two_sources.unlocked():
    two_sources.train.source_weighting = 'balanced'
    two_sources.checkpoint.best_metric = 'worst_source_macro_recall'
    two_sources.checkpoint.keep_latest = 10
    two_sources.train.num_epochs = 4
    two_sources.train.learning_rate = 1e-2  # Learnable within 4 epochs: the epochs' scores differ (issue 26).
  summary = train.train_and_evaluate(two_sources, workdir)
  assert summary['n_train'] + summary['n_val'] == 77
  # Every epoch's validation row has each source's macro recall; the best checkpoint is ranked by the lower one.
  history = summary['history']
  for row in history:
    assert row['val_worst_source_macro_recall'] == min(row['val_macro_recall/kids'], row['val_macro_recall/adult'])
  top = max(row['val_worst_source_macro_recall'] for row in history)
  # Epochs that do not all score chance: a best step picked by the lowest (or any other) score is caught.
  assert top > min(row['val_worst_source_macro_recall'] for row in history), history
  assert summary['best_step'] in [row['step'] for row in history if row['val_worst_source_macro_recall'] == top]
  val = json.loads(open(os.path.join(workdir, 'eval', 'val', 'metrics.json')).read())
  assert set(val['per_source']) == {'kids', 'adult'}
  assert summary['evaluations']['val']['per_source']['adult']['n_images'] == 10
  assert set(summary['evaluations']['val']['per_source']['adult']['recall']) == {'Covid', 'Normal'}
  a, b = tmp_path / 'A', tmp_path / 'B'
  write_image_folder(str(a), 2, seed=3)
  write_image_folder(str(b), 2, seed=4, classes=('Covid', 'Normal'))
  config = tiny.get_config()
  config.eval.dir = f'{a},{b}'
  metrics = evaluate.evaluate_checkpoint(config, workdir, ['eval.dir'])
  assert set(metrics['per_source']) == {'A', 'B'} and metrics['n_images'] == 10
  assert metrics['source_missing_classes'] == {'B': ['Viral Pneumonia']}
  assert 'Per source' in open(os.path.join(metrics['out_dir'], 'report.md')).read()


def test_the_multisource_config_documents_the_command():
  config = multisource.get_config()
  assert config.data.extra_root == '' and config.data.source_name == 'kaggle'
  assert '--config.data.extra_class_names=' in multisource.__doc__
  assert 'Viral Pneumonia' in config.eval.caveat


def test_per_image_weights_reach_the_loss():
  from tests.steps_test import _batch, _setup  # pylint: disable=g-import-not-at-top
  from lungjax import steps  # pylint: disable=g-import-not-at-top
  from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from lungjax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, model, tx, mesh, _ = _setup()
  create = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)
  class_weights_C = np.asarray([0.5, 2.0, 1.0], np.float32)
  train_step = steps.jit_train_step(model, tx, class_weights_C, mesh)
  plain = _batch(6)
  weights_N = class_weights_C[plain['label']]
  dataset = pipeline.train_dataset(plain['image'], plain['label'], global_batch_size=6, num_epochs=1, seed=0,
                                   weights_N=weights_N)
  batch = next(iter(dataset))
  np.testing.assert_allclose(batch['weight'], class_weights_C[batch['label']])
  sharding = mesh_lib.batch_sharded(mesh)
  # The step donates its state: a fresh, identical one each time.
  loss = lambda b: float(train_step(create(jax.random.PRNGKey(0)), mesh_lib.to_global_batch(b, sharding))[1]
                         .compute()['loss'])
  same = loss(plain), loss({**plain, 'weight': weights_N})
  np.testing.assert_allclose(same[0], same[1], rtol=1e-5)
  other = loss({**plain, 'weight': weights_N * np.asarray([1, 1, 1, 3, 3, 3], np.float32)})
  assert abs(other - same[0]) > 1e-3


def _source_row(n_images: int, accuracy: float, macro_recall: float, recalls: dict[str, float | None]) -> dict:
  """A per-source metrics row as evaluate writes it (no intervals): accuracy, macro recall, each class's recall."""
  return {'n_images': n_images, 'accuracy': accuracy, 'macro_avg': {'recall': macro_recall},
          'per_class': {c: {'recall': r, 'support': 0 if r is None else 3} for c, r in recalls.items()}}


def test_each_per_source_row_shows_that_sources_own_numbers():
  """Every cell of a source's row is its own value, never the pooled one (issue 26: a table showing the pooled
  accuracy in every row passed the suite)."""
  kids = _source_row(9, 0.111, 0.222, {'Covid': 0.333, 'Normal': 0.444, 'Viral Pneumonia': 0.555})
  adult = _source_row(10, 0.666, 0.777, {'Covid': 0.888, 'Normal': 0.999, 'Viral Pneumonia': None})
  pooled = {**_source_row(19, 0.5, 0.6, {'Covid': 0.7, 'Normal': 0.8, 'Viral Pneumonia': 0.9}),
            'classes': list(CLASSES), 'per_source': {'kids': kids, 'adult': adult}}
  rows = {line.split('|')[1].strip(): [cell.strip() for cell in line.split('|')[2:-1]]
          for line in report._per_source_markdown(pooled) if line.startswith('| ') and '---' not in line}
  assert rows['kids'] == ['9', '0.111', '0.222', '0.333', '0.444', '0.555']
  assert rows['adult'] == ['10', '0.666', '0.777', '0.888', '0.999', 'n/a (none)']
  assert rows['pooled'] == ['19', '0.500', '0.600', '0.700', '0.800', '0.900']


def test_within_source_weighting_gives_training_per_image_weights(two_sources):
  """batches.example_weights hands the pipeline splits.example_weights' per-image weights under 'within_source' (and
  'balanced'), None under 'none' (issue 26: returning None for 'within_source' trained on class weights silently)."""
  data = loading.load_training_data(two_sources)
  weights_C = batches_lib.class_weights(data.train.labels_N, two_sources)
  assert batches_lib.example_weights(two_sources, data.train, weights_C) is None  # 'none', the default.
  for weighting in ('within_source', 'balanced'):
    two_sources.train.source_weighting = weighting
    weights_N = batches_lib.example_weights(two_sources, data.train, weights_C)
    assert weights_N is not None and weights_N.shape == (len(data.train),), weighting
    np.testing.assert_allclose(weights_N, splits.example_weights(data.train.labels_N, data.train.sources_N, weights_C,
                                                                 weighting), rtol=1e-6)
    # Not the class weights alone: adult (no Viral Pneumonia) and kids weigh the same class differently.
    assert not np.allclose(weights_N, weights_C[data.train.labels_N]), weighting
