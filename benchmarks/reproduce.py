r"""The LRA sweep: every task x model variant x seed through `train.py`, then the Table-1 report.

  python -m benchmarks.reproduce --tasks all --variants luna16,luna256,transformer --seeds 3 \
      [--data_dir data] [--runs_dir runs] [--report_dir reports] [--devices auto] [--dry_run] \
      [--first_seed K] [--runs_per_device N] [--memory_fraction F] [--order variant|seed] \
      [--deadline_minutes M] [--collect_to DIR] [--task_config TASK=FILE] \
      [--task_data_dir TASK=DIR] \
      [-- <more train.py flags, e.g. --config.model.precision=bfloat16>]

Run (task, variant, seed k) is
  train.py --config configs/<task>.py:<variant> --workdir <runs_dir>/<task>/<variant>/seed<k>
           --config.seed=<k> --config.data.data_dir=<the task's folder written by lra.prepare>
with its output in `<workdir>/train.log`. A variant may carry the config argument's `spt` flag as
`<variant>+spt` (self-pretraining, then the recipe: `configs/<task>.py:<variant>,spt`, workdir
`.../<variant>+spt/seed<k>`). `--task_config TASK=FILE` gives a task another config file (e.g.
`listops=configs/listops_cpu.py`); its runs go to `<runs_dir>/<file name>/...`.
`--task_data_dir TASK=DIR` gives a task a data folder of its own instead of the one `lra.prepare`
writes under `--data_dir` (e.g. `listops=data/listops_quickstart` with
`--task_config listops=configs/quickstart.py`). A run
whose workdir holds the `results.json` of the requested recipe (the config file with the seed, the
data folder and the `--config.*` flags after `--`, compared as the trainer compares a resumed run,
plus the number of steps and evaluation batches) is finished and skipped; one that holds another
run's results is not counted and is reported (move it away); any other is started, and the trainer
resumes it from its newest checkpoint. `--debug` runs go to `<runs_dir>/debug/...` and their report
to `<report_dir>/debug`, apart from the real ones.

Where runs go: with several GPUs visible (`CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L`), each GPU
takes `--runs_per_device` runs at a time (`CUDA_VISIBLE_DEVICES=<gpu>` for each child process);
without GPUs that many run at a time on every device (one by default). The queue is taken in plan
order (`--order variant`: task, variant, seed; `--order seed`: every variant's seed 0 first, then
seed 1, ..., so that a sweep cut short by its deadline has seeds of every variant), each run
started as soon as a place frees. With `--runs_per_device` N > 1, each run's process may use
`MEMORY_SHARE` / N of its GPU's memory (`--memory_fraction` sets another share, e.g. for runs of
unequal size), through `XLA_CLIENT_MEM_FRACTION` (the name jax >= 0.10 reads; the deprecated
`XLA_PYTHON_CLIENT_MEM_FRACTION` is removed from the child's environment, since jax refuses both
together), allocated as needed (`XLA_PYTHON_CLIENT_PREALLOCATE=false`): JAX's GPU memory
documentation, "Running multiple JAX processes concurrently". On a CPU these variables do nothing.
The settings a run gets are written before its command at the top of its `train.log`.

A line per run says when it starts, where it is every `--status_every` seconds, and how it ended; a
failed run is reported with the last lines of its log and the others go on. `--deadline_minutes M`
ends the sweep M minutes after it started: no run starts after that, and running ones are stopped
(SIGTERM, then SIGKILL after `STOP_GRACE` seconds) and count as partial (left out of the
leaderboard; their checkpoints let the same command resume them). `--collect_to DIR` then copies
the small files of every run (results.json, config.json, metrics.jsonl, kind.json, train.log with
its progress bars reduced to their last state; the same for a self-pretraining run's stages) to
`DIR/runs/<same path as under --runs_dir>/` and writes `DIR/sweep.json` (each run's command, the
environment settings it got, its state: finished, partial, failed, not started or not counted, its
minutes); checkpoints stay behind. At the end `benchmarks.report` writes `leaderboard.md` (Table 1,
with how many runs collapsed) and `figure1.png` (Figure 1) into `--report_dir` from the sweep's
finished runs (with `--collect_to`, from their copies, and the partial ones listed with how far they
got). `all` is the five tasks of Table 1; Path-X is `--tasks pathx`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from benchmarks import report
from configs import base
from configs.variants import CONFIG_VARIANTS, TABLE1_TASKS
from lra import cli, prepare
from lra.core import DataError
from lra.files import write_atomically
from luna_jax.training import run_config, self_pretraining, xla_settings

REPO = Path(__file__).resolve().parents[1]
LOG = 'train.log'
#: Sub-folder of `--runs_dir` and `--report_dir` for `--debug` sweeps.
DEBUG_DIR = 'debug'
#: Lines of a failed run's log that are printed.
TAIL_LINES = 15
#: Config-argument flags a variant of `--variants` may carry after '+' (configs/base.py FLAGS;
#: `--debug` sets the other).
VARIANT_FLAGS = tuple(flag for flag in base.FLAGS if flag != 'debug')
#: Share of a GPU's memory that the runs on it may use together (`--runs_per_device` > 1).
MEMORY_SHARE = xla_settings.GPU_MEMORY_SHARE
#: Seconds a run stopped at the deadline gets between SIGTERM and SIGKILL.
STOP_GRACE = 20.0
#: What `--collect_to` copies of a run folder and of each self-pretraining stage (`train.log` is
#: copied with its progress bars reduced to their last state).
SMALL_FILES = ('results.json', 'config.json', report.METRICS_FILE, 'kind.json')
#: The states of a run after a sweep (`Run.outcome`).
FINISHED, FAILED, PARTIAL, NOT_STARTED, NOT_COUNTED = (
  'finished',
  'failed',
  'partial',
  'not started',
  'not counted',
)


#: Prefix of `Run.state()` for a workdir that holds the results of another run.
OTHER_RUN = 'holds another run'


@dataclasses.dataclass
class Run:
  """One training run of the sweep.

  Attributes:
    task: the LRA task.
    variant: the `--variants` entry ('luna16', 'luna16+spt').
    seed: `config.seed`.
    workdir: its `--workdir`.
    command: the `train.py` command line.
    recipe: the resolved config `train.py` runs it with (`recipe_config`).
    folder: its folder under the runs root (config file name / variant / seed<k>).
    outcome: after `execute`, one of FINISHED, FAILED, PARTIAL, NOT_STARTED, NOT_COUNTED.
    seconds: after `execute`, the wall-clock seconds of its process (None if it did not run).
    env: the environment settings its process got from the sweep.
  """

  task: str
  variant: str
  seed: int
  workdir: Path
  command: list[str]
  recipe: dict[str, Any]
  folder: str = ''
  outcome: str = NOT_STARTED
  seconds: float | None = None
  env: dict[str, str] = dataclasses.field(default_factory=dict)

  @property
  def name(self) -> str:
    """How the sweep names it: its folder, or task/variant/seed<k>."""
    return self.folder or f'{self.task}/{self.variant}/seed{self.seed}'

  def state(self) -> str:
    """'finished', 'holds another run: <why>', 'resume from step N[ of the <stage> stage]' or
    'new'.

    Finished means a results.json of this recipe (`recipe_differences`) that reached its last step.
    """
    results_path = self.workdir / 'results.json'
    resume = 'new'
    for stage in ('', self_pretraining.FINETUNE_DIR, self_pretraining.PRETRAIN_DIR):
      folder = self.workdir / stage / 'checkpoints'
      steps = [int(p.name) for p in folder.glob('*') if p.name.isdigit()]
      if steps:
        resume = f'resume from step {max(steps)}' + (f' of the {stage} stage' if stage else '')
        break
    if not results_path.exists():
      return resume
    recipe = self.recipe
    try:
      results = json.loads(results_path.read_text(encoding='utf-8'))
      if 'pretraining' in results:  # A self-pretraining run's results are its finetune stage's.
        finetune = {'self_pretraining': {'num_train_steps': 0}, 'init_from': None}
        finetune['init_from'] = str(self.workdir / self_pretraining.PRETRAIN_DIR)
        recipe = {**recipe, **finetune}
      differences = recipe_differences(run_config.upgrade_stored_config(results['config']), recipe)
      step = results['step']
    except (ValueError, KeyError, TypeError) as e:
      return f'{OTHER_RUN}: unreadable results.json ({e})'
    steps = self.recipe['training']['num_train_steps']
    if step > steps:
      differences.append(f"trained to step {step}, past the recipe's {steps}")
    if differences:
      return f'{OTHER_RUN}: ' + '; '.join(differences)
    return 'finished' if step == steps else resume


def recipe_differences(stored: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
  """What differs between a finished run's config and the recipe, as 'key: stored -> recipe'.

  The trainer's resume rule (`config_changes`: every setting but the schedule ones and the device
  count; paths compared as folders, `paths_as_stored`), and the evaluation's number of batches (a
  sample is another figure).
  """
  changes = run_config.config_changes(stored, run_config.paths_as_stored(recipe, stored))
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
  except (flags.Error, AttributeError, KeyError, TypeError, OSError) as e:
    # What absl and ml_collections wrap: a KeyError holds its message as args[0] (its str() and
    # the AttributeError made of it would quote it), in one line.
    while isinstance(e, (flags.Error, AttributeError)) and (e.__cause__ or e.__context__):
      e = e.__cause__ or e.__context__
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    reason = ' '.join(line.strip() for line in text.splitlines() if line.strip())
    raise ValueError(f'{shlex.join(command[2:])}: {reason}') from None


def parse_tasks(spec: str) -> list[str]:
  """'all' (the tasks of Table 1) or a comma-separated list of LRA tasks."""
  return list(TABLE1_TASKS) if spec.strip() == 'all' else prepare.parse_tasks(spec)


def parse_variant(spec: str) -> tuple[str, list[str]]:
  """A `--variants` entry 'variant[+flag...]' -> (variant, flags).

  Raises:
    ValueError: an unknown variant or flag, listing the known ones.
  """
  variant, *flags = spec.split('+')
  if variant not in CONFIG_VARIANTS or any(flag not in VARIANT_FLAGS for flag in flags):
    raise ValueError(
      f'{spec!r}: a variant is one of {", ".join(CONFIG_VARIANTS)}, optionally followed by '
      f'{" or ".join(f"+{flag}" for flag in VARIANT_FLAGS)}'
    )
  return variant, flags


def plan(
  tasks: Sequence[str],
  variants: Sequence[str],
  seeds: int | Sequence[int],
  data_root: Path,
  runs_dir: Path,
  debug: bool = False,
  train_flags: Sequence[str] = (),
  *,
  task_configs: Mapping[str, str] | None = None,
  order: str = 'variant',
  task_data_dirs: Mapping[str, str] | None = None,
) -> list[Run]:
  """The runs of the sweep, in queue order.

  Args:
    tasks: LRA task names.
    variants: config variants (`configs/<task>.py:<variant>`), each optionally with '+spt'
      (`parse_variant`).
    seeds: the seeds, or their number (seeds 0 .. seeds - 1).
    data_root: `lra.prepare --data_dir`.
    runs_dir: the workdirs' root (debug runs: its `debug` sub-folder).
    debug: append ',debug' to the config argument (smoke tests).
    train_flags: more `train.py` flags, given to every run.
    task_configs: task -> config file (relative to the repository or absolute) instead of
      `lra.prepare.TASK_FILES[task].config`; the runs' folder is named after the file.
    order: 'variant' (task, variant, seed) or 'seed' (seed, task, variant).
    task_data_dirs: task -> data folder instead of `lra.prepare`'s under `data_root`.

  Raises:
    ValueError: a `--config.*` flag in `train_flags` that the configs refuse, an unknown variant, a
      config file of another task, an unknown order.
  """
  if order not in ('variant', 'seed'):
    raise ValueError(f"order must be 'variant' or 'seed', got {order!r}")
  task_configs = task_configs or {}
  runs = []
  root = runs_dir / DEBUG_DIR if debug else runs_dir
  for task in tasks:
    config = Path(task_configs.get(task, prepare.TASK_FILES[task].config))
    config = config if config.is_absolute() else REPO / config
    data_dir = task_data_dir(task, data_root, task_data_dirs).resolve()
    for spec in variants:
      variant, flags = parse_variant(spec)
      argument = ','.join([variant, *flags, *(['debug'] if debug else [])])
      for seed in range(seeds) if isinstance(seeds, int) else seeds:
        folder = f'{config.stem}/{spec}/seed{seed}'
        workdir = (root / folder).resolve()
        command = [
          sys.executable,
          str(REPO / 'train.py'),
          '--config',
          f'{config}:{argument}',
          '--workdir',
          str(workdir),
          f'--config.seed={seed}',
          f'--config.data.data_dir={data_dir}',
          *train_flags,
        ]
        recipe = recipe_config(command)
        if recipe['data']['task'] != task:
          raise ValueError(f'{config} is a config of {recipe["data"]["task"]!r}, not of {task!r}')
        runs.append(Run(task, spec, seed, workdir, command, recipe, folder))
  if order == 'seed':
    runs.sort(key=lambda run: run.seed)  # Stable: task, then variant, within a seed.
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


def result_line(run: Run) -> str:
  """A finished run's figures for the log: test and validation accuracy and the final step."""
  results = json.loads((run.workdir / 'results.json').read_text(encoding='utf-8'))
  return (
    f'test accuracy {results["test"]["accuracy"]:.4f}, validation accuracy '
    f'{results["validation"]["accuracy"]:.4f}, step {results["step"]}'
  )


