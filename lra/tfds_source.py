"""Reads a TFDS dataset already prepared on disk, without TensorFlow and without downloading.

TFDS writes `<data_dir>/<name>/[<config>/]<version>/<name>-<split>.<format>-NNNNN-of-NNNNN` shards
of serialised `tf.train.Example` protos, as `array_record` (read with the `array_record` package,
a requirement) or `tfrecord` (length-prefixed frames, read here directly). The protos are
parsed with the copy of `tf_example_pb2` that tensorflow_datasets ships, so TensorFlow is never
imported.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from lra.core import DataError
from lra.errors import MissingDataError

_FORMATS = ('array_record', 'tfrecord')


def _version_key(directory: Path) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in directory.name.split('.'))
  except ValueError:
    return ()


def find_shards(data_dir: Path, name: str, split: str, config: str | None = None) -> list[Path]:
  """Returns the shards of `split` in the newest prepared version (empty when not prepared).

  Args:
    data_dir: the TFDS data dir.
    name: dataset name, e.g. `cifar10`.
    split: split name, e.g. `train`.
    config: builder config folder, e.g. `plain_text`, for datasets that have configs.
  """
  base = data_dir / name / config if config else data_dir / name
  shards = [p for fmt in _FORMATS for p in base.glob(f'*/{name}-{split}.{fmt}-*-of-*')]
  if not shards:
    return []
  newest = max({p.parent for p in shards}, key=_version_key)
  return sorted(p for p in shards if p.parent == newest)


def tfrecord_frames(path: str | Path, *, torn_ok: bool = False) -> Iterator[bytes]:
  """Yields the records of a TFRecord file (u64 length, u32 crc, data, u32 crc; crcs unchecked).

  Raises:
    DataError: the file ends inside a record, or a record's length runs past the end of the file
      (a corrupt length), naming the file and record; with `torn_ok` such a last record (a writer
      killed mid-record, as a TensorBoard event file can be) ends the file instead.
  """
  with open(path, 'rb') as f:
    size = os.fstat(f.fileno()).st_size
    index = 0
    while header := f.read(12):
      # A corrupt length can be any 64-bit number: checked against the bytes left before reading.
      length = struct.unpack('<Q', header[:8])[0] if len(header) == 12 else -1
      fits = 0 <= length <= size - f.tell() - 4
      data = f.read(length) if fits else b''
      if not fits or len(data) < length or len(f.read(4)) < 4:
        if torn_ok:
          return
        raise DataError(
          f'{path}: truncated or corrupt TFRecord file (record #{index} does not fit in its '
          f'{size} bytes)'
        )
      yield data
      index += 1


def _records(path: Path) -> Iterator[bytes]:
  if '.array_record-' in path.name:
    # Imported here: only array_record shards need it.
    from array_record.python.array_record_module import ArrayRecordReader

    # The reader raises RuntimeError on a damaged file (or one shorter than its 64 KiB minimum).
    try:
      reader = ArrayRecordReader(str(path))
      records = reader.read_all()
      reader.close()
    except RuntimeError as e:
      raise DataError(f'{path}: not a readable ArrayRecord file ({e})') from None
    yield from records
  else:
    yield from tfrecord_frames(path)


def located_examples(
  shards: list[Path], required: Mapping[str, str] | None = None
) -> Iterator[tuple[str, dict[str, list]]]:
  """Yields (where, example) for each example of the shards, in order.

  Args:
    shards: the shard files (`find_shards`).
    required: feature name -> the kind every example must hold it as, with at least one value:
      'bytes_list', 'int64_list' or 'float_list'.

  Yields:
    `where`, the shard file and record for messages (`<shard> record #<i>`), and the example as
    {feature: list of bytes, ints or floats}.

  Raises:
    DataError: a shard that cannot be read as its format, a record that is not a serialised
      `tf.train.Example`, or an example without a required feature, naming the shard file (and
      the record).
  """
  # Imported here: tensorflow_datasets is only needed for prepared TFDS data.
  from google.protobuf.message import DecodeError
  from tensorflow_datasets.proto import tf_example_pb2

  for path in shards:
    for index, record in enumerate(_records(path)):
      where = f'{path} record #{index}'
      try:
        features = tf_example_pb2.Example.FromString(record).features.feature
      except DecodeError:
        raise DataError(f'{where}: not a serialised tf.train.Example (a damaged shard)') from None
      kinds = {key: value.WhichOneof('kind') for key, value in features.items()}
      # A feature with no kind set holds no values.
      example = {
        key: list(getattr(features[key], kind).value) if kind else [] for key, kind in kinds.items()
      }
      for key, kind in (required or {}).items():
        if kinds.get(key) != kind or not example[key]:
          raise DataError(
            f'{where}: no {key!r} feature of kind {kind} with a value '
            f'(features: {dict(sorted(kinds.items()))})'
          )
      yield where, example


def prepare_command(name: str, data_dir: str | Path) -> str:
  """The shell command that downloads and prepares the TFDS dataset `name` ('<name>[/<config>]')
  under `data_dir`, as array_record shards (run on a machine with network access); quoted for a
  POSIX shell, whatever characters the folder's name holds."""
  name_literal, dir_literal = (
    json.dumps(str(text), ensure_ascii=False) for text in (name, data_dir)
  )
  code = (
    f'import tensorflow_datasets as tfds; tfds.builder({name_literal}, data_dir={dir_literal})'
    '.download_and_prepare(file_format="array_record")'
  )
  return f'python -c {shlex.quote(code)}'


def no_data_error(
  task: str, name: str, data_dir: Path, local: str, archive: str
) -> MissingDataError:
  """Explains the two sources of a task: a local folder, or TFDS data prepared elsewhere.

  Args:
    task: the LRA task (for the synthetic stand-in command).
    name: the TFDS dataset name.
    data_dir: where the data was looked for.
    local: the expected local folder layout.
    archive: the archive that extracts to that folder.

  Returns:
    The error to raise; nothing is ever downloaded at load time.
  """
  return MissingDataError(
    f'No {name} data in {data_dir}. Expected either {local}, or the TFDS dataset {name!r} '
    f'prepared under {data_dir} ({data_dir}/{name}/[<config>/]<version>/'
    f'{name}-<split>.array_record-* or .tfrecord-*). Nothing is downloaded at load time. '
    f'Prepare it on a machine with network access with:\n'
    f'  {prepare_command(name, data_dir)}\n'
    f'and copy {data_dir}/{name} here, or extract {archive} into {data_dir}. For a synthetic '
    f'stand-in (tests, demos): python -m lra.synthetic --task {task} --output_dir '
    f'{shlex.quote(str(data_dir))}'
  )
