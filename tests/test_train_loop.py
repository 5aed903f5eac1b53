"""The training loop's plumbing: batches prefetched to the devices (`steps.device_batches`), metrics
held on the devices until a log point (`metric_log.TrainLog`), and a whole run with and without
prefetching (bit-identical, each step compiled once)."""

import functools
import types

import jax
import numpy as np
import pytest

from luna_jax.training import checkpointing, metric_log, steps, trainer
from tests.test_train import checkpoint_params, read_jsonl, tiny_config


def _host_batches(count, read):
  """`count` host batches of 8 rows, batch i holding 100 * i + row; appends i to `read` as each
  is read."""
  for i in range(count):
    read.append(i)
    rows = 100 * i + np.arange(8, dtype=np.int32)
    yield {'inputs': np.stack([rows, rows], axis=1), 'lengths': rows}


def test_device_batches_are_sharded_onto_the_devices_ahead_of_their_step():
  devices = jax.local_devices()[:4]
  read = []
  batches = steps.device_batches(_host_batches(6, read), devices, prefetch=2, limit=4)

  first = next(batches)
  assert read == [0, 1, 2]  # Batches 1 and 2 are on their way while batch 0 is used.
  taken = [first, *batches]
  assert read == [0, 1, 2, 3]  # Nothing is read past the limit.
  expected = [steps.shard(b, 4) for b in _host_batches(4, [])]
  assert len(taken) == 4 and expected[0]['inputs'].shape == (4, 2, 2)
  for batch, host in zip(taken, expected):
    for name, array in batch.items():
      assert isinstance(array, jax.Array) and array.shape == host[name].shape
      # Device d holds rows [2d, 2d + 2) of the host batch, as pmap maps them.
      assert {s.device for s in array.addressable_shards} == set(devices)
      for shard in array.addressable_shards:
        d = devices.index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data)[0], host[name][d])

  read.clear()
  plain = steps.device_batches(_host_batches(6, read), devices)
  batch = next(plain)
  assert read == [0] and isinstance(batch['inputs'], np.ndarray)
  np.testing.assert_array_equal(batch['inputs'], expected[0]['inputs'])


def test_train_log_holds_the_first_devices_metrics_until_collected():
  devices = jax.local_devices()[:2]
  p_step = jax.pmap(
    lambda x: {'loss': x * 2.0, 'index': jax.lax.axis_index(steps.AXIS) * 1.0},
    axis_name=steps.AXIS,
    devices=devices,
  )
  log = metric_log.TrainLog(train_time=1.0, timed_steps=10)
  log.add(1, p_step(np.array([1.0, 7.0], np.float32)))
  log.exclude_from_timing()  # Step 1: waited for, then left out of the speed.
  for step in (2, 3):
    log.add(step, p_step(np.array([step, 7.0], np.float32)))

  logged_steps, values, steps_per_sec = log.collect()
  assert logged_steps == [1, 2, 3]
  assert [float(v['loss']) for v in values] == [2.0, 4.0, 6.0]
  assert all(v['index'] == 0 and v['loss'].dtype == np.float32 for v in values)
  assert steps_per_sec > 0 and log.timed_steps == 12 and log.train_time > 1.0
  assert log.collect() == ([], [], None)


def _without_directory(results):
  return {k: v for k, v in results.items() if k != 'directory'}


