"""Task registry: `load_task(name, data_dir, **options)` checks options and calls the task loader.

Loaders live in one module per task and are imported on first use, so loading ListOps never imports
PIL or tensorflow_datasets.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

from lra.cache import Cache
from lra.core import DataError, TaskData

# name -> (module, fixed loader arguments, user options with their defaults).
_PATHFINDER_OPTIONS = {'difficulty': 'hard', 'split_seed': 0}
_REGISTRY: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
  'listops': ('lra.listops', {}, {'max_length': 2000}),
  'text': ('lra.text', {}, {'max_length': 4000, 'validation': 'heldout', 'split_seed': 0}),
  'retrieval': ('lra.retrieval', {}, {'max_length': 4000}),
  'image': ('lra.image', {}, {'max_length': 1024}),
  'pathfinder32': (
    'lra.pathfinder',
    {'resolution': 32},
    {'max_length': 1024, **_PATHFINDER_OPTIONS},
  ),
  'pathx': ('lra.pathfinder', {'resolution': 128}, {'max_length': 16384, **_PATHFINDER_OPTIONS}),
  # Token-level tasks for the causal Luna models (not part of LRA).
  'seq2seq': ('lra.sequences', {'kind': 'seq2seq'}, {'max_length': 256, 'max_target_length': 256}),
  'lm': ('lra.sequences', {'kind': 'lm'}, {'max_length': 512}),
  # Masked-LM pretraining on plain text, and GLUE-format finetuning (not part of LRA).
  'corpus': (
    'lra.corpus',
    {},
    {'max_length': 512, 'tokenizer': 'bytes', 'heldout_fraction': 0.01, 'split_seed': 0},
  ),
  'glue': ('lra.glue', {}, {'max_length': 128, 'glue_task': 'sst2', 'tokenizer': 'bytes'}),
}
_COMMON_OPTIONS = {'cache_dir': None, 'cache': True}
#: The six LRA tasks, and the token-level tasks of the causal models.
TOKEN_TASKS = ('seq2seq', 'lm')
#: Text tasks of the masked-LM pretraining and finetuning (`lra.corpus`, `lra.glue`).
TEXT_TASKS = ('corpus', 'glue')
TASKS = tuple(name for name in _REGISTRY if name not in (*TOKEN_TASKS, *TEXT_TASKS))
CACHE_SUBDIR = 'lra_cache'


def load_task(name: str, data_dir: str | Path, **options: Any) -> TaskData:
  """Loads the train/validation/test splits of an LRA task.

  Args:
    name: one of TASKS, TOKEN_TASKS or TEXT_TASKS.
    data_dir: the folder the task's files are in (see the README's Data section).
    **options: `max_length`, `cache_dir` (default `<data_dir>/lra_cache`), `cache` (False
      disables the cache), for the Pathfinder tasks `difficulty` and `split_seed`, for Text
      `validation` ('heldout' or 'test') and `split_seed`; for 'corpus' `tokenizer`,
      `heldout_fraction` and `split_seed`, for 'glue' `glue_task` and `tokenizer`.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option, missing or malformed data.
  """
  if name not in _REGISTRY:
    raise DataError(f'Unknown task {name!r}; known tasks: {", ".join(_REGISTRY)}')
  module_name, fixed, defaults = _REGISTRY[name]
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
