"""Task registry: `load_task(name, data_dir, **options)` checks options and calls the task loader.

Loaders live in one module per task and are imported on first use, so loading ListOps never imports
PIL or tensorflow_datasets. `load_registered` does this for any registry of tasks: the six LRA tasks
here, and the non-LRA tasks of the `corpora` package, which builds on this one.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lra.cache import Cache
from lra.core import DataError, TaskData


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


def load_registered(
  registry: Mapping[str, Loader], name: str, data_dir: str | Path, options: Mapping[str, Any]
) -> TaskData:
  """Loads task `name` of `registry`: checks the options, builds the cache, calls the loader.

  Args:
    registry: task name -> Loader.
    name: the task.
    data_dir: the folder the task's files are in.
    options: the task's options (`Loader.options`), and `cache_dir` (default
      `<data_dir>/lra_cache`) and `cache` (False disables the cache) for every task.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option, a `max_length` that is not a positive integer, missing or
      malformed data.
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
  if not isinstance(settings['max_length'], int) or settings['max_length'] <= 0:
    raise DataError(f'max_length must be a positive integer, got {settings["max_length"]!r}')
  data_dir = Path(data_dir).expanduser()
  cache_dir = settings.pop('cache_dir')
  use_cache = settings.pop('cache')
  cache = Cache((Path(cache_dir) if cache_dir else data_dir / CACHE_SUBDIR) if use_cache else None)
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
      `corpora.load_task`), missing or malformed data.
  """
  if name in CORPORA_TASKS:
    raise DataError(
      f'{name!r} is not an LRA task: load it with corpora.load_task({name!r}, ...) '
      '(package corpora).'
    )
  return load_registered(_REGISTRY, name, data_dir, options)