def _minutes(seconds: float) -> str:
  return f'{seconds / 60:.1f} min'


def child_env(
  gpu: str | None, runs_per_device: int, memory_fraction: float | None = None
) -> dict[str, str]:
  """The environment settings the sweep gives a run's process (besides PYTHONUNBUFFERED).

  Args:
    gpu: the GPU id it runs on, or None (every visible device).
    runs_per_device: runs sharing the device: above 1, each may use `MEMORY_SHARE` /
      runs_per_device of its memory, allocated as needed.
    memory_fraction: the share of its GPU's memory each run may use instead (allocated as needed,
      so shares may add up to more than 1 when the runs' needs differ); None for the above.
  """
  settings = {} if gpu is None else {'CUDA_VISIBLE_DEVICES': gpu}
  if memory_fraction is None and runs_per_device > 1:
    memory_fraction = MEMORY_SHARE / runs_per_device
  if memory_fraction is not None:
    settings.update(xla_settings.gpu_memory_on_demand(memory_fraction))
  return settings


def _stop(running: Sequence[tuple[Run, subprocess.Popen, float]], grace: float) -> None:
  """Stops the processes: SIGTERM, then SIGKILL for those still there after `grace` seconds."""
  for _, process, _ in running:
    process.terminate()
  end = time.monotonic() + grace
  for _, process, _ in running:
    try:
      process.wait(timeout=max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def execute(
  runs: Sequence[Run],
  gpus: Sequence[str],
  status_every: float = 60.0,
  poll: float = 1.0,
  *,
  runs_per_device: int = 1,
  memory_fraction: float | None = None,
  deadline: float | None = None,
  grace: float = STOP_GRACE,
) -> list[Run]:
  """Runs every unfinished run, `runs_per_device` at a time on each GPU (without GPUs: on every
  device), each started when a place frees; sets every run's `outcome`, `seconds` and `env`.

  Args:
    runs: the runs, in queue order.
    gpus: GPU ids (`visible_gpus`), or none.
    status_every: seconds between progress lines.
    poll: seconds between checks of the processes.
    runs_per_device: places per GPU (or on the CPU).
    memory_fraction: each run's share of its GPU's memory (`child_env`).
    deadline: `time.monotonic()` time at which running runs are stopped (PARTIAL) and no other
      starts (NOT_STARTED); None for none.
    grace: seconds between SIGTERM and SIGKILL for a stopped run.

  Returns:
    The runs that failed, and those whose workdir holds another run's results (not started).
  """
  total = len(runs)
  index = {id(run): i for i, run in enumerate(runs, start=1)}
  queue, failed = [], []
  for run in runs:
    state = run.state()
    if state == 'finished':
      run.outcome = FINISHED
      print(f'[{index[id(run)]}/{total}] {run.name}: finished, skipped ({result_line(run)})')
    elif state.startswith(OTHER_RUN):
      run.outcome = NOT_COUNTED
      failed.append(run)
      print(
        f'[{index[id(run)]}/{total}] {run.name}: NOT COUNTED: {run.workdir} {state}. Move it '
        'away (or use another --runs_dir) and run the same command again.',
        flush=True,
      )
    else:
      queue.append(run)
  places: list[str | None] = [gpu for _ in range(runs_per_device) for gpu in (gpus or [None])]
  running: dict[int, tuple[Run, subprocess.Popen, float]] = {}
  last_status = time.monotonic()
  try:
    while queue or running:
      if deadline is not None and time.monotonic() >= deadline:
        _stop(list(running.values()), grace)
        now = time.monotonic()
        for run, _, started in running.values():
          run.seconds = now - started
          run.outcome = FINISHED if run.state() == 'finished' else PARTIAL
          print(
            f'[{index[id(run)]}/{total}] {run.name}: stopped at the deadline after '
            f'{_minutes(now - started)} ({report.progress(str(run.workdir))}): {run.outcome}',
            flush=True,
          )
        if queue:
          print(
            f'Deadline: {len(queue)} runs not started: {", ".join(r.name for r in queue)}',
            flush=True,
          )
        running.clear()
        break
      for place, gpu in enumerate(places):
        if place in running or not queue:
          continue
        run = queue.pop(0)
        where = f'GPU {gpu}' if gpu is not None else 'all devices'
        run.workdir.mkdir(parents=True, exist_ok=True)
        run.env = child_env(gpu, runs_per_device, memory_fraction)
        env = xla_settings.environment_with({'PYTHONUNBUFFERED': '1', **run.env})
        settings = ''.join(f'{key}={value} ' for key, value in run.env.items())
        with open(run.workdir / LOG, 'a', encoding='utf-8') as log:
          log.write(f'$ {settings}{shlex.join(run.command)}\n')
          log.flush()
          process = subprocess.Popen(
            run.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
          )
        print(
          f'[{index[id(run)]}/{total}] {run.name}: started on {where} ({run.state()}); '
          f'log {run.workdir / LOG}',
          flush=True,
        )
        running[place] = (run, process, time.monotonic())
      wait = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
      time.sleep(wait)
      now = time.monotonic()
      for place, (run, process, started) in list(running.items()):
        code = process.poll()
        if code is None:
          continue
        del running[place]
        run.seconds = now - started
        prefix = f'[{index[id(run)]}/{total}] {run.name}'
        if code == 0 and run.state() == 'finished':
          run.outcome = FINISHED
          print(f'{prefix}: done in {_minutes(now - started)}: {result_line(run)}', flush=True)
        else:
          run.outcome = FAILED
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
            f'[{index[id(run)]}/{total}] {run.name}: {report.progress(str(run.workdir))} '
            f'({_minutes(now - started)})',
            flush=True,
          )
  except KeyboardInterrupt:
    _stop(list(running.values()), grace)
    print('Interrupted; run the same command again to resume.', flush=True)
    raise
  return failed


