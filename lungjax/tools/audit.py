"""Dataset audit: copies within and across folders, per-class stats, bad files and patient metadata.

python -m lungjax.tools.audit FOLDER [FOLDER...] --out=DIR [--strip=OUT_DIR] [--near_threshold=0.96] [--drop_from=FOLDER]
  [--metadata=CSV [--metadata_file_column=file] [--subgroups=view,sex,age:0-18,18-40,40-65,65-] [--group_by=patientid]]

With a metadata table (data/metadata.py joins it to every folder's images): class counts per subgroup ('AP Supine:
74 of 75 are COVID-19', a confound seen before a model learns it) and, with --group_by, the groups (a patient's
films, merged with the copy groups) that straddle two folders.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
from PIL import Image  # pylint: disable=g-import-not-at-top

from lungjax.runtime import progress, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
from lungjax.data import markers as markers_lib  # pylint: disable=g-import-not-at-top
from lungjax.data import dicom, duplicates, folders, images, metadata as metadata_lib  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
NEAR_THRESHOLD = 0.96  # Pearson r of grey thumbnails that makes two images near copies.


def _define_flags() -> None:
  """Defines the command's flags, only when run as a command (every module shares absl's flag registry)."""
  flags.DEFINE_string('out', None, 'Where audit.json, pairs.png and drop_list.txt go.')
  flags.DEFINE_string('strip', None, 'Write a metadata-free, pixel-identical copy of every decodable image here, '
                      'at OUT_DIR/<folder name>/<its path in the folder>. Only new files are written: the audit '
                      'refuses, naming the file, if a copy path exists.')
  flags.DEFINE_float('near_threshold', NEAR_THRESHOLD, 'Pearson r of the 32x32 grey thumbnails at or above which two images '
                     'are near copies.')
  flags.DEFINE_string('metadata', '', 'A metadata CSV joined to the images by --metadata_file_column (a path '
                      'relative to the table\'s folder or a FOLDER, or a base name).')
  flags.DEFINE_string('metadata_file_column', metadata_lib.DEFAULT_FILE_COLUMN, 'The column naming each row\'s image.')
  flags.DEFINE_string('subgroups', '', 'Columns of --metadata to count classes by, e.g. view,sex,age:0-18,18-40,65- '
                      '(the syntax of config.eval.subgroups).')
  flags.DEFINE_string('group_by', '', 'A column of --metadata (e.g. patientid): list its groups, merged with the '
                      'copy groups, that have images in two FOLDERs.')
  flags.DEFINE_bool('markers', False, 'Find burned-in markers (L, R, AP, PORTABLE, arrows; data/markers.py) in every '
                    'image: markers.json (per image: count and boxes) and markers.md (per source and class, the share '
                    'of films with markers in each corner and along each edge).')
  flags.DEFINE_bool('strip_markers', False, 'With --strip: the copies are PNGs of the decoded grey film with its '
                    'burned-in markers filled (markers.mask_markers), at OUT_DIR/<folder name>/<path>.png.')
  flags.DEFINE_bool('marker_lungs', False, 'With --markers / --strip_markers: hand the shipped lung U-Net\'s mask of '
                    'each film to the detector, so nothing on the lungs (grown by markers.LUNG_GUARD) is reported '
                    'or filled; it also misses more markers (planted recall 0.85 against 0.92 with the film alone: '
                    'results/markers/README.md, "Lung guard").')
  flags.DEFINE_string('drop_from', None, 'One of the FOLDERs: list in drop_list.txt its images that are a copy of an '
                      'image in another FOLDER.')


SHEET_PIXELS = 96  # Each image is kept as a 96x96 grey preview (9 KB) for the contact sheet.
MAX_SHEET_PAIRS = 40
_ORIENTATION = 0x0112  # The EXIF tag that lungjax's decoder applies (ImageOps.exif_transpose).
_PNG_METADATA = {'Software': None}  # PNGs we write carry no metadata.
_JPEG_SOI, _PNG_SIGNATURE = b'\xff\xd8', b'\x89PNG\r\n\x1a\n'
# PNG chunks a clean copy keeps: the critical ones and ancillary ones that describe pixels, never people.
# (sPLT is not one: its palette name is free text.)
_PNG_PIXEL_CHUNKS = frozenset(c.encode() for c in (
    'IHDR', 'PLTE', 'IDAT', 'IEND', 'tRNS', 'gAMA', 'cHRM', 'sRGB', 'iCCP', 'sBIT', 'pHYs', 'bKGD', 'hIST', 'cICP',
    'mDCV', 'cLLI', 'acTL', 'fcTL', 'fdAT'))
# JPEG marker segments a clean copy keeps besides JFIF APP0 and Adobe APP14: the fixed-layout ones that code the
# pixels (frames, Huffman and arithmetic tables, quantisation tables, scans, restart interval, line count,
# hierarchical). Any other marker segment could hold text: it goes, and is reported.
_JPEG_PIXEL_MARKERS = frozenset([*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF])
_JFIF_HEADER, _ADOBE_LENGTH = 14, 12  # Payload bytes of a JFIF APP0 (before its thumbnail) and of an Adobe APP14.


# ---------------------------------------------------------------------------------------------------------------
# Metadata: byte-level JPEG segments and PNG chunks.


@dataclasses.dataclass(frozen=True)
class Piece:
  """A byte range of an image file: kept in a clean copy or not, and what identifying metadata it holds."""

  start: int
  end: int
  keep: bool
  finding: str | None = None


def _jpeg_segment_rule(marker: int, payload: bytes) -> tuple[bool, str | None]:
  """Returns (keep, finding) for one JPEG marker segment: only the pixel-coding segments, an exact JFIF APP0 and an
  exact Adobe APP14 stay (they hold no text); APPn, COM and unknown segments go, reported unless known harmless."""
  if marker == 0xFE:
    return False, 'JPEG comment'
  if marker in _JPEG_PIXEL_MARKERS:
    return True, None
  if marker == 0xE0:
    if payload.startswith(b'JFIF\0') and len(payload) >= _JFIF_HEADER:
      if len(payload) == _JFIF_HEADER + 3 * payload[12] * payload[13]:  # The header and its RGB thumbnail only.
        return True, None
      return False, 'JPEG APP0 (JFIF) with extra bytes'
    return False, 'JPEG APP0 segment'
  if not 0xE1 <= marker <= 0xEF:
    return False, f'JPEG marker 0x{marker:02X} segment'
  n = marker - 0xE0
  if n == 1 and payload.startswith(b'Exif\0'):
    return False, 'EXIF'
  if n == 1 and payload.startswith((b'http://ns.adobe.com/xap/1.0/\0', b'http://ns.adobe.com/xmp/extension/\0')):
    return False, 'XMP'
  if n == 2 and payload.startswith((b'ICC_PROFILE\0', b'MPF\0')):
    return False, None  # Colour profile, multi-picture index: nothing about the patient.
  if n == 13 and payload.startswith(b'Photoshop 3.0\0'):
    return False, 'IPTC'
  if n == 14 and payload.startswith(b'Adobe'):
    if len(payload) == _ADOBE_LENGTH:
      return True, None  # Its colour-transform flag changes how the pixels decode.
    return False, 'JPEG APP14 (Adobe) with extra bytes'
  return False, f'JPEG APP{n} segment'


def _jpeg_entropy_end(data: bytes, pos: int) -> int:
  """Returns the offset of the first marker after entropy-coded data that starts at `pos`."""
  while True:
    pos = data.find(b'\xff', pos)
    if pos < 0 or pos + 1 >= len(data):
      return len(data)
    if data[pos + 1] == 0x00 or 0xD0 <= data[pos + 1] <= 0xD7 or data[pos + 1] == 0xFF:
      pos += 1  # Stuffed byte, restart marker or fill byte.
      continue
    return pos


def _jpeg_pieces(data: bytes) -> tuple[list[Piece], str | None]:
  """Splits a JPEG into marker segments; returns them and why parsing stopped early (None if it did not)."""
  pieces, pos = [Piece(0, 2, True)], 2
  while pos < len(data):
    start = pos
    if data[pos] != 0xFF:
      return pieces + [Piece(start, len(data), True)], f'no JPEG marker at byte {start}'
    while pos < len(data) and data[pos] == 0xFF:
      pos += 1
    if pos + 1 > len(data):
      break
    marker, pos = data[pos], pos + 1
    if marker == 0xD9:  # End of image: whatever follows is not part of it.
      pieces.append(Piece(start, pos, True))
      if pos < len(data):
        pieces.append(Piece(pos, len(data), False, 'data after the end of the image'))
      return pieces, None
    if marker == 0x01 or 0xD0 <= marker <= 0xD7:
      pieces.append(Piece(start, pos, True))
      continue
    length = int.from_bytes(data[pos:pos + 2], 'big')
    if pos + 2 > len(data) or length < 2 or pos + length > len(data):
      return pieces + [Piece(start, len(data), True)], f'JPEG segment at byte {start} runs past the end'
    end = pos + length
    keep, finding = _jpeg_segment_rule(marker, data[pos + 2:end])
    if marker == 0xDA:  # Start of scan: its entropy-coded data runs to the next marker.
      end = _jpeg_entropy_end(data, end)
    pieces.append(Piece(start, end, keep, finding))
    pos = end
  return pieces, 'no JPEG end-of-image marker'


def _png_chunk_rule(chunk_type: bytes, payload: bytes) -> tuple[bool, str | None]:
  """Returns (keep, finding) for one PNG chunk: text, EXIF and unknown chunks go; tIME goes silently."""
  if chunk_type in _PNG_PIXEL_CHUNKS:
    return True, None
  if chunk_type == b'eXIf':
    return False, 'EXIF'
  if chunk_type == b'tIME':
    return False, None
  if chunk_type == b'sPLT':
    return False, 'PNG sPLT palette name'  # Free text (never reported: it could be a name); pixels do not use it.
  name = chunk_type.decode('latin-1')
  if chunk_type in (b'tEXt', b'zTXt', b'iTXt'):
    keyword = payload.split(b'\0', 1)[0].decode('latin-1')
    if keyword == 'XML:com.adobe.xmp':
      return False, 'XMP'
    if keyword.lower() in ('raw profile type exif', 'raw profile type app1'):
      return False, 'EXIF'
    if keyword.lower() in ('raw profile type iptc', 'raw profile type 8bim'):
      return False, 'IPTC'
    return False, f'PNG {name} {keyword!r}'
  return False, f'PNG {name!r} chunk'


def _png_pieces(data: bytes) -> tuple[list[Piece], str | None]:
  """Splits a PNG into chunks; returns them and why parsing stopped early (None if it did not)."""
  pieces, pos = [Piece(0, len(_PNG_SIGNATURE), True)], len(_PNG_SIGNATURE)
  while pos < len(data):
    length = int.from_bytes(data[pos:pos + 4], 'big')
    end = pos + 12 + length
    if end > len(data):
      return pieces + [Piece(pos, len(data), True)], f'PNG chunk at byte {pos} runs past the end'
    chunk_type = data[pos + 4:pos + 8]
    pieces.append(Piece(pos, end, *_png_chunk_rule(chunk_type, data[pos + 8:end - 4])))
    pos = end
    if chunk_type == b'IEND':
      if pos < len(data):
        pieces.append(Piece(pos, len(data), False, 'data after the end of the image'))
      return pieces, None
  return pieces, 'no PNG IEND chunk'


def file_pieces(data: bytes) -> tuple[list[Piece], str | None]:
  """Splits JPEG or PNG bytes into pieces; returns them and why parsing stopped early (None if it did not)."""
  if data.startswith(_JPEG_SOI):
    return _jpeg_pieces(data)
  if data.startswith(_PNG_SIGNATURE):
    return _png_pieces(data)
  return [Piece(0, len(data), True)], 'neither JPEG nor PNG'


def stripped_bytes(data: bytes) -> bytes:
  """Returns the file without its metadata pieces; raises ValueError for bytes it cannot fully parse."""
  pieces, problem = file_pieces(data)
  if problem:
    raise ValueError(problem)
  return b''.join(data[p.start:p.end] for p in pieces if p.keep)


def _save_pixels_png(pixels_HWC: np.ndarray, path: str, root: str | None = None) -> None:
  """Saves decoded RGB pixels as a new lossless PNG with no metadata (greyscale when the channels agree)."""
  grey = bool((pixels_HWC == pixels_HWC[..., :1]).all())
  buffer = io.BytesIO()
  Image.fromarray(pixels_HWC[..., 0] if grey else pixels_HWC).save(buffer, format='PNG')
  workdir_lib.write_bytes(path, buffer.getvalue(), root=root, exclusive=True)


def write_clean_copy(path: str, copy_path: str, pixel_hash: str, orientation: int,
                     root: str | None = None) -> dict[str, str]:
  """Writes `path` without metadata so it decodes to `pixel_hash`: 'copied', 'stripped' bytewise, or 'png';
  'dicom' for a DICOM file (dicom.write_stripped_copy: identifying tags removed, pixel data untouched).

  A file that lungjax rotates (EXIF/XMP orientation), or that bytewise removal would change, becomes a lossless
  PNG of its decoded pixels at copy_path + '.png' (unless it already ends in .png). Only new files are written:
  FileExistsError names a copy path that exists (see copy_targets); ForeignFileError one that would leave the
  output folder `root` (--strip) or pass through a symbolic link below it (workdir.write_bytes).
  """
  if dicom.is_dicom_path(path):  # Tags removed, pixel data untouched: the copy must decode to the same pixels.
    removed = dicom.write_stripped_copy(path, copy_path, root)
    if images.load_image(copy_path, 1).pixel_hash != pixel_hash:
      raise RuntimeError(f'the DICOM copy {copy_path!r} of {path!r} does not decode to the same pixels')
    return {'copy': copy_path, 'method': 'dicom', 'why': f'removed {", ".join(removed) or "no identifying tags"}; '
            'instance UIDs replaced by one-way hashes; PatientIdentityRemoved set'}
  with open(path, 'rb') as f:
    data = f.read()
  why = f'orientation {orientation} (EXIF/XMP): lungjax rotates the stored pixels' if orientation != 1 else ''
  if not why:
    try:
      clean = stripped_bytes(data)
    except ValueError as error:
      why = f'cannot parse the file ({error})'
  if not why:
    workdir_lib.write_bytes(copy_path, clean, root=root, exclusive=True)
    if clean == data:
      return {'copy': copy_path, 'method': 'copied'}
    if images.load_image(copy_path, 1).pixel_hash == pixel_hash:
      return {'copy': copy_path, 'method': 'stripped'}
    os.remove(copy_path)
    why = 'removing the metadata bytes changed the decoded pixels'
  png_path = copy_path if copy_path.lower().endswith('.png') else copy_path + '.png'
  with Image.open(path, formats=images.PIL_FORMATS) as image:
    image.load()
    _save_pixels_png(images.to_rgb_uint8(image), png_path, root)
  if images.load_image(png_path, 1).pixel_hash != pixel_hash:
    raise RuntimeError(f'could not write a pixel-identical copy of {path!r} at {png_path!r}')
  return {'copy': png_path, 'method': 'png', 'why': why}


# ---------------------------------------------------------------------------------------------------------------
# One pass over the files: decode each once, read its header and metadata.


@dataclasses.dataclass(frozen=True)
class FileAudit:
  """One file: its identifying metadata, and its decoded summary (empty when `error` says it is undecodable)."""

  path: str
  metadata: tuple[str, ...]  # Kinds found, never their values.
  error: str | None = None
  width: int = 0  # As lungjax decodes it (after EXIF rotation).
  height: int = 0
  mode: str = ''
  orientation: int = 1
  pixel_hash: str = ''
  thumbnail: np.ndarray | None = None  # images.grey_thumbnail: THUMBNAIL_SIZE^2 float32.
  preview_HW: np.ndarray | None = None  # SHEET_PIXELS x SHEET_PIXELS grey uint8.
  unreadable: bool = False  # The error is the file system's (dangling link, link loop, no permission), not the bytes'.


def audit_file(path: str) -> FileAudit:
  """Decodes one file once (hash, thumbnail, preview) and reads its header and metadata; never raises on bad files
  (nor on files it cannot read: dangling links, link loops, no permission, something not a regular file)."""
  problem = folders.file_problem(path)
  if problem is None:
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as error:
      problem = error.strerror or type(error).__name__
  if problem is not None:
    return FileAudit(path, (), error=problem, unreadable=True)
  if dicom.is_dicom_path(path):
    return _audit_dicom(path)
  pieces, problem = file_pieces(data)
  metadata = tuple(sorted({p.finding for p in pieces if p.finding}))
  try:
    loaded = images.load_image(path, SHEET_PIXELS)
  except images.BadImageError as error:
    return FileAudit(path, metadata, error=error.reason)
  if problem:
    metadata += (f'unparsed bytes ({problem})',)
  with Image.open(io.BytesIO(data), formats=images.PIL_FORMATS) as image:
    (width, height), mode = image.size, image.mode
    try:
      orientation = int(image.getexif().get(_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
      orientation = 1
  orientation = orientation if 2 <= orientation <= 8 else 1  # What ImageOps.exif_transpose acts on.
  if orientation >= 5:
    width, height = height, width
  preview_HW = np.asarray(Image.fromarray(loaded.pixels_HWC).convert('L'), np.uint8)
  return FileAudit(path, metadata, None, width, height, mode, orientation, loaded.pixel_hash, loaded.thumbnail,
                   preview_HW)


def _audit_dicom(path: str) -> FileAudit:
  """audit_file of a DICOM file: its identifying tags (dicom.IDENTIFYING_TAGS, private tags) and decoded summary."""
  try:
    metadata = dicom.identifying_tags(dicom.read(path, stop_before_pixels=True))
  except images.BadImageError as error:
    return FileAudit(path, (), error=error.reason)
  try:
    loaded = images.load_image(path, SHEET_PIXELS)
    with images.open_image(path) as image:
      (width, height), mode = image.size, f'DICOM {image.mode}'
  except images.BadImageError as error:
    return FileAudit(path, metadata, error=error.reason)
  preview_HW = np.asarray(Image.fromarray(loaded.pixels_HWC).convert('L'), np.uint8)
  return FileAudit(path, metadata, None, width, height, mode, 1, loaded.pixel_hash, loaded.thumbnail, preview_HW)


def audit_files(paths: Sequence[str], threads: int = 0) -> list[FileAudit]:
  """Audits every file in a thread pool (PIL decodes in parallel), in the order given."""
  with concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
    return list(progress.progress(pool.map(audit_file, paths), len(paths), 'auditing'))


# ---------------------------------------------------------------------------------------------------------------
# Folders, statistics and outputs.


def list_folder(folder: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
  """Returns the .jpg/.jpeg/.png files under `folder` (recursively, sorted), its other files (and links to folders,
  which are not followed), and (path, reason) for each sub-folder that could not be listed."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'audit folder not found: {folder!r}')
  found, ignored, unlisted = [], [], []

  def could_not_list(error: OSError) -> None:
    unlisted.append((error.filename or folder, f'cannot list the folder ({error.strerror or error})'))

  for directory, sub_dirs, names in os.walk(folder, onerror=could_not_list):
    linked = [name for name in sub_dirs if not name.startswith('.') and os.path.islink(os.path.join(directory, name))]
    ignored += [os.path.join(directory, name) for name in linked]
    sub_dirs[:] = [name for name in sub_dirs if not name.startswith('.') and name not in linked]
    for name in names:
      is_image = folders.is_image_file(name) and not name.startswith('.')
      (found if is_image else ignored).append(os.path.join(directory, name))
  return sorted(found), sorted(ignored), sorted(unlisted)


