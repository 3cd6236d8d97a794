"""report.html: one self-contained page per evaluation, beside report.md (issue 25, part 2).

The page holds the headline metrics with their intervals, the per-class, per-source and per-subgroup tables, the
confusion matrix, the ROC, precision-recall and reliability plots, calibration, the shortcut check (where one was
run on the same folder and checkpoint), the model card's essentials, and a gallery of the misclassified and
least-confident films with their Grad-CAM overlays, filterable by true and predicted class.

Every image is embedded as a data URI, so the page is one file: it opens offline from the file system, can be
copied, mailed or attached to a CI run without a sibling folder that could go missing, and writes nothing more into
the workdir. Its size stays bounded: the plots are the PNGs report.md links to (~30-60 KB each) and the gallery holds
at most GALLERY_MISCLASSIFIED + GALLERY_LEAST_CONFIDENT films, each twice (overlay and plain film) as a JPEG at the
model's input size (about 10-25 KB each at 256 px): under 2 MB for the study's CNN.

Every number shown in a table cell carries `data-metric` (the JSON path of its value in metrics.json) and, where it
has one, `data-interval` (the path of its interval), so a test can check the rendered page against metrics.json.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from lungjax.report import markdown as report
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import folders

FILE_NAME = 'report.html'
# The page's generator tag: report.html is only ever written over a file that carries it (one lungjax wrote).
GENERATOR = 'lungjax.report_html'
GALLERY_MISCLASSIFIED = 16  # The most confidently wrong films shown (of however many are wrong; the page counts).
GALLERY_LEAST_CONFIDENT = 8  # The correctly classified films of lowest top-class probability shown.
JPEG_QUALITY = 85

# (heading, per_class key) of the per-class table.
_PER_CLASS = (('precision (PPV)', 'precision'), ('recall (sensitivity)', 'recall'), ('F1', 'f1'),
              ('specificity', 'specificity'), ('NPV', 'npv'), ('PR AUC', 'pr_auc'))
# Headline figures: (label, keys into metrics).
_HEADLINE = (('accuracy', ('accuracy',)), ('macro recall', ('macro_avg', 'recall')), ('macro F1', ('macro_avg', 'f1')),
             ('macro precision', ('macro_avg', 'precision')), ('macro ROC AUC', ('roc_auc', 'macro')),
             ('MCC', ('mcc',)), ('Brier score', ('brier',)), ('log loss', ('log_loss',)))

ExplainFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class GalleryItem:
  """One film of the gallery: why it is shown, its labels and confidence, and its JPEGs."""

  file: str  # As shown: relative to the evaluated folder where it lies inside it.
  true: str
  predicted: str
  confidence: float  # The predicted class's probability.
  why: str  # 'misclassified' or 'least confident'.
  film_jpeg: bytes  # The film as the model read it (its input size).
  overlay_jpeg: bytes | None  # Grad-CAM of the predicted class over the film; None where no map could be drawn.
  source: str = ''


@dataclasses.dataclass(frozen=True)
class Gallery:
  """The gallery's films and what the page says about them."""

  items: tuple[GalleryItem, ...]
  n_misclassified: int  # In the whole folder (the gallery shows at most GALLERY_MISCLASSIFIED of them).
  n_correct: int
  note: str  # What the overlays show (layer, class), or why there are none.


@dataclasses.dataclass(frozen=True)
class PageInputs:
  """What an evaluation's caller knows for its page beyond the predictions: the model to draw Grad-CAM with
  (explain_fn(images_NHWC, class_indices_N) -> (probabilities, heatmaps_NHW)) and what it maps, the run's model
  card and a note on it, and a shortcut check of the same folder and checkpoint."""

  explain_fn: ExplainFn | None = None
  explain_what: str = ''  # E.g. 'Grad-CAM of Conv_2'; without explain_fn: why there are no overlays.
  card: Mapping[str, Any] | None = None
  card_note: str = ''
  shortcuts: Mapping[str, Any] | None = None


# ---- choosing and drawing the gallery ---------------------------------------------------------------------------


def gallery_indices(labels_N: np.ndarray, probabilities_NC: np.ndarray,
                    n_misclassified: int = GALLERY_MISCLASSIFIED,
                    n_least_confident: int = GALLERY_LEAST_CONFIDENT) -> tuple[np.ndarray, np.ndarray]:
  """(misclassified, least confident): indices of the wrongly predicted images, most confident first, at most
  n_misclassified; and of the rightly predicted ones of lowest top probability, at most n_least_confident. Ties
  keep the images' order."""
  labels_N, probabilities_NC = np.asarray(labels_N), np.asarray(probabilities_NC)
  predicted_N = probabilities_NC.argmax(axis=-1)
  confidence_N = probabilities_NC.max(axis=-1)
  wrong = np.flatnonzero(predicted_N != labels_N)
  right = np.flatnonzero(predicted_N == labels_N)
  wrong = wrong[np.argsort(-confidence_N[wrong], kind='stable')][:n_misclassified]
  right = right[np.argsort(confidence_N[right], kind='stable')][:n_least_confident]
  return wrong, right