def compact_log(text: str) -> str:
  """A train.log without its progress bars' intermediate states: of each line, the text after its
  last carriage return."""
  return ''.join(line.rsplit('\r', 1)[-1] for line in text.splitlines(keepends=True))


def collect(
  runs: Sequence[Run], runs_root: Path, destination: Path, sweep: Mapping[str, Any]
) -> Path:
  """Copies the small files of the sweep's runs and writes `sweep.json` (module docstring).

  Args:
    runs: the sweep's runs, after `execute`.
    runs_root: the workdirs' root (`--runs_dir`, or its debug folder).
    destination: the `--collect_to` folder (created); run files go to `destination/runs/<folder>`.
    sweep: what to record about the sweep besides its runs (its command, deadline, ...).

  Returns:
    The path of `sweep.json`.
  """
  records = []
  for run in runs:
    target = destination / 'runs' / run.workdir.relative_to(runs_root.resolve())
    copied = []
    # A workdir holding another run's results keeps them to itself.
    kept = run.outcome != NOT_COUNTED
    stages = ('', self_pretraining.PRETRAIN_DIR, self_pretraining.FINETUNE_DIR) if kept else ()
    for stage in stages:
      for name in SMALL_FILES:
        source = run.workdir / stage / name
        if source.is_file():
          (target / stage).mkdir(parents=True, exist_ok=True)
          shutil.copyfile(source, target / stage / name)
          copied.append(str(Path(stage) / name))
    if kept and (run.workdir / LOG).is_file():
      target.mkdir(parents=True, exist_ok=True)
      text = (run.workdir / LOG).read_text(encoding='utf-8', errors='replace')
      (target / LOG).write_text(compact_log(text), encoding='utf-8')
      copied.append(LOG)
    records.append(
      {
        'name': run.name,
        'task': run.task,
        'variant': run.variant,
        'seed': run.seed,
        'state': run.outcome,
        'minutes': None if run.seconds is None else round(run.seconds / 60, 2),
        'env': run.env,
        'command': run.command,
        'folder': str(target.relative_to(destination)),
        'files': copied,
      }
    )
  destination.mkdir(parents=True, exist_ok=True)
  path = destination / 'sweep.json'
  write_atomically(path, json.dumps({**sweep, 'runs': records}, indent=2) + '\n')
  return path


