r"""What one training step of an LRA recipe costs, from XLA's cost and memory analysis of the
compiled step on this machine (nothing is run): FLOPs, bytes accessed and temporary memory, each
also as a ratio to the first run given. Used to size GPU sessions: a step's time on a GPU where
the first run's was measured is estimated as that time x the ratio of bytes accessed (the LRA steps
at batch 32-512 are bound by memory traffic, not by FLOPs; benchmarks/results/gpu/README.md).

  python -m benchmarks.step_cost --runs listops:luna16,listops:luna16+mlm,listops:transformer \
      [--micro_batches 1,4] [--output benchmarks/results/cpu/step_cost] \
      [-- --config.model.precision=bfloat16]

A run is `<task>:<variant>` (`configs/<task>.py:<variant>`, the full recipe with its batch size;
`<task>` may also be another config file's name, e.g. `pathfinder32_short`), with `+mlm` for the
masked-LM stage of self-pretraining (`luna_jax.training.self_pretraining.stage_configs`: the same
encoder with a tied LM head on the task's inputs). Flags after `--` override the config as in
`train.py`. The model's sizes come from the task's loader constants (vocabulary, classes) and the
config's `max_length`; random ids stand in for the data. XLA:CPU fuses less than XLA:GPU, so the
absolute bytes and memory are larger than a GPU's; the ratios are what the estimate uses.
`--micro_batches` measures every run at each gradient-accumulation count
(`training.gradient_accumulation_steps`): the same batch in that many micro-batches, and what it
saves in temporary memory. XLA's cost analysis counts a loop's body once, so with more than one
micro-batch the FLOPs and bytes are not reported (they are the single batch's, as the step does
the same work).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

import luna_jax
from benchmarks import reproduce
from benchmarks.speed_memory_harness import write_results, xla_cost
from lra import image, listops, pathfinder, retrieval, text, tokenize
from luna_jax.training import optim, run_config, self_pretraining, steps

#: Each task's (vocabulary size, number of classes, two documents) as its loader builds the model.
TASK_SIZES = {
  'listops': (listops.VOCAB_SIZE, listops.NUM_CLASSES, False),
  'text': (tokenize.BYTE_VOCAB_SIZE, text.NUM_CLASSES, False),
  'retrieval': (tokenize.BYTE_VOCAB_SIZE, retrieval.NUM_CLASSES, True),
  'image': (tokenize.PIXEL_VOCAB_SIZE, image.NUM_CLASSES, False),
  'pathfinder32': (tokenize.PIXEL_VOCAB_SIZE, pathfinder.NUM_CLASSES, False),
}
MLM = '+mlm'


def run_config_of(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The resolved config of a run `<config name>:<variant>[+mlm]` with `--config.*` overrides.

  Raises:
    ValueError: an unknown config file, variant or override (the message names it).
  """
  name, _, variant = spec.partition(':')
  config_file = reproduce.REPO / 'configs' / f'{name}.py'
  if not config_file.is_file() or not variant:
    raise ValueError(f'{spec!r}: expected <config name>:<variant>[{MLM}], e.g. listops:luna16')
  variant, mlm, rest = variant.partition(MLM)
  if rest:
    raise ValueError(f'{spec!r}: {MLM} ends the run')
  recipe = reproduce.recipe_config(['train.py', '--config', f'{config_file}:{variant}', *overrides])
  config = ml_collections.ConfigDict(recipe)
  if mlm:
    config.self_pretraining.num_train_steps = config.training.num_train_steps
    config = self_pretraining.stage_configs(config, 'unused')[0][1]
  return config


def train_step_program(config: ml_collections.ConfigDict) -> tuple[Callable, Any, dict[str, Any]]:
  """The trainer's train step of `config` at its batch size, with what it is compiled for.

  Returns:
    `(step, state, batch)`: `step(state, batch)` not jitted (`steps.run_train_step`), the train
    state's shapes and dtypes (`jax.ShapeDtypeStruct`s) and a batch of random ids (numpy).

  Raises:
    KeyError: a task without sizes in `TASK_SIZES`.
  """
  run = run_config.parse_config(config)
  vocab_size, num_classes, dual = TASK_SIZES[run.data.task]
  length = run.data.options['max_length']
  is_mlm = run.model['name'] in luna_jax.MLM_MODELS
  model = luna_jax.build_model(
    run.model,
    vocab_size=vocab_size,
    num_classes=vocab_size if is_mlm else num_classes,
    max_length=length,
    dual=dual and not is_mlm,
  )
  optimizer = optim.make_optimizer(run.optimizer)
  rows = run.training.batch_size
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, vocab_size, (rows, length)).astype(np.int32)
  batch = {'inputs': tokens, 'lengths': np.full(rows, length, np.int32)}
  if dual and not is_mlm:
    batch.update(inputs2=tokens, lengths2=batch['lengths'])
  batch['targets'] = tokens if is_mlm else rng.integers(0, num_classes, rows).astype(np.int32)
  state = jax.eval_shape(
    lambda: steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, batch)
  )
  return steps.run_train_step(model, optimizer, run.training), state, batch


