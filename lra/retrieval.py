"""Document retrieval (AAN citation pairs, byte level): two token arrays per example.

Files `new_aan_pairs.{train,eval,test}.tsv` (in the release: `lra_release/lra_release/tsv_data`):
no header, 5 tab-separated columns `label id1 id2 text1 text2`, quotes are ordinary characters,
the label may be written as a float (`1.0`). As in the official pipeline each text is cut to its
first 10,000 bytes and then to `max_length`; ids are byte + 1, pad 0, vocab 257.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from lra import tokenize
from lra.cache import Cache, load_split_files
from lra.core import DataError, Split, TaskData, parse_label, require_files, task_data

FILES = {
  'train': 'new_aan_pairs.train.tsv',
  'validation': 'new_aan_pairs.eval.tsv',
  'test': 'new_aan_pairs.test.tsv',
}
NUM_CLASSES = 2
OFFICIAL_TEXT_BYTES = 10_000


def read_tsv(path: Path, max_length: int) -> Split:
  """Reads one AAN pairs file into a Split with [N, max_length] uint16 inputs and inputs2.

  Raises:
    DataError: a line without its 5 fields, naming the file and line.
  """
  keep = min(max_length, OFFICIAL_TEXT_BYTES)
  first, second, targets, num_truncated = [], [], [], 0
  with open(path, 'rb') as f:
    for line_no, line in enumerate(f, start=1):
      line = line.rstrip(b'\r\n')
      if not line:
        continue
      fields = line.split(b'\t')
      where = f'{path}:{line_no}'
      if len(fields) != 5:
        raise DataError(
          f'{where}: expected 5 tab-separated fields (label, id1, id2, text1, '
          f'text2), got {len(fields)}'
        )
      targets.append(parse_label(fields[0], NUM_CLASSES, where))
      first.append(tokenize.encode_bytes(fields[3], keep))
      second.append(tokenize.encode_bytes(fields[4], keep))
      num_truncated += max(len(fields[3]), len(fields[4])) > max_length
  inputs, lengths = tokenize.pad(first, max_length, np.uint16)
  inputs2, lengths2 = tokenize.pad(second, max_length, np.uint16)
  return Split(inputs, lengths, np.array(targets, np.int32), inputs2, lengths2, num_truncated)


def load(data_dir: Path, *, max_length: int, cache: Cache) -> TaskData:
  """Loads AAN from `data_dir/new_aan_pairs.{train,eval,test}.tsv`."""
  paths = {split: data_dir / name for split, name in FILES.items()}
  require_files(
    list(paths.values()),
    'Use lra_release/lra_release/tsv_data from the official LRA release '
    '(storage.googleapis.com/long-range-arena/lra_release.gz). For a synthetic '
    'stand-in '
    '(tests, demos): python -m lra.synthetic --task retrieval --output_dir '
    + shlex.quote(str(data_dir)),
    generated=True,
  )
  splits = load_split_files(cache, f'retrieval-{max_length}', paths, read_tsv, max_length)
  return task_data(
    'retrieval',
    splits,
    paths,
    f'max_length {max_length}',
    vocab_size=tokenize.BYTE_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    max_length=max_length,
    dual=True,
  )
