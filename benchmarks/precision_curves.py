r"""Training curves of one recipe under each precision policy: what `model.precision` does to the
loss and the accuracy, and what it costs.

  python -m lra.listops_generator --output_dir data/listops_quickstart --num_train 20000 \
      --num_val 2000 --num_test 2000 --min_length 10 --max_length 60 --max_depth 4 --max_args 5
  python -m benchmarks.precision_curves --config configs/quickstart.py \
      --output_dir benchmarks/results/cpu/precision_curves [-- <more train.py flags>]

For every seed of `--seeds` and every policy of `--precisions` (`luna_jax.model.config.PRECISIONS`;
float32 first, the reference) it runs `train.py --config <config> --config.seed=<seed>
--config.model.precision=<policy>` and the flags after `--` (e.g.
`--config.optimizer.grad_clip_norm=1.0` for a clipping control, or
`--config.training.num_train_steps=1400` for a prefix of a recipe that keeps its warm-up) in
`<runs_dir>/<config>-<hash>/<policy>_seed<seed>` (the hash of the config argument and the flags
after `--`, so runs of other settings never share a folder): an unfinished run there resumes, a
finished one is only read back. It then compares each policy's logged training loss with
float32's at the log points both have and reports the final validation and test accuracy and the
training speed.

Writes `results.json` (curves, finals, speeds, machine) and `table.md` in `--output_dir` and prints
the table. On a GPU the speeds are the policies' costs; on a CPU, whose bfloat16 matmuls are
slower than its float32 ones, only the curves and the accuracies mean anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.speed_memory_harness import describe_machine, write_results
from lra import cli
from luna_jax.model.config import PRECISIONS

#: The policy every other one is compared with.
REFERENCE = 'float32'
#: Where train.py is, run from the repository root.
TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')


def _seeds(text: str) -> list[int]:
  """An argparse type: comma-separated seeds, each an integer >= 0."""
  return [cli.integer(0)(seed) for seed in text.split(',')]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command line (see the module docstring); flags after `--` end up in `train_flags`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index('--') if '--' in argv else len(argv)
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='config file[:argument], as for train.py')
  parser.add_argument(
    '--precisions', default=','.join(PRECISIONS), help=f'comma-separated, {REFERENCE!r} first'
  )
  parser.add_argument('--seeds', type=_seeds, default=[0], help='comma-separated seeds')
  parser.add_argument('--output_dir', required=True, help='for results.json and table.md')
  parser.add_argument('--runs_dir', default='runs/precision_curves', help='the runs and their logs')
  args = parser.parse_args(argv[:split])
  args.train_flags = argv[split + 1 :]
  args.precisions = args.precisions.split(',')
  unknown = sorted(set(args.precisions) - set(PRECISIONS))
  if unknown or args.precisions[0] != REFERENCE or len(args.precisions) < 2:
    parser.error(
      f'--precisions: {REFERENCE!r} first, then one or more of {list(PRECISIONS)}; got '
      f'{args.precisions}.'
    )
  return args


def settings_name(args: argparse.Namespace) -> str:
  """`<config file name>-<8 hex digits>`: the folder of the runs of these settings (the config
  argument and the train.py flags)."""
  key = json.dumps([args.config, args.train_flags])
  stem = os.path.splitext(os.path.basename(args.config.split(':')[0]))[0]
  return f'{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}'


def run(args: argparse.Namespace, precision: str, seed: int) -> str:
  """Trains (or resumes, or only reads back) one policy and seed; returns its workdir.

  Raises:
    RuntimeError: train.py failed (naming its log).
  """
  workdir = os.path.join(args.runs_dir, settings_name(args), f'{precision}_seed{seed}')
  if os.path.exists(os.path.join(workdir, 'results.json')):
    return workdir
  os.makedirs(workdir, exist_ok=True)
  command = [
    sys.executable,
    TRAIN_PY,
    f'--config={args.config}',
    f'--workdir={workdir}',
    f'--config.seed={seed}',
    f'--config.model.precision={precision}',
    *args.train_flags,
  ]
  print(' '.join(command[1:]), flush=True)
  log = workdir + '.log'
  with open(log, 'w') as f:
    if subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False).returncode:
      raise RuntimeError(f'{precision} seed {seed} failed; its output is in {log}.')
  return workdir


def read_run(workdir: str) -> dict[str, Any]:
  """The logged training losses (`{step: loss}`), the final and best metrics and the speed."""
  curve = {
    entry['step']: entry['train_loss']
    for entry in report.read_metrics(os.path.join(workdir, report.METRICS_FILE))
    if 'train_loss' in entry
  }
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  return {
    'train_loss': curve,
    'validation_accuracy': results['validation']['accuracy'],
    'test_accuracy': results['test']['accuracy'],
    'best_test_accuracy': results['best']['test']['accuracy'],
    'steps_per_sec': results.get('steps_per_sec'),
  }


def compare(reference: Mapping[int, float], other: Mapping[int, float]) -> dict[str, float]:
  """Largest and mean absolute training-loss difference over the log points both curves have,
  and the last of them."""
  steps = sorted(set(reference) & set(other))
  gaps = np.abs([other[s] - reference[s] for s in steps])
  return {'max_abs': float(gaps.max()), 'mean_abs': float(gaps.mean()), 'last': float(gaps[-1])}


def table(results: Mapping[str, Any]) -> str:
  """The markdown report: one row per run, and the loss curves at up to 10 log points."""
  lines = [
    f'`{results["config"]}` {" ".join(results["train_flags"])}'.rstrip(),
    '',
    '| precision | seed | validation | test | best-validation test | steps/s | train-loss gap to '
    'float32: max, mean, last |',
    '|---|---:|---:|---:|---:|---:|---|',
  ]
  for run in results['runs']:
    gap = run.get('gap_to_reference')
    speed = run['steps_per_sec']
    lines.append(
      f'| {run["precision"]} | {run["seed"]} | {run["validation_accuracy"]:.4f} | '
      f'{run["test_accuracy"]:.4f} | {run["best_test_accuracy"]:.4f} | '
      + (f'{speed:.2f}' if speed else 'n/a')
      + ' | '
      + (f'{gap["max_abs"]:.4f}, {gap["mean_abs"]:.4f}, {gap["last"]:.4f}' if gap else '-')
      + ' |'
    )
  if len(results['seeds']) > 1:
    lines += [
      '',
      '| precision | runs | validation mean +- sd | test mean +- sd |',
      '|---|---:|---:|---:|',
    ]
    for precision in dict.fromkeys(r['precision'] for r in results['runs']):
      runs = [r for r in results['runs'] if r['precision'] == precision]
      stats = [
        f'{np.mean([r[key] for r in runs]):.4f} +- {np.std([r[key] for r in runs], ddof=1):.4f}'
        for key in ('validation_accuracy', 'test_accuracy')
      ]
      lines.append(f'| {precision} | {len(runs)} | {stats[0]} | {stats[1]} |')
  for seed in results['seeds']:
    runs = [r for r in results['runs'] if r['seed'] == seed]
    steps = sorted(set.intersection(*(set(r['train_loss']) for r in runs)))
    shown = [steps[int(i)] for i in np.linspace(0, len(steps) - 1, min(10, len(steps)))]
    lines += [
      '',
      f'Training loss, seed {seed} (mean over the steps since the previous log point)',
      '',
      '| step | ' + ' | '.join(r['precision'] for r in runs) + ' |',
      '|---:|' + '---:|' * len(runs),
    ]
    for step in dict.fromkeys(shown):
      lines.append(f'| {step} | ' + ' | '.join(f'{r["train_loss"][step]:.4f}' for r in runs) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs (or reads back) every policy and seed and writes the report (see the module
  docstring)."""
  args = parse_args(argv)
  runs = []
  for seed in args.seeds:
    reference = None
    for precision in args.precisions:
      record = {'precision': precision, 'seed': seed, **read_run(run(args, precision, seed))}
      if reference is None:
        reference = record['train_loss']
      else:
        record['gap_to_reference'] = compare(reference, record['train_loss'])
      runs.append(record)
  results = {
    'config': args.config,
    'train_flags': args.train_flags,
    'seeds': args.seeds,
    'machine': describe_machine(),
    'runs': runs,
  }
  report = table(results)
  write_results(args.output_dir, results, report)
  print(report)
  return results


if __name__ == '__main__':
  main()
