"""The leaderboard report on synthetic `results.json` files: the exact table and the Figure-1
plot."""

import json
import os
import re
import statistics
import types

import pytest

from benchmarks import report
from configs import pathfinder32, pathfinder32_short, variants


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


def collect_runs(runs_dir: str, checkpoint: str = 'final') -> dict[tuple[str, str], list[float]]:
  """Test accuracies (%) of every run under `runs_dir` by (variant, task), as `main` reads them."""
  return report.accuracies(report.read_runs(report.find_results(runs_dir))[0], checkpoint)


def test_leaderboard_table_is_exact(runs_dir):
  runs = collect_runs(str(runs_dir))
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
  runs = collect_runs(str(runs_dir), checkpoint='best')
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
  with pytest.raises(  # A ReportError: `python -m benchmarks.report` prints it in one line.
    report.ReportError,
    match=r'old/results.json has no test metrics of the best checkpoint.*damaged.*'
    r'--checkpoint final',
  ):
    collect_runs(str(tmp_path / 'old'), checkpoint='best')
  assert collect_runs(str(tmp_path / 'old')) == {('luna16', 'text'): [50.0]}


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
  # An attention of one's own is never filed under a variant's row (the paper's numbers).
  assert variants.variant_of({'name': 'transformer', 'attention_implementation': 'mine'}) == (
    'transformer_mine'
  )
  mine = {'name': 'luna', 'projection_length': 16, 'luna_attention_implementation': 'mine'}
  assert variants.variant_of(mine) == 'luna16_mine'
  assert variants.variant_of({**mine, 'tie_kv': True}) == 'luna16_tied_mine'
  assert variants.label('transformer_mine') == 'transformer_mine'


def test_command_writes_markdown_and_figure(runs_dir, tmp_path):
  cell = lambda model, steps, memory: {
    'model': model,
    'length': 1024,
    'status': 'ok',
    'steps_per_s': steps,
    'memory_bytes': memory,
  }
  benchmark = {
    'settings': {'mode': 'train_step'},
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
  assert report.leaderboard(collect_runs(str(runs_dir))) in markdown
  png = (out / 'figure1.png').read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000
  # What the figure cannot be drawn from is named, with the command that makes it or the flag.
  (tmp_path / 'attention.json').write_text(json.dumps({**benchmark, 'settings': {'mode': 'x'}}))
  flags = ['--runs_dir', str(runs_dir), '--output_dir', str(out), '--benchmark_json']
  for name, message in (
    ('none.json', r"none.json: no speed_memory results .*--mode train_step.*--benchmark_json ''"),
    ('attention.json', "mode 'x', expected train_step results"),
  ):
    with pytest.raises(report.ReportError, match=message):
      report.main([*flags, str(tmp_path / name)])
  with pytest.raises(report.ReportError, match='no benchmarked model has a cell at length 512'):
    report.main([*flags, str(tmp_path / 'bench.json'), '--length', '512'])


def write_metrics(run, validation):
  """A metrics.jsonl: a training line, an evaluation line per (step, accuracy), a cut line."""
  lines = [{'step': 1, 'train_loss': 2.3}]
  lines += [{'step': step, 'validation_accuracy': accuracy} for step, accuracy in validation]
  (run / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines) + '{"st')


