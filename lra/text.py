"""Text classification (IMDb reviews, byte level): UTF-8 bytes + 1, pad 0, vocab 257.

Sources, tried in order under `data_dir`:
  1. an extracted `aclImdb/` folder: `aclImdb/{train,test}/{neg,pos}/*.txt` (label neg 0, pos 1);
  2. a prepared TFDS `imdb_reviews` (array_record or tfrecord) in `data_dir` as a TFDS data dir.
As in the official pipeline, IMDb has no validation split and the test split serves as both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lra import tfds_source, tokenize
from lra.cache import Cache
from lra.core import Split, TaskData, arrays_to_splits, check_splits, parse_label, require_files
from lra.core import splits_to_arrays

NUM_CLASSES = 2
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


def _review_files(folder: Path) -> list[tuple[Path, int]]:
  return [(path, label) for label, name in enumerate(CLASS_FOLDERS)
          for path in sorted((folder / name).glob('*.txt'))]


def _tfds_examples(shards: list[Path]) -> Iterable[tuple[bytes, int]]:
  for i, example in enumerate(tfds_source.read_examples(shards)):
    yield example['text'][0], parse_label(example['label'][0], NUM_CLASSES, f'{TFDS_NAME} #{i}')


def load(data_dir: Path, *, max_length: int, cache: Cache) -> TaskData:
  """Loads IMDb from `data_dir/aclImdb/` or from a prepared TFDS `imdb_reviews` in `data_dir`."""
  acl = data_dir / 'aclImdb'
  shards = {s: tfds_source.find_shards(data_dir, TFDS_NAME, s, TFDS_CONFIG)
            for s in ('train', 'test')}
  if acl.is_dir():
    require_files([acl / s / c for s in ('train', 'test') for c in CLASS_FOLDERS],
                  'Extract aclImdb_v1.tar.gz (ai.stanford.edu/~amaas/data/sentiment) here.')
    files = {s: _review_files(acl / s) for s in ('train', 'test')}
    build = lambda: splits_to_arrays({s: build_split(((p.read_bytes(), y) for p, y in fs),
                                                     max_length) for s, fs in files.items()})
    arrays = cache.load_or_build(f'text-acl-{max_length}', build, params={'max_length': max_length},
                                 stat_files=[p for fs in files.values() for p, _ in fs])
    sources = {s: f'{acl / s}/{{neg,pos}}/*.txt' for s in ('train', 'test')}
  elif all(shards.values()):
    build = lambda: splits_to_arrays({s: build_split(_tfds_examples(paths), max_length)
                                      for s, paths in shards.items()})
    arrays = cache.load_or_build(f'text-tfds-{max_length}', build,
                                 params={'max_length': max_length},
                                 content_files=[p for ps in shards.values() for p in ps])
    sources = {s: f'{paths[0].parent}/{TFDS_NAME}-{s}.*' for s, paths in shards.items()}
  else:
    raise tfds_source.no_data_error('text', TFDS_NAME, data_dir,
                                    f'{acl}/{{train,test}}/{{neg,pos}}/*.txt', 'aclImdb_v1.tar.gz')
  splits = arrays_to_splits(arrays)
  check_splits('text', splits, sources, f'max_length {max_length}')
  return TaskData('text', splits['train'], splits['test'], splits['test'],
                  vocab_size=tokenize.BYTE_VOCAB_SIZE, num_classes=NUM_CLASSES,
                  max_length=max_length)