def task_data_dir(task: str, data_root: Path, task_data_dirs: Mapping[str, str] | None) -> Path:
  """The data folder of `task`: its entry of `task_data_dirs` (`--task_data_dir`), else the one
  `lra.prepare --data_dir data_root` writes."""
  if task_data_dirs and task in task_data_dirs:
    return Path(task_data_dirs[task]).expanduser()
  return prepare.task_data_dir(task, data_root)


def _task_pair(name: str) -> Callable[[str], tuple[str, str]]:
  """An argparse type: 'TASK=<name>' (`--task_config`, `--task_data_dir`)."""

  def parse(text: str) -> tuple[str, str]:
    task, separator, value = text.partition('=')
    if not separator or task.strip() not in prepare.TASK_FILES or not value.strip():
      raise argparse.ArgumentTypeError(
        f'must be TASK={name} with TASK one of {", ".join(prepare.TASK_FILES)}, got {text!r}'
      )
    return task.strip(), value.strip()

  return parse


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (module docstring); returns 0 when every run finished and the report was
  written, else 1."""
  started = time.monotonic()
  start_time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  argv = list(sys.argv[1:] if argv is None else argv)
  given = list(argv)
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
    help='comma-separated config variants (configs/variants.py), each optionally followed by '
    f'{" or ".join("+" + flag for flag in VARIANT_FLAGS)} (e.g. luna16+spt: self-pretraining).',
  )
  parser.add_argument(
    '--seeds', type=cli.integer(1), default=3, help='N seeds per task and variant: 0 .. N-1.'
  )
  parser.add_argument(
    '--first_seed',
    type=cli.integer(0),
    default=0,
    help='the first seed: --seeds N --first_seed K runs seeds K .. K+N-1.',
  )
  parser.add_argument(
    '--data_dir', default='data', type=cli.path, help='the --data_dir of lra.prepare.'
  )
  parser.add_argument('--runs_dir', default='runs', type=cli.path, help='root of the run workdirs.')
  parser.add_argument(
    '--report_dir',
    default='reports',
    type=cli.path,
    help='where leaderboard.md and figure1.png go.',
  )
  parser.add_argument(
    '--benchmark_json',
    default=str(REPO / 'benchmarks/results/cpu/train_step/results.json'),
    help="speed_memory results for figure1.png ('' to skip the figure).",
  )
  parser.add_argument(
    '--devices',
    default='auto',
    help="GPUs to spread runs over: 'auto', 'none' (the runs use every device) or ids such as "
    '0,1,2,3.',
  )
  parser.add_argument(
    '--runs_per_device',
    type=cli.integer(1),
    default=1,
    help=f'runs at a time on each GPU (without GPUs: at all); above 1 each may use '
    f'{MEMORY_SHARE:g}/N of its GPU memory.',
  )
  parser.add_argument(
    '--memory_fraction',
    type=cli.number(above=0, below=1.0001),
    default=None,
    help='share of its GPU memory each run may use, allocated as needed (default: '
    f"{MEMORY_SHARE:g}/N with --runs_per_device N > 1, else jax's default).",
  )
  parser.add_argument(
    '--order',
    choices=('variant', 'seed'),
    default='variant',
    help="queue order: 'variant' (task, variant, seed) or 'seed' (seed 0 of every variant first).",
  )
  parser.add_argument(
    '--deadline_minutes',
    type=cli.number(above=0),
    default=None,
    help='stop the sweep this many minutes after it started: running runs are stopped (partial) '
    'and no other starts.',
  )
  parser.add_argument(
    '--collect_to',
    type=cli.path,
    default=None,
    help="copy every run's small files and sweep.json here at the end (module docstring).",
  )
  parser.add_argument(
    '--task_config',
    type=_task_pair('FILE'),
    action='append',
    default=[],
    help='TASK=FILE: the config file of a task instead of configs/<task>.py (repeatable).',
  )
  parser.add_argument(
    '--task_data_dir',
    type=_task_pair('DIR'),
    action='append',
    default=[],
    help="TASK=DIR: the data folder of a task instead of lra.prepare's under --data_dir "
    '(repeatable).',
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
  for flag in ('task_config', 'task_data_dir'):
    unused = [task for task, _ in getattr(args, flag) if task not in tasks]
    if unused:
      parser.error(f'--{flag} names {", ".join(unused)}, which --tasks does not run.')
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  if not variants:
    parser.error('--variants: give at least one variant.')
  repeated = sorted({v for v in variants if variants.count(v) > 1})
  if repeated:  # Their runs would share a workdir.
    parser.error(f'--variants: {", ".join(repeated)} given more than once.')
  for spec in variants:
    try:
      parse_variant(spec)
    except ValueError as e:
      parser.error(f'--variants: {e} (unknown: {spec})')
  data_root = Path(args.data_dir).expanduser()
  runs_dir = Path(args.runs_dir).expanduser()
  try:
    runs = plan(
      tasks,
      variants,
      range(args.first_seed, args.first_seed + args.seeds),
      data_root,
      runs_dir,
      args.debug,
      train_flags,
      task_configs=dict(args.task_config),
      order=args.order,
      task_data_dirs=dict(args.task_data_dir),
    )
  except ValueError as e:
    parser.error(f"the runs' configs refuse a setting: {e}")
  gpus = visible_gpus(args.devices)
  n = args.runs_per_device
  if gpus:
    where = f'{"one" if n == 1 else n} at a time per GPU on GPUs {",".join(gpus)}'
  else:
    where = 'one at a time' if n == 1 else f'{n} at a time'
  shape = f'{len(tasks)} tasks x {len(variants)} variants x {args.seeds} seeds'
  print(f'{len(runs)} runs ({shape}), {where}:')
  for i, run in enumerate(runs, start=1):
    print(f'[{i}/{len(runs)}] {run.name}: {run.state()}\n    {shlex.join(run.command)}')
  task_data_dirs = dict(args.task_data_dir)
  difficulty = {run.task: run.recipe['data']['options'].get('difficulty', 'hard') for run in runs}
  own = [
    t
    for t in tasks
    if t in task_data_dirs and not task_data_dir(t, data_root, task_data_dirs).exists()
  ]
  prepared = [
    t
    for t in tasks
    if t not in task_data_dirs and not prepare.data_present(t, data_root, difficulty[t])
  ]
  missing = own + prepared
  for task in own:
    print(
      f'No data for {task} in {task_data_dirs[task]} (--task_data_dir): its runs fail. Write it '
      "with the command in its config file's docstring.",
      file=sys.stderr,
    )
  if prepared:
    print(
      f'No data for {", ".join(prepared)} under {data_root}: their runs fail. Prepare it with: '
      f'python -m lra.prepare --tasks {",".join(prepared)} --data_dir '
      f'{shlex.quote(str(data_root))}',
      file=sys.stderr,
    )
  if args.dry_run:
    return 1 if missing else 0
  for run in runs:
    if run.task in missing:
      run.outcome = FAILED
  deadline = None if args.deadline_minutes is None else started + 60 * args.deadline_minutes
  failed = [run for run in runs if run.task in missing]
  failed += execute(
    [run for run in runs if run.task not in missing],
    gpus,
    args.status_every,
    runs_per_device=args.runs_per_device,
    memory_fraction=args.memory_fraction,
    deadline=deadline,
  )
  runs_root = (runs_dir / DEBUG_DIR if args.debug else runs_dir).resolve()
  finished = [run for run in runs if run.outcome == FINISHED]
  unfinished = [run for run in runs if run.outcome in (PARTIAL, FAILED) and run.workdir.exists()]
  source = f'this sweep ({len(finished)} of {len(runs)} runs finished)'
  results = [str(run.workdir / 'results.json') for run in finished]
  unfinished_dirs = [str(run.workdir) for run in unfinished]
  if args.collect_to is not None:
    sweep = {
      'command': ['python', '-m', 'benchmarks.reproduce', *given],
      'started': start_time,
      'minutes': round((time.monotonic() - started) / 60, 2),
      'deadline_minutes': args.deadline_minutes,
      'runs_per_device': args.runs_per_device,
      'memory_fraction': args.memory_fraction,
      'gpus': gpus,
    }
    path = collect(runs, runs_root, args.collect_to, sweep)
    print(f"Collected the runs' small files and {path}")
    copy = lambda run: args.collect_to / 'runs' / run.workdir.relative_to(runs_root)
    results = [str(copy(run) / 'results.json') for run in finished]
    unfinished_dirs = [str(copy(run)) for run in unfinished]
    source += f', copied to {args.collect_to}'
  report_dir = Path(args.report_dir) / (DEBUG_DIR if args.debug else '')
  try:
    report.write_report(
      results,
      str(report_dir),
      source=source,
      benchmark_json=args.benchmark_json,
      unfinished=unfinished_dirs,
    )
    reported = True
  except (OSError, ValueError) as e:
    print(f'benchmarks.report failed: {e}', file=sys.stderr)
    reported = False
  left = [run for run in runs if run.outcome in (PARTIAL, NOT_STARTED)]
  if left:
    print(
      f'{len(left)} of {len(runs)} runs did not finish before the deadline: '
      f'{", ".join(run.name for run in left)}. The same command resumes them.',
      file=sys.stderr,
    )
  if failed:
    print(
      f'{len(failed)} of {len(runs)} runs failed: {", ".join(run.name for run in failed)}. '
      'Fix the cause and run the same command again: finished runs are skipped and the '
      'others resume.',
      file=sys.stderr,
    )
  return 0 if reported and not failed and not left else 1


if __name__ == '__main__':
  sys.exit(main())
