"""Compare two trained runs on the same images: paired bootstrap intervals of the difference, and McNemar's test.

python -m lungjax.tools.compare WORKDIR_A WORKDIR_B --dir=FOLDER [--out=DIR] [--class_names=COVID=Covid,...]
    [--n_bootstrap=2000] [--seed=0] [--metadata=CSV --subgroups=sex,view,age:0-40,40-65,65- [--min_images=10]
    [--metadata_file_column=file]]

Each workdir's best checkpoint is restored with the run's own config.json, FOLDER (class sub-folders) is decoded at
each run's image size, and both predict every image. Differences are B minus A: positive means B is better. Writes
compare.json and compare.md to --out (default WORKDIR_A/compare/<B's name>-<FOLDER's name>/) and nothing else.

With --metadata and --subgroups (the syntax of config.eval.subgroups) the same paired comparison is made within
each subgroup of each column (compare.json: per_subgroup.<column>.groups.<value>): both models on the same films of
that subgroup, B minus A with its paired interval and McNemar's exact test of the accuracy; a subgroup of fewer than
--min_images films gets no numbers and is named in per_subgroup.<column>.too_small.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats
from absl import app, flags  # pylint: disable=g-multiple-import

from lungjax import checkpoints, evaluate, inference, metrics as metrics_lib
from lungjax.runtime import distributed, mesh as mesh_lib, workdir as workdir_lib
from lungjax.data import folders, loading, metadata as metadata_lib, preprocess

CONFIDENCE = 0.95
TOOL = 'lungjax.compare'  # compare.json says it wrote the file; what it finds without this it does not overwrite.
MARKDOWN_TITLE = '# Paired comparison of two runs'
OUTPUT_FILES = ('compare.json', 'compare.md')


def mcnemar_exact_p(b: int, c: int) -> float:
  """McNemar's exact two-sided p-value of discordant counts b, c: min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2).

  1.0 when there is no discordant pair. scipy.stats.binomtest(min(b, c), b + c, 0.5): at p = 1/2 its two-sided
  p-value is exactly this doubled tail.
  """
  if b < 0 or c < 0:
    raise ValueError(f'discordant counts must be >= 0, got b={b}, c={c}')
  if b + c == 0:
    return 1.0
  return min(1.0, float(scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue))


def resampled_scores(correct_N: np.ndarray, labels_N: np.ndarray, indices_BN: np.ndarray) -> dict[str, np.ndarray]:
  """Accuracy and macro recall (over the classes present) of each resample (row of indices_BN) of correct_N.

  The rows must keep each position's class (as metrics.stratified_bootstrap_indices makes them), so that every
  resample has the same class supports; the identity row gives the point values.
  """
  labels_N = np.asarray(labels_N, np.int64)
  correct_BN = np.asarray(correct_N, np.float64)[np.asarray(indices_BN, np.int64)]
  present, counts = np.unique(labels_N, return_counts=True)
  weight_of_class = dict(zip(present.tolist(), (1.0 / (len(present) * counts)).tolist()))
  weights_N = np.asarray([weight_of_class[label] for label in labels_N.tolist()], np.float64)
  return {'accuracy': correct_BN.mean(axis=1), 'macro_recall': correct_BN @ weights_N}


def paired_comparison(labels_N: np.ndarray, probabilities_a_NC: np.ndarray, probabilities_b_NC: np.ndarray,
                      n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
  """Compares two models' predictions of the same images (B minus A).

  Returns accuracy_a/_b, macro_recall_a/_b, 'difference' {'accuracy': [value, low, high], 'macro_recall': [...]}
  with 95% percentile intervals of a paired bootstrap (the same images resampled for both, stratified by class),
  the discordant counts (b: A right and B wrong; c: A wrong and B right) and McNemar's exact p-value.
  """
  labels_N = np.asarray(labels_N, np.int64)
  probabilities_a_NC, probabilities_b_NC = np.asarray(probabilities_a_NC), np.asarray(probabilities_b_NC)
  if labels_N.ndim != 1 or not len(labels_N):
    raise ValueError(f'labels_N must be a non-empty vector, got shape {labels_N.shape}')
  for name, probabilities_NC in zip(('probabilities_a_NC', 'probabilities_b_NC'), (probabilities_a_NC,
                                                                                  probabilities_b_NC)):
    if probabilities_NC.ndim != 2 or probabilities_NC.shape[0] != len(labels_N):
      raise ValueError(f'{name} must have one row per label ({len(labels_N)}), got shape {probabilities_NC.shape}')
  if probabilities_a_NC.shape != probabilities_b_NC.shape:
    raise ValueError(f'probabilities_a_NC {probabilities_a_NC.shape} and probabilities_b_NC '
                     f'{probabilities_b_NC.shape} differ in shape')
  if labels_N.min() < 0 or labels_N.max() >= probabilities_a_NC.shape[1]:
    raise ValueError(f'labels_N must lie in 0..{probabilities_a_NC.shape[1] - 1}')
  correct_a_N = probabilities_a_NC.argmax(axis=1) == labels_N
  correct_b_N = probabilities_b_NC.argmax(axis=1) == labels_N
  identity_1N = np.arange(len(labels_N))[None]
  point_a = resampled_scores(correct_a_N, labels_N, identity_1N)
  point_b = resampled_scores(correct_b_N, labels_N, identity_1N)
  indices_BN = metrics_lib.stratified_bootstrap_indices(labels_N, n_bootstrap, seed)
  samples_a = resampled_scores(correct_a_N, labels_N, indices_BN)
  samples_b = resampled_scores(correct_b_N, labels_N, indices_BN)
  tails = ((1.0 - CONFIDENCE) / 2.0, (1.0 + CONFIDENCE) / 2.0)
  difference = {}
  for metric in ('accuracy', 'macro_recall'):
    low, high = np.quantile(samples_b[metric] - samples_a[metric], tails)
    difference[metric] = [float(point_b[metric][0] - point_a[metric][0]), float(low), float(high)]
  b = int(np.sum(correct_a_N & ~correct_b_N))
  c = int(np.sum(~correct_a_N & correct_b_N))
  return {
      'n_images': int(len(labels_N)),
      'accuracy_a': float(point_a['accuracy'][0]), 'accuracy_b': float(point_b['accuracy'][0]),
      'macro_recall_a': float(point_a['macro_recall'][0]), 'macro_recall_b': float(point_b['macro_recall'][0]),
      'difference': difference,
      'difference_is': 'B minus A',
      'discordant': {'a_right_b_wrong': b, 'a_wrong_b_right': c},
      'both_right': int(np.sum(correct_a_N & correct_b_N)), 'both_wrong': int(np.sum(~correct_a_N & ~correct_b_N)),
      'mcnemar_p': mcnemar_exact_p(b, c),
      'confidence': CONFIDENCE, 'n_bootstrap': int(n_bootstrap), 'seed': int(seed),
  }


def paired_by_subgroup(labels_N: np.ndarray, probabilities_a_NC: np.ndarray, probabilities_b_NC: np.ndarray,
                       values: Sequence[tuple[metadata_lib.Subgroup, Sequence[str]]], min_images: int,
                       n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
  """paired_comparison within each subgroup: {column: {'groups': {value: paired_comparison on that subgroup's
  images alone}, 'too_small': [{'value', 'n_images'}] (under min_images: no numbers), 'counts': class counts}}.

  `values` holds each column (metadata.Subgroup) with every image's subgroup, in the images' order. The films no
  table row names are a group of their own (metadata.NO_ROW), as in the evaluation's per_subgroup.
  """
  labels_N = np.asarray(labels_N, np.int64)
  found: dict[str, Any] = {}
  for subgroup, labels in values:
    if len(labels) != len(labels_N):
      raise ValueError(f'subgroup column {subgroup.column!r}: {len(labels)} values for {len(labels_N)} images')
    values_N = np.asarray(labels, dtype=object)
    groups, too_small, counts = {}, [], {}
    for value in metadata_lib.ordered_values(labels, subgroup):
      counts[value] = int(np.sum(values_N == value))
      if counts[value] < min_images:
        too_small.append({'value': value, 'n_images': counts[value]})
        continue
      rows = values_N == value
      groups[value] = paired_comparison(labels_N[rows], np.asarray(probabilities_a_NC)[rows],
                                        np.asarray(probabilities_b_NC)[rows], n_bootstrap, seed)
    found[subgroup.column] = {'groups': groups, 'too_small': too_small, 'n_images': counts}
  return {'min_images': int(min_images), 'columns': found}


def read_subgroups(table_path: str, subgroups: str, file_column: str = metadata_lib.DEFAULT_FILE_COLUMN
                   ) -> tuple[metadata_lib.Table, tuple[metadata_lib.Subgroup, ...]]:
  """The table and its parsed --subgroups, every column checked to be in it (ValueError naming the flag)."""
  if bool(table_path) != bool(subgroups):
    raise ValueError(f'--metadata={table_path!r} and --subgroups={subgroups!r}: give both or neither')
  table = metadata_lib.read_table(table_path, file_column, '--metadata')
  parsed = metadata_lib.parse_subgroups(subgroups, '--subgroups')
  for subgroup in parsed:
    if subgroup.column not in table.columns:
      raise ValueError(f'--subgroups={subgroups!r}: {subgroup.column!r} is not a column of --metadata={table_path!r} '
                       f'(columns: {list(table.columns)})')
  return table, parsed


def default_out_dir(workdir_a: str, workdir_b: str, folder: str) -> str:
  """WORKDIR_A/compare/<basename of B>-<basename of FOLDER>-<hash of both resolved paths>: another run B or another
  folder of the same base names gets its own folder (issue 26 High 2; workdir.folder_identity)."""
  validation = folder == evaluate.VALIDATION
  folder_name = 'validation' if validation else os.path.basename(os.path.normpath(folder))
  digest = workdir_lib.folder_identity([workdir_b] if validation else [workdir_b, folder])[-8:]
  name = f'{os.path.basename(os.path.normpath(workdir_b))}-{folder_name}-{digest}'
  return os.path.join(workdir_a, 'compare', name)


def check_same_classes(workdir_a: str, classes_a: Sequence[str], workdir_b: str, classes_b: Sequence[str]) -> None:
  """Raises ValueError naming both runs when they were trained on different classes (or class orders)."""
  if tuple(classes_a) != tuple(classes_b):
    raise ValueError(f'the runs were trained on different classes: A {workdir_a!r} on {list(classes_a)}, '
                     f'B {workdir_b!r} on {list(classes_b)}: their predictions cannot be compared')


def _verdict(metric: str, value: float, low: float, high: float) -> str:
  """One sentence on a difference and its interval."""
  percent = f'{abs(value) * 100:.1f} points'
  interval = f'95% paired bootstrap interval [{low * 100:+.1f}, {high * 100:+.1f}] points'
  if value == 0:
    lead = f'A and B have the same {metric}'
  else:
    lead = f'{"B" if value > 0 else "A"} has the higher {metric}, by {percent}'
  if low > 0 or high < 0:
    return f'{lead}; the {interval} excludes 0: {"B" if low > 0 else "A"} is better on these images.'
  return f'{lead}; the {interval} includes 0: these images do not tell the two apart.'


def markdown(result: dict[str, Any]) -> str:
  """compare.md: which model is better, whether the intervals exclude 0, and McNemar's p, in plain words."""
  a, b, difference = result['a'], result['b'], result['difference']
  discordant = result['discordant']
  lines = [
      MARKDOWN_TITLE, '',
      f'- A: `{a["workdir"]}` ({a["model"]}, checkpoint step {a["checkpoint_step"]})',
      f'- B: `{b["workdir"]}` ({b["model"]}, checkpoint step {b["checkpoint_step"]})',
      f'- Images: {result["n_images"]} of `{result["folder"]}` (classes {", ".join(result["classes"])}), '
      'predicted by both.',
      '', 'Differences are B minus A: positive means B is better.', '',
      '| metric | A | B | B minus A | 95% interval |', '|---|---|---|---|---|',
  ]
  for label, metric in (('accuracy', 'accuracy'), ('macro recall', 'macro_recall')):
    value, low, high = difference[metric]
    lines.append(f'| {label} | {result[f"{metric}_a"]:.4f} | {result[f"{metric}_b"]:.4f} | {value:+.4f} | '
                 f'[{low:+.4f}, {high:+.4f}] |')
  lines += ['', f'- {_verdict("accuracy", *difference["accuracy"])}',
            f'- {_verdict("macro recall", *difference["macro_recall"])}',
            f'- McNemar\'s exact test: {discordant["a_right_b_wrong"]} images only A got right, '
            f'{discordant["a_wrong_b_right"]} only B got right; two-sided p = {result["mcnemar_p"]:.4g} '
            + ('(below 0.05: where the two disagree, one is right more often than chance explains).'
               if result['mcnemar_p'] < 0.05 else
               '(not below 0.05: where the two disagree, neither is right more often than chance explains).'),
            '', f'The intervals resample the images {result["n_bootstrap"]} times (seed {result["seed"]}), the same '
            'images for both models and each class\'s images within that class, so they measure the difference '
            'on images like these, not the variation between training runs.']
  lines += _subgroup_markdown(result.get('per_subgroup'))
  if result.get('skipped_images'):
    lines += ['', '## Skipped files', '']
    lines += [f'- `{path}`: {reason}' for path, reason in result['skipped_images']]
  return '\n'.join(lines) + '\n'


