"""Smoke test of the speed/memory benchmark: a tiny run of both modes, then the output files'
schema."""

import gzip
import json
import math
import os
import re

import jax
import pytest

from benchmarks import speed_memory
from benchmarks.speed_memory_harness import (
  MATMUL_DTYPES,
  Architecture,
  failed_cell,
  measure_matmul_peak,
  model_config,
  op_class_times,
  run_cell,
  run_cell_subprocess,
)
from benchmarks.speed_memory_report import (
  absolute_table,
  length_label,
  machine_lines,
  relative_table,
)
from configs import variants

TINY = [
  '--num_layers',
  '1',
  '--emb_dim',
  '32',
  '--num_heads',
  '2',
  '--mlp_dim',
  '64',
  '--batch_size',
  '2',
  '--warmup',
  '1',
  '--repeats',
  '1',
  '--matmul_size',
  '256',
]
MODES = {
  # mode: (models, lengths); compile time dominates, so the training step runs at one length.
  'train_step': ('transformer,linear_transformer,luna16,luna16_noncontextual', (32,)),
  'attention': ('transformer_fused,linformer,performer,luna16', (32, 64)),
}
PROFILED_MODE = 'attention'
POSITIVE_FIGURES = (
  'compile_s',
  'step_time_s',
  'steps_per_s',
  'examples_per_s',
  'tokens_per_s',
  'flops_per_step',
  'flop_per_s',
  'matmul_peak_fraction',
  'model_flops_per_step',
  'model_flop_per_s',
  'mfu',
  'memory_bytes',
  'compiled_peak_bytes',
  'peak_rss_bytes',
)


@pytest.fixture(scope='module')
def output_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('benchmark')
  previous = os.environ.get('JAX_DISABLE_MOST_OPTIMIZATIONS')
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'  # Children inherit it: compile time dominates.
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    for mode, (models, lengths) in MODES.items():
      speed_memory.main(
        TINY
        + [
          '--mode',
          mode,
          '--models',
          models,
          '--isolation',
          'none',
          '--long_lengths',
          str(lengths[-1]),  # Overlaps: runs once.
          '--lengths',
          ','.join(map(str, lengths)),
          '--output_dir',
          str(out),
        ]
        + (['--profile'] if mode == PROFILED_MODE else [])
      )
  finally:
    jax.config.update('jax_disable_most_optimizations', False)
    if previous is None:
      del os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS']
    else:
      os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = previous
  return out


@pytest.mark.parametrize('mode', list(MODES))
def test_results_json_schema_and_figures(output_dir, mode):
  with open(output_dir / mode / 'results.json') as f:
    results = json.load(f)
  assert set(results) >= {
    'machine',
    'matmul_peak',
    'settings',
    'memory_source',
    'flops_source',
    'cells',
  }
  assert set(results['machine']) >= {
    'cpu_model',
    'cpu_cores',
    'ram_bytes',
    'backend',
    'jax',
    'devices',
  }
  peaks = results['matmul_peaks']
  assert list(peaks) == list(MATMUL_DTYPES) and results['matmul_peak'] == peaks['float32']
  for dtype, peak in peaks.items():
    assert peak['dtype'] == dtype and peak['flop_per_s'] > 0 and peak['size'] == 256
    assert peak['device'] == results['machine']['devices'][0]
  assert results['mfu_dtype'] == 'float32'
  models, lengths = MODES[mode][0].split(','), MODES[mode][1]
  assert results['settings']['models'] == models
  assert results['settings']['lengths'] == list(lengths)
  cells = results['cells']
  assert [(c['model'], c['length']) for c in cells] == [(m, n) for m in models for n in lengths]
  for cell in cells:
    assert cell['status'] == 'ok', cell
    assert cell['mode'] == mode and cell['batch_size'] == 2
    for key in POSITIVE_FIGURES:
      value = cell[key]
      assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (
        cell['model'],
        key,
      )
    assert len(cell['step_times_s']) == 1
    assert cell['examples_per_s'] == pytest.approx(2 * cell['steps_per_s'])
    # XLA counts the same matmuls (tests/test_model_flops.py) and the element-wise work besides,
    # except for the Performer, whose fixed random projection takes no gradient (3x overcounts).
    if cell['model'] != 'performer':
      assert cell['model_flops_per_step'] < cell['flops_per_step']
    assert cell['mfu'] == pytest.approx(
      cell['model_flops_per_step'] / cell['step_time_s'] / peaks['float32']['flop_per_s']
    )


