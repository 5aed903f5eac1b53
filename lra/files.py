"""Files the data package writes: the atomic file write and the exclusive lock (which the trainer
uses too), and the record a generator leaves beside its outputs so that running it again is a
no-op."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lra.core import DataError

#: Record a generator writes beside its outputs: its settings and the sizes of what it wrote.
GENERATED_RECORD = '.generated-{name}.json'


def _record_path(paths: Sequence[Path]) -> Path:
  return paths[0].parent / GENERATED_RECORD.format(name=paths[0].name)


def _output_sizes(paths: Sequence[Path]) -> dict[str, int]:
  """Bytes of each of `paths` (a folder: of all files below it)."""
  sizes = {}
  for path in paths:
    files = [path] if path.is_file() else [f for f in path.rglob('*') if f.is_file()]
    sizes[path.name] = sum(f.stat().st_size for f in files)
  return sizes


@contextlib.contextmanager
def writing_outputs(
  paths: Sequence[Path],
  overwrite: bool,
  settings: Mapping[str, Any],
  *,
  elsewhere: str = 'choose another --output_dir',
) -> Iterator[bool]:
  """A generator's block that writes `paths`, or learns that they are already there.

  Outputs that a finished run of the same generator wrote with the same `settings` (its record,
  `GENERATED_RECORD` beside `paths[0]`, matches, and so do the outputs' sizes) are kept: running
  the same command twice is a no-op. Anything else that exists is refused, or replaced with
  `overwrite`: moved aside (`.replaced-<name>-<random>` beside `paths[0]`) for the block, deleted
  once the block ends, and put back should it fail (an exception, Ctrl-C), the block's partial
  outputs deleted: new data that cannot be made (a vocabulary SentencePiece refuses, too few
  distinct examples) leaves the old as it was. A replacement that a signal or a crash stopped
  (SIGTERM, SIGKILL) is put back by the next block for the same outputs, with a note on stderr.
  The block's normal end records the outputs.

  Args:
    paths: the files and folders the generator writes.
    overwrite: replace what exists instead of refusing.
    settings: the generator's arguments (JSON-serialisable); part of the record.
    elsewhere: the refusal's other way out (the command's output flag).

  Yields:
    True when the block is to write `paths`, False when they are already there from the same
    settings (and it says so on stderr).

  Raises:
    DataError: some of `paths` exist, were not written with these settings, and `overwrite` is
      False.
  """
  record = _record_path(paths)
  for stale in sorted(paths[0].parent.glob(glob.escape(_ASIDE.format(name=paths[0].name)) + '*')):
    if _holder_gone(stale) and _put_back(stale, [*paths, record], done=record.exists()):
      print(f'{stale}: the data a stopped --overwrite had moved there is back.', file=sys.stderr)
  existing = [p for p in paths if p.exists()]
  written = _read_record(record)
  if not overwrite and len(existing) == len(paths):
    if written == {'settings': dict(settings), 'sizes': _output_sizes(paths)}:
      names = ', '.join(p.name for p in paths)
      print(
        f'{paths[0].parent}: {names} already written with these settings; kept.', file=sys.stderr
      )
      yield False
      return
  if existing and not overwrite:
    listing = '\n'.join(f'  {p}' for p in existing)
    raise DataError(
      f'Refusing to overwrite existing data ({_not_kept(paths, written, settings)}):\n{listing}\n'
      f'Pass --overwrite to replace it (kept until the new data is written), or {elsewhere}.'
    )
  # The record first: once an output has moved, a record in its place is the new outputs'.
  old = [p for p in [record, *paths] if os.path.lexists(p)]
  aside = paths[0].parent / (_ASIDE.format(name=paths[0].name) + uuid.uuid4().hex[:8])
  try:
    if old:
      aside.mkdir()
      holder = {'pid': os.getpid(), 'host': socket.gethostname()}
      moved = [os.path.abspath(p) for p in old]  # The next run may start in another folder.
      write_atomically(aside / _MOVED, json.dumps({**holder, 'moved': moved}))
      for index, path in enumerate(old):
        if os.path.lexists(path):  # Not when it went with a folder above it.
          path.rename(aside / str(index))
    yield True
  except BaseException:
    if old:
      _put_back(aside, [*paths, record], done=False)
    else:
      for path in [*paths, record]:
        _remove(path)
    raise
  record_outputs(paths, settings)
  if old:
    _clear(aside)


#: The folder that `writing_outputs` moves replaced outputs to, beside the first; `{name}` is its
#: name, a random suffix follows.
_ASIDE = '.replaced-{name}-'
#: The list of what was moved aside (original paths, in the order of the items' numbers).
_MOVED = 'moved.json'


def _put_back(aside: Path, paths: Sequence[Path], done: bool) -> bool:
  """Ends the replacement whose old outputs are in `aside`: with `done` (the new outputs were
  recorded), deletes them; otherwise deletes the new outputs' parts at `paths` and puts the old
  ones back, then deletes `aside`. An item that cannot go back stays aside, not lost (the rename's
  error stops it first).
  Called when the block fails, and on entry for a replacement that a signal or a crash stopped
  (SIGTERM, SIGKILL: the block never ended).

  Returns:
    Whether old outputs were put back.
  """
  try:
    moved = [Path(p) for p in json.loads((aside / _MOVED).read_text())['moved']]
  except (OSError, ValueError, TypeError, KeyError):
    return False  # Not one of ours, or stopped before its list was written: left as it is.
  if done:
    _clear(aside)
    return False
  items = {path: aside / str(index) for index, path in enumerate(moved)}
  # What is at `paths` is the new outputs' parts, but for an old one that was not moved yet.
  for path in map(Path, map(os.path.abspath, paths)):
    if path not in items or os.path.lexists(items[path]):
      _remove(path)
  for path, item in items.items():
    if os.path.lexists(item):
      item.rename(path)
  _clear(aside)
  return True


def _clear(aside: Path) -> None:
  """Deletes the folder of replaced outputs, its list last: a process stopped meanwhile leaves a
  folder that the next run for the same outputs still recognises, and clears."""
  for item in aside.iterdir():
    if item.name != _MOVED:
      _remove(item)
  (aside / _MOVED).unlink()
  aside.rmdir()


def _holder_gone(aside: Path) -> bool:
  """Whether the process that moved outputs to `aside` has ended (it ran on this host, and no
  process has its pid): another one, still writing, is left alone."""
  try:
    holder = json.loads((aside / _MOVED).read_text())
    if holder['host'] != socket.gethostname():
      return False
    os.kill(holder['pid'], 0)
  except ProcessLookupError:
    return True
  except (OSError, ValueError, TypeError, KeyError):
    return False
  return False


def _remove(path: Path) -> None:
  """Deletes a file, link or folder tree at `path`, if any."""
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  elif os.path.lexists(path):
    path.unlink()


def _read_record(record: Path) -> dict[str, Any] | None:
  """A generator's record (`record_outputs`), None where there is none or it does not read."""
  try:
    written = json.loads(record.read_text())
  except (OSError, ValueError):
    return None
  return (
    written if isinstance(written, dict) and isinstance(written.get('settings'), dict) else None
  )


