"""`benchmarks.reproduce`: tiny sweeps of real `train.py` runs (debug configs, tiny data in the
layout `lra.prepare` writes): a finished run, a failed run reported with its log, skipping and
resuming, two runs at once on the CPU; and the scheduler with stand-ins for train.py: places shared
as they free, the memory settings, the deadline and the collection."""

import argparse
import json
import os
import shutil
import sys
import time

import pytest

from benchmarks import report, reproduce
from configs import pathfinder32_short
from lra import prepare
from tests.test_lra_listops import write_listops


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
  header = (finished / reproduce.LOG).read_text(encoding='utf-8').splitlines()[0]
  assert header.startswith('$ CUDA_VISIBLE_DEVICES=0 ')  # One run a GPU: jax's memory defaults.
  assert f'test accuracy {results["test"]["accuracy"]:.4f}' in out
  assert 'started on GPU 0' in out and 'started on GPU 1' in out  # Both ran at once.
  assert 'retrieval/luna16/seed0: FAILED (exit code 1)' in out
  assert 'new_aan_pairs.eval.tsv:' in out and 'expected 5 tab-separated fields' in out
  leaderboard = (reports / 'debug' / 'leaderboard.md').read_text(encoding='utf-8')
  ours = [line for line in leaderboard.splitlines() if '| ours, debug (1 run) |' in line]
  assert len(ours) == 1 and f'| {100 * results["test"]["accuracy"]:.2f}' in ours[0]
  assert (reports / 'debug' / 'figure1.png').stat().st_size > 0

  # Again: the finished run is skipped (its log does not grow); the failed one is tried again.
  log_size = (finished / reproduce.LOG).stat().st_size
  assert reproduce.main(options + train_flags) == 1
  out = capsys.readouterr().out
  assert 'listops/luna16/seed0: finished, skipped' in out
  assert 'retrieval/luna16/seed0: FAILED' in out
  assert (finished / reproduce.LOG).stat().st_size == log_size

  # A run trained past the recipe's steps is another run, not a finished one.
  (finished / 'results.json').write_text(json.dumps({**results, 'step': 7}), encoding='utf-8')
  assert reproduce.main(options + ['--dry_run'] + train_flags) == 0
  out = capsys.readouterr().out
  assert (
    f"listops/luna16/seed0: {reproduce.OTHER_RUN}: trained to step 7, past the recipe's 5" in out
  )

  # A run with a checkpoint and no results is resumed from it.
  (finished / 'results.json').unlink()
  assert reproduce.main(options + ['--dry_run'] + train_flags) == 0
  out = capsys.readouterr().out
  assert 'listops/luna16/seed0: resume from step 5' in out
  assert '--config.seed=0' in out and '--config.data.options.max_length=32' in out


def test_gpus_come_from_cuda_visible_devices_and_unknown_variants_are_refused(
  monkeypatch, capsys, tmp_path
):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert reproduce.visible_gpus('auto') == ['2', '3']
  assert reproduce.visible_gpus('none') == []
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  assert reproduce.visible_gpus('auto') == []
  with pytest.raises(SystemExit):
    reproduce.main(['--variants', 'luna16,luna64', '--dry_run'])
  assert 'unknown: luna64' in capsys.readouterr().err
  with pytest.raises(SystemExit):  # Both would train in one workdir.
    reproduce.main(['--variants', 'luna16,transformer,luna16', '--dry_run'])
  assert '--variants: luna16 given more than once.' in capsys.readouterr().err
  # The runs' config errors, one readable line each (a traceback; an escaped repr).
  with pytest.raises(SystemExit):
    reproduce.main(
      ['--dry_run', '--task_config', f'listops={tmp_path}/none.py', '--tasks', 'listops']
    )
  assert "No such file or directory: '" in capsys.readouterr().err.splitlines()[-1]
  with pytest.raises(SystemExit):
    reproduce.main(['--dry_run', '--', '--config.training.batchsize=3'])
  assert (
    capsys.readouterr()
    .err.splitlines()[-1]
    .endswith('\'batchsize\' Did you mean "batch_size" instead of "batchsize"?')
  )


