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
#: How to get each task's data (for messages about a missing `data_dir`).
_SOURCES = {
  'seq2seq': 'python -m corpora.sequence_generator --task sort --output_dir data/sort writes a toy '
  'task there; your own: a folder with train.tsv, validation.tsv and test.tsv.',
  'lm': 'python -m corpora.sequence_generator --task lm --output_dir data/lm writes a toy corpus '
  'there; your own: a folder with train.txt, validation.txt and test.txt.',
  'translation': 'python -m corpora.wmt14 --output_dir data/wmt14 (from TFDS data prepared '
  'elsewhere) or python -m corpora.translation_generator --output_dir data/translation (a small '
  'rule-based corpus), then python -m corpora.translation vocabulary --data_dir <that folder>; '
  'your own: train/validation/test .<lang> or .tsv files.',
  'corpus': 'A corpus is a text file or a folder of *.txt files, one document per line; a small '
  'one: python -m corpora.sequence_generator --task lm --output_dir data/lm, then '
  '--config.data.data_dir=data/lm/train.txt.',
  'glue': "Give a GLUE task's folder with train.tsv and dev.tsv (e.g. glue/SST-2 from "
  'https://gluebenchmark.com/tasks).',
}


def data_source(name: str) -> str:
  """How to get the data of task `name` (for messages about a missing `data_dir`)."""
  return _SOURCES[name]


def load_task(name: str, data_dir: str | Path, **options: Any) -> TaskData:
  """Loads the train/validation/test splits of a non-LRA task.

  Args:
    name: one of TASKS.
    data_dir: the folder (for 'corpus' also a text file) the task's files are in (see the README's
      Data section).
    **options: `max_length`, `cache_dir` (default `<data_dir>/lra_cache`; for a corpus file
      `lra_cache` beside it), `cache` (False disables the cache); for 'seq2seq'
      `max_target_length`, for 'translation' `max_target_length`, `source_lang`, `target_lang`,
      `tokenizer` and `max_tokens`, for 'corpus' `tokenizer`, `heldout_fraction` and
      `split_seed`, for 'glue' `glue_task` and `tokenizer`.

  Returns:
    The task's splits and sizes.

  Raises:
    DataError: unknown task or option (an LRA task says to load it with `lra.load_task`), an empty
      `data_dir`, missing or malformed data.
  """
  if name in registry.TASKS:
    raise DataError(f'{name!r} is an LRA task: load it with lra.load_task({name!r}, ...).')
  if name in _REGISTRY:
    registry.require_data_dir(name, data_dir, data_source(name), file_ok=name == 'corpus')
  return registry.load_registered(_REGISTRY, name, data_dir, options)
