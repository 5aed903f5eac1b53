"""ListOps: `basic_{train,val,test}.tsv` (header `Source<TAB>Target`) to token ids.

Tokenisation follows the official pipeline (`]` becomes `X`, parentheses are dropped, whitespace
split) but with a fixed, sorted vocabulary instead of the official Python-`set` order, which changes
between processes: pad 0, digits `0`..`9` -> 1..10, `X` -> 11, `[MAX` 12, `[MED` 13, `[MIN` 14,
`[SM` 15. Sequences longer than `max_length` are truncated (the official data never needs it at
2000).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np

from lra import tokenize
from lra.cache import Cache, load_split_files
from lra.core import DataError, Split, TaskData, parse_label, require_files, task_data
from lra.files import recorded_settings

FILES = {'train': 'basic_train.tsv', 'validation': 'basic_val.tsv', 'test': 'basic_test.tsv'}
VOCAB = tuple(sorted([str(d) for d in range(10)] + ['X', '[MAX', '[MED', '[MIN', '[SM']))
TOKEN_IDS = {token: i + 1 for i, token in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB) + 1
NUM_CLASSES = 10
HEADER = ['Source', 'Target']
#: What a byte that is not UTF-8 decodes to under errors='surrogateescape'.
_NOT_UTF8 = re.compile('[\udc80-\udcff]')
#: The official expressions are longer than this (the generator's default `--min_length`).
OFFICIAL_MIN_LENGTH = 500


def tokenize_source(source: str) -> list[str]:
  """Splits an official `Source` string into tokens (`]` -> `X`, parentheses dropped)."""
  return source.replace(']', ' X ').replace('(', ' ').replace(')', ' ').split()


def encode(source: str) -> np.ndarray:
  """Maps an official `Source` string to [num_tokens] uint8 ids; KeyError on an unknown token."""
  return np.array([TOKEN_IDS[t] for t in tokenize_source(source)], np.uint8)


def read_tsv(path: Path, max_length: int) -> Split:
  """Reads one official ListOps TSV file.

  Args:
    path: the file (header `Source<TAB>Target`, LF or CRLF line ends).
    max_length: L; longer expressions are truncated.

  Returns:
    A Split with [N, L] uint8 inputs (and the number of expressions cut).

  Raises:
    DataError: a malformed line or header, an empty expression (no token), an unknown token or a
      line that is not UTF-8, naming the file and line.
  """
  sequences, targets = [], []
  # Bytes that are not UTF-8 decode to lone surrogates, so the line that holds them is known.
  with open(path, encoding='utf-8', errors='surrogateescape', newline='') as f:
    for line_no, line in enumerate(f, start=1):
      where = f'{path}:{line_no}'
      if _NOT_UTF8.search(line):
        raise DataError(f'{where}: not valid UTF-8')
      fields = line.rstrip('\r\n').split('\t')
      if line_no == 1:
        if fields != HEADER:
          raise DataError(f'{where}: expected the header "Source<TAB>Target", got {line!r}')
        continue
      if fields == ['']:
        continue
      if len(fields) != 2:
        raise DataError(
          f'{where}: expected 2 tab-separated fields (Source, Target), got {len(fields)}'
        )
      try:
        tokens = encode(fields[0])
      except KeyError as e:
        raise DataError(f'{where}: unknown ListOps token {e.args[0]!r} (known: {VOCAB})') from None
      # Whitespace or parentheses alone: no token (parentheses are dropped).
      if not tokens.size:
        raise DataError(f'{where}: empty expression')
      sequences.append(tokens)
      targets.append(parse_label(fields[1], NUM_CLASSES, where))
  inputs, lengths = tokenize.pad(sequences, max_length, np.uint8)
  return Split(
    inputs,
    lengths,
    np.array(targets, np.int32),
    num_truncated=sum(len(s) > max_length for s in sequences),
  )


def generator_command(data_dir: Path, max_length: int) -> str:
  """The `lra.listops_generator` command that writes ListOps fitting `max_length` to `data_dir`.

  Where the generator wrote the folder before (its record, `lra.files.record_outputs`), the
  command is the one it recorded. Otherwise: the generator's defaults are the official
  distribution (500 to 2000 tokens); below `OFFICIAL_MIN_LENGTH` every such expression would be
  cut, so the command then asks for short expressions, as the quick start does
  (`configs/quickstart.py`: its exact command at 60).
  """
  command = f'python -m lra.listops_generator --output_dir {shlex.quote(str(data_dir))}'
  recorded = recorded_settings([data_dir / name for name in FILES.values()])
  if recorded is not None:
    return ' '.join([command, *(f'--{key} {value}' for key, value in recorded.items())])
  if max_length >= OFFICIAL_MIN_LENGTH:
    return command
  return (
    f'{command} --num_train 20000 --num_val 2000 --num_test 2000 --min_length '
    f'{min(10, max_length // 2)} --max_length {max_length} --max_depth 4 --max_args 5'
  )


def load(data_dir: Path, *, max_length: int, cache: Cache) -> TaskData:
  """Loads ListOps from `data_dir/basic_{train,val,test}.tsv` (e.g. `lra_release/listops-1000`)."""
  paths = {split: data_dir / name for split, name in FILES.items()}
  require_files(
    list(paths.values()),
    f'Generate them with: {generator_command(data_dir, max_length)}\n'
    'or use lra_release/lra_release/listops-1000 from the official LRA release.',
    generated=True,
  )
  splits = load_split_files(cache, f'listops-{max_length}', paths, read_tsv, max_length)
  return task_data(
    'listops',
    splits,
    paths,
    f'max_length {max_length}',
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    max_length=max_length,
  )