def test_collapsed_and_never_learned_runs_are_counted_from_their_metrics(tmp_path):
  root = tmp_path / 'runs'
  # (seed, validation evaluations, final validation, test): learned and kept it; learned (35.85%)
  # then fell to 20% (< 10 + (35.85 - 10) / 2); never above 19% (ListOps' learned threshold).
  histories = {
    0: ([(500, 0.30), (1000, 0.36)], 0.37, 0.37),
    1: ([(500, 0.3585), (1000, 0.087), (1500, 0.161)], 0.20, 0.1965),
    2: ([(500, 0.161), (1000, 0.17)], 0.161, 0.1665),
  }
  for seed, (evaluations, final, test) in histories.items():
    run = root / f'seed{seed}'
    write_run(root, f'seed{seed}', 'listops', seed, test, **LUNA16)
    results = json.loads((run / 'results.json').read_text())
    results.update(validation={'accuracy': final}, step=2000)
    (run / 'results.json').write_text(json.dumps(results))
    write_metrics(run, evaluations)
  write_run(root, 'no_metrics', 'text', 0, 0.6, **LUNA16)  # Not checked: no metrics.jsonl.
  runs, _ = report.read_runs(report.find_results(str(root)))
  by_seed = {run.seed: run.health for run in runs if run.task == 'listops'}
  assert by_seed[0] == report.Health(best=37.0, best_step=2000, final=37.0, learned=True,
                                     collapsed=False)  # fmt: skip
  assert by_seed[1].collapsed and by_seed[1].best == pytest.approx(35.85)
  assert by_seed[1].best_step == 500
  # A tie goes to the later step, as the trainer's best checkpoint does.
  entries = [{'step': step, 'validation_accuracy': 0.36} for step in (500, 1000)]
  tied = report.health('listops', 0.30, 2000, entries)
  assert (tied.best, tied.best_step) == (pytest.approx(36.0), 1000)
  assert not by_seed[2].learned and not by_seed[2].collapsed
  counts = report.health_counts(runs)
  assert counts == {('luna16', 'listops'): (1, 1, 3)}
  table = report.leaderboard(report.accuracies(runs), failures=counts)
  tests = [100 * test for _, _, test in histories.values()]
  cell = f'{statistics.fmean(tests):.2f} ± {statistics.stdev(tests):.2f}'
  assert f'| {cell} (1 collapsed, 1 never learned of 3) | 60.00 |' in table
  notes = report.health_notes(runs)[0]
  assert '3 of 4 runs have a metrics.jsonl' in notes
  assert (
    f'{root}/seed1/results.json: collapsed: best validation 35.85% (step 500), final 20.00%'
    in (notes)
  )
  assert f'{root}/seed2/results.json: never learned' in notes and 'seed0' not in notes
  # A run that falls by less than half its gain over chance keeps its place.
  kept = report.health('listops', 0.24, 2000, [{'step': 500, 'validation_accuracy': 0.36}])
  assert kept.learned and not kept.collapsed
  binary = report.health('pathfinder32', 0.54, 100, [{'step': 50, 'validation_accuracy': 0.549}])
  assert not binary.learned  # 55% is the binary tasks' threshold.


def test_table3_self_pretrained_and_shortened_runs_have_their_own_rows(tmp_path):
  root = tmp_path / 'runs'
  write_run(root, 'cls', 'listops', 0, 0.37, **LUNA16)
  write_run(root, 'pmean', 'listops', 0, 0.38, **dict(LUNA16, pooling='p'))
  write_run(root, 'spt', 'listops', 0, 0.45, **LUNA16)
  results = json.loads((root / 'spt' / 'results.json').read_text())
  results['pretraining'] = {'step': 5000, 'steps_per_sec': 40.0, 'validation': {'accuracy': 0.5}}
  results.update(validation={'accuracy': 0.45}, step=5000)
  (root / 'spt' / 'results.json').write_text(json.dumps(results))
  (root / 'spt' / 'finetune').mkdir()
  write_metrics(root / 'spt' / 'finetune', [(2500, 0.47)])  # The classifier's metrics.
  full = pathfinder32.get_config('luna16')
  full_steps, full_length = full.training.num_train_steps, full.data.options.max_length
  for name, steps, length in (
    ('short', pathfinder32_short.LUNA_STEPS, full_length),
    ('full', full_steps, full_length),
    ('short_and_small', full_steps - 1, 256),  # As the quick start's ListOps: another length.
  ):
    write_run(root, name, 'pathfinder32', 0, {'short': 0.6, 'full': 0.7}.get(name, 0.5), **LUNA16)
    results = json.loads((root / name / 'results.json').read_text())
    results['config']['training'] = {'num_train_steps': steps}
    results['config']['data']['options'] = {'max_length': length}
    (root / name / 'results.json').write_text(json.dumps(results))
  runs, _ = report.read_runs(report.find_results(str(root)))
  short = f'luna16 ({pathfinder32_short.LUNA_STEPS} steps)'
  small = f'luna16 ({full_steps - 1} steps, length 256)'
  expected = ['luna16', 'luna16', short, small, 'luna16 (self-pretrained)', 'luna16_pmean']
  assert sorted(run.variant for run in runs) == expected
  assert report.recipe('pathfinder32', 'luna16') == (full_steps, full_length)
  spt_health = [run.health for run in runs if run.pretraining][0]
  assert (spt_health.best, spt_health.best_step) == (pytest.approx(47.0), 2500)
  lines = report.leaderboard(report.accuracies(runs)).splitlines()[2:]
  assert lines == [
    '| Luna-16 | paper | 37.43 | 65.74 | 79.38 | 46.39 | 78.36 | 61.46 | 56.98 |',
    '| Luna-16 | ours (1 run) | 37.00 | - | - | - | 70.00 | - | - |',
    f'| Luna-16 ({pathfinder32_short.LUNA_STEPS} steps) | ours (1 run) | - | - | - | - | 60.00 '
    '| - | - |',
    f'| Luna-16 ({full_steps - 1} steps, length 256) | ours (1 run) | - | - | - | - | 50.00 '
    '| - | - |',
    '| Luna-16 + self-pretraining | ours (1 run) | 45.00 | - | - | - | - | - | - |',
    '| Luna-16 (P-mean) | paper (Table 3) | 38.06 | 65.81 | 80.22 | - | - | - | - |',
    '| Luna-16 (P-mean) | ours (1 run) | 38.00 | - | - | - | - | - | - |',
  ]
  notes = report.pretraining_notes(runs)[0]
  assert (
    f'{root}/spt/results.json: 5000 masked-LM steps at 40 steps/s ({5000 / 40 / 60:.2f} min'
    in notes
  )
  assert 'masked-token validation accuracy 50.00%' in notes


