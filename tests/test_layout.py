"""The layout's plan, checked on the import graph: no package has an import cycle among its modules;
`corpora` builds on `lra` and `lra` never imports `corpora`; `luna_jax.model` never imports
`luna_jax.training`."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _runtime_nodes(tree: ast.AST):
  """Every node of `tree` except those inside `if TYPE_CHECKING:` blocks."""
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, ast.If) and getattr(node.test, 'id', None) == 'TYPE_CHECKING':
      continue
    yield node
    yield from _runtime_nodes(node)


def module_imports(package: str) -> dict[str, set[str]]:
  """Module -> the modules it imports (anywhere in it, lazily too), for every module of `package`.

  `from p import name` counts as an import of `p.name` where that is a module, else of `p`.
  Imports under `if TYPE_CHECKING:` are for annotations only and never run, so they do not count.
  """
  graph = {}
  for path in sorted((ROOT / package.replace('.', '/')).glob('*.py')):
    module = package if path.stem == '__init__' else f'{package}.{path.stem}'
    imported = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for alias in node.names:
          is_module = (ROOT / node.module.replace('.', '/') / f'{alias.name}.py').is_file()
          imported.add(f'{node.module}.{alias.name}' if is_module else node.module)
      elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        if re.fullmatch(r'(lra|corpora)(\.\w+)+', node.value):  # importlib's module names.
          imported.add(node.value)
    graph[module] = imported
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """A cycle of `graph` among its own modules (package inits aside), or []."""
  edges = {m: {d for d in deps if d in graph and '.' in d} for m, deps in graph.items() if '.' in m}
  done, path = set(), []

  def visit(module):
    if module in path:
      return path[path.index(module) :] + [module]
    if module in done:
      return []
    path.append(module)
    for dependency in sorted(edges[module]):
      if cycle := visit(dependency):
        return cycle
    path.pop()
    done.add(module)
    return []

  for module in sorted(edges):
    if cycle := visit(module):
      return cycle
  return []


@pytest.mark.parametrize('package', ['lra', 'corpora'])
def test_no_import_cycle_and_lra_never_imports_corpora(package):
  graph = module_imports(package)
  assert find_cycle(graph) == []
  if package == 'lra':
    corpora = {
      m: sorted(d for d in deps if d.split('.')[0] == 'corpora') for m, deps in graph.items()
    }
    assert not any(corpora.values()), corpora
  else:
    assert any(d.split('.')[0] == 'lra' for deps in graph.values() for d in deps)


def test_the_cycle_finder_finds_cycles():
  graph = {'p.a': {'p.b'}, 'p.b': {'p.c', 'numpy'}, 'p.c': {'p.a'}, 'p': {'p.a'}}
  assert find_cycle(graph) == ['p.a', 'p.b', 'p.c', 'p.a']
  assert find_cycle({**graph, 'p.c': set()}) == []


@pytest.mark.parametrize('package', ['luna_jax.model', 'luna_jax.training'])
def test_no_import_cycle_in_luna_jax_and_the_model_below_the_training(package):
  graph = module_imports(package)
  # The sub-package's own `__init__` is its namespace, not one of its modules.
  graph = {m: deps - {package} for m, deps in graph.items() if m != package}
  assert find_cycle({**graph, 'luna_jax': set()}) == []
  if package == 'luna_jax.model':
    training = {
      m: sorted(d for d in deps if d.startswith('luna_jax.training')) for m, deps in graph.items()
    }
    assert not any(training.values()), training
