"""Leave-one-source-out (--config.cv.by_source=True): for each training source in turn, train on all the others and
evaluate on that source's images, the number that tells a researcher how a model will do at a hospital it has
never seen.

For held-out source S and seed k (config.seed, ..., config.seed + config.seeds - 1):
- the training pool is every image of the other sources, less any image in a copy group (exact or near copy,
  config.data.near_copy_threshold) with an image of S: a film posted in two collections is never trained on and
  tested on; these are counted (n_dropped_copies);
- the pool is split into train / validation as a plain run splits it (grouped, stratified by class and source,
  config.data.val_fraction, config.data.split_seed); the validation part picks the best checkpoint and is "the
  sources it trained on" score;
- S's images of the classes the pool holds are predicted by the best checkpoint; images of a class no training
  source holds (the Kaggle set's Viral Pneumonia when it is held out) cannot be recalled by any model: they are
  counted and listed (n_unseen_class_images, unseen_classes), not scored.

With config.eval.metadata and config.eval.subgroups (issue 25), the table is joined to each held-out source's images
and every score above is also given per subgroup (per_subgroup, subgroups: evaluate.subgroup_tables) per seed, with
the seeds pooled, and over every held-out image; a source no row of the table names gets none (said so).

Writes WORKDIR/held_out_<S>/seed_<k>/ (one training run each, with eval/held_out/: metrics.json, report.md,
predictions.csv) and WORKDIR/loso/ (metrics.json, report.md). metrics.json has held_out_source.<S> (each seed's
metrics, mean ± std, the seeds pooled with intervals, the trained sources' validation score and the gap), pooled
(every held-out image of every source) and selection.

The selection measure (what a recipe is chosen on): `worst_held_out_macro_recall`, the lowest over held-out sources
of the seed mean of that source's macro recall (over the classes it holds that training saw).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from lungjax import evaluate, inference, metrics as metrics_lib, train
from lungjax.runtime import distributed, workdir as workdir_lib
from lungjax.report import markdown as report
from lungjax.data import images, loading, metadata as metadata_lib, sources as sources_lib, splits

SELECTION_MEASURE = 'worst_held_out_macro_recall'
OUT = 'loso'  # WORKDIR/loso/: the table over held-out sources.


def held_out_dir(workdir: str, source: str, seed: int) -> str:
  """The training run that held `source` out with `seed`."""
  return os.path.join(workdir, f'held_out_{source}', f'seed_{seed}')


def held_out_split(decoded: images.DecodedImages, groups_N: np.ndarray, source: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(pool, evaluated, unseen, dropped) indices for holding out source index `source`.

  pool: the other sources' images, less `dropped` (those in a copy group with an image of the held-out source);
  evaluated: the held-out source's images whose class the pool holds; unseen: its images of classes the pool lacks.
  """
  sources_N, _ = sources_lib.source_indices(decoded)
  labels_N = np.asarray(decoded.labels_N)
  held_N = sources_N == source
  dropped_N = ~held_N & np.isin(groups_N, np.unique(groups_N[held_N]))
  pool = np.flatnonzero(~held_N & ~dropped_N)
  seen_N = np.isin(labels_N, np.unique(labels_N[pool]))
  return pool, np.flatnonzero(held_N & seen_N), np.flatnonzero(held_N & ~seen_N), np.flatnonzero(dropped_N)


def _scored(labels_N: np.ndarray, probabilities_NC: np.ndarray, config: ml_collections.ConfigDict,
            repeats: int = 1) -> dict[str, Any]:
  """evaluation_metrics with their 95% intervals (repeats R: R predictions of each image, seed-major blocks)."""
  metrics = evaluate.evaluation_metrics(labels_N, probabilities_NC, tuple(config.data.classes))
  return metrics_lib.with_uncertainty(metrics, labels_N, probabilities_NC, n_bootstrap=config.eval.n_bootstrap,
                                      seed=config.seed, repeats=repeats)


def _subgroup_values(table: metadata_lib.Table | None, paths: tuple[str, ...], folders: tuple[str, ...],
                     config: ml_collections.ConfigDict) -> tuple[list[Any], dict[str, Any]] | None:
  """(each config.eval.subgroups column with every image's subgroup, the join's summary) of the table joined to
  the images at `paths`; None without a table."""
  if table is None:
    return None
  joined = metadata_lib.join(table, paths, folders, 'config.eval.metadata')
  return evaluate.subgroup_values(joined, config), joined.summary()