def jpeg_bytes(pixels_HWC: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """The uint8 image as a JPEG without metadata."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(pixels_HWC, np.uint8)).convert('RGB').save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def shown_path(path: str, folder: str) -> str:
  """`path` relative to `folder` where it lies inside it (any of a comma-separated list), else as it is."""
  for root in (f.strip() for f in (folder or '').split(',') if f.strip()):
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if not relative.startswith(os.pardir + os.sep) and relative != os.pardir:
      return relative
  return path


def build_gallery(images_NHWC: np.ndarray, labels_N: np.ndarray, probabilities_NC: np.ndarray,
                  paths: Sequence[str], classes: Sequence[str], folder: str, explain_fn: ExplainFn | None,
                  what: str, sources_N: Sequence[str] | None = None) -> Gallery:
  """The gallery of an evaluation: its misclassified and least-confident films (gallery_indices), each with the
  Grad-CAM overlay of its predicted class from explain_fn(images_NHWC, class_indices_N) -> (probs, heatmaps_NHW).

  `what` says what explain_fn maps (e.g. 'Grad-CAM of Conv_2'). Without explain_fn, or where it raises ValueError
  (a model whose config.explain.layer is no feature map), the films are shown without overlays and the note says why.
  `images_NHWC` may be any array-like indexable by an index array (prepared images read from disk).
  """
  from lungjax.explain import gallery as explain  # pylint: disable=g-import-not-at-top  # The overlay's colours; explain imports jax.

  labels_N, probabilities_NC = np.asarray(labels_N), np.asarray(probabilities_NC)
  wrong, unsure = gallery_indices(labels_N, probabilities_NC)
  chosen = np.concatenate([wrong, unsure]).astype(np.int64)
  n_wrong = int(np.sum(probabilities_NC.argmax(axis=-1) != labels_N))
  if not len(chosen):
    return Gallery((), n_wrong, len(labels_N) - n_wrong, 'No images.')
  films_KHWC = np.asarray(images_NHWC[chosen])
  predicted_K = probabilities_NC[chosen].argmax(axis=-1).astype(np.int32)
  heatmaps_KHW, note = None, f'{what} of the predicted class over the film the model read.'
  if explain_fn is None:
    note = f'No Grad-CAM overlays: {what or "no model was at hand when this page was written"}.'
  else:
    try:
      heatmaps_KHW = np.asarray(explain_fn(films_KHWC, predicted_K)[1])
    except ValueError as error:  # Named in the page and the log: the films are still shown.
      note = f'No Grad-CAM overlays: {error}'
  if heatmaps_KHW is not None:  # An all-zero map (no positive evidence at that layer) draws no colour: say so.
    n_empty = int(np.sum(heatmaps_KHW.reshape(len(chosen), -1).max(axis=1) <= 0))
    if n_empty:
      note += (f' {n_empty} of these {len(chosen)} maps are empty (the ReLU of the weighted channels is zero '
               'everywhere: no positive evidence for the predicted class at that layer); those films show no colour.')
  items = []
  for k, index in enumerate(chosen):
    items.append(GalleryItem(
        file=shown_path(paths[index], folder), true=classes[int(labels_N[index])],
        predicted=classes[int(predicted_K[k])], confidence=float(probabilities_NC[index, predicted_K[k]]),
        why='misclassified' if k < len(wrong) else 'least confident', film_jpeg=jpeg_bytes(films_KHWC[k]),
        overlay_jpeg=None if heatmaps_KHW is None else jpeg_bytes(explain.overlay(films_KHWC[k], heatmaps_KHW[k])),
        source='' if sources_N is None else str(sources_N[index])))
  return Gallery(tuple(items), n_wrong, len(labels_N) - n_wrong, note)


# ---- the page ---------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
  """Text escaped for HTML element content and for quoted attributes."""
  return html.escape(str(value), quote=True)


def _path_attribute(name: str, path: Sequence[Any] | None) -> str:
  return '' if path is None else f' {name}="{_e(json.dumps(list(path)))}"'


def _get(metrics: Mapping[str, Any], path: Sequence[Any]) -> Any:
  value: Any = metrics
  for key in path:
    if not isinstance(value, Mapping) or key not in value:
      return None
    value = value[key]
  return value


def _interval_path(metrics: Mapping[str, Any], prefix: Sequence[Any], keys: Sequence[Any]) -> list[Any] | None:
  """The path (from the page's root metrics) of the interval report._interval_at finds for `keys`, or None."""
  row = _get(metrics, prefix)
  found = report._interval_at(row, keys) if isinstance(row, Mapping) else None  # pylint: disable=protected-access
  if found is None:
    return None
  at = _get(row, ['intervals', *keys])
  return [*prefix, 'intervals', *keys] + (['wilson'] if isinstance(at, Mapping) else [])


def _value_cell(metrics: Mapping[str, Any], prefix: Sequence[Any], keys: Sequence[Any], *,
                needs_support: bool = False) -> str:
  """<td> of `value [lo, hi]` at metrics[prefix + keys] with its interval, tagged with both JSON paths; `n/a`
  where the value is missing, and `n/a (no images)` for a score that needs images of a class without any."""
  row = _get(metrics, prefix)
  value = _get(row, keys)
  if needs_support and _get(row, ['per_class', keys[1], 'support']) == 0:
    return f'<td class="na"{_path_attribute("data-metric", [*prefix, *keys])}>n/a (no images)</td>'
  if value is None:
    return f'<td class="na"{_path_attribute("data-metric", [*prefix, *keys])}>n/a</td>'
  interval_path = _interval_path(metrics, prefix, keys)
  interval = None if interval_path is None else _get(metrics, interval_path)
  text = report._with_interval(float(value), interval)  # pylint: disable=protected-access
  return (f'<td class="num"{_path_attribute("data-metric", [*prefix, *keys])}'
          f'{_path_attribute("data-interval", interval_path)}>{_wrappable(text)}</td>')


def _wrappable(text: str) -> str:
  """`0.910 [0.820, 0.960]` escaped, the interval in a span that never breaks: a table too wide for the window
  (per class: nine columns of intervals) puts the interval under its value instead of running off the page."""
  value, bracket, interval = text.partition(' [')
  return _e(value) + (f' <span class="ci">[{_e(interval)}</span>' if bracket else '')


def _table(headings: Sequence[str], rows: Sequence[str], table_id: str = '') -> str:
  head = ''.join(f'<th>{_e(h)}</th>' for h in headings)
  identity = f' id="{_e(table_id)}"' if table_id else ''
  return f'<table{identity}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _section(section_id: str, heading: str, body: str) -> str:
  return f'<section id="{_e(section_id)}"><h2>{_e(heading)}</h2>{body}</section>'


def _headline_section(metrics: Mapping[str, Any]) -> str:
  rows = []
  for label, keys in _HEADLINE:
    if _get(metrics, keys) is not None or keys[0] in metrics:
      rows.append(f'<tr><th>{_e(label)}</th>{_value_cell(metrics, [], keys)}</tr>')
  goals = []
  has_intervals = 'intervals' in metrics
  for label, keys in report.STUDY_GOALS:
    value = float(_get(metrics, keys))
    interval = report._interval_at(metrics, keys)  # pylint: disable=protected-access
    confident = '' if not has_intervals else (
        '<td>n/a</td>' if interval is None else f'<td>{"yes" if interval[0] > report.GOAL_THRESHOLD else "no"}</td>')
    goals.append(f'<tr><th>{_e(label)}</th>{_value_cell(metrics, [], keys)}'
                 f'<td>{"yes" if value > report.GOAL_THRESHOLD else "no"}</td>{confident}</tr>')
  goal_headings = ['goal', 'value', f'> {report.GOAL_THRESHOLD:.2f}']
  if has_intervals:
    goal_headings.append(f'whole interval > {report.GOAL_THRESHOLD:.2f}')
  confidence = _get(metrics, ['intervals', 'confidence'])
  how = (f'<p class="note">Each <code>value [low, high]</code> is a {round(100 * confidence)}% interval over the '
         'luck of which images were drawn (Wilson for proportions, a stratified bootstrap for the rest; report.md '
         'says which): not over training runs, nor over other hospitals.</p>' if confidence else
         '<p class="note">No intervals in these metrics.</p>')
  return _section('headline', 'Headline', _table(['metric', 'value [95% interval]'], rows, 'headline-table') +
                  f'<h3>The study\'s goals (each &gt; {report.GOAL_THRESHOLD:.2f})</h3>' +
                  _table(goal_headings, goals, 'goals-table') + how)


def _per_class_section(metrics: Mapping[str, Any]) -> str:
  classes = list(metrics['per_class'])
  keys = [(h, k) for h, k in _PER_CLASS if all(k in metrics['per_class'][c] for c in classes)]
  auc = isinstance(metrics.get('roc_auc'), Mapping)
  rows = []
  for name in classes:
    cells = ''.join(_value_cell(metrics, [], ['per_class', name, k], needs_support=k in {'recall', 'f1'})
                    for _, k in keys)
    if auc:
      cells += _value_cell(metrics, [], ['roc_auc', 'per_class', name])
    support = metrics['per_class'][name]['support']
    rows.append(f'<tr><th>{_e(name)}</th>{cells}<td class="num" '
                f'{_path_attribute("data-metric", ["per_class", name, "support"]).strip()}>{support}</td></tr>')
  headings = ['class', *(h for h, _ in keys), *(['ROC AUC'] if auc else []), 'support']
  body = _table(headings, rows, 'per-class-table')
  if metrics.get('macro_avg_classes') and metrics['macro_avg_classes'] != metrics.get('classes'):
    body += (f'<p class="note">Macro averages run over the classes present: '
             f'{_e(", ".join(metrics["macro_avg_classes"]))}.</p>')
  return _section('per-class', 'Per class (each class vs the rest)', body)


def _is_group(row: Any) -> bool:
  return isinstance(row, Mapping) and 'n_images' in row and 'per_class' in row


def _group_rows(metrics: Mapping[str, Any], prefix: Sequence[Any], groups: Mapping[str, Any],
                classes: Sequence[str]) -> list[str]:
  rows = []
  for name, row in groups.items():
    if not _is_group(row):
      continue
    path = [*prefix, name]
    recalls = ''.join(
        _value_cell(metrics, path, ['per_class', c, 'recall']) if row['per_class'].get(c, {}).get('support')
        else '<td class="na">n/a (none)</td>' for c in classes)
    rows.append(f'<tr><th>{_e(name)}</th><td class="num"{_path_attribute("data-metric", [*path, "n_images"])}>'
                f'{row["n_images"]}</td>{_value_cell(metrics, path, ["accuracy"])}'
                f'{_value_cell(metrics, path, ["macro_avg", "recall"])}{recalls}</tr>')
  return rows


def _group_headings(first: str, classes: Sequence[str]) -> list[str]:
  return [first, 'images', 'accuracy', 'macro recall', *(f'{c} recall' for c in classes)]


def _per_source_section(metrics: Mapping[str, Any]) -> str:
  per_source = metrics.get('per_source')
  if not per_source:
    return ''
  classes = metrics['classes']
  body = _table(_group_headings('source', classes), _group_rows(metrics, ['per_source'], per_source, classes),
                'per-source-table')
  notes = [f'<li>{_e(name)} has no {_e(" or ".join(lacking))} images: its scores say nothing about them.</li>'
           for name, lacking in metrics.get('source_missing_classes', {}).items()]
  if notes:
    body += f'<ul>{"".join(notes)}</ul>'
  return _section('per-source', 'Per source', body)


def _plain(value: Any) -> str:
  """A value of a table lungjax did not lay out for the page: numbers to 3 places, [a, b] pairs, lists joined."""
  if isinstance(value, bool) or value is None:
    return 'n/a' if value is None else ('yes' if value else 'no')
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return f'{float(value):.3f}'
  if isinstance(value, (list, tuple)):
    if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
      return f'[{float(value[0]):.3f}, {float(value[1]):.3f}]'
    return ', '.join(_plain(v) for v in value)
  if isinstance(value, Mapping):
    return '; '.join(f'{k}: {_plain(v)}' for k, v in value.items())
  return str(value)


def _plain_table(entries: Mapping[str, Any], first: str) -> str:
  """A table of {row name: {column: value}} (columns the union of the rows' keys), or of {name: value}."""
  if all(isinstance(v, Mapping) for v in entries.values()):
    columns = list(dict.fromkeys(k for v in entries.values() for k in v))
    rows = [f'<tr><th>{_e(name)}</th>' + ''.join(f'<td>{_e(_plain(row.get(c)))}</td>' for c in columns) + '</tr>'
            for name, row in entries.items()]
    return _table([first, *columns], rows)
  return _table([first, 'value'], [f'<tr><th>{_e(k)}</th><td>{_e(_plain(v))}</td></tr>' for k, v in entries.items()])


def _per_subgroup_section(metrics: Mapping[str, Any]) -> str:
  """per_subgroup.<column>.<value> (a per-source-like row per group) and whatever else a column holds (its recall
  gaps, groups too small), plus a top-level subgroup_gaps; nothing when the metrics have no per_subgroup."""
  per_subgroup = metrics.get('per_subgroup')
  if not per_subgroup:
    return ''
  classes = metrics['classes']
  parts = []
  for column, groups in per_subgroup.items():
    parts.append(f'<h3>{_e(column)}</h3>')
    parts.append(_table(_group_headings(column, classes), _group_rows(metrics, ['per_subgroup', column], groups,
                                                                        classes), f'subgroup-{column}-table'))
    for key, value in groups.items():
      if not _is_group(value):
        parts.append(f'<h4>{_e(column)}: {_e(key)}</h4>' +
                     (_plain_table(value, key) if isinstance(value, Mapping) and value else f'<p>{_e(_plain(value))}</p>'))
    parts.append(_gaps_table(metrics, column))
    parts.append(_counts_note(metrics, column))
  gaps = metrics.get('subgroup_gaps')
  if isinstance(gaps, Mapping):
    for column, value in gaps.items():
      parts.append(f'<h4>{_e(column)}: recall gaps between groups</h4>' +
                   (_plain_table(value, 'class') if isinstance(value, Mapping) else f'<p>{_e(_plain(value))}</p>'))
  return _section('per-subgroup', 'Per subgroup', ''.join(parts))


def _counts_note(metrics: Mapping[str, Any], column: str) -> str:
  """subgroups.columns.<column>: how its bins came (quartiles when named without bins) and its class counts per
  group (a confound shows: 'AP Supine Covid 72, Normal 3'); '' where the metrics hold no such column."""
  described = _get(metrics, ['subgroups', 'columns', column])
  if not isinstance(described, Mapping) or not isinstance(described.get('counts'), Mapping):
    return ''
  binned = (f'Binned at the quartiles of its values (named without bins): {", ".join(described["bins"])}. '
            if described.get('bins_from') == 'quartiles' else '')
  counts = '; '.join(f'{value} ' + ', '.join(f'{c} {n}' for c, n in row['per_class'].items())
                     for value, row in described['counts'].items())
  return f'<p class="note">{_e(binned)}Class counts: {_e(counts)}.</p>'


def _gaps_table(metrics: Mapping[str, Any], column: str) -> str:
  """subgroups.columns.<column>: each class's largest recall gap (value [interval], tagged with its JSON paths),
  between which groups, and the groups too small for numbers; '' where the metrics hold no such column."""
  described = _get(metrics, ['subgroups', 'columns', column])
  if not isinstance(described, Mapping):
    return ''
  rows = []
  for name, gap in described.get('recall_gaps', {}).items():
    path = ['subgroups', 'columns', column, 'recall_gaps', name]
    if gap.get('gap') is None:
      rows.append(f'<tr><th>{_e(name)}</th><td class="na"{_path_attribute("data-metric", [*path, "gap"])}>n/a</td>'
                  f'<td colspan="2">{_e(gap.get("reason", ""))}</td></tr>')
      continue
    text = report._with_interval(float(gap['gap']), gap['interval'])  # pylint: disable=protected-access
    between = (f'{gap["high"]} ({gap["recalls"][gap["high"]]:.3f}, {gap["n_class_images"][gap["high"]]} images) and '
               f'{gap["low"]} ({gap["recalls"][gap["low"]]:.3f}, {gap["n_class_images"][gap["low"]]} images)')
    lo, hi = gap['interval']
    rows.append(f'<tr><th>{_e(name)}</th><td class="num"{_path_attribute("data-metric", [*path, "gap"])}'
                f'{_path_attribute("data-interval", [*path, "interval"])}>{_e(text)}</td><td>{_e(between)}</td>'
                f'<td>{"excludes 0" if lo > 0 or hi < 0 else "includes 0: not told apart"}</td></tr>')
  body = ''
  if rows:
    body += (f'<h4>{_e(column)}: largest gap in each class\'s recall between groups</h4>' +
             _table(['class', 'gap [95% interval]', 'between (recall, images of the class)', 'interval'], rows,
                    f'gaps-{column}-table'))
  small = described.get('too_small') or []
  if small:
    minimum = _get(metrics, ['subgroups', 'min_images'])
    body += (f'<p class="too-small" id="too-small-{_e(column)}">Too small to say anything (under {_e(minimum)} images, '
             'no numbers): ' + ', '.join(f'{_e(t["value"])} ({t["n_images"]})' for t in small) + '.</p>')
  return body


def _confusion_section(metrics: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
  classes = metrics['classes']
  rows = []
  for t, (name, row) in enumerate(zip(classes, metrics['confusion_matrix'])):
    cells = ''.join(f'<td class="num{" diag" if t == p else ""}"'
                    f'{_path_attribute("data-metric", ["confusion_matrix", t, p])}>{v}</td>' for p, v in enumerate(row))
    rows.append(f'<tr><th>{_e(name)}</th>{cells}</tr>')
  body = _table(['true \\ predicted', *classes], rows, 'confusion-table')
  lines = []
  counts = np.asarray(metrics['confusion_matrix'])
  for c, name in enumerate(classes):
    if metrics['per_class'][name]['support'] == 0 and counts[:, c].sum() > 0:
      lines.append(f'<li>{_e(name)} is absent from this folder, yet {counts[:, c].sum()} images were predicted '
                   f'as {_e(name)}.</li>')
  if lines:
    body += f'<ul>{"".join(lines)}</ul>'
  body += _plot(plots, 'confusion_matrix.png', 'confusion matrix')
  return _section('confusion', 'Confusion matrix (rows: true, columns: predicted)', body)


def _data_uri(data: bytes, mime: str) -> str:
  return f'data:{mime};base64,{base64.b64encode(data).decode("ascii")}'


def _plot(plots: Mapping[str, bytes], name: str, alt: str) -> str:
  if name not in plots:
    return ''
  return f'<img class="plot" alt="{_e(alt)}" data-file="{_e(name)}" src="{_data_uri(plots[name], "image/png")}">'


def _curves_section(metrics: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
  shown = ''.join(_plot(plots, name, alt) for name, alt in report.PLOTS if name != 'confusion_matrix.png')
  if not shown:
    return _section('curves', 'ROC, precision-recall and reliability', '<p>No curves: no predictions given.</p>')
  body = f'<div class="plots">{shown}</div>'
  calibration = metrics.get('calibration')
  if isinstance(calibration, Mapping):
    text = (f'Expected calibration error (top label, {calibration["n_bins"]} equal-width confidence bins), raw: '
            f'<span data-metric="{_e(json.dumps(["calibration", "ece"]))}">{calibration["ece"]:.3f}</span>.')
    if 'ece_calibrated' in calibration:
      text += (f' After temperature scaling, {_e(calibration["calibrated_by"])}: <span data-metric="'
               f'{_e(json.dumps(["calibration", "ece_calibrated"]))}">{calibration["ece_calibrated"]:.3f}</span> '
               f'({_e(calibration["calibrated_how"])}).')
    body += f'<p id="calibration">{text}</p>'
  return _section('curves', 'ROC, precision-recall, reliability and calibration', body)


def _shortcuts_section(shortcuts: Mapping[str, Any] | None) -> str:
  if not shortcuts:
    return ''
  classes = shortcuts.get('classes', [])
  rows = []
  titles = {'as_is': 'as is', 'lungs_hidden': 'lungs hidden', 'lungs_only': 'lungs only'}
  for view, scores in shortcuts.get('views', {}).items():
    cells = ''.join(f'<td class="num">{_e(report._with_interval(scores["recall"][c], scores["recall_interval"][c]))}'  # pylint: disable=protected-access
                    '</td>' if c in scores['recall'] else '<td class="na">n/a</td>' for c in classes)
    rows.append(f'<tr><th>{_e(titles.get(view, view))}</th><td class="num">'
                f'{_e(report._with_interval(scores["accuracy"], scores["accuracy_interval"]))}</td>{cells}</tr>')  # pylint: disable=protected-access
  verdicts = [shortcuts.get('verdict', {}).get(k) for k in ('lungs_hidden_text', 'lungs_only_text')]
  verdicts += list(shortcuts.get('cam_verdicts', {}).values())
  body = (f'<p>--mode=shortcuts on the same folder and checkpoint (step {_e(shortcuts.get("checkpoint_step"))}): a '
          'lung box hidden, or shown alone.</p><ul>' + ''.join(f'<li>{_e(v)}</li>' for v in verdicts if v) + '</ul>' +
          _table(['view', 'accuracy', *(f'{c} recall' for c in classes)], rows, 'shortcuts-table'))
  overall = shortcuts.get('cam', {}).get('overall', {})
  if overall.get('mean') is not None:
    body += (f'<p>Share of Grad-CAM heat inside the lung box: {_e(report._with_interval(overall["mean"], overall["interval"]))} '  # pylint: disable=protected-access
             f'(an even spread puts {shortcuts.get("box_area_share", 0):.3f} there).</p>')
  return _section('shortcuts', 'Does the model look at the lungs? (shortcut check)', body)


def _card_section(card: Mapping[str, Any] | None, card_note: str) -> str:
  if not card:
    return _section('model-card', 'Model card', f'<p>{_e(card_note or "No model card for this run.")}</p>')
  model, data = card.get('model', {}), card.get('training_data', {})
  prep, recipe, calibration = card.get('preprocessing', {}), card.get('recipe', {}), card.get('calibration')
  items = [('intended use', card.get('intended_use')),
           ('model', f'{model.get("name")}, {model.get("n_params")} parameters; classes '
                     f'{", ".join(model.get("classes", []))}; checkpoint step {model.get("best_step")} (best by '
                     f'{model.get("selected_by")})'),
           ('training data', f'{data.get("root") or data.get("folder")}' +
            (f'; sources {_plain(data["sources"])}' if data.get('sources') else '') +
            ''.join(f'; {split}: ' + ', '.join(f'{c} {n}' for c, n in counts.items())
                    for split, counts in data.get('counts', {}).items())),
           ('preprocessing', f'{prep.get("decoding")}; image size {prep.get("image_size")}; rescale '
                             f'{prep.get("rescale")}'),
           ('recipe', _plain(recipe)),
           ('calibration', 'none fitted: raw softmax' if not calibration else
            f'{calibration.get("method")}: T = {_plain(calibration.get("temperature"))}, ECE raw '
            f'{_plain(calibration.get("ece_raw"))}, after scaling (out of fold) '
            f'{_plain(calibration.get("ece_calibrated_out_of_fold"))}'),
           ('caveat', card.get('caveat')),
           ('provenance', f'git commit {card.get("git_commit") or "none (not a git checkout)"}; written '
                          f'{card.get("date")}; ' + ', '.join(f'{k} {v}' for k, v in card.get('versions', {}).items()
                                                             if v))]
  rows = ''.join(f'<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in items if v)
  note = f'<p class="note">{_e(card_note)}</p>' if card_note else ''
  return _section('model-card', f'Model card: {card.get("name", "")}', f'<table class="card">{rows}</table>{note}')


def _other_sections(metrics: Mapping[str, Any]) -> str:
  parts = []
  overlap = metrics.get('overlap_with_training')
  if overlap is not None:
    if overlap:
      rows = [f'<tr><td><code>{_e(o["file"])}</code></td><td><code>{_e(o["training_file"])}</code></td>'
              f'<td>{_e(o["kind"])}</td><td class="num">{o["score"]:.3f}</td></tr>' for o in overlap]
      table = _table(['file', 'training file', 'kind', 'r'], rows)
      if len(overlap) > 10:  # Cohen's films: 98 copies, a page and a half of paths before the gallery; folded.
        table = f'<details><summary>the {len(overlap)} copies and their training files</summary>{table}</details>'
      body = (f'<p>{len(overlap)} of these images are exact or near copies of training images: their predictions '
              'say little about new patients.</p>' + table)
    else:
      body = '<p>None found: no image here is an exact or near copy of a training image.</p>'
    parts.append(_section('overlap', 'Copies of training images in this folder', body))
  if metrics.get('caveat'):
    parts.append(_section('caveat', 'Caveat', f'<p>{_e(metrics["caveat"])}</p>'))
  if metrics.get('skipped_images'):
    items = ''.join(f'<li><code>{_e(path)}</code>: {_e(reason)}</li>' for path, reason in metrics['skipped_images'])
    parts.append(_section('skipped', f'Skipped files ({len(metrics["skipped_images"])})', f'<ul>{items}</ul>'))
  return ''.join(parts)


def _gallery_section(gallery: Gallery | None, classes: Sequence[str]) -> str:
  if gallery is None:
    return _section('gallery', 'Misclassified and least-confident films', '<p>No gallery: the films were not at hand '
                    'when this page was written.</p>')
  n_wrong_shown = sum(1 for item in gallery.items if item.why == 'misclassified')
  n_unsure_shown = len(gallery.items) - n_wrong_shown
  options = '<option value="">any</option>' + ''.join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in classes)
  controls = (f'<div class="filters"><label>true class <select id="filter-true">{options}</select></label> '
              f'<label>predicted class <select id="filter-pred">{options}</select></label> '
              '<span id="gallery-count" aria-live="polite"></span></div>')
  figures = []
  for k, item in enumerate(gallery.items):
    thumbnail = item.overlay_jpeg if item.overlay_jpeg is not None else item.film_jpeg
    large = (f'<img class="large" alt="Grad-CAM overlay of {_e(item.file)}" '
             f'src="{_data_uri(item.overlay_jpeg, "image/jpeg")}">' if item.overlay_jpeg is not None else '')
    source = f' · {_e(item.source)}' if item.source else ''
    figures.append(
        f'<figure class="film {"wrong" if item.why == "misclassified" else "unsure"}" id="film-{k}" tabindex="0" '
        f'data-true="{_e(item.true)}" data-pred="{_e(item.predicted)}" data-why="{_e(item.why)}">'
        f'<img class="thumb" alt="{_e(item.file)}" src="{_data_uri(thumbnail, "image/jpeg")}">'
        f'<div class="enlarged">{large}<img class="large" alt="film {_e(item.file)}" '
        f'src="{_data_uri(item.film_jpeg, "image/jpeg")}"></div>'
        f'<figcaption><span class="file" title="{_e(item.file)}">{_e(item.file)}</span>'
        f'<span>true {_e(item.true)} · pred {_e(item.predicted)} {item.confidence:.0%}{source}</span>'
        f'<span class="why">{_e(item.why)}</span></figcaption></figure>')
  intro = (f'<p>{gallery.n_misclassified} of {gallery.n_misclassified + gallery.n_correct} films misclassified: '
           f'the {n_wrong_shown} most confidently wrong shown, then the {n_unsure_shown} correct films of lowest '
           f'confidence. {_e(gallery.note)} Click a film to enlarge it (Esc or click again to close); the filter is '
           'kept in the address (#true=...&amp;pred=...).</p>')
  return _section('gallery', 'Misclassified and least-confident films',
                  intro + controls + f'<div class="grid" id="gallery-grid">{"".join(figures)}</div>')


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 1.5em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:.8em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td.num{font-variant-numeric:tabular-nums}td.num .ci{white-space:nowrap}
td.na{color:#888}td.diag{background:#e6f2e6}.note{color:#555;font-size:.92em}
.plots{display:flex;flex-wrap:wrap;gap:1em}img.plot{max-width:100%;height:auto;border:1px solid #eee}
.filters{margin:.6em 0}.filters select{margin-right:1em}#image-check{font-size:.9em;color:#555}
#image-check.failed{color:#b00;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.7em}
figure.film{margin:0;border:2px solid #ccc;padding:4px;cursor:zoom-in;background:#fff}
figure.film.wrong{border-color:#c33}figure.film.unsure{border-color:#d90}
figure.film img.thumb{width:100%;height:auto;display:block;image-rendering:auto}
figure.film figcaption{font-size:.78em;display:flex;flex-direction:column}
figure.film .file{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;direction:rtl;text-align:left}
figure.film .why{color:#777}figure.film .enlarged{display:none}
figure.film.open{position:fixed;inset:2vh 2vw;z-index:10;cursor:zoom-out;overflow:auto;box-shadow:0 0 0 100vmax #0008}
figure.film.open img.thumb{display:none}
figure.film.open .enlarged{display:flex;gap:8px;justify-content:center}
figure.film.open .enlarged img{width:min(46vw,80vh);height:auto;image-rendering:pixelated}
figure.film.open figcaption{font-size:1em}
"""

# The gallery filter (true and predicted class, kept in the address's #true=..&pred=..), click to enlarge, and a
# check that every image decoded (its result shown at the top of the page, and in data-loaded / data-failed).
_JS = """
(function () {
  var grid = document.getElementById('gallery-grid');
  var films = grid ? Array.prototype.slice.call(grid.querySelectorAll('figure.film')) : [];
  var trueSelect = document.getElementById('filter-true'), predSelect = document.getElementById('filter-pred');
  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    return {t: params.get('true') || '', p: params.get('pred') || ''};
  }
  function apply(t, p) {
    var shown = 0;
    films.forEach(function (f) {
      var keep = (!t || f.dataset.true === t) && (!p || f.dataset.pred === p);
      f.hidden = !keep;
      if (keep) { shown += 1; }
    });
    var count = document.getElementById('gallery-count');
    if (count) { count.textContent = shown + ' of ' + films.length + ' films shown'; count.dataset.shown = shown; }
  }
  function changed() {
    var params = new URLSearchParams();
    if (trueSelect.value) { params.set('true', trueSelect.value); }
    if (predSelect.value) { params.set('pred', predSelect.value); }
    history.replaceState(null, '', params.toString() ? '#' + params.toString() : location.pathname);
    apply(trueSelect.value, predSelect.value);
  }
  if (trueSelect && predSelect) {
    var start = fromHash();
    trueSelect.value = start.t; predSelect.value = start.p;
    if (trueSelect.value !== start.t) { trueSelect.value = ''; }
    if (predSelect.value !== start.p) { predSelect.value = ''; }
    trueSelect.addEventListener('change', changed);
    predSelect.addEventListener('change', changed);
    apply(trueSelect.value, predSelect.value);
  }
  films.forEach(function (f) {
    function toggle() {
      var open = !f.classList.contains('open');
      films.forEach(function (g) { g.classList.remove('open'); });
      if (open) { f.classList.add('open'); }
    }
    f.addEventListener('click', toggle);
    f.addEventListener('keydown', function (e) { if (e.key === 'Enter') { toggle(); } });
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') { films.forEach(function (g) { g.classList.remove('open'); }); }
  });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var failed = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    var check = document.getElementById('image-check');
    check.dataset.loaded = images.length - failed.length;
    check.dataset.failed = failed.length;
    if (failed.length) {
      check.className = 'failed';
      check.textContent = failed.length + ' of ' + images.length + ' images failed to load: ' +
          failed.map(function (i) { return i.alt; }).join(', ');
    } else {
      check.textContent = 'All ' + images.length + ' images on this page loaded.';
    }
  });
})();
"""


def page(metrics: Mapping[str, Any], title: str, plots: Mapping[str, bytes] | None = None,
         gallery: Gallery | None = None, card: Mapping[str, Any] | None = None, card_note: str = '',
         shortcuts: Mapping[str, Any] | None = None) -> str:
  """The whole page (a str of HTML) of one evaluation's metrics (metrics.json's contents).

  plots: {file name of report.PLOTS: PNG bytes}, embedded. gallery: build_gallery's. card: model_card.json's
  contents (its essentials shown), card_note: what the page should say about it (e.g. why there is none).
  shortcuts: shortcuts.json of the same folder and checkpoint. Every text from the data (file and class names,
  the caveat, ...) is escaped.
  """
  plots = plots or {}
  details = [f'{metrics["n_images"]} images']
  if metrics.get('folder'):
    details.append(f'folder {metrics["folder"]}')
  if metrics.get('checkpoint_step') is not None:
    details.append(f'checkpoint step {metrics["checkpoint_step"]}')
  if metrics.get('skipped_images'):
    details.append(f'{len(metrics["skipped_images"])} undecodable files skipped (listed below)')
  if metrics.get('averaged'):
    details.append(str(metrics['averaged'].get('description', 'averaged')))
  sections = [
      _headline_section(metrics), _per_class_section(metrics), _per_source_section(metrics),
      _per_subgroup_section(metrics), _confusion_section(metrics, plots), _curves_section(metrics, plots),
      _shortcuts_section(shortcuts), _other_sections(metrics), _card_section(card, card_note),
      _gallery_section(gallery, metrics['classes'])]
  body = ''.join(s for s in sections if s)
  ids = [('headline', 'headline'), ('per-class', 'per class'), ('per-source', 'per source'),
         ('per-subgroup', 'per subgroup'), ('confusion', 'confusion'), ('curves', 'curves'),
         ('shortcuts', 'shortcuts'), ('model-card', 'model card'), ('gallery', 'gallery')]
  nav = ' '.join(f'<a href="#{i}">{_e(label)}</a>' for i, label in ids if f'<section id="{i}"' in body)
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="generator" content="{GENERATOR}">'
          '<meta name="viewport" content="width=device-width, initial-scale=1">'
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
          "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
          f'<title>{_e(title)}</title><style>{_CSS}</style></head><body>'
          f'<h1>{_e(title)}</h1><p id="details">{_e(", ".join(details))}.</p><nav>{nav}</nav>'
          '<p id="image-check">Checking the page\'s images…</p>'
          f'{body}<script>{_JS}</script></body></html>\n')


# ---- writing it -------------------------------------------------------------------------------------------------


def _written_by_lungjax(path: str) -> bool:
  with open(path, 'rb') as f:
    head = f.read(4096)
  return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def write_page(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (a temporary file beside it, then os.replace): never through a symbolic
  link, never over a file that is not an earlier report.html of lungjax (FileExistsError names it)."""
  if os.path.islink(path):
    raise FileExistsError(f'{path} is a symbolic link: lungjax does not write report.html through it')
  if os.path.exists(path) and not (os.path.isfile(path) and _written_by_lungjax(path)):
    raise FileExistsError(f'{path} exists and was not written by lungjax ({GENERATOR}): not written over')
  workdir_lib.write_atomic(path, folders.shown_name(text))  # Valid UTF-8: a non-UTF-8 file name shown escaped.


def write_report_html(out_dir: str, metrics: Mapping[str, Any], title: str, plots: Sequence[str] = (),
                      gallery: Gallery | None = None, card: Mapping[str, Any] | None = None, card_note: str = '',
                      shortcuts: Mapping[str, Any] | None = None) -> str:
  """Writes out_dir/report.html, embedding the named PNGs of out_dir (those report.write_evaluation drew); returns
  its path."""
  embedded = {}
  for name in plots:
    with open(os.path.join(out_dir, name), 'rb') as f:
      embedded[name] = f.read()
  path = os.path.join(out_dir, FILE_NAME)
  write_page(path, page(metrics, title, embedded, gallery, card, card_note, shortcuts))
  return path


def read_json(path: str) -> dict[str, Any] | None:
  """The JSON object at path, or None where there is no such file."""
  if not os.path.isfile(path):
    return None
  value = workdir_lib.read_json(path)  # CorruptFileError names a file cut short.
  return value if isinstance(value, dict) else None


def run_card(workdir: str, checkpoint_step: int | None) -> tuple[dict[str, Any] | None, str]:
  """(workdir's model_card.json, a note for the page): the note says where there is none, or where the card's
  checkpoint is not the one evaluated."""
  card = read_json(os.path.join(workdir, 'model_card.json'))
  if card is None:
    return None, f'No model card in {workdir} (a run trained before model cards existed).'
  step = card.get('model', {}).get('best_step')
  if checkpoint_step is not None and step is not None and step != checkpoint_step:
    return card, (f'The card describes the run, whose selected checkpoint is step {step}; this page evaluates '
                  f'step {checkpoint_step}.')
  return card, ''


def matching_shortcuts(workdir: str, folder: str, checkpoint_step: int | None) -> dict[str, Any] | None:
  """The shortcut check (shortcuts.json) of the same folder and checkpoint in workdir, or None."""
  if not folder or not os.path.basename(os.path.normpath(folder)):
    return None
  # Its folder-identity name, or the base name an older lungjax used (then only if it names this very folder).
  for name in (workdir_lib.folder_identity([folder]), workdir_lib.legacy_folder_name([folder])):
    out_dir = os.path.join(workdir, 'shortcuts', name)
    if os.path.isdir(out_dir):
      workdir_lib.check_unit(out_dir, 'the shortcut check')  # IncompleteFolderError: killed midway.
    summary = read_json(os.path.join(out_dir, 'shortcuts.json'))
    if summary and os.path.realpath(summary.get('folder', '')) == os.path.realpath(folder):
      return summary if summary.get('checkpoint_step') == checkpoint_step else None
  return None