def _subgroup_markdown(per_subgroup: dict[str, Any] | None) -> list[str]:
  """The paired table per subgroup column, and the subgroups too small for numbers; nothing without subgroups."""
  if not per_subgroup:
    return []
  joined = per_subgroup['metadata']
  lines = ['', '## Per subgroup', '',
           f'`{joined["table"]}` names {joined["n_matched"]} of these {joined["n_images"]} images; '
           f'{joined["n_unmatched_images"]} have no row (subgroup "{metadata_lib.NO_ROW}"), '
           f'{joined["n_unmatched_rows"]} rows name no image here. Both models on the same films of each subgroup; '
           'B minus A with its 95% paired bootstrap interval; McNemar\'s exact p of the accuracy.']
  for column, described in per_subgroup['columns'].items():
    lines += ['', f'### {column}', '',
              '| subgroup | images | accuracy A | accuracy B | B minus A [95%] | macro recall A | macro recall B | '
              'B minus A [95%] | only A right | only B right | McNemar p |', '|---' * 11 + '|']
    for value, row in described['groups'].items():
      cells = [value, str(row['n_images'])]
      for metric in ('accuracy', 'macro_recall'):
        diff, low, high = row['difference'][metric]
        cells += [f'{row[f"{metric}_a"]:.3f}', f'{row[f"{metric}_b"]:.3f}', f'{diff:+.3f} [{low:+.3f}, {high:+.3f}]']
      cells += [str(row['discordant']['a_right_b_wrong']), str(row['discordant']['a_wrong_b_right']),
                f'{row["mcnemar_p"]:.3g}']
      lines.append('| ' + ' | '.join(cells) + ' |')
    if described['too_small']:
      lines += ['', f'Too small to say anything (under {per_subgroup["min_images"]} images, no numbers): ' +
                ', '.join(f'{t["value"]} ({t["n_images"]})' for t in described['too_small']) + '.']
  lines += ['', 'Within a subgroup the interval resamples only its films: small subgroups give wide intervals, and '
            'with many subgroups one interval in twenty misses by chance.']
  return lines