def display_path(path: str) -> str:
  """Returns `path` relative to the current directory where possible."""
  try:
    return os.path.relpath(path)
  except ValueError:  # Another drive on Windows.
    return os.path.abspath(path)


def _spread(values: Sequence[int]) -> dict[str, float]:
  """Returns min, median and max of values (zeros when there are none)."""
  if not values:
    return {'min': 0, 'median': 0, 'max': 0}
  return {'min': int(min(values)), 'median': float(np.median(values)), 'max': int(max(values))}


def folder_stats(folder: str, audits: Sequence[FileAudit], ignored: Sequence[str],
                 unlisted: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
  """Per class (an image's sub-folder): counts, share, sizes and modes; the folder's undecodable files; and what it
  could not read (`unreadable`: image files, and sub-folders that could not be listed, each with the reason)."""
  by_class = collections.defaultdict(list)
  for audit in audits:
    by_class[os.path.relpath(os.path.dirname(audit.path), folder)].append(audit)
  n_images = sum(audit.error is None for audit in audits)
  classes = {}
  for name in sorted(by_class):
    decoded = [audit for audit in by_class[name] if audit.error is None]
    n_unreadable = sum(audit.unreadable for audit in by_class[name])
    classes[name] = {
        'n_files': len(by_class[name]), 'n_images': len(decoded),
        'n_undecodable': len(by_class[name]) - len(decoded) - n_unreadable, 'n_unreadable': n_unreadable,
        'share': round(len(decoded) / n_images, 4) if n_images else 0.0,
        'width': _spread([a.width for a in decoded]), 'height': _spread([a.height for a in decoded]),
        'modes': dict(sorted(collections.Counter(a.mode for a in decoded).items()))}
  counts = [row['n_images'] for row in classes.values()]
  return {
      'folder': display_path(folder), 'n_files': len(audits), 'n_images': n_images,
      'largest_to_smallest_class': round(max(counts) / min(counts), 3) if counts and min(counts) else None,
      'classes': classes,
      'undecodable': [{'path': display_path(a.path), 'reason': a.error} for a in audits
                      if a.error is not None and not a.unreadable],
      'unreadable': [{'path': display_path(a.path), 'reason': a.error} for a in audits if a.unreadable] +
                    [{'path': display_path(path), 'reason': reason} for path, reason in unlisted],
      'ignored_files': [display_path(path) for path in ignored]}


def copies_of_other_folders(pairs: Sequence[duplicates.CopyPair], folder_N: np.ndarray, folder: int) -> list[int]:
  """Returns the sorted indices of images in `folder` that form a copy pair with an image of another folder."""
  hits = set()
  for pair in pairs:
    for mine, other in ((pair.a, pair.b), (pair.b, pair.a)):
      if folder_N[mine] == folder and folder_N[other] != folder:
        hits.add(mine)
  return sorted(hits)


def plot_pairs(pairs: Sequence[duplicates.CopyPair], labels: Sequence[str], previews_NHW: Sequence[np.ndarray],
               path: str, max_pairs: int = MAX_SHEET_PAIRS) -> None:
  """Draws the flagged pairs side by side, labelled with their file names, kind and score (no PNG metadata)."""
  shown = list(pairs[:max_pairs])
  fig, axes = plt.subplots(max(len(shown), 1), 2, figsize=(7.0, 2.6 * max(len(shown), 1)), squeeze=False)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(bool(shown))
  if not shown:
    fig.text(0.5, 0.5, 'no exact or near copies found', ha='center', va='center')
  for row, pair in zip(axes, shown):
    for ax, index in zip(row, (pair.a, pair.b)):
      ax.imshow(previews_NHW[index], cmap='gray', vmin=0, vmax=255)
      ax.set_title(labels[index], fontsize=7)
    row[0].set_ylabel(f'{pair.kind} copy\nr = {pair.score:.3f}', fontsize=9)
  more = f' (the first {max_pairs} shown)' if len(pairs) > max_pairs else ''
  fig.suptitle(f'{len(pairs)} flagged pairs{more}', fontsize=10)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig, dpi=100, metadata=_PNG_METADATA)
  plt.close(fig)


