"""Image classification (CIFAR-10 in grayscale): 1024 pixel tokens per image.

Sources, tried in order under `data_dir`:
  1. the official python pickles `cifar-10-batches-py/{data_batch_1..5,test_batch}`;
  2. a prepared TFDS `cifar10` (array_record or tfrecord) in `data_dir` as a TFDS data dir.
Splits follow LRA: train = first 90% of the training set, validation = last 10%, test = test,
in TFDS's record order, which LRA's `tfds.load('cifar10', split='train[:90%]')` slices. TFDS stores
a split sorted by the md5 of each example's key salted with the split's name (`tfds.core.hashing`,
`shuffle.Shuffler`), and its `cifar10` keys the training images by their index in
data_batch_1..5; the pickles are put in that order (`tfds_order`) before they are sliced, so both
sources give LRA's 45,000 / 5,000 images.
Grayscale matches `tf.image.rgb_to_grayscale`; intensities 0..255 are the tokens (vocab 256).
Every position is valid: `lengths` is always 1024, so the length mask masks nothing. The official
model's mask `inputs > 0`, which treats black pixels as padding, is the model's setting
(`ModelConfig.padding_mask='nonzero'`, the default of the Transformer in `configs/image.py`).
"""

from __future__ import annotations

import io
import pickle
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

NUM_CLASSES = 10
SIDE = 32
PICKLE_DIR = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCH = 'test_batch'
TFDS_NAME = 'cifar10'
TRAIN_FRACTION = 0.9


def image_split(gray: np.ndarray, labels: np.ndarray) -> Split:
  """Wraps [N, H, W] uint8 grayscale images and labels as a Split of [N, H*W] pixel tokens."""
  inputs = gray.reshape(len(gray), gray.shape[1] * gray.shape[2])  # -1 fails when N = 0
  return Split(inputs, np.full(len(gray), inputs.shape[1], np.int32), labels.astype(np.int32))


def tfds_order(num_examples: int, split: str = 'train') -> np.ndarray:
  """The record order of a TFDS split whose examples are keyed 0..num_examples-1 (`cifar10`): the
  keys sorted by TFDS's own hash of them, salted with the split's name (tensorflow_datasets
  `core/hashing.py` `Hasher`, as `core/split_builder.py` writes a split).

  Returns:
    `[num_examples]` int64, the example index stored at each position.
  """
  # Imported here: tensorflow_datasets is only needed to build this source's cache.
  from tensorflow_datasets.core import hashing

  return np.array(sorted(range(num_examples), key=hashing.Hasher(split).hash_key), np.int64)


#: The globals a CIFAR-10 python batch may name: numpy's array and scalar reconstruction, under
#: numpy 1's module names (the official files) and numpy 2's, and `_codecs.encode`, with which
#: Python 3's pickle protocol 2 writes bytes. Reading a batch imports and calls nothing else.
_PICKLE_GLOBALS = frozenset(
  [('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')]
  + [(f'numpy.{core}.multiarray', 'scalar') for core in ('core', '_core')]
  + [(f'numpy.{core}.multiarray', '_reconstruct') for core in ('core', '_core')]
  + [(f'numpy.{core}.numeric', '_frombuffer') for core in ('core', '_core')]
)


class _BatchUnpickler(pickle.Unpickler):
  """Unpickles builtins and the numpy arrays of `_PICKLE_GLOBALS` only."""

  def find_class(self, module: str, name: str) -> object:
    if (module, name) not in _PICKLE_GLOBALS:
      raise pickle.UnpicklingError(f'{module}.{name} is not part of a CIFAR-10 python batch')
    return super().find_class(module, name)


