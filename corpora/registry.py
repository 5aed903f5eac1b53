"""Registry of the non-LRA tasks: `load_task(name, data_dir, **options)` checks options and calls
the task loader (`lra.registry.load_registered`, as for the LRA tasks: same options, same cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lra import registry
from lra.core import DataError, TaskData
from lra.registry import Loader

_REGISTRY: dict[str, Loader] = {
  # Token-level tasks for the causal Luna models.
  'seq2seq': Loader(
    'corpora.sequences', {'kind': 'seq2seq'}, {'max_length': 256, 'max_target_length': 256}
  ),
  'lm': Loader('corpora.sequences', {'kind': 'lm'}, {'max_length': 512}),
  # Parallel text tokenised with a joint SentencePiece model, batched by tokens (WMT'14 En-De).
  'translation': Loader(
    'corpora.translation',
    {},
    {
      'max_length': 256,
      'max_target_length': 256,
      'source_lang': 'en',
      'target_lang': 'de',
      'tokenizer': 'spm.model',
      'max_tokens': 4096,
    },
  ),
  # Masked-LM pretraining on plain text, and GLUE-format finetuning.
  'corpus': Loader(
    'corpora.corpus',
    {},
    {'max_length': 512, 'tokenizer': 'bytes', 'heldout_fraction': 0.01, 'split_seed': 0},
  ),
  'glue': Loader(
    'corpora.glue', {}, {'max_length': 128, 'glue_task': 'sst2', 'tokenizer': 'bytes'}
  ),
}
#: The token-level tasks of the causal models.
TOKEN_TASKS = ('seq2seq', 'lm', 'translation')
#: The text tasks of the masked-LM pretraining and finetuning (`corpora.corpus`, `corpora.glue`).
TEXT_TASKS = ('corpus', 'glue')
#: Every task of this package.
TASKS = tuple(_REGISTRY)


def load_task(name: str, data_dir: str | Path, **options: Any) -> TaskData:
  """Loads the train/validation/test splits of a non-LRA task.

  Args:
    name: one of TASKS.
    data_dir: the folder (for 'corpus' also a text file) the task's files are in (see the README's
      Data section).
    **options: `max_length`, `cache_dir` (default `<data_dir>/lra_cache`), `cache` (False
      disables the cache); for 'seq2seq' `max_target_length`, for 'translation'
      `max_target_length`, `source_lang`, `target_lang`, `tokenizer` and `max_tokens`, for 'corpus'
      `tokenizer`,
      `heldout_fraction` and `split_seed`, for 'glue' `glue_task` and `tokenizer`.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option (an LRA task says to load it with `lra.load_task`), missing
      or malformed data.
  """
  if name in registry.TASKS:
    raise DataError(f'{name!r} is an LRA task: load it with lra.load_task({name!r}, ...).')
  return registry.load_registered(_REGISTRY, name, data_dir, options)