def test_task_data_dir_on_the_command_line(tmp_path, capsys):
  """`--task_data_dir TASK=DIR`: the runs read DIR; a missing DIR is named with the flag (not the
  `lra.prepare` command), and a TASK that is none or that the sweep does not run is refused."""
  options = ['--tasks', 'listops', '--variants', 'luna16', '--seeds', '1', '--devices', 'none',
             '--runs_dir', str(tmp_path / 'runs'), '--report_dir', str(tmp_path / 'reports'),
             '--task_config', 'listops=configs/quickstart.py', '--dry_run']  # fmt: skip
  own = tmp_path / 'listops_quickstart'
  assert reproduce.main([*options, '--task_data_dir', f'listops={own}']) == 1
  out, err = capsys.readouterr()
  assert f'--config.data.data_dir={own.resolve()}' in out
  assert f'No data for listops in {own} (--task_data_dir)' in err and 'lra.prepare' not in err
  own.mkdir()
  assert reproduce.main([*options, '--task_data_dir', f'listops={own}']) == 0
  assert 'No data' not in capsys.readouterr().err
  with pytest.raises(SystemExit):
    reproduce.main([*options, '--task_data_dir', f'lisops={own}'])
  assert 'must be TASK=DIR with TASK one of listops' in capsys.readouterr().err
  with pytest.raises(SystemExit):  # A folder for a task the sweep does not run is a mistake.
    reproduce.main([*options, '--task_data_dir', f'text={own}'])
  assert '--task_data_dir names text, which --tasks does not run' in capsys.readouterr().err


def test_prepared_data_counts_only_when_the_tasks_files_are_there(tmp_path, capsys):
  """Pathfinder shares the release folder with ListOps: that folder alone is not its data; an
  empty path is refused rather than taken for the working directory."""
  root = tmp_path / 'data'
  options = ['--tasks', 'listops,pathfinder32', '--variants', 'luna16', '--seeds', '1',
             '--devices', 'none', '--data_dir', str(root), '--runs_dir', str(tmp_path / 'runs'),
             '--report_dir', str(tmp_path / 'reports'), '--dry_run']  # fmt: skip
  write_listops(prepare.task_data_dir('listops', root))
  assert reproduce.main(options) == 1
  err = capsys.readouterr().err
  assert f'No data for pathfinder32 under {root}' in err and 'listops' not in err, err
  folder = prepare.task_data_dir('pathfinder32', root) / 'pathfinder32' / 'curv_contour_length_14'
  (folder / 'metadata').mkdir(parents=True)
  (folder / 'metadata' / '0.npy').write_text('')
  assert reproduce.main(options) == 0
  assert 'No data' not in capsys.readouterr().err
  for flag in ('--data_dir', '--runs_dir', '--report_dir'):
    with pytest.raises(SystemExit):
      reproduce.main([*options, flag, ''])
    assert 'never the working directory' in capsys.readouterr().err


