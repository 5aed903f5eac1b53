"""Data problems surface at load time: empty splits, truncation, a damaged or half-written cache,
and generators that would overwrite existing data."""

import dataclasses
import errno
import json
import logging
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import corpora
import lra
from corpora import sequence_generator, translation_generator, wmt14
from lra import cache as cache_lib
from lra import files, listops, listops_generator, pathfinder_generator, synthetic
from tests.test_lra_listops import ROWS, write_listops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('content', ['', 'Source\tTarget\r\n'], ids=['zero_bytes', 'header_only'])
def test_empty_listops_split_names_its_file(tmp_path, content):
  write_listops(tmp_path)
  (tmp_path / 'basic_test.tsv').write_text(content)
  with pytest.raises(lra.DataError, match=re.escape(f'{tmp_path / "basic_test.tsv"}: no examples')):
    lra.load_task('listops', tmp_path)


def test_empty_splits_of_other_tasks_name_their_source(tmp_path):
  synthetic.write_retrieval(tmp_path / 'aan', 4, seed=0)
  (tmp_path / 'aan' / 'new_aan_pairs.eval.tsv').write_text('\n')
  with pytest.raises(lra.DataError, match=r'new_aan_pairs\.eval\.tsv: no examples'):
    lra.load_task('retrieval', tmp_path / 'aan', cache=False)
  sequence_generator.write(
    'lm', tmp_path / 'lm', num_train=20, num_val=3, num_test=3, min_length=5, max_length=20
  )
  (tmp_path / 'lm' / 'validation.txt').write_text('')
  with pytest.raises(lra.DataError, match=r'validation\.txt: no examples for the lm validation'):
    corpora.load_task('lm', tmp_path / 'lm', cache=False)
  # 8 images split 80/10/10 leave no validation image.
  pathfinder_generator.generate(tmp_path / 'pf', resolution=32, num_examples=8)
  with pytest.raises(lra.DataError, match=r'10% of the images listed in .*metadata: no examples'):
    lra.load_task('pathfinder32', tmp_path / 'pf', cache=False)


def test_truncation_is_reported_once_per_split_also_from_the_cache(tmp_path, caplog):
  write_listops(tmp_path)  # 4, 6 and 7 tokens
  for load in range(2):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      data = lra.load_task('listops', tmp_path, max_length=5)
    assert isinstance(data.train.inputs, np.memmap) == (load == 1)
    assert data.train.num_truncated == 2
    lines = [r.getMessage() for r in caplog.records if 'truncated' in r.getMessage()]
    assert len(lines) == 3
    for split, name in listops.FILES.items():
      assert (
        sum(
          f'listops {split} ({tmp_path / name}): 2 of 3 examples are longer than '
          'max_length 5' in line
          for line in lines
        )
        == 1
      )
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert lra.load_task('listops', tmp_path, max_length=7).test.num_truncated == 0
  assert not caplog.records


def test_truncation_counts_at_the_boundary_of_token_tasks(tmp_path):
  # LM: BOS + line and line + EOS must fit max_length; seq2seq: the target + EOS.
  for name in ('train.txt', 'validation.txt', 'test.txt'):
    (tmp_path / name).write_text('abc\nabcd\n')
  assert corpora.load_task('lm', tmp_path, max_length=4, cache=False).train.num_truncated == 1
  for name in ('train.tsv', 'validation.tsv', 'test.tsv'):
    (tmp_path / name).write_text('ab\tcd\nabc\tc\nab\tcde\n')
  data = corpora.load_task('seq2seq', tmp_path, max_length=2, max_target_length=3, cache=False)
  assert data.test.num_truncated == 2


@pytest.mark.parametrize('field', ['lengths', 'lengths2'])
def test_lengths_may_reach_max_length_and_no_further(field):
  max_length = 4

  def check(length):
    inputs, full = np.ones((2, max_length), np.uint8), np.full(2, max_length, np.int32)
    split = lra.Split(inputs, full, np.zeros(2, np.int32), inputs2=inputs, lengths2=full)
    split = dataclasses.replace(split, **{field: np.array([0, length], np.int32)})
    lra.core.check_arrays(
      'toy',
      {'train': split},
      {'train': 'x.tsv'},
      vocab_size=2,
      num_classes=2,
      max_length=max_length,
    )

  check(max_length)
  with pytest.raises(
    lra.DataError, match=rf'x.tsv: toy train split: {field} holds {max_length + 1}, outside'
  ):
    check(max_length + 1)


