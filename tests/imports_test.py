"""No import cycle in the lungjax package, counting module-level and function-level imports alike.

Every module's imports are read with `ast` (relative or absolute; `from lungjax import x` is module lungjax.x where
x is a module, else the package lungjax itself), and the import graph's strongly connected components must be single
modules. A cycle found is printed as a chain of modules, each with the line that imports the next.
"""

import ast
import pathlib

_REPO = pathlib.Path(__file__).parents[1]


def package_modules(root: pathlib.Path, package: str = 'lungjax') -> dict[str, tuple[pathlib.Path, bool]]:
  """Dotted module name -> (its file, whether it is a package's __init__.py)."""
  found = {}
  for path in sorted((root / package).rglob('*.py')):
    parts = list(path.relative_to(root).with_suffix('').parts)
    is_package = parts[-1] == '__init__'
    found['.'.join(parts[:-1] if is_package else parts)] = (path, is_package)
  return found


def import_graph(root: pathlib.Path, package: str = 'lungjax') -> dict[str, dict[str, int]]:
  """Module -> {package module it imports: the first line that does}, from every import statement in its file."""
  modules = package_modules(root, package)
  graph = {}
  for name, (path, is_package) in modules.items():
    base = name.split('.') if is_package else name.split('.')[:-1]  # What `from . import x` is relative to.
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          parent = base[:len(base) - (node.level - 1)]
          module = '.'.join(parent + ([node.module] if node.module else []))
        else:
          module = node.module
        targets = [f'{module}.{alias.name}' if f'{module}.{alias.name}' in modules else module for alias in node.names]
      else:
        continue
      for target in targets:
        if target in modules and target != name:
          edges.setdefault(target, node.lineno)
    graph[name] = edges
  return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm, iterative), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  found = []
  for start in graph:
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = len(index)
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          found.append(sorted(component))
  return found


def _describe(component: list[str], graph: dict[str, dict[str, int]], modules) -> str:
  inside = set(component)
  return '\n'.join(f'  {a} -> {b}  ({modules[a][0].relative_to(_REPO)}:{line})'
                   for a in component for b, line in sorted(graph[a].items()) if b in inside)


# None: the last one (images -> preprocess -> lungs -> images) went when the U-Net on decoded pixels moved to
# models/lung_unet.py (below data/preprocess.py) and area_resize to data/resize.py.
_KNOWN_CYCLES: list[list[str]] = []


def test_the_package_has_no_import_cycle():
  graph, modules = import_graph(_REPO), package_modules(_REPO)
  assert len(graph) > 60 and 'lungjax.data.images' in graph['lungjax.data.loading']
  found = cycles(graph)
  assert found == _KNOWN_CYCLES, 'import cycles:\n' + '\n\n'.join(_describe(c, graph, modules) for c in found)


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


def test_a_cycle_through_a_function_level_or_relative_import_is_found(tmp_path):
  _write(tmp_path, {
      'pkg/__init__.py': '',
      'pkg/a.py': 'from pkg import b\n',
      'pkg/b.py': 'def f():\n  from . import c\n',
      'pkg/c.py': 'import pkg.a as a\n',
      'pkg/sub/__init__.py': 'from pkg.sub.leaf import NAME\n',
      'pkg/sub/leaf.py': 'from ..sub import other\nNAME = 1\n',
      'pkg/sub/other.py': 'from pkg import c\n',
  })
  graph = import_graph(tmp_path, 'pkg')
  assert graph['pkg.b'] == {'pkg.c': 2} and graph['pkg.sub.leaf'] == {'pkg.sub.other': 1}
  assert graph['pkg.sub'] == {'pkg.sub.leaf': 1}
  assert cycles(graph) == [['pkg.a', 'pkg.b', 'pkg.c']]


def test_a_name_imported_from_a_package_is_an_edge_to_its_init(tmp_path):
  _write(tmp_path, {
      'pkg/__init__.py': 'from pkg.a import run\n',
      'pkg/a.py': 'from pkg import VERSION, b\nrun = 1\n',
      'pkg/b.py': '',
  })
  graph = import_graph(tmp_path, 'pkg')
  assert graph['pkg.a'] == {'pkg': 1, 'pkg.b': 1}
  assert cycles(graph) == [['pkg', 'pkg.a']]
  _write(tmp_path, {'pkg/a.py': 'from pkg import b\nrun = 1\n'})
  assert cycles(import_graph(tmp_path, 'pkg')) == []