@pytest.mark.parametrize('mode', list(MODES))
def test_tables_and_plot(output_dir, mode):
  relative = (output_dir / mode / 'table_relative.md').read_text()
  absolute = (output_dir / mode / 'table_absolute.md').read_text()
  for model in MODES[mode][0].split(','):
    assert f'| {variants.label(model)} |' in relative
    assert f'| {variants.label(model)} | 32 | ok |' in absolute
  assert 'Machine:' in relative and 'matmul peak' in relative
  assert 'bfloat16 (float32 accumulation)' in relative and 'MFU = model FLOP/s' in relative
  assert '| MFU (%) |' in absolute and 'Model FLOPs: benchmarks.model_flops' in absolute
  png = (output_dir / mode / 'plot.png').read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000


@pytest.mark.parametrize('mode', list(MODES))
def test_profile_times_every_cell_by_op_class(output_dir, mode):
  with open(output_dir / mode / 'results.json') as f:
    cells = json.load(f)['cells']
  if mode != PROFILED_MODE:
    assert not (output_dir / mode / 'profile.md').exists()
    assert not any('op_class_ms' in c for c in cells)
    return
  table = (output_dir / mode / 'profile.md').read_text()
  for cell in cells:
    ops = cell['op_class_ms']
    assert ops and all(math.isfinite(ms) and ms > 0 for ms in ops.values()), cell['model']
    assert not any(re.search(r'\.\d+$', name) for name in ops)  # Numeric suffixes stripped.
    assert list(ops.values()) == sorted(ops.values(), reverse=True)
    assert f'{cell["label"]} {length_label(cell["length"])}' in table
    traces = list(
      (output_dir / mode / 'traces').glob(f'{cell["model"]}_{cell["length"]}/**/*.trace.json.gz')
    )
    assert traces, cell['model']
  assert '| all ops |' in table and '| step (timed median) |' in table


def test_op_classes_of_a_gpu_trace_are_its_kernels(tmp_path):
  """A trace in the shape jax.profiler writes on a GPU: the CUDA profiler's kernels on the device's
  'Stream #' rows, carrying XLA's `hlo_op` or not (a library's kernel), and the host's launch calls
  carrying the same `hlo_op`; only the device's stream rows count, by kernel name."""

  def meta(pid, tid, kind, name):
    return {
      'ph': 'M',
      'pid': pid,
      **({'tid': tid} if tid else {}),
      'name': kind,
      'args': {'name': name},
    }

  def event(pid, tid, name, dur, hlo_op=None):
    args = {'hlo_op': hlo_op, 'hlo_module': 'jit_step'} if hlo_op else {}
    return {'ph': 'X', 'pid': pid, 'tid': tid, 'ts': 0.0, 'dur': dur, 'name': name, 'args': args}

  gemm = 'sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_execute_kernel__5x_cublas'
  flash = 'cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_kernel0_0'
  events = [
    meta(1, None, 'process_name', '/host:CPU'),
    meta(1, 7, 'thread_name', 'python'),
    meta(2, None, 'process_name', '/device:GPU:0'),
    meta(2, 13, 'thread_name', 'Stream #13(Kernel,MemcpyD2D)'),
    meta(2, 99, 'thread_name', 'CUPTI overhead'),
    event(1, 7, 'cuLaunchKernel', 5.0, 'loop_add_fusion.2'),
    event(1, 7, 'PjitFunction(step)', 900.0),
    event(2, 13, 'loop_add_fusion_2', 100.0, 'loop_add_fusion.2'),
    event(2, 13, 'loop_add_fusion_17', 50.0, 'loop_add_fusion.17'),
    event(2, 13, gemm, 300.0, 'custom-call.3'),
    event(2, 13, flash, 200.0),
    event(2, 13, 'MemcpyD2D', 10.0, 'copy.1'),
    event(2, 99, 'CUPTI overhead', 40.0),
  ]
  folder = tmp_path / 'plugins' / 'profile' / 'run'
  folder.mkdir(parents=True)
  with gzip.open(folder / 'host.trace.json.gz', 'wt') as f:
    json.dump({'displayTimeUnit': 'ns', 'traceEvents': events}, f)
  ops = op_class_times(str(tmp_path))
  assert list(ops) == [gemm, flash.removesuffix('_0'), 'loop_add_fusion', 'MemcpyD2D']
  assert list(ops.values()) == pytest.approx([0.3, 0.2, 0.15, 0.01])


