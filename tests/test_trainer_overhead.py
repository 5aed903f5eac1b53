"""Smoke test of `benchmarks.trainer_overhead`: tiny runs on generated ListOps, their figures."""

import json
import math
import types

import ml_collections
import pytest

from benchmarks import trainer_overhead


@pytest.mark.usefixtures('fast_compilation')
def test_trainer_overhead_measures_the_bare_step_and_the_whole_trainer(tmp_path, capsys):
  output = tmp_path / 'overhead.json'
  results = trainer_overhead.main(
    [
      # Batch 8; evaluation and checkpoint every 5 steps, log every step.
      '--config=configs/quickstart.py:debug',
      '--config.training.prefetch_batches=1',
      *('--num_train', '16', '--num_eval', '8', '--bare_steps', '3', '--repeats', '2'),
      '--output',
      str(output),
    ]
  )

  assert json.loads(output.read_text()) == json.loads(json.dumps(results))
  assert results['prefetch_batches'] == 1 and results['batch_size'] == 8
  assert len(results['bare']['seconds']) == 2 and results['bare']['steps'] == 3
  # Evaluation and checkpoint first at step 5, the window from the next log point (6) over 5 steps
  # (lcm of 5, 5 and 1), with one evaluation and one checkpoint (step 10).
  assert results['num_train_steps'] == 11
  end_to_end = results['end_to_end']
  assert (end_to_end['first_step'], end_to_end['steps']) == (6, 5)
  assert end_to_end['evaluations'] == end_to_end['checkpoints'] == 1
  for figure in ('bare', 'loop', 'end_to_end'):
    assert results[figure]['steps_per_s'] > 0
  for figure in ('loop', 'end_to_end'):
    assert (
      results[figure]['ratio'] == results[figure]['steps_per_s'] / results['bare']['steps_per_s']
    )
  lines = capsys.readouterr().out.splitlines()
  row = next(line for line in lines if line.startswith('| configs/quickstart.py:debug |'))
  assert f'{results["bare"]["steps_per_s"]:.2f}' in row


def test_the_end_to_end_window_and_what_it_holds(tmp_path, monkeypatch):
  """The window starts at the log point after the first evaluation and checkpoint (the lcm of
  their periods), ends `span` steps later at the run's last step, is timed by the training
  metrics' events at both ends, and holds the evaluations and checkpoints in [start, end)."""
  training = {'eval_every': 4, 'checkpoint_every': 6, 'log_every': 5, 'num_train_steps': 0}
  config = ml_collections.ConfigDict({'training': training})
  ran = {}

  def train_and_evaluate(run, workdir):
    ran['steps'] = run.training.num_train_steps
    return {'steps_per_sec': 3.0, 'devices': {'global_devices': 1}}

  def read_events(path):  # The training metrics at each log point and at the last step.
    value = [types.SimpleNamespace(tag='train_loss')]
    return [
      types.SimpleNamespace(
        step=s, wall_time=100.0 + s * s, summary=types.SimpleNamespace(value=value)
      )
      for s in range(1, ran['steps'] + 1)
      if s % 5 == 0 or s == ran['steps']
    ]

  monkeypatch.setattr(trainer_overhead.trainer, 'train_and_evaluate', train_and_evaluate)
  monkeypatch.setattr(trainer_overhead.metric_log, 'read_events', read_events)
  span = 12
  results = trainer_overhead.whole_run(config, span, str(tmp_path))
  start = next(s for s in range(math.lcm(4, 6) + 1, 100) if s % 5 == 0)
  end = start + span
  window = results['end_to_end']
  assert ran['steps'] == results['num_train_steps'] == end
  assert (window['first_step'], window['steps']) == (start, span)
  assert window['seconds'] == end * end - start * start
  assert window['steps_per_s'] == span / window['seconds']
  assert window['evaluations'] == len([s for s in range(start, end) if s % 4 == 0])
  assert window['checkpoints'] == len([s for s in range(start, end) if s % 6 == 0])
  assert results['loop'] == {'steps_per_s': 3.0}
  for start, end, every in ((5, 9, 5), (5, 10, 5), (6, 10, 5), (1, 21, 4)):
    expected = len([s for s in range(start, end) if s % every == 0])
    assert trainer_overhead._points_in(start, end, every) == expected


def test_the_table_gives_each_figure_s_ratio_to_the_bare_step():
  """The loop and end-to-end figures are given with their ratio to the bare step's steps/s."""
  results = {
    'config': 'configs/quickstart.py',
    'devices': {'device_kind': 'cpu', 'global_devices': 1},
    'bare': {'steps_per_s': 10.0},
    'loop': {'steps_per_s': 8.5},
    'end_to_end': {'steps_per_s': 5.0},
  }
  row = trainer_overhead.table(results).splitlines()[2]
  assert (
    row
    == f'| configs/quickstart.py | cpu x1 | 10.00 | 8.50 ({8.5 / 10:.2f}) | 5.00 ({5 / 10:.2f}) |'
  )