def _add_subgroups(metrics: dict[str, Any], labels_N: np.ndarray, probabilities_NC: np.ndarray,
                   found: tuple[list[Any], dict[str, Any]] | None, config: ml_collections.ConfigDict,
                   repeats: int = 1) -> None:
  """metrics['per_subgroup'] and metrics['subgroups'] as an evaluation writes them (evaluate.subgroup_tables) from
  _subgroup_values' `found`; where no row names any of these images, only the join's summary and a note."""
  if found is None:
    return
  values, summary = found
  minimum = config.eval.subgroup_min_images
  if not summary['n_matched']:
    metrics['subgroups'] = {'metadata': summary, 'min_images': minimum, 'columns': {},
                            'note': 'no row of config.eval.metadata names an image here: no subgroups'}
    return
  metrics['per_subgroup'], columns = evaluate.subgroup_tables(
      labels_N, probabilities_NC, values, tuple(config.data.classes), minimum, config.eval.n_bootstrap, config.seed,
      repeats=repeats)
  metrics['subgroups'] = {'metadata': summary, 'min_images': minimum, 'columns': columns}


def _predict_held_out(run_dir: str, held_out: images.DecodedImages, config: ml_collections.ConfigDict
                      ) -> np.ndarray:
  """The run's best checkpoint (restored and verified as --mode=eval restores it) on the held-out images."""
  model = inference.load(run_dir)
  return model.probabilities(held_out.images_NHWC, desc='evaluating', batch_size=config.eval.batch_size)


def _recall_summary(per_seed: list[dict[str, Any]], classes: tuple[str, ...]) -> dict[str, dict[str, float]]:
  """mean ± std over seeds of accuracy, macro recall and each held class's recall."""
  summary = metrics_lib.mean_and_std(per_seed, classes)
  keep = ['accuracy', 'macro_avg.recall'] + [f'{c}.recall' for c in classes]
  return {k: summary[k] for k in keep if k in summary}