def test_cell_in_a_subprocess(monkeypatch):
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
  spec = {
    'mode': 'attention',
    'model': 'luna16',
    'length': 32,
    'batch_size': 2,
    'warmup': 0,
    'repeats': 1,
    'seed': 0,
    'memory_limit_bytes': None,
    'arch': vars(Architecture(num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64)),
  }
  record = run_cell_subprocess(spec, timeout_s=120)
  assert record['status'] == 'ok', record
  assert record['step_time_s'] > 0 and record['peak_rss_bytes'] > record['compiled_peak_bytes'] > 0


def test_a_cell_process_is_out_of_memory_only_when_killed_or_resource_exhausted():
  """Reruns depend on it: an OOM cell counts as finished, an error does not."""
  assert failed_cell(-9, '')['status'] == 'OOM'  # The kernel's OOM killer.
  assert failed_cell(137, '')['status'] == 'OOM'  # The same through a shell.
  assert (
    failed_cell(1, 'jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory')['status']
    == 'OOM'
  )
  abort = failed_cell(-6, 'F external/xla/stream_executor/cuda: Check failed: cudnn')
  assert abort == {'status': 'error', 'reason': 'exit code -6: F external/xla/stream_executor/'
                   'cuda: Check failed: cudnn'}  # fmt: skip
  warning = 'W bfc_allocator.cc] ran out of memory trying to allocate 23MiB. ... not a failure'
  assert failed_cell(1, f'{warning}\nValueError: bad shape')['status'] == 'error'


def test_memory_guard_reports_oom_without_running():
  spec = {
    'mode': 'attention',
    'model': 'transformer',
    'length': 32,
    'batch_size': 2,
    'warmup': 0,
    'repeats': 1,
    'seed': 0,
    'memory_limit_bytes': 1,
    'arch': vars(Architecture(num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64)),
  }
  record = run_cell(spec)
  assert record['status'] == 'OOM' and 'memory limit' in record['reason']
  assert 'step_time_s' not in record


def test_relative_table_reports_oom_and_baseline_oom():
  ok = lambda model, steps, memory: {
    'model': model,
    'length': 1024,
    'status': 'ok',
    'steps_per_s': steps,
    'memory_bytes': memory,
  }
  cells = [
    ok('transformer', 1.0, 100.0),
    ok('luna16', 4.0, 10.0),
    {'model': 'transformer', 'length': 2048, 'status': 'OOM'},
    dict(ok('luna16', 2.0, 20.0), length=2048),
  ]
  table = relative_table(cells, ['transformer', 'luna16'], [1024, 2048], 'transformer')
  assert '| Transformer | 1.00 | OOM | 1.00 | OOM |' in table
  assert '| Luna-16 | 4.00 | n/a | 0.10 | n/a |' in table


@pytest.mark.parametrize(
  'path',
  ['benchmarks/results/gpu/train_step/transformer/train_step', 'benchmarks/results/cpu/train_step'],
)
def test_reports_render_committed_results_without_model_flops(path):
  """Documents written before MFU was measured (no model FLOPs, float32 peak only) still render."""
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), path, 'results.json')) as f:
    results = json.load(f)
  assert 'matmul_peaks' not in results and 'mfu' not in results['cells'][0]
  header, _, *rows = (
    [column.strip() for column in line.split('|')]
    for line in absolute_table(results['cells']).splitlines()
  )
  model_columns = slice(header.index('model GFLOP/step'), header.index('MFU (%)') + 1)
  assert len(rows) == len(results['cells'])
  assert all(row[model_columns] == ['-', '-', '-'] for row in rows)
  assert machine_lines(results)[1].startswith('Dense-matmul peak (float32 ')


