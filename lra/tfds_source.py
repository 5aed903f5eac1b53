"""Reads a TFDS dataset that is already prepared on disk, without TensorFlow and without downloading.

TFDS writes `<data_dir>/<name>/[<config>/]<version>/<name>-<split>.<format>-NNNNN-of-NNNNN` shards
of serialised `tf.train.Example` protos, as `array_record` (read with the `array_record` package that
grain installs) or `tfrecord` (length-prefixed frames, read here directly). The protos are parsed
with the copy of `tf_example_pb2` that tensorflow_datasets ships, so TensorFlow is never imported.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from lra.core import DataError

_FORMATS = ('array_record', 'tfrecord')


def _version_key(directory: Path) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in directory.name.split('.'))
  except ValueError:
    return ()


def find_shards(data_dir: Path, name: str, split: str) -> list[Path]:
  """Returns the shards of `split` in the newest prepared version (empty when not prepared)."""
  shards = [p for fmt in _FORMATS for p in data_dir.glob(f'{name}/**/{name}-{split}.{fmt}-*-of-*')]
  if not shards:
    return []
  newest = max({p.parent for p in shards}, key=_version_key)
  return sorted(p for p in shards if p.parent == newest)


def _tfrecord_frames(path: Path) -> Iterator[bytes]:
  """Yields the records of a TFRecord file (u64 length, u32 crc, data, u32 crc; crcs unchecked)."""
  with open(path, 'rb') as f:
    while header := f.read(12):
      if len(header) < 12:
        raise DataError(f'{path}: truncated TFRecord file')
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        raise DataError(f'{path}: truncated TFRecord file')
      yield data


def _records(path: Path) -> Iterator[bytes]:
  if '.array_record-' in path.name:
    from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top
    reader = ArrayRecordReader(str(path))
    try:
      yield from reader.read_all()
    finally:
      reader.close()
  else:
    yield from _tfrecord_frames(path)


def read_examples(shards: list[Path]) -> Iterator[dict[str, list]]:
  """Yields each example of the shards, in order, as {feature: list of bytes or ints}."""
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  for path in shards:
    for record in _records(path):
      features = tf_example_pb2.Example.FromString(record).features.feature
      yield {key: list(getattr(value, value.WhichOneof('kind')).value)
             for key, value in features.items()}


def not_prepared(name: str, data_dir: Path, alternative: str) -> str:
  """Explains how to prepare `name` for this package (on a machine with network access)."""
  return (f'TFDS dataset {name!r} is not prepared under {data_dir} (looked for '
          f'{data_dir}/{name}/.../{name}-<split>.array_record-* or .tfrecord-*). Nothing is '
          f'downloaded at load time. Prepare it on a machine with network access with:\n'
          f'  python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, '
          f'data_dir={str(data_dir)!r}).download_and_prepare(file_format=\'array_record\')"\n'
          f'and copy {data_dir}/{name} here, or {alternative}')