def test_unfinished_runs_say_how_far_they_got(tmp_path):
  root = tmp_path / 'runs'
  write_run(root, 'done', 'listops', 0, 0.37, **LUNA16)
  stopped = root / 'stopped'
  stopped.mkdir()
  (stopped / 'config.json').write_text(json.dumps({'training': {'num_train_steps': 5000}}))
  write_metrics(stopped, [(500, 0.30), (1000, 0.35), (1500, 0.161)])
  spt = root / 'spt_stopped'
  (spt / 'pretrain').mkdir(parents=True)
  (spt / 'kind.json').write_text('{}')
  write_metrics(spt / 'pretrain', [(250, 0.2)])
  (root / 'empty').mkdir()
  (root / 'empty' / 'kind.json').write_text('{}')
  unfinished = report.unfinished_runs(str(root))
  assert unfinished == [str(root / 'empty'), str(spt), str(stopped)]
  assert report.progress(str(stopped)) == (
    'at step 1500 of 5000, validation accuracy 16.10% (best 35.00% at step 1000)'
  )
  assert report.progress(str(spt)).startswith('pretrain stage at step 250')
  assert report.progress(str(root / 'empty')) == 'nothing logged'


def test_the_report_names_the_self_pretraining_stages_as_the_trainer_writes_them():
  from luna_jax.training import self_pretraining  # Imported here: the report itself avoids JAX.

  assert (report.FINETUNE_DIR, report.PRETRAIN_DIR) == (
    self_pretraining.FINETUNE_DIR,
    self_pretraining.PRETRAIN_DIR,
  )


def test_a_run_inside_another_runs_folder_is_counted_and_stages_are_not(tmp_path):
  root = tmp_path / 'runs'
  # A sweep run trained inside the quick start's run folder, of the same config name.
  write_run(root, 'quickstart', 'listops', 0, 0.44, **LUNA16)
  write_run(root, 'quickstart/luna16/seed1', 'listops', 1, 0.42, **LUNA16)
  (root / 'quickstart' / 'checkpoints' / '5').mkdir(parents=True)
  (root / 'quickstart' / 'luna16' / 'seed2').mkdir(parents=True)
  (root / 'quickstart' / 'luna16' / 'seed2' / 'kind.json').write_text('{}')
  # A self-pretraining run: its stages are part of it.
  write_run(root, 'spt', 'listops', 0, 0.40, **LUNA16)
  write_run(root, 'spt/finetune', 'listops', 0, 0.40, **LUNA16)
  write_run(root, 'spt/pretrain', 'listops', 0, 0.20, **dict(LUNA16, name='luna_mlm'))
  assert report.find_results(str(root)) == sorted(
    str(root / folder / 'results.json')
    for folder in ('quickstart', 'quickstart/luna16/seed1', 'spt')
  )
  assert report.unfinished_runs(str(root)) == [str(root / 'quickstart' / 'luna16' / 'seed2')]