# Modules without a test file named after them, each with the file that tests it and why. A module listed here
# whose own test file appears fails the test below (remove it from the list then).
_TESTED_ELSEWHERE = {
    'lungjax/__init__.py': ('api_test.py', 'the public API: lungjax.load, Model, segment, __version__'),
    'lungjax/configs/__init__.py': ('config_check_test.py', 'the packaged configs, loaded by path'),
    'lungjax/cpu/__init__.py': ('kernels_test.py', 'an empty package docstring'),
    'lungjax/data/__init__.py': ('imports_test.py', 'an empty package'),
    'lungjax/tools/__init__.py': ('imports_test.py', 'an empty package'),
    'lungjax/runtime/__init__.py': ('imports_test.py', 'a package docstring'),
    'lungjax/explain/__init__.py': ('imports_test.py', 'a package docstring'),
    'lungjax/report/__init__.py': ('imports_test.py', 'a package docstring'),
    'lungjax/experiments/__init__.py': ('imports_test.py', 'a package docstring'),
    'lungjax/models/__init__.py': ('models_test.py', 'the model registry: names, fields, dtypes'),
    'lungjax/models/resnet.py': ('resnet_vgg_test.py', 'ResNet and VGG share one file of parametrized cases'),
    'lungjax/models/vgg.py': ('resnet_vgg_test.py', 'ResNet and VGG share one file of parametrized cases'),
    **{f'lungjax/configs/{name}.py': ('config_check_test.py', 'a config (data): every shipped config passes every '
                                      'mode in test_the_shipped_configs_pass_every_mode')
       for name in ('autoencoder', 'cnn', 'cnn_augment', 'lungs', 'resnet', 'robust', 'tiny', 'vgg')},
}


def own_test_files(module: pathlib.Path, package_root: pathlib.Path) -> list[str]:
  """The names a module's own test file may have: tests/<module>_test.py, and for a module of a sub-package
  (lungjax/data/x.py) also tests/data_x_test.py; the short name only where no other module has the same name."""
  relative = module.relative_to(package_root)
  names = [f'{"_".join(relative.with_suffix("").parts)}_test.py']
  if len(relative.parts) > 1 and sum(1 for p in package_root.rglob(module.name)) == 1:
    names.append(f'{module.stem}_test.py')
  return names


def test_every_module_has_its_own_test_file_or_a_listed_reason():
  package_root = _REPO / 'lungjax'
  tests = {path.name for path in (_REPO / 'tests').glob('*_test.py')}
  missing, stale = [], []
  for module in sorted(package_root.rglob('*.py')):
    name = str(module.relative_to(_REPO))
    has_own = any(candidate in tests for candidate in own_test_files(module, package_root))
    if name in _TESTED_ELSEWHERE:
      test_file, reason = _TESTED_ELSEWHERE[name]
      assert reason and test_file in tests, (name, test_file)
      if has_own:
        stale.append(name)
    elif not has_own:
      missing.append(f'{name}: {" or ".join(own_test_files(module, package_root))}')
  assert not missing, 'modules without a test file:\n' + '\n'.join(missing)
  assert not stale, f'listed in _TESTED_ELSEWHERE but now have their own test file: {stale}'
  assert set(_TESTED_ELSEWHERE) <= {str(m.relative_to(_REPO)) for m in package_root.rglob('*.py')}


def test_the_own_test_file_names(tmp_path):
  _write(tmp_path, {'lungjax/train.py': '', 'lungjax/data/images.py': '', 'lungjax/models/cnn.py': '',
                    'lungjax/configs/cnn.py': ''})
  root = tmp_path / 'lungjax'
  assert own_test_files(root / 'train.py', root) == ['train_test.py']
  assert own_test_files(root / 'data' / 'images.py', root) == ['data_images_test.py', 'images_test.py']
  assert own_test_files(root / 'models' / 'cnn.py', root) == ['models_cnn_test.py']  # configs/cnn.py too.