def _within(path: str, folder: str) -> bool:
  """True if real path `path` is `folder` or lies inside it."""
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_arguments(folder_paths: Sequence[str], out_dir: str, near_threshold: float, strip_dir: str | None,
                     drop_from: str | None) -> int | None:
  """Raises a clear error for bad arguments before anything is decoded; returns the --drop_from folder index."""
  if not folder_paths:
    raise ValueError('name at least one FOLDER to audit')
  if not 0.0 < near_threshold <= 1.0:
    raise ValueError(f'--near_threshold must be in (0, 1], got {near_threshold}')
  real = [os.path.realpath(path) for path in folder_paths]
  for i, a in enumerate(real):
    if not os.path.isdir(a):
      raise FileNotFoundError(f'audit folder not found: {folder_paths[i]!r}')
    for j, b in enumerate(real[:i]):
      if _within(a, b) or _within(b, a):
        raise ValueError(f'folders {folder_paths[j]!r} and {folder_paths[i]!r} overlap: name each image once')
  for path in real:
    if _within(os.path.realpath(out_dir), path):
      raise ValueError(f'--out={out_dir!r} must not be inside the audited folder {path!r}')
  if strip_dir is not None:
    names = [os.path.basename(path) for path in real]
    if len(set(names)) < len(names):
      raise ValueError(f'--strip writes OUT_DIR/<folder name>/..., but the folders share names: {names}')
    for target in (os.path.join(os.path.realpath(strip_dir), name) for name in names):
      for path in real:
        if _within(target, path) or _within(path, target):
          raise ValueError(f'--strip={strip_dir!r} would write into the audited folder {path!r}')
  if drop_from is None:
    return None
  if os.path.realpath(drop_from) not in real:
    raise ValueError(f'--drop_from={drop_from!r} must be one of the audited folders {list(folder_paths)}')
  if len(real) < 2:
    raise ValueError('--drop_from needs at least one other folder to compare with')
  return real.index(os.path.realpath(drop_from))


