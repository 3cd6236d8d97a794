"""Evaluation: predict a decoded folder, and restore a checkpoint to evaluate any folder (--mode=eval)."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from lungjax import calibration as calibration_lib, checkpoints, inference, metrics as metrics_lib, steps
from lungjax.data import augment, folders, images, loading, metadata as metadata_lib, preprocess, sources as sources_lib
from lungjax.runtime import distributed, fingerprint as fingerprint_lib, mesh as mesh_lib, workdir as workdir_lib
from lungjax.report import markdown as report, model_card, report_html


# config.eval.dir value that means "the validation split of config.data.root/train" (as training made it).
VALIDATION = loading.VALIDATION


def predict_probabilities(eval_step: Callable[..., jax.Array], state: steps.TrainState,
                          decoded: images.DecodedImages, batch_size: int, mesh: Mesh) -> np.ndarray:
  """Returns N x C probabilities, one row per image in order: padded rows are masked out (inference.predict_batches,
  the one prediction path; training's validation calls it with its own state, a Model through Model.probabilities)."""
  return inference.predict_batches(eval_step, state, decoded.images_NHWC, batch_size, mesh, labels_N=decoded.labels_N)


def evaluation_metrics(labels_N: np.ndarray, probabilities_NC: np.ndarray,
                       classes: tuple[str, ...]) -> dict[str, Any]:
  """The classification metrics of a set of predictions plus their unweighted cross-entropy."""
  metrics = metrics_lib.classification_metrics(labels_N, probabilities_NC, classes)
  metrics['loss'] = metrics_lib.mean_cross_entropy(labels_N, probabilities_NC)
  return metrics


def validation_row(eval_step: Callable[..., jax.Array], state: steps.TrainState, val: images.DecodedImages,
                   config: ml_collections.ConfigDict, mesh: Mesh) -> dict[str, float]:
  """An epoch's validation loss, accuracy and macro averages as val_* columns, with each source's macro recall
  (per_source_recall); {} without a validation split."""
  if not len(val):
    return {}
  probabilities_NC = predict_probabilities(eval_step, state, val, config.eval.batch_size, mesh)
  metrics = evaluation_metrics(val.labels_N, probabilities_NC, tuple(config.data.classes))
  row = {f'val_{k}': v for k, v in (('loss', metrics['loss']), ('accuracy', metrics['accuracy']))}
  row.update({f'val_macro_{k}': v for k, v in metrics['macro_avg'].items()})
  row.update(per_source_recall(val, probabilities_NC, tuple(config.data.classes), metrics['macro_avg']['recall']))
  return row


def per_source_recall(val: images.DecodedImages, probabilities_NC: np.ndarray, classes: tuple[str, ...],
                      pooled_recall: float) -> dict[str, float]:
  """Each source's macro recall (over the classes it has) as val_macro_recall/<source>, and the lowest of them as
  val_worst_source_macro_recall (checkpoint.best_metric may rank by it); with one source the latter is the whole's."""
  sources_N, names = sources_lib.source_indices(val)
  if len(names) < 2:
    return {'val_worst_source_macro_recall': pooled_recall}
  labels_N, row = np.asarray(val.labels_N), {}
  for s, name in enumerate(names):
    if np.any(rows := sources_N == s):
      metrics = evaluation_metrics(labels_N[rows], probabilities_NC[rows], classes)
      row[f'val_macro_recall/{name}'] = metrics['macro_avg']['recall']
  row['val_worst_source_macro_recall'] = min(row.values())
  return row


def per_source_metrics(decoded: images.DecodedImages, probabilities_NC: np.ndarray,
                       config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """{source name: the whole's metrics (evaluation_metrics plus with_uncertainty's intervals) on that source's rows
  alone}, for images of several sources (decoded.sources_N); {} for one source. A source without rows here is
  left out (missing_sources names it)."""
  sources_N, names = sources_lib.source_indices(decoded)
  if len(names) < 2:
    return {}
  labels_N, classes, found = np.asarray(decoded.labels_N), tuple(config.data.classes), {}
  for s, name in enumerate(names):
    rows = sources_N == s
    if rows.any():
      metrics = evaluation_metrics(labels_N[rows], probabilities_NC[rows], classes)
      found[name] = metrics_lib.with_uncertainty(metrics, labels_N[rows], probabilities_NC[rows],
                                                 n_bootstrap=config.eval.n_bootstrap, seed=config.seed)
  return found


def eval_join(decoded: images.DecodedImages, folder: str, config: ml_collections.ConfigDict) -> metadata_lib.Join:
  """config.eval.metadata joined to the evaluated images (rows by config.eval.metadata_file_column; paths relative
  to the table's folder or to any evaluated folder, 'A,B'), its unmatched rows and images logged."""
  table = metadata_lib.read_table(config.eval.metadata, config.eval.metadata_file_column,
                                  'config.eval.metadata')
  folders_ = tuple(f.strip() for f in folder.split(',') if f.strip())
  joined = metadata_lib.join(table, decoded.paths, folders_, 'config.eval.metadata')
  summary = joined.summary()
  logging.info('%s joined to %d of %d images; %d rows name no image here, %d images have no row (metrics.json: '
               'subgroups.metadata)', table.path, summary['n_matched'], summary['n_images'],
               summary['n_unmatched_rows'], summary['n_unmatched_images'])
  for path in joined.unmatched_images:
    logging.warning('no row of %s names %s: its subgroup is %r', table.path, path, metadata_lib.NO_ROW)
  return joined


def subgroup_metrics(decoded: images.DecodedImages, probabilities_NC: np.ndarray, config: ml_collections.ConfigDict,
                     folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """(per_subgroup, subgroups) for config.eval.subgroups: config.eval.metadata joined to the images (eval_join),
  then subgroup_tables; subgroups also holds the join's summary and config.eval.subgroup_min_images."""
  joined = eval_join(decoded, folder, config)
  minimum = config.eval.subgroup_min_images
  per_subgroup, columns = subgroup_tables(decoded.labels_N, probabilities_NC, subgroup_values(joined, config),
                                          tuple(config.data.classes), minimum, config.eval.n_bootstrap, config.seed)
  return per_subgroup, {'metadata': joined.summary(), 'min_images': minimum, 'columns': columns}


def subgroup_values(joined: metadata_lib.Join, config: ml_collections.ConfigDict
                    ) -> list[tuple[metadata_lib.Subgroup, list[str]]]:
  """Each config.eval.subgroups column with every joined image's subgroup (metadata.subgroup_labels)."""
  binned = [metadata_lib.with_bins(joined, s) for s in metadata_lib.parse_subgroups(config.eval.subgroups)]
  return [(subgroup, metadata_lib.subgroup_labels(joined, subgroup)) for subgroup in binned]


def subgroup_tables(labels_N: np.ndarray, probabilities_NC: np.ndarray,
                    values: Sequence[tuple[metadata_lib.Subgroup, Sequence[str]]], classes: tuple[str, ...],
                    minimum: int, n_bootstrap: int, seed: int, repeats: int = 1
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(per_subgroup, columns), pure: per_subgroup is {column: {value: the whole's metrics (evaluation_metrics with
  with_uncertainty's intervals) on that subgroup alone}}, the structure of per_source; columns is {column: its bins,
  class counts per subgroup, the subgroups under `minimum` images (no metrics: too small to say anything) and each
  class's largest recall gap between subgroups with its bootstrap interval (metrics.recall_gap)}.

  `values` holds one subgroup per distinct image. repeats R > 1: the rows are R predictions of each image in
  seed-major blocks (labels_N and probabilities_NC R times as long as each column's values); the intervals and the
  counts are of distinct images.
  """
  labels_N, probabilities_NC = np.asarray(labels_N), np.asarray(probabilities_NC)
  n_images = len(labels_N) // repeats
  predicted_N = probabilities_NC.argmax(axis=1)
  per_subgroup: dict[str, Any] = {}
  columns: dict[str, Any] = {}
  for subgroup, labels in values:
    if len(labels) != n_images or n_images * repeats != len(labels_N) or len(probabilities_NC) != len(labels_N):
      raise ValueError(f'subgroup column {subgroup.column!r}: {len(labels)} values for {len(labels_N)} labels and '
                       f'{len(probabilities_NC)} predictions of {repeats} repeat(s)')
    values_N = np.tile(np.asarray(labels, dtype=object), repeats)
    has_row_N = values_N != metadata_lib.NO_ROW
    counts = metadata_lib.class_counts(labels_N[:n_images], labels, subgroup, classes)
    found, too_small = {}, []
    for value, row in counts.items():
      if row['n_images'] < minimum:
        too_small.append({'value': value, 'n_images': row['n_images']})
        continue
      rows = values_N == value
      found[value] = metrics_lib.with_uncertainty(
          evaluation_metrics(labels_N[rows], probabilities_NC[rows], classes), labels_N[rows], probabilities_NC[rows],
          n_bootstrap=n_bootstrap, seed=seed, repeats=repeats)
    per_subgroup[subgroup.column] = found
    columns[subgroup.column] = {
        'bins': subgroup.labels, 'bins_from': subgroup.bins_from, 'counts': counts, 'too_small': too_small,
        # Films no table row names (often another source's) are not a subgroup of this column: no gap with them.
        'recall_gaps': {c: metrics_lib.recall_gap(labels_N[has_row_N], predicted_N[has_row_N], values_N[has_row_N], k,
                                                  minimum, n_bootstrap, seed, repeats=repeats)
                        for k, c in enumerate(classes) if np.any(labels_N[has_row_N] == k)}}
  return per_subgroup, columns


def write_predictions(decoded: images.DecodedImages, probabilities_NC: np.ndarray, classes: tuple[str, ...],
                      path: str) -> None:
  """Writes one CSV row per image: file, true class, predicted class, and each class's probability."""
  text = io.StringIO(newline='')
  writer = csv.writer(text)
  writer.writerow(['file', 'true', 'predicted', *classes])
  for file, label, row in zip(decoded.paths, decoded.labels_N, probabilities_NC):
    writer.writerow([file, classes[label], classes[int(np.argmax(row))], *(f'{p:.6f}' for p in row)])
  workdir_lib.write_text(path, text.getvalue())


def read_predictions(path: str, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Reads write_predictions' CSV back into (files, labels_N, probabilities_NC); a file name that is not UTF-8 comes
  back as the same str its folder listing gave (its bytes kept, surrogateescape)."""
  with open(path, newline='', encoding='utf-8', errors='surrogateescape') as f:
    rows = list(csv.DictReader(f))
  files = [row['file'] for row in rows]
  labels_N = np.asarray([classes.index(row['true']) for row in rows], np.int32)
  probabilities_NC = np.asarray([[float(row[c]) for c in classes] for row in rows], np.float64).reshape(-1, len(classes))
  return files, labels_N, probabilities_NC


def add_calibration(metrics: dict[str, Any], labels_N: np.ndarray, probabilities_NC: np.ndarray,
                    calibration: dict[str, Any], fitted_here: bool) -> None:
  """Adds the ECE after temperature scaling to metrics['calibration'] (the raw ECE is already its 'ece').

  fitted_here: these are the validation images `calibration` (a calibration.json record) was fitted on, so they
  are scaled out of fold, by temperatures fitted without them; otherwise the served temperature is applied.
  """
  n_bins = metrics['calibration']['n_bins']
  if fitted_here:
    cross = calibration.get('cross_fit', {})
    fit = calibration_lib.cross_fit(labels_N, probabilities_NC, cross.get('folds', calibration_lib.DEFAULT_FOLDS),
                                    cross.get('seed', 0))
    metrics['calibration'].update(calibration_lib.out_of_fold_summary(fit, labels_N, n_bins,
                                                                      calibration.get('served', '')))
  else:
    metrics['calibration'].update(calibration_lib.served_summary(calibration, labels_N, probabilities_NC, n_bins,
                                                                 metrics.get('checkpoint_step')))


def evaluate_and_report(eval_step: Callable[..., jax.Array], state: steps.TrainState, loaded: loading.FolderImages,
                        config: ml_collections.ConfigDict, mesh: Mesh, out_dir: str, title: str,
                        checkpoint_step: int, calibration: dict[str, Any] | None = None,
                        training: images.DecodedImages | None = None,
                        page: report_html.PageInputs | None = None) -> dict[str, Any]:
  """Predicts a loaded folder; writes metrics.json (with 95% intervals), report.md, report.html, predictions.csv
  and plots.

  With `training` (the decoded training images), the report lists this folder's copies of training images; with
  `calibration` (the run's calibration.json record), the ECE after its served temperature; `page` as in
  report_predictions.
  """
  probabilities_NC = predict_probabilities(eval_step, state, loaded.decoded, config.eval.batch_size, mesh)
  return report_predictions(probabilities_NC, loaded, config, out_dir, title, checkpoint_step, calibration, training,
                            page=page)


def report_predictions(probabilities_NC: np.ndarray, loaded: loading.FolderImages, config: ml_collections.ConfigDict,
                       out_dir: str, title: str, checkpoint_step: int, calibration: dict[str, Any] | None = None,
                       training: images.DecodedImages | loading.TrainingThumbnails | None = None,
                       averaged: dict[str, Any] | None = None, calibration_fitted_here: bool = False,
                       page: report_html.PageInputs | None = None) -> dict[str, Any]:
  """Turns a folder's predicted probabilities into metrics.json (with 95% intervals), report.md, report.html, CSV
  and plots.

  With `calibration` (a calibration.json record) metrics['calibration'] adds the ECE after temperature scaling:
  out of fold when calibration_fitted_here (these are the images it was fitted on), else the served temperature's.
  `page` (report_html.PageInputs): the model that draws the gallery's Grad-CAM, the model card and shortcut check
  report.html shows; None: a page without overlays or card.
  """
  labels_N = loaded.decoded.labels_N
  metrics = evaluation_metrics(labels_N, probabilities_NC, tuple(config.data.classes))
  metrics.update(checkpoint_step=checkpoint_step, folder=loaded.folder,
                 skipped_images=[list(item) for item in loaded.skipped_report()], caveat=config.eval.caveat)
  if training is not None:
    metrics['overlap_with_training'] = loading.copies_of_training_images(
        loaded.decoded, training, config.data.near_copy_threshold)
  if averaged:
    metrics['averaged'] = averaged
  metrics = metrics_lib.with_uncertainty(metrics, labels_N, probabilities_NC, n_bootstrap=config.eval.n_bootstrap,
                                         seed=config.seed)
  if calibration is not None:
    add_calibration(metrics, labels_N, probabilities_NC, calibration, calibration_fitted_here)
  if per_source := per_source_metrics(loaded.decoded, probabilities_NC, config):
    metrics['per_source'] = per_source
    metrics['source_missing_classes'] = sources_lib.missing_classes(loaded.decoded, config.data.classes)
  if config.eval.metadata and config.eval.subgroups:
    metrics['per_subgroup'], metrics['subgroups'] = subgroup_metrics(loaded.decoded, probabilities_NC, config,
                                                                     loaded.folder)
  elif config.eval.metadata:  # A table without subgroups: the join is still reported.
    metrics['subgroups'] = {'metadata': eval_join(loaded.decoded, loaded.folder, config).summary(), 'columns': {}}
  page = page or report_html.PageInputs()
  sources_N, source_names = sources_lib.source_indices(loaded.decoded)
  # Every process draws the gallery's Grad-CAM (a jitted computation over the mesh); process 0 writes the page.
  gallery = report_html.build_gallery(
      loaded.decoded.images_NHWC, labels_N, probabilities_NC, loaded.decoded.paths, tuple(config.data.classes),
      loaded.folder, page.explain_fn, page.explain_what,
      [source_names[s] for s in sources_N] if len(source_names) > 1 else None)
  if distributed.is_main_process():  # Multi-host: every process has the metrics; process 0 writes them.
    workdir_lib.begin_unit(out_dir)  # One unit: marked incomplete first, complete (with its files' hashes) last.
    plots = report.write_evaluation(metrics, out_dir, title, labels_N, probabilities_NC)
    report_html.write_report_html(out_dir, metrics, title, plots, gallery, page.card, page.card_note, page.shortcuts)
    write_predictions(loaded.decoded, probabilities_NC, tuple(config.data.classes),
                      os.path.join(out_dir, 'predictions.csv'))
    workdir_lib.finish_unit(out_dir, [*plots, 'metrics.json', 'report.md', report_html.FILE_NAME, 'predictions.csv'])
  logging.info('%s: accuracy %.4f, macro recall %.4f, macro F1 %.4f → %s', title, metrics['accuracy'],
               metrics['macro_avg']['recall'], metrics['macro_avg']['f1'], out_dir)
  return metrics


def view_keys(seed: int, tta_views: int) -> list[jax.Array | None]:
  """None for the plain view, then one key per test-time augmented view."""
  if tta_views < 0:
    raise ValueError(f'config.eval.tta_views={tta_views} must be >= 0')
  return [None] + [jax.random.fold_in(jax.random.PRNGKey(seed), view) for view in range(1, tta_views + 1)]


def predict_with_views(model: inference.Model, decoded: images.DecodedImages, keys: list[jax.Array | None],
                       batch_size: int) -> np.ndarray:
  """Mean probabilities (model.probabilities: its one eval step, batch_size rows at a time) over the plain view and
  views augmented with the run's config.augment ranges."""
  run_config = model.config
  with run_config.unlocked():
    augment_config = run_config.augment.copy_and_resolve_references()
  with augment_config.unlocked():
    augment_config.enabled = True
  augment_fn = augment.make_augment_fn(augment_config) if len(keys) > 1 else None
  total_NC = 0.0
  for key in keys:
    view = decoded if key is None else dataclasses.replace(
        decoded, images_NHWC=np.asarray(augment_fn(jnp.asarray(decoded.images_NHWC), key)))
    total_NC = total_NC + model.probabilities(view.images_NHWC, desc='evaluating', batch_size=batch_size)
  return total_NC / len(keys)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        overridden: Sequence[str] | None = None) -> dict[str, Any]:
  """Restores workdir's best (or config.eval.step) checkpoint and evaluates config.eval.dir.

  The model, classes and image size come from the run's config.json: `config` may change only
  checkpoints.INFERENCE_FIELDS, and an `overridden` field (None: any field) that differs is a ValueError
  (checkpoints.run_config_for_inference). With config.eval.ensemble (more workdirs, comma-separated) the
  probabilities of every run's best checkpoint are averaged; with config.eval.tta_views=T each model also averages
  T augmented views of every image. The metrics come back with 'out_dir', where the report went.
  """
  config = checkpoints.run_config_for_inference(workdir, config, overridden)
  folder = config.eval.dir
  if not folder:
    raise ValueError('--mode=eval needs a folder of class sub-folders: pass --config.eval.dir=FOLDER')
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')
  members = [workdir] + [w.strip() for w in config.eval.ensemble.split(',') if w.strip()]
  folder_names = folders.parse_folder_names(config.eval.class_names, config.data.classes)
  keys = view_keys(config.seed, config.eval.tta_views)
  # Decoded once per (image size, preprocessing) among the members: each member sees its own run's images.
  decoded_by_size: dict[tuple[int, preprocess.PreprocessSettings], loading.FolderImages] = {}
  total_NC, steps_used, own_model = 0.0, [], None
  for member in members:
    model = inference.load(member, config.eval.step if member == workdir else -1,
                           config=config if member == workdir else None, mesh=mesh)
    own_model = own_model or model  # The workdir's own: report.html's Grad-CAM.
    run_config = model.config
    if tuple(run_config.data.classes) != tuple(config.data.classes):
      raise ValueError(f'config.eval.ensemble: {member!r} was trained on classes {list(run_config.data.classes)}, '
                       f'not {list(config.data.classes)}')
    size = (run_config.data.image_size, preprocess.settings_of(run_config))
    if size not in decoded_by_size:
      with config.unlocked():
        sized = config.copy_and_resolve_references()
      with sized.unlocked():
        sized.data.image_size = size[0]
        sized.data.preprocess = ml_collections.ConfigDict(run_config.data.preprocess.to_dict())
        sized.data.mask_markers = run_config.data.mask_markers
      if folder == VALIDATION:
        data = loading.load_training_data(sized)
        check_validation_split(data, model, f'{member}')  # Another root re-splits: refused (issue 26 High 4).
        decoded_by_size[size] = loading.FolderImages(data.train_folder.folder, data.val, ())
      else:
        decoded_by_size[size] = loading.load_folders(folder, sized, folder_names)  # 'A,B': one source each.
    total_NC = total_NC + predict_with_views(model, decoded_by_size[size].decoded, keys, config.eval.batch_size)
    steps_used.append({'workdir': member, 'step': model.checkpoint_step, 'model': run_config.model.name})
  loaded = next(iter(decoded_by_size.values()))
  # 'folder-<name>-<hash of its resolved path>': never training's own eval/val and eval/test, whatever the evaluated
  # folder is called, and never another folder's report (two folders named test: two reports; issue 26 High 2).
  name = 'validation' if folder == VALIDATION else 'folder-' + workdir_lib.folder_identity(folder.split(','))
  name += ('_ensemble' if len(members) > 1 else '') + (f'_tta{len(keys) - 1}' if len(keys) > 1 else '')
  averaged = None
  if len(members) > 1 or len(keys) > 1:
    averaged = {'checkpoints': steps_used, 'tta_views': len(keys) - 1,
                'description': f'mean probabilities of {len(members)} checkpoint(s) x {len(keys)} view(s) '
                               f'(the plain image and {len(keys) - 1} test-time augmented)'}
  calibration = calibration_lib.read(workdir) if averaged is None else None  # Fitted for one model's plain view.
  training = None if folder == VALIDATION else training_images(config, workdir)
  out_dir = os.path.join(workdir, 'eval', name)
  # The folder's own name; 'folder-' and the hash only keep it apart.
  title = f'{config.name} on ' + ('validation' if folder == VALIDATION else workdir_lib.legacy_folder_name(
      folder.split(',')))
  card, card_note = report_html.run_card(workdir, steps_used[0]['step'])
  what = f'Grad-CAM of {own_model.config.explain.layer}'
  if averaged:
    what += f' ({workdir}\'s model, plain image; the class is the averaged prediction\'s)'
  page = report_html.PageInputs(
      own_model.explain_pixels, what, card, card_note,
      None if folder == VALIDATION else report_html.matching_shortcuts(workdir, folder, steps_used[0]['step']))
  metrics = report_predictions(total_NC / len(members), loaded, config, out_dir, title,
                               steps_used[0]['step'], calibration, training, averaged,
                               calibration_fitted_here=folder == VALIDATION, page=page)
  if distributed.is_main_process():
    model_card.append_evaluation(workdir, metrics, name)
  return {**metrics, 'out_dir': out_dir}


class ValidationMismatchError(ValueError):
  """config.eval.dir=@validation split other images than the run's validation split (another config.data.root)."""


def check_validation_split(data: loading.TrainingData, model: inference.Model, where: str) -> None:
  """ValidationMismatchError unless the validation split made now is the one the checkpoint's run validated on: the
  same number of images and the same sha256 over (relative path, label, pixel hash) its fingerprint recorded
  (`val_files`). A checkpoint without that record (an older lungjax) gets a warning."""
  recorded = (model.run_fingerprint or {}).get('run', {}).get('val_files')
  if not recorded:
    logging.warning('%s: checkpoint step %d records no validation files (an older lungjax): cannot check that '
                    'config.eval.dir=@validation gives the run\'s validation images', where, model.checkpoint_step)
    return
  current = fingerprint_lib.files_digest(data.val, data.train_folder.folder)
  if current != recorded:
    raise ValidationMismatchError(
        f'config.eval.dir={VALIDATION} with config.data.root={data.root!r}: the split made now holds '
        f'{current["n"]} validation images, but the run of {where} (checkpoint step {model.checkpoint_step}) '
        f'validated on {recorded["n"]} other ones (validation files\' sha256 {current["sha256"][:12]} != '
        f'{recorded["sha256"][:12]}): they would be reported as validation while some may be training images. '
        'Pass the run\'s own config.data.root (or none: config.json\'s), or evaluate another folder with '
        'config.eval.dir=FOLDER')


def training_images(config: ml_collections.ConfigDict, workdir: str
                    ) -> loading.TrainingThumbnails | images.DecodedImages | None:
  """The run's training images to look for copies of: the thumbnails training kept in the workdir, or (older
  workdirs, with a warning) its training folder decoded again; None (and a warning) where neither is at hand."""
  kept = loading.training_thumbnails_path(workdir)
  if os.path.exists(kept):
    return loading.load_training_thumbnails(kept)
  root = config.data.root or checkpoints.load_run_config(workdir).data.root
  train_dir = os.path.join(root, 'train') if root else ''
  if not train_dir or not os.path.isdir(train_dir):
    logging.warning('%s and the training folder (config.data.root=%r) not found: copies of training images not '
                    'checked', kept, root)
    return None
  logging.warning('%s not found (a run older than it): decoding the training folder %s again to look for copies of '
                  'its images', kept, train_dir)
  return loading.load_folder(train_dir, config, require_all_classes=False).decoded
