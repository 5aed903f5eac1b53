"""Smoke test of `benchmarks.trainer_overhead`: tiny runs on generated ListOps, their figures."""

import json

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