def _check_ours(path: str) -> None:
  """Raises FileExistsError when path exists and lungjax.tools.compare did not write it."""
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      text = f.read()
    ours = json.loads(text).get('tool') == TOOL if path.endswith('.json') else text.startswith(MARKDOWN_TITLE)
  except (OSError, UnicodeDecodeError, ValueError, AttributeError):
    ours = False
  if not ours:
    raise FileExistsError(f'{path} exists and lungjax.tools.compare did not write it: not overwriting it (pass another '
                          '--out)')


def write_outputs(result: dict[str, Any], out_dir: str) -> dict[str, str]:
  """Writes out_dir/compare.json and compare.md (only these; never over files that lungjax.tools.compare did not write)."""
  paths = {name: os.path.join(out_dir, name) for name in OUTPUT_FILES}
  for path in paths.values():
    _check_ours(path)
  workdir_lib.begin_unit(out_dir)  # One unit: its marker is written last (issue 26 High 3).
  workdir_lib.write_json(paths['compare.json'], {'tool': TOOL, **result})
  workdir_lib.write_text(paths['compare.md'], markdown(result))
  workdir_lib.finish_unit(out_dir, OUTPUT_FILES)
  return paths


def compare_runs(workdir_a: str, workdir_b: str, folder: str, *, out_dir: str = '', class_names: str = '',
                 n_bootstrap: int = 2000, seed: int = 0, metadata: str = '', subgroups: str = '',
                 min_images: int = 10, metadata_file_column: str = metadata_lib.DEFAULT_FILE_COLUMN
                 ) -> dict[str, Any]:
  """Restores both runs' best checkpoints, predicts folder with each, writes and returns the paired comparison.

  With `metadata` (a CSV joined to the images as config.eval.metadata is) and `subgroups` (config.eval.subgroups'
  syntax): also per_subgroup (paired_by_subgroup, plus the join's summary)."""
  if min_images < 1:
    raise ValueError(f'--min_images={min_images} must be at least 1')
  table, parsed = read_subgroups(metadata, subgroups, metadata_file_column) if metadata or subgroups else (None, ())
  configs = {'A': checkpoints.load_run_config(workdir_a), 'B': checkpoints.load_run_config(workdir_b)}
  check_same_classes(workdir_a, configs['A'].data.classes, workdir_b, configs['B'].data.classes)
  classes = tuple(configs['A'].data.classes)
  folder_names = folders.parse_folder_names(class_names, classes)
  out_dir = out_dir or default_out_dir(workdir_a, workdir_b, folder)
  for name in OUTPUT_FILES:  # Before the work, so that a refusal costs nothing.
    _check_ours(os.path.join(out_dir, name))
  mesh = mesh_lib.make_mesh()
  runs, predictions, loaded_by_size = {}, {}, {}
  for key, workdir in (('A', workdir_a), ('B', workdir_b)):
    model = inference.load(workdir, -1, mesh=mesh)
    run_config, step = model.config, model.checkpoint_step
    mesh_lib.check_batch_size(run_config.eval.batch_size, mesh, f'{workdir}/config.json: config.eval.batch_size')
    size = run_config.data.image_size
    prepared = (size, preprocess.settings_of(run_config))  # Each run's images as it trained on them.
    if prepared not in loaded_by_size and folder == evaluate.VALIDATION:  # Run A's validation split (B's must match).
      data = loading.load_training_data(run_config)
      loaded_by_size[prepared] = loading.FolderImages(data.train_folder.folder, data.val, ())
    elif prepared not in loaded_by_size:
      loaded_by_size[prepared] = loading.load_folder(folder, run_config, require_all_classes=False,
                                                     folder_names=folder_names)
    loaded = loaded_by_size[prepared]
    predictions[key] = (loaded, model.probabilities(loaded.decoded.images_NHWC, desc='evaluating',
                                                    batch_size=run_config.eval.batch_size))
    runs[key] = {'workdir': workdir, 'checkpoint_step': int(step), 'model': run_config.model.name,
                 'config': run_config.name, 'image_size': int(size)}
  (loaded_a, probabilities_a_NC), (loaded_b, probabilities_b_NC) = predictions['A'], predictions['B']
  if loaded_a.decoded.paths != loaded_b.decoded.paths:
    only = sorted(set(loaded_a.decoded.paths) ^ set(loaded_b.decoded.paths))
    raise ValueError(f'{folder}: the runs\' configs decoded different images (config.data.skip_bad_images?): '
                     f'{only[:5]}{" ..." if len(only) > 5 else ""}')
  result = {'a': runs['A'], 'b': runs['B'], 'folder': folder, 'classes': list(classes),
            'class_counts': np.bincount(loaded_a.decoded.labels_N, minlength=len(classes)).tolist(),
            **paired_comparison(loaded_a.decoded.labels_N, probabilities_a_NC, probabilities_b_NC, n_bootstrap, seed),
            'skipped_images': [list(item) for item in loaded_a.skipped_report()]}
  if table is not None:
    joined = metadata_lib.join(table, loaded_a.decoded.paths,
                               tuple(f.strip() for f in loaded_a.folder.split(',') if f.strip()), '--metadata')
    binned = [metadata_lib.with_bins(joined, subgroup) for subgroup in parsed]  # Numeric without bins: quartiles.
    values = [(subgroup, metadata_lib.subgroup_labels(joined, subgroup)) for subgroup in binned]
    result['per_subgroup'] = {'metadata': joined.summary(), **paired_by_subgroup(
        loaded_a.decoded.labels_N, probabilities_a_NC, probabilities_b_NC, values, min_images, n_bootstrap, seed)}
  if distributed.is_main_process():
    write_outputs(result, out_dir)
  return {**result, 'out_dir': out_dir}


