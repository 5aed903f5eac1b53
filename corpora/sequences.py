"""Byte-level sequence tasks for the causal Luna models: sequence to sequence and language
modelling.

`seq2seq`: files `train.tsv`, `validation.tsv`, `test.tsv` in `data_dir`, one pair per line,
`source<TAB>target`, no header (your own parallel text, or `python -m corpora.sequence_generator`).
`lm`: files `train.txt`, `validation.txt`, `test.txt`, one document per line.

Tokens are UTF-8 bytes + 1 (pad 0) as in the byte-level LRA tasks, plus `EOS_ID` and `BOS_ID`.
A Split holds token-level targets: for seq2seq `inputs` is the source and `targets` the target
followed by EOS; for the LM `inputs` is BOS + the line and `targets` the line + EOS (next-token
prediction).
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

import numpy as np

from lra import tokenize
from lra.cache import Cache, load_split_files
from lra.core import DataError, Split, TaskData, require_files, task_data

EOS_ID = tokenize.BYTE_VOCAB_SIZE  # 257
BOS_ID = tokenize.BYTE_VOCAB_SIZE + 1  # 258
VOCAB_SIZE = tokenize.BYTE_VOCAB_SIZE + 2
SEQ2SEQ_FILES = {'train': 'train.tsv', 'validation': 'validation.tsv', 'test': 'test.tsv'}
LM_FILES = {'train': 'train.txt', 'validation': 'validation.txt', 'test': 'test.txt'}


def _lines(path: Path):
  with open(path, 'rb') as f:
    for line_no, line in enumerate(f, start=1):
      line = line.rstrip(b'\r\n')
      if line:
        yield f'{path}:{line_no}', line


def _with_eos(text: bytes, max_length: int) -> np.ndarray:
  """Byte ids of `text` (cut to leave room) followed by EOS: at most max_length ids."""
  return np.append(tokenize.encode_bytes(text, max_length - 1), EOS_ID).astype(np.uint16)


def read_pairs(path: Path, max_length: int, max_target_length: int) -> Split:
  """Reads `source<TAB>target` lines into a Split: inputs [N, max_length], targets [N,
  max_target_length].

  Raises:
    DataError: a line without its 2 fields, or with an empty source (the searches of
      `luna_jax.model.generation` need a source token), naming the file and line.
  """
  sources, targets, num_truncated = [], [], 0
  for where, line in _lines(path):
    fields = line.split(b'\t')
    if len(fields) != 2:
      raise DataError(
        f'{where}: expected 2 tab-separated fields (source, target), got {len(fields)}'
      )
    if not fields[0]:
      raise DataError(f'{where}: empty source; a pair needs at least one source byte.')
    sources.append(tokenize.encode_bytes(fields[0], max_length))
    targets.append(_with_eos(fields[1], max_target_length))
    num_truncated += len(fields[0]) > max_length or len(fields[1]) + 1 > max_target_length
  inputs, lengths = tokenize.pad(sources, max_length)
  return Split(
    inputs, lengths, tokenize.pad(targets, max_target_length)[0], num_truncated=num_truncated
  )


def read_documents(path: Path, max_length: int) -> Split:
  """Reads one document per line into a next-token Split: inputs BOS + line, targets line + EOS."""
  lines = [line for _, line in _lines(path)]
  targets = [_with_eos(line, max_length) for line in lines]
  inputs = [np.concatenate([[BOS_ID], t[:-1]]).astype(np.uint16) for t in targets]
  padded, lengths = tokenize.pad(inputs, max_length)
  return Split(
    padded,
    lengths,
    tokenize.pad(targets, max_length)[0],
    num_truncated=sum(len(line) + 1 > max_length for line in lines),
  )


def _paths(data_dir: Path, files: dict[str, str], task: str) -> dict[str, Path]:
  paths = {split: data_dir / name for split, name in files.items()}
  require_files(
    list(paths.values()),
    f'Write your own files in this layout, or generate a toy task with:\n'
    f'  python -m corpora.sequence_generator --task {"lm" if task == "lm" else "sort"} '
    f'--output_dir {shlex.quote(str(data_dir))}',
    generated=True,
  )
  return paths


def load(
  data_dir: Path, *, cache: Cache, kind: str, max_length: int, max_target_length: int | None = None
) -> TaskData:
  """Loads a byte-level parallel corpus (`kind='seq2seq'`) or a document corpus (`kind='lm'`).

  Args:
    data_dir: folder with the three split files (see the module docstring).
    cache: tokenised-array cache.
    kind: 'seq2seq' or 'lm'.
    max_length: source length (seq2seq) or document length in tokens (LM).
    max_target_length: target length in tokens, EOS included (seq2seq).

  Returns:
    The task; `info` holds `bos_id` and `eos_id`.
  """
  if kind == 'seq2seq':
    paths = _paths(data_dir, SEQ2SEQ_FILES, kind)
    read = functools.partial(read_pairs, max_target_length=max_target_length)
    key = f'seq2seq_target{max_target_length}'
    limit = f'max_length {max_length} (source) or max_target_length {max_target_length} (target)'
  else:
    paths, read, key = _paths(data_dir, LM_FILES, kind), read_documents, 'lm'
    limit = f'max_length {max_length} (with BOS or EOS)'
  splits = load_split_files(cache, key, paths, read, max_length)
  return task_data(
    kind,
    splits,
    paths,
    limit,
    vocab_size=VOCAB_SIZE,
    num_classes=VOCAB_SIZE,
    max_length=max_length,
    info={'bos_id': BOS_ID, 'eos_id': EOS_ID},
  )