def cost(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """XLA's analysis of the compiled (not run) train step of `config` at its batch size.

  Returns:
    'flops', 'bytes_accessed' (None with gradient accumulation: XLA counts the micro-batch loop's
    body once), 'temp_bytes' (temporary buffers of the step) and 'argument_bytes' (the train
    state and the batch).

  Raises:
    KeyError: a task without sizes in `TASK_SIZES`.
  """
  step, state, batch = train_step_program(config)
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
  analysis = xla_cost(compiled)
  memory = compiled.memory_analysis()
  counted = config.training.gradient_accumulation_steps == 1
  return {
    'flops': float(analysis['flops']) if counted else None,
    'bytes_accessed': float(analysis['bytes accessed']) if counted else None,
    'temp_bytes': int(memory.temp_size_in_bytes),
    'argument_bytes': int(memory.argument_size_in_bytes),
  }


def table(results: Sequence[dict[str, Any]]) -> str:
  """Markdown: one row per run, the ratios to the first ('-' where XLA does not count)."""
  first = results[0]

  def number(value: float | None, scale: float, digits: int) -> str:
    return '-' if value is None else f'{value / scale:.{digits}f}'

  def ratio(r: dict[str, Any], key: str) -> str:
    return '-' if r[key] is None or first[key] is None else f'{r[key] / first[key]:.2f}'

  lines = [
    '| run | batch x length | micro-batches | TFLOP | GB accessed | temp GiB | FLOP ratio | '
    'bytes ratio |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for r in results:
    lines.append(
      f'| {r["run"]} | {r["batch_size"]} x {r["max_length"]} | {r["micro_batches"]} | '
      f'{number(r["flops"], 1e12, 3)} | {number(r["bytes_accessed"], 1e9, 1)} | '
      f'{r["temp_bytes"] / 2**30:.2f} | {ratio(r, "flops")} | {ratio(r, "bytes_accessed")} |'
    )
  return '\n'.join(lines)


def command_line(
  argv: Sequence[str] | None, description: str
) -> tuple[argparse.ArgumentParser, list[str], list[str], list[str]]:
  """The command line of a script that takes runs of recipes (this one, `gpu_compile`).

  Returns:
    `(parser, flags, overrides, given)`: a parser described by `description`, the flags before
    `--` for it, the `--config.*` overrides after `--` (for every run) and the whole command line.
  """
  given = list(sys.argv[1:] if argv is None else argv)
  split = given.index('--') if '--' in given else len(given)
  parser = argparse.ArgumentParser(
    description=description, epilog='Flags after -- override every config.'
  )
  return parser, given[:split], given[split + 1 :], given


def main(argv: Sequence[str] | None = None) -> None:
  parser, argv, overrides, given = command_line(argv, __doc__.split('\n\n')[0])
  parser.add_argument(
    '--runs',
    default='listops:luna16,listops:luna16+mlm,listops:luna256,listops:transformer,'
    'pathfinder32:luna16,pathfinder32:transformer',
    help='comma-separated <config name>:<variant>[+mlm]; the first is the reference.',
  )
  parser.add_argument(
    '--micro_batches',
    default='',
    help='comma-separated gradient-accumulation counts to measure each run at (default: the '
    "config's)",
  )
  parser.add_argument('--output', type=Path, help='folder for results.json and table.md')
  args = parser.parse_args(argv)
  try:
    counts = [int(k) for k in args.micro_batches.split(',') if k.strip()]
  except ValueError:
    parser.error(f'--micro_batches {args.micro_batches!r}: expected integers, e.g. 1,4')
  results = []
  for spec in [s.strip() for s in args.runs.split(',') if s.strip()]:
    try:
      config = run_config_of(spec, overrides)
    except ValueError as e:
      parser.error(str(e))
    for count in counts or [config.training.gradient_accumulation_steps]:
      config.training.gradient_accumulation_steps = count
      measured = cost(config)
      results.append(
        {
          'run': spec,
          'batch_size': config.training.batch_size,
          'max_length': config.data.options.max_length,
          'micro_batches': count,
          **measured,
        }
      )
      print(f'{spec} ({count} micro-batches): {table([results[-1]]).splitlines()[-1]}', flush=True)
  markdown = table(results)
  print(markdown)
  if args.output:
    document = {
      'command': ['python', '-m', 'benchmarks.step_cost', *given],
      'overrides': overrides,
      'device': f'{jax.devices()[0].device_kind} ({jax.default_backend()})',
      'jax_version': jax.__version__,
      'runs': results,
    }
    write_results(args.output, document, markdown)


if __name__ == '__main__':
  main()