def copy_targets(path: str, folder: str, strip_dir: str) -> tuple[str, str]:
  """The two paths a clean copy of `path` (in audited `folder`) may take: the same name, or that name + '.png'."""
  copy_path = os.path.join(strip_dir, os.path.basename(os.path.realpath(folder)), os.path.relpath(path, folder))
  return copy_path, copy_path if copy_path.lower().endswith('.png') or dicom.is_dicom_path(path) else copy_path + '.png'


def check_strip_targets(paths: Sequence[str], folder_paths: Sequence[str], folder_N: np.ndarray,
                        strip_dir: str) -> None:
  """Raises FileExistsError, before anything is decoded or written, if a clean copy would land on an existing path;
  ForeignFileError if one would leave strip_dir or pass through a symbolic link inside it (workdir.relative_inside)."""
  targets = {target for path, f in zip(paths, folder_N) for target in copy_targets(path, folder_paths[f], strip_dir)}
  for target in sorted(targets):
    workdir_lib.relative_inside(target, strip_dir)
  existing = sorted(target for target in targets if os.path.lexists(target))
  if existing:
    more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
    raise FileExistsError(f'--strip={strip_dir!r}: {existing[0]!r}{more} already exists; clean copies are written only '
                          'as new files, never over a file: name a new or empty folder')


