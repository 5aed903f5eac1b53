"""Tests of the Text, Retrieval and Image loaders, the TFDS shard reader, the cache and the
synthetic stand-ins, on small files written in the official formats."""

import hashlib
import io
import json
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

import lra
from lra import image, synthetic, tfds_source, tokenize

# RGB pixels and their tf.image.rgb_to_grayscale values, computed by hand:
# floor((0.2989 r + 0.5870 g + 0.1140 b) / 255 * 255.5).
PIXELS = np.array(
  [[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [0, 0, 0]], np.uint8
)
GRAY = [255, 76, 149, 29, 18, 0]


def example_proto(**features) -> bytes:
  example = tf_example_pb2.Example()
  for key, value in features.items():
    feature = example.features.feature[key]
    if isinstance(value, bytes):
      feature.bytes_list.value.append(value)
    else:
      feature.int64_list.value.append(value)
  return example.SerializeToString()


def kindless_text() -> bytes:
  """An Example whose 'text' feature has no kind (no list) set."""
  example = tf_example_pb2.Example.FromString(example_proto(label=1))
  example.features.feature['text'].SetInParent()
  return example.SerializeToString()


def write_shard(path: Path, records: list[bytes]) -> None:
  """Writes array_record or (with zero checksums, which the reader does not check) tfrecord."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if '.array_record-' in path.name:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), 'group_size:1')
    for record in records:
      writer.write(record)
    writer.close()
  else:
    path.write_bytes(
      b''.join(struct.pack('<Q', len(r)) + b'\0' * 4 + r + b'\0' * 4 for r in records)
    )


def cifar_image(size: int = 32) -> np.ndarray:
  image = np.zeros((size, size, 3), np.uint8)
  image[0, : len(PIXELS)] = PIXELS
  return image


def png_bytes(pixels: np.ndarray) -> bytes:
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  return png.getvalue()


def test_text_from_acl_folder_exact_bytes(tmp_path):
  for split in ('train', 'test'):
    # Leading and trailing whitespace is stripped, as TFDS's imdb_reviews does.
    for label, review in (('neg', '  Bad.\n'), ('pos', 'Très <br />bon')):
      folder = tmp_path / 'aclImdb' / split / label
      folder.mkdir(parents=True)
      (folder / '0_1.txt').write_text(review, encoding='utf-8')
  data = lra.load_task('text', tmp_path, max_length=8, cache=False, validation='test')
  assert (data.vocab_size, data.num_classes, data.dual) == (257, 2, False)
  expected = [
    [ord(c) + 1 for c in 'Bad.'] + [0] * 4,
    [
      ord('T') + 1,
      ord('r') + 1,
      0xC3 + 1,
      0xA8 + 1,
      ord('s') + 1,
      ord(' ') + 1,
      ord('<') + 1,
      ord('b') + 1,
    ],
  ]
  for split in (data.train, data.validation, data.test):
    np.testing.assert_array_equal(split.inputs, expected)
    np.testing.assert_array_equal(split.lengths, [4, 8])
    np.testing.assert_array_equal(split.targets, [0, 1])


def test_text_class_folder_without_reviews_is_named(tmp_path):
  for split in ('train', 'test'):
    for label in ('neg', 'pos'):
      (tmp_path / 'aclImdb' / split / label).mkdir(parents=True)
      if (split, label) != ('test', 'pos'):
        (tmp_path / 'aclImdb' / split / label / '0_1.txt').write_text('ok')
  with pytest.raises(lra.DataError, match=r'aclImdb/test/pos holds no review'):
    lra.load_task('text', tmp_path, max_length=8, cache=False, validation='test')


@pytest.mark.parametrize('kind', ['folder', 'broken link'])
def test_text_review_that_is_not_a_file_is_named(tmp_path, kind):
  for split in ('train', 'test'):
    for label in ('neg', 'pos'):
      (tmp_path / 'aclImdb' / split / label).mkdir(parents=True)
      (tmp_path / 'aclImdb' / split / label / '0_1.txt').write_text('ok')
  odd = tmp_path / 'aclImdb' / 'train' / 'pos' / '1_9.txt'
  if kind == 'folder':
    odd.mkdir()
  else:
    odd.symlink_to(tmp_path / 'missing.txt')
  with pytest.raises(lra.DataError, match=f'text: {odd} is not a review file'):
    lra.load_task('text', tmp_path, max_length=8, cache=False, validation='test')


def test_retrieval_two_documents_and_quotes(tmp_path):
  rows = '1.0\tid1\tid2\t"ab\tc\n0\tid3\tid4\tx\t\n'
  for name in ('new_aan_pairs.train.tsv', 'new_aan_pairs.eval.tsv', 'new_aan_pairs.test.tsv'):
    (tmp_path / name).write_text(rows)
  data = lra.load_task('retrieval', tmp_path, max_length=3, cache=False)
  assert data.dual and data.vocab_size == 257
  np.testing.assert_array_equal(
    data.test.inputs, [[ord('"') + 1, ord('a') + 1, ord('b') + 1], [ord('x') + 1, 0, 0]]
  )
  np.testing.assert_array_equal(data.test.inputs2, [[ord('c') + 1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(data.test.lengths, [3, 1])
  np.testing.assert_array_equal(data.test.lengths2, [1, 0])
  np.testing.assert_array_equal(data.test.targets, [1, 0])
  batch = next(lra.train_batches(data.train, 2, seed=0))
  assert set(batch) == {'inputs', 'lengths', 'targets', 'inputs2', 'lengths2'}


@pytest.mark.parametrize(
  'row, message',
  [
    ('1\ta\tb\tc\n', ':2: expected 5'),
    ('2\ta\tb\tc\td\n', ':2: label'),
    ('yes\ta\tb\tc\td\n', ':2: label'),
  ],
)
def test_retrieval_malformed_rows(tmp_path, row, message):
  for name in ('new_aan_pairs.train.tsv', 'new_aan_pairs.eval.tsv', 'new_aan_pairs.test.tsv'):
    (tmp_path / name).write_text('1\ta\tb\tc\td\n' + row)
  with pytest.raises(lra.DataError, match=f'new_aan_pairs.train.tsv{message}'):
    lra.load_task('retrieval', tmp_path, cache=False)


def test_grayscale_matches_tensorflow_by_hand():
  np.testing.assert_array_equal(tokenize.rgb_to_grayscale(PIXELS), GRAY)


def test_id_dtype_holds_every_id_of_the_vocabulary():
  # Ids lie in [0, vocab_size): uint16 holds 65536 of them, one more needs uint32.
  assert tokenize.id_dtype(1 << 16) is np.uint16
  assert tokenize.id_dtype((1 << 16) + 1) is np.uint32
  for vocab_size in (2, 1 << 16, (1 << 16) + 1, 1 << 17):
    assert np.iinfo(tokenize.id_dtype(vocab_size)).max >= vocab_size - 1


def test_image_from_cifar_pickles(tmp_path):
  root = tmp_path / 'cifar-10-batches-py'
  root.mkdir()
  rgb = cifar_image()
  data = np.tile(rgb.transpose(2, 0, 1).reshape(1, -1), (2, 1))  # CIFAR rows: R plane, G, B.
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    with open(root / name, 'wb') as f:
      pickle.dump({b'data': data, b'labels': [3, 9]}, f)
  task = lra.load_task('image', tmp_path, cache=False)
  assert (task.vocab_size, task.num_classes, task.max_length) == (256, 10, 1024)
  sizes = (task.train.num_examples, task.validation.num_examples, task.test.num_examples)
  assert sizes == (9, 1, 2)
  assert task.train.inputs.shape == (9, 1024) and task.train.inputs.dtype == np.uint8
  np.testing.assert_array_equal(task.test.inputs[0, :8], GRAY + [0, 0])
  np.testing.assert_array_equal(task.test.lengths, [1024, 1024])
  np.testing.assert_array_equal(task.test.targets, [3, 9])
  with pytest.raises(lra.DataError, match='max_length must be 1024'):
    lra.load_task('image', tmp_path, max_length=512)


def test_tfds_order_sorts_the_keys_by_their_salted_md5():
  # TFDS's scheme written out: md5 of the split's name, then the decimal key, as an integer.
  md5 = lambda key: int(hashlib.md5(f'train{key}'.encode()).hexdigest(), 16)
  np.testing.assert_array_equal(image.tfds_order(500), sorted(range(500), key=md5))
  assert list(image.tfds_order(500, 'test')) != sorted(range(500), key=md5)


def test_cifar_pickles_are_split_in_tfds_order(tmp_path):
  # Ten training images whose first pixel (red plane) is their index in data_batch_1..5.
  root = tmp_path / 'cifar-10-batches-py'
  root.mkdir()
  for batch in range(5):
    data = np.zeros((2, 3072), np.uint8)
    data[:, 0] = [2 * batch, 2 * batch + 1]
    with open(root / f'data_batch_{batch + 1}', 'wb') as f:
      pickle.dump({b'data': data, b'labels': [batch, batch]}, f)
  with open(root / 'test_batch', 'wb') as f:
    pickle.dump({b'data': np.zeros((1, 3072), np.uint8), b'labels': [0]}, f)
  task = lra.load_task('image', tmp_path, cache=False)
  order = image.tfds_order(10)
  assert sorted(order) == list(range(10)) and list(order) != list(range(10))
  red = tokenize.rgb_to_grayscale(np.stack([np.arange(10), 0 * order, 0 * order], -1)[:, None])
  np.testing.assert_array_equal(task.train.inputs[:, 0], red[order[:9], 0])
  np.testing.assert_array_equal(task.validation.inputs[:, 0], red[order[9:], 0])
  np.testing.assert_array_equal(task.validation.targets, order[9:] // 2)


@pytest.mark.parametrize(
  'pixels', [np.full((1, 3072), 300), np.full((1, 3072), -1), np.full((1, 3072), 0.5)]
)
def test_cifar_pixels_outside_a_byte_are_named(tmp_path, pixels):
  synthetic.write_image(tmp_path, 10, seed=0)
  with open(tmp_path / 'cifar-10-batches-py' / 'test_batch', 'wb') as f:
    pickle.dump({b'data': pixels, b'labels': [1]}, f)
  with pytest.raises(lra.DataError, match='test_batch: pixels must be integers in 0..255'):
    lra.load_task('image', tmp_path, cache=False)


def test_out_of_range_image_label(tmp_path):
  synthetic.write_image(tmp_path, 10, seed=0)
  with open(tmp_path / 'cifar-10-batches-py' / 'test_batch', 'wb') as f:
    pickle.dump({b'data': np.zeros((1, 3072), np.uint8), b'labels': [10]}, f)
  with pytest.raises(lra.DataError, match="test_batch label #0: label '10' is out of range"):
    lra.load_task('image', tmp_path, cache=False)


def official_batch(pixels: bytes, label: int) -> bytes:
  """A one-image batch pickled as the official files are: Python 2's protocol 2, numpy 1's names."""
  return (
    b'\x80\x02}q\x01(U\x06labelsq\x02]q\x03K' + bytes([label]) + b'aU\x04dataq\x04'
    b'cnumpy.core.multiarray\n_reconstruct\nq\x05cnumpy\nndarray\nq\x06K\x00\x85U\x01b\x87Rq\x07'
    b'(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\t'
    b'(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T'
    + struct.pack('<I', len(pixels))
    + pixels
    + b'tbu.'
  )


@pytest.mark.parametrize('protocol', ['official', 2, 4, 5])
def test_cifar_batch_of_the_official_files_or_any_pickle_protocol(tmp_path, protocol):
  synthetic.write_image(tmp_path, 10, seed=0)
  pixels = cifar_image().transpose(2, 0, 1).reshape(1, -1)
  path = tmp_path / 'cifar-10-batches-py' / 'test_batch'
  if protocol == 'official':
    path.write_bytes(official_batch(pixels.tobytes(), 7))
  else:
    path.write_bytes(pickle.dumps({b'data': pixels, b'labels': [np.int64(7)]}, protocol))
  task = lra.load_task('image', tmp_path, cache=False)
  np.testing.assert_array_equal(task.test.inputs[0, :6], GRAY)
  np.testing.assert_array_equal(task.test.targets, [7])


@pytest.mark.parametrize(
  'content, message',
  [
    (b'cnosuchmodule\nthing\n.', 'nosuchmodule.thing is not part of a CIFAR-10 python batch'),
    (b'cnumpy\nnosuch\n.', 'numpy.nosuch is not part of a CIFAR-10 python batch'),
    (b'X\x02\x00\x00\x00\xff\xfe.', 'not a CIFAR-10 python batch (UnicodeDecodeError('),
    (b'I12x\n.', 'not a CIFAR-10 python batch (ValueError('),
    (b'\x80\x04\x8e' + struct.pack('<Q', 2**62), 'not a CIFAR-10 python batch (MemoryError('),
    (b'\x80\x02cnumpy\ndtype\nU\x02zz\x85R.', 'not a CIFAR-10 python batch (TypeError('),
    (pickle.dumps([1]), "expected a dict with b'data' and b'labels', got list"),
    (pickle.dumps({'data': 0, 'labels': 0}), "b'data' and b'labels', got ['data', 'labels']"),
    (
      pickle.dumps({b'data': [[0] * 3072], b'labels': [1]}),
      'to be an array of shape [N, 3072], got list',
    ),
    (
      pickle.dumps({b'data': np.zeros((1, 3072), np.uint8), b'labels': None}),
      "expected b'labels' to be a list of labels, got None",
    ),
    (pickle.dumps({b'data': np.zeros((2, 3072), np.uint8), b'labels': [1]}), '1 labels for 2'),
  ],
  ids=[
    'unknown module',
    'unknown global',
    'not utf-8',
    'bad int',
    'huge bytes',
    'bad dtype',
    'list',
    'str keys',
    'data list',
    'labels None',
    'too few labels',
  ],
)
def test_damaged_cifar_batch_is_named(tmp_path, content, message):
  synthetic.write_image(tmp_path, 10, seed=0)
  path = tmp_path / 'cifar-10-batches-py' / 'data_batch_2'
  path.write_bytes(content)
  with pytest.raises(lra.DataError, match=re.escape(f'{path}: ') + '.*' + re.escape(message)):
    lra.load_task('image', tmp_path, cache=False)


class _Mkdir:
  """Pickles as a call of os.mkdir(path)."""

  def __init__(self, path: Path):
    self.path = path

  def __reduce__(self):
    return os.mkdir, (str(self.path),)


def test_cifar_batch_pickle_calls_nothing_but_numpy(tmp_path):
  synthetic.write_image(tmp_path, 10, seed=0)
  target = tmp_path / 'made_by_the_pickle'
  with open(tmp_path / 'cifar-10-batches-py' / 'test_batch', 'wb') as f:
    pickle.dump({b'data': _Mkdir(target), b'labels': [1]}, f)
  with pytest.raises(lra.DataError, match='test_batch: .*mkdir is not part of a CIFAR-10'):
    lra.load_task('image', tmp_path, cache=False)
  assert not target.exists()


def test_tfds_shards_array_record_and_tfrecord(tmp_path):
  imdb = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  write_shard(
    imdb / 'imdb_reviews-train.array_record-00000-of-00001',
    [example_proto(text=b'ab', label=1), example_proto(text=b'c', label=0)],
  )
  write_shard(
    imdb / 'imdb_reviews-test.tfrecord-00000-of-00001', [example_proto(text=b'z', label=1)]
  )
  data = lra.load_task('text', tmp_path, max_length=3, cache=False, validation='test')
  np.testing.assert_array_equal(data.train.inputs, [[98, 99, 0], [100, 0, 0]])
  np.testing.assert_array_equal(data.train.targets, [1, 0])
  np.testing.assert_array_equal(data.test.inputs, [[123, 0, 0]])
  cifar = tmp_path / 'cifar10' / '3.0.2'
  write_shard(
    cifar / 'cifar10-train.array_record-00000-of-00001',
    [example_proto(id=b'x', image=png_bytes(cifar_image()), label=i) for i in range(10)],
  )
  write_shard(
    cifar / 'cifar10-test.array_record-00000-of-00001',
    [example_proto(id=b'y', image=png_bytes(cifar_image()), label=4)],
  )
  task = lra.load_task('image', tmp_path, cache=False)
  np.testing.assert_array_equal(task.validation.targets, [9])
  np.testing.assert_array_equal(task.test.inputs[0, :6], GRAY)


def test_empty_image_tfds_shard_is_an_empty_split(tmp_path):
  cifar = tmp_path / 'cifar10' / '3.0.2'
  write_shard(cifar / 'cifar10-train.tfrecord-00000-of-00001', [])
  good = example_proto(id=b'x', image=png_bytes(cifar_image()), label=1)
  write_shard(cifar / 'cifar10-test.tfrecord-00000-of-00001', [good])
  with pytest.raises(lra.DataError, match='cifar10-train.* in TFDS .*: no examples for the image'):
    lra.load_task('image', tmp_path, cache=False)


def test_image_tfds_train_shards_without_test_shards_is_no_data(tmp_path):
  # TFDS prepared only the train split (e.g. an interrupted preparation): not a loadable dataset.
  good = example_proto(id=b'x', image=png_bytes(cifar_image()), label=1)
  write_shard(tmp_path / 'cifar10' / '3.0.2' / 'cifar10-train.tfrecord-00000-of-00001', [good])
  with pytest.raises(lra.DataError, match=re.escape(f'No cifar10 data in {tmp_path}.')) as info:
    lra.load_task('image', tmp_path, cache=False)
  assert tfds_source.prepare_command('cifar10', tmp_path) in str(info.value)


@pytest.mark.parametrize('task, name', [('text', 'imdb_reviews'), ('image', 'cifar10')])
def test_tfds_not_prepared_says_how_and_does_not_download(tmp_path, task, name):
  with pytest.raises(lra.DataError) as info:
    lra.load_task(task, tmp_path)
  message = str(info.value)
  assert tfds_source.prepare_command(name, tmp_path) in message
  assert f'tfds.builder("{name}"' in message and 'file_format="array_record"' in message
  assert f'python -m lra.synthetic --task {task}' in message
  assert not (tmp_path / name).exists() and not (tmp_path / 'downloads').exists()


def test_missing_retrieval_files_named(tmp_path):
  with pytest.raises(lra.DataError) as info:
    lra.load_task('retrieval', tmp_path / 'aan')
  for name in (
    'new_aan_pairs.train.tsv',
    'new_aan_pairs.eval.tsv',
    'new_aan_pairs.test.tsv',
    'python -m lra.synthetic --task retrieval',
  ):
    assert name in str(info.value)


def test_cache_serves_mmap_and_rereads_changed_sources(tmp_path):
  synthetic.write_retrieval(tmp_path, 8, seed=0)
  first = lra.load_task('retrieval', tmp_path, max_length=64)
  assert not isinstance(first.train.inputs, np.memmap)
  second = lra.load_task('retrieval', tmp_path, max_length=64)
  assert isinstance(second.train.inputs, np.memmap)
  np.testing.assert_array_equal(first.train.inputs2, second.train.inputs2)
  path = tmp_path / 'new_aan_pairs.test.tsv'
  path.write_text(path.read_text().replace('SYNTHETIC', 'synthetic', 1))
  third = lra.load_task('retrieval', tmp_path, max_length=64)
  assert third.test.inputs[0, 0] == ord('s') + 1 and second.test.inputs[0, 0] == ord('S') + 1
  assert len(list((tmp_path / 'lra_cache').iterdir())) == 1
  other = lra.load_task('retrieval', tmp_path, max_length=64, cache_dir=str(tmp_path / 'elsewhere'))
  assert (tmp_path / 'elsewhere').is_dir() and other.train.num_examples == 8


def test_a_source_rewritten_at_the_same_size_changes_the_cache_key(tmp_path):
  """Stat files (the many images and reviews) are hashed by size and modification time: a file
  rewritten with other bytes of the same size is a new source."""
  path = tmp_path / 'review.txt'
  path.write_bytes(b'good')
  before = lra.cache.fingerprint({}, stat_files=[path])
  assert lra.cache.fingerprint({}, stat_files=[path]) == before
  mtime = path.stat().st_mtime_ns
  path.write_bytes(b'poor')
  os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # Even where mtimes are coarse.
  assert path.stat().st_size == 4
  assert lra.cache.fingerprint({}, stat_files=[path]) != before


@pytest.mark.parametrize('task', synthetic.TASKS)
def test_synthetic_stand_ins_load_and_are_learnable(tmp_path, task):
  synthetic.main(['--task', task, '--output_dir', str(tmp_path), '--num_examples', '40'])
  data = lra.load_task(task, tmp_path, **({} if task == 'image' else {'max_length': 256}))
  # Image and Text hold out 10% of the training examples for validation.
  assert data.train.num_examples == (40 if task == 'retrieval' else 36)
  assert data.test.num_examples == 10

  # The label is visible to a nearest-centroid classifier on token histograms.
  def histograms(split):
    counts = np.stack([np.bincount(row, minlength=data.vocab_size) for row in split.inputs])
    return counts[:, 1:] / counts[:, 1:].sum(axis=1, keepdims=True)

  train = histograms(data.train)
  centroids = np.stack(
    [train[data.train.targets == c].mean(axis=0) for c in range(data.num_classes)]
  )
  test = histograms(data.test)
  predictions = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert np.mean(predictions == data.test.targets) >= 0.9


def test_tfrecord_frames_refuse_a_truncated_file_or_end_at_a_torn_record(tmp_path):
  path = tmp_path / 'x.tfrecord'
  frames = [b'first', b'second record']
  framed = b''.join(struct.pack('<Q', len(f)) + b'\0' * 4 + f + b'\0' * 4 for f in frames)
  for torn in (framed[:-2], framed + b'\x05\0\0'):  # Ends inside the last frame / a header.
    path.write_bytes(torn)
    expected = frames if torn.startswith(framed) else frames[:1]
    assert list(tfds_source.tfrecord_frames(path, torn_ok=True)) == expected
    with pytest.raises(lra.DataError, match=f'{path}: truncated or corrupt TFRecord file'):
      list(tfds_source.tfrecord_frames(path))
  path.write_bytes(framed)
  assert list(tfds_source.tfrecord_frames(path)) == frames


def test_tfrecord_frames_check_a_corrupt_length_against_the_file_size(tmp_path):
  path = tmp_path / 'x.tfrecord'
  first = struct.pack('<Q', 5) + b'\0' * 4 + b'first' + b'\0' * 4
  path.write_bytes(first + struct.pack('<Q', 2**62) + b'\0' * 12)  # Would need 4 EiB of memory.
  assert list(tfds_source.tfrecord_frames(path, torn_ok=True)) == [b'first']
  with pytest.raises(lra.DataError, match=f'{path}: truncated or corrupt TFRecord file .record #1'):
    list(tfds_source.tfrecord_frames(path))


@pytest.mark.parametrize(
  'fmt, content, message',
  [
    ('array_record', b'junk', ': not a readable ArrayRecord file'),
    ('tfrecord', struct.pack('<Q', 2**62) + b'\0' * 12, ': truncated or corrupt TFRecord file'),
    ('tfrecord', [b'junk payload'], ' record #0: not a serialised tf.train.Example'),
    (
      'tfrecord',
      [example_proto(text=b'ok', label=1), example_proto(label=1)],
      " record #1: no 'text' feature of kind bytes_list",
    ),
    ('tfrecord', [example_proto(text=3, label=1)], " record #0: no 'text' feature"),
    ('tfrecord', [kindless_text()], " record #0: no 'text' feature"),
    ('tfrecord', [example_proto(text=b'ok')], " record #0: no 'label' feature"),
    ('tfrecord', [example_proto(text=b'ok', label=5)], " record #0: label '5' is out of range"),
  ],
  ids=[
    'junk',
    'corrupt length',
    'junk record',
    'no text',
    'int text',
    'kindless text',
    'no label',
    'bad label',
  ],
)
def test_damaged_text_tfds_shard_is_named(tmp_path, fmt, content, message):
  """`content`: the shard's bytes, or the records to write to it."""
  imdb = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  write_shard(
    imdb / 'imdb_reviews-test.tfrecord-00000-of-00001', [example_proto(text=b'z', label=1)]
  )
  shard = imdb / f'imdb_reviews-train.{fmt}-00000-of-00001'
  if isinstance(content, bytes):
    shard.write_bytes(content)
  else:
    write_shard(shard, content)
  with pytest.raises(lra.DataError, match=re.escape(f'{shard}{message}')):
    lra.load_task('text', tmp_path, max_length=3, cache=False, validation='test')


@pytest.mark.parametrize(
  'encoded, label, message',
  [
    (b'junk', 1, 'cannot decode the image'),
    (png_bytes(cifar_image(16)), 1, r'expected a 32x32 image, got shape \(16, 16, 3\)'),
    (png_bytes(cifar_image()), 10, "label '10' is out of range"),
  ],
  ids=['junk', '16x16', 'bad label'],
)
def test_damaged_image_tfds_record_is_named(tmp_path, encoded, label, message):
  cifar = tmp_path / 'cifar10' / '3.0.2'
  good = example_proto(id=b'x', image=png_bytes(cifar_image()), label=1)
  write_shard(cifar / 'cifar10-test.tfrecord-00000-of-00001', [good])
  shard = cifar / 'cifar10-train.tfrecord-00000-of-00001'
  write_shard(shard, [good, example_proto(id=b'y', image=encoded, label=label)])
  with pytest.raises(lra.DataError, match=f'{re.escape(str(shard))} record #1: {message}'):
    lra.load_task('image', tmp_path, cache=False)


def test_the_tfds_prepare_command_runs_in_a_shell_for_any_folder_name(tmp_path):
  # A stand-in tensorflow_datasets records what the printed command asks of it.
  fake = tmp_path / 'fake'
  fake.mkdir()
  (fake / 'tensorflow_datasets.py').write_text(
    'import json, os\n'
    'class builder:\n'
    '  def __init__(self, name, data_dir):\n'
    '    self.asked = {"name": name, "data_dir": data_dir}\n'
    '  def download_and_prepare(self, file_format):\n'
    '    with open(os.environ["ASKED"], "w") as f:\n'
    '      json.dump({**self.asked, "file_format": file_format}, f)\n'
  )
  data_dir = tmp_path / 'it\'s "my" $HOME `data` \\ ü'
  command = tfds_source.prepare_command('imdb_reviews', data_dir)
  assert command.startswith('python -c ')
  asked = tmp_path / 'asked.json'
  env = {**os.environ, 'PYTHONPATH': str(fake), 'ASKED': str(asked)}
  executable = shlex.quote(sys.executable)
  subprocess.run(['sh', '-c', executable + command.removeprefix('python')], env=env, check=True)
  assert json.loads(asked.read_text()) == {
    'name': 'imdb_reviews',
    'data_dir': str(data_dir),
    'file_format': 'array_record',
  }


def write_reviews(root: Path, reviews: dict[str, list[tuple[str, str]]]) -> None:
  """`aclImdb/<split>/<label>/<i>_1.txt` files from split -> [(label folder, review)]."""
  for split, items in reviews.items():
    for label in ('neg', 'pos'):
      (root / 'aclImdb' / split / label).mkdir(parents=True, exist_ok=True)
    for i, (label, review) in enumerate(items):
      (root / 'aclImdb' / split / label / f'{i}_1.txt').write_text(review)


def test_text_counts_as_truncated_only_reviews_longer_than_max_length(tmp_path):
  """A review of exactly max_length bytes fits; one byte more is truncated."""
  reviews = [('neg', 'x' * 8), ('pos', 'y' * 9), ('pos', 'z' * 7)]
  write_reviews(tmp_path, {'train': reviews, 'test': reviews})
  data = lra.load_task('text', tmp_path, max_length=8, cache=False, validation='test')
  assert data.train.num_truncated == 1 and data.test.num_truncated == 1


def test_text_validation_test_is_the_test_split_not_train(tmp_path):
  """With validation='test' the validation split is the test reviews, all training reviews kept."""
  write_reviews(
    tmp_path,
    {'train': [('neg', 'aa'), ('pos', 'bb'), ('pos', 'cc')], 'test': [('neg', 'zz'), ('pos', 'y')]},
  )
  data = lra.load_task('text', tmp_path, max_length=4, cache=False, validation='test')
  assert data.train.num_examples == 3
  np.testing.assert_array_equal(data.validation.inputs, data.test.inputs)
  np.testing.assert_array_equal(data.validation.targets, data.test.targets)
  with pytest.raises(lra.DataError, match="option validation='dev'"):
    lra.load_task('text', tmp_path, max_length=4, cache=False, validation='dev')


def test_text_heldout_validation_follows_the_split_seed_and_keeps_the_order(tmp_path):
  """The held-out split is `hold_out`'s for the given `split_seed`; both parts keep the original
  example order and together are the training reviews."""
  from lra import text

  write_reviews(
    tmp_path,
    {
      'train': [('pos' if i % 3 else 'neg', f'r{i:02d}') for i in range(30)],
      'test': [('neg', 't'), ('pos', 'u')],
    },
  )

  full = lra.load_task('text', tmp_path, max_length=4, cache=False, validation='test').train
  positions = {row.tobytes(): i for i, row in enumerate(full.inputs)}
  heldout = set()
  for seed in range(4):
    data = lra.load_task(
      'text', tmp_path, max_length=4, cache=False, validation='heldout', split_seed=seed
    )
    rest, held = text.hold_out(full, text.HELDOUT_FRACTION, seed)
    np.testing.assert_array_equal(data.validation.inputs, held.inputs)
    np.testing.assert_array_equal(data.train.inputs, rest.inputs)
    assert held.num_examples == 3 and rest.num_examples == 27
    heldout.add(held.inputs.tobytes())
    for part in (rest, held):  # Rows in the original order.
      order = [positions[row.tobytes()] for row in part.inputs]
      assert order == sorted(order)
    together = np.concatenate([rest.inputs, held.inputs])
    assert sorted(map(bytes, together)) == sorted(map(bytes, full.inputs))
  assert len(heldout) > 1


def test_text_hold_out_refuses_a_single_review():
  """One training review cannot be split into a training and a validation split."""
  from lra import text

  one = lra.Split(np.ones((1, 4), np.uint16), np.array([4], np.int32), np.zeros(1, np.int32))
  with pytest.raises(lra.DataError, match="1 training review.* use the option validation='test'"):
    text.hold_out(one, text.HELDOUT_FRACTION, 0)


def test_text_tfds_label_of_a_third_class_is_named(tmp_path):
  """IMDb has two classes: a TFDS label 2 is out of range, naming the shard and record."""
  imdb = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  write_shard(
    imdb / 'imdb_reviews-test.tfrecord-00000-of-00001', [example_proto(text=b'z', label=1)]
  )
  shard = imdb / 'imdb_reviews-train.tfrecord-00000-of-00001'
  write_shard(shard, [example_proto(text=b'ok', label=2)])
  with pytest.raises(
    lra.DataError, match=re.escape(f"{shard} record #0: label '2' is out of range")
  ):
    lra.load_task('text', tmp_path, max_length=3, cache=False, validation='test')


def test_text_tfds_train_shards_without_test_shards_is_no_data(tmp_path):
  """Text, like Image, needs both splits prepared in TFDS."""
  imdb = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  write_shard(
    imdb / 'imdb_reviews-train.tfrecord-00000-of-00001', [example_proto(text=b'a', label=1)]
  )
  with pytest.raises(lra.DataError, match=re.escape(f'No imdb_reviews data in {tmp_path}.')):
    lra.load_task('text', tmp_path, max_length=3, cache=False, validation='test')


def test_tfds_feature_of_the_right_kind_without_a_value_is_named(tmp_path):
  """A 'text' bytes_list holding no value is refused like a missing feature."""
  example = tf_example_pb2.Example.FromString(example_proto(label=1))
  example.features.feature['text'].bytes_list.SetInParent()
  imdb = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  write_shard(
    imdb / 'imdb_reviews-test.tfrecord-00000-of-00001', [example_proto(text=b'z', label=1)]
  )
  shard = imdb / 'imdb_reviews-train.tfrecord-00000-of-00001'
  write_shard(shard, [example.SerializeToString()])
  with pytest.raises(
    lra.DataError, match=re.escape(f"{shard} record #0: no 'text' feature of kind")
  ):
    lra.load_task('text', tmp_path, max_length=3, cache=False, validation='test')


def test_tfds_shards_of_the_newest_version_in_shard_order(tmp_path):
  """The newest version is chosen by its numbers (1.10.0 after 1.9.0), its shards sorted."""
  base = tmp_path / 'imdb_reviews' / 'plain_text'
  names = [f'imdb_reviews-train.tfrecord-{i:05d}-of-00012' for i in range(12)]
  for version in ('1.9.0', '1.10.0', '0.20.0'):
    for name in reversed(names):
      write_shard(base / version / name, [])
  shards = tfds_source.find_shards(tmp_path, 'imdb_reviews', 'train', 'plain_text')
  assert shards == [base / '1.10.0' / name for name in names]


def test_token_ids_and_labels_are_checked_against_their_own_bounds():
  """Ids must be below vocab_size, 1-D labels below num_classes, 2-D token targets below
  vocab_size; arrays must be integers of matching shapes."""
  import dataclasses

  from lra import core

  inputs, lengths = np.array([[1, 2], [3, 0]], np.int32), np.array([2, 1], np.int32)

  def check(**fields):
    split = dataclasses.replace(lra.Split(inputs, lengths, np.array([0, 1], np.int32)), **fields)
    core.check_arrays(
      'toy', {'train': split}, {'train': 'x.tsv'}, vocab_size=4, num_classes=2, max_length=2
    )

  check()
  check(targets=np.array([[3, 0], [1, 2]], np.int32))  # Token targets: ids below vocab_size.
  bad = {
    'inputs holds 4, outside \\[0, 4\\)': {'inputs': np.array([[1, 4], [3, 0]], np.int32)},
    'targets holds 2, outside \\[0, 2\\)': {'targets': np.array([0, 2], np.int32)},
    'targets holds 4, outside \\[0, 4\\)': {'targets': np.array([[0, 4], [1, 1]], np.int32)},
    'inputs has dtype float32, expected integers': {'inputs': inputs.astype(np.float32)},
    'inputs \\(2, 2\\) and lengths \\(3,\\), expected': {'lengths': np.array([2, 1, 1], np.int32)},
  }
  for message, fields in bad.items():
    with pytest.raises(lra.DataError, match=f'x.tsv: toy train split: {message}'):
      check(**fields)


def test_labels_are_integers_in_range_and_line_lists_are_cut_after_five():
  """`parse_label` takes integral numbers only (no fraction, NaN or infinity); `line_list` shows
  five line numbers, then '...'."""
  from lra import core

  assert core.parse_label('1.0', 2, 'f:1') == 1 and core.parse_label(b'0', 2, 'f:1') == 0
  for label in ('1.5', 'nan', 'inf', '-1', '2'):
    with pytest.raises(lra.DataError, match=f"f:3: label '{label}' is out of range"):
      core.parse_label(label, 2, 'f:3')
  with pytest.raises(lra.DataError, match="f:3: label 'one' is not a number"):
    core.parse_label('one', 2, 'f:3')
  assert core.line_list([1, 2, 3, 4, 5]) == '1, 2, 3, 4, 5'
  assert core.line_list([1, 2, 3, 4, 5, 6]) == '1, 2, 3, 4, 5, ...'