def test_concurrent_debug_runs_on_the_cpu_with_self_pretraining_and_pmean(
  tiny_lra_data, tmp_path, capsys, monkeypatch
):
  """Two real runs at once on the CPU (`--runs_per_device 2`): Table 3's P-mean variant and a
  self-pretrained Luna-16, collected with their small files and reported in their own rows."""
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
  root = tmp_path / 'data'
  ignore = shutil.ignore_patterns('lra_cache')
  shutil.copytree(
    tiny_lra_data['listops'][0], prepare.task_data_dir('listops', root), ignore=ignore
  )
  runs, reports, collected = tmp_path / 'runs', tmp_path / 'reports', tmp_path / 'out'
  options = ['--tasks', 'listops', '--variants', 'luna16_pmean,luna16+spt', '--seeds', '1',
             '--data_dir', str(root), '--runs_dir', str(runs), '--report_dir', str(reports),
             '--devices', 'none', '--runs_per_device', '2', '--debug', '--status_every', '0',
             '--collect_to', str(collected), '--benchmark_json', '']  # fmt: skip
  assert reproduce.main(options + ['--', '--config.data.options.max_length=32']) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  started = [i for i, line in enumerate(lines) if ': started on all devices' in line]
  done = [i for i, line in enumerate(lines) if ': done in' in line]
  assert len(started) == 2 and len(done) == 2 and max(started) < min(done)  # At once.
  pmean, spt = (
    runs / 'debug' / 'listops' / name / 'seed0' for name in ('luna16_pmean', 'luna16+spt')
  )
  for workdir in (pmean, spt):  # The settings of a shared device, written before the command.
    header = (workdir / reproduce.LOG).read_text(encoding='utf-8').splitlines()[0]
    assert header.startswith('$ XLA_CLIENT_MEM_FRACTION=0.450 XLA_PYTHON_CLIENT_PREALLOCATE=false ')
  assert json.loads((pmean / 'results.json').read_text())['config']['model']['pooling'] == 'p'
  results = json.loads((spt / 'results.json').read_text())
  assert results['pretraining']['step'] == 5 and results['step'] == 5
  assert results['config']['init_from'] == str(spt / 'pretrain')
  # The collection: small files of the run and of both stages, the sweep's record.
  copy = collected / 'runs' / 'listops' / 'luna16+spt' / 'seed0'
  for name in ('results.json', 'kind.json', 'train.log', 'pretrain/metrics.jsonl',
               'finetune/metrics.jsonl', 'finetune/config.json'):  # fmt: skip
    assert (copy / name).is_file(), name
  assert not (copy / 'finetune' / 'checkpoints').exists()
  assert '\r' not in (copy / 'train.log').read_text(encoding='utf-8')
  sweep = json.loads((collected / 'sweep.json').read_text())
  assert [(r['name'], r['state']) for r in sweep['runs']] == [
    ('listops/luna16_pmean/seed0', 'finished'),
    ('listops/luna16+spt/seed0', 'finished'),
  ]
  assert sweep['runs'][1]['env'] == {
    'XLA_CLIENT_MEM_FRACTION': '0.450',
    'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
  }
  assert sweep['runs'][1]['command'][3].endswith('configs/listops.py:luna16,spt,debug')
  # The report reads the copies: Table 3's row and the self-pretrained row, apart.
  leaderboard = (reports / 'debug' / 'leaderboard.md').read_text(encoding='utf-8')
  assert ' (P-mean) (debug) | ours, debug (1 run) |' in leaderboard
  assert ' + self-pretraining (debug) | ours, debug (1 run) |' in leaderboard
  assert f'- {copy / "results.json"}: 5 masked-LM steps' in leaderboard


#: A stand-in for train.py: notes its start (and the memory settings it got) in `<shared>/`, waits
#: until two runs have started (at most 60 s), then writes a finished run's results.json.
_TOGETHER = """
import json, os, sys, time
shared, workdir = sys.argv[1], sys.argv[2]
name = os.path.basename(os.path.dirname(workdir)) + os.path.basename(workdir)
count = lambda suffix: sum(f.endswith(suffix) for f in os.listdir(shared))
open(os.path.join(shared, name + '.start'), 'w').close()
keys = [f'XLA_{k}' for k in ('CLIENT_MEM_FRACTION', 'PYTHON_CLIENT_MEM_FRACTION',
                             'PYTHON_CLIENT_PREALLOCATE')]
record = {'live': count('.start') - count('.end'), 'env': {k: os.environ.get(k) for k in keys}}
end = time.time() + 60
while count('.start') < 2 and time.time() < end:
  time.sleep(0.02)
record['saw_two'] = count('.start') >= 2
config = json.loads(sys.argv[3])
results = {'config': config, 'step': 1, 'test': {'accuracy': 0.5}, 'validation': {'accuracy': 0.5}}
json.dump(results, open(os.path.join(workdir, 'results.json'), 'w'))
json.dump(record, open(os.path.join(shared, name + '.json'), 'w'))
open(os.path.join(shared, name + '.end'), 'w').close()
"""

#: A stand-in for a run that outlives the deadline: a config.json and a metrics.jsonl, then sleep;
#: with 'stubborn' it ignores SIGTERM.
_SLOW = """
import json, os, signal, sys, time
workdir = sys.argv[1]
if sys.argv[2] == 'stubborn':
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
json.dump({'training': {'num_train_steps': 100}}, open(os.path.join(workdir, 'config.json'), 'w'))
with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
  f.write(json.dumps({'step': 10, 'validation_accuracy': 0.25}) + '\\n')
open(os.path.join(workdir, 'pid'), 'w').write(str(os.getpid()))
time.sleep(600)
"""


