"""report.html: the page builder on synthetic metrics, its escaping and filter, and the page in headless Chromium."""

import base64
import html.parser
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, write_image_folder
from lungjax import evaluate, metrics as metrics_lib
from lungjax.report import markdown as report, report_html
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import loading

CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if os.path.exists('/usr/bin/chromium') else None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (.ci/run installs it with '
                                                              'apt-get where it can)')


def _predictions(n_per_class=12, seed=0):
  rng = np.random.default_rng(seed)
  labels_N = np.repeat(np.arange(3), n_per_class)
  logits_NC = rng.normal(size=(len(labels_N), 3))
  logits_NC[np.arange(len(labels_N)), labels_N] += 1.5
  probabilities_NC = np.exp(logits_NC) / np.exp(logits_NC).sum(axis=1, keepdims=True)
  return labels_N, probabilities_NC


def _metrics(labels_N, probabilities_NC, classes=CLASSES):
  metrics = evaluate.evaluation_metrics(labels_N, probabilities_NC, tuple(classes))
  return metrics_lib.with_uncertainty(metrics, labels_N, probabilities_NC, n_bootstrap=50, seed=0)


def _with_groups(metrics, labels_N, probabilities_NC):
  """per_source and per_subgroup entries built as lungjax builds per-source ones (the whole's metrics on a subset)."""
  half = np.arange(len(labels_N)) % 2 == 0
  sub = lambda mask: _metrics(labels_N[mask], probabilities_NC[mask])
  metrics['per_source'] = {'kaggle': sub(half), 'cohen': sub(~half)}
  metrics['source_missing_classes'] = {}
  thirds = np.arange(len(labels_N)) % 3
  metrics['per_subgroup'] = {
      'sex': {'M': sub(thirds != 0), 'F': sub(thirds == 0),
              'recall_gaps': {'Covid': {'gap': 0.25, 'interval': [0.05, 0.45], 'groups': ['M', 'F']}}},
      'view': {'PA <b>': sub(half), 'AP Supine': sub(~half)}}
  metrics['subgroup_gaps'] = {'view': {'Normal': {'gap': 0.1, 'interval': [-0.2, 0.4]}}}
  return metrics


def _jpeg(value, size=16):
  return report_html.jpeg_bytes(np.full((size, size, 3), value, np.uint8))


def _gallery(file_name='Covid/a.png'):
  items = (report_html.GalleryItem(file_name, 'Covid', 'Normal', 0.8, 'misclassified', _jpeg(100), _jpeg(200)),
           report_html.GalleryItem('Normal/b.png', 'Normal', 'Normal', 0.4, 'least confident', _jpeg(50), _jpeg(150)),
           report_html.GalleryItem('Viral Pneumonia/c.png', 'Viral Pneumonia', 'Covid', 0.6, 'misclassified',
                                   _jpeg(30), None))
  return report_html.Gallery(items, 2, 34, 'Grad-CAM of Conv_2 of the predicted class.')


_PNG = None


def _png():
  global _PNG
  if _PNG is None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, format='PNG')
    _PNG = buffer.getvalue()
  return _PNG


_CARD = {'name': 'tiny', 'intended_use': 'research only', 'model': {'name': 'cnn', 'n_params': 123,
         'classes': list(CLASSES), 'best_step': 4, 'selected_by': 'val_macro_recall'},
         'training_data': {'root': '/data', 'counts': {'train': {'Covid': 3}}},
         'preprocessing': {'image_size': 32, 'decoding': 'RGB', 'rescale': '/255'}, 'recipe': {'epochs': 2},
         'calibration': None, 'caveat': 'children vs adults', 'git_commit': 'abc', 'date': '2026-12-07',
         'versions': {'jax': '0.4'}}
_SHORTCUTS = {'checkpoint_step': 4, 'classes': list(CLASSES), 'box_area_share': 0.6,
              'verdict': {'lungs_hidden_text': 'Keeps its score without the lungs', 'lungs_only_text': 'fine'},
              'cam_verdicts': {'Covid': 'looks outside'},
              'views': {'as_is': {'accuracy': 0.9, 'accuracy_interval': [0.8, 0.95], 'recall': {'Covid': 0.9},
                                  'recall_interval': {'Covid': [0.7, 0.97]}}},
              'cam': {'overall': {'mean': 0.3, 'interval': [0.2, 0.4], 'n': 36}}}


