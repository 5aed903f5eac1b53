"""Tests of the registry, the split containers and the deterministic batch iterators."""

import itertools

import numpy as np
import pytest

import corpora
import lra
from lra import registry


def make_split(n: int, length: int = 5, dual: bool = False) -> lra.Split:
  inputs = np.arange(n * length, dtype=np.uint16).reshape(n, length)
  extra = dict(inputs2=inputs + 1, lengths2=np.full(n, length, np.int32)) if dual else {}
  return lra.Split(inputs, np.full(n, length, np.int32), np.arange(n, dtype=np.int32), **extra)


def take(iterator, k):
  return list(itertools.islice(iterator, k))


def test_tasks_and_unknown_names(tmp_path):
  # The release's six, in its order (a task one adds comes after them).
  assert lra.TASKS[:6] == ('listops', 'text', 'retrieval', 'image', 'pathfinder32', 'pathx')
  with pytest.raises(lra.DataError, match="Unknown task 'cifar'.*listops, text"):
    lra.load_task('cifar', tmp_path)
  with pytest.raises(lra.DataError, match='no option.*difficulty'):
    lra.load_task('listops', tmp_path, difficulty='hard')
  with pytest.raises(lra.DataError, match='max_length'):
    lra.load_task('listops', tmp_path, max_length=0)


def test_lra_and_corpora_send_each_other_s_tasks_to_the_other_package(tmp_path):
  assert corpora.TASKS == (*corpora.TOKEN_TASKS, *corpora.TEXT_TASKS) == registry.CORPORA_TASKS
  assert not set(corpora.TASKS) & set(lra.TASKS)
  for task in corpora.TASKS:
    with pytest.raises(lra.DataError, match=rf"'{task}' is not an LRA task.*corpora\.load_task"):
      lra.load_task(task, tmp_path)
  with pytest.raises(lra.DataError, match=r"'listops' is an LRA task.*lra\.load_task"):
    corpora.load_task('listops', tmp_path)
  with pytest.raises(
    lra.DataError, match="Unknown task 'cifar'.*seq2seq, lm, translation, corpus, glue"
  ):
    corpora.load_task('cifar', tmp_path)
  with pytest.raises(lra.DataError, match='no option.*difficulty'):
    corpora.load_task('lm', tmp_path, difficulty='hard')


def test_train_batches_are_seeded_epoch_permutations():
  split = make_split(10)
  batches = take(lra.train_batches(split, 3, seed=7), 6)  # 3 steps per epoch, 1 example dropped.
  for batch in batches:
    assert batch['inputs'].shape == (3, 5) and batch['inputs'].dtype == np.int32
    assert batch['lengths'].dtype == batch['targets'].dtype == np.int32
  epoch0 = np.concatenate([b['targets'] for b in batches[:3]])
  epoch1 = np.concatenate([b['targets'] for b in batches[3:]])
  assert len(set(epoch0)) == len(set(epoch1)) == 9
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(batches[0]['inputs'], split.inputs[batches[0]['targets']])
  again = take(lra.train_batches(split, 3, seed=7), 6)
  other = take(lra.train_batches(split, 3, seed=8), 6)
  assert all(np.array_equal(a['targets'], b['targets']) for a, b in zip(batches, again))
  assert not all(np.array_equal(a['targets'], b['targets']) for a, b in zip(batches, other))


def test_train_batches_resume_at_step():
  split = make_split(23)
  full = take(lra.train_batches(split, 4, seed=1), 20)
  resumed = take(lra.train_batches(split, 4, seed=1, start_step=13), 7)
  for a, b in zip(full[13:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_split_across_processes():
  split = make_split(16, dual=True)
  whole = take(lra.train_batches(split, 4, seed=0), 5)
  parts = [
    take(lra.train_batches(split, 4, seed=0, process_index=i, process_count=2), 5) for i in range(2)
  ]
  for k in range(5):
    for key in ('inputs', 'lengths', 'targets', 'inputs2', 'lengths2'):
      np.testing.assert_array_equal(
        whole[k][key], np.concatenate([parts[0][k][key], parts[1][k][key]])
      )
  with pytest.raises(lra.DataError, match='multiple of process_count'):
    next(lra.train_batches(split, 3, seed=0, process_count=2))
  with pytest.raises(lra.DataError, match=r'\(training.batch_size\) exceeds'):
    next(lra.train_batches(split, 32, seed=0))


def test_eval_batches_cover_everything_once_with_weights():
  split = make_split(7)
  seen = []
  for index in range(2):
    batches = list(lra.eval_batches(split, 4, process_index=index, process_count=2))
    assert len(batches) == 2
    for batch in batches:
      assert batch['inputs'].shape == (2, 5) and batch['weights'].dtype == np.float32
      seen.extend(batch['targets'][batch['weights'] == 1].tolist())
  assert sorted(seen) == list(range(7))
  last = list(lra.eval_batches(split, 4))[-1]
  np.testing.assert_array_equal(last['weights'], [1, 1, 1, 0])
  np.testing.assert_array_equal(last['targets'][:3], [4, 5, 6])


def test_a_negative_start_step_is_a_data_error():
  with pytest.raises(lra.DataError, match=r'start_step \(-1\) must be non-negative'):
    next(lra.train_batches(make_split(10), 3, seed=0, start_step=-1))


def test_eval_sample_rows_are_in_stored_order():
  rows = lra.batching.sample_rows(1000, 50)
  assert len(rows) == len(set(rows.tolist())) == 50 and 0 <= rows.min() and rows.max() < 1000
  assert np.all(np.diff(rows) > 0)
  split = make_split(1000, length=2)
  np.testing.assert_array_equal(lra.eval_sample(split, 50).targets, rows)


def test_micro_batches_must_divide_each_device_s_rows():
  fixed = lra.batching.FIXED_SIZE
  assert fixed.micro_batched(4, 8, 2) is fixed  # 4 rows a device, 4 micro-batches of 1.
  # 8 rows divide into 8 micro-batches, but each of 2 devices gets only 4 of them.
  with pytest.raises(lra.DataError, match='must divide the 4 rows each of the 2 devices'):
    fixed.micro_batched(8, 8, 2)