def load_retrieval(path, **options):
  return lra.load_task('retrieval', path, max_length=64, **options)


def test_a_killed_cache_build_leaves_nothing_behind(tmp_path):
  synthetic.write_retrieval(tmp_path, 8, seed=0)
  # A process killed (SIGKILL) after writing the first array of its entry.
  code = (
    'import os, signal, numpy as np, lra; save = np.save\n'
    'def save_and_die(*a): save(*a); os.kill(os.getpid(), signal.SIGKILL)\n'
    'np.save = save_and_die\n'
    f'lra.load_task("retrieval", {str(tmp_path)!r}, max_length=64)\n'
  )
  killed = subprocess.run([sys.executable, '-c', code], capture_output=True)
  assert killed.returncode == -signal.SIGKILL
  cache_dir = tmp_path / 'lra_cache'
  assert [p.name.startswith('.tmp@') for p in cache_dir.iterdir()] == [True]
  expected = load_retrieval(tmp_path, cache=False)
  np.testing.assert_array_equal(load_retrieval(tmp_path).train.inputs, expected.train.inputs)
  assert [p.name.startswith('retrieval-') for p in cache_dir.iterdir()] == [True]


def test_a_cache_entry_is_complete_with_its_marker_before_it_takes_its_name(tmp_path, monkeypatch):
  """A writer killed between the rename and the marker would leave an entry without one, which no
  later rename can replace."""
  renamed = []
  rename = os.rename

  def rename_and_look(source, destination):
    renamed.append(sorted(p.name for p in Path(source).iterdir()))
    marker = json.loads((Path(source) / 'complete').read_text())
    renamed.append(sorted(marker))
    rename(source, destination)

  monkeypatch.setattr(cache_lib.os, 'rename', rename_and_look)
  cache = cache_lib.Cache(tmp_path / 'cache')
  cache.load_or_build('k', lambda: {'a': np.arange(3), 'b': np.ones(2)}, params={})
  assert renamed == [['a.npy', 'b.npy', 'complete'], ['a', 'b']]
  monkeypatch.undo()
  served = cache.load_or_build('k', lambda: pytest.fail('rebuilt'), params={})
  assert isinstance(served['a'], np.memmap) and served['a'].tolist() == [0, 1, 2]


def test_temporaries_of_live_writers_are_kept_and_of_other_hosts_expire(tmp_path):
  cache_dir = tmp_path / 'cache'
  live = cache_dir / f'.tmp@{cache_lib.socket.gethostname()}@{os.getpid()}@k-1'
  fresh, old = cache_dir / '.tmp@elsewhere@1@k-2', cache_dir / '.tmp@elsewhere@1@k-3'
  for path in (live, fresh, old):
    path.mkdir(parents=True)
  two_days_ago = time.time() - 2 * 24 * 3600
  os.utime(old, (two_days_ago, two_days_ago))
  cache_lib.Cache(cache_dir).load_or_build('k', lambda: {'a': np.arange(3)}, params={})
  assert live.exists() and fresh.exists() and not old.exists()


def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(path.stat().st_size - 8)