def _fake_run(tmp_path, name, script, args):
  recipe = {'training': {'num_train_steps': 1, 'num_eval_batches': -1}}
  workdir = tmp_path / 'runs' / 'task' / name / 'seed0'
  command = [sys.executable, '-c', script, *args(workdir, recipe)]
  return reproduce.Run('task', name, 0, workdir, command, recipe, f'task/{name}/seed0')


def test_runs_share_places_as_they_free_with_their_memory_settings(tmp_path, monkeypatch):
  monkeypatch.setenv(
    'XLA_PYTHON_CLIENT_MEM_FRACTION', '0.75'
  )  # jax refuses it beside the new name.
  shared = tmp_path / 'shared'
  shared.mkdir()
  args = lambda workdir, recipe: [str(shared), str(workdir), json.dumps(recipe)]
  runs = [_fake_run(tmp_path, name, _TOGETHER, args) for name in ('a', 'b', 'c')]
  assert reproduce.execute(runs, [], status_every=600, poll=0.02, runs_per_device=2) == []
  assert [run.outcome for run in runs] == [reproduce.FINISHED] * 3
  record = {name: json.loads((shared / f'{name}seed0.json').read_text()) for name in 'abc'}
  assert record['a']['saw_two'] and record['b']['saw_two']  # a and b ran together,
  assert max(r['live'] for r in record.values()) <= 2  # never three at once,
  mtime = lambda name: (shared / name).stat().st_mtime_ns
  assert min(mtime('aseed0.end'), mtime('bseed0.end')) <= mtime('cseed0.start')  # c waited.
  for r in record.values():
    assert r['env'] == {
      'XLA_CLIENT_MEM_FRACTION': '0.450',
      'XLA_PYTHON_CLIENT_MEM_FRACTION': None,
      'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
    }
  assert reproduce.child_env('3', 1) == {'CUDA_VISIBLE_DEVICES': '3'}  # One a GPU: jax's defaults.
  assert reproduce.child_env('3', 2, memory_fraction=0.6) == {  # Runs of unequal size.
    'CUDA_VISIBLE_DEVICES': '3',
    'XLA_CLIENT_MEM_FRACTION': '0.600',
    'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
  }


def test_the_deadline_stops_runs_and_the_collection_keeps_what_they_logged(tmp_path, capsys):
  names = ('polite', 'stubborn', 'queued')
  runs = [
    _fake_run(tmp_path, name, _SLOW, lambda workdir, recipe, name=name: [str(workdir), name])
    for name in names
  ]
  deadline = time.monotonic() + 10  # Time for two Pythons to start and log.
  failed = reproduce.execute(
    runs, [], status_every=600, poll=0.05, runs_per_device=2, deadline=deadline, grace=1.0
  )
  assert failed == [] and [run.outcome for run in runs] == ['partial', 'partial', 'not started']
  out = capsys.readouterr().out
  assert 'task/polite/seed0: stopped at the deadline' in out
  assert 'at step 10 of 100, validation accuracy 25.00%' in out
  assert 'Deadline: 1 runs not started: task/queued/seed0' in out
  for run in runs[:2]:  # SIGTERM, then SIGKILL for the one that ignores it: both are gone.
    with pytest.raises(ProcessLookupError):
      os.kill(int((run.workdir / 'pid').read_text()), 0)
  sweep = reproduce.collect(runs, tmp_path / 'runs', tmp_path / 'out', {'deadline_minutes': 0.2})
  record = json.loads(sweep.read_text())
  assert record['deadline_minutes'] == 0.2
  assert [(r['state'], r['files']) for r in record['runs']] == [
    ('partial', ['config.json', 'metrics.jsonl', 'train.log']),
    ('partial', ['config.json', 'metrics.jsonl', 'train.log']),
    ('not started', []),
  ]
  assert record['runs'][0]['command'][-1] == 'polite'
  copies = tmp_path / 'out' / 'runs'
  assert report.unfinished_runs(str(copies)) == [
    str(copies / 'task' / name / 'seed0') for name in ('polite', 'stubborn')
  ]
  log = (copies / 'task' / 'polite' / 'seed0' / reproduce.LOG).read_text()
  assert log.startswith('$ XLA_CLIENT_MEM_FRACTION=0.450 ')