def test_figure1_labels_of_close_bubbles_do_not_overlap(tmp_path, monkeypatch):
  import matplotlib.figure

  drawn = []  # The labels' boxes, taken as the figure is saved (before it is closed).

  def savefig(fig, *args, **kwargs):
    renderer = fig.canvas.get_renderer()
    drawn.append(
      {t.get_text().split()[0]: t.get_window_extent(renderer) for t in fig.axes[0].texts}
    )

  monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig)
  cell = lambda model, steps: {
    'model': model, 'length': 1024, 'status': 'ok', 'steps_per_s': steps, 'memory_bytes': 1e9
  }  # fmt: skip
  # Luna-128 and Luna-256: paper averages 0.2 points apart, nearly the same speed (the
  # Transformer, 4 points below and 10 times slower, sets the scale).
  cells = [cell('luna128', 1.0), cell('luna256', 1.02), cell('transformer', 0.1)]
  benchmark = {'machine': {}, 'cells': cells}
  report.figure1(benchmark, {}, str(tmp_path / 'figure1.png'))
  (boxes,) = drawn
  assert not boxes['Luna-128'].overlaps(boxes['Luna-256'])
  # Labels that cannot move (speeds of 0 have no place on the log axis) end the search.
  cells += [cell('linformer', 0.0), cell('performer', 0.0)]
  report.figure1(benchmark, {}, str(tmp_path / 'figure1.png'))
  assert len(drawn) == 2
  for c in cells:  # Memory not measured: no bubbles, the labels all the same.
    c['memory_bytes'] = 0
  report.figure1(benchmark, {}, str(tmp_path / 'figure1.png'))
  assert len(drawn) == 3 and not drawn[2]['Luna-128'].overlaps(drawn[2]['Luna-256'])


def test_runs_of_one_seed_in_a_cell_are_marked_as_repeats(tmp_path):
  root = tmp_path / 'runs'
  write_run(root, 'quickstart', 'listops', 0, 0.44, **LUNA16)
  write_run(root, 'again', 'listops', 0, 0.44, **LUNA16)
  write_run(root, 'other_seed', 'listops', 1, 0.40, **LUNA16)
  write_run(root, 'other_rate', 'listops', 1, 0.42, **LUNA16)
  write_run(root, 'performer', 'listops', 0, 0.20, **PERFORMER)
  results = json.loads((root / 'other_rate' / 'results.json').read_text())
  results['config'].update(
    optimizer={'learning_rate': 3e-4}, data={'task': 'listops', 'data_dir': 'x'}
  )
  (root / 'other_rate' / 'results.json').write_text(json.dumps(results))
  # How often a run logs and saves is not a setting of its figures; 1 and 1.0 are one value.
  results = json.loads((root / 'again' / 'results.json').read_text())
  results['config']['training'] = {'log_every': 7, 'checkpoint_every': 3, 'prefetch_batches': 0}
  (root / 'again' / 'results.json').write_text(json.dumps(results))
  for folder, rate in (('quickstart', 1), ('again', 1.0)):
    results = json.loads((root / folder / 'results.json').read_text())
    results['config'].setdefault('optimizer', {})['learning_rate'] = rate
    (root / folder / 'results.json').write_text(json.dumps(results))
  out = tmp_path / 'report'
  report.main(['--runs_dir', str(root), '--output_dir', str(out), '--benchmark_json', ''])
  markdown = (out / 'leaderboard.md').read_text()
  mean, sd = statistics.fmean([44, 44, 40, 42]), statistics.stdev([44, 44, 40, 42])
  assert f'| Luna-16 | ours (4 runs) | {mean:.2f} ± {sd:.2f}‡ | - |' in markdown
  assert '| Performer | ours (1 run) | 20.00 | - |' in markdown
  # Each seed's runs, with whether their settings are the same (the data folder aside).
  assert (
    f'- Luna-16, listops, seed 0: {root / "again" / "results.json"}, '
    f'{root / "quickstart" / "results.json"} (the same settings)\n' in markdown
  )
  assert (
    f'- Luna-16, listops, seed 1: {root / "other_rate" / "results.json"}, '
    f'{root / "other_seed" / "results.json"} (other settings: optimizer.learning_rate)\n'
    in markdown
  )
  assert markdown.count('‡') == 2  # The cell and its note.


def test_differing_settings_tell_a_flag_from_a_number_and_nan_from_itself():
  def runs(*values):
    return [types.SimpleNamespace(config={'model': {'x': value}}) for value in values]

  assert report.differing_settings(runs(1, 1.0)) == []
  assert report.differing_settings(runs(float('nan'), float('nan'))) == []
  assert report.differing_settings(runs(True, 1)) == ['model.x']
  assert report.differing_settings(runs(0, False)) == ['model.x']
  assert report.differing_settings(runs(float('nan'), 1.0)) == ['model.x']
  assert report.differing_settings(runs(None, 0)) == ['model.x']