def read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 python batch: returns [N, 32, 32, 3] uint8 RGB images and [N] labels.

  The batch is a pickled dict whose b'data' is an [N, 3072] integer array of pixels in 0..255 and
  whose b'labels' is a list of N labels in 0..9; the pickle may name no global but numpy's array
  reconstruction (`_PICKLE_GLOBALS`).

  Raises:
    DataError: a file that is not such a batch, naming it (and the label).
  """
  with open(path, 'rb') as f:
    try:
      batch = _BatchUnpickler(f, encoding='bytes').load()
    # Bytes that are not a pickle fail in many ways: UnpicklingError, EOFError, ValueError,
    # UnicodeDecodeError, MemoryError, ...
    except Exception as e:
      raise DataError(f'{path}: not a CIFAR-10 python batch ({e!r})') from None
  if not isinstance(batch, dict) or not {b'data', b'labels'} <= batch.keys():
    raise DataError(
      f"{path}: not a CIFAR-10 python batch (expected a dict with b'data' and b'labels', got "
      f'{list(batch) if isinstance(batch, dict) else type(batch).__name__})'
    )
  data, labels = batch[b'data'], batch[b'labels']
  if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
    got = f'shape {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
    raise DataError(f"{path}: expected b'data' to be an array of shape [N, 3072], got {got}")
  listed = isinstance(labels, (list, tuple)) or isinstance(labels, np.ndarray) and labels.ndim == 1
  if not listed:
    raise DataError(f"{path}: expected b'labels' to be a list of labels, got {labels!r:.80}")
  if len(labels) != len(data):
    raise DataError(f'{path}: {len(labels)} labels for {len(data)} images')
  if data.size and (data.dtype.kind not in 'iu' or data.min() < 0 or data.max() > 255):
    raise DataError(f'{path}: pixels must be integers in 0..255 (got {data.dtype})')
  labels = np.array(
    [parse_label(label, NUM_CLASSES, f'{path} label #{i}') for i, label in enumerate(labels)],
    np.int64,
  )
  return data.astype(np.uint8).reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def _read_tfds(shards: list[Path]) -> tuple[np.ndarray, np.ndarray]:
  from PIL import Image  # Imported here: only TFDS images are PNG-encoded.

  images, labels = [], []
  features = {'image': 'bytes_list', 'label': 'int64_list'}
  for where, example in tfds_source.located_examples(shards, features):
    try:
      with Image.open(io.BytesIO(example['image'][0])) as encoded:
        rgb = np.asarray(encoded.convert('RGB'))
    except OSError as e:  # PIL's errors for bytes that are not a (whole) image.
      raise DataError(f'{where}: cannot decode the image ({e})') from None
    if rgb.shape != (SIDE, SIDE, 3):
      raise DataError(f'{where}: expected a {SIDE}x{SIDE} image, got shape {rgb.shape}')
    images.append(rgb)
    labels.append(parse_label(example['label'][0], NUM_CLASSES, where))
  # No images (empty shards) load as empty splits, which the task's checks refuse by name.
  stacked = np.stack(images) if images else np.zeros((0, SIDE, SIDE, 3), np.uint8)
  return stacked, np.array(labels, np.int64)


def _to_splits(
  train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
  """Applies grayscale and the 90/10 train/validation slice (rounded as TFDS `train[:90%]`)."""
  num_train = round(TRAIN_FRACTION * len(train[0]))
  gray, labels = tokenize.rgb_to_grayscale(train[0]), train[1]
  return splits_to_arrays(
    {
      'train': image_split(gray[:num_train], labels[:num_train]),
      'validation': image_split(gray[num_train:], labels[num_train:]),
      'test': image_split(tokenize.rgb_to_grayscale(test[0]), test[1]),
    }
  )


def _sources(train: str, test: str) -> dict[str, str]:
  """Where each split comes from, for messages: the train/validation slices and the test files."""
  return {
    'train': f'the first {TRAIN_FRACTION:.0%} of {train} in TFDS record order',
    'validation': f'the last {1 - TRAIN_FRACTION:.0%} of {train} in TFDS record order',
    'test': test,
  }


def load(data_dir: Path, *, max_length: int, cache: Cache) -> TaskData:
  """Loads grayscale CIFAR-10 from `data_dir/cifar-10-batches-py/` or a prepared TFDS `cifar10`.

  Raises:
    DataError: a `max_length` other than 1024, no data in `data_dir`, or a malformed or damaged
      batch file or TFDS shard, naming the file (and the record).
  """
  if max_length != SIDE * SIDE:
    raise DataError(f'image: max_length must be {SIDE * SIDE} (32x32 pixels), got {max_length}')
  pickles = data_dir / PICKLE_DIR
  shards = {s: tfds_source.find_shards(data_dir, TFDS_NAME, s) for s in ('train', 'test')}
  if pickles.is_dir():
    paths = [pickles / name for name in TRAIN_BATCHES + (TEST_BATCH,)]
    require_files(paths, 'Extract cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html).')

    def build():
      images, labels = zip(*(read_pickle(p) for p in paths[:-1]))
      order = tfds_order(sum(map(len, labels)))
      train = np.concatenate(images)[order], np.concatenate(labels)[order]
      return _to_splits(train, read_pickle(paths[-1]))

    # 'order' keeps arrays cached before the pickles took TFDS's order from being reused.
    arrays = cache.load_or_build(
      'image-pickle', build, params={'order': 'tfds'}, content_files=paths
    )
    sources = _sources(f'{pickles}/{{{",".join(TRAIN_BATCHES)}}}', str(paths[-1]))
  elif all(shards.values()):
    arrays = cache.load_or_build(
      'image-tfds',
      lambda: _to_splits(_read_tfds(shards['train']), _read_tfds(shards['test'])),
      params={},
      content_files=[p for ps in shards.values() for p in ps],
    )
    sources = _sources(
      f'{shards["train"][0].parent}/{TFDS_NAME}-train.*',
      f'{shards["test"][0].parent}/{TFDS_NAME}-test.*',
    )
  else:
    raise tfds_source.no_data_error(
      'image',
      TFDS_NAME,
      data_dir,
      f'{pickles}/{{{",".join(TRAIN_BATCHES)},{TEST_BATCH}}}',
      'cifar-10-python.tar.gz',
    )
  return task_data(
    'image',
    arrays_to_splits(arrays),
    sources,
    f'max_length {max_length}',
    vocab_size=tokenize.PIXEL_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    max_length=max_length,
  )