def _not_kept(
  paths: Sequence[Path], written: Mapping[str, Any] | None, settings: Mapping[str, Any]
) -> str:
  """Why existing outputs cannot be kept as this command's: no record, other settings (named), or
  outputs missing or changed since they were written."""
  if written is None:
    return 'not written by this command: no record of it'
  if written['settings'] != dict(settings):
    old = written['settings']
    changes = [
      f'{key} {old.get(key, "(absent)")} -> {settings.get(key, "(absent)")}'
      for key in sorted(set(old) | set(settings))
      if old.get(key) != settings.get(key)
    ]
    return f'written by this command with other settings: {", ".join(changes)}'
  missing = [p.name for p in paths if not p.exists()]
  if missing:
    return f'written by this command with these settings, but {", ".join(missing)} is gone since'
  return 'written by this command with these settings, but changed since (other sizes)'


def recorded_settings(paths: Sequence[Path]) -> dict[str, Any] | None:
  """The settings a generator recorded for `paths` (`record_outputs`), None where it recorded
  none."""
  written = _read_record(_record_path(paths))
  return None if written is None else dict(written['settings'])


def record_outputs(paths: Sequence[Path], settings: Mapping[str, Any]) -> None:
  """Records that `paths` were written completely with `settings` (see `writing_outputs`)."""
  content = json.dumps({'settings': dict(settings), 'sizes': _output_sizes(paths)}, sort_keys=True)
  write_atomically(_record_path(paths), content)


def write_atomically(path: str | Path, text: str) -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file of its own beside it
  (`<path>.<random>.tmp`), which then replaces `path`: a reader, an interrupted writer or another
  writer sees the old content or a new one, never a part. A symlink's target is what is replaced
  (the link stays). A stream (a path under /dev or /proc, such as /dev/stdout, whatever it is
  connected to) or another file that is not a regular one (a pipe) is appended to, as a shell's
  `>>` does: it cannot be replaced."""
  stream = str(path).startswith(('/dev/', '/proc/'))
  if stream or (os.path.exists(path) and not os.path.isfile(path)):
    with open(path, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  path = os.path.realpath(path)
  temporary = f'{path}.{uuid.uuid4().hex[:12]}.tmp'
  try:
    with open(temporary, 'x', encoding='utf-8') as f:
      f.write(text)
    os.replace(temporary, path)
  except OSError as e:
    if e.filename == temporary:  # Named for the file asked for, not its temporary.
      raise type(e)(e.errno, e.strerror, path) from None
    raise
  finally:
    if os.path.exists(temporary):
      os.unlink(temporary)


class LockedError(RuntimeError):
  """Another live process holds the lock; `holder` is its 'pid P on HOST' (or 'unknown')."""

  def __init__(self, path: str | Path, holder: str):
    super().__init__(f'{path} is held by {holder}')
    self.holder = holder


def acquire_lock(path: str | Path) -> int:
  """Takes the exclusive POSIX advisory lock (`fcntl.flock`) of file `path`, created if needed, and
  writes 'pid P on HOST' into it (unless it is another user's file, which is locked read-only).
  The operating system drops the lock when the holder exits or dies (a killed process leaves no
  stale lock); `os.close` of the returned descriptor releases it.

  Raises:
    LockedError: another process holds it (naming its pid and host).
    OSError: `path` cannot be created or opened.
  """
  try:
    fd, writable = os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True
  except PermissionError:
    if not os.path.isfile(path):
      raise
    # Another user's lock file in a folder both may write: locked all the same, holder unsaid.
    fd, writable = os.open(path, os.O_RDONLY), False
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'unknown'
      raise LockedError(path, holder) from None
    if writable:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}'.encode(), 0)
  except BaseException:
    os.close(fd)  # Releases the lock, if taken: a failed write (a full disk) keeps nothing held.
    raise
  return fd