def _define_flags() -> None:
  """Defines the program's flags (only when run, so importing this module never clashes with lungjax.main's)."""
  flags.DEFINE_string('dir', None, 'A folder of class sub-folders that both runs predict, or @validation: the '
                      'validation split of run A\'s training folder (run B must have been validated on the same '
                      'images: same data.root, split_seed and val_fraction).')
  flags.DEFINE_string('out', '', 'Where compare.json and compare.md go (default: '
                      'WORKDIR_A/compare/<basename of B>-<basename of --dir>).')
  flags.DEFINE_string('class_names', '', 'FOLDER=CLASS,... for sub-folders named otherwise '
                      '(as config.eval.class_names).')
  flags.DEFINE_integer('n_bootstrap', 2000, 'Paired bootstrap resamples of the images.')
  flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap resamples.')
  flags.DEFINE_string('metadata', '', 'A CSV with a row per film (as config.eval.metadata): compare within each '
                      'subgroup of --subgroups too.')
  flags.DEFINE_string('metadata_file_column', metadata_lib.DEFAULT_FILE_COLUMN, 'The --metadata column naming each '
                      'row\'s image.')
  flags.DEFINE_string('subgroups', '', 'Columns of --metadata to compare within, e.g. sex,view,age:0-40,40-65,65- '
                      '(the syntax of config.eval.subgroups).')
  flags.DEFINE_integer('min_images', 10, 'A subgroup of fewer films gets no numbers (named as too small).')
  flags.mark_flags_as_required(['dir'])


