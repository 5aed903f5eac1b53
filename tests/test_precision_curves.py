"""benchmarks/precision_curves.py: the comparison and the report, on finished runs it reads back."""

import json

import pytest

from benchmarks import precision_curves


def write_run(folder, losses, accuracy):
  """A finished run's files as the trainer writes them: metrics.jsonl and results.json."""
  folder.mkdir(parents=True)
  lines = [{'step': step, 'train_loss': loss, 'learning_rate': 0.1} for step, loss in losses]
  lines.append({'step': losses[-1][0], 'validation_accuracy': accuracy})
  (folder / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
  results = {
    'validation': {'accuracy': accuracy},
    'test': {'accuracy': accuracy - 0.01},
    'best': {'test': {'accuracy': accuracy - 0.02}},
    'steps_per_sec': 10.0,
  }
  (folder / 'results.json').write_text(json.dumps(results))


def test_finished_runs_are_read_back_compared_and_reported(tmp_path):
  argv = [
    '--config',
    'configs/quickstart.py',
    '--precisions',
    'float32,bfloat16',
    '--seeds',
    '0,1',
    '--output_dir',
    str(tmp_path / 'out'),
    '--runs_dir',
    str(tmp_path / 'runs'),
    '--',
    '--config.training.num_train_steps=100',
  ]
  # Runs of other settings (here: no flags) live in another folder and are never read back.
  other = precision_curves.parse_args(argv[:-2])
  runs = tmp_path / 'runs' / precision_curves.settings_name(precision_curves.parse_args(argv))
  assert precision_curves.settings_name(other) != runs.name
  assert runs.name.startswith('quickstart-')
  for seed, shift in ((0, 0.0), (1, 0.1)):
    write_run(runs / f'float32_seed{seed}', [(1, 2.0 + shift), (50, 1.5), (100, 1.2)], 0.40)
    write_run(runs / f'bfloat16_seed{seed}', [(1, 2.0 + shift), (50, 1.6), (100, 1.15)], 0.42)
  results = precision_curves.main(argv)
  bf16 = [r for r in results['runs'] if r['precision'] == 'bfloat16']
  assert [r['seed'] for r in bf16] == [0, 1]
  assert bf16[0]['gap_to_reference'] == pytest.approx(
    {'max_abs': 0.1, 'mean_abs': 0.05, 'last': 0.05}
  )
  assert bf16[0]['test_accuracy'] == pytest.approx(0.41)
  assert results['train_flags'] == ['--config.training.num_train_steps=100']
  table = (tmp_path / 'out' / 'table.md').read_text()
  assert '| bfloat16 | 2 | 0.4200 +- 0.0000 | 0.4100 +- 0.0000 |' in table
  assert '| 50 | 1.5000 | 1.6000 |' in table
  stored = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert stored['runs'][1]['gap_to_reference']['max_abs'] == pytest.approx(0.1)


def test_float32_must_come_first():
  with pytest.raises(SystemExit):
    precision_curves.parse_args(
      ['--config', 'c.py', '--precisions', 'bfloat16,float32', '--output_dir', 'o']
    )


def test_compare_uses_the_log_points_both_curves_have():
  """Max, mean and last absolute gap over the shared steps only."""
  gap = precision_curves.compare({1: 1.0, 2: 2.0, 3: 3.0, 4: 0.0}, {2: 2.5, 3: 3.0, 4: 0.2, 5: 9.0})
  assert gap == pytest.approx({'max_abs': 0.5, 'mean_abs': 0.7 / 3, 'last': 0.2})


def test_read_run_and_the_table_across_seeds(tmp_path):
  """The best-validation test accuracy is read back, and the table's spread is the sample
  standard deviation over the seeds."""
  import statistics

  runs = []
  for seed, accuracy in ((0, 0.40), (1, 0.44)):
    write_run(tmp_path / str(seed), [(1, 2.0), (2, 1.0)], accuracy)
    read = precision_curves.read_run(str(tmp_path / str(seed)))
    assert read['best_test_accuracy'] == pytest.approx(accuracy - 0.02)
    runs.append({'precision': 'float32', 'seed': seed, **read})
  table = precision_curves.table(
    {'config': 'c.py', 'train_flags': [], 'seeds': [0, 1], 'runs': runs}
  )
  spread = statistics.stdev([0.40, 0.44])
  assert f'| float32 | 2 | 0.4200 +- {spread:.4f} |' in table