def test_matmul_peak_dtypes():
  bfloat16 = measure_matmul_peak('bfloat16', size=64, repeats=1)
  assert bfloat16['dtype'] == 'bfloat16' and bfloat16['flop_per_s'] > 0
  with pytest.raises(ValueError, match='dtype must be one of'):
    measure_matmul_peak('float16')


def test_model_names_and_lengths():
  arch = Architecture()
  assert model_config('luna128_tied', arch)['projection_length'] == 128
  assert model_config('luna128_tied', arch)['tie_kv']
  assert model_config('transformer_fused', arch)['attention_implementation'] == 'fused'
  assert model_config('performer', arch)['attention_implementation'] == 'performer'
  assert not model_config('luna16_noncontextual', arch)['contextual_p']
  assert variants.label('luna16_noncontextual') == 'Luna-16 (non-contextual P)'
  with pytest.raises(ValueError, match='unknown model'):
    model_config('reformer', arch)
  assert speed_memory._parse_lengths('1K,2048, 4k') == [1024, 2048, 4096]


def test_remat_step_memory_and_compile_only(tmp_path, monkeypatch):
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
  tiny = TINY + [
    '--mode',
    'train_step',
    '--isolation',
    'none',
    '--long_lengths',
    '',
    '--lengths',
    '32',
  ]
  speed_memory.main(
    tiny + ['--models', 'luna16', '--remat', 'dots', '--output_dir', str(tmp_path / 'a')]
  )
  speed_memory.main(
    tiny
    + [
      '--models',
      'transformer',
      '--remat',
      'layer',
      '--compile_only',
      '--output_dir',
      str(tmp_path / 'b'),
    ]
  )
  timed, compiled = (
    json.loads((tmp_path / run / 'train_step' / 'results.json').read_text()) for run in ('a', 'b')
  )
  assert timed['settings']['arch']['remat'] == 'dots'
  assert compiled['settings']['arch']['remat'] == 'layer'
  cell = timed['cells'][0]
  assert cell['status'] == 'ok' and cell['step_rss_increase_bytes'] >= 0
  assert 'remat dots' in (tmp_path / 'a' / 'train_step' / 'table_absolute.md').read_text()
  cell = compiled['cells'][0]
  assert cell['status'] == 'skipped' and 'compile_only' in cell['reason']
  assert cell['compiled_peak_bytes'] > 0 and 'step_time_s' not in cell
  assert not (tmp_path / 'b' / 'train_step' / 'plot.png').exists()  # Nothing timed: no plot.


def test_wmt14_cost_counts_and_times_a_train_step(fast_compilation):
  """The WMT'14 cost estimate on the smoke-test model: a batch of max_tokens // L rows, XLA's FLOP
  count and a time, and the estimate updates x devices x FLOPs / throughput."""
  from benchmarks import wmt14_cost
  from configs import wmt14

  config = wmt14.get_config('luna16_softplus_tied,debug')
  config.data.options.max_tokens = 32
  (measured,) = wmt14_cost.measure(config, 50, [16], 1)
  assert (measured['rows'], measured['tokens']) == (2, 32)
  assert measured['flops'] > 0 and measured['seconds'] > 0
  assert wmt14_cost.device_hours(3.6e12, 100.0) == pytest.approx(500000 * 8 * 0.036 / 3600)