@pytest.mark.usefixtures('fast_compilation')
def test_prefetching_changes_no_result_and_each_step_compiles_once(
  tiny_lra_data, tmp_path, monkeypatch
):
  """Eight devices, an evaluation after every step and the best checkpoint's test evaluation: runs
  with and without prefetching log the same values, save the same parameters, and trace the train
  and the evaluation step once each (one compilation for every split and evaluation)."""
  save_if_best = checkpointing.Checkpointer.save_if_best
  monkeypatch.setattr(  # Step 1 is the best: its parameters are restored and test-evaluated.
    checkpointing.Checkpointer,
    'save_if_best',
    lambda self, step, params, accuracy: save_if_best(self, step, params, 1 / step),
  )
  traces = {}

  def counted(name, step):
    @functools.wraps(step)
    def traced(*args, **kwargs):
      traces[name] = traces.get(name, 0) + 1
      return step(*args, **kwargs)

    return traced

  monkeypatch.setattr(steps, 'train_step', counted('train', steps.train_step))
  monkeypatch.setattr(trainer, 'eval_step', counted('eval', steps.eval_step))
  runs = {}
  for prefetch in (0, 2):
    traces.clear()
    config = tiny_config(
      tiny_lra_data, num_devices=8, eval_every=1, log_every=1, prefetch_batches=prefetch
    )
    workdir = tmp_path / f'prefetch{prefetch}'
    runs[prefetch] = trainer.train_and_evaluate(config, str(workdir))
    assert traces == {'train': 1, 'eval': 1}
    assert runs[prefetch]['best']['step'] == 1 and runs[prefetch]['best']['test'] is not None

  logs = [
    [{k: v for k, v in m.items() if k != 'steps_per_sec'} for m in read_jsonl(path)]
    for path in (tmp_path / 'prefetch0' / 'metrics.jsonl', tmp_path / 'prefetch2' / 'metrics.jsonl')
  ]
  assert len(logs[0]) >= 6 and logs[0] == logs[1]
  for key in ('validation', 'test', 'best'):  # 'best' names its run's folder.
    assert _without_directory(runs[0][key]) == _without_directory(runs[2][key])
  jax.tree.map(
    np.testing.assert_array_equal,
    checkpoint_params(tmp_path / 'prefetch0', 3),
    checkpoint_params(tmp_path / 'prefetch2', 3),
  )


def test_train_log_starts_each_steps_host_copy_when_the_step_is_added():
  """`TrainLog.add` starts the copy of the first device's metrics to the host at once (a log
  point then waits for no transfer of its own), and copies no other device's replica."""
  started = []

  class Shard:
    def __init__(self, name):
      self.data = self
      self.name = name

    def copy_to_host_async(self):
      started.append(self.name)

    def __array__(self, dtype=None, copy=None):
      return np.asarray(1.0, dtype)

  class Replicated:
    def __init__(self, name):
      self.addressable_shards = [Shard(name), Shard(name + '@1')]

  log = metric_log.TrainLog()
  log.add(1, {'loss': Replicated('loss'), 'accuracy': Replicated('accuracy')})
  assert sorted(started) == ['accuracy', 'loss']  # Before any collection.
  assert log.collect()[0] == [1]


@pytest.mark.usefixtures('fast_compilation')
def test_a_resumed_run_prefetches_its_remaining_batches_and_evaluations(
  tiny_lra_data, tmp_path, monkeypatch
):
  """Resumed at step 2 of 4 with prefetch_batches=2: the training batches are limited to the 2
  remaining steps, every evaluation prefetches too, and the session's first step (compilation)
  is left out of the timing, as the first session's was."""
  calls, original = [], steps.device_batches

  def recorded(batches, devices, prefetch=0, limit=None):
    calls.append((prefetch, limit))
    return original(batches, devices, prefetch, limit)

  monkeypatch.setattr(trainer, 'device_batches', recorded)
  monkeypatch.setattr(steps, 'device_batches', recorded)  # What `steps.evaluate` calls.
  for num_steps in (2, 4):
    calls.clear()
    config = tiny_config(
      tiny_lra_data,
      num_train_steps=num_steps,
      eval_every=2,
      checkpoint_every=2,
      log_every=1,
      prefetch_batches=2,
    )
    results = trainer.train_and_evaluate(config, str(tmp_path))
    # Training first (two steps to go in either session), then the evaluations, all prefetched.
    assert calls[0] == (2, 2) and len(calls) >= 3, calls
    assert all(call == (2, None) for call in calls[1:]), calls
  assert results['step'] == 4
  record = checkpointing.read_record(str(tmp_path), 4)
  assert record['timed_steps'] == 2  # Steps 2 and 4: each session's first step is untimed.


def test_train_summary_is_the_mean_of_the_pending_steps_and_the_last_steps_learning_rate():
  """_train_summary: each train_* is the mean over the steps since the last log point, and the
  learning rate is the last step's (step s, 1-based, is the schedule's update count s - 1)."""
  p_step = jax.pmap(lambda x: {'loss': x}, axis_name=steps.AXIS, devices=jax.local_devices()[:1])
  session = types.SimpleNamespace(train_log=metric_log.TrainLog(), checkpointer=None)
  for step in (4, 5, 6):
    session.train_log.add(step, p_step(np.array([float(step)], np.float32)))
  schedule = lambda count: 10.0 * count
  summary = trainer._train_summary(session, schedule)
  assert summary['train_loss'] == np.mean([4.0, 5.0, 6.0])
  assert summary['learning_rate'] == schedule(6 - 1)