def flip_last_byte(path):
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', [truncate, flip_last_byte, os.remove])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
  synthetic.write_retrieval(tmp_path, 8, seed=0)
  expected = load_retrieval(tmp_path, cache=False)
  load_retrieval(tmp_path)
  (entry,) = (tmp_path / 'lra_cache').iterdir()
  damage(entry / 'train.inputs2.npy')
  with caplog.at_level(logging.WARNING):
    healed = load_retrieval(tmp_path)
  assert any(f'Cache entry {entry} is damaged' in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(healed.train.inputs2, expected.train.inputs2)
  again = load_retrieval(tmp_path)
  assert isinstance(again.train.inputs2, np.memmap)
  np.testing.assert_array_equal(again.train.inputs2, expected.train.inputs2)


def test_a_damaged_marker_is_rebuilt_and_an_undeletable_entry_is_named(tmp_path, monkeypatch):
  synthetic.write_retrieval(tmp_path, 8, seed=0)
  load_retrieval(tmp_path)
  (entry,) = (tmp_path / 'lra_cache').iterdir()
  (entry / 'complete').write_text('{"train.inputs": ')
  assert load_retrieval(tmp_path).train.num_examples == 8
  (entry / 'train.targets.npy').write_bytes(b'not an array')

  def refuse(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(path))

  monkeypatch.setattr(cache_lib.shutil, 'rmtree', refuse)
  with pytest.raises(lra.DataError, match=re.escape(f'Cache entry {entry} is damaged')):
    load_retrieval(tmp_path)


def tiny_listops_args(output_dir) -> list[str]:
  """`lra.listops_generator` flags for 5/2/2 short trees in `output_dir`."""
  flags = (
    '--num_train 5 --num_val 2 --num_test 2 --min_length 5 --max_length 30 --max_depth 3 '
    '--max_args 4'
  )
  return ['--output_dir', str(output_dir), *flags.split()]


def test_generators_refuse_to_overwrite_unless_told(tmp_path, capsys):
  args = tiny_listops_args(tmp_path)
  listops_generator.main(args)
  before = (tmp_path / 'basic_train.tsv').read_text()
  with pytest.raises(SystemExit) as exit_info:
    listops_generator.main(args + ['--seed', '1'])
  assert exit_info.value.code == 1
  error = capsys.readouterr().err
  # An error of the data, not of a flag: without argparse's usage.
  assert error.startswith(
    'Error: Refusing to overwrite existing data (written by this command with other settings: '
  )
  assert 'usage:' not in error
  assert (tmp_path / 'basic_train.tsv').read_text() == before
  # Settings no tree fits are refused before --overwrite deletes anything.
  with pytest.raises(SystemExit):
    listops_generator.main(args + ['--min_length', '30', '--max_length', '31', '--overwrite'])
  assert 'no room for a tree' in capsys.readouterr().err
  assert (tmp_path / 'basic_train.tsv').read_text() == before
  listops_generator.main(args + ['--seed', '1', '--overwrite'])
  assert (tmp_path / 'basic_train.tsv').read_text() != before
  writers = [
    lambda seed, overwrite: sequence_generator.write(
      'sort', tmp_path / 'sort', num_train=4, num_val=2, num_test=2, seed=seed, overwrite=overwrite
    ),
    lambda seed, overwrite: pathfinder_generator.generate(
      tmp_path / 'pf', num_examples=2, seed=seed, overwrite=overwrite
    ),
  ]
  writers += [
    lambda seed, overwrite, w=w: w(tmp_path / 'syn', 10, seed, overwrite)
    for w in synthetic.WRITERS.values()
  ]
  for write in writers:
    write(0, False)
    with pytest.raises(lra.DataError, match='Refusing to overwrite'):
      write(1, False)
    write(1, True)


def test_a_generated_folder_missing_a_split_names_it_and_the_command_that_wrote_it(
  tmp_path, capsys
):
  data_dir = tmp_path / "my data's"
  args = tiny_listops_args(data_dir)
  listops_generator.main([*args, '--seed', '3'])
  written = {name: (data_dir / name).read_bytes() for name in listops.FILES.values()}
  (data_dir / 'basic_val.tsv').unlink()
  with pytest.raises(SystemExit):
    listops_generator.main([*args, '--seed', '3'])
  assert (
    'Refusing to overwrite existing data (written by this command with these settings, but '
    'basic_val.tsv is gone since)' in capsys.readouterr().err
  )
  # The loader's hint is the command that wrote the folder (its record), not a default one.
  with pytest.raises(lra.DataError) as raised:
    lra.load_task('listops', data_dir, max_length=30)
  command = re.search(r'Generate them with: (.*)', str(raised.value))[1]
  assert '--seed 3' in command and '--num_train 5' in command
  listops_generator.main([*shlex.split(command)[3:], '--overwrite'])
  assert {name: (data_dir / name).read_bytes() for name in listops.FILES.values()} == written
  # Without a record, the folder's files are named as not this command's.
  (data_dir / files.GENERATED_RECORD.format(name='basic_train.tsv')).unlink()
  with pytest.raises(SystemExit):
    listops_generator.main([*args, '--seed', '3'])
  assert 'Refusing to overwrite existing data (not written by this command: no record of it)' in (
    capsys.readouterr().err
  )


def _tree_state(root):
  return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob('*')) if p.is_file()}


