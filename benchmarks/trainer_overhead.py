r"""The trainer at the step's speed: the bare training step against the whole `train_and_evaluate`
(input pipeline, device transfers, logging, evaluation and checkpoints), in training steps/s.

  python -m benchmarks.trainer_overhead [--config configs/quickstart.py] [--config.<field>=<value>]
      [--steps N] [--bare_steps 200] [--bare_batches 4] [--repeats 3] [--num_train 2000]
      [--num_eval 2000] [--output overhead.json]
  python -m benchmarks.trainer_overhead --config configs/listops.py:luna16 \
      --config.training.checkpoint_every=250 --output listops_luna16.json

Three figures, compilation left out of each:
  bare        the trainer's pmapped train step (`trainer.map_steps`, state replicated as the
              trainer does) alone, on `--bare_batches` batches already on the devices:
              `--bare_steps` steps dispatched back to back and waited for; the median of
              `--repeats`.
  loop        the trainer's own figure (results.json 'steps_per_sec'): training time between log
              points, with the input pipeline, transfers and metric logging, without the time of
              evaluations and checkpoint saves.
  end_to_end  wall-clock steps/s of everything, in one run: from the log point after the first
              evaluation and checkpoint (the lcm of eval_every and checkpoint_every; they bring
              the evaluation's compilation) to the last step, `--steps` steps later (default the
              lcm of eval_every, checkpoint_every and log_every), which hold evaluations,
              checkpoints and log points at the config's frequencies. The ends are the times
              the run wrote its training metrics at those steps (its TensorBoard events).
Each is also given as a ratio to the bare step (0.85 or more: within 15% of its speed).

Data: the config's `data.data_dir` when that folder exists; else, for ListOps configs, ListOps of
the official distribution scaled to the config's `data.options.max_length` (`lra.listops_generator`:
lengths max_length / 4 to max_length, depth 10, 10 arguments), `--num_train` training and
`--num_eval` validation and test examples (2000, the official sizes, make evaluations cost what they
cost on the real data), written with the run's workdir into a temporary folder that is removed at
the end. Prints a one-line table and writes the figures as JSON to `--output` (else prints them).
Timings on a CPU shared with other processes are noisy. The figures that matter are a GPU's, where
the step is fast and the host's share of the time is largest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from flax import jax_utils

from benchmarks.reproduce import recipe_config
from benchmarks.speed_memory_harness import describe_machine
from lra import cli, listops_generator
from lra.files import write_atomically
from luna_jax.training import metric_log, run_config, steps, trainer, xla_settings

#: The default config: a small Luna on short generated ListOps.
DEFAULT_CONFIG = 'configs/quickstart.py'


def prepare_data(
  config: ml_collections.ConfigDict, folder: str, num_train: int, num_eval: int
) -> None:
  """Points `config.data.data_dir` at data: its own folder when that exists, else ListOps
  generated into `folder` (see the module docstring).

  Raises:
    ValueError: the folder does not exist and the task is not ListOps.
  """
  if config.data.data_dir and os.path.isdir(config.data.data_dir):
    return
  if config.data.task != 'listops':
    raise ValueError(
      f'config.data.data_dir={config.data.data_dir!r} does not exist, and only ListOps is '
      f'generated here: pass --config.data.data_dir=<the {config.data.task} data>.'
    )
  max_length = config.data.options.max_length
  listops_generator.main(
    [
      *('--output_dir', folder, '--num_train', str(num_train)),
      *('--num_val', str(num_eval), '--num_test', str(num_eval)),
      *('--min_length', str(max_length // 4), '--max_length', str(max_length)),
      *('--max_depth', '10', '--max_args', '10'),
    ]
  )
  config.data.data_dir = folder


def bare_step(
  run: run_config.RunConfig, num_steps: int, num_batches: int, repeats: int
) -> dict[str, Any]:
  """Times the trainer's pmapped train step alone on batches already on the devices.

  Args:
    run: the parsed config (model, optimizer, batch size, devices, data).
    num_steps: steps per timed repeat, dispatched back to back and then waited for.
    num_batches: distinct training batches, put on the devices once and cycled through.
    repeats: timed repeats (after one untimed step, which compiles).

  Returns:
    'steps_per_s' (of the median repeat), 'seconds' (each repeat), 'steps', 'batches',
    'compile_s' (the first step, compilation included).
  """
  data = trainer.load_data(run)
  model, optimizer, state = trainer.build(run, data)
  devices = steps.select_devices(run.training.num_devices, (run.training.batch_size,))
  p_train_step, _ = trainer.map_steps(model, optimizer, run.training, devices)
  host_batches = data.batching.train_batches(
    data.train, run.training.batch_size, num_devices=len(devices), seed=run.seed
  )
  batches = list(steps.device_batches(host_batches, devices, prefetch=1, limit=num_batches))
  state = jax_utils.replicate(state, devices, axis_name=steps.AXIS)
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(p_train_step(state, batches[0]))
  compile_s = time.perf_counter() - start
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(num_steps):
      state, metrics = p_train_step(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
  return {
    'steps_per_s': num_steps / statistics.median(seconds),
    'seconds': seconds,
    'steps': num_steps,
    'batches': len(batches),
    'compile_s': compile_s,
  }


def _points_in(start: int, end: int, every: int) -> int:
  """How many multiples of `every` are in [start, end)."""
  return (end - 1) // every - (start - 1) // every


def whole_run(config: ml_collections.ConfigDict, span: int, workdir: str) -> dict[str, Any]:
  """Runs `train_and_evaluate` and times its steady state from its TensorBoard events.

  The run's first evaluation and checkpoint (with the evaluation's compilation and whatever the
  first save sets up) come first, at step s0, the least common multiple of `eval_every` and
  `checkpoint_every`; the window is from the log point after s0 to `span` steps later, the last
  step, each end the time its training metrics were written (right after its step finished, before
  the evaluation or checkpoint at that step). It holds the evaluations, checkpoints and log points
  of `span` steps at the config's frequencies.

  Returns:
    'loop' ('steps_per_s': the trainer's own figure, results.json 'steps_per_sec'), 'end_to_end'
    ('steps_per_s', 'steps', 'seconds', 'evaluations', 'checkpoints', 'first_step' of the window),
    'num_train_steps' and 'devices' (the run's results.json record).
  """
  training = config.training
  first = math.lcm(training.eval_every, training.checkpoint_every)
  # The next log point after `first` (a multiple of eval_every and checkpoint_every).
  start = first + min(
    training.log_every - first % training.log_every, training.eval_every, training.checkpoint_every
  )
  run = ml_collections.ConfigDict(config.to_dict())
  run.training.num_train_steps = start + span
  results = trainer.train_and_evaluate(run, workdir)
  logged = {
    event.step: event.wall_time
    for event in metric_log.read_events(os.path.join(workdir, 'tensorboard'))
    for value in event.summary.value
    if value.tag == 'train_loss'
  }
  end = start + span
  seconds = logged[end] - logged[start]
  return {
    'loop': {'steps_per_s': results['steps_per_sec']},
    'end_to_end': {
      'steps_per_s': span / seconds,
      'steps': span,
      'seconds': seconds,
      'first_step': start,
      'evaluations': _points_in(start, end, training.eval_every),
      'checkpoints': _points_in(start, end, training.checkpoint_every),
    },
    'num_train_steps': end,
    'devices': results['devices'],
  }


def table(results: dict[str, Any]) -> str:
  """The one-line Markdown table of `results` (with its header)."""
  bare = results['bare']['steps_per_s']
  cells = [
    results['config'],
    f'{results["devices"]["device_kind"]} x{results["devices"]["global_devices"]}',
    f'{bare:.2f}',
    *(
      f'{results[k]["steps_per_s"]:.2f} ({results[k]["steps_per_s"] / bare:.2f})'
      for k in ('loop', 'end_to_end')
    ),
  ]
  return (
    '| config | devices | bare steps/s | loop steps/s (ratio) | end-to-end steps/s (ratio) |\n'
    '|---|---|---|---|---|\n'
    f'| {" | ".join(cells)} |\n'
  )


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
  """The benchmark's flags and the `--config.<field>=<value>` overrides."""
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--config', default=DEFAULT_CONFIG, help='<config file>[:<argument>]')
  parser.add_argument(
    '--steps',
    type=cli.integer(0),
    default=0,
    help='steps of the timed window (0: lcm of eval_every, checkpoint_every and log_every)',
  )
  parser.add_argument('--bare_steps', type=cli.integer(1), default=200)
  parser.add_argument('--bare_batches', type=cli.integer(1), default=4)
  parser.add_argument('--repeats', type=cli.integer(1), default=3)
  parser.add_argument('--num_train', type=cli.integer(1), default=2000)
  parser.add_argument('--num_eval', type=cli.integer(1), default=2000)
  parser.add_argument('--output', type=cli.path, help='JSON file for the figures')
  args, overrides = parser.parse_known_args(argv)
  unknown = [a for a in overrides if not a.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognized arguments: {" ".join(unknown)}')
  return args, overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark (flags: the module docstring); returns what it writes."""
  args, overrides = parse_args(argv)
  try:
    config = ml_collections.ConfigDict(recipe_config(['--config', args.config, *overrides]))
  except ValueError as e:
    sys.exit(f'Error: {e}')
  config.debug = False  # Applied already: the fields below refine the resolved config.
  xla_settings.apply(remat=config.model.remat)  # As train.py, before the first JAX computation.
  training = config.training
  span = args.steps or math.lcm(training.eval_every, training.checkpoint_every, training.log_every)
  with tempfile.TemporaryDirectory(prefix='trainer_overhead_') as folder:
    prepare_data(config, os.path.join(folder, 'data'), args.num_train, args.num_eval)
    run = run_config.parse_config(config)
    bare = bare_step(run, args.bare_steps, args.bare_batches, args.repeats)
    whole = whole_run(config, span, os.path.join(folder, 'run'))
  results = {
    'config': args.config,
    'overrides': overrides,
    'task': config.data.task,
    'model': config.model.name,
    'batch_size': training.batch_size,
    'max_length': config.data.options.get('max_length'),
    'eval_every': training.eval_every,
    'checkpoint_every': training.checkpoint_every,
    'log_every': training.log_every,
    'num_eval_batches': training.num_eval_batches,
    'prefetch_batches': training.prefetch_batches,
    'machine': describe_machine(),
    'devices': whole['devices'],
    'bare': bare,
    'loop': {**whole['loop'], 'ratio': whole['loop']['steps_per_s'] / bare['steps_per_s']},
    'end_to_end': {
      **whole['end_to_end'],
      'ratio': whole['end_to_end']['steps_per_s'] / bare['steps_per_s'],
    },
    'num_train_steps': whole['num_train_steps'],
  }
  print(table(results), end='')
  text = json.dumps(results, indent=2)
  if args.output:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output, text + '\n')
  else:
    print(text)
  return results


if __name__ == '__main__':
  main()
