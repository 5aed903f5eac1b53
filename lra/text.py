"""Text classification (IMDb reviews, byte level): UTF-8 bytes + 1, pad 0, vocab 257.

Sources, tried in order under `data_dir`:
  1. an extracted `aclImdb/` folder: `aclImdb/{train,test}/{neg,pos}/*.txt` (label neg 0, pos 1);
  2. a prepared TFDS `imdb_reviews` (array_record or tfrecord) in `data_dir` as a TFDS data dir.
IMDb has no validation split. In the official pipeline the test split serves as both, so a "best
checkpoint" chosen on it is chosen on test data. Option `validation`: 'heldout' (the default)
holds out a seeded `HELDOUT_FRACTION` of the training reviews (`split_seed`) as the validation
split, and trains on the rest; 'test' is the official protocol (all 25,000 training reviews,
validation = test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lra import tfds_source, tokenize
from lra.cache import Cache
from lra.core import (
  DataError,
  Split,
  TaskData,
  arrays_to_splits,
  parse_label,
  require_files,
  splits_to_arrays,
  task_data,
)

NUM_CLASSES = 2
#: `validation` option values: a split held out from train, or the test split (official LRA).
VALIDATION_SOURCES = ('heldout', 'test')
#: Fraction of the training reviews held out for validation under `validation='heldout'`.
HELDOUT_FRACTION = 0.1
CLASS_FOLDERS = ('neg', 'pos')
TFDS_NAME = 'imdb_reviews'
TFDS_CONFIG = 'plain_text'


def build_split(examples: Iterable[tuple[bytes, int]], max_length: int) -> Split:
  """Encodes (review bytes, label) pairs into a Split with [N, max_length] uint16 inputs."""
  sequences, targets, num_truncated = [], [], 0
  for text, label in examples:
    sequences.append(tokenize.encode_bytes(text, max_length))
    targets.append(label)
    num_truncated += len(text) > max_length
  inputs, lengths = tokenize.pad(sequences, max_length, np.uint16)
  return Split(inputs, lengths, np.array(targets, np.int32), num_truncated=num_truncated)


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `split` into (rest, held out): a seeded random `fraction` of its examples (at least one)
  is held out. Both keep the original example order. Their `num_truncated` is 0: which examples were
  truncated is not stored, and the loader's check has warned of them before the split.

  Raises:
    DataError: fewer than two examples.
  """
  if split.num_examples < 2:
    raise DataError(
      f'text: {split.num_examples} training review(s) are too few to hold out a '
      "validation split; use the option validation='test'."
    )
  order = np.random.default_rng(seed).permutation(split.num_examples)
  num_heldout = max(1, int(round(fraction * split.num_examples)))
  parts = np.sort(order[num_heldout:]), np.sort(order[:num_heldout])
  return tuple(
    Split(**{name: array[part] for name, array in split.arrays().items()}) for part in parts
  )


def _review_files(folder: Path) -> list[tuple[Path, int]]:
  """(file, label) of every review under `folder`'s class folders, which must each hold some.

  Raises:
    DataError: a class folder without reviews (an extraction cut short), or a `*.txt` in one that
      is not a file (a folder, a broken link), naming it; such an entry is refused, not skipped.
  """
  files = []
  for label, name in enumerate(CLASS_FOLDERS):
    found = sorted((folder / name).glob('*.txt'))
    if not found:
      raise DataError(
        f'text: {folder / name} holds no review (*.txt); extract aclImdb_v1.tar.gz '
        '(ai.stanford.edu/~amaas/data/sentiment) again.'
      )
    for path in found:
      if not path.is_file():
        raise DataError(
          f'text: {path} is not a review file (a folder or a broken link named *.txt); move it '
          f'out of {path.parent}.'
        )
    files += [(path, label) for path in found]
  return files


def _tfds_examples(shards: list[Path]) -> Iterable[tuple[bytes, int]]:
  features = {'text': 'bytes_list', 'label': 'int64_list'}
  for where, example in tfds_source.located_examples(shards, features):
    yield example['text'][0], parse_label(example['label'][0], NUM_CLASSES, where)


def load(
  data_dir: Path, *, max_length: int, validation: str, split_seed: int, cache: Cache
) -> TaskData:
  """Loads IMDb from `data_dir/aclImdb/` or from a prepared TFDS `imdb_reviews` in `data_dir`.

  `validation` and `split_seed` choose the validation split (module docstring).

  Raises:
    DataError: an unknown `validation`, no data in `data_dir`, or malformed or damaged data,
      naming the folder or TFDS shard (and the record).
  """
  if validation not in VALIDATION_SOURCES:
    raise DataError(
      f'text: option validation={validation!r}; expected one of {VALIDATION_SOURCES}.'
    )
  acl = data_dir / 'aclImdb'
  shards = {
    s: tfds_source.find_shards(data_dir, TFDS_NAME, s, TFDS_CONFIG) for s in ('train', 'test')
  }
  if acl.is_dir():
    require_files(
      [acl / s / c for s in ('train', 'test') for c in CLASS_FOLDERS],
      'Extract aclImdb_v1.tar.gz (ai.stanford.edu/~amaas/data/sentiment) here.',
      folders=True,
    )
    files = {s: _review_files(acl / s) for s in ('train', 'test')}
    # TFDS's imdb_reviews strips each review (`imdb_f.read().strip()`), so the two sources agree.
    build = lambda: splits_to_arrays(
      {
        s: build_split(((p.read_bytes().strip(), y) for p, y in fs), max_length)
        for s, fs in files.items()
      }
    )
    arrays = cache.load_or_build(
      f'text-acl-{max_length}',
      build,
      # 'stripped' keeps arrays cached before the reviews were stripped from being reused.
      params={'max_length': max_length, 'stripped': True},
      stat_files=[p for fs in files.values() for p, _ in fs],
    )
    sources = {s: f'{acl / s}/{{neg,pos}}/*.txt' for s in ('train', 'test')}
  elif all(shards.values()):
    build = lambda: splits_to_arrays(
      {s: build_split(_tfds_examples(paths), max_length) for s, paths in shards.items()}
    )
    arrays = cache.load_or_build(
      f'text-tfds-{max_length}',
      build,
      params={'max_length': max_length},
      content_files=[p for ps in shards.values() for p in ps],
    )
    sources = {s: f'{paths[0].parent}/{TFDS_NAME}-{s}.*' for s, paths in shards.items()}
  else:
    raise tfds_source.no_data_error(
      'text', TFDS_NAME, data_dir, f'{acl}/{{train,test}}/{{neg,pos}}/*.txt', 'aclImdb_v1.tar.gz'
    )
  splits = arrays_to_splits(arrays)
  # Validation is the test split (official LRA), or held out from the checked train split.
  data = task_data(
    'text',
    {**splits, 'validation': splits['test']},
    sources,
    f'max_length {max_length}',
    vocab_size=tokenize.BYTE_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    max_length=max_length,
  )
  if validation == 'heldout':
    train, heldout = hold_out(data.train, HELDOUT_FRACTION, split_seed)
    data = dataclasses.replace(data, train=train, validation=heldout)
  return data
