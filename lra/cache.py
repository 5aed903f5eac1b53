"""On-disk cache of tokenised splits, keyed by the source files' contents and the loading options.

An entry is a folder `<cache_dir>/<key>-<fingerprint>/` holding one `.npy` file per array and a
`complete` marker; arrays are memory-mapped on load. The fingerprint hashes the loading parameters,
the full contents of `content_files` (TSVs, metadata, pickles, tfds shards) and the size and
modification time of `stat_files` (the many small images or reviews), so a changed source is
re-read.
Entries of the same key with another fingerprint are deleted when a new one is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_FORMAT_VERSION = 1
_MARKER = 'complete'


def fingerprint(params: Mapping[str, Any], content_files: Sequence[Path] = (),
                stat_files: Sequence[Path] = ()) -> str:
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

  def load_or_build(self, key: str, build: Callable[[], dict[str, np.ndarray]], *,
                    params: Mapping[str, Any], content_files: Sequence[Path] = (),
                    stat_files: Sequence[Path] = ()) -> dict[str, np.ndarray]:
    """Returns the cached arrays for `key`, building and storing them when absent or stale.

    Args:
      key: entry name, e.g. `listops-2000`.
      build: computes the arrays (names must be valid file names).
      params: loading options that change the result.
      content_files: sources hashed by content.
      stat_files: sources hashed by size and modification time.

    Returns:
      Arrays by name (memory-mapped when served from the cache).
    """
    if self.directory is None:
      return build()
    entry = self.directory / f'{key}-{fingerprint(params, content_files, stat_files)}'
    if (entry / _MARKER).exists():
      return {p.stem: np.load(p, mmap_mode='r') for p in sorted(entry.glob('*.npy'))}
    arrays = build()
    try:
      self._write(entry, key, arrays)
    except OSError as e:
      logging.warning('Not caching %s in %s: %s', key, self.directory, e)
    return arrays

  def _write(self, entry: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    for stale in self.directory.glob(f'{key}-*'):
      if stale.is_dir() and stale != entry:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{key}-', dir=self.directory))
    for name, array in arrays.items():
      np.save(tmp / f'{name}.npy', np.asarray(array))
    (tmp / _MARKER).touch()
    try:
      os.rename(tmp, entry)
    except OSError:  # Another process wrote the same entry first.
      shutil.rmtree(tmp, ignore_errors=True)