class _Page(html.parser.HTMLParser):
  """The tags of a page: every element's attributes, and the text inside each data-metric element."""

  def __init__(self):
    super().__init__()
    self.elements, self.metric_cells, self._open = [], [], []
    self.text = []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.elements.append((tag, attrs))
    if tag not in ('img', 'meta', 'br', 'input', 'link'):
      self._open.append([tag, attrs, []])

  def handle_endtag(self, tag):
    while self._open:
      open_tag, attrs, text = self._open.pop()
      if 'data-metric' in attrs:
        self.metric_cells.append((attrs, ''.join(text).strip()))
      if open_tag == tag:
        break

  def handle_data(self, data):
    self.text.append(data)
    for entry in self._open:
      entry[2].append(data)


def _parse(text):
  parser = _Page()
  parser.feed(text)
  return parser


def _lookup(metrics, path):
  value = metrics
  for key in path:
    value = value[key]
  return value


def check_numbers(metrics, cells):
  """Every number the page shows equals metrics.json: the value to 3 places, the interval after it."""
  assert cells
  for attrs, text in cells:
    path = json.loads(attrs['data-metric'])
    value = _lookup(metrics, path)
    if text.startswith('n/a'):
      assert value is None or (path[0] == 'per_class' and path[-1] in ('recall', 'f1')
                               and metrics['per_class'][path[1]]['support'] == 0), (path, text)
      continue
    expected = str(value) if isinstance(value, int) else f'{value:.3f}'
    if 'data-interval' in attrs:
      lo, hi = _lookup(metrics, json.loads(attrs['data-interval']))
      expected += f' [{lo:.3f}, {hi:.3f}]'
    assert text == expected, (path, text, expected)


def test_every_section_present_and_numbers_equal_metrics():
  labels_N, probabilities_NC = _predictions()
  metrics = _with_groups(_metrics(labels_N, probabilities_NC), labels_N, probabilities_NC)
  metrics['calibration'] = {'n_bins': 10, 'ece': 0.1234}
  metrics['overlap_with_training'] = []
  metrics['caveat'] = 'A caveat.'
  plots = {name: _png() for name, _ in report.PLOTS}
  text = report_html.page(metrics, 'tiny on test', plots, _gallery(), _CARD, '', _SHORTCUTS)
  parsed = _parse(text)
  ids = {attrs.get('id') for tag, attrs in parsed.elements if tag == 'section'}
  assert ids == {'headline', 'per-class', 'per-source', 'per-subgroup', 'confusion', 'curves', 'shortcuts',
                 'overlap', 'caveat', 'model-card', 'gallery'}
  shown_plots = {attrs['data-file'] for tag, attrs in parsed.elements if tag == 'img' and 'data-file' in attrs}
  assert shown_plots == {name for name, _ in report.PLOTS}
  check_numbers(metrics, parsed.metric_cells)
  paths = [json.loads(attrs['data-metric']) for attrs, _ in parsed.metric_cells]
  for expected in (['accuracy'], ['per_class', 'Viral Pneumonia', 'npv'], ['per_source', 'cohen', 'accuracy'],
                   ['per_subgroup', 'view', 'AP Supine', 'per_class', 'Normal', 'recall'], ['confusion_matrix', 2, 1],
                   ['roc_auc', 'macro'], ['calibration', 'ece']):
    assert expected in paths, expected
  body = ''.join(parsed.text)
  assert 'recall gaps between groups' in body and '[0.050, 0.450]' in body and '[-0.200, 0.400]' in body
  assert 'Keeps its score without the lungs' in body and 'research only' in body
  # No external resource: every src is a data URI, no link or script src.
  for tag, attrs in parsed.elements:
    assert 'href' not in attrs or attrs['href'].startswith('#'), (tag, attrs)
    if 'src' in attrs:
      assert attrs['src'].startswith(('data:image/png;base64,', 'data:image/jpeg;base64,')), tag
  assert 'http://' not in text and 'https://' not in text


def test_sections_absent_render_nothing():
  labels_N, probabilities_NC = _predictions()
  text = report_html.page(_metrics(labels_N, probabilities_NC), 'plain')
  ids = {attrs.get('id') for tag, attrs in _parse(text).elements if tag == 'section'}
  assert {'per-source', 'per-subgroup', 'shortcuts', 'overlap'}.isdisjoint(ids)
  assert {'headline', 'per-class', 'confusion', 'curves', 'model-card', 'gallery'} <= ids
  assert 'Per subgroup' not in text


