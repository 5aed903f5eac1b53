"""Downloads, extracts, checks and tokenises the LRA data: `python -m lra.prepare`.

  python -m lra.prepare --tasks all --data_dir data
  python -m lra.prepare --tasks listops,retrieval --data_dir data --archive ~/lra_release.gz

Each task's files come from one official archive (the table `SOURCES`): the LRA release (ListOps,
Retrieval, Pathfinder, Path-X), IMDb (Text) and the CIFAR-10 python batches (Image). For every task
asked for, the data already under `--data_dir` is verified and reused. Otherwise its archive is
taken from `--archive`, or from `<data_dir>/downloads/`, or downloaded there: HTTP Range requests
resume an interrupted download, the size is checked against the server's and the table's, and a
SHA-256 manifest `downloads/SHA256SUMS` is written for later runs to detect damage. Only the
members the task needs are extracted, streaming: the archive is read once and never held in memory
or copied. Then each task is loaded with `lra.load_task`, which checks its layout and builds its
token cache, and the `train.py` commands are printed.

Layout under `--data_dir` (what `task_data_dir` returns is the `data_dir` a task's loader gets):
  downloads/<archive>, downloads/SHA256SUMS       downloaded archives and their SHA-256
  lra_release/lra_release/listops-1000/           ListOps (the release's nested copy)
  lra_release/lra_release/tsv_data/               Retrieval
  lra_release/lra_release/pathfinder{32,128}/<difficulty>/   Pathfinder-32, Path-X
  imdb/aclImdb/{train,test}/{neg,pos}/            Text
  cifar10/cifar-10-batches-py/                    Image
  .prepared/<task>.json                           the files extracted for a task, with sizes

A task whose files are all in place is reused as it is (verified against its record when
`lra.prepare` extracted it); an incomplete one is completed from its archive, whose files replace
those at the same paths. No archive is ever deleted: a damaged download is kept as `<name>.corrupt`,
and a file the user put there or passed as `--archive` is never modified.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import gzip
import hashlib
import http.client
import json
import os
import posixpath
import re
import shlex
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tqdm

from lra import cli, pathfinder, registry
from lra.core import DataError
from lra.files import LockedError, acquire_lock, write_atomically

T = TypeVar('T')


@dataclasses.dataclass(frozen=True)
class Source:
  """An official archive.

  Attributes:
    url: where it is downloaded from.
    size: its size in bytes, where the project can state it (None: the server's is trusted).
    sha256: its SHA-256 hex digest, where the project can state it (None: not checked).
    extract_to: folder under `--data_dir` its members are extracted into.
  """

  url: str
  size: int | None
  sha256: str | None
  extract_to: str

  @property
  def filename(self) -> str:
    """The archive's file name, the last part of its URL (what `downloads/` holds)."""
    return posixpath.basename(self.url)


@dataclasses.dataclass(frozen=True)
class TaskFiles:
  """Where a task's files come from and go.

  Attributes:
    source: key of `SOURCES`.
    data_dir: the loader's `data_dir`, relative to `--data_dir`.
    members: archive members the task needs: exact names, or folder prefixes ending in '/'
      (`{difficulty}` is the Pathfinder difficulty folder).
    config: the task's config file.
  """

  source: str
  data_dir: str
  members: tuple[str, ...]
  config: str


# The one table of URLs and checksums. The LRA release publishes no size or checksum (its bucket is
# not listable); IMDb's are those tensorflow_datasets records, CIFAR-10's those Keras checks.
SOURCES: dict[str, Source] = {
  'lra_release': Source(
    'https://storage.googleapis.com/long-range-arena/lra_release.gz',
    size=None,
    sha256=None,
    extract_to='.',
  ),
  'imdb': Source(
    'https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz',
    size=84_125_825,
    sha256='c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe',
    extract_to='imdb',
  ),
  'cifar10': Source(
    'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
    size=170_498_071,
    sha256='6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce',
    extract_to='cifar10',
  ),
}
_RELEASE = registry.LRA_RELEASE
_DIRS = registry.PREPARED_DIRS
TASK_FILES: dict[str, TaskFiles] = {
  'listops': TaskFiles(
    'lra_release',
    _DIRS['listops'],
    tuple(f'{_RELEASE}/listops-1000/basic_{split}.tsv' for split in ('train', 'val', 'test')),
    'configs/listops.py',
  ),
  'text': TaskFiles(
    'imdb',
    _DIRS['text'],
    tuple(f'aclImdb/{split}/{label}/' for split in ('train', 'test') for label in ('neg', 'pos')),
    'configs/text.py',
  ),
  'retrieval': TaskFiles(
    'lra_release',
    _DIRS['retrieval'],
    tuple(f'{_RELEASE}/tsv_data/new_aan_pairs.{split}.tsv' for split in ('train', 'eval', 'test')),
    'configs/retrieval.py',
  ),
  'image': TaskFiles(
    'cifar10',
    _DIRS['image'],
    tuple(
      f'cifar-10-batches-py/{name}'
      for name in (*(f'data_batch_{i}' for i in range(1, 6)), 'test_batch')
    ),
    'configs/image.py',
  ),
  'pathfinder32': TaskFiles(
    'lra_release',
    _DIRS['pathfinder32'],
    (f'{_RELEASE}/pathfinder32/{{difficulty}}/',),
    'configs/pathfinder32.py',
  ),
  'pathx': TaskFiles(
    'lra_release',
    _DIRS['pathx'],
    (f'{_RELEASE}/pathfinder128/{{difficulty}}/',),
    'configs/pathx.py',
  ),
}
DOWNLOADS = 'downloads'
MANIFEST = 'SHA256SUMS'
STATE = '.prepared'
_CHUNK = 1 << 20
_USER_AGENT = 'luna_jax-lra-prepare'


def task_data_dir(task: str, data_root: str | Path) -> Path:
  """The folder `lra.load_task(task, ...)` reads after `lra.prepare --data_dir data_root`.

  Raises:
    DataError: an unknown task.
  """
  if task not in TASK_FILES:
    raise DataError(f'Unknown task {task!r}; LRA tasks: {", ".join(TASK_FILES)}')
  return Path(data_root) / TASK_FILES[task].data_dir


def parse_tasks(spec: str) -> list[str]:
  """'all' or a comma-separated list of LRA tasks -> task names in table order.

  Raises:
    DataError: an unknown task name, or none.
  """
  names = [t.strip() for t in spec.split(',') if t.strip()]
  if names == ['all']:
    return list(TASK_FILES)
  unknown = [t for t in names if t not in TASK_FILES]
  if unknown or not names:
    raise DataError(
      f'--tasks {spec!r}: unknown task(s) {", ".join(unknown) or "(none given)"}; '
      f'use "all" or a comma-separated list of {", ".join(TASK_FILES)}'
    )
  return [t for t in TASK_FILES if t in names]


def _manual_alternative(url: str, dest: Path) -> str:
  return (
    f'Download {url} on a machine with network access, copy it here and pass --archive PATH '
    f'(or put it at {dest}).'
  )


# ------------------------------------------------------------------------------------------------
# Download
# ------------------------------------------------------------------------------------------------


def _response_total(response: http.client.HTTPResponse, offset: int, url: str) -> int | None:
  """The full size of the file from a 206 (Content-Range) or 200 (Content-Length) response."""
  if response.status == 206:
    match = re.fullmatch(r'bytes (\d+)-\d+/(\d+|\*)', response.headers.get('Content-Range', ''))
    if not match or int(match.group(1)) != offset:
      raise DataError(
        f'{url}: the server answered the request for bytes {offset}- with '
        f'Content-Range {response.headers.get("Content-Range")!r}'
      )
    return None if match.group(2) == '*' else int(match.group(2))
  length = response.headers.get('Content-Length')
  return int(length) if length is not None else None


def _on_disk(path: Path, action: Callable[..., T], *args: Any, **kwargs: Any) -> T:
  """`action(*args, **kwargs)`, a file operation on `path`, with its OSError (no space, no
  permission, a file where a folder should be) as a DataError naming the path (`_disk_error`): a
  local problem, never retried as a dropped connection."""
  try:
    return action(*args, **kwargs)
  except OSError as e:
    raise _disk_error(path, e) from None


def _disk_error(path: Path, error: OSError) -> DataError:
  return DataError(
    f'{path}: {error.strerror or error}. Free space or fix the folder (or choose another '
    '--data_dir), then run again: a partial download is resumed.'
  )


def download(
  url: str,
  dest: Path,
  expected_size: int | None = None,
  *,
  timeout: float = 20.0,
  retries: int = 10,
  retry_wait: float = 2.0,
  progress: bool = True,
) -> None:
  """Downloads `url` to `dest` through `dest.part`, resuming what an earlier run left there.

  A dropped connection is resumed with an HTTP Range request (up to `retries` times, waiting
  `retry_wait` seconds before each); a server that ignores Range is read again from the start. A
  server that cannot be reached at all fails at once: nothing is retried before a first response.

  Args:
    url: http(s) URL.
    dest: the complete file's path (written by renaming `dest.part` once complete).
    expected_size: bytes the file must have (None: whatever the server says).
    timeout: seconds to wait for a connection or for data before giving up on an attempt.
    retries: attempts after a failed one, in all.
    retry_wait: seconds between attempts.
    progress: show a tqdm progress bar.

  Raises:
    DataError: the server is unreachable, answers with an HTTP error, reports another size than
      `expected_size`, or the download fails `retries + 1` times (the message names the URL and
      the manual alternative); `dest`'s folder cannot be made or written (naming the path).
  """
  part = dest.with_name(dest.name + '.part')
  _on_disk(dest.parent, dest.parent.mkdir, parents=True, exist_ok=True)
  total = expected_size
  failures = 0
  responded = False
  with tqdm.tqdm(
    unit='B',
    unit_scale=True,
    unit_divisor=1024,
    desc=dest.name,
    disable=not progress,
    dynamic_ncols=True,
    delay=1.0,
  ) as bar:
    while True:
      have = part.stat().st_size if part.exists() else 0
      if total is not None and have > total:  # Not what this URL serves: start over.
        part.unlink()
        have = 0
      if total is not None and have == total:
        break
      headers = {'User-Agent': _USER_AGENT}
      if have:
        headers['Range'] = f'bytes={have}-'
      try:
        with urllib.request.urlopen(
          urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:
          responded = True
          if response.status != 206:
            have = 0  # A full answer (the server ignored Range, or nothing was there yet).
          served = _response_total(response, have, url)
          if expected_size is not None and served is not None and served != expected_size:
            raise DataError(
              f'{url}: the server reports {served} bytes, expected {expected_size}. '
              f'The file changed upstream or the URL is wrong; '
              f'{_manual_alternative(url, dest)}'
            )
          total = served if served is not None else total
          bar.reset(total=total)
          bar.update(have)
          out = _on_disk(part, open, part, 'ab' if have else 'wb')
          try:
            while chunk := response.read(_CHUNK):
              _on_disk(part, out.write, chunk)
              bar.update(len(chunk))
          finally:
            _on_disk(part, out.close)
        size = part.stat().st_size
        if total is None or size == total:
          break
        raise ConnectionError(f'connection closed after {size} of {total} bytes')
      except urllib.error.HTTPError as e:
        if e.code == 416 and have:
          # Nothing from byte `have` on: the partial file is complete (a run stopped before the
          # rename, with no size known beforehand), or it is not a prefix of this URL's file.
          if e.headers.get('Content-Range') == f'bytes */{have}':
            break
          part.unlink()
          continue
        raise DataError(
          f'{url}: HTTP error {e.code} {e.reason}. {_manual_alternative(url, dest)}'
        ) from None
      except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, 'reason', e)
        if not responded:
          raise DataError(
            f'Cannot reach {url} ({reason}). {_manual_alternative(url, dest)}'
          ) from None
        failures += 1
        if failures > retries:
          raise DataError(
            f'{url}: download failed {failures} times, last: {reason}. The partial '
            f'file {part} is kept; run again to resume. '
            f'{_manual_alternative(url, dest)}'
          ) from None
        bar.write(
          f'{dest.name}: {reason}; resuming in {retry_wait:g} s '
          f'(attempt {failures + 1} of {retries + 1})'
        )
        time.sleep(retry_wait)
  os.replace(part, dest)


def sha256_of(path: Path, progress: bool = True) -> str:
  """SHA-256 hex digest of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with (
    open(path, 'rb') as f,
    tqdm.tqdm(
      total=path.stat().st_size,
      unit='B',
      unit_scale=True,
      unit_divisor=1024,
      desc=f'sha256 {path.name}',
      disable=not progress,
      dynamic_ncols=True,
    ) as bar,
  ):
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
      bar.update(len(chunk))
  return digest.hexdigest()


def read_manifest(downloads: Path) -> dict[str, str]:
  """`downloads/SHA256SUMS` (`<sha256>  <file name>` lines) as {file name: sha256}.

  Raises:
    DataError: a malformed line, naming the file and line.
  """
  path = downloads / MANIFEST
  if not path.exists():
    return {}
  entries = {}
  for line_no, line in enumerate(path.read_text(encoding='utf-8').splitlines(), start=1):
    if line.strip():
      digest, sep, name = line.partition('  ')
      if not sep or not re.fullmatch(r'[0-9a-f]{64}', digest):
        raise DataError(f'{path}:{line_no}: expected "<sha256>  <file name>", got {line!r}')
      entries[name] = digest
  return entries


def _record_manifest(downloads: Path, name: str, digest: str) -> None:
  entries = {**read_manifest(downloads), name: digest}
  write_atomically(downloads / MANIFEST, ''.join(f'{d}  {n}\n' for n, d in sorted(entries.items())))


def _check_official(path: Path, source: Source, digest: str, what: str) -> None:
  """Raises DataError (deleting nothing) when a file is not the official archive."""
  if source.size is not None and path.stat().st_size != source.size:
    raise DataError(
      f'{path} has {path.stat().st_size} bytes, but {source.url} has {source.size}. {what}'
    )
  if source.sha256 is not None and digest != source.sha256:
    raise DataError(f'{path} has SHA-256 {digest}, but {source.url} has {source.sha256}. {what}')


def obtain_archive(
  name: str,
  data_root: Path,
  archive: Path | None = None,
  *,
  progress: bool = True,
  **download_options,
) -> Path:
  """Returns a verified copy of archive `name` of `SOURCES`, downloading it when needed.

  Args:
    name: key of `SOURCES`.
    data_root: `--data_dir`; downloads go to `<data_root>/downloads/`.
    archive: a copy the user provides (`--archive`): checked, never modified.
    progress: show progress bars.
    **download_options: `timeout`, `retries`, `retry_wait` of `download`.

  Raises:
    DataError: the archive cannot be downloaded, or a file is not (or no longer) the official
      archive; the message says what to do, and no file is deleted.
  """
  source = SOURCES[name]
  if archive is not None:
    if not archive.is_file():
      raise DataError(f'--archive {archive}: no such file.')
    _check_official(
      archive,
      source,
      sha256_of(archive, progress) if source.sha256 else '',
      f'It is not the official {source.filename}; nothing was changed. Get a fresh '
      f'copy of {source.url}.',
    )
    return archive
  downloads = data_root / DOWNLOADS
  dest = downloads / source.filename
  if not dest.exists():
    download(source.url, dest, source.size, progress=progress, **download_options)
    digest = sha256_of(dest, progress)
    try:
      _check_official(dest, source, digest, '')
    except DataError as e:
      bad = dest.with_name(dest.name + '.corrupt')
      os.replace(dest, bad)
      raise DataError(
        f'The download is damaged: {e} It was kept as {bad}. Run again to '
        f'download it afresh; should that fail again, the file upstream changed. '
        f'{_manual_alternative(source.url, dest)}'
      ) from None
    _record_manifest(downloads, dest.name, digest)
    return dest
  recorded = read_manifest(downloads).get(dest.name)
  digest = sha256_of(dest, progress)
  if recorded is not None and digest != recorded:
    raise DataError(
      f'{dest} changed since it was downloaded: SHA-256 {digest}, recorded '
      f'{recorded} in {downloads / MANIFEST}. Nothing was deleted. Delete {dest} and '
      f'run again to download it afresh, or pass --archive with a good copy.'
    )
  _check_official(
    dest,
    source,
    digest,
    f'Nothing was deleted. Delete or move {dest} and run again to download it '
    f'afresh, or pass --archive with a good copy.',
  )
  if recorded is None:
    _record_manifest(downloads, dest.name, digest)
  return dest


# ------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------


def task_members(task: str, difficulty: str) -> tuple[str, ...]:
  """The archive member names (exact) and folders (ending in '/') task `task` needs."""
  folder = pathfinder.DIFFICULTIES[difficulty]
  return tuple(m.format(difficulty=folder) for m in TASK_FILES[task].members)


def _matches(name: str, pattern: str) -> bool:
  """Whether member `name` is `pattern`, or lies in it when `pattern` is a folder ending in '/'."""
  return name == pattern or (pattern.endswith('/') and name.startswith(pattern))


def extract(
  archive: Path, root: Path, members: Mapping[str, Sequence[str]], *, progress: bool = True
) -> tuple[dict[str, dict[str, int]], list[str]]:
  """Extracts the regular files a set of tasks need from a (gzip) tar, reading it once.

  Each file is written to a temporary name and renamed when complete. Links, devices and names
  with `..` or an absolute path are never extracted.

  Args:
    archive: the .tar.gz (streamed, never loaded whole).
    root: the folder member names are relative to.
    members: task -> its members (exact names, or folders ending in '/').
    progress: show a progress bar over the compressed bytes.

  Returns:
    task -> {extracted path relative to `root`: size in bytes}, and the archive's first 20 member
    names (to show a layout that is not the expected one).

  Raises:
    DataError: an archive that is not a readable (gzip) tar.
  """
  extracted: dict[str, dict[str, int]] = {task: {} for task in members}
  seen = []
  try:
    with (
      open(archive, 'rb') as raw,
      tqdm.tqdm.wrapattr(
        raw,
        'read',
        total=archive.stat().st_size,
        desc=f'extracting {archive.name}',
        disable=not progress,
        dynamic_ncols=True,
      ) as counted,
      tarfile.open(fileobj=counted, mode='r|*') as tar,
    ):
      for member in tar:
        name = posixpath.normpath(member.name)
        if len(seen) < 20:
          seen.append(name)
        tasks = [
          task for task, patterns in members.items() if any(_matches(name, p) for p in patterns)
        ]
        if not tasks or not member.isfile() or name.startswith(('/', '..')):
          continue
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f'.{dest.name}.tmp')
        with tar.extractfile(member) as src, open(tmp, 'wb') as out:
          shutil.copyfileobj(src, out, _CHUNK)
        os.replace(tmp, dest)
        for task in tasks:
          extracted[task][name] = member.size
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(
      f'{archive}: cannot read it as a gzip tar archive ({e}). If it is a download, '
      f'delete it and run again; otherwise get a fresh copy.'
    ) from None
  return extracted, seen


def missing_members(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
  """The members (exact names, or folders ending in '/') of which `names` has nothing."""
  return [p for p in patterns if not any(_matches(n, p) for n in names)]


# ------------------------------------------------------------------------------------------------
# Per-task state
# ------------------------------------------------------------------------------------------------


def _state_path(data_root: Path, task: str, suffix: str) -> Path:
  return data_root / STATE / f'{task}.{suffix}'


@contextlib.contextmanager
def _locked(data_root: Path) -> Iterator[None]:
  """Holds `<data_root>/.prepared/lock` (`lra.files.acquire_lock`), so that one process prepares a
  folder at a time: two would append to the same partial download and records. A folder this
  process may not write (a read-only copy of prepared data, being verified) is not locked: nothing
  can be written there.

  Raises:
    DataError: another process holds it (naming its pid), or the folder cannot be made.
  """
  state, fd = data_root / STATE, None
  try:
    state.mkdir(parents=True, exist_ok=True)
    fd = acquire_lock(state / 'lock')
  except LockedError as e:
    raise DataError(
      f'{data_root} is being prepared by another lra.prepare ({e.holder}). Wait for it to '
      'finish, or choose another --data_dir.'
    ) from None
  except OSError as e:
    folder = state if state.is_dir() else data_root  # `.prepared` or where it would be made.
    writable = os.access(folder, os.W_OK) if folder.is_dir() else True
    if writable or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
      raise _disk_error(state, e) from None
  try:
    yield
  finally:
    if fd is not None:
      os.close(fd)


def _recorded_files(data_root: Path, task: str) -> dict[str, int]:
  """The files `lra.prepare` recorded for `task` when it last finished extracting it (path relative
  to its source's folder -> size): none without a record, or with one it cannot read (said)."""
  record = _state_path(data_root, task, 'json')
  if not record.exists():
    return {}
  try:
    files = json.loads(record.read_text(encoding='utf-8'))['files']
    return {str(name): int(size) for name, size in files.items()}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    print(f'{task}: cannot read {record} ({type(e).__name__}: {e}); treating it as missing.')
    return {}


def check_extracted(data_root: Path, task: str, difficulty: str = 'hard') -> str | None:
  """Verifies what `lra.prepare` extracted for `task` at `difficulty` (every file present with its
  size).

  Returns:
    None when there is no complete record (none, or an extraction under way or cut short), or one
    without this difficulty's members (Pathfinder: another difficulty was extracted), else a
    description of the verified files (this difficulty's only).

  Raises:
    DataError: a recorded file is missing or has another size (naming it).
  """
  if _state_path(data_root, task, 'partial').exists():
    return None
  members = task_members(task, difficulty)
  files = {
    name: size
    for name, size in _recorded_files(data_root, task).items()
    if any(_matches(name, member) for member in members)
  }
  if not files or missing_members(members, list(files)):
    return None
  root = data_root / SOURCES[TASK_FILES[task].source].extract_to
  for name, size in files.items():
    path = root / name
    if not path.is_file() or path.stat().st_size != size:
      raise DataError(
        f'{path}: extracted by lra.prepare with {size} bytes, now '
        f'{"missing" if not path.is_file() else f"{path.stat().st_size} bytes"}.'
      )
  return f'verified {len(files)} extracted files'


def data_present(task: str, data_root: str | Path, difficulty: str = 'hard') -> bool:
  """Whether `task`'s data is under `data_root` where `lra.prepare --data_dir data_root` puts it,
  however it got there: the files its loader reads for the LRA release's tasks (which share one
  folder), the task's folder for Text and Image (which also read a TFDS dataset prepared there).
  """
  if TASK_FILES[task].source == 'lra_release':
    return _layout_present(Path(data_root), task, difficulty)
  return task_data_dir(task, data_root).is_dir()


def _layout_present(data_root: Path, task: str, difficulty: str) -> bool:
  """True when the files a task's loader reads are there (put there by hand, or by another tool)."""
  files = TASK_FILES[task]
  root = data_root / SOURCES[files.source].extract_to
  for member in task_members(task, difficulty):
    path = root / member
    if not (path.is_dir() and any(path.iterdir()) if member.endswith('/') else path.is_file()):
      return False
  return True


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _parse_archives(values: Sequence[str], sources: Sequence[str]) -> dict[str, Path]:
  """`--archive PATH` (matched by file name) or `--archive SOURCE=PATH` -> {source: path}."""
  archives = {}
  by_filename = {SOURCES[s].filename: s for s in SOURCES}
  for value in values:
    name, sep, path = value.partition('=')
    if not sep:
      path = value
      name = by_filename.get(Path(value).name)
      if name is None:
        raise DataError(
          f'--archive {value}: the file name is none of {", ".join(by_filename)}; '
          f'write --archive SOURCE=PATH with SOURCE one of {", ".join(SOURCES)}.'
        )
    if name not in SOURCES:
      raise DataError(f'--archive {value}: unknown source {name!r}; sources: {", ".join(SOURCES)}')
    if name not in sources:
      raise DataError(f'--archive {value}: no task asked for needs {SOURCES[name].filename}.')
    archives[name] = Path(path).expanduser()
  return archives


def prepare(
  tasks: Sequence[str],
  data_root: Path,
  archives: Mapping[str, Path] | None = None,
  *,
  difficulty: str = 'hard',
  progress: bool = True,
  **download_options,
) -> dict[str, dict]:
  """Makes the data of `tasks` ready under `data_root` (see the module docstring).

  Args:
    tasks: LRA task names.
    data_root: `--data_dir`.
    archives: source name -> an archive the user provides.
    difficulty: Pathfinder difficulty to extract ('easy', 'intermediate', 'hard').
    progress: show progress bars.
    **download_options: `timeout`, `retries`, `retry_wait` of `download`.

  Returns:
    task -> {'data_dir', 'status', and 'sizes' (train/validation/test examples) or 'error'}.

  Raises:
    DataError: another process prepares `data_root` (`_locked`), or its state folder cannot be
      made.
  """
  with _locked(data_root):
    archives = dict(archives or {})
    report: dict[str, dict] = {}
    pending: dict[str, list[str]] = {}
    for task in tasks:
      report[task] = {'data_dir': task_data_dir(task, data_root)}
      try:
        status = check_extracted(data_root, task, difficulty)
        damaged = False
      except DataError as e:
        status, damaged = None, True
        print(f'{task}: {e} Extracting it again.')
      if status is None and not damaged and not _state_path(data_root, task, 'partial').exists():
        if _layout_present(data_root, task, difficulty):
          status = 'found in place (not extracted by lra.prepare)'
        else:  # Another source its loader reads, such as a prepared TFDS dataset?
          try:
            report[task]['sizes'] = _split_sizes(task, report[task]['data_dir'], difficulty)
            status = 'found in place (read by its loader)'
          except DataError:
            pass
      if status is None:
        pending.setdefault(TASK_FILES[task].source, []).append(task)
      else:
        report[task]['status'] = status
    for source_name, source_tasks in pending.items():
      source = SOURCES[source_name]
      try:
        archive = obtain_archive(
          source_name, data_root, archives.get(source_name), progress=progress, **download_options
        )
        # What earlier runs extracted (another Pathfinder difficulty) stays in the record, also
        # after an extraction cut short.
        earlier = {task: _recorded_files(data_root, task) for task in source_tasks}
        for task in source_tasks:
          _state_path(data_root, task, 'partial').parent.mkdir(parents=True, exist_ok=True)
          _state_path(data_root, task, 'partial').touch()
        members = {task: task_members(task, difficulty) for task in source_tasks}
        extracted, first_names = extract(
          archive, data_root / source.extract_to, members, progress=progress
        )
      except DataError as e:
        for task in source_tasks:
          report[task]['error'] = str(e)
        continue
      for task in source_tasks:
        missing = missing_members(members[task], list(extracted[task]))
        if missing:
          report[task]['error'] = (
            f'{archive} has no member(s) {", ".join(missing)}; its first '
            f'members are: {", ".join(first_names)}'
          )
          continue
        files = {**earlier[task], **extracted[task]}
        record = {'source': source_name, 'archive': str(archive), 'files': files}
        write_atomically(_state_path(data_root, task, 'json'), json.dumps(record, indent=1))
        _state_path(data_root, task, 'partial').unlink()
        report[task]['status'] = f'extracted {len(extracted[task])} files from {archive}'
    for task in tasks:
      if 'error' not in report[task] and 'sizes' not in report[task]:
        try:
          report[task]['sizes'] = _split_sizes(task, report[task]['data_dir'], difficulty)
        except DataError as e:
          report[task]['error'] = str(e)
    return report


def _split_sizes(task: str, data_dir: Path, difficulty: str) -> tuple[int, int, int]:
  """Loads a task (checking its files and building its token cache): its split sizes."""
  options = {'difficulty': difficulty} if task in ('pathfinder32', 'pathx') else {}
  data = registry.load_task(task, data_dir, **options)
  return data.train.num_examples, data.validation.num_examples, data.test.num_examples


def _print_report(report: Mapping[str, dict], data_root: Path, difficulty: str) -> None:
  print('\nTask          train/validation/test  data_dir (status)')
  for task, entry in report.items():
    sizes = '/'.join(map(str, entry['sizes'])) if 'sizes' in entry else 'FAILED'
    print(f'{task:<13} {sizes:<22} {entry["data_dir"]} ({entry.get("status", "not prepared")})')
  failures: dict[str, list[str]] = {}
  for task, entry in report.items():
    if 'error' in entry:
      failures.setdefault(entry['error'], []).append(task)
  for error, tasks in failures.items():
    print(f'\n{", ".join(tasks)} FAILED:\n{error}', file=sys.stderr)
  ready = [task for task, entry in report.items() if 'sizes' in entry]
  if not ready:
    return
  # The configs read the hard difficulty: another one is named on each command of its tasks.
  other = f' --config.data.options.difficulty={difficulty}' if difficulty != 'hard' else ''
  pathfinders = [task for task in ready if task in ('pathfinder32', 'pathx')]
  print('\nTrain one model (variants: luna16, luna128, luna256, transformer, ...):')
  for task in ready:
    print(
      f'  python train.py --config {TASK_FILES[task].config}:luna256 '
      f'--workdir runs/{task}/luna256/seed0 '
      + shlex.quote(f'--config.data.data_dir={report[task]["data_dir"]}')
      + (other if task in pathfinders else '')
    )
  print('\nOr the whole Table 1 sweep and its report:')
  # After `--`: the flags of every run of the sweep.
  groups = {'': [t for t in ready if t not in pathfinders], f' --{other}': pathfinders}
  if not other:
    groups = {'': ready}
  for flags, tasks in groups.items():
    if tasks:
      print(
        f'  python -m benchmarks.reproduce --tasks {",".join(tasks)} --data_dir '
        f'{shlex.quote(str(data_root))} '
        f'--variants luna16,luna256,transformer --seeds 3{flags}'
      )


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--tasks', default='all', help=f'"all" or a comma-separated list of {", ".join(TASK_FILES)}.'
  )
  parser.add_argument(
    '--data_dir', default='data', type=cli.path, help='where everything goes (see above).'
  )
  parser.add_argument(
    '--archive',
    action='append',
    default=[],
    help='an archive already on this machine, used instead of downloading: PATH '
    f'(named {", ".join(s.filename for s in SOURCES.values())}) or '
    'SOURCE=PATH; repeatable.',
  )
  parser.add_argument(
    '--difficulty',
    default='hard',
    choices=tuple(pathfinder.DIFFICULTIES),
    help='Pathfinder/Path-X difficulty to extract (the configs use hard).',
  )
  parser.add_argument(
    '--timeout',
    type=cli.number(above=0),
    default=20.0,
    help='seconds without a connection or data before an attempt fails.',
  )
  parser.add_argument(
    '--retries',
    type=cli.integer(0),
    default=10,
    help='times a dropped download is resumed before giving up.',
  )
  parser.add_argument('--no_progress', action='store_true', help='no progress bars.')
  args = parser.parse_args(argv)
  data_root = args.data_dir
  try:
    tasks = parse_tasks(args.tasks)
    archives = _parse_archives(args.archive, {TASK_FILES[t].source for t in tasks})
  except DataError as e:
    parser.error(str(e))
  try:
    report = prepare(
      tasks,
      data_root,
      archives,
      difficulty=args.difficulty,
      progress=not args.no_progress,
      timeout=args.timeout,
      retries=args.retries,
    )
  except DataError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 1
  _print_report(report, data_root, args.difficulty)
  return 1 if any('error' in entry for entry in report.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
