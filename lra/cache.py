"""On-disk cache of tokenised splits, keyed by the source files' contents and the loading options.

An entry is a folder `<cache_dir>/<key>-<fingerprint>/` holding one `.npy` file per array and a
`complete` marker, which lists every array's dtype, shape and CRC-32; arrays are memory-mapped on
load. The fingerprint hashes the loading parameters, the full contents of `content_files` (TSVs,
metadata, pickles, tfds shards) and the size and modification time of `stat_files` (the many small
images or reviews), so a changed source is re-read. The loaders' code is not part of it: a change to
what a loader makes of the same files bumps `_FORMAT_VERSION` (or, while editing a loader, delete
the cache folder: a load with `cache=False` reads the files but leaves the old entry in place).

The cache heals itself. An entry is written in a temporary folder named after the writing host and
process and renamed when complete; a temporary folder whose process is gone (or older than a day,
for other hosts) is deleted by the next load. An entry that does not match its marker (a truncated,
missing or altered file) is deleted and rebuilt with a warning. Entries of the same key with another
fingerprint are deleted when a new one is written.

`load_split_files` reads a task that has one source file per split through a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lra.core import DataError, Split, arrays_to_splits, splits_to_arrays

_FORMAT_VERSION = 2
_MARKER = 'complete'
#: Temporary entry folders are `.tmp@<host>@<pid>@<key>-<random>`.
_TMP_PREFIX = '.tmp'
#: A temporary folder of another host is stale after this many seconds.
_TMP_MAX_AGE = 24 * 3600


def fingerprint(
  params: Mapping[str, Any], content_files: Sequence[Path] = (), stat_files: Sequence[Path] = ()
) -> str:
  """Returns a hex digest of the parameters and the source files."""
  digest = hashlib.sha256(json.dumps([_FORMAT_VERSION, dict(params)], sort_keys=True).encode())
  for path in content_files:
    digest.update(f'{path.name}\0'.encode())
    with open(path, 'rb') as f:
      while chunk := f.read(1 << 20):
        digest.update(chunk)
  for path in stat_files:
    stat = path.stat()
    digest.update(f'{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0'.encode())
  return digest.hexdigest()[:16]


class Cache:
  """Builds arrays once and serves them memory-mapped afterwards.

  Args:
    directory: where entries live; None disables caching (every load rebuilds).
  """

  def __init__(self, directory: Path | None):
    self.directory = directory

  def load_or_build(
    self,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    *,
    params: Mapping[str, Any],
    content_files: Sequence[Path] = (),
    stat_files: Sequence[Path] = (),
  ) -> dict[str, np.ndarray]:
    """Returns the cached arrays for `key`, building and storing them when absent or stale.

    Args:
      key: entry name, e.g. `listops-2000`.
      build: computes the arrays (names must be valid file names).
      params: loading options that change the result.
      content_files: sources hashed by content.
      stat_files: sources hashed by size and modification time.

    Returns:
      Arrays by name (memory-mapped when served from the cache).

    Raises:
      DataError: a damaged entry cannot be deleted (the message names it).
    """
    if self.directory is None:
      return build()
    self._remove_abandoned_temporaries()
    entry = self.directory / f'{key}-{fingerprint(params, content_files, stat_files)}'
    if (entry / _MARKER).exists():
      try:
        return _read(entry)
      except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError covers JSON errors.
        logging.warning('Cache entry %s is damaged (%s); rebuilding it.', entry, e)
        try:
          shutil.rmtree(entry)
        except OSError as error:
          raise DataError(
            f'Cache entry {entry} is damaged ({e}) and cannot be deleted ({error}). '
            'Delete that folder, or load without the cache (cache=False) or with '
            'another cache_dir.'
          ) from None
    arrays = build()
    try:
      self._write(entry, key, arrays)
    except OSError as e:
      logging.warning('Not caching %s in %s: %s', key, self.directory, e)
    return arrays

  def _remove_abandoned_temporaries(self) -> None:
    """Deletes temporary entry folders left by killed writers (see the module docstring)."""
    if not self.directory.is_dir():
      return
    host = socket.gethostname()
    for path in self.directory.glob(f'{_TMP_PREFIX}@*'):
      parts = path.name.split('@')
      try:
        if len(parts) != 4 or not path.is_dir():
          continue
        if parts[1] == host and parts[2].isdigit():
          abandoned = not _process_exists(int(parts[2]))
        else:
          abandoned = time.time() - path.stat().st_mtime > _TMP_MAX_AGE
      except OSError:  # Renamed or deleted by its writer meanwhile.
        continue
      if abandoned:
        shutil.rmtree(path, ignore_errors=True)

  def _write(self, entry: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    for stale in self.directory.glob(f'{key}-*'):
      if stale.is_dir() and stale != entry:
        shutil.rmtree(stale, ignore_errors=True)
    prefix = f'{_TMP_PREFIX}@{socket.gethostname()}@{os.getpid()}@{key}-'
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.directory))
    manifest = {}
    for name, array in arrays.items():
      array = np.asarray(array)
      np.save(tmp / f'{name}.npy', array)
      manifest[name] = [array.dtype.str, list(array.shape), _checksum(array)]
    (tmp / _MARKER).write_text(json.dumps(manifest))
    try:
      os.rename(tmp, entry)
    except OSError:  # Another process wrote the same entry first.
      shutil.rmtree(tmp, ignore_errors=True)


def load_split_files(
  cache: Cache,
  key: str,
  paths: Mapping[str, Path],
  read: Callable[[Path, int], Split],
  max_length: int,
) -> dict[str, Split]:
  """Reads one file per split with `read(path, max_length)`, through the cache.

  Args:
    cache: where tokenised arrays are kept.
    key: cache entry name.
    paths: split name -> source file (hashed by content for the cache).
    read: parses one file into a Split of length `max_length`.
    max_length: L.

  Returns:
    The splits by name.
  """
  arrays = cache.load_or_build(
    key,
    lambda: splits_to_arrays({s: read(p, max_length) for s, p in paths.items()}),
    params={'max_length': max_length},
    content_files=list(paths.values()),
  )
  return arrays_to_splits(arrays)


def _read(entry: Path) -> dict[str, np.ndarray]:
  """Memory-maps the arrays of a complete entry, checked against its marker.

  Raises:
    OSError, ValueError, KeyError, TypeError: a file is missing, truncated or altered, or the
      marker is not a manifest.
  """
  manifest = json.loads((entry / _MARKER).read_text())
  arrays = {}
  for name, (dtype, shape, crc) in manifest.items():
    array = np.load(entry / f'{name}.npy', mmap_mode='r')
    if array.dtype.str != dtype or list(array.shape) != shape:
      raise ValueError(
        f'{name}.npy holds {array.dtype.str} {list(array.shape)}, expected {dtype} {shape}'
      )
    if _checksum(array) != crc:
      raise ValueError(f'{name}.npy fails its checksum')
    arrays[name] = array
  return arrays


def _checksum(array: np.ndarray) -> int:
  """CRC-32 of an array's bytes in C order."""
  return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _process_exists(pid: int) -> bool:
  """Whether a process with this id runs on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # It exists, under another user.
    return True
  return True