def test_names_are_escaped():
  labels_N, probabilities_NC = _predictions()
  classes = ('Covid', 'Normal', 'Viral <b>"Pneumonia"</b>')
  metrics = _metrics(labels_N, probabilities_NC, classes)
  metrics['caveat'] = '</script><script>alert(1)</script>'
  metrics['skipped_images'] = [['x/<img src=y onerror=alert(2)>.png', 'bad & broken']]
  evil = 'Covid/<img src=x onerror=alert(3)>&"\'.png'
  text = report_html.page(metrics, 'T <i>', None, _gallery(evil), None, 'no <card>')
  for raw in ('<b>', '<img src=x', '<img src=y', '<script>alert', '<i>', '<card>'):
    assert raw not in text, raw
  assert '&lt;img src=x onerror=alert(3)&gt;&amp;&quot;&#x27;.png' in text
  parsed = _parse(text)
  assert [tag for tag, _ in parsed.elements].count('script') == 1
  assert not [a for t, a in parsed.elements if t == 'img' and 'onerror' in a]
  options = [attrs['value'] for tag, attrs in parsed.elements if tag == 'option']
  assert options == ['', *classes] * 2  # Both filters' values are the class names, unescaped back by the parser.
  assert 'Viral <b>"Pneumonia"</b>' in parsed.text  # Shown as text, not as markup.


def test_gallery_indices_most_confidently_wrong_then_least_confident():
  labels_N = np.array([0, 0, 1, 1, 2, 2])
  probabilities_NC = np.array([[.9, .05, .05], [.2, .7, .1], [.1, .5, .4], [.6, .3, .1], [.1, .1, .8],
                               [.3, .3, .4]])
  wrong, unsure = report_html.gallery_indices(labels_N, probabilities_NC, 5, 5)
  assert wrong.tolist() == [1, 3]  # Wrong at 0.7, then 0.6.
  assert unsure.tolist() == [5, 2, 4, 0]  # Right, by rising confidence.
  wrong, unsure = report_html.gallery_indices(labels_N, probabilities_NC, 1, 2)
  assert wrong.tolist() == [1] and unsure.tolist() == [5, 2]


def test_build_gallery_draws_the_predicted_class_map_and_says_when_it_cannot():
  labels_N, probabilities_NC = _predictions(4)
  images_NHWC = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3)).astype(np.uint8)
  paths = [f'/data/{CLASSES[label]}/{i}.png' for i, label in enumerate(labels_N)]
  asked = []

  def explain_fn(films_KHWC, classes_K):
    asked.append(classes_K)
    heatmaps = np.zeros(films_KHWC.shape[:3], np.float32)
    heatmaps[:, :4] = 1.0
    return None, heatmaps

  gallery = report_html.build_gallery(images_NHWC, labels_N, probabilities_NC, paths, CLASSES, '/data', explain_fn,
                                      'Grad-CAM of Conv_2')
  wrong, unsure = report_html.gallery_indices(labels_N, probabilities_NC)
  assert len(gallery.items) == len(wrong) + len(unsure)
  assert gallery.n_misclassified == int(np.sum(probabilities_NC.argmax(1) != labels_N))
  assert np.array_equal(asked[0], probabilities_NC[np.r_[wrong, unsure]].argmax(1))
  first = gallery.items[0]
  assert first.file == os.path.join(CLASSES[labels_N[wrong[0]]], f'{wrong[0]}.png')
  assert first.why == 'misclassified' and first.overlay_jpeg != first.film_jpeg
  assert 'Grad-CAM of Conv_2' in gallery.note and 'empty' not in gallery.note

  def half_empty(films_KHWC, classes_K):  # The first two maps all zero: the note counts them.
    heatmaps = np.ones(films_KHWC.shape[:3], np.float32)
    heatmaps[:2] = 0.0
    return None, heatmaps

  gallery = report_html.build_gallery(images_NHWC, labels_N, probabilities_NC, paths, CLASSES, '/data', half_empty,
                                      'Grad-CAM of Conv_2')
  assert f' 2 of these {len(wrong) + len(unsure)} maps are empty' in gallery.note

  def broken(films_KHWC, classes_K):
    raise ValueError("config.explain.layer='nope' is not a module")

  gallery = report_html.build_gallery(images_NHWC, labels_N, probabilities_NC, paths, CLASSES, '/data', broken, 'x')
  assert all(item.overlay_jpeg is None for item in gallery.items) and 'nope' in gallery.note