def write_clean_copies(audits: Sequence[FileAudit], folder_paths: Sequence[str], folder_N: np.ndarray,
                       strip_dir: str) -> dict[str, Any]:
  """Writes a clean copy of every decodable file at strip_dir/<folder name>/<path in folder>; returns a summary."""
  written = []
  for audit, folder_index in zip(audits, folder_N):
    folder = folder_paths[folder_index]
    if audit.error is not None:
      written.append({'path': display_path(audit.path), 'method': 'skipped', 'why': audit.error})
      continue
    copy_path, _ = copy_targets(audit.path, folder, strip_dir)
    row = write_clean_copy(audit.path, copy_path, audit.pixel_hash, audit.orientation, strip_dir)
    written.append({'path': display_path(audit.path), **row, 'copy': display_path(row['copy'])})
  return {'out_dir': display_path(strip_dir),
          'methods': dict(sorted(collections.Counter(row['method'] for row in written).items())),
          'changed': [row for row in written if row['method'] != 'copied']}


# ---------------------------------------------------------------------------------------------------------------
# Burned-in markers (issue 24 part 3).

PLACES = ('top-left', 'top-right', 'bottom-left', 'bottom-right', 'top edge', 'bottom edge', 'left edge', 'right edge',
          'centre')


def place_of(box: Sequence[int], height: int, width: int) -> str:
  """Where a (top, left, bottom, right) box's centre lies: a corner (outer thirds of both sides), an edge (the outer
  third of one side) or the centre."""
  row = (box[0] + box[2]) / 2 / height
  col = (box[1] + box[3]) / 2 / width
  vertical = 'top' if row < 1 / 3 else 'bottom' if row > 2 / 3 else ''
  horizontal = 'left' if col < 1 / 3 else 'right' if col > 2 / 3 else ''
  if vertical and horizontal:
    return f'{vertical}-{horizontal}'
  return f'{vertical or horizontal} edge' if vertical or horizontal else 'centre'


