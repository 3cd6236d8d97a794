"""Leave one source out (lungjax/experiments/loso.py, --config.cv.by_source=True; issue 23 part 1)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from conftest import striped_image, write_image_folder
from lungjax import config_check
from lungjax.experiments import crossval, loso
from lungjax.data import images, loading


@pytest.fixture
def two_sources(tmp_path):
  """'kids' (root train/: 3 classes, 10 each) and 'adult' (COVID / NORMAL folders, 10 each, 40x48 JPEGs), with one
  image of kids copied into adult."""
  main = tmp_path / 'main'
  write_image_folder(str(main / 'train'), 10, seed=0)
  extra = tmp_path / 'adult'
  rng = np.random.default_rng(5)
  for label, name in enumerate(('COVID', 'NORMAL')):
    os.makedirs(extra / name)
    for i in range(10):
      Image.fromarray(striped_image(label, rng)).save(extra / name / f'x{i:03d}.jpg', quality=95)
  shutil.copy(main / 'train' / 'Normal' / '003.png', extra / 'NORMAL' / 'copy.png')
  config = tiny.get_config()
  config.data.root = str(main)
  config.data.source_name = 'kids'
  config.data.extra_sources = (f'adult={extra};COVID=Covid,NORMAL=Normal',)
  config.cv.by_source = True
  config.eval.n_bootstrap = 50
  return config


def test_held_out_split_drops_copies_and_unseen_classes():
  labels_N = np.asarray([0, 1, 2, 0, 1, 0, 1])
  sources_N = np.asarray([0, 0, 0, 1, 1, 2, 2])
  groups_N = np.asarray([0, 1, 2, 3, 1, 5, 6])  # Image 4 (source 1) copies image 1 (source 0).
  decoded = images.DecodedImages(np.zeros((7, 2, 2, 3), np.uint8), labels_N, tuple(map(str, range(7))),
                                 tuple(map(str, range(7))), np.zeros((7, 4), np.float32), (), (), sources_N,
                                 ('a', 'b', 'c'))
  pool, evaluated, unseen, dropped = loso.held_out_split(decoded, groups_N, 0)
  assert pool.tolist() == [3, 5, 6] and dropped.tolist() == [4]
  assert evaluated.tolist() == [0, 1] and unseen.tolist() == [2]  # No other source holds class 2.
  pool, evaluated, unseen, dropped = loso.held_out_split(decoded, groups_N, 1)
  assert pool.tolist() == [0, 2, 5, 6] and dropped.tolist() == [1]
  assert evaluated.tolist() == [3, 4] and not len(unseen)


def test_by_source_is_checked(two_sources):
  config_check.validate(two_sources)
  two_sources.cv.folds = 3
  with pytest.raises(ValueError, match='config.cv.by_source=True and config.cv.folds=3'):
    config_check.validate(two_sources)
  two_sources.cv.folds = 0
  two_sources.data.extra_sources = ()
  with pytest.raises(ValueError, match='at least two training sources'):
    config_check.validate(two_sources)


def test_each_source_is_held_out_over_seeds_and_tabled(two_sources, tmp_path):
  two_sources.seeds = 2
  workdir = str(tmp_path / 'run')
  result = crossval.run(two_sources, workdir)
  assert result['sources'] == ['kids', 'adult'] and result['seeds'] == [0, 1]
  written = json.load(open(os.path.join(workdir, 'loso', 'metrics.json')))
  assert set(written['held_out_source']) == {'kids', 'adult'}
  kids, adult = written['held_out_source']['kids'], written['held_out_source']['adult']
  # kids held out: its Viral Pneumonia is a class adult lacks (not scored); the copy in adult is not trained on.
  assert kids['unseen_classes'] == ['Viral Pneumonia'] and kids['n_unseen_class_images'] == 10
  assert kids['n_images'] == 20 and kids['n_dropped_copies'] == 1
  assert kids['n_train'] + kids['n_val'] == 20  # adult's 21 less the copy.
  assert adult['n_images'] == 21 and adult['n_dropped_copies'] == 1 and not adult['unseen_classes']
  assert adult['n_train'] + adult['n_val'] == 29  # kids' 30 less the copy's original.
  for name, held in written['held_out_source'].items():
    assert len(held['per_seed']) == 2 and [m['seed'] for m in held['per_seed']] == [0, 1]
    assert held['pooled']['n_images'] == 2 * held['n_images']
    assert held['pooled']['intervals']['repeats'] == 2
    values = held['summary']['macro_avg.recall']['values']
    assert values == [m['macro_avg']['recall'] for m in held['per_seed']]
    assert held['gap']['macro_avg.recall'] == pytest.approx(
        held['trained_sources']['summary']['macro_avg.recall']['mean'] - np.mean(values))
    for seed in (0, 1):
      run_dir = loso.held_out_dir(workdir, name, seed)
      summary = json.load(open(os.path.join(run_dir, 'summary.json')))
      assert summary['n_train'] == held['n_train']
      with open(os.path.join(run_dir, 'eval', 'held_out', 'predictions.csv')) as f:
        assert len(f.readlines()) == 1 + held['n_images']
  assert written['pooled']['n_images'] == 2 * (20 + 21)
  means = {n: h['summary']['macro_avg.recall']['mean'] for n, h in written['held_out_source'].items()}
  assert written['selection']['value'] == min(means.values())
  assert written['selection']['source'] == min(means, key=means.get)
  table = open(os.path.join(workdir, 'loso', 'report.md')).read()
  assert '| kids | 20 |' in table and '| adult | 21 |' in table and 'worst_held_out_macro_recall' in table
  assert 'Viral Pneumonia (a class no other source holds) not scored' in table


def test_held_out_images_are_the_source_images(two_sources):
  _, loaded = loading.load_training_folder(two_sources)
  groups_N = np.asarray(loading.split_groups(loaded.decoded, two_sources))
  _, evaluated, _, _ = loso.held_out_split(loaded.decoded, groups_N, 1)
  assert all('/adult/' in loaded.decoded.paths[i] for i in evaluated)


def test_subgroups_per_held_out_source_per_seed_pooled_and_tabled(two_sources, tmp_path):
  """config.eval.metadata names adult's films only (sex by parity, age 30 or 70): adult's held-out scores come per
  subgroup, per seed and with the seeds pooled, equal to those counted from its predictions.csv files; kids has no
  row (said so); the table over every held-out image puts kids' films in 'no metadata row'."""
  import csv
  from lungjax.data import metadata
  adult = two_sources.data.extra_sources[0].split('=', 1)[1].split(';')[0]
  rows = ['file,sex,age']
  for name in ('COVID', 'NORMAL'):
    for i in range(10):
      rows.append(f'{name}/x{i:03d}.jpg,{"FM"[i % 2]},{30 if i < 5 else 70}')
  table = tmp_path / 'adult.csv'
  table.write_text('\n'.join(rows) + '\n')
  two_sources.seeds = 2
  two_sources.eval.metadata = str(table)
  two_sources.eval.subgroups = 'sex,age:0-50,50-'
  two_sources.eval.subgroup_min_images = 3
  config_check.validate(two_sources)
  workdir = str(tmp_path / 'run')
  crossval.run(two_sources, workdir)
  written = json.load(open(os.path.join(workdir, 'loso', 'metrics.json')))
  held = written['held_out_source']['adult']
  sex_of = {os.path.join(adult, r.split(',')[0]): r.split(',')[1] for r in rows[1:]}
  # By hand, from each seed's predictions: per subgroup accuracy and Covid recall, and their pooled means.
  by_seed = []
  for seed in (0, 1):
    with open(os.path.join(loso.held_out_dir(workdir, 'adult', seed), 'eval', 'held_out', 'predictions.csv')) as f:
      by_seed.append(list(csv.DictReader(f)))
  files = [r['file'] for r in by_seed[0]]
  assert files == [r['file'] for r in by_seed[1]] and len(files) == 21  # 20 with a row, and copy.png.
  sex_N = [sex_of.get(f, metadata.NO_ROW) for f in files]
  for seed, predictions in enumerate(by_seed):
    right_N = np.asarray([r['true'] == r['predicted'] for r in predictions])
    per = held['per_seed'][seed]['per_subgroup']['sex']
    for value in ('F', 'M'):
      rows_N = np.asarray(sex_N) == value
      assert per[value]['n_images'] == 10 and per[value]['accuracy'] == pytest.approx(right_N[rows_N].mean())
    assert held['per_seed'][seed]['subgroups']['columns']['sex']['too_small'] == [
        {'value': metadata.NO_ROW, 'n_images': 1}]
  pooled = held['pooled']
  for value in ('F', 'M'):
    rows_N = np.asarray(sex_N) == value
    right = [np.mean([r['true'] == r['predicted'] for r, keep in zip(p, rows_N) if keep]) for p in by_seed]
    assert pooled['per_subgroup']['sex'][value]['accuracy'] == pytest.approx(np.mean(right))
    assert pooled['per_subgroup']['sex'][value]['n_images'] == 20  # 10 films x 2 seeds.
    covid = [[r['true'] == r['predicted'] for r, keep in zip(p, rows_N) if keep and r['true'] == 'Covid']
             for p in by_seed]
    assert pooled['per_subgroup']['sex'][value]['per_class']['Covid']['recall'] == pytest.approx(np.mean(covid))
    assert pooled['per_subgroup']['sex'][value]['intervals']['repeats'] == 2
  gap = pooled['subgroups']['columns']['sex']['recall_gaps']['Covid']
  recalls = {v: pooled['per_subgroup']['sex'][v]['per_class']['Covid']['recall'] for v in ('F', 'M')}
  assert gap['n_class_images'] == {'F': 5, 'M': 5}  # Films, not predictions.
  assert gap['recalls'] == pytest.approx(recalls)
  assert gap['gap'] == pytest.approx(max(recalls.values()) - min(recalls.values()))
  assert set(pooled['per_subgroup']['age']) == {'0-50', '50-'}
  kids = written['held_out_source']['kids']['pooled']
  assert 'per_subgroup' not in kids and 'no row' in kids['subgroups']['note']
  everything = written['pooled']
  assert everything['per_subgroup']['sex'][metadata.NO_ROW]['n_images'] == 2 * (20 + 1)  # kids' 20 and copy.png.
  assert everything['subgroups']['metadata']['n_matched'] == 20
  assert everything['per_subgroup']['sex']['F']['accuracy'] == pytest.approx(
      pooled['per_subgroup']['sex']['F']['accuracy'])
  text = open(os.path.join(workdir, 'loso', 'report.md')).read()
  assert '## Per subgroup (config.eval.subgroups, seeds pooled)' in text and '### sex' in text
  f_row = pooled['per_subgroup']['sex']['F']
  assert f'| adult | F | 10 | {loso._cell(f_row, ("accuracy",))} |' in text
  assert 'kids: no row of config.eval.metadata names an image here' in text
  assert 'adult, Covid recall: ' in text
  held_out_md = open(os.path.join(loso.held_out_dir(workdir, 'adult', 0), 'eval', 'held_out', 'report.md')).read()
  assert '## Per subgroup' in held_out_md