def test_generators_rerun_with_the_same_settings_is_a_no_op_unless_outputs_changed(
  tmp_path, capsys
):
  args = tiny_listops_args(tmp_path)
  listops_generator.main(args)
  before = _tree_state(tmp_path)
  capsys.readouterr()
  listops_generator.main(args)
  assert 'already written with these settings; kept.' in capsys.readouterr().err
  assert _tree_state(tmp_path) == before
  # Every generator says so, none that it wrote.
  pathfinder_args = ['--output_dir', str(tmp_path / 'pf10'), '--num_examples', '10']
  pathfinder_generator.main(pathfinder_args)
  capsys.readouterr()
  pathfinder_generator.main(pathfinder_args)
  out, err = capsys.readouterr()
  assert 'kept.' in err and 'rote' not in out + err
  # A split changed by hand no longer matches the record: refused, and left as it is.
  with open(tmp_path / 'basic_val.tsv', 'a') as f:
    f.write('0\t( [MAX 1 2 ] )\n')
  edited = _tree_state(tmp_path)
  with pytest.raises(SystemExit):
    listops_generator.main(args)
  assert (
    'Refusing to overwrite existing data (written by this command with these settings, but '
    'changed since (other sizes))' in capsys.readouterr().err
  )
  assert _tree_state(tmp_path) == edited
  # Same for the other generators (a folder output: pathfinder, synthetic).
  pathfinder_generator.generate(tmp_path / 'pf', num_examples=2)
  synthetic.write_image(tmp_path / 'syn', 10, 0)
  before = _tree_state(tmp_path)
  pathfinder_generator.generate(tmp_path / 'pf', num_examples=2)
  synthetic.write_image(tmp_path / 'syn', 10, 0)
  assert _tree_state(tmp_path) == before


@pytest.mark.parametrize(
  'main, args',
  [
    (listops_generator.main, tiny_listops_args),
    (pathfinder_generator.main, lambda out: ['--output_dir', str(out), '--num_examples', '10']),
    (synthetic.main, lambda out: ['--task', 'text', '--output_dir', str(out)]),
    (sequence_generator.main, lambda out: ['--output_dir', str(out)]),
    (translation_generator.main, lambda out: ['--output_dir', str(out)]),
    (wmt14.main, lambda out: ['--output_dir', str(out)]),
  ],
  ids=['listops', 'pathfinder', 'synthetic', 'sequences', 'translation', 'wmt14'],
)
@pytest.mark.parametrize('under', ['', 'sub'])
def test_generators_refuse_a_file_as_output_dir_with_one_error_line(
  tmp_path, capsys, main, args, under
):
  (tmp_path / 'q.sh').write_text('#!/bin/sh\n')
  with pytest.raises(SystemExit) as info:
    main(args(tmp_path / 'q.sh' / under))
  assert info.value.code == 2
  error = capsys.readouterr().err.splitlines()[-1]
  path = tmp_path / 'q.sh'
  assert error.endswith(f'error: argument --output_dir: {path} exists and is not a folder')
  assert path.read_text() == '#!/bin/sh\n'


def test_missing_split_hint_mentions_overwrite_when_other_splits_exist(tmp_path):
  with pytest.raises(lra.DataError) as nothing:
    lra.load_task('listops', tmp_path)
  assert '--overwrite' not in str(nothing.value)
  write_listops(tmp_path, rows=ROWS[:1])
  (tmp_path / 'basic_test.tsv').unlink()
  with pytest.raises(
    lra.DataError,
    match='(?s)basic_test.tsv   \\(missing\\).*listops_generator'
    '.*refuses to overwrite.*--overwrite',
  ):
    lra.load_task('listops', tmp_path)


def test_a_folder_where_a_data_file_belongs_is_named_not_opened(tmp_path):
  write_listops(tmp_path, rows=ROWS[:1])
  (tmp_path / 'basic_val.tsv').unlink()
  (tmp_path / 'basic_val.tsv').mkdir()
  with pytest.raises(lra.DataError, match=r'basic_val.tsv   \(not a file\)'):
    lra.load_task('listops', tmp_path)


