"""Task registry: `load_task(name, data_dir, **options)` checks options and calls the task loader.

Loaders live in one module per task and are imported on first use, so loading ListOps never imports
PIL or tensorflow_datasets. `load_registered` does this for any registry of tasks: the six LRA tasks
here, and the non-LRA tasks of the `corpora` package, which builds on this one.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lra.cache import Cache
from lra.core import DataError, TaskData, not_a_folder
from lra.errors import MissingDataError


class Loader(NamedTuple):
  """How a registry loads one task: `importlib.import_module(module).load(data_dir, cache=...,
  **fixed, **options)`, with the user's options filled in from `options`' defaults."""

  module: str
  fixed: dict[str, Any]
  options: dict[str, Any]


_PATHFINDER_OPTIONS = {'difficulty': 'hard', 'split_seed': 0}
_REGISTRY: dict[str, Loader] = {
  'listops': Loader('lra.listops', {}, {'max_length': 2000}),
  'text': Loader('lra.text', {}, {'max_length': 4000, 'validation': 'heldout', 'split_seed': 0}),
  'retrieval': Loader('lra.retrieval', {}, {'max_length': 4000}),
  'image': Loader('lra.image', {}, {'max_length': 1024}),
  'pathfinder32': Loader(
    'lra.pathfinder', {'resolution': 32}, {'max_length': 1024, **_PATHFINDER_OPTIONS}
  ),
  'pathx': Loader(
    'lra.pathfinder', {'resolution': 128}, {'max_length': 16384, **_PATHFINDER_OPTIONS}
  ),
}
#: The six LRA tasks.
TASKS = tuple(_REGISTRY)
#: The tasks of the `corpora` package (token-level and masked-LM text tasks), named here only to
#: send their callers to `corpora.load_task`: this package never imports that one.
CORPORA_TASKS = ('seq2seq', 'lm', 'translation', 'corpus', 'glue')
_COMMON_OPTIONS = {'cache_dir': None, 'cache': True}
CACHE_SUBDIR = 'lra_cache'
#: The LRA release's folder that `lra.prepare` extracts (the nested copy: its pathfinder128 is the
#: sound one).
LRA_RELEASE = 'lra_release/lra_release'
#: Each task's `data_dir` relative to `python -m lra.prepare --data_dir` (`lra.prepare.TASK_FILES`).
PREPARED_DIRS = {
  'listops': f'{LRA_RELEASE}/listops-1000',
  'text': 'imdb',
  'retrieval': f'{LRA_RELEASE}/tsv_data',
  'image': 'cifar10',
  'pathfinder32': LRA_RELEASE,
  'pathx': LRA_RELEASE,
}
#: The offline generators of the tasks that have one (besides `python -m lra.prepare`), as the
#: loaders' own messages give them (`lra.listops`, `lra.pathfinder`).
_GENERATORS = {
  'listops': 'python -m lra.listops_generator --output_dir data/listops',
  'pathfinder32': 'python -m lra.pathfinder_generator --output_dir data/pathfinder --resolution 32 '
  '--difficulty {difficulty} --num_examples 20000',
  'pathx': 'python -m lra.pathfinder_generator --output_dir data/pathfinder --resolution 128 '
  '--difficulty {difficulty} --num_examples 20000',
}


def prepare_command(name: str, difficulty: str = 'hard') -> str:
  """The `lra.prepare` command that fetches LRA task `name`'s official data (for Pathfinder and
  Path-X, of `difficulty`), and where it puts it.

  Raises:
    KeyError: `name` has no official data (not in `PREPARED_DIRS`).
  """
  option = f' --difficulty {difficulty}' if difficulty != 'hard' else ''
  return (
    f'python -m lra.prepare --tasks {name} --data_dir data{option} writes it to '
    f'data/{PREPARED_DIRS[name]}'
  )


def data_source(name: str, difficulty: str = 'hard') -> str:
  """How to get the data of task `name` (Pathfinder and Path-X: of `difficulty`), for messages
  about a missing `data_dir`: `prepare_command` where the LRA release has the task, its offline
  generator where it has one, else the loader module whose docstring describes its files (a task
  added to the registry with neither).

  Raises:
    KeyError: `name` is not a task of the registry.
  """
  sources = [prepare_command(name, difficulty)] if name in PREPARED_DIRS else []
  if name in _GENERATORS:
    generator = _GENERATORS[name].format(difficulty=difficulty)
    sources.append(f'generate it offline with {generator}' if sources else generator)
  if not sources:
    sources.append(f'{_REGISTRY[name].module} describes its files')
  return '; or '.join(sources) + '.'


def require_data_dir(name: str, data_dir: str | Path, source: str, file_ok: bool = False) -> None:
  """Refuses an empty `data_dir`, which would silently mean the working directory, and a file
  given as the data folder (e.g. one of the data's files).

  Args:
    name: the task.
    data_dir: the folder given by the caller.
    source: how to get the task's data (`data_source`).
    file_ok: the task also reads a file as its data (corpora's 'corpus').

  Raises:
    DataError: `data_dir` is '' (or only spaces), naming the task and how to get its data;
      MissingDataError (`lra.core.not_a_folder`): it is a file.
  """
  if isinstance(data_dir, str) and not data_dir.strip():
    raise DataError(
      f'data_dir is empty: give the folder of the {name} data (never the working directory by '
      f'default). {source}'
    )
  if not file_ok and Path(data_dir).is_file():
    raise not_a_folder(Path(data_dir))


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _option_error(key: str, value: Any, default: Any) -> str | None:
  """Why an option's value is not of its default's kind (None when it is): a bool, an integer (a
  seed >= 0), a finite number, a string (every other default is one), or for `cache_dir` a path or
  None."""
  if default is None:
    return None if value is None or isinstance(value, (str, Path)) else 'must be a folder or None'
  if isinstance(default, bool):
    return None if isinstance(value, bool) else 'must be True or False'
  if isinstance(default, int):
    if not _is_int(value):
      return 'must be an integer'
    return 'must be >= 0' if key.endswith('seed') and value < 0 else None
  if isinstance(default, float):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) else 'must be a finite number'
  return None if isinstance(value, str) else 'must be a string'


def load_registered(
  registry: Mapping[str, Loader], name: str, data_dir: str | Path, options: Mapping[str, Any]
) -> TaskData:
  """Loads task `name` of `registry`: checks the options, builds the cache, calls the loader.

  Args:
    registry: task name -> Loader.
    name: the task.
    data_dir: the folder the task's files are in.
    options: the task's options (`Loader.options`), and `cache_dir` (default
      `<data_dir>/lra_cache`, beside `data_dir` when it is a file) and `cache` (False disables
      the cache) for every task.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option, an option of another type than its default (a negative
      seed, a non-finite number), a `max_length` (or `max_target_length`) that is not a positive
      integer, missing or malformed data.
  """
  if name not in registry:
    raise DataError(f'Unknown task {name!r}; known tasks: {", ".join(registry)}')
  module_name, fixed, defaults = registry[name]
  unknown = sorted(set(options) - set(defaults) - set(_COMMON_OPTIONS))
  if unknown:
    raise DataError(
      f'Task {name!r} has no option(s) {", ".join(unknown)}; options: '
      f'{", ".join(sorted({**defaults, **_COMMON_OPTIONS}))}'
    )
  settings = {**_COMMON_OPTIONS, **defaults, **options}
  for key in sorted(key for key in settings if key.startswith('max_') and key.endswith('length')):
    if not _is_int(settings[key]) or settings[key] <= 0:
      raise DataError(f'{key} must be a positive integer, got {settings[key]!r}')
  for key, value in options.items():
    error = _option_error(key, value, {**_COMMON_OPTIONS, **defaults}[key])
    if error:
      raise DataError(f'Task {name!r}: option {key}={value!r} {error}.')
  data_dir = Path(data_dir).expanduser()
  cache_dir = settings.pop('cache_dir')
  use_cache = settings.pop('cache')
  # A corpus may be one file: its cache goes beside it.
  default_cache = (data_dir.parent if data_dir.is_file() else data_dir) / CACHE_SUBDIR
  cache = Cache((Path(cache_dir) if cache_dir else default_cache) if use_cache else None)
  loader = functools.partial(importlib.import_module(module_name).load, **fixed)
  return loader(data_dir, cache=cache, **settings)


def load_task(name: str, data_dir: str | Path, **options: Any) -> TaskData:
  """Loads the train/validation/test splits of an LRA task.

  Args:
    name: one of TASKS.
    data_dir: the folder the task's files are in (see the README's Data section).
    **options: `max_length`, `cache_dir` (default `<data_dir>/lra_cache`), `cache` (False
      disables the cache), for the Pathfinder tasks `difficulty` and `split_seed`, for Text
      `validation` ('heldout' or 'test') and `split_seed`.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option (a task of `corpora` says to load it with
      `corpora.load_task`), an empty `data_dir`, missing or malformed data; for missing data a
      `MissingDataError` that also names the `lra.prepare` command (`prepare_command`) where the
      LRA release has the task.
  """
  if name in CORPORA_TASKS:
    raise DataError(
      f'{name!r} is not an LRA task: load it with corpora.load_task({name!r}, ...) '
      '(package corpora).'
    )
  difficulty = options.get('difficulty', 'hard')  # Pathfinder's and Path-X's, for the hints.
  if name in _REGISTRY:
    require_data_dir(name, data_dir, data_source(name, difficulty))
  try:
    return load_registered(_REGISTRY, name, data_dir, options)
  except MissingDataError as e:
    if name not in PREPARED_DIRS:
      raise
    command = prepare_command(name, difficulty)
    raise MissingDataError(f'{e}\nOr fetch the official data: {command}.') from None