def test_step_cost_of_the_recipes_and_their_masked_lm_stage(tmp_path):
  """benchmarks.step_cost on debug-sized recipes (XLA analyses the compiled step; nothing runs)."""
  from benchmarks import step_cost

  small = ['--config.debug=True', '--config.data.options.max_length=64']
  mlm = step_cost.run_config_of('listops:luna16+mlm', small)
  assert mlm.model.name == 'luna_mlm' and mlm.self_pretraining.num_train_steps == 0
  step_cost.main(['--runs', 'listops:luna16,listops:luna16_pmean,listops:luna16+mlm',
                  '--output', str(tmp_path), '--', *small])  # fmt: skip
  results = json.loads((tmp_path / 'results.json').read_text())
  cls, pmean, masked = results['runs']
  assert results['overrides'] == small and cls['max_length'] == 64
  assert all(
    r['flops'] > 0 and r['bytes_accessed'] > 0 and r['temp_bytes'] > 0 for r in (cls, masked)
  )
  # One layer read through its P alone: the unpack and the FFN are dead code, dropped by XLA.
  assert pmean['flops'] < cls['flops']
  table = (tmp_path / 'table.md').read_text()
  assert '| listops:luna16 | 8 x 64 | 1 |' in table and '| 1.00 | 1.00 |' in table
  with pytest.raises(SystemExit):
    step_cost.main(['--runs', 'listops'])
  # Gradient accumulation: the same batch in less temporary memory (XLA counts a loop body once,
  # so no FLOPs are claimed for it).
  step_cost.main(['--runs', 'listops:transformer', '--micro_batches', '1,4',
                  '--output', str(tmp_path / 'micro'), '--', *small])  # fmt: skip
  whole, micro = json.loads((tmp_path / 'micro' / 'results.json').read_text())['runs']
  assert (whole['micro_batches'], micro['micro_batches']) == (1, 4)
  assert whole['flops'] > 0 and micro['flops'] is None and micro['bytes_accessed'] is None
  assert micro['temp_bytes'] < whole['temp_bytes']
  assert (
    '| listops:transformer | 8 x 64 | 4 | - | - |' in (tmp_path / 'micro' / 'table.md').read_text()
  )


def test_speed_memory_runs_the_lengths_asked_for_and_long_ones_only_by_default():
  default = speed_memory.parse_args([])
  assert default.lengths == ','.join(map(str, speed_memory.DEFAULT_LENGTHS))
  assert default.long_lengths == ','.join(map(str, speed_memory.DEFAULT_LONG_LENGTHS))
  asked = speed_memory.parse_args(['--lengths', '128'])
  assert (asked.lengths, asked.long_lengths) == ('128', '')
  both = speed_memory.parse_args(['--lengths', '128', '--long_lengths', '1K'])
  assert (both.lengths, both.long_lengths) == ('128', '1K')


def test_median_seconds_times_only_the_repeats_after_the_warmup(monkeypatch):
  """`median_seconds` is the median of the timed calls; the warmup calls are not timed."""
  from benchmarks import speed_memory_harness

  clock = [0.0]
  durations = iter([100.0, 100.0, 9.0, 1.0, 2.0, 50.0])  # Two warmup calls, then three timed.
  monkeypatch.setattr(speed_memory_harness.time, 'perf_counter', lambda: clock[0])

  def call():
    clock[0] += next(durations)

  assert speed_memory_harness.median_seconds(call, (), repeats=3, warmup=2) == 2.0


def test_compiled_memory_counts_a_donated_buffer_once():
  """The compiled peak is arguments + outputs - aliased + temporaries, or XLA's peak if larger."""
  from types import SimpleNamespace

  from benchmarks.speed_memory_harness import compiled_memory

  def analysed(peak):
    stats = SimpleNamespace(
      argument_size_in_bytes=100,
      output_size_in_bytes=40,
      alias_size_in_bytes=30,
      temp_size_in_bytes=7,
      peak_memory_in_bytes=peak,
    )
    return SimpleNamespace(memory_analysis=lambda: stats)

  assert compiled_memory(analysed(0)) == {
    'compiled_peak_bytes': 100 + 40 - 30 + 7,
    'temp_bytes': 7,
    'argument_bytes': 100,
    'output_bytes': 40,
  }
  assert compiled_memory(analysed(1000))['compiled_peak_bytes'] == 1000