def _grey_film(path: str) -> np.ndarray:
  """The file's full-size grey pixels as lungjax decodes them (EXIF rotation, 16-bit and DICOM handled)."""
  with images.open_image(path) as image:
    image.load()
    from PIL import ImageOps  # pylint: disable=g-import-not-at-top
    image = ImageOps.exif_transpose(image)
    return np.asarray(Image.fromarray(images.to_rgb_uint8(image)).convert('L'), np.uint8)


def _film_lungs(grey_HW: np.ndarray, lungs: bool) -> np.ndarray | None:
  """The shipped lung U-Net's mask of a grey film (what the marker detector never touches), or None."""
  if not lungs:
    return None
  from lungjax import lungs as lungs_lib  # pylint: disable=g-import-not-at-top  (JAX only when markers are asked for)
  return lungs_lib.lung_mask_of(grey_HW)


def find_file_markers(path: str, lungs: bool = False) -> dict[str, Any]:
  """One decodable file's markers: count, boxes (top, left, bottom, right in its pixels), polarity and place;
  lungs: hand the shipped lung U-Net's mask to the detector (markers inside the grown lungs are never reported)."""
  grey_HW = _grey_film(path)
  found = markers_lib.find_markers(grey_HW, _film_lungs(grey_HW, lungs))
  height, width = grey_HW.shape
  return {'path': display_path(path), 'height': height, 'width': width, 'n_markers': len(found),
          'markers': [{'box': list(m.box), 'polarity': m.polarity, 'place': place_of(m.box, height, width)}
                      for m in found]}


