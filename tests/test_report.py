"""The leaderboard report on synthetic `results.json` files: the exact table and the Figure-1
plot."""

import json
import os
import re

import pytest

from benchmarks import report
from configs import variants


def write_run(root, folder, task, seed, accuracy, **model):
  """A minimal `results.json` as `luna_jax.training.train_and_evaluate` writes it (best: 0.01 below
  final)."""
  run = root / folder
  run.mkdir(parents=True)
  config = {'seed': seed, 'data': {'task': task}, 'model': model}
  best = {'step': 1, 'test': {'accuracy': accuracy - 0.01}}
  (run / 'results.json').write_text(
    json.dumps({'config': config, 'test': {'accuracy': accuracy}, 'best': best})
  )


LUNA16 = dict(
  name='luna', projection_length=16, contextual_p=True, attention_implementation='softmax'
)
PERFORMER = dict(name='transformer', projection_length=16, attention_implementation='performer')


@pytest.fixture
def runs_dir(tmp_path):
  root = tmp_path / 'runs'
  for task, accuracy in zip(variants.TABLE1_TASKS, (0.37, 0.66, 0.80, 0.46, 0.78)):
    write_run(root, f'luna16/{task}/seed0', task, 0, accuracy, **LUNA16)
  write_run(root, 'luna16/listops/seed1', 'listops', 1, 0.39, **LUNA16)
  write_run(root, 'luna16/listops/seed2', 'listops', 2, 0.38, **LUNA16)
  write_run(root, 'performer_listops', 'listops', 0, 0.20, **PERFORMER)
  write_run(root, 'nc', 'text', 0, 0.60, **dict(LUNA16, contextual_p=False))
  return root


def test_leaderboard_table_is_exact(runs_dir):
  runs = report.collect_runs(str(runs_dir))
  assert runs[('luna16', 'listops')] == pytest.approx([37.0, 39.0, 38.0])
  # Luna-16 ours: ListOps mean 38 (std 1), Avg (38 + 66 + 80 + 46 + 78) / 5 = 61.6,
  # w/o Retrieval (38 + 66 + 46 + 78) / 4 = 57.0.
  expected = '\n'.join(
    [
      '| Model | Source | ListOps | Text | Retrieval | Image | Pathfinder | Avg | Avg (w/o rtl) |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|',
      '| Performer | paper | 18.01 | 65.40 | 53.82 | 42.77 | 77.05 | 51.41 | 50.81 |',
      '| Performer | ours (1 run) | 20.00 | - | - | - | - | - | - |',
      '| Luna-16 | paper | 37.43 | 65.74 | 79.38 | 46.39 | 78.36 | 61.46 | 56.98 |',
      '| Luna-16 | ours (1/3 runs) | 38.00 ± 1.00 | 66.00 | 80.00 | 46.00 | 78.00 | 61.60 '
      '| 57.00 |',
      '| Luna-16 (non-contextual P) | ours (1 run) | - | 60.00 | - | - | - | - | - |',
    ]
  )
  assert report.leaderboard(runs) == expected


def test_best_checkpoint_accuracies(runs_dir, tmp_path):
  runs = report.collect_runs(str(runs_dir), checkpoint='best')
  assert runs[('luna16', 'listops')] == pytest.approx([36.0, 38.0, 37.0])
  assert runs[('performer', 'listops')] == pytest.approx([19.0])
  markdown = report.leaderboard_markdown(runs, 'runs', checkpoint='best')
  assert 'test accuracy (%) of the best validation checkpoint' in markdown
  assert '| Luna-16 | ours (1/3 runs) | 37.00 ± 1.00 |' in markdown
  # A results.json from before best-checkpoint evaluation: the error says what to do.
  old = tmp_path / 'old' / 'results.json'
  old.parent.mkdir()
  old.write_text(
    json.dumps(
      {
        'config': {'seed': 0, 'data': {'task': 'text'}, 'model': LUNA16},
        'test': {'accuracy': 0.5},
        'best': {'step': 3},
      }
    )
  )
  with pytest.raises(
    ValueError,
    match=r'old/results.json has no test metrics of the best checkpoint.*'
    r'--checkpoint final',
  ):
    report.collect_runs(str(tmp_path / 'old'), checkpoint='best')
  assert report.collect_runs(str(tmp_path / 'old')) == {('luna16', 'text'): [50.0]}


def test_paper_averages_match_table_1():
  for variant, (avg, without_retrieval) in {
    'transformer': (54.39, 53.62),
    'linformer': (51.36, 51.14),
    'luna256': (61.95, 57.54),
  }.items():
    computed = report.averages(dict(zip(variants.TABLE1_TASKS, variants.VARIANTS[variant].table1)))
    assert computed == pytest.approx((avg, without_retrieval), abs=0.006)


def test_readme_paper_targets_are_the_variant_table():
  """The README's table of paper targets quotes configs/variants.py (the one place they live)."""
  with open(os.path.join(os.path.dirname(__file__), '..', 'README.md'), encoding='utf-8') as f:
    rows = re.findall(
      r'^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|', f.read(), re.M
    )
  assert [name for name, *_ in rows] == ['transformer', 'luna16', 'luna128', 'luna256']
  for name, *accuracies in rows:
    assert tuple(map(float, accuracies)) == variants.VARIANTS[name].table1


def test_variant_names_follow_the_configs():
  assert variants.variant_of({'name': 'luna', 'projection_length': 128}) == 'luna128'
  # The P-mean pooling is its own variant (Table 3), whatever the projection length.
  for length in (16, 128):
    pmean = variants.variant_of({'name': 'luna', 'projection_length': length, 'pooling': 'p'})
    assert pmean == f'luna{length}_pmean'
    assert variants.get(pmean).model['pooling'] == 'p'
  assert variants.variant_of({'name': 'luna', 'projection_length': 16, 'pooling': 'mean'}) == (
    'luna16'
  )
  assert (
    variants.variant_of({'name': 'transformer', 'attention_implementation': 'linear'})
    == 'linear_transformer'
  )
  assert (
    variants.variant_of({'name': 'transformer', 'attention_implementation': 'fused'})
    == 'transformer'
  )


def test_command_writes_markdown_and_figure(runs_dir, tmp_path):
  cell = lambda model, steps, memory: {
    'model': model,
    'length': 1024,
    'status': 'ok',
    'steps_per_s': steps,
    'memory_bytes': memory,
  }
  benchmark = {
    'machine': {'backend': 'cpu'},
    'cells': [
      cell('transformer', 1.0, 4e9),
      cell('luna16', 4.0, 5e8),
      cell('performer', 5.0, 4e8),
      cell('transformer_fused', 2.0, 1e9),
    ],
  }
  (tmp_path / 'bench.json').write_text(json.dumps(benchmark))
  out = tmp_path / 'report'
  report.main(
    [
      '--runs_dir',
      str(runs_dir),
      '--output_dir',
      str(out),
      '--benchmark_json',
      str(tmp_path / 'bench.json'),
    ]
  )
  markdown = (out / 'leaderboard.md').read_text()
  assert markdown.startswith('# LRA leaderboard\n\n9 runs from')
  assert report.leaderboard(report.collect_runs(str(runs_dir))) in markdown
  png = (out / 'figure1.png').read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000
