"""Installed size of lungjax's core dependencies with and without an extra, measured in this environment.

python -m benchmarks.install_size --extra=prepare --out=results/install_size/install_size.json

The dependency closure of pyproject.toml's core requirements (and of core + the extra) is followed through the
installed distributions' own requirements (markers evaluated here, requested extras followed); each distribution's
size is the sum of the sizes on disk of the files its RECORD lists. No network and no new venv: it measures what
`pip install .` and `pip install '.[EXTRA]'` put in site-packages, for the versions installed here. A requirement that
is not installed here is listed under `not_installed` (its size is not counted) rather than skipped silently.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed_bytes(dist: importlib.metadata.Distribution) -> int:
  total = 0
  for file in dist.files or ():
    path = file.locate()
    if os.path.isfile(path) and not os.path.islink(path):
      total += os.path.getsize(path)
  return total


def closure(requirements: list[str]) -> tuple[dict[str, str], list[str]]:
  """({canonical name: version} of every installed distribution the requirements pull in, [names not installed])."""
  found: dict[str, str] = {}
  seen: set[tuple[str, frozenset[str]]] = set()
  missing: list[str] = []
  todo = [(Requirement(r), frozenset({''})) for r in requirements]
  while todo:
    requirement, parent_extras = todo.pop()
    if requirement.marker and not any(requirement.marker.evaluate({'extra': e}) for e in parent_extras):
      continue
    name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras) | {''}
    if (name, extras) in seen:
      continue
    seen.add((name, extras))
    try:
      dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      missing.append(name)
      continue
    found[name] = dist.version
    todo += [(Requirement(r), extras) for r in dist.requires or ()]
  return found, sorted(set(missing))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--extra', default='prepare')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  core_reqs = list(project['dependencies'])
  extra_reqs = core_reqs + list(project['optional-dependencies'][args.extra])
  core, core_missing = closure(core_reqs)
  with_extra, extra_missing = closure(extra_reqs)
  sizes = {name: _installed_bytes(importlib.metadata.distribution(name)) for name in with_extra}
  added = sorted(set(with_extra) - set(core), key=lambda n: -sizes[n])
  core_bytes = sum(sizes[n] for n in core)
  extra_bytes = sum(sizes[n] for n in with_extra)
  result = {
      'command': f'python -m benchmarks.install_size --extra={args.extra} --out={args.out}',
      'python': sys.version.split()[0], 'platform': platform.platform(),
      'core_distributions': len(core), 'core_mb': round(core_bytes / 1e6, 1),
      f'core_plus_{args.extra}_distributions': len(with_extra),
      f'core_plus_{args.extra}_mb': round(extra_bytes / 1e6, 1),
      'difference_mb': round((extra_bytes - core_bytes) / 1e6, 1),
      'added_by_extra': [{'name': n, 'version': with_extra[n], 'mb': round(sizes[n] / 1e6, 1)} for n in added],
      'not_installed': sorted(set(core_missing) | set(extra_missing)),
  }
  tmp = f'{args.out}.tmp.{os.getpid()}'
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
    f.write('\n')
  os.replace(tmp, args.out)
  print(json.dumps({k: v for k, v in result.items() if k != 'added_by_extra'}, indent=2))
  for row in result['added_by_extra']:
    print(f"  + {row['name']} {row['version']}: {row['mb']} MB")


if __name__ == '__main__':
  main()