def test_process_memory_figures_are_bytes():
  """Peak RSS and /proc/self/status's VmRSS are in bytes (the kernel reports KiB)."""
  from benchmarks import speed_memory_harness

  with open('/proc/self/statm') as f:
    rss = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  status_rss = speed_memory_harness._proc_status_bytes('VmRSS')
  assert rss / 2 < status_rss < 2 * rss
  assert speed_memory_harness._peak_rss_bytes() > rss / 2


def test_finish_record_rates_memory_and_the_peak_of_the_compute_dtype():
  """Rates divide by the median step time; MFU uses the peak of the matmul inputs' dtype; on a GPU
  the memory is the device's peak bytes."""
  from benchmarks.speed_memory_harness import finish_record, mfu_dtype, model_flops_per_step

  arch = vars(Architecture(num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64))
  spec = {'mode': 'attention', 'model': 'luna16', 'length': 64, 'batch_size': 4, 'arch': arch}
  record = {
    'status': 'ok',
    'step_time_s': 0.5,
    'flops_per_step': 1e9,
    'compiled_peak_bytes': 10,
    'device_peak_bytes': 20,
  }
  peaks = {'float32': {'flop_per_s': 1e12}, 'bfloat16': {'flop_per_s': 4e12}}
  out = finish_record(record, spec, peaks, 'gpu')
  assert out['steps_per_s'] == 2.0 and out['examples_per_s'] == 4 * 2.0
  assert out['tokens_per_s'] == 4 * 64 * 2.0
  assert out['matmul_peak_fraction'] == pytest.approx(2e9 / 1e12)
  assert out['mfu'] == pytest.approx(out['model_flops_per_step'] * 2.0 / 1e12)
  assert (out['memory_bytes'], out['memory_source']) == (20, 'device peak_bytes_in_use')
  assert finish_record(record, spec, peaks, 'cpu')['memory_bytes'] == 10
  for precision in ('bfloat16', 'bfloat16_all'):
    assert mfu_dtype(dict(arch, precision=precision)) == 'bfloat16'
    bf16 = finish_record(record, dict(spec, arch=dict(arch, precision=precision)), peaks, 'gpu')
    assert bf16['mfu'] == pytest.approx(out['mfu'] / 4)
  one = model_flops_per_step(dict(spec, batch_size=1))
  assert out['model_flops_per_step'] == 4 * one  # Per example, times the batch.


def test_run_cell_reports_the_median_of_the_timed_repeats_only(monkeypatch):
  """A cell times `repeats` steps after its warmup ones and reports their median."""
  import statistics

  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
  spec = {
    'mode': 'attention',
    'model': 'linformer',
    'length': 16,
    'batch_size': 1,
    'warmup': 2,
    'repeats': 3,
    'seed': 0,
    'memory_limit_bytes': None,
    'arch': vars(Architecture(num_layers=1, emb_dim=16, num_heads=2, mlp_dim=32)),
  }
  record = run_cell(spec)
  assert record['status'] == 'ok' and len(record['step_times_s']) == 3
  assert record['step_time_s'] == statistics.median(record['step_times_s'])


def test_matmul_peak_counts_two_flops_per_multiply_add():
  """The dense-matmul peak is 2 n^3 FLOPs over the median time."""
  peak = measure_matmul_peak('float32', size=32, repeats=1)
  assert peak['flop_per_s'] == pytest.approx(2 * 32**3 / peak['median_s'])