def marker_table(rows: Sequence[dict[str, Any]], keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
  """Per (source, class): films, films with any marker, and per PLACE the share of films with a marker there."""
  table: dict[str, Any] = {}
  for row, (source, class_name) in zip(rows, keys):
    cell = table.setdefault(f'{source} / {class_name}', {'n_films': 0, 'n_with_markers': 0,
                                                         **{place: 0 for place in PLACES}})
    cell['n_films'] += 1
    cell['n_with_markers'] += row['n_markers'] > 0
    for place in {m['place'] for m in row['markers']}:
      cell[place] += 1
  for cell in table.values():
    cell['share'] = {place: round(cell[place] / cell['n_films'], 3) for place in ('any', *PLACES)
                     if place != 'any'} | {'any': round(cell['n_with_markers'] / cell['n_films'], 3)}
  return dict(sorted(table.items()))


def marker_markdown(table: dict[str, Any]) -> str:
  """The marker table as markdown: per source / class, the share of films with a marker in each place."""
  places = [p for p in PLACES if any(cell[p] for cell in table.values())]
  lines = ['| source / class | films | any marker | ' + ' | '.join(places) + ' |',
           '|---|---|---|' + '---|' * len(places)]
  for name, cell in table.items():
    lines.append(f'| {name} | {cell["n_films"]} | {cell["share"]["any"]:.0%} | ' +
                 ' | '.join(f'{cell["share"][p]:.0%}' for p in places) + ' |')
  return '\n'.join(lines) + '\n'


def marker_report(audits: Sequence[FileAudit], folder_paths: Sequence[str], folder_N: np.ndarray, out_dir: str,
                  threads: int = 0, lungs: bool = False) -> dict[str, Any]:
  """Finds the markers of every decodable file; writes out_dir/markers.json and markers.md; returns the summary."""
  decodable = [(a, f) for a, f in zip(audits, folder_N.tolist()) if a.error is None]
  with concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
    rows = list(progress.progress(pool.map(lambda af: find_file_markers(af[0].path, lungs), decodable), len(decodable),
                                  'markers'))
  keys = [(os.path.basename(os.path.realpath(folder_paths[f])), os.path.relpath(os.path.dirname(a.path),
                                                                                 folder_paths[f]))
          for a, f in decodable]
  table = marker_table(rows, keys)
  summary = {'n_images': len(rows), 'n_with_markers': sum(r['n_markers'] > 0 for r in rows),
             'n_skipped_undecodable': len(audits) - len(rows), 'detector': 'lungjax/data/markers.py',
             'lungs_given_to_detector': _lungs_record(lungs), 'table': table}
  workdir_lib.write_json(os.path.join(out_dir, 'markers.json'), {**summary, 'images': rows}, indent=1)
  workdir_lib.write_text(os.path.join(out_dir, 'markers.md'), marker_markdown(table))
  return summary


def _lungs_record(lungs: bool) -> dict[str, Any] | None:
  """Which lung mask the detector was given: the shipped U-Net's weights and the guard, or None."""
  if not lungs:
    return None
  from lungjax import lungs as lungs_lib  # pylint: disable=g-import-not-at-top
  return {'model': lungs_lib.weights_record(), 'lung_guard': markers_lib.LUNG_GUARD}


def write_marker_masked_copies(audits: Sequence[FileAudit], folder_paths: Sequence[str], folder_N: np.ndarray,
                               strip_dir: str, lungs: bool = False) -> dict[str, Any]:
  """--strip --strip_markers: a metadata-free grey PNG of every decodable file with its markers filled, at
  strip_dir/<folder name>/<path in folder>.png (new files only); returns a summary."""
  written, n_regions = 0, 0
  for audit, folder_index in zip(audits, folder_N.tolist()):
    if audit.error is not None:
      continue
    _, png_path = copy_targets(audit.path, folder_paths[folder_index], strip_dir)
    grey_HW = _grey_film(audit.path)
    masked_HW, found = markers_lib.mask_markers(grey_HW, _film_lungs(grey_HW, lungs))
    buffer = io.BytesIO()
    Image.fromarray(masked_HW).save(buffer, format='PNG')
    workdir_lib.write_bytes(png_path, buffer.getvalue(), root=strip_dir, exclusive=True)
    written, n_regions = written + 1, n_regions + found
  return {'out_dir': display_path(strip_dir), 'methods': {'marker-masked png': written},
          'n_marker_regions_filled': n_regions, 'lungs_given_to_detector': _lungs_record(lungs),
          'n_skipped_undecodable': sum(a.error is not None for a in audits)}


def metadata_report(table_path: str, file_column: str, subgroups: str, group_by: str, paths: Sequence[str],
                    folder_paths: Sequence[str], folder_N: np.ndarray, groups_N: np.ndarray) -> dict[str, Any]:
  """The audit's metadata part: the join (unmatched rows and images), class counts (an image's sub-folder) per
  subgroup of each --subgroups column, and with group_by the merged groups with images in more than one folder."""
  table = metadata_lib.read_table(table_path, file_column, '--metadata')
  joined = metadata_lib.join(table, paths, tuple(folder_paths), '--metadata')
  class_of = [os.path.relpath(os.path.dirname(p), folder_paths[f]) for p, f in zip(paths, folder_N.tolist())]
  classes = sorted(set(class_of))
  labels_N = np.asarray([classes.index(c) for c in class_of], np.int64)
  found: dict[str, Any] = {'table': joined.summary(), 'subgroups': {}}
  for subgroup in metadata_lib.parse_subgroups(subgroups, '--subgroups') if subgroups else ():
    if subgroup.column not in table.columns:
      raise ValueError(f'--subgroups={subgroups!r}: {subgroup.column!r} is not a column of --metadata={table_path!r}')
    subgroup = metadata_lib.with_bins(joined, subgroup)  # A numeric column named without bins: quartile bins.
    counts = metadata_lib.class_counts(labels_N, metadata_lib.subgroup_labels(joined, subgroup), subgroup, classes)
    found['subgroups'][subgroup.column] = {
        'counts': counts, 'largest_class': [metadata_lib.counts_sentence(v, row) for v, row in counts.items()]}
  if group_by:
    if group_by not in table.columns:
      raise ValueError(f'--group_by={group_by!r} is not a column of --metadata={table_path!r}')
    keys, without = metadata_lib.group_keys(joined, group_by, '')
    merged_N = metadata_lib.merge_groups(groups_N, keys)
    names = [display_path(f) for f in folder_paths]
    straddling = metadata_lib.groups_on_both_sides(merged_N.tolist(), [names[f] for f in folder_N.tolist()])
    found['group_by'] = {
        'column': group_by, 'n_without_value': without, 'n_groups': int(len(np.unique(merged_N))),
        'groups_across_folders': [
            {'values': sorted({k[1] for k, g in zip(keys, merged_N.tolist()) if g == group and k is not None}),
             'folders': folders_, 'files': [display_path(paths[i]) for i in np.flatnonzero(merged_N == group)]}
            for group, folders_ in straddling.items()]}
  return found


def run_audit(folder_paths: Sequence[str], out_dir: str, *, near_threshold: float = NEAR_THRESHOLD,
              strip_dir: str | None = None, drop_from: str | None = None, threads: int = 0, metadata: str = '',
              metadata_file_column: str = metadata_lib.DEFAULT_FILE_COLUMN, subgroups: str = '',
              group_by: str = '', markers: bool = False, strip_markers: bool = False,
              marker_lungs: bool = False) -> dict[str, Any]:
  """Audits the folders; writes out_dir/audit.json, pairs.png (drop_list.txt, stripped copies); returns the report.
  With `metadata` (a CSV), the report's 'metadata_table' (metadata_report); with `markers`, markers.json / .md
  (marker_report); with `strip_markers`, the --strip copies are marker-masked PNGs; marker_lungs: the marker
  detector is given the shipped lung U-Net's mask of each film."""
  drop_index = _check_arguments(folder_paths, out_dir, near_threshold, strip_dir, drop_from)
  if strip_markers and strip_dir is None:
    raise ValueError('--strip_markers writes marker-masked copies under --strip=OUT_DIR: name it')
  if (subgroups or group_by) and not metadata:
    raise ValueError('--subgroups and --group_by read --metadata=CSV: name the table')
  listed = [list_folder(folder) for folder in folder_paths]
  paths = [path for found, _, _ in listed for path in found]
  folder_N = np.asarray([i for i, (found, _, _) in enumerate(listed) for _ in found], np.int64)
  if strip_dir is not None:
    check_strip_targets(paths, folder_paths, folder_N, strip_dir)
  # Before any work: a user's own audit.json, pairs.png or drop_list.txt there is never replaced.
  workdir_lib.claim_outputs(out_dir, ['audit.json', 'pairs.png'] + (['drop_list.txt'] if drop_index is not None else []))
  audits = audit_files(paths, threads)
  decoded = [i for i, audit in enumerate(audits) if audit.error is None]
  thumbnails_ND = np.zeros((len(decoded), images.THUMBNAIL_SIZE**2), np.float32)
  for row, i in enumerate(decoded):
    thumbnails_ND[row] = audits[i].thumbnail
  found = duplicates.find_copy_pairs([audits[i].pixel_hash for i in decoded], thumbnails_ND, near_threshold)
  pairs = [dataclasses.replace(p, a=decoded[p.a], b=decoded[p.b]) for p in found]  # Back to indices of `paths`.
  groups_N = duplicates.copy_groups(len(paths), pairs)
  members = collections.defaultdict(list)
  for i, group in enumerate(groups_N.tolist()):
    members[group].append(display_path(paths[i]))

  report = {
      'folders': [folder_stats(folder, [a for a, f in zip(audits, folder_N) if f == i], listed[i][1], listed[i][2])
                  for i, folder in enumerate(folder_paths)],
      'near_threshold': near_threshold,
      'near_copy_measure': f'Pearson r of {images.THUMBNAIL_SIZE}x{images.THUMBNAIL_SIZE} grey thumbnails',
      'pairs': [{'a': display_path(paths[p.a]), 'b': display_path(paths[p.b]), 'kind': p.kind,
                 'score': round(p.score, 4)} for p in pairs],
      'copy_groups': [group for group in members.values() if len(group) > 1],
      'metadata': [{'path': display_path(a.path), 'found': list(a.metadata)} for a in audits if a.metadata],
  }
  if metadata:
    report['metadata_table'] = metadata_report(metadata, metadata_file_column, subgroups, group_by, paths,
                                               folder_paths, folder_N, groups_N)
  os.makedirs(out_dir, exist_ok=True)
  if drop_index is not None:
    dropped = [display_path(paths[i]) for i in copies_of_other_folders(pairs, folder_N, drop_index)]
    report['drop_from'] = display_path(folder_paths[drop_index])
    report['drop_list'] = dropped
    workdir_lib.write_text(os.path.join(out_dir, 'drop_list.txt'), ''.join(path + '\n' for path in dropped))
  if markers:
    report['markers'] = {k: v for k, v in marker_report(audits, folder_paths, folder_N, out_dir, threads,
                                                             marker_lungs).items()
                         if k != 'table'}
  if strip_dir is not None and strip_markers:
    report['strip'] = write_marker_masked_copies(audits, folder_paths, folder_N, strip_dir, marker_lungs)
  elif strip_dir is not None:
    report['strip'] = write_clean_copies(audits, folder_paths, folder_N, strip_dir)
  n_unreadable = sum(len(stats['unreadable']) for stats in report['folders'])
  n_unreadable_files = sum(audit.unreadable for audit in audits)
  report['summary'] = {
      'n_files': len(paths), 'n_images': len(decoded), 'n_undecodable': len(paths) - len(decoded) - n_unreadable_files,
      'n_unreadable': n_unreadable,
      'n_exact_pairs': sum(p.kind == 'exact' for p in pairs), 'n_near_pairs': sum(p.kind == 'near' for p in pairs),
      'n_files_with_metadata': len(report['metadata'])}
  workdir_lib.write_json(os.path.join(out_dir, 'audit.json'), report)
  names = [os.path.join(os.path.basename(os.path.realpath(folder_paths[f])), os.path.relpath(path, folder_paths[f]))
           for path, f in zip(paths, folder_N)]
  plot_pairs(pairs, names, [a.preview_HW for a in audits], os.path.join(out_dir, 'pairs.png'))
  return report


def main(argv: Sequence[str]) -> None:
  """Audits the FOLDERs named on the command line and prints what it found and where it wrote it."""
  if len(argv) < 2:
    raise app.UsageError('name at least one FOLDER: python -m lungjax.tools.audit FOLDER [FOLDER...] --out=DIR')
  report = run_audit(argv[1:], FLAGS.out, near_threshold=FLAGS.near_threshold, strip_dir=FLAGS.strip,
                     drop_from=FLAGS.drop_from, metadata=FLAGS.metadata,
                     metadata_file_column=FLAGS.metadata_file_column, subgroups=FLAGS.subgroups, group_by=FLAGS.group_by,
                     markers=FLAGS.markers, strip_markers=FLAGS.strip_markers, marker_lungs=FLAGS.marker_lungs)
  summary = report['summary']
  print(f'{summary["n_images"]} images ({summary["n_undecodable"]} undecodable, {summary["n_unreadable"]} '
        f'unreadable): {summary["n_exact_pairs"]} exact and {summary["n_near_pairs"]} near copy pairs, '
        f'{summary["n_files_with_metadata"]} files with metadata')
  for row in (row for stats in report['folders'] for row in stats['unreadable']):
    print(f'  unreadable  {row["path"]}: {row["reason"]}')
  print(f'  report      {os.path.join(FLAGS.out, "audit.json")}, {os.path.join(FLAGS.out, "pairs.png")}')
  table = report.get('metadata_table')
  if table:
    print(f'  metadata    {table["table"]["n_matched"]} of {table["table"]["n_images"]} images have a row; '
          f'{table["table"]["n_unmatched_rows"]} rows name no image')
    for column, row in table['subgroups'].items():
      print(f'  {column:<11} ' + '; '.join(row['largest_class']))
    if 'group_by' in table:
      across = table['group_by']['groups_across_folders']
      print(f'  group_by    {table["group_by"]["column"]}: {len(across)} groups have images in two folders')
  if 'drop_list' in report:
    print(f'  drop list   {os.path.join(FLAGS.out, "drop_list.txt")} ({len(report["drop_list"])} images)')
  if 'markers' in report:
    print(f'  markers     {report["markers"]["n_with_markers"]} of {report["markers"]["n_images"]} images: '
          f'{os.path.join(FLAGS.out, "markers.json")}, {os.path.join(FLAGS.out, "markers.md")}')
  if 'strip' in report:
    print(f'  clean copy  {FLAGS.strip} ({report["strip"]["methods"]})')


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['out'])
  app.run(main)
