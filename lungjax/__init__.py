"""lungjax: chest X-ray classifiers in JAX and Flax, trained, evaluated and explained from the command line.

From Python, a trained run's best checkpoint predicts calibrated probabilities and explains them with Grad-CAM:

  import lungjax
  model = lungjax.load('runs/cnn')               # The best checkpoint, verified; or load(..., step=N).
  probabilities_NC = model.predict(['a.png', 'b.dcm'])  # N x len(model.classes), calibrated.
  heatmap_HW = model.explain('a.png', class_name='Covid')  # Grad-CAM in [0, 1].

Lung masks from the shipped U-Net: `lungjax.lung_masks(images_NHWC)`, `lungjax.segment(paths_or_images)`,
`lungjax.load_lungs()` (lungjax/lungs.py).

`load` and `Model` live in lungjax.inference; they import JAX when first used, so `import lungjax` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from lungjax.inference import Model, load

  __version__: str

__all__ = ['Model', 'load', 'load_lungs', 'lung_masks', 'segment', '__version__']

_LAZY = {'Model', 'load'}  # Names of lungjax.inference, imported on first use (it imports JAX).
_LAZY_LUNGS = {'load_lungs', 'lung_masks', 'segment'}  # lungjax.lungs: the shipped lung U-Net (issue 24).


def _version() -> str:
  """The installed distribution's version; '0+unknown' for a checkout that is on sys.path but not installed."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top  (about 0.1 s: only when asked)
  try:
    return importlib.metadata.version('lungjax')
  except importlib.metadata.PackageNotFoundError:
    return '0+unknown'


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    from lungjax import inference  # pylint: disable=g-import-not-at-top
    return getattr(inference, name)
  if name in _LAZY_LUNGS:
    from lungjax import lungs  # pylint: disable=g-import-not-at-top
    return getattr(lungs, name)
  if name == '__version__':
    globals()['__version__'] = version = _version()
    return version
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted(set(globals()) | _LAZY | _LAZY_LUNGS | {'__version__'})