def test_run_benchmark_cells_after_an_oom_or_a_slow_step(monkeypatch):
  """A model OOM at one length is OOM at the longer ones without running; one slower than
  --max_step_s is only compiled at the longer ones; long lengths run for --long_models only; on
  CPU the memory limit is 75% of the RAM."""
  from benchmarks.speed_memory_harness import MATMUL_DTYPES as dtypes

  specs = []

  def fake_run_cell(spec):
    specs.append(spec)
    if spec['model'] == 'transformer':
      return {'status': 'OOM', 'reason': 'too big'}
    if spec.get('compile_only'):
      return {'status': 'skipped', 'reason': spec['compile_only'], 'compiled_peak_bytes': 1}
    return {
      'status': 'ok',
      'step_time_s': spec['length'] / 32,
      'flops_per_step': 1e6,
      'compiled_peak_bytes': 1,
    }

  monkeypatch.setattr(speed_memory, 'run_cell', fake_run_cell)
  peaks = {dtype: {'dtype': dtype, 'flop_per_s': 1e9} for dtype in dtypes}
  machine = {'backend': 'cpu', 'ram_bytes': 8 * 2**30}
  flags = ['--isolation', 'none', '--lengths', '32,64', '--long_lengths', '128']
  args = speed_memory.parse_args(
    flags + ['--models', 'transformer,luna16', '--long_models', 'luna16', '--max_step_s', '1.5']
  )
  results = speed_memory.run_benchmark('attention', args, machine, peaks, log=lambda _: None)
  ran = [(s['model'], s['length'], 'compile_only' in s) for s in specs]
  assert ran == [('transformer', 32, False), ('luna16', 32, False), ('luna16', 64, False),
                 ('luna16', 128, True)]  # fmt: skip
  assert [(c['model'], c['length'], c['status']) for c in results['cells']] == [
    ('transformer', 32, 'OOM'),
    ('transformer', 64, 'OOM'),
    ('luna16', 32, 'ok'),
    ('luna16', 64, 'ok'),
    ('luna16', 128, 'skipped'),
  ]
  assert {s['memory_limit_bytes'] for s in specs} == {int(0.75 * 8 * 2**30)}
  assert results['settings']['lengths'] == [32, 64, 128]
  assert results['matmul_peak'] == peaks['float32']
  specs.clear()
  args = speed_memory.parse_args(flags + ['--models', 'luna16'])  # Every model runs long.
  speed_memory.run_benchmark('attention', args, machine, peaks, log=lambda _: None)
  assert [s['length'] for s in specs] == [32, 64, 128]


@pytest.mark.parametrize('mode', ['train_step', 'attention'])
def test_speed_memory_refuses_an_attention_it_cannot_count_before_timing_anything(
  monkeypatch, capsys, mode
):
  """A variant whose attention `model_flops` has no formula for (one a user registered) is refused
  with the flags, before the matmul peak and the first cell: without it every cell's MFU failed
  after the timing, and nothing was written."""
  from configs import variants
  from luna_jax.model import registry

  softmax = registry.TRANSFORMER_ATTENTIONS['softmax']
  monkeypatch.setitem(registry.TRANSFORMER_ATTENTIONS, 'mine', softmax)
  monkeypatch.setitem(variants.VARIANTS, 'mine_transformer', variants._transformer('Mine', 'mine'))
  timed = []
  monkeypatch.setattr(speed_memory, 'measure_matmul_peak', lambda *a, **k: timed.append(a))
  monkeypatch.setattr(speed_memory, 'run_cell', timed.append)
  flags = ['--mode', mode, '--isolation', 'none', '--lengths', '32', '--long_lengths=']
  for models in (['--models', 'luna16,mine_transformer'], ['--long_models', 'mine_transformer']):
    with pytest.raises(SystemExit):
      speed_memory.main(flags + models)
    assert "'mine': add its FLOPs to benchmarks/model_flops.py" in capsys.readouterr().err
  assert timed == []


def test_step_cost_table_gives_ratios_to_the_first_run():
  """step_cost's table: TFLOP, GB, temporary GiB and each run's ratios to the first run."""
  from benchmarks import step_cost

  row = {'run': 'a', 'batch_size': 2, 'max_length': 8, 'micro_batches': 1}
  first = dict(row, flops=1e12, bytes_accessed=2e9, temp_bytes=2**30, argument_bytes=0)
  second = dict(first, run='b', flops=4e12, bytes_accessed=1e9, temp_bytes=3 * 2**30)
  lines = step_cost.table([first, second]).splitlines()
  assert lines[-1] == '| b | 2 x 8 | 1 | 4.000 | 1.0 | 3.00 | 4.00 | 0.50 |'


def test_describe_machine_gives_the_ram_in_bytes():
  """The machine's RAM is in bytes (/proc/meminfo reports KiB)."""
  from benchmarks.speed_memory_harness import describe_machine

  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert ram / 2 < describe_machine()['ram_bytes'] < 2 * ram