def test_a_task_config_of_its_own_and_variants_with_spt_in_the_plan(tmp_path):
  short = {'pathfinder32': 'configs/pathfinder32_short.py'}
  runs = reproduce.plan(['pathfinder32'], ['luna16', 'transformer+spt'], 2, tmp_path, tmp_path,
                        task_configs=short, order='seed')  # fmt: skip
  assert [run.name for run in runs] == [
    'pathfinder32_short/luna16/seed0',
    'pathfinder32_short/transformer+spt/seed0',
    'pathfinder32_short/luna16/seed1',
    'pathfinder32_short/transformer+spt/seed1',
  ]
  assert runs[0].recipe['training']['num_train_steps'] == pathfinder32_short.LUNA_STEPS
  assert runs[1].command[3].endswith('configs/pathfinder32_short.py:transformer,spt')
  assert runs[1].recipe['self_pretraining']['num_train_steps'] == -1
  later = reproduce.plan(['listops'], ['luna16'], range(2, 4), tmp_path, tmp_path)  # --first_seed 2
  assert [(run.name, run.recipe['seed']) for run in later] == [
    ('listops/luna16/seed2', 2),
    ('listops/luna16/seed3', 3),
  ]
  quickstart = {'listops': 'configs/quickstart.py'}
  own_data = {'listops': str(tmp_path / 'listops_quickstart')}
  own = reproduce.plan(['listops'], ['transformer+spt'], 1, tmp_path, tmp_path,
                       task_configs=quickstart, task_data_dirs=own_data)  # fmt: skip
  assert own[0].name == 'quickstart/transformer+spt/seed0'
  assert f'--config.data.data_dir={(tmp_path / "listops_quickstart").resolve()}' in own[0].command
  assert runs[0].recipe['data']['data_dir'] == str(
    reproduce.task_data_dir('pathfinder32', tmp_path, None).resolve()
  )
  with pytest.raises(ValueError, match="is a config of 'pathfinder32', not of 'listops'"):
    reproduce.plan(['listops'], ['luna16'], 1, tmp_path, tmp_path, task_configs={'listops':
                   short['pathfinder32']})  # fmt: skip
  with pytest.raises(ValueError, match=r"'luna16\+debug': a variant is one of"):
    reproduce.parse_variant('luna16+debug')  # --debug, not a variant's flag.


def test_another_run_s_workdir_is_not_counted_and_a_run_without_results_failed(tmp_path, capsys):
  """A workdir holding results that are not this run's is reported and its run not started; a run
  that exits 0 without its results failed."""
  args = lambda workdir, recipe: [str(workdir)]
  start = 'import sys; open(sys.argv[1] + "/started", "w").close()'
  other, quiet = (_fake_run(tmp_path, name, start, args) for name in ('other', 'quiet'))
  other.workdir.mkdir(parents=True)
  (other.workdir / 'results.json').write_text('not json')
  assert reproduce.execute([other, quiet], [], status_every=600, poll=0.02) == [other, quiet]
  assert (other.outcome, quiet.outcome) == (reproduce.NOT_COUNTED, reproduce.FAILED)
  assert not (other.workdir / 'started').exists() and (quiet.workdir / 'started').exists()
  out = capsys.readouterr().out
  assert 'task/other/seed0: NOT COUNTED' in out and 'task/quiet/seed0: FAILED (exit code 0)' in out


#: A stand-in for a run that wrote its results but is still running at the deadline; it notes a
#: SIGTERM in its workdir.
_DONE_BUT_RUNNING = """
import json, os, signal, sys, time
workdir, config = sys.argv[1], json.loads(sys.argv[2])
def stop(signum, frame):
  open(os.path.join(workdir, 'terminated'), 'w').close()
  sys.exit(143)
signal.signal(signal.SIGTERM, stop)
results = {'config': config, 'step': 1, 'test': {'accuracy': 0.5}, 'validation': {'accuracy': 0.5}}
with open(os.path.join(workdir, 'results.tmp'), 'w') as f:
  json.dump(results, f)
os.replace(os.path.join(workdir, 'results.tmp'), os.path.join(workdir, 'results.json'))
time.sleep(600)
"""