def test_write_page_is_atomic_and_never_over_a_foreign_file_or_through_a_link(tmp_path):
  path = str(tmp_path / 'report.html')
  report_html.write_page(path, report_html.page(_metrics(*_predictions()), 'one'))
  report_html.write_page(path, report_html.page(_metrics(*_predictions()), 'two'))  # Its own: replaced.
  assert '<title>two</title>' in open(path).read()
  assert sorted(os.listdir(tmp_path)) == [workdir_lib.MANIFEST, 'report.html']  # No temporary left.
  foreign = tmp_path / 'other.html'
  foreign.write_text('<html>mine</html>')
  with pytest.raises(FileExistsError, match='not written by lungjax'):
    report_html.write_page(str(foreign), 'x')
  assert foreign.read_text() == '<html>mine</html>'
  link = tmp_path / 'link.html'
  link.symlink_to(path)
  with pytest.raises(FileExistsError, match='symbolic link'):
    report_html.write_page(str(link), 'x')


def test_pr_curve_area_is_average_precision_and_matches_scikit_learn():
  sklearn_metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(1)
  positive_N, scores_N = rng.integers(0, 2, 60), np.round(rng.random(60), 1)  # Ties on purpose.
  recall, precision = metrics_lib.pr_curve(positive_N, scores_N)
  assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(
      sklearn_metrics.average_precision_score(positive_N, scores_N))
  sk_precision, sk_recall, _ = sklearn_metrics.precision_recall_curve(positive_N, scores_N)
  np.testing.assert_allclose(recall, sk_recall[::-1])
  np.testing.assert_allclose(precision[1:], sk_precision[::-1][1:])