@pytest.mark.parametrize(
  'task, final, best, learned, collapsed',
  [
    # ListOps (chance 10%): learned from exactly 10 + 0.1 x 90 = 19% on.
    ('listops', 0.19, None, True, False),
    ('listops', 0.1899, None, False, False),
    # The binary tasks (chance 50%): from 55% on; 57% is learned.
    ('pathfinder32', 0.57, None, True, False),
    ('pathfinder32', 0.5499, None, False, False),
    # Collapsed below chance + half the best gain: best 30%, final exactly 20% kept it.
    ('listops', 0.20, 0.30, True, False),
    ('listops', 0.1999, 0.30, True, True),
    # A run that never learned did not collapse, however far it fell.
    ('listops', 0.11, 0.17, False, False),
  ],
)
def test_the_health_rule_at_its_boundaries(task, final, best, learned, collapsed):
  entries = [] if best is None else [{'step': 1, 'validation_accuracy': best}]
  result = report.health(task, final, 2, entries)
  assert (result.learned, result.collapsed) == (learned, collapsed)


def test_metric_events_are_read_in_file_order_without_a_torn_record_or_other_files(tmp_path):
  """`metric_log.read_events` reads the event files of `tensorboard/` in the order their writers
  started, skips other files and leaves out a killed writer's torn last record."""
  from luna_jax.training import metric_log

  for start, step in ((0, 1), (2, 2)):
    writer = metric_log.MetricWriter(str(tmp_path), start_step=start)
    writer.write_scalars(step, {'loss': float(step)})
    writer.close()
  logdir = tmp_path / 'tensorboard'
  (logdir / 'notes.txt').write_text('not an event file')
  (logdir / 'plugins').mkdir()
  newest = sorted(p for p in logdir.iterdir() if p.name.startswith('events.out.tfevents.'))[-1]
  with open(newest, 'ab') as f:
    f.write(b'\x40\0\0\0\0\0\0\0\0\0\0\0torn')  # A record of 64 bytes cut short.
  events = metric_log.read_events(str(logdir))
  scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]
  assert scalars == [(1, 'loss', 1.0), (2, 'loss', 2.0)]
  assert [e.step for e in events if e.HasField('session_log')] == [0, 2]


def test_a_resumed_metric_log_keeps_a_last_line_without_its_newline_apart(tmp_path):
  """A complete last line of metrics.jsonl without a newline is kept as its own line (what the
  resumed run appends starts a new one); a line that does not parse is dropped, not what follows."""
  from luna_jax.training import metric_log

  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 1, "lo\n{"step": 2, "loss": 0.5}')
  writer = metric_log.MetricWriter(str(tmp_path), start_step=2)
  writer.write_scalars(3, {'loss': 0.25})
  writer.close()
  lines = path.read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [1, 2, 3]


@pytest.mark.parametrize('line', ['[1, 2]', '{"step": "1", "loss": 1.0}', '{"loss": 1.0}', '3'])
def test_a_metric_log_line_another_program_wrote_is_named_by_file_and_line(tmp_path, line):
  """It had ended the resumed run in a traceback (AttributeError, TypeError)."""
  from luna_jax.training import metric_log

  path = tmp_path / 'metrics.jsonl'
  path.write_text(f'{{"step": 1, "loss": 1.0}}\n{line}\n')
  before = path.read_bytes()
  with pytest.raises(metric_log.MetricLogError, match=r'metrics.jsonl:2: .* is not a metrics'):
    metric_log.MetricWriter(str(tmp_path), start_step=2)
  assert path.read_bytes() == before
  path.unlink()
  path.mkdir()
  with pytest.raises(metric_log.MetricLogError, match='metrics.jsonl is a folder'):
    metric_log.MetricWriter(str(tmp_path), start_step=2)


def test_a_resumed_metric_log_drops_every_entry_at_its_step_holding_a_redone_name(tmp_path):
  """At the restart step, an entry is dropped when any of its names starts with a redo prefix."""
  from luna_jax.training import metric_log

  path = tmp_path / 'metrics.jsonl'
  entries = [
    {'step': 2, 'train/loss': 1.0},
    {'step': 2, 'final/accuracy': 0.5, 'final/loss': 0.7},
    {'step': 2, 'final/accuracy': 0.5, 'eval/loss': 0.7},
  ]
  path.write_text(''.join(json.dumps(entry) + '\n' for entry in entries))
  metric_log.MetricWriter(str(tmp_path), start_step=2, redo_prefixes=('final/',)).close()
  assert [json.loads(line) for line in path.read_text().splitlines()] == entries[:1]
