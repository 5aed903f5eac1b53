"""`lra.prepare` against a local HTTP server on 127.0.0.1 serving tiny archives in the official
layouts: download, Range resume after a dropped connection, servers without Range, damaged and
user-provided archives, offline failure, extraction of only what a task needs, verified reuse."""

import errno
import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from lra import prepare
from lra.core import DataError
from tests.test_lra_listops import write_listops

HOST = '127.0.0.1'


class _Handler(http.server.BaseHTTPRequestHandler):
  """GET of the owner's files, with Range (unless disabled) and an optional dropped connection."""

  def do_GET(self):  # noqa: N802 (http.server's name)
    owner = self.server.owner
    owner.requests.append((self.path, self.headers.get('Range')))
    data = owner.files.get(self.path)
    if data is None:
      self.send_error(404)
      return
    start = 0
    match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
    if match and owner.ranges:
      start = int(match.group(1))
      if start >= len(data):
        self.send_response(416)
        self.send_header('Content-Range', f'bytes */{len(data)}')
        self.end_headers()
        return
      self.send_response(206)
      self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
    else:
      self.send_response(200)
    body = data[start:]
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    cut = owner.drop_after.pop(self.path, None)
    self.wfile.write(body if cut is None else body[:cut])  # HTTP/1.0: the connection then closes.

  def log_message(self, *args):
    pass


class _Server:
  """A threaded HTTP server on 127.0.0.1 and what it serves and saw.

  Attributes:
    files: URL path -> content.
    ranges: whether Range requests are honoured (else every answer is a full 200).
    drop_after: URL path -> bytes sent before the connection is closed, for the next request only.
    requests: (path, Range header or None) of every request, in order.
  """

  def __init__(self):
    self.files, self.drop_after, self.requests, self.ranges = {}, {}, [], True
    self._httpd = http.server.ThreadingHTTPServer((HOST, 0), _Handler)
    self._httpd.owner = self
    self.url = f'http://{HOST}:{self._httpd.server_address[1]}'
    self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
    self._thread.start()

  def close(self):
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join(timeout=10)


@pytest.fixture
def server(monkeypatch):
  monkeypatch.setenv('no_proxy', HOST)
  served = _Server()
  yield served
  served.close()


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