def _synthetic_eval(tmp_path, tiny_config):
  """report_predictions on a synthetic folder with file names that need escaping; returns (out_dir, metrics)."""
  folder = write_image_folder(str(tmp_path / 'folder'), 5, seed=3)
  odd = os.path.join(folder, 'Covid', '<b>&"odd\'.png')
  os.rename(os.path.join(folder, 'Covid', '000.png'), odd)
  loaded = loading.load_folder(folder, tiny_config, require_all_classes=False)
  labels_N = np.asarray(loaded.decoded.labels_N)
  rng = np.random.default_rng(0)
  probabilities_NC = rng.dirichlet(np.ones(3), len(labels_N))
  probabilities_NC[np.arange(len(labels_N)) % 3 == 0, :] = [0.1, 0.1, 0.1]
  probabilities_NC[np.arange(len(labels_N)) % 3 == 0, labels_N[np.arange(len(labels_N)) % 3 == 0]] = 0.8

  def explain_fn(films_KHWC, classes_K):
    heatmaps = np.zeros(films_KHWC.shape[:3], np.float32)
    heatmaps[:, :, : films_KHWC.shape[2] // 2] = 1.0
    return None, heatmaps

  out_dir = str(tmp_path / 'eval')
  table = tmp_path / 'meta.csv'  # sex by parity; the odd-named film has no row (a too-small group of 1).
  names = sorted(os.path.relpath(p, folder) for p in loaded.decoded.paths if 'odd' not in p)
  table.write_text('file,sex\n' + ''.join(f'{n},{"FM"[i % 2]}\n' for i, n in enumerate(names)))
  with tiny_config.unlocked():
    tiny_config.eval.n_bootstrap = 50
    tiny_config.eval.metadata = str(table)
    tiny_config.eval.subgroups = 'sex'
    tiny_config.eval.subgroup_min_images = 2
  metrics = evaluate.report_predictions(probabilities_NC, loaded, tiny_config, out_dir, 'tiny <on> folder', 7,
                                        page=report_html.PageInputs(explain_fn, 'Grad-CAM of Conv_2', _CARD))
  return out_dir, metrics


def test_every_eval_writes_report_html_beside_report_md(tmp_path, tiny_config):
  out_dir, metrics = _synthetic_eval(tmp_path, tiny_config)
  assert {'report.md', 'report.html', 'metrics.json', 'pr.png'} <= set(os.listdir(out_dir))
  text = open(os.path.join(out_dir, 'report.html'), encoding='utf-8').read()
  parsed = _parse(text)
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    check_numbers(json.load(f), parsed.metric_cells)
  assert '&lt;b&gt;&amp;&quot;odd&#x27;.png' in text and '<b>&' not in text
  _check_subgroup_tables(metrics, parsed)
  figures = [a for t, a in parsed.elements if t == 'figure']
  assert len(figures) == min(metrics['n_images'] - sum(metrics['confusion_matrix'][c][c] for c in range(3)),
                             report_html.GALLERY_MISCLASSIFIED) + report_html.GALLERY_LEAST_CONFIDENT
  for tag, attrs in parsed.elements:
    if tag == 'img':
      Image.open(io.BytesIO(base64.b64decode(attrs['src'].split(',', 1)[1]))).verify()
  assert os.path.getsize(os.path.join(out_dir, 'report.html')) < 2_000_000


def _check_subgroup_tables(metrics, parsed):
  """The per-subgroup table and the recall-gap table show every group and gap of metrics.json (check_numbers has
  compared the values), and the too-small group is named."""
  paths = [json.loads(attrs['data-metric']) for attrs, _ in parsed.metric_cells]
  for value in metrics['per_subgroup']['sex']:
    assert ['per_subgroup', 'sex', value, 'accuracy'] in paths, value
  gaps = metrics['subgroups']['columns']['sex']['recall_gaps']
  assert gaps and any(g['gap'] is not None for g in gaps.values())
  for name in gaps:
    assert ['subgroups', 'columns', 'sex', 'recall_gaps', name, 'gap'] in paths, name
  gap_cells = [a for a, _ in parsed.metric_cells if json.loads(a['data-metric'])[-1] == 'gap' and 'data-interval' in a]
  assert len(gap_cells) == sum(g['gap'] is not None for g in gaps.values())
  small = metrics['subgroups']['columns']['sex']['too_small']
  assert small == [{'value': 'no metadata row', 'n_images': 1}]
  assert 'Too small to say anything (under 2 images, no numbers): no metadata row (1).' in ''.join(parsed.text)
  counts = metrics['subgroups']['columns']['sex']['counts']  # The class counts per group, as metrics.json holds them.
  assert sum(row['n_images'] for row in counts.values()) == metrics['n_images']
  assert 'Class counts: ' + '; '.join(f'{v} ' + ', '.join(f'{c} {n}' for c, n in row['per_class'].items())
                                      for v, row in counts.items()) + '.' in ''.join(parsed.text)


def _chromium(*args, timeout=120):
  command = [CHROMIUM, '--headless', '--disable-gpu', '--no-sandbox', '--no-first-run', '--disable-extensions',
             '--hide-scrollbars', '--virtual-time-budget=5000', *args]
  return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@needs_chromium
def test_page_in_headless_chromium_numbers_images_filter_and_screenshot(tmp_path, tiny_config):
  out_dir, _ = _synthetic_eval(tmp_path, tiny_config)
  page_path = os.path.join(out_dir, 'report.html')
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    metrics = json.load(f)
  url = 'file://' + os.path.abspath(page_path)

  done = _chromium('--dump-dom', url)
  assert done.returncode == 0, done.stderr[-2000:]
  rendered = _parse(done.stdout)
  check_numbers(metrics, rendered.metric_cells)
  _check_subgroup_tables(metrics, rendered)
  check = [a for t, a in rendered.elements if a.get('id') == 'image-check'][0]
  n_images = sum(1 for t, _ in rendered.elements if t == 'img')
  assert check.get('data-failed') == '0' and check.get('data-loaded') == str(n_images), check
  figures = [a for t, a in rendered.elements if t == 'figure']
  assert figures and not any('hidden' in a for a in figures)  # No filter: all shown.

  wanted_true, wanted_pred = figures[0]['data-true'], figures[0]['data-pred']
  done = _chromium('--dump-dom', url + '#true=' + wanted_true.replace(' ', '%20') + '&pred=' +
                   wanted_pred.replace(' ', '%20'))
  filtered = [a for t, a in _parse(done.stdout).elements if t == 'figure']
  shown = [a for a in filtered if 'hidden' not in a]
  assert shown and all(a['data-true'] == wanted_true and a['data-pred'] == wanted_pred for a in shown)
  assert len(shown) == sum(1 for a in figures if a['data-true'] == wanted_true and a['data-pred'] == wanted_pred)
  assert len(shown) < len(filtered)  # The filter hid some.
  count = [a for t, a in _parse(done.stdout).elements if a.get('id') == 'gallery-count'][0]
  assert count['data-shown'] == str(len(shown))

  screenshot = str(tmp_path / 'page.png')
  done = _chromium(f'--screenshot={screenshot}', '--window-size=1200,1600', url)
  assert os.path.exists(screenshot), done.stderr[-2000:]
  pixels = np.asarray(Image.open(screenshot).convert('L'), np.float32)
  assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # Not blank: text, tables and plots drawn.
