"""An exclusive lock on a run's workdir, so that one workdir belongs to one training process.

`lock(workdir)` takes a POSIX advisory lock (`fcntl.flock`) on `workdir/.lock` and writes the
holder's pid and host into it. The operating system drops the lock when the holder exits or dies, so
a SIGKILLed run leaves no stale lock: the next start takes it at once. A second process that finds
the lock taken fails with `WorkdirLockedError` naming the holder's pid. (`flock` is local to a
machine on some network file systems; on several hosts, lock on the lead host only.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

#: Name of the lock file inside the workdir.
LOCK_FILE = '.lock'


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds the exclusive lock of `workdir` (created if needed) for the duration of the block.

  Raises:
    WorkdirLockedError: another process holds it; the message names its pid and host.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'unknown'
      raise WorkdirLockedError(
        f'{workdir} is in use by another training process ({holder}). Wait for it to finish or '
        'stop it, or choose another --workdir.'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}'.encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.