def test_overwriting_outputs_keeps_the_old_ones_aside_until_the_new_are_written(tmp_path):
  """Outputs being regenerated have no record until the generator writes them all: a run killed
  meanwhile leaves outputs that no record vouches for. The old ones are put back should the new
  ones fail, and deleted once they are written."""
  paths = [tmp_path / 'train.txt', tmp_path / 'test.txt']
  for path in paths:
    path.write_text('old')
  files.record_outputs(paths, {'seed': 1})
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  for failure in (lra.DataError('too few distinct trees'), KeyboardInterrupt()):
    with pytest.raises(type(failure)), files.writing_outputs(paths, True, {'seed': 2}) as todo:
      assert todo and files.recorded_settings(paths) is None
      assert not any(p.exists() for p in paths)
      paths[0].write_text('part of the new')
      raise failure
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
  with files.writing_outputs(paths, True, {'seed': 2}) as todo:
    assert todo
    for path in paths:
      path.write_text('new')
  assert files.recorded_settings(paths) == {'seed': 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == [
    '.generated-train.txt.json',
    'test.txt',
    'train.txt',
  ]
  assert paths[0].read_text() == 'new'


def test_concurrent_atomic_writes_never_show_a_part(tmp_path):
  """Two processes rewriting one file: every read sees one whole version, no temporary file is
  left, and neither writer fails."""
  path = tmp_path / 'record.json'
  files.write_atomically(path, 'a' * 100_000)
  write = (
    'import sys; from lra import files\n'
    'for _ in range(200): files.write_atomically(sys.argv[1], sys.argv[2] * 100_000)'
  )
  writers = [
    subprocess.Popen([sys.executable, '-c', write, str(path), letter], cwd=ROOT) for letter in 'bc'
  ]
  while any(w.poll() is None for w in writers):
    text = path.read_text()
    assert len(text) == 100_000 and len(set(text)) == 1
  assert [w.returncode for w in writers] == [0, 0]
  assert os.listdir(tmp_path) == ['record.json']


def test_a_lock_whose_record_cannot_be_written_is_not_kept(tmp_path, monkeypatch):
  """A full disk while writing the holder's pid raises, and leaves the lock free (a notebook that
  retries, once there is space, takes it)."""
  path = tmp_path / 'lock'

  def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with monkeypatch.context() as patch:
    patch.setattr(os, 'pwrite', full)
    with pytest.raises(OSError, match='No space left'):
      files.acquire_lock(path)
  fd = files.acquire_lock(path)
  assert path.read_text().startswith(f'pid {os.getpid()} on ')
  os.close(fd)


def test_another_users_lock_file_still_locks(tmp_path, monkeypatch):
  """A lock file this process may not write (another user's, in a shared folder) is locked
  read-only: a second holder is refused all the same."""
  path = tmp_path / 'lock'
  path.write_text('pid 1 on elsewhere')
  real_open = os.open

  def no_write(file, flags, *args):
    if flags & (os.O_RDWR | os.O_WRONLY):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
    return real_open(file, flags, *args)

  with monkeypatch.context() as patch:
    patch.setattr(os, 'open', no_write)
    fd = files.acquire_lock(path)
  try:
    with pytest.raises(files.LockedError):
      files.acquire_lock(path)
  finally:
    os.close(fd)
  os.close(files.acquire_lock(path))  # Released.


def test_a_lock_file_holds_its_holder_alone_after_a_longer_old_content(tmp_path):
  path = tmp_path / 'lock'
  path.write_text('x' * 300)
  fd = files.acquire_lock(path)
  try:
    holder = f'pid {os.getpid()} on {files.socket.gethostname()}'
    assert path.read_text() == holder
    with pytest.raises(files.LockedError) as refused:
      files.acquire_lock(path)  # Another open file description: refused, naming the holder.
    assert refused.value.holder == holder
  finally:
    os.close(fd)


def test_an_atomic_write_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
  target = tmp_path / 'results' / 'leaderboard.md'
  target.parent.mkdir()
  target.write_text('old')
  link = tmp_path / 'latest.md'
  link.symlink_to(target)
  files.write_atomically(link, 'new')
  assert link.is_symlink() and target.read_text() == 'new'
  assert sorted(p.name for p in target.parent.iterdir()) == ['leaderboard.md']


def test_an_atomic_write_that_fails_names_the_file_asked_for_not_its_temporary(tmp_path):
  link = tmp_path / 'latest.md'
  link.symlink_to(tmp_path / 'missing' / 'leaderboard.md')
  with pytest.raises(FileNotFoundError) as raised:
    files.write_atomically(link, 'new')
  path = tmp_path / 'missing' / 'leaderboard.md'
  assert str(raised.value) == f"[Errno 2] No such file or directory: '{path}'"


def test_a_damaged_generator_record_is_no_record(tmp_path, capsys):
  args = tiny_listops_args(tmp_path)
  listops_generator.main(args)
  record = tmp_path / files.GENERATED_RECORD.format(name='basic_train.tsv')
  record.write_text(json.dumps({'settings': 'x', 'sizes': {}}))
  assert files.recorded_settings([tmp_path / name for name in listops.FILES.values()]) is None
  with pytest.raises(SystemExit):
    listops_generator.main(args)
  assert 'Refusing to overwrite existing data (not written by this command: no record of it)' in (
    capsys.readouterr().err
  )


@pytest.mark.parametrize('into', ['pipe', 'file'])
def test_an_atomic_write_to_dev_stdout_goes_down_the_stream(into, tmp_path):
  """--out /dev/stdout, piped or redirected with >>: the text follows what was printed before."""
  code = (
    'from lra.files import write_atomically\n'
    "print('printed', flush=True)\n"
    "write_atomically('/dev/stdout', 'body\\n')\n"
    "print('after')\n"
  )
  command = [sys.executable, '-c', code]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if into == 'pipe':
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=root).stdout
  else:
    report = tmp_path / 'report.md'
    report.write_text('header\n')
    with open(report, 'a') as f:
      subprocess.run(command, stdout=f, check=True, cwd=root)
    out = report.read_text()
  assert out == ('' if into == 'pipe' else 'header\n') + 'printed\nbody\nafter\n'