def leave_one_source_out(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one model per (held-out source, seed) under workdir and writes WORKDIR/loso/; returns its metrics.

  The config is assumed valid (config_check.validate: config.cv.by_source with at least two sources).
  """
  root, loaded = loading.load_training_folder(config)
  decoded = loaded.decoded
  sources_N, names = sources_lib.source_indices(decoded)
  if len(names) < 2:
    raise ValueError('config.cv.by_source=True needs at least two training sources (config.data.extra_root or '
                     'config.data.extra_sources)')
  classes = tuple(config.data.classes)
  groups_N = np.asarray(loading.split_groups(decoded, config))
  seeds = [config.seed + offset for offset in range(config.seeds)]
  labels_N = np.asarray(decoded.labels_N)
  table = None
  if config.eval.metadata and config.eval.subgroups:
    table = metadata_lib.read_table(config.eval.metadata, config.eval.metadata_file_column,
                                    'config.eval.metadata')
  source_folders = (loaded.folder, *(source.folder for source in sources_lib.extra_sources(config)))
  pooled_paths: list[str] = []  # Every held-out image, in the pooled rows' order (each seed's block).
  result: dict[str, Any] = {'mode': 'leave_one_source_out', 'sources': list(names), 'seeds': seeds,
                            'selection_measure': SELECTION_MEASURE, 'held_out_source': {}}
  pooled_by_seed: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {seed: [] for seed in seeds}
  for s, name in enumerate(names):
    pool, evaluated, unseen, dropped = held_out_split(decoded, groups_N, s)
    unseen_classes = sorted({classes[label] for label in labels_N[unseen]})
    logging.info('held out %s: %d images scored (%d of classes no other source holds: %s, not scored); training pool '
                 '%d images (%d copies of its images dropped)', name, len(evaluated), len(unseen), unseen_classes,
                 len(pool), len(dropped))
    if not len(evaluated):
      raise ValueError(f'source {name!r}: none of its images is of a class the other sources hold: nothing to score')
    pool_decoded = decoded.subset(pool)
    train_indices, val_indices = splits.grouped_stratified_split(
        loading.split_strata(pool_decoded), groups_N[pool], config.data.val_fraction, config.data.split_seed)
    if not len(val_indices):
      raise ValueError(f'holding out source {name!r}: config.data.val_fraction={config.data.val_fraction} left no '
                       'validation image among the other sources (it picks the best checkpoint)')
    data = loading.TrainingData(root, loaded, pool_decoded.subset(train_indices), pool_decoded.subset(val_indices))
    held_out = decoded.subset(evaluated)
    found = _subgroup_values(table, held_out.paths, source_folders, config)
    pooled_paths += held_out.paths
    per_seed, trained, runs = [], [], []
    for seed in seeds:
      seed_config = copy.deepcopy(config)
      with seed_config.unlocked():
        seed_config.seed = seed
      run_dir = held_out_dir(workdir, name, seed)
      summary = train.train_and_evaluate(seed_config, run_dir, data)
      probabilities_NC = _predict_held_out(run_dir, held_out, seed_config)
      metrics = _scored(held_out.labels_N, probabilities_NC, seed_config)
      metrics.update(source=name, seed=seed, n_unseen_class_images=len(unseen), unseen_classes=unseen_classes,
                     n_dropped_copies=len(dropped))
      _add_subgroups(metrics, held_out.labels_N, probabilities_NC, found, seed_config)
      if distributed.is_main_process():
        out_dir = os.path.join(run_dir, 'eval', 'held_out')
        workdir_lib.begin_unit(out_dir)
        plots = report.write_evaluation(metrics, out_dir, f'{config.name}: held-out source {name}, seed {seed}',
                                        held_out.labels_N, probabilities_NC)
        evaluate.write_predictions(held_out, probabilities_NC, classes, os.path.join(out_dir, 'predictions.csv'))
        workdir_lib.finish_unit(out_dir, [*plots, 'metrics.json', 'report.md', 'predictions.csv'])
      per_seed.append(metrics)
      trained.append(summary.validation.metrics)
      runs.append(run_dir)
      pooled_by_seed[seed].append((np.asarray(held_out.labels_N), probabilities_NC))
    held_labels_N = np.tile(held_out.labels_N, len(seeds))
    held_probabilities_NC = np.concatenate([pooled_by_seed[k][-1][1] for k in seeds])
    pooled = _scored(held_labels_N, held_probabilities_NC, config, repeats=len(seeds))
    _add_subgroups(pooled, held_labels_N, held_probabilities_NC, found, config, repeats=len(seeds))
    held = _recall_summary(per_seed, classes)
    seen = _recall_summary(trained, classes)
    result['held_out_source'][name] = {
        'runs': runs, 'n_images': len(evaluated), 'n_unseen_class_images': len(unseen),
        'unseen_classes': unseen_classes, 'n_dropped_copies': len(dropped), 'n_train': len(train_indices),
        'n_val': len(val_indices), 'trained_on': [n for n in names if n != name],
        'summary': held, 'pooled': pooled, 'per_seed': per_seed,
        'trained_sources': {'summary': seen, 'per_source_macro_recall': {
            n: metrics_lib.mean_and_std([m['per_source'][n] for m in trained if n in m.get('per_source', {})],
                                     classes).get('macro_avg.recall') for n in names if n != name}},
        'gap': {k: seen[k]['mean'] - held[k]['mean'] for k in ('accuracy', 'macro_avg.recall')}}
  # Every held-out image of every source, each seed's block in the same order (repeats = seeds).
  pooled_labels = np.concatenate([np.concatenate([lab for lab, _ in pooled_by_seed[k]]) for k in seeds])
  pooled_probabilities = np.concatenate([np.concatenate([p for _, p in pooled_by_seed[k]]) for k in seeds])
  result['pooled'] = _scored(pooled_labels, pooled_probabilities, config, repeats=len(seeds))
  _add_subgroups(result['pooled'], pooled_labels, pooled_probabilities,
                 _subgroup_values(table, tuple(pooled_paths), source_folders, config), config, repeats=len(seeds))
  result['selection'] = selection(result)
  out_dir = os.path.join(workdir, OUT)
  if distributed.is_main_process():
    workdir_lib.begin_unit(out_dir)
    workdir_lib.write_atomic(os.path.join(out_dir, 'metrics.json'), _json(result))
    workdir_lib.write_atomic(os.path.join(out_dir, 'report.md'),
                             markdown(result, f'{config.name}: leave one source out'))
    workdir_lib.finish_unit(out_dir, ['metrics.json', 'report.md'])
  logging.info('leave one source out: %s %.3f (%s)', SELECTION_MEASURE, result['selection']['value'],
               result['selection']['source'])
  return result


def _json(result: dict[str, Any]) -> str:
  import json  # pylint: disable=g-import-not-at-top
  return json.dumps(result, indent=2) + '\n'


def selection(result: dict[str, Any]) -> dict[str, Any]:
  """The selection measure: the lowest held-out source's seed-mean macro recall, which source, and per seed."""
  held = result['held_out_source']
  means = {name: row['summary']['macro_avg.recall']['mean'] for name, row in held.items()}
  worst = min(means, key=means.get)
  n_seeds = len(result['seeds'])
  per_seed = [min(row['summary']['macro_avg.recall']['values'][k] for row in held.values()) for k in range(n_seeds)]
  return {'measure': SELECTION_MEASURE, 'value': means[worst], 'source': worst, 'per_source_mean': means,
          'worst_per_seed': per_seed}


def _cell(row: dict[str, Any], keys: tuple[str, ...]) -> str:
  value = row
  for key in keys:
    value = value[key]
  return report._with_interval(value, report._interval_at(row, keys))  # pylint: disable=protected-access


def markdown(result: dict[str, Any], title: str) -> str:
  """The leave-one-source-out table: per held-out source (the seeds pooled, with 95% intervals, and mean ± std over
  seeds), pooled over sources, and the trained sources' validation score beside it (the gap)."""
  pooled = result['pooled']
  classes = pooled['classes']
  n_seeds = len(result['seeds'])
  lines = [f'# {title}', '',
           f'Each source held out in turn: trained on the others ({n_seeds} seed(s): {result["seeds"]}), scored on its '
           'images of the classes the others hold. Cells: the seeds\' predictions pooled, `value [95% interval]` '
           '(intervals count images, not predictions); `mean ± std` over seeds below.', '',
           '| held-out source | images | accuracy | macro recall | ' + ' | '.join(f'{c} recall' for c in classes)
           + ' | trained sources\' val macro recall | gap |', '|---' * (len(classes) + 6) + '|']

  def recalls(row):
    return [_cell(row, ('per_class', c, 'recall')) if row['per_class'][c]['support'] else 'n/a (none)'
            for c in classes]

  for name, held in result['held_out_source'].items():
    row = held['pooled']
    seen = held['trained_sources']['summary']['macro_avg.recall']
    lines.append(f'| {name} | {held["n_images"]} | {_cell(row, ("accuracy",))} | {_cell(row, ("macro_avg", "recall"))}'
                 f' | ' + ' | '.join(recalls(row)) + f' | {seen["mean"]:.3f} ± {seen["std"]:.3f} | '
                 f'{held["gap"]["macro_avg.recall"]:+.3f} |')
  lines.append(f'| pooled | {pooled["n_images"] // max(n_seeds, 1)} | {_cell(pooled, ("accuracy",))} | '
               f'{_cell(pooled, ("macro_avg", "recall"))} | ' + ' | '.join(recalls(pooled)) + ' | | |')
  lines += ['', '## Over seeds (mean ± std)', '',
            '| held-out source | accuracy | macro recall | ' + ' | '.join(f'{c} recall' for c in classes) + ' |',
            '|---' * (len(classes) + 3) + '|']
  for name, held in result['held_out_source'].items():
    summary = held['summary']
    cells = [f'{summary[k]["mean"]:.3f} ± {summary[k]["std"]:.3f}' if k in summary else 'n/a'
             for k in ['accuracy', 'macro_avg.recall'] + [f'{c}.recall' for c in classes]]
    if any(not held['pooled']['per_class'][c]['support'] for c in classes):
      cells[2:] = [cell if held['pooled']['per_class'][c]['support'] else 'n/a (none)'
                   for c, cell in zip(classes, cells[2:])]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  chosen = result['selection']
  lines += ['', f'Selection measure `{chosen["measure"]}`: **{chosen["value"]:.3f}** (held-out {chosen["source"]}; '
            'the lowest seed-mean macro recall over held-out sources; per seed ' +
            ', '.join(f'{v:.3f}' for v in chosen['worst_per_seed']) + ').', '',
            'The gap is the trained sources\' validation macro recall minus the held-out macro recall (seed means): '
            'what moving to an unseen source costs.']
  for name, held in result['held_out_source'].items():
    notes = []
    if held['n_unseen_class_images']:
      notes.append(f'{held["n_unseen_class_images"]} images of {", ".join(held["unseen_classes"])} (a class no other '
                   'source holds) not scored')
    if held['n_dropped_copies']:
      notes.append(f'{held["n_dropped_copies"]} copies of its images in other sources left out of training')
    if notes:
      lines.append(f'- {name}: ' + '; '.join(notes) + '.')
  lines += _subgroup_markdown(result)
  return '\n'.join(lines) + '\n'


def _subgroup_markdown(result: dict[str, Any]) -> list[str]:
  """Per config.eval.subgroups column: each held-out source's subgroups (seeds pooled, with intervals) and those of
  every held-out image, the subgroups too small for numbers, and each class's largest recall gap; nothing without
  subgroups."""
  pooled = result['pooled']
  if 'subgroups' not in pooled:
    return []
  classes = pooled['classes']
  rows_of = [(name, held['pooled']) for name, held in result['held_out_source'].items()] + [('all held out', pooled)]
  lines = ['', '## Per subgroup (config.eval.subgroups, seeds pooled)', '',
           f'Metadata `{pooled["subgroups"]["metadata"]["table"]}` joined to each held-out source\'s images: '
           + '; '.join(f'{name} {row["subgroups"]["metadata"]["n_matched"]} of {row["subgroups"]["metadata"]["n_images"]}'
                       f' with a row' for name, row in rows_of) + '.']
  for name, row in rows_of:
    if row['subgroups'].get('note'):
      lines.append(f'- {name}: {row["subgroups"]["note"]}.')
  for column in pooled['subgroups']['columns']:
    lines += ['', f'### {column}', '',
              f'| held-out source | {column} | images | accuracy | macro recall | '
              + ' | '.join(f'{c} recall' for c in classes) + ' |', '|---' * (len(classes) + 5) + '|']
    notes = []
    for name, row in rows_of:
      described = row['subgroups']['columns'].get(column)
      if described is None:
        continue
      repeats = row['intervals'].get('repeats', 1)
      for value, group in row.get('per_subgroup', {}).get(column, {}).items():
        recalls = [_cell(group, ('per_class', c, 'recall')) if group['per_class'][c]['support'] else 'n/a (none)'
                   for c in classes]
        lines.append(f'| {name} | {value} | {group["n_images"] // repeats} | {_cell(group, ("accuracy",))} | '
                     f'{_cell(group, ("macro_avg", "recall"))} | ' + ' | '.join(recalls) + ' |')
      if described['too_small']:
        notes.append(f'- {name}: too small to say anything (under {row["subgroups"]["min_images"]} images, no '
                     'numbers): ' + ', '.join(f'{t["value"]} ({t["n_images"]})' for t in described['too_small']) + '.')
      for label, gap in described['recall_gaps'].items():
        if gap['gap'] is None:
          notes.append(f'- {name}, {label} recall: no gap measured ({gap["reason"]}).')
          continue
        lo, hi = gap['interval']
        notes.append(f'- {name}, {label} recall: largest gap {gap["gap"]:.3f} [{lo:.3f}, {hi:.3f}] between '
                     f'{gap["high"]} ({gap["recalls"][gap["high"]]:.3f}, {gap["n_class_images"][gap["high"]]} images) '
                     f'and {gap["low"]} ({gap["recalls"][gap["low"]]:.3f}, {gap["n_class_images"][gap["low"]]})'
                     + ('.' if lo > 0 or hi < 0 else '; the interval includes 0.'))
    lines += [''] + notes
  lines += ['', 'Images count films (each scored by all seeds\' predictions); intervals resample films. metrics.json: '
            'held_out_source.<S>.pooled.per_subgroup / .subgroups, per seed in per_seed, and pooled.per_subgroup.']
  return lines
