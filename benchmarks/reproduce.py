r"""The LRA sweep: every task x model variant x seed through `train.py`, then the Table-1 report.

  python -m benchmarks.reproduce --tasks all --variants luna16,luna256,transformer --seeds 3 \
      [--data_dir data] [--runs_dir runs] [--report_dir reports] [--devices auto] [--dry_run] \
      [-- <more train.py flags, e.g. --config.model.precision=bfloat16>]

Run (task, variant, seed k) is
  train.py --config configs/<task>.py:<variant> --workdir <runs_dir>/<task>/<variant>/seed<k>
           --config.seed=<k> --config.data.data_dir=<the task's folder written by lra.prepare>
with its output in `<workdir>/train.log`. A run whose workdir holds the `results.json` of the
requested recipe (the config file with the seed, the data folder and the `--config.*` flags after
`--`, compared as the trainer compares a resumed run, plus the number of steps and evaluation
batches) is finished and skipped; one that holds another run's results is not counted and is
reported (move it away); any other is started, and the trainer resumes it from its newest
checkpoint. `--debug` runs go to `<runs_dir>/debug/...` and their report to `<report_dir>/debug`,
apart from the real ones. With several
GPUs visible (`CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L`) the runs go one per GPU
(`CUDA_VISIBLE_DEVICES=<gpu>` for each child process), otherwise one after another on every device.
A line per run says when it starts, where it is every `--status_every` seconds, and how it ended; a
failed run is reported with the last lines of its log and the others go on. At the end
`benchmarks.report` writes `leaderboard.md` (Table 1) and `figure1.png` (Figure 1) into
`--report_dir` from the sweep's finished runs. `all` is the five tasks of Table 1; Path-X is
`--tasks pathx`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from benchmarks import report
from configs.variants import CONFIG_VARIANTS, TABLE1_TASKS
from lra import cli, prepare
from lra.core import DataError
from luna_jax.training import run_config, self_pretraining

REPO = Path(__file__).resolve().parents[1]
LOG = 'train.log'
#: Sub-folder of `--runs_dir` and `--report_dir` for `--debug` sweeps.
DEBUG_DIR = 'debug'
#: Lines of a failed run's log that are printed.
TAIL_LINES = 15


#: Prefix of `Run.state()` for a workdir that holds the results of another run.
OTHER_RUN = 'holds another run'


@dataclasses.dataclass
class Run:
  """One training run of the sweep.

  Attributes:
    recipe: the resolved config `train.py` runs it with (`recipe_config`).
  """

  task: str
  variant: str
  seed: int
  workdir: Path
  command: list[str]
  recipe: dict[str, Any]

  @property
  def name(self) -> str:
    return f'{self.task}/{self.variant}/seed{self.seed}'

  def state(self) -> str:
    """'finished', 'holds another run: <why>', 'resume from step N' or 'new'.

    Finished means a results.json of this recipe (`recipe_differences`) that reached its last step.
    """
    results_path = self.workdir / 'results.json'
    steps = [int(p.name) for p in (self.workdir / 'checkpoints').glob('*') if p.name.isdigit()]
    resume = f'resume from step {max(steps)}' if steps else 'new'
    if not results_path.exists():
      return resume
    recipe = self.recipe
    try:
      results = json.loads(results_path.read_text(encoding='utf-8'))
      if 'pretraining' in results:  # A self-pretraining run's results are its finetune stage's.
        finetune = {'self_pretraining': {'num_train_steps': 0}, 'init_from': None}
        finetune['init_from'] = str(self.workdir / self_pretraining.PRETRAIN_DIR)
        recipe = {**recipe, **finetune}
      differences = recipe_differences(results['config'], recipe)
      step = results['step']
    except (ValueError, KeyError, TypeError) as e:
      return f'{OTHER_RUN}: unreadable results.json ({e})'
    if differences:
      return f'{OTHER_RUN}: ' + '; '.join(differences)
    return 'finished' if step >= self.recipe['training']['num_train_steps'] else resume


def recipe_differences(stored: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
  """What differs between a finished run's config and the recipe, as 'key: stored -> recipe'.

  The trainer's resume rule (`config_changes`: every setting but the schedule ones and the device
  count), and the evaluation's number of batches (a sample is another figure).
  """
  changes = run_config.config_changes(stored, recipe)
  key = 'num_eval_batches'
  stored_value = stored.get('training', {}).get(key)
  if stored_value != recipe['training'][key]:
    changes.append(f'training.{key}: {stored_value!r} -> {recipe["training"][key]!r}')
  return changes


def recipe_config(command: Sequence[str]) -> dict[str, Any]:
  """The resolved config (`RunConfig.to_dict()`) of a `train.py` command line: its `--config`
  file and argument with its `--config.*` overrides, parsed as `train.py` parses them.

  Raises:
    ValueError: a config argument or an override the config refuses (the message names it).
  """
  argv = ['train.py']
  for i, arg in enumerate(command):
    if arg == '--config':
      argv.append(f'--config={command[i + 1]}')
    elif arg.startswith(('--config.', '--config=')):
      argv.append(arg)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'config', flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  try:
    flag_values(argv)
    return run_config.parse_config(flag_values.config).to_dict()
  except (flags.Error, AttributeError, TypeError) as e:
    raise ValueError(f'{shlex.join(command[2:])}: {e}') from None


def parse_tasks(spec: str) -> list[str]:
  """'all' (the tasks of Table 1) or a comma-separated list of LRA tasks."""
  return list(TABLE1_TASKS) if spec.strip() == 'all' else prepare.parse_tasks(spec)


def plan(
  tasks: Sequence[str],
  variants: Sequence[str],
  seeds: int,
  data_root: Path,
  runs_dir: Path,
  debug: bool = False,
  train_flags: Sequence[str] = (),
) -> list[Run]:
  """The runs of the sweep, task by task, then variant, then seed.

  Args:
    tasks: LRA task names.
    variants: config variants (`configs/<task>.py:<variant>`).
    seeds: seeds 0 .. seeds - 1.
    data_root: `lra.prepare --data_dir`.
    runs_dir: the workdirs' root (debug runs: its `debug` sub-folder).
    debug: append ',debug' to the config argument (smoke tests).
    train_flags: more `train.py` flags, given to every run.

  Raises:
    ValueError: a `--config.*` flag in `train_flags` that the configs refuse.
  """
  runs = []
  root = runs_dir / DEBUG_DIR if debug else runs_dir
  for task in tasks:
    config = prepare.TASK_FILES[task].config
    data_dir = prepare.task_data_dir(task, data_root).resolve()
    for variant in variants:
      for seed in range(seeds):
        workdir = (root / task / variant / f'seed{seed}').resolve()
        command = [
          sys.executable,
          str(REPO / 'train.py'),
          '--config',
          f'{REPO / config}:{variant}{",debug" if debug else ""}',
          '--workdir',
          str(workdir),
          f'--config.seed={seed}',
          f'--config.data.data_dir={data_dir}',
          *train_flags,
        ]
        runs.append(Run(task, variant, seed, workdir, command, recipe_config(command)))
  return runs


def visible_gpus(spec: str) -> list[str]:
  """GPU ids to run on: `spec` 'auto' (CUDA_VISIBLE_DEVICES, else nvidia-smi), 'none', or '0,1'."""
  if spec == 'none':
    return []
  if spec != 'auto':
    return [d.strip() for d in spec.split(',') if d.strip()]
  if 'CUDA_VISIBLE_DEVICES' in os.environ:
    return [d.strip() for d in os.environ['CUDA_VISIBLE_DEVICES'].split(',') if d.strip()]
  if shutil.which('nvidia-smi') is None:
    return []
  try:
    listing = subprocess.run(
      ['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30, check=True
    ).stdout
  except (subprocess.SubprocessError, OSError):
    return []
  return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith('GPU ')]


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
  """The last `lines` lines of a log (progress-bar carriage returns count as line ends)."""
  if not path.exists():
    return '(no log)'
  with open(path, 'rb') as f:
    f.seek(max(0, path.stat().st_size - 64 * 1024))
    text = f.read().decode('utf-8', errors='replace')
  kept = [line for line in text.replace('\r', '\n').splitlines() if line.strip()]
  return '\n'.join(kept[-lines:])


def progress_line(run: Run) -> str:
  """Where a running run is: its last logged step, of how many, and its last validation accuracy."""
  step, validation, total = 0, None, '?'
  config_path = run.workdir / 'config.json'
  if config_path.exists():
    total = json.loads(config_path.read_text(encoding='utf-8'))['training']['num_train_steps']
  metrics = run.workdir / 'metrics.jsonl'
  if metrics.exists():
    for line in metrics.read_text(encoding='utf-8').splitlines():
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:
        continue
      step = max(step, entry.get('step', 0))
      validation = entry.get('validation_accuracy', validation)
  text = f'step {step}/{total}'
  return text + (f', validation accuracy {validation:.4f}' if validation is not None else '')


def result_line(run: Run) -> str:
  results = json.loads((run.workdir / 'results.json').read_text(encoding='utf-8'))
  return (
    f'test accuracy {results["test"]["accuracy"]:.4f}, validation accuracy '
    f'{results["validation"]["accuracy"]:.4f}, step {results["step"]}'
  )


def _minutes(seconds: float) -> str:
  return f'{seconds / 60:.1f} min'


def execute(
  runs: Sequence[Run], gpus: Sequence[str], status_every: float = 60.0, poll: float = 1.0
) -> list[Run]:
  """Runs every unfinished run, one per GPU at a time (or one after another without GPUs).

  Returns:
    The runs that failed, and those whose workdir holds another run's results (not started).
  """
  total = len(runs)
  index = {id(run): i for i, run in enumerate(runs, start=1)}
  queue, failed = [], []
  for run in runs:
    state = run.state()
    if state == 'finished':
      print(f'[{index[id(run)]}/{total}] {run.name}: finished, skipped ({result_line(run)})')
    elif state.startswith(OTHER_RUN):
      failed.append(run)
      print(
        f'[{index[id(run)]}/{total}] {run.name}: NOT COUNTED: {run.workdir} {state}. Move it '
        'away (or use another --runs_dir) and run the same command again.',
        flush=True,
      )
    else:
      queue.append(run)
  slots: list[str | None] = list(gpus) or [None]
  running: dict[str | None, tuple[Run, subprocess.Popen, float]] = {}
  last_status = time.monotonic()
  try:
    while queue or running:
      for slot in slots:
        if slot in running or not queue:
          continue
        run = queue.pop(0)
        where = f'GPU {slot}' if slot is not None else 'all devices'
        run.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if slot is not None:
          env['CUDA_VISIBLE_DEVICES'] = slot
        with open(run.workdir / LOG, 'a', encoding='utf-8') as log:
          log.write(f'$ {shlex.join(run.command)}\n')
          log.flush()
          process = subprocess.Popen(
            run.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
          )
        print(
          f'[{index[id(run)]}/{total}] {run.name}: started on {where} ({run.state()}); '
          f'log {run.workdir / LOG}',
          flush=True,
        )
        running[slot] = (run, process, time.monotonic())
      time.sleep(poll)
      now = time.monotonic()
      for slot, (run, process, started) in list(running.items()):
        code = process.poll()
        if code is None:
          continue
        del running[slot]
        prefix = f'[{index[id(run)]}/{total}] {run.name}'
        if code == 0 and run.state() == 'finished':
          print(f'{prefix}: done in {_minutes(now - started)}: {result_line(run)}', flush=True)
        else:
          failed.append(run)
          print(
            f'{prefix}: FAILED (exit code {code}) after {_minutes(now - started)}; last lines '
            f'of {run.workdir / LOG}:\n{log_tail(run.workdir / LOG)}',
            flush=True,
          )
      if running and now - last_status >= status_every:
        last_status = now
        for run, _, started in running.values():
          print(
            f'[{index[id(run)]}/{total}] {run.name}: {progress_line(run)} '
            f'({_minutes(now - started)})',
            flush=True,
          )
  except KeyboardInterrupt:
    for _, process, _ in running.values():
      process.terminate()
    for _, process, _ in running.values():
      process.wait()
    print('Interrupted; run the same command again to resume.', flush=True)
    raise
  return failed


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  train_flags = argv[argv.index('--') + 1 :] if '--' in argv else []
  argv = argv[: argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog='Flags after -- go to every train.py run.',
  )
  parser.add_argument(
    '--tasks',
    default='all',
    help=f'"all" (Table 1: {",".join(TABLE1_TASKS)}) or a comma-separated list '
    f'of {",".join(prepare.TASK_FILES)}.',
  )
  parser.add_argument(
    '--variants',
    default='luna16,luna256,transformer',
    help='comma-separated config variants (configs/variants.py).',
  )
  parser.add_argument(
    '--seeds', type=cli.integer(1), default=3, help='seeds 0 .. N-1 per task and variant.'
  )
  parser.add_argument('--data_dir', default='data', help='the --data_dir of lra.prepare.')
  parser.add_argument('--runs_dir', default='runs', help='root of the run workdirs.')
  parser.add_argument(
    '--report_dir', default='reports', help='where leaderboard.md and figure1.png go.'
  )
  parser.add_argument(
    '--benchmark_json',
    default=str(REPO / 'benchmarks/results/cpu/train_step/results.json'),
    help="speed_memory results for figure1.png ('' to skip the figure).",
  )
  parser.add_argument(
    '--devices',
    default='auto',
    help="GPUs to spread runs over: 'auto', 'none' (one run at a time with every "
    'device) or ids such as 0,1,2,3.',
  )
  parser.add_argument(
    '--debug',
    action='store_true',
    help="append ',debug' to every config argument (a smoke test of the sweep).",
  )
  parser.add_argument(
    '--status_every',
    type=cli.number(minimum=0),
    default=60.0,
    help='seconds between progress lines of the running runs.',
  )
  parser.add_argument('--dry_run', action='store_true', help='print the plan and stop.')
  args = parser.parse_args(argv)
  try:
    tasks = parse_tasks(args.tasks)
  except DataError as e:
    parser.error(str(e))
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = [v for v in variants if v not in CONFIG_VARIANTS]
  if args.seeds < 1 or not variants or unknown:
    parser.error(
      f'--seeds must be at least 1 and --variants a comma-separated list of '
      f'{", ".join(CONFIG_VARIANTS)} (unknown: {", ".join(unknown) or "none"}).'
    )
  data_root = Path(args.data_dir).expanduser()
  try:
    runs = plan(
      tasks,
      variants,
      args.seeds,
      data_root,
      Path(args.runs_dir).expanduser(),
      args.debug,
      train_flags,
    )
  except ValueError as e:
    parser.error(f"the runs' configs refuse a setting: {e}")
  gpus = visible_gpus(args.devices)
  where = f'one per GPU on GPUs {",".join(gpus)}' if gpus else 'one at a time'
  print(
    f'{len(runs)} runs ({len(tasks)} tasks x {len(variants)} variants x {args.seeds} seeds), '
    f'{where}:'
  )
  for i, run in enumerate(runs, start=1):
    print(f'[{i}/{len(runs)}] {run.name}: {run.state()}\n    {shlex.join(run.command)}')
  missing = [task for task in tasks if not prepare.task_data_dir(task, data_root).exists()]
  if missing:
    print(
      f'No data for {", ".join(missing)} under {data_root}: their runs fail. Prepare it with: '
      f'python -m lra.prepare --tasks {",".join(missing)} --data_dir {data_root}',
      file=sys.stderr,
    )
  if args.dry_run:
    return 1 if missing else 0
  failed = [run for run in runs if run.task in missing]
  failed += execute([run for run in runs if run.task not in missing], gpus, args.status_every)
  # The report counts this sweep's finished runs of the recipe, nothing else under --runs_dir.
  finished = [str(run.workdir / 'results.json') for run in runs if run.state() == 'finished']
  report_dir = Path(args.report_dir) / (DEBUG_DIR if args.debug else '')
  try:
    report.write_report(
      finished,
      str(report_dir),
      source=f'this sweep ({len(finished)} of {len(runs)} runs finished)',
      benchmark_json=args.benchmark_json,
    )
    reported = True
  except (OSError, ValueError) as e:
    print(f'benchmarks.report failed: {e}', file=sys.stderr)
    reported = False
  if failed:
    print(
      f'{len(failed)} of {len(runs)} runs failed: {", ".join(run.name for run in failed)}. '
      'Fix the cause and run the same command again: finished runs are skipped and the '
      'others resume.',
      file=sys.stderr,
    )
  return 0 if reported and not failed else 1


if __name__ == '__main__':
  sys.exit(main())
