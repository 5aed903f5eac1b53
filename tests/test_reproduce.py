"""`benchmarks.reproduce`: a tiny sweep of real `train.py` runs (debug configs, tiny data in the
layout `lra.prepare` writes): a finished run, a failed run reported with its log, skipping and
resuming."""

import json
import shutil

import pytest

from benchmarks import reproduce
from lra import prepare


def test_sweep_reports_failures_skips_finished_runs_and_plans_resumes(
  tiny_lra_data, tmp_path, capsys, monkeypatch
):
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')  # The runs compile faster.
  root = tmp_path / 'data'
  ignore = shutil.ignore_patterns('lra_cache')
  shutil.copytree(
    tiny_lra_data['listops'][0], prepare.task_data_dir('listops', root), ignore=ignore
  )
  retrieval = prepare.task_data_dir('retrieval', root)
  shutil.copytree(tiny_lra_data['retrieval'][0], retrieval, ignore=ignore)
  with open(retrieval / 'new_aan_pairs.eval.tsv', 'a', encoding='utf-8') as f:
    f.write('1\tonly\tthree\n')  # Every Retrieval run fails in train.py on this line.
  runs, reports = tmp_path / 'runs', tmp_path / 'reports'
  options = [
    '--tasks',
    'listops,retrieval',
    '--variants',
    'luna16',
    '--seeds',
    '1',
    '--data_dir',
    str(root),
    '--runs_dir',
    str(runs),
    '--report_dir',
    str(reports),
    '--devices',
    '0,1',
    '--debug',
    '--status_every',
    '0',
  ]
  train_flags = ['--', '--config.data.options.max_length=32']

  assert reproduce.main(options + train_flags) == 1
  out = capsys.readouterr().out
  finished = runs / 'debug' / 'listops' / 'luna16' / 'seed0'  # Debug runs apart from real ones.
  results = json.loads((finished / 'results.json').read_text(encoding='utf-8'))
  assert results['config']['data']['options']['max_length'] == 32
  assert 'listops/luna16/seed0: done in' in out
  assert f'test accuracy {results["test"]["accuracy"]:.4f}' in out
  assert 'started on GPU 0' in out and 'started on GPU 1' in out  # Both ran at once.
  assert 'retrieval/luna16/seed0: FAILED (exit code 1)' in out
  assert 'new_aan_pairs.eval.tsv:' in out and 'expected 5 tab-separated fields' in out
  leaderboard = (reports / 'debug' / 'leaderboard.md').read_text(encoding='utf-8')
  ours = [line for line in leaderboard.splitlines() if '| ours, debug (1 run) |' in line]
  assert len(ours) == 1 and f'| {100 * results["test"]["accuracy"]:.2f} |' in ours[0]
  assert (reports / 'debug' / 'figure1.png').stat().st_size > 0

  # Again: the finished run is skipped (its log does not grow); the failed one is tried again.
  log_size = (finished / reproduce.LOG).stat().st_size
  assert reproduce.main(options + train_flags) == 1
  out = capsys.readouterr().out
  assert 'listops/luna16/seed0: finished, skipped' in out
  assert 'retrieval/luna16/seed0: FAILED' in out
  assert (finished / reproduce.LOG).stat().st_size == log_size

  # A run with a checkpoint and no results is resumed from it.
  (finished / 'results.json').unlink()
  assert reproduce.main(options + ['--dry_run'] + train_flags) == 0
  out = capsys.readouterr().out
  assert 'listops/luna16/seed0: resume from step 5' in out
  assert '--config.seed=0' in out and '--config.data.options.max_length=32' in out


def test_gpus_come_from_cuda_visible_devices_and_unknown_variants_are_refused(monkeypatch, capsys):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert reproduce.visible_gpus('auto') == ['2', '3']
  assert reproduce.visible_gpus('none') == []
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  assert reproduce.visible_gpus('auto') == []
  with pytest.raises(SystemExit):
    reproduce.main(['--variants', 'luna16,luna64', '--dry_run'])
  assert 'unknown: luna64' in capsys.readouterr().err