def _tar_gz(entries: dict[str, Path | bytes]) -> bytes:
  """A gzip tar of folders/files (Path, added recursively without caches) and literal bytes."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
    for name, source in entries.items():
      if isinstance(source, bytes):
        info = tarfile.TarInfo(name)
        info.size = len(source)
        tar.addfile(info, io.BytesIO(source))
      else:
        tar.add(
          source, arcname=name, filter=lambda info: None if '/lra_cache' in info.name else info
        )
  return buffer.getvalue()


@pytest.fixture(scope='module')
def official_archives(tiny_lra_data) -> dict[str, bytes]:
  """The three archives in their official layouts, from the tiny generated data, with members no
  task needs (the release's top-level copies, another Pathfinder difficulty, IMDb's unlabelled
  reviews, CIFAR's metadata)."""
  data = {task: Path(path) for task, (path, _) in tiny_lra_data.items()}
  release = 'lra_release/lra_release'
  return {
    'lra_release': _tar_gz(
      {
        'lra_release/listops-1000': data['listops'],
        f'{release}/listops-1000': data['listops'],
        f'{release}/tsv_data': data['retrieval'],
        f'{release}/pathfinder32': data['pathfinder32'] / 'pathfinder32',
        # Another difficulty (easy), here a copy of the generated one (hard).
        f'{release}/pathfinder32/curv_baseline': data['pathfinder32']
        / 'pathfinder32'
        / 'curv_contour_length_14',
        f'{release}/pathfinder128': data['pathx'] / 'pathfinder128',
      }
    ),
    'imdb': _tar_gz(
      {
        'aclImdb': data['text'] / 'aclImdb',
        'aclImdb/train/unsup/0_0.txt': b'unlabelled',
        'aclImdb/imdb.vocab': b'the\n',
      }
    ),
    'cifar10': _tar_gz({'cifar-10-batches-py': data['image'] / 'cifar-10-batches-py'}),
  }


def _serve(monkeypatch, server, archives, corrupt=()):
  """Points `prepare.SOURCES` at the server, with the sizes and checksums of `archives` (the ones in
  `corrupt` are served with one byte changed)."""
  for name, content in archives.items():
    source = prepare.SOURCES[name]
    path = f'/{source.filename}'
    server.files[path] = content[:-1] + bytes([content[-1] ^ 1]) if name in corrupt else content
    known = name != 'lra_release'  # As in the table: no size or checksum for the LRA release.
    monkeypatch.setitem(
      prepare.SOURCES,
      name,
      prepare.Source(
        server.url + path,
        len(content) if known else None,
        hashlib.sha256(content).hexdigest() if known else None,
        source.extract_to,
      ),
    )


def test_prepare_all_tasks_downloads_extracts_only_what_is_needed_and_reuses_it(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  _serve(monkeypatch, server, official_archives)
  root = tmp_path / 'data'
  assert prepare.main(['--tasks', 'all', '--data_dir', str(root), '--no_progress']) == 0
  out = capsys.readouterr().out

  assert sorted(path for path, _ in server.requests) == [
    '/aclImdb_v1.tar.gz',
    '/cifar-10-python.tar.gz',
    '/lra_release.gz',
  ]
  manifest = prepare.read_manifest(root / 'downloads')
  assert manifest == {
    prepare.SOURCES[n].filename: hashlib.sha256(c).hexdigest() for n, c in official_archives.items()
  }
  release = root / 'lra_release' / 'lra_release'
  assert (release / 'listops-1000' / 'basic_train.tsv').is_file()
  assert (release / 'pathfinder32' / 'curv_contour_length_14' / 'metadata').is_dir()
  # Only what the tasks read: no top-level copy, no other difficulty, no unlabelled reviews.
  assert not (root / 'lra_release' / 'listops-1000').exists()
  assert not (release / 'pathfinder32' / 'curv_baseline').exists()
  assert not (root / 'imdb' / 'aclImdb' / 'train' / 'unsup').exists()
  assert not (root / 'imdb' / 'aclImdb' / 'imdb.vocab').exists()
  assert not (root / 'cifar10' / 'cifar-10-batches-py' / 'batches.meta').exists()
  for task in prepare.TASK_FILES:
    data_dir = prepare.task_data_dir(task, root)
    assert any((data_dir / 'lra_cache').iterdir()), f'{task}: no token cache'
    assert f'--config.data.data_dir={data_dir}' in out
  assert 'python train.py --config configs/pathx.py:luna256' in out
  assert f'python -m benchmarks.reproduce --tasks {",".join(prepare.TASK_FILES)}' in out

  # A second run verifies and reuses everything, without a request.
  assert prepare.main(['--tasks', 'all', '--data_dir', str(root), '--no_progress']) == 0
  assert len(server.requests) == 3
  assert capsys.readouterr().out.count('verified') == len(prepare.TASK_FILES)

  # A damaged extracted file is extracted again from the download, still without a request.
  test_file = release / 'listops-1000' / 'basic_test.tsv'
  original = test_file.read_bytes()
  test_file.write_bytes(original[:10])
  assert prepare.main(['--tasks', 'listops', '--data_dir', str(root), '--no_progress']) == 0
  assert test_file.read_bytes() == original
  assert len(server.requests) == 3


def test_a_second_pathfinder_difficulty_is_extracted_beside_the_first(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  _serve(monkeypatch, server, official_archives)
  root = tmp_path / 'data'
  args = ['--tasks', 'pathfinder32', '--data_dir', str(root), '--no_progress']
  assert prepare.main(args) == 0
  assert 'difficulty=' not in capsys.readouterr().out
  assert prepare.main([*args, '--difficulty', 'easy']) == 0
  # The printed commands read what was extracted (the configs default to hard).
  out = capsys.readouterr().out
  assert (
    'seed0 --config.data.data_dir=' in out and ' --config.data.options.difficulty=easy\n' in out
  )
  assert '--seeds 3 -- --config.data.options.difficulty=easy' in out
  folder = root / 'lra_release' / 'lra_release' / 'pathfinder32'
  assert (folder / 'curv_baseline' / 'metadata').is_dir()
  assert (folder / 'curv_contour_length_14' / 'metadata').is_dir()
  capsys.readouterr()
  for difficulty in ('hard', 'easy'):  # Both verified from the record, neither extracted again.
    assert prepare.main([*args, '--difficulty', difficulty]) == 0
    out = capsys.readouterr().out
    assert 'verified' in out and 'extracted' not in out.replace('extracted files', '')
  assert len(server.requests) == 1


def test_pathfinder_checks_only_the_difficulty_asked_for(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  """A file of the other difficulty gone does not make every run of this one extract again; a
  cut-short extraction of the second difficulty keeps the first's record; a damaged record is
  said and treated as missing."""
  _serve(monkeypatch, server, official_archives)
  root = tmp_path / 'data'
  args = ['--tasks', 'pathfinder32', '--data_dir', str(root), '--no_progress']
  assert prepare.main(args) == 0
  prepare._state_path(root, 'pathfinder32', 'partial').touch()  # An easy extraction cut short.
  assert prepare.main([*args, '--difficulty', 'easy']) == 0
  easy = root / 'lra_release' / 'lra_release' / 'pathfinder32' / 'curv_baseline'
  next(easy.glob('imgs/*/*.png')).unlink()
  capsys.readouterr()
  for _ in range(2):
    assert prepare.main(args) == 0
    out = capsys.readouterr().out
    assert 'verified' in out and 'now missing' not in out, out
  record = prepare._state_path(root, 'pathfinder32', 'json')
  record.write_text(record.read_text()[:30])
  assert prepare.main(args) == 0
  out = capsys.readouterr().out
  assert f'cannot read {record}' in out and 'found in place' in out, out


def test_a_complete_partial_download_of_unknown_size_is_not_fetched_again(server, tmp_path):
  content = bytes(range(256)) * 20
  server.files['/file.bin'] = content
  dest = tmp_path / 'file.bin'
  (tmp_path / 'file.bin.part').write_bytes(content)  # A run stopped before the rename.
  prepare.download(f'{server.url}/file.bin', dest, None, retry_wait=0, progress=False)
  assert dest.read_bytes() == content
  assert server.requests == [('/file.bin', f'bytes={len(content)}-')]


def test_a_local_disk_problem_is_one_error_naming_the_path_not_retried(server, tmp_path):
  server.files['/file.bin'] = b'x' * 100
  (tmp_path / 'downloads').write_text('a file where the folder should be')
  with pytest.raises(DataError, match=f'{tmp_path / "downloads"}: File exists'):
    prepare.download(
      f'{server.url}/file.bin', tmp_path / 'downloads' / 'file.bin', None, progress=False
    )
  assert server.requests == []


def test_one_process_prepares_a_folder_at_a_time(tmp_path, capsys):
  root = tmp_path / 'data'
  hold = (
    'import sys, time; from lra import prepare\n'
    'with prepare._locked(prepare.Path(sys.argv[1])):\n'
    '  print("held", flush=True); time.sleep(60)'
  )
  holder = subprocess.Popen(
    [sys.executable, '-c', hold, str(root)],
    stdout=subprocess.PIPE,
    text=True,
    cwd=Path(__file__).parent.parent,
  )
  try:
    assert holder.stdout.readline() == 'held\n'
    assert prepare.main(['--tasks', 'listops', '--data_dir', str(root), '--no_progress']) == 1
    err = capsys.readouterr().err
    assert f'{root} is being prepared by another lra.prepare (pid {holder.pid} on' in err, err
  finally:
    holder.kill()
    holder.wait()


def test_a_read_only_prepared_folder_is_verified_without_a_lock(tmp_path, monkeypatch, capsys):
  root = tmp_path / 'data'
  write_listops(prepare.task_data_dir('listops', root))
  args = ['--tasks', 'listops', '--data_dir', str(root), '--no_progress']

  def refuse(path, number):
    raise OSError(number, os.strerror(number), str(path))

  with monkeypatch.context() as patch:
    patch.setattr(prepare, 'acquire_lock', lambda path: refuse(path, errno.EROFS))
    patch.setattr(os, 'access', lambda path, mode: False)
    assert prepare.main(args) == 0
    assert 'found in place' in capsys.readouterr().out
    # Nor where it has no .prepared folder yet (it cannot be made).
    (root / '.prepared').rmdir()
    patch.setattr(Path, 'mkdir', lambda self, **options: refuse(self, errno.EACCES))
    assert prepare.main(args) == 0
    assert 'found in place' in capsys.readouterr().out
  # A folder it may write is locked, whatever the lock file's trouble.
  monkeypatch.setattr(prepare, 'acquire_lock', lambda path: refuse(path, errno.EACCES))
  assert prepare.main(args) == 1
  assert 'Permission denied' in capsys.readouterr().err
  monkeypatch.setattr(prepare, 'acquire_lock', lambda path: refuse(path, errno.ENOSPC))
  assert prepare.main(args) == 1  # Any other problem is one error naming the folder.
  assert f'Error: {root / ".prepared"}: No space left on device.' in capsys.readouterr().err


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
  content = bytes(range(256)) * 1000
  server.files['/file.bin'] = content
  server.drop_after['/file.bin'] = 100_000
  dest = tmp_path / 'file.bin'
  prepare.download(f'{server.url}/file.bin', dest, len(content), retry_wait=0, progress=False)
  assert dest.read_bytes() == content
  assert server.requests == [('/file.bin', None), ('/file.bin', 'bytes=100000-')]
  assert not (tmp_path / 'file.bin.part').exists()


@pytest.mark.parametrize('ranges', [True, False])
def test_partial_download_of_an_earlier_run_is_completed(server, tmp_path, ranges):
  content = bytes(range(256)) * 1000
  server.files['/file.bin'] = content
  server.ranges = ranges
  dest = tmp_path / 'file.bin'
  (tmp_path / 'file.bin.part').write_bytes(content[:1234])
  prepare.download(f'{server.url}/file.bin', dest, len(content), retry_wait=0, progress=False)
  # With Range only the rest is sent; without it the full answer replaces the partial file.
  assert dest.read_bytes() == content
  assert server.requests == [('/file.bin', 'bytes=1234-')]


def test_server_without_range_support_is_read_again_after_a_dropped_connection(server, tmp_path):
  content = bytes(range(256)) * 1000
  server.files['/file.bin'] = content
  server.ranges = False
  server.drop_after['/file.bin'] = 5000
  dest = tmp_path / 'file.bin'
  prepare.download(f'{server.url}/file.bin', dest, None, retry_wait=0, progress=False)
  assert dest.read_bytes() == content
  assert len(server.requests) == 2


def test_wrong_size_on_the_server_is_an_error(server, tmp_path):
  server.files['/file.bin'] = b'x' * 100
  with pytest.raises(DataError, match='reports 100 bytes, expected 101'):
    prepare.download(f'{server.url}/file.bin', tmp_path / 'file.bin', 101, progress=False)


def test_corrupted_download_is_kept_aside_and_reported(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  _serve(monkeypatch, server, {'imdb': official_archives['imdb']}, corrupt=('imdb',))
  root = tmp_path / 'data'
  assert prepare.main(['--tasks', 'text', '--data_dir', str(root), '--no_progress']) == 1
  err = capsys.readouterr().err
  assert 'The download is damaged' in err and '--archive' in err
  kept = root / 'downloads' / 'aclImdb_v1.tar.gz.corrupt'
  assert kept.read_bytes() == server.files['/aclImdb_v1.tar.gz']
  assert not (root / 'imdb').exists()


def test_archive_damaged_after_download_is_reported_and_kept(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  _serve(monkeypatch, server, {'cifar10': official_archives['cifar10']})
  root = tmp_path / 'data'
  assert prepare.main(['--tasks', 'image', '--data_dir', str(root), '--no_progress']) == 0
  archive = root / 'downloads' / 'cifar-10-python.tar.gz'
  damaged = bytearray(archive.read_bytes())
  damaged[len(damaged) // 2] ^= 1
  archive.write_bytes(bytes(damaged))
  (root / 'cifar10' / 'cifar-10-batches-py' / 'test_batch').unlink()  # Needs the archive again.
  capsys.readouterr()
  assert prepare.main(['--tasks', 'image', '--data_dir', str(root), '--no_progress']) == 1
  err = capsys.readouterr().err
  assert 'changed since it was downloaded' in err and 'Nothing was deleted' in err
  assert archive.read_bytes() == bytes(damaged)
  assert len(server.requests) == 1


def test_user_archive_is_used_offline_and_a_wrong_one_is_left_alone(
  official_archives, tmp_path, monkeypatch, capsys
):
  offline = f'http://{HOST}:{_closed_port()}'
  content = official_archives['cifar10']
  monkeypatch.setitem(
    prepare.SOURCES,
    'cifar10',
    prepare.Source(
      f'{offline}/cifar-10-python.tar.gz',
      len(content),
      hashlib.sha256(content).hexdigest(),
      'cifar10',
    ),
  )
  wrong = tmp_path / 'mine' / 'cifar-10-python.tar.gz'
  wrong.parent.mkdir()
  wrong.write_bytes(content[::-1])
  root = tmp_path / 'data'
  assert (
    prepare.main(
      ['--tasks', 'image', '--data_dir', str(root), '--archive', str(wrong), '--no_progress']
    )
    == 1
  )
  assert 'is not the official cifar-10-python.tar.gz' in capsys.readouterr().err
  assert wrong.read_bytes() == content[::-1]

  good = tmp_path / 'mine' / 'cifar.tgz'
  good.write_bytes(content)
  assert (
    prepare.main(
      ['--tasks', 'image', '--data_dir', str(root), '--archive', f'cifar10={good}', '--no_progress']
    )
    == 0
  )
  assert good.read_bytes() == content
  assert not (root / 'downloads').exists()
  assert (root / 'cifar10' / 'cifar-10-batches-py' / 'test_batch').is_file()


def test_offline_fails_at_once_naming_the_url_and_the_manual_alternative(
  tmp_path, monkeypatch, capsys
):
  url = f'http://{HOST}:{_closed_port()}/lra_release.gz'
  monkeypatch.setitem(prepare.SOURCES, 'lra_release', prepare.Source(url, None, None, '.'))
  waits = []
  monkeypatch.setattr(prepare.time, 'sleep', waits.append)
  root = tmp_path / 'data'
  assert (
    prepare.main(['--tasks', 'listops,retrieval', '--data_dir', str(root), '--no_progress']) == 1
  )
  err = capsys.readouterr().err
  assert f'Cannot reach {url}' in err and '--archive PATH' in err
  assert waits == []  # No retry: the first refused connection ends it.
  assert not (root / 'downloads' / 'lra_release.gz').exists()


def test_unknown_task_and_unmatched_archive_name_are_usage_errors(tmp_path, capsys):
  with pytest.raises(SystemExit):
    prepare.main(['--tasks', 'listops,sorting', '--data_dir', str(tmp_path)])
  assert 'sorting' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    prepare.main(['--tasks', 'text', '--data_dir', str(tmp_path), '--archive', 'imdb.tgz'])
  assert 'SOURCE=PATH' in capsys.readouterr().err


def test_archive_without_a_task_s_members_fails_that_task_only(
  server, tiny_lra_data, tmp_path, monkeypatch, capsys
):
  listops = Path(tiny_lra_data['listops'][0])
  listops_only = _tar_gz({'lra_release/lra_release/listops-1000': listops})
  _serve(monkeypatch, server, {'lra_release': listops_only})
  root = tmp_path / 'data'
  assert (
    prepare.main(['--tasks', 'listops,retrieval', '--data_dir', str(root), '--no_progress']) == 1
  )
  captured = capsys.readouterr()
  assert 'has no member(s) lra_release/lra_release/tsv_data/new_aan_pairs.train.tsv' in captured.err
  assert 'its first members are: lra_release' in captured.err
  assert re.search(r'listops +\d+/\d+/\d+ ', captured.out)  # Loaded: its split sizes.
  assert len(server.requests) == 1
  # The next run reuses ListOps and tries Retrieval again from the kept download.
  assert (
    prepare.main(['--tasks', 'listops,retrieval', '--data_dir', str(root), '--no_progress']) == 1
  )
  assert 'verified 3 extracted files' in capsys.readouterr().out
  assert len(server.requests) == 1


def test_prepared_tfds_dataset_is_used_without_a_download(tmp_path, monkeypatch, capsys):
  from tests.test_lra_sources import example_proto, write_shard

  monkeypatch.setitem(
    prepare.SOURCES,
    'imdb',
    prepare.Source(f'http://{HOST}:{_closed_port()}/aclImdb_v1.tar.gz', None, None, 'imdb'),
  )
  root = tmp_path / 'data'
  shards = prepare.task_data_dir('text', root) / 'imdb_reviews' / 'plain_text' / '1.0.0'
  for split, count in (('train', 3), ('test', 2)):
    write_shard(
      shards / f'imdb_reviews-{split}.tfrecord-00000-of-00001',
      [example_proto(text=b'review', label=i % 2) for i in range(count)],
    )
  assert prepare.main(['--tasks', 'text', '--data_dir', str(root), '--no_progress']) == 0
  # 3 training reviews: 1 held out for validation (lra.text's default), 2 for training.
  assert re.search(r'text +2/1/2 .*found in place \(read by its loader\)', capsys.readouterr().out)
  assert not (root / 'downloads').exists()


def test_task_lists_are_in_table_order_once_and_none_is_refused():
  """`--tasks` gives the table's tasks in its order, each once; an empty list is an error."""
  assert prepare.parse_tasks('retrieval, listops,listops') == ['listops', 'retrieval']
  for spec in ('', ' , '):
    with pytest.raises(DataError, match='none given'):
      prepare.parse_tasks(spec)


def test_an_archive_no_task_asked_for_needs_is_a_usage_error(tmp_path, capsys):
  """`--archive SOURCE=PATH` for a source none of the tasks reads is refused, naming its file."""
  with pytest.raises(SystemExit):
    prepare.main(['--tasks', 'listops', '--data_dir', str(tmp_path), '--archive', 'imdb=x.tgz'])
  assert 'no task asked for needs aclImdb_v1.tar.gz' in capsys.readouterr().err


def test_a_missing_user_archive_is_one_error_naming_it(tmp_path, capsys):
  """An `--archive` path that is no file fails the task with 'no such file', nothing created."""
  missing = tmp_path / 'cifar-10-python.tar.gz'
  args = ['--tasks', 'image', '--data_dir', str(tmp_path / 'data'), '--no_progress']
  assert prepare.main([*args, '--archive', str(missing)]) == 1
  assert f'--archive {missing}: no such file.' in capsys.readouterr().err
  assert not (tmp_path / 'data' / 'cifar10').exists()


def test_a_user_archive_of_another_size_is_named_by_its_size(
  official_archives, tmp_path, monkeypatch, capsys
):
  """A truncated copy passed as `--archive` is refused by its size, the official one named."""
  content = official_archives['cifar10']
  _serve_offline(monkeypatch, 'cifar10', content)
  short = tmp_path / 'cifar-10-python.tar.gz'
  short.write_bytes(content[:-5])
  args = ['--tasks', 'image', '--data_dir', str(tmp_path / 'data'), '--no_progress']
  assert prepare.main([*args, '--archive', str(short)]) == 1
  assert f'{short} has {len(content) - 5} bytes, but ' in capsys.readouterr().err


def _serve_offline(monkeypatch, name, content):
  """Points `prepare.SOURCES[name]` at a closed port, with the size and checksum of `content`."""
  source = prepare.SOURCES[name]
  monkeypatch.setitem(
    prepare.SOURCES,
    name,
    prepare.Source(
      f'http://{HOST}:{_closed_port()}/{source.filename}',
      len(content),
      hashlib.sha256(content).hexdigest(),
      source.extract_to,
    ),
  )


def test_a_complete_partial_download_of_known_size_is_renamed_offline(tmp_path):
  """A `.part` as long as the expected size (a run stopped before the rename) is the download:
  renamed with no request, also when no server is reachable."""
  content = bytes(range(256)) * 4
  dest = tmp_path / 'file.bin'
  (tmp_path / 'file.bin.part').write_bytes(content)
  url = f'http://{HOST}:{_closed_port()}/file.bin'
  prepare.download(url, dest, len(content), retry_wait=0, progress=False)
  assert dest.read_bytes() == content and not (tmp_path / 'file.bin.part').exists()


def test_retries_counts_the_attempts_after_a_failed_one(server, tmp_path):
  """`retries=1` resumes one dropped connection; `retries=0` gives up after it, keeping the part."""
  content = bytes(range(256)) * 100
  server.files['/file.bin'] = content
  server.drop_after['/file.bin'] = 1000
  dest = tmp_path / 'file.bin'
  prepare.download(
    f'{server.url}/file.bin', dest, len(content), retries=1, retry_wait=0, progress=False
  )
  assert dest.read_bytes() == content
  server.drop_after['/file.bin'] = 1000
  other = tmp_path / 'other.bin'
  with pytest.raises(DataError, match='download failed 1 times'):
    prepare.download(f'{server.url}/file.bin', other, len(content), retries=0, progress=False)
  assert (tmp_path / 'other.bin.part').stat().st_size == 1000


def test_a_range_answer_from_another_offset_is_an_error(server, tmp_path, monkeypatch):
  """A 206 whose Content-Range starts elsewhere than the byte asked for is refused, not appended."""
  content = bytes(range(256)) * 100
  server.files['/file.bin'] = content
  (tmp_path / 'file.bin.part').write_bytes(content[:1000])

  def from_the_start(handler):
    handler.server.owner.requests.append((handler.path, handler.headers.get('Range')))
    handler.send_response(206)
    handler.send_header('Content-Range', f'bytes 0-{len(content) - 1}/{len(content)}')
    handler.send_header('Content-Length', str(len(content)))
    handler.end_headers()
    handler.wfile.write(content)

  monkeypatch.setattr(_Handler, 'do_GET', from_the_start)
  with pytest.raises(DataError, match="bytes 1000- with Content-Range 'bytes 0-"):
    prepare.download(f'{server.url}/file.bin', tmp_path / 'file.bin', None, progress=False)
  assert (tmp_path / 'file.bin.part').read_bytes() == content[:1000]


def test_a_malformed_manifest_line_is_named(tmp_path):
  """`SHA256SUMS` lines that are not `<sha256>  <name>` fail naming the line; blank ones are
  skipped."""
  digest = hashlib.sha256(b'x').hexdigest()
  (tmp_path / prepare.MANIFEST).write_text(f'{digest}  a.gz\n\n{digest} b.gz\n')
  with pytest.raises(DataError, match=f'{prepare.MANIFEST}:3: expected'):
    prepare.read_manifest(tmp_path)
  (tmp_path / prepare.MANIFEST).write_text(f'{digest}  a.gz\n\n{digest[:-1]}  b.gz\n')
  with pytest.raises(DataError, match=f'{prepare.MANIFEST}:3: expected'):
    prepare.read_manifest(tmp_path)
  (tmp_path / prepare.MANIFEST).write_text(f'{digest}  a.gz\n\n')
  assert prepare.read_manifest(tmp_path) == {'a.gz': digest}


def test_a_damaged_download_is_moved_aside_and_the_next_run_downloads_afresh(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  """The damaged download leaves `downloads/` (kept as `.corrupt`), so a run after the server is
  mended downloads it again and succeeds."""
  _serve(monkeypatch, server, {'imdb': official_archives['imdb']}, corrupt=('imdb',))
  root = tmp_path / 'data'
  args = ['--tasks', 'text', '--data_dir', str(root), '--no_progress']
  assert prepare.main(args) == 1
  assert not (root / 'downloads' / 'aclImdb_v1.tar.gz').exists()
  server.files['/aclImdb_v1.tar.gz'] = official_archives['imdb']
  assert prepare.main(args) == 0
  assert len(server.requests) == 2
  assert (root / 'downloads' / 'aclImdb_v1.tar.gz.corrupt').is_file()


def test_an_archive_put_into_downloads_by_hand_is_recorded_in_the_manifest(
  official_archives, tmp_path, monkeypatch
):
  """A copy placed in `downloads/` without a manifest entry is used offline and its SHA-256
  recorded, so that later damage to it is detected."""
  content = official_archives['cifar10']
  _serve_offline(monkeypatch, 'cifar10', content)
  root = tmp_path / 'data'
  (root / 'downloads').mkdir(parents=True)
  (root / 'downloads' / 'cifar-10-python.tar.gz').write_bytes(content)
  assert prepare.main(['--tasks', 'image', '--data_dir', str(root), '--no_progress']) == 0
  assert prepare.read_manifest(root / 'downloads') == {
    'cifar-10-python.tar.gz': hashlib.sha256(content).hexdigest()
  }


def test_extract_takes_exact_names_and_whole_folders_only(tmp_path):
  """An exact member does not take a longer name, a folder `d/sub/` does not take `d/subway/`."""
  archive = tmp_path / 'a.tar.gz'
  archive.write_bytes(
    _tar_gz(
      {
        name: name.encode()
        for name in ('d/a.tsv', 'd/a.tsv.orig', 'd/sub/x', 'd/sub/y/z', 'd/subway/w')
      }
    )
  )
  members = {'task': ('d/a.tsv', 'd/sub/')}
  extracted, first = prepare.extract(archive, tmp_path / 'out', members, progress=False)
  assert extracted == {'task': {'d/a.tsv': 7, 'd/sub/x': 7, 'd/sub/y/z': 9}}
  assert first == ['d/a.tsv', 'd/a.tsv.orig', 'd/sub/x', 'd/sub/y/z', 'd/subway/w']
  assert sorted(p.name for p in (tmp_path / 'out').rglob('*') if p.is_file()) == ['a.tsv', 'x', 'z']
  assert prepare.missing_members(['d/a.tsv', 'd/sub/', 'd/b/'], list(extracted['task'])) == ['d/b/']


def test_an_extraction_cut_short_is_done_again_not_verified(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  """With the `.partial` marker of a cut-short extraction, the task is extracted again from the
  kept download (no request), even though its files match the earlier record."""
  _serve(monkeypatch, server, {'lra_release': official_archives['lra_release']})
  root = tmp_path / 'data'
  args = ['--tasks', 'listops', '--data_dir', str(root), '--no_progress']
  assert prepare.main(args) == 0
  prepare._state_path(root, 'listops', 'partial').touch()
  capsys.readouterr()
  assert prepare.main(args) == 0
  out = capsys.readouterr().out
  assert 'extracted 3 files' in out and 'verified' not in out, out
  assert not prepare._state_path(root, 'listops', 'partial').exists()
  assert len(server.requests) == 1


def test_an_empty_task_folder_is_not_data_in_place(
  server, official_archives, tmp_path, monkeypatch, capsys
):
  """An empty Pathfinder difficulty folder is not taken for the data: the task is extracted."""
  _serve(monkeypatch, server, {'lra_release': official_archives['lra_release']})
  root = tmp_path / 'data'
  folder = root / 'lra_release' / 'lra_release' / 'pathfinder32' / 'curv_contour_length_14'
  folder.mkdir(parents=True)
  assert not prepare.data_present('pathfinder32', root)
  args = ['--tasks', 'pathfinder32', '--data_dir', str(root), '--no_progress']
  assert prepare.main(args) == 0
  assert 'extracted' in capsys.readouterr().out
  assert (folder / 'metadata').is_dir()


def test_path_x_at_another_difficulty_is_loaded_at_that_difficulty(
  server, tiny_lra_data, tmp_path, monkeypatch, capsys
):
  """`--tasks pathx --difficulty easy` extracts and loads Path-X's easy folder."""
  pathx = Path(tiny_lra_data['pathx'][0]) / 'pathfinder128'
  release = 'lra_release/lra_release/pathfinder128'
  archive = _tar_gz({f'{release}/curv_baseline': pathx / 'curv_contour_length_14'})
  _serve(monkeypatch, server, {'lra_release': archive})
  root = tmp_path / 'data'
  args = ['--tasks', 'pathx', '--data_dir', str(root), '--no_progress', '--difficulty', 'easy']
  assert prepare.main(args) == 0
  assert re.search(r'pathx +\d+/\d+/\d+ ', capsys.readouterr().out)
