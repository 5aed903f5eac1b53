"""Text that stays true: every backticked dotted name of the project's packages (`luna_jax.*`,
`lra.*`, `corpora.*`, `benchmarks.*`) in the README, the notebook, the source files and the READMEs
of benchmarks/results/ resolves to a
real module, class, function, constant or dataclass field; every project file path they name
(`lra/cache.py`) exists; no tracked file names a path of the machines the project was built on."""

import dataclasses
import importlib
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('luna_jax', 'lra', 'corpora', 'benchmarks')
#: A dotted name right after an opening backtick: `lra.load_task(...)` gives 'lra.load_task'.
NAME = re.compile(r'`((?:' + '|'.join(PACKAGES) + r')(?:\.[A-Za-z_]\w*)+)')


#: A path to one of the project's Python files, e.g. 'luna_jax/model/layers.py'.
PATH = re.compile(r'(?<![\w./])((?:luna_jax|lra|corpora|benchmarks|configs|tests)/[\w/]*\w\.py)\b')


def _documents():
  files = [ROOT / 'README.md', ROOT / 'train.py', *sorted((ROOT / 'notebooks').glob('*.ipynb'))]
  files += [ROOT / 'requirements.txt', ROOT / 'pyproject.toml']
  for folder in (*PACKAGES, 'configs', 'tests'):
    files += sorted(p for p in (ROOT / folder).rglob('*.py') if 'results' not in p.parts)
  # The evidence's READMEs, which say how each result was made.
  files += sorted((ROOT / 'benchmarks' / 'results').rglob('README.md'))
  return [f for f in files if f.is_file()]


def _mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
  """Every distinct match of `pattern` in the documents, with the file:line of its first one."""
  found = {}
  for path in _documents():
    for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
      for name in pattern.findall(line):
        found.setdefault(name, f'{path.relative_to(ROOT)}:{number}')
  return sorted(found.items())


def _resolves(name: str) -> bool:
  """Imports the longest module prefix of `name`, then looks up the rest as attributes (a field of
  a dataclass counts, with or without a default)."""
  parts = name.split('.')
  for cut in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module('.'.join(parts[:cut]))
    except ModuleNotFoundError:
      continue
    for part in parts[cut:]:
      if hasattr(obj, part):
        obj = getattr(obj, part)
      elif dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
        return True
      else:
        return False
    return True
  return False


def test_every_backticked_name_resolves():
  names = _mentions(NAME)
  assert len(names) > 50  # The scan does find the README's and the docstrings' names.
  broken = [f'{where}: `{name}`' for name, where in names if not _resolves(name)]
  assert not broken, 'names that point at nothing:\n' + '\n'.join(broken)


def test_every_named_project_file_exists():
  paths = _mentions(PATH)
  assert len(paths) > 20  # The scan does find the README's paths.
  missing = [f'{where}: {name}' for name, where in paths if not (ROOT / name).exists()]
  assert not missing, 'paths to files that do not exist:\n' + '\n'.join(missing)


def test_no_file_names_a_path_of_the_developers_machines():
  """Docs, code and committed evidence name only paths a user's checkout has: none on the machines
  the project was built on (their work folder, or the reference folder beside the repository)."""
  machine_paths = re.compile('/' + 'work/|' + re.escape('..' + '/shared'))
  tracked = subprocess.run(
    ['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True, check=True
  ).stdout.split('\0')
  found = []
  for name in filter(None, tracked):
    try:
      text = (ROOT / name).read_text(encoding='utf-8')
    except (UnicodeDecodeError, FileNotFoundError):
      continue  # Binary files; files deleted in the work tree.
    lines = [text[: m.start()].count('\n') + 1 for m in machine_paths.finditer(text)]
    found += [f'{name}:{line}' for line in lines]
  assert not found, found