def test_a_replacement_that_a_signal_stopped_is_put_back_by_the_next_run(tmp_path, capsys):
  """SIGTERM or SIGKILL end a generator without unwinding its block: the old data, moved aside,
  was left in a hidden folder for good."""
  paths = [tmp_path / 'train.txt', tmp_path / 'test.txt']
  for path in paths:
    path.write_text('old')
  files.record_outputs(paths, {'seed': 1})
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  block = files.writing_outputs(paths, True, {'seed': 2})
  assert block.__enter__()  # A process killed inside the block: __exit__ never runs.
  paths[0].write_text('part of the new')
  (aside,) = [p for p in tmp_path.iterdir() if p.is_dir()]
  assert aside.name.startswith('.replaced-train.txt-')
  # While the process that moved it is alive (this one), it is left alone.
  with pytest.raises(lra.DataError, match='Refusing to overwrite'):
    with files.writing_outputs(paths, False, {'seed': 1}):
      pass
  assert aside.is_dir() and paths[0].read_text() == 'part of the new'
  ended = subprocess.run(
    [sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True
  )
  holder = json.loads((aside / 'moved.json').read_text())
  (aside / 'moved.json').write_text(json.dumps({**holder, 'pid': int(ended.stdout)}))
  with files.writing_outputs(paths, False, {'seed': 1}) as todo:
    assert not todo  # The old data is back, and is what this command wrote.
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
  assert 'the data a stopped --overwrite had moved there is back' in capsys.readouterr().err


KILLED_REPLACEMENT = """
import json, os, sys
from pathlib import Path
from lra import files
paths, where, after = [Path(p) for p in json.loads(sys.argv[1])], sys.argv[2], int(sys.argv[3])
calls, real = [], {'rename': Path.rename, 'remove': files._remove}
def counted(name):
  def call(*args):
    calls.append(name)
    if calls.count(where) > after:
      os._exit(9)  # SIGKILL: nothing unwinds.
    return real[name](*args)
  return call
Path.rename, files._remove = counted('rename'), counted('remove')
with files.writing_outputs(paths, True, {'seed': 2}):
  for path in paths:
    path.write_text('new')
"""


@pytest.mark.parametrize(
  'where, after',
  [('rename', 0), ('rename', 1), ('rename', 2), ('remove', 0), ('remove', 1)],
)
def test_a_replacement_killed_at_any_point_leaves_the_old_data_or_the_new(tmp_path, where, after):
  """Killed while moving (the old record, moved last, read as the new one's: the old data was
  deleted), or while clearing after success (its list went first: the rest was left for good);
  from another folder than the next run's (relative paths went to the wrong place)."""
  work = tmp_path / 'work'
  paths = [work / 'data' / 'train.txt', work / 'data' / 'test.txt']
  paths[0].parent.mkdir(parents=True)
  for path in paths:
    path.write_text('old')
  files.record_outputs(paths, {'seed': 1})
  before = {p.name: p.read_bytes() for p in paths[0].parent.iterdir()}
  relative = json.dumps([str(p.relative_to(work)) for p in paths])
  killed = subprocess.run(
    [sys.executable, '-c', KILLED_REPLACEMENT, relative, where, str(after)],
    cwd=work,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )
  assert killed.returncode == 9
  with files.writing_outputs(paths, False, {'seed': where == 'remove' and 2 or 1}) as todo:
    assert not todo  # What is there is complete, and recorded: the old data, or the new.
  after_run = {p.name: p.read_bytes() for p in paths[0].parent.iterdir()}
  if where == 'rename':
    assert after_run == before
  else:
    assert sorted(after_run) == sorted(before) and paths[0].read_text() == 'new'


@pytest.mark.parametrize('where', ['moving', 'block'])
def test_a_replacement_of_outputs_with_one_name_in_two_folders_puts_each_back(tmp_path, where):
  """Items aside are numbered: two outputs named alike had overwritten each other there."""
  paths = [tmp_path / 'a' / 'x.txt', tmp_path / 'b' / 'x.txt', tmp_path / 'a' / 'y.txt']
  for path in paths:
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'old {path.parent.name}')
  rename = Path.rename

  def rename_twice(self, target):  # The second move aside fails: the first comes back.
    if self == paths[1] and where == 'moving':
      raise OSError(5, 'Input/output error')
    return rename(self, target)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(Path, 'rename', rename_twice)
    with pytest.raises((OSError, lra.DataError)):
      with files.writing_outputs(paths, True, {'seed': 2}):
        raise lra.DataError('no new data')
  assert [p.read_text() for p in paths] == ['old a', 'old b', 'old a']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a', 'b']


