r"""Speed and memory benchmark of Luna against softmax attention (the paper's Table 2, on any
machine).

The command line: runs every (model, length) cell of each mode (`benchmarks.speed_memory_harness`
measures a cell) and writes its reports (`benchmarks.speed_memory_report`). Two modes, each writing
`results.json`, `table_relative.md`, `table_absolute.md` and `plot.png` under
`<output_dir>/<mode>/`:

  train_step  one full training step of the LRA Text classifier (forward, backward, optimizer
              update), through `luna_jax.training.steps.train_step` (jitted, state donated);
  attention   the attention module alone (input projections, attention, output projection; no FFN,
              no LayerNorm, no optimizer): forward and backward with respect to its parameters and
              inputs, no dropout.

Every (model, length) cell runs in a fresh subprocess (`--isolation subprocess`), compiled ahead of
time, warmed up and timed `--repeats` times; the median is reported. A cell whose compiled peak
exceeds `--memory_limit_gb`, or that fails with RESOURCE_EXHAUSTED, or whose process is killed, is
reported as OOM; once a model is OOM at one length, its longer lengths are reported OOM without
running, and once its step takes longer than `--max_step_s`, its longer lengths are only compiled.
The machine's dense-matmul peak FLOP/s (float32, which is TF32 on NVIDIA GPUs, and bfloat16 with
float32 accumulation) is measured in the same run, so achieved FLOP/s can be given as a fraction of
the peak of the compute dtype: XLA's FLOP count per second (every op) and the model FLOPs
utilisation, MFU (`benchmarks.model_flops`: the matmuls the step needs, a training step counted as
3x the forward). With `--profile`, each cell runs one more step under `jax.profiler.trace` (a
Perfetto/TensorBoard trace under `<output_dir>/<mode>/traces/`) and `profile.md` gives the
milliseconds per step of each XLA op class (the op name without its numeric suffix, e.g.
`ynn_fusion` for a fused matmul on CPU) across the cells.

Example (the committed CPU run, see README "Benchmarks"):

  python -m benchmarks.speed_memory --mode train_step,attention --batch_size 1 --warmup 1 \
      --repeats 3 --long_lengths 8K,16K --long_models transformer,luna16 --max_step_s 20 \
      --output_dir benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.speed_memory_harness import (
  MATMUL_DTYPES,
  MODES,
  Architecture,
  cell_main,
  describe_machine,
  finish_record,
  measure_matmul_peak,
  mfu_dtype,
  model_flops_per_step,
  run_cell,
  run_cell_subprocess,
)
from benchmarks.speed_memory_report import gib, length_label, write_reports
from configs import variants
from lra import cli
from luna_jax.model.config import PRECISIONS

DEFAULT_MODELS = (
  'transformer',
  'transformer_fused',
  'linformer',
  'linear_transformer',
  'performer',
  'luna16',
  'luna128',
  'luna256',
)
DEFAULT_LENGTHS = (1024, 2048, 3072, 4096)
DEFAULT_LONG_LENGTHS = (8192, 16384, 32768)


def _parse_lengths(text: str) -> list[int]:
  """'1K,2048' -> [1024, 2048] (`lra.cli.lengths`: each >= 1)."""
  return cli.lengths(text)


def architecture(args: argparse.Namespace) -> Architecture:
  """The architecture every model of the run shares, from its flags."""
  return Architecture(
    num_layers=args.num_layers,
    emb_dim=args.emb_dim,
    num_heads=args.num_heads,
    mlp_dim=args.mlp_dim,
    activation=args.activation,
    dropout_rate=args.dropout_rate,
    attention_dropout_rate=args.attention_dropout_rate,
    precision=args.precision,
    remat=args.remat,
  )


def run_benchmark(
  mode: str,
  args: argparse.Namespace,
  machine: dict[str, Any],
  matmul_peaks: dict[str, dict[str, Any]],
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs every (model, length) cell of one mode and returns the results document.

  Args:
    mode: one of `MODES`.
    args: the parsed flags.
    machine: `describe_machine()`.
    matmul_peaks: `measure_matmul_peak` results by dtype (every one of `MATMUL_DTYPES`).
    log: prints a line per cell.

  Returns:
    The document `write_reports` writes: `machine`, `matmul_peak` (float32, the one field older
    documents have), `matmul_peaks` (by dtype), `mfu_dtype` (the peak MFU divides by), `settings`,
    the FLOP and memory sources, and `cells`.
  """
  arch = architecture(args)
  models, lengths = args.models.split(','), _parse_lengths(args.lengths)
  long_lengths = _parse_lengths(args.long_lengths) if args.long_lengths else []
  long_models = args.long_models.split(',') if args.long_models else models
  limit_gb = args.memory_limit_gb
  if limit_gb is None and machine['backend'] == 'cpu' and machine['ram_bytes']:
    limit_gb = 0.75 * machine['ram_bytes'] / 2**30
  cells = []
  for model in models:
    oom_at = slow = None
    # A length in both lists runs once.
    for length in sorted(set(lengths) | set(long_lengths if model in long_models else [])):
      spec = {
        'mode': mode,
        'model': model,
        'length': length,
        'batch_size': args.batch_size,
        'warmup': args.warmup,
        'repeats': args.repeats,
        'seed': args.seed,
        'memory_limit_bytes': None if limit_gb is None else int(limit_gb * 2**30),
        'arch': dataclasses.asdict(arch),
      }
      if args.profile:
        spec['trace_dir'] = os.path.abspath(
          os.path.join(args.output_dir, mode, 'traces', f'{model}_{length_label(length)}')
        )
      if args.compile_only:
        spec['compile_only'] = 'compiled only (--compile_only)'
      elif slow is not None:
        spec['compile_only'] = (
          f'not timed: step took {slow[1]:.0f} s at {length_label(slow[0])} '
          f'(> --max_step_s {args.max_step_s:g})'
        )
      start = time.perf_counter()
      if oom_at is not None:
        record = {'status': 'OOM', 'reason': f'OOM at {length_label(oom_at)} (not run)'}
      elif args.isolation == 'subprocess':
        record = run_cell_subprocess(spec, args.cell_timeout_s)
      else:
        record = run_cell(spec)
      if record['status'] == 'OOM' and oom_at is None:
        oom_at = length
      if (
        record['status'] == 'ok'
        and args.max_step_s is not None
        and record['step_time_s'] > args.max_step_s
      ):
        slow = (length, record['step_time_s'])
      cell = finish_record(record, spec, matmul_peaks, machine['backend'])
      cells.append(cell)
      summary = (
        f'{cell["steps_per_s"]:.3g} steps/s, {gib(cell["memory_bytes"])} GiB, '
        f'MFU {100 * cell["mfu"]:.1f}%'
        if cell['status'] == 'ok'
        else cell.get('reason', '')
      )
      log(
        f'[{mode}] {variants.label(model):>22} {length_label(length):>4}: {cell["status"]} '
        f'{summary} ({time.perf_counter() - start:.0f} s)'
      )
  memory_source = (
    'compiled memory_analysis() peak (process peak RSS beside it)'
    if machine['backend'] == 'cpu'
    else 'device peak_bytes_in_use'
  )
  settings = {
    'mode': mode,
    'models': models,
    'lengths': sorted({c['length'] for c in cells}),
    'batch_size': args.batch_size,
    'warmup': args.warmup,
    'repeats': args.repeats,
    'seed': args.seed,
    'memory_limit_gb': limit_gb,
    'max_step_s': args.max_step_s,
    'isolation': args.isolation,
    'arch': dataclasses.asdict(arch),
    'trainer': 'luna_jax.training.steps.train_step' if mode == 'train_step' else None,
  }
  return {
    'machine': machine,
    'matmul_peak': matmul_peaks['float32'],
    'matmul_peaks': matmul_peaks,
    'mfu_dtype': mfu_dtype(settings['arch']),
    'settings': settings,
    'memory_source': memory_source,
    'flops_source': 'XLA cost_analysis() of the compiled step',
    'model_flops_source': (
      'benchmarks.model_flops: matmul FLOPs from the settings, a step = 3x the forward'
    ),
    'cells': cells,
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command-line flags (`--cell`, hidden, runs one cell as a child process)."""
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    '--mode', default='train_step,attention', help=f'comma-separated subset of {MODES}.'
  )
  parser.add_argument(
    '--models',
    default=','.join(DEFAULT_MODELS),
    help=f'comma-separated: {", ".join(variants.VARIANTS)}, luna<l>, luna<l>_tied, '
    'luna<l>_noncontextual (configs/variants.py).',
  )
  parser.add_argument(
    '--lengths',
    default=None,
    help='comma-separated sequence lengths (1024 or 1K; default '
    f'{",".join(str(n) for n in DEFAULT_LENGTHS)}).',
  )
  parser.add_argument(
    '--long_lengths',
    default=None,
    help='further lengths run only for --long_models (e.g. 8K,16K; default '
    f'{",".join(str(n) for n in DEFAULT_LONG_LENGTHS)} when --lengths is not given, else none).',
  )
  parser.add_argument(
    '--long_models', default='', help='models that also run at --long_lengths (default: all).'
  )
  parser.add_argument(
    '--max_step_s',
    type=cli.number(above=0),
    default=None,
    help="once a model's step takes longer than this, its longer lengths are only "
    'compiled (memory guard: OOM or skipped), not timed.',
  )
  parser.add_argument('--batch_size', type=cli.integer(1), default=2)
  parser.add_argument('--warmup', type=cli.integer(0), default=2)
  parser.add_argument('--repeats', type=cli.integer(1), default=5)
  parser.add_argument('--seed', type=cli.integer(0), default=0)
  parser.add_argument('--output_dir', type=cli.path, default='benchmarks/results/local')
  parser.add_argument(
    '--memory_limit_gb',
    type=cli.number(above=0),
    default=None,
    help='report a cell as OOM without running it when its compiled peak is above '
    'this (default on CPU: 75%% of RAM; none on GPU/TPU).',
  )
  parser.add_argument('--cell_timeout_s', type=cli.number(above=0), default=1800.0)
  parser.add_argument(
    '--isolation',
    choices=('subprocess', 'none'),
    default='subprocess',
    help='run each cell in a fresh process (per-cell RSS/peak bytes) or in this one.',
  )
  parser.add_argument(
    '--matmul_size',
    type=cli.integer(1),
    default=4096,
    help='side of the square matmuls that measure the peak FLOP/s (small in tests).',
  )
  parser.add_argument('--num_layers', type=cli.integer(1), default=4)
  parser.add_argument('--emb_dim', type=cli.integer(1), default=256)
  parser.add_argument('--num_heads', type=cli.integer(1), default=4)
  parser.add_argument('--mlp_dim', type=cli.integer(1), default=1024)
  parser.add_argument('--activation', default='gelu')
  parser.add_argument('--dropout_rate', type=cli.number(minimum=0, below=1), default=0.1)
  parser.add_argument('--attention_dropout_rate', type=cli.number(minimum=0, below=1), default=0.1)
  parser.add_argument(
    '--precision',
    default='float32',
    choices=tuple(PRECISIONS),
    help='precision policy (config.model.precision): float32, bfloat16 (bfloat16 matmul inputs, '
    'float32 activations) or bfloat16_all',
  )
  parser.add_argument(
    '--remat',
    default='none',
    choices=('none', 'layer', 'dots'),
    help='per-layer rematerialisation of the training step (config.model.remat).',
  )
  parser.add_argument(
    '--compile_only',
    action='store_true',
    help='compile every cell and report its compiled peak memory; no timing.',
  )
  parser.add_argument(
    '--xla_defaults',
    action='store_true',
    help="XLA's default flags instead of luna_jax.training.xla_settings (before/after).",
  )
  parser.add_argument(
    '--profile',
    action='store_true',
    help='trace one more step per cell with jax.profiler and write profile.md (time per '
    'XLA op class).',
  )
  parser.add_argument('--cell', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  # Lengths asked for are the lengths run: the long ones come with the default lengths only.
  if args.long_lengths is None:
    args.long_lengths = '' if args.lengths else ','.join(str(n) for n in DEFAULT_LONG_LENGTHS)
  if args.lengths is None:
    args.lengths = ','.join(str(n) for n in DEFAULT_LENGTHS)
  for flag in ('lengths', 'long_lengths'):
    try:
      if getattr(args, flag):
        cli.lengths(getattr(args, flag))
    except argparse.ArgumentTypeError as e:
      parser.error(f'argument --{flag}: {e}')
  try:
    for name in [*args.models.split(','), *filter(None, args.long_models.split(','))]:
      variants.get(name)
  except ValueError as e:
    parser.error(f'argument --models: {e}')
  unknown = sorted(set(args.mode.split(',')) - set(MODES))
  if unknown:
    parser.error(f'argument --mode: must be a subset of {MODES}, got {", ".join(unknown)}.')
  # Each cell's MFU needs its model's FLOPs: an attention `benchmarks.model_flops` has no formula
  # for (one of one's own) is refused here, before anything is timed.
  spec = {
    'length': 1,
    'batch_size': args.batch_size,
    'arch': dataclasses.asdict(architecture(args)),
  }
  models = [*args.models.split(','), *filter(None, args.long_models.split(','))]
  try:
    for mode, model in itertools.product(args.mode.split(','), models):
      model_flops_per_step({**spec, 'mode': mode, 'model': model})
  except ValueError as e:
    parser.error(str(e))
  return args


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the benchmark for each `--mode` and writes its reports under `--output_dir/<mode>/`."""
  args = parse_args(argv)
  from luna_jax.training import xla_settings

  if args.xla_defaults:
    os.environ[xla_settings.DEFAULTS_VARIABLE] = '1'
  xla_settings.apply(remat=args.remat)
  # On a GPU, JAX would take 75% of the memory in this parent process (it measures the matmul
  # peak), leaving each cell's child process a quarter, and cap the child at 75% (a batch-32 4K
  # Transformer needs more): both take memory as needed, up to 90%.
  xla_settings.default_gpu_memory_on_demand()
  if args.cell is not None:
    cell_main(args.cell)
    return
  modes = args.mode.split(',')  # Checked by parse_args.
  machine = describe_machine()
  matmul_peaks = {
    dtype: measure_matmul_peak(dtype, args.matmul_size, repeats=5) for dtype in MATMUL_DTYPES
  }
  peaks = ', '.join(f'{p["dtype"]} {p["flop_per_s"] / 1e9:.1f}' for p in matmul_peaks.values())
  print(
    f'{machine["cpu_model"]} ({machine["cpu_cores"]} cores), backend {machine["backend"]}: '
    f'dense matmul GFLOP/s {peaks}',
    flush=True,
  )
  for mode in modes:
    results = run_benchmark(
      mode, args, machine, matmul_peaks, log=functools.partial(print, flush=True)
    )
    out_dir = os.path.join(args.output_dir, mode)
    write_reports(results, out_dir)
    extra = ',profile.md' if args.profile else ''
    print(
      f'wrote {out_dir}/{{results.json,table_relative.md,table_absolute.md,plot.png{extra}}}',
      flush=True,
    )


if __name__ == '__main__':
  main()