def main(argv: Sequence[str]) -> None:
  """Compares the two workdirs named after the flags and prints where the comparison went."""
  if len(argv) != 3:
    raise app.UsageError('name two workdirs: python -m lungjax.tools.compare WORKDIR_A WORKDIR_B --dir=FOLDER')
  f = flags.FLAGS
  if f.n_bootstrap < 1:
    raise app.UsageError(f'--n_bootstrap={f.n_bootstrap} must be at least 1')
  result = compare_runs(argv[1], argv[2], f.dir, out_dir=f.out, class_names=f.class_names,
                        n_bootstrap=f.n_bootstrap, seed=f.seed, metadata=f.metadata, subgroups=f.subgroups,
                        min_images=f.min_images, metadata_file_column=f.metadata_file_column)
  accuracy, recall = result['difference']['accuracy'], result['difference']['macro_recall']
  print(f'\n{result["n_images"]} images: accuracy A {result["accuracy_a"]:.4f}, B {result["accuracy_b"]:.4f}; '
        f'B minus A: accuracy {accuracy[0]:+.4f} [{accuracy[1]:+.4f}, {accuracy[2]:+.4f}], macro recall '
        f'{recall[0]:+.4f} [{recall[1]:+.4f}, {recall[2]:+.4f}]; McNemar p {result["mcnemar_p"]:.4g}')
  print(f'  report       {os.path.abspath(os.path.join(result["out_dir"], "compare.md"))}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