def test_a_run_whose_results_are_written_by_the_deadline_is_finished(tmp_path, monkeypatch):
  """A run stopped at the deadline gets SIGTERM first (a trainer saves its checkpoint then); one
  that wrote its final results by then counts as finished."""
  args = lambda workdir, recipe: [str(workdir), json.dumps(recipe)]
  run = _fake_run(tmp_path, 'done', _DONE_BUT_RUNNING, args)
  # The deadline passes once the stand-in has written its results, however slow its start.
  real, deadline = time.monotonic, time.monotonic() + 3600
  passed = lambda: real() + 7200 * (run.workdir / 'results.json').exists()
  monkeypatch.setattr(reproduce.time, 'monotonic', passed)
  assert reproduce.execute([run], [], status_every=600, poll=0.05, deadline=deadline, grace=5) == []
  assert run.outcome == reproduce.FINISHED and (run.workdir / 'terminated').exists()


def test_main_gives_the_deadline_in_minutes_and_runs_left_make_the_sweep_fail(
  tmp_path, capsys, monkeypatch
):
  """--deadline_minutes M reaches the scheduler as M minutes after the start; runs the deadline
  left unstarted fail the sweep and are named; --first_seed K --seeds N runs seeds K .. K+N-1."""
  given = {}

  def execute(runs, gpus, status_every, **kwargs):
    given.update(kwargs, names=[run.name for run in runs])
    return []  # Their outcome stays 'not started'.

  monkeypatch.setattr(reproduce, 'execute', execute)
  monkeypatch.setattr(reproduce.time, 'monotonic', lambda: 1000.0)
  own = tmp_path / 'listops_quickstart'
  own.mkdir()
  options = ['--tasks', 'listops', '--variants', 'luna16', '--seeds', '2', '--first_seed', '3',
             '--devices', 'none', '--runs_dir', str(tmp_path / 'runs'), '--report_dir',
             str(tmp_path / 'reports'), '--task_config', 'listops=configs/quickstart.py',
             '--task_data_dir', f'listops={own}', '--deadline_minutes', '1.5',
             '--benchmark_json', '']  # fmt: skip
  assert reproduce.main(options) == 1
  assert given['deadline'] == 1000.0 + 60 * 1.5
  assert given['names'] == ['quickstart/luna16/seed3', 'quickstart/luna16/seed4']
  err = capsys.readouterr().err
  assert '2 of 2 runs did not finish before the deadline: quickstart/luna16/seed3, ' in err


def test_logs_keep_the_last_state_of_progress_bars_and_failures_their_last_lines(tmp_path):
  """`compact_log` keeps each line's text after its last carriage return; `log_tail` the last
  TAIL_LINES lines, carriage returns counted as line ends."""
  assert reproduce.compact_log('a\n10%\r50%\r100%\nb\n') == 'a\n100%\nb\n'
  log = tmp_path / 'train.log'
  lines = [f'line {i}' for i in range(reproduce.TAIL_LINES + 5)]
  log.write_text('\n'.join(lines) + '\rend\n')
  kept = (lines + ['end'])[-reproduce.TAIL_LINES :]
  assert reproduce.log_tail(log).splitlines() == kept


def test_a_run_resumes_from_its_newest_checkpoint_and_its_minutes_are_collected(tmp_path):
  """`Run.state` names the newest checkpoint; sweep.json gives a run's time in minutes."""
  run = _fake_run(tmp_path, 'resumed', '', lambda workdir, recipe: [])
  for step in (5, 10, 15):
    (run.workdir / 'checkpoints' / str(step)).mkdir(parents=True)
  assert run.state() == 'resume from step 15'
  run.outcome, run.seconds = reproduce.PARTIAL, 90.0
  sweep = reproduce.collect([run], tmp_path / 'runs', tmp_path / 'out', {})
  assert json.loads(sweep.read_text())['runs'][0]['minutes'] == 90.0 / 60


def test_without_cuda_visible_devices_the_gpus_are_nvidia_smi_s(monkeypatch):
  """'auto' without CUDA_VISIBLE_DEVICES: no nvidia-smi, no GPUs; else one id per 'GPU ' line."""
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  monkeypatch.setattr(reproduce.shutil, 'which', lambda name: None)
  assert reproduce.visible_gpus('auto') == []
  listing = 'GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n'
  monkeypatch.setattr(reproduce.shutil, 'which', lambda name: f'/usr/bin/{name}')
  monkeypatch.setattr(
    reproduce.subprocess, 'run', lambda command, **kwargs: argparse.Namespace(stdout=listing)
  )
  assert reproduce.visible_gpus('auto') == ['0', '1']