def test_a_generator_refusal_names_only_the_settings_that_changed(tmp_path):
  """`lra.files.writing_outputs` refuses outputs of other settings, naming each changed one."""
  out = [tmp_path / 'a.tsv']
  with files.writing_outputs(out, False, {'n': 1, 'seed': 0}) as todo:
    assert todo
    out[0].write_text('x')
  with pytest.raises(lra.DataError, match=r'other settings: seed 0 -> 1\)') as info:
    with files.writing_outputs(out, False, {'n': 1, 'seed': 1}):
      pass
  assert 'n 1 -> 1' not in str(info.value)


def test_a_recorded_output_gone_since_is_refused_even_when_it_was_empty(tmp_path):
  """Outputs are kept only when all of them are there: an empty one deleted is named as gone."""
  out = [tmp_path / 'a.tsv', tmp_path / 'b.tsv']
  settings = {'n': 1}
  with files.writing_outputs(out, False, settings) as todo:
    assert todo
    out[0].write_text('x')
    out[1].write_text('')
  with files.writing_outputs(out, False, settings) as todo:
    assert not todo
  out[1].unlink()
  with pytest.raises(lra.DataError, match='but b.tsv is gone since'):
    with files.writing_outputs(out, False, settings):
      pass


def test_an_atomic_write_to_a_pipe_goes_down_the_pipe(tmp_path):
  """A FIFO cannot be replaced: `write_atomically` writes into it and leaves it a FIFO."""
  fifo = tmp_path / 'fifo'
  os.mkfifo(fifo)
  reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
  try:
    files.write_atomically(fifo, 'line\n')
    assert os.read(reader, 100) == b'line\n'
  finally:
    os.close(reader)
  assert stat.S_ISFIFO(fifo.stat().st_mode)
  assert [p.name for p in tmp_path.iterdir()] == ['fifo']


def test_a_lock_file_that_cannot_be_created_is_a_permission_error(tmp_path, monkeypatch):
  """Where the lock file may not be created (and is not there), the PermissionError is raised as
  it is (what `_locked` takes for a read-only folder), not another error of a read-only open."""
  real_open = os.open

  def refuse_creation(path, flags, *args):
    if flags & os.O_CREAT:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return real_open(path, flags, *args)

  monkeypatch.setattr(files.os, 'open', refuse_creation)
  with pytest.raises(PermissionError):
    files.acquire_lock(tmp_path / 'lock')
