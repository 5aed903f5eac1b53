r"""Speed and memory benchmark of Luna against softmax attention (the paper's Table 2, on any
machine).

Two modes, each writing `results.json`, `table_relative.md`, `table_absolute.md` and `plot.png`
under `<output_dir>/<mode>/`:

  train_step  one full training step of the LRA Text classifier (forward, backward, optimizer
              update), through `luna_jax.train_lib.train_step` (jitted, state donated);
  attention   the attention module alone (input projections, attention, output projection; no FFN,
              no LayerNorm, no optimizer): forward and backward with respect to its parameters and
              inputs, no dropout.

Every (model, length) cell runs in a fresh subprocess (so the process's peak RSS and the device's
peak bytes belong to that cell), is compiled ahead of time (`jax.jit(...).lower(...).compile()`,
compile time reported separately), warmed up, and then timed `--repeats` times with
`jax.block_until_ready`; the median is reported. FLOPs per step come from XLA's cost analysis of the
compiled program. Peak memory is the device's `peak_bytes_in_use` on GPU/TPU and the compiled
program's `memory_analysis()` peak on CPU (the process's peak RSS is reported beside it). A cell
whose compiled peak exceeds `--memory_limit_gb`, or that fails with RESOURCE_EXHAUSTED, or whose
process is killed, is reported as OOM; once a model is OOM at one length, its longer lengths are
reported OOM without running. The machine's dense-matmul peak FLOP/s is measured in the same run, so
achieved FLOP/s can be given as a fraction of it. With `--profile`, each cell runs one more step
under `jax.profiler.trace` (a Perfetto/TensorBoard trace under `<output_dir>/<mode>/traces/`) and
`profile.md` gives the milliseconds per step of each XLA op class (the op name without its numeric
suffix, e.g. `ynn_fusion` for a fused matmul on CPU) across the cells.

Example (the committed CPU run, see README "Benchmarks"):

  python -m benchmarks.speed_memory --mode train_step,attention --batch_size 1 --warmup 1 \
      --repeats 3 --long_lengths 8K,16K --long_models transformer,luna16 --max_step_s 20 \
      --output_dir benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import glob
import gzip
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from configs import variants

MODES = ('train_step', 'attention')
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
#: The model every ratio is taken against, and the fast softmax baseline.
BASELINE = 'transformer'
FUSED_BASELINE = 'transformer_fused'
_RESULT_PREFIX = 'BENCHMARK_CELL_RESULT '
_OOM_MARKERS = ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory', 'OOM')


# ----------------------------------------------------------------------------------------------
# Models.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The LRA Text architecture shared by every model (Tay et al., 2021; Luna Table 2).

  Attributes:
    num_layers: encoder layers.
    emb_dim: model width d.
    num_heads: attention heads.
    mlp_dim: FFN hidden size.
    activation: FFN activation, the same for every model so the FFN cost is identical.
    pooling: 'mean' for every model: no CLS token, so the sequence length is exactly the input
      length.
    dropout_rate: embedding/residual dropout.
    attention_dropout_rate: attention-probability dropout (the fused attention has none).
    dtype: computation dtype.
    remat: per-layer rematerialisation of the training step (`config.model.remat`): 'none', 'layer'
      or 'dots'.
  """

  num_layers: int = 4
  emb_dim: int = 256
  num_heads: int = 4
  mlp_dim: int = 1024
  activation: str = 'gelu'
  pooling: str = 'mean'
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  dtype: str = 'float32'
  remat: str = 'none'


def model_config(name: str, arch: Architecture) -> dict[str, Any]:
  """The `config.model` mapping of a benchmark model.

  Args:
    name: a variant of configs/variants.py: 'transformer' (einsum softmax attention),
      'transformer_fused' (`jax.nn.dot_product_attention`), the baselines 'linformer',
      'linear_transformer', 'performer' (`luna_jax.baselines`, LRA defaults r = 16 and 256
      features), 'luna<l>' (Luna with projection length l, e.g. 'luna16'), 'luna<l>_tied' (tied
      K/V) or 'luna<l>_noncontextual' (a learned P per layer).
    arch: the shared architecture.

  Returns:
    A mapping for `luna_jax.build_model`.

  Raises:
    ValueError: an unknown model name, listing the known ones.
  """
  cfg = dict(
    num_layers=arch.num_layers,
    emb_dim=arch.emb_dim,
    num_heads=arch.num_heads,
    mlp_dim=arch.mlp_dim,
    activation=arch.activation,
    pooling=arch.pooling,
    dropout_rate=arch.dropout_rate,
    attention_dropout_rate=arch.attention_dropout_rate,
    dtype=arch.dtype,
    positional='learned',
    remat=arch.remat,
  )
  return dict(cfg, **variants.get(name).model)


def _example_batch(batch_size: int, length: int, seed: int):
  """A synthetic byte-level Text batch: ids in [1, 256], full lengths, binary targets."""
  import numpy as np

  rng = np.random.default_rng(seed)
  return {
    'inputs': rng.integers(1, 257, size=(batch_size, length), dtype=np.int32),
    'lengths': np.full((batch_size,), length, np.int32),
    'targets': rng.integers(0, 2, size=(batch_size,), dtype=np.int32),
  }


def make_train_step(model, batch, seed: int):
  """The training state and the trainer's step function for one model.

  Args:
    model: an uninitialised `luna_jax.SequenceClassifier`.
    batch: an example batch (`inputs`, `lengths`, `targets`).
    seed: initialisation seed.

  Returns:
    `(state, step)` with `step(state, batch) -> (state, metrics)` (not jitted).
  """
  import jax

  from luna_jax import optim, train_lib

  optimizer = optim.make_optimizer(optim.OptimizerConfig(**_optimizer_config()))
  state = train_lib.create_train_state(jax.random.PRNGKey(seed), model, optimizer, batch)
  return state, functools.partial(train_lib.train_step, model=model, optimizer=optimizer)


def _optimizer_config() -> dict[str, Any]:
  """The official LRA Text optimizer (AdamW, warm-up then rsqrt decay); the step cost does not
  depend on it."""
  return dict(
    learning_rate=0.05,
    schedule='constant * linear_warmup * rsqrt_decay',
    warmup_steps=8000,
    steps_per_cycle=100000,
    weight_decay=0.1,
    b1=0.9,
    b2=0.98,
    eps=1e-9,
    grad_clip_norm=None,
  )


def make_attention_step(name: str, arch: Architecture, batch_size: int, length: int, seed: int):
  """The attention module alone: forward and backward w.r.t. its parameters and inputs.

  Transformer: `luna_jax.layers.SelfAttention` (q/k/v/out projections + softmax or fused attention),
  or its Linformer / linear / Performer subclass (`luna_jax.baselines`).
  Luna: `luna_jax.layers.LunaAttention` (pack and unpack with their projections) on x and a `[l, d]`
  P. All keys valid (full-length masks), no dropout.

  Returns:
    `(args, step)` with `step(*args) -> gradients` (not jitted).
  """
  import jax
  import jax.numpy as jnp

  from luna_jax import attention_registry, layers

  cfg = model_config(name, arch)
  dtype = jnp.dtype(arch.dtype)
  d, h = arch.emb_dim, arch.num_heads
  k_params, k_x, k_p = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(k_x, (batch_size, length, d), dtype)
  mask = jnp.ones((batch_size, length), bool)
  if cfg['name'] == 'transformer':
    module = attention_registry.self_attention_module(
      cfg['attention_implementation'], max_length=length
    )(num_heads=h, qkv_dim=d, dtype=dtype)
    inputs = (x,)
    call_args = lambda inputs: (inputs[0], mask)
  else:
    l = cfg['projection_length']
    module = layers.LunaAttention(features=d, num_heads=h, tie_kv=cfg['tie_kv'], dtype=dtype)
    inputs = (x, jax.random.normal(k_p, (batch_size, l, d), dtype))
    p_mask = jnp.ones((batch_size, l), bool)
    call_args = lambda inputs: (inputs[0], inputs[1], inputs[0], mask, p_mask)
  params = jax.jit(lambda k: module.init(k, *call_args(inputs)))(k_params)['params']

  def loss(params, inputs):
    out = module.apply({'params': params}, *call_args(inputs))
    leaves = out if isinstance(out, tuple) else (out,)
    return sum(jnp.mean(jnp.square(y.astype(jnp.float32))) for y in leaves)

  return (params, inputs), jax.grad(loss, argnums=(0, 1))


# ----------------------------------------------------------------------------------------------
# One cell (runs in its own process).
# ----------------------------------------------------------------------------------------------


def _first(analysis):
  """`cost_analysis()` is a dict in recent JAX and a one-element list in older releases."""
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis or {}


def compiled_memory(compiled) -> dict[str, int | None]:
  """The compiled program's memory analysis (bytes)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {
      'compiled_peak_bytes': None,
      'temp_bytes': None,
      'argument_bytes': None,
      'output_bytes': None,
    }
  fields = {
    k: int(getattr(stats, f'{k}_size_in_bytes', 0) or 0)
    for k in ('argument', 'output', 'alias', 'temp')
  }
  # On CPU `peak_memory_in_bytes` leaves the temporaries out, so the peak is taken as live
  # arguments, outputs and temporaries; a donated (aliased) buffer counts once.
  peak = fields['argument'] + fields['output'] - fields['alias'] + fields['temp']
  peak = max(peak, int(getattr(stats, 'peak_memory_in_bytes', 0) or 0))
  return {
    'compiled_peak_bytes': peak,
    'temp_bytes': fields['temp'],
    'argument_bytes': fields['argument'],
    'output_bytes': fields['output'],
  }


def _peak_rss_bytes() -> int:
  """The process's peak resident set size so far (Linux reports KiB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _proc_status_bytes(field: str) -> int | None:
  """A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in bytes, or None off Linux."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def _reset_peak_rss() -> bool:
  """Resets the peak RSS (VmHWM) to the current RSS (Linux `clear_refs`); False if unsupported."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _is_oom(error: BaseException) -> bool:
  return any(marker in str(error) for marker in _OOM_MARKERS)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
  """Compiles, warms up and times one (mode, model, length) cell in this process.

  Args:
    spec: `mode`, `model`, `length`, `batch_size`, `warmup`, `repeats`, `seed`, `memory_limit_bytes`
      (None: no guard), `arch` (an `Architecture` as a dict) and optionally `compile_only` (a
      reason: compile and check the memory guard, but do not time).

  Returns:
    A result record (see `_finish_record`); `status` is 'ok', 'OOM' or 'skipped'.

  Raises:
    ValueError: an unknown mode or model.
  """
  import jax

  import luna_jax

  arch = Architecture(**spec['arch'])
  mode, name, length, batch_size = spec['mode'], spec['model'], spec['length'], spec['batch_size']
  record = {'status': 'ok', 'load_average_1m_before': os.getloadavg()[0]}
  baseline_rss = _peak_rss_bytes()
  try:
    if mode == 'train_step':
      model = luna_jax.build_model(
        model_config(name, arch), vocab_size=257, num_classes=2, max_length=length
      )
      batch = jax.device_put(_example_batch(batch_size, length, spec['seed']))
      state, step = make_train_step(model, batch, spec['seed'])
      args, carries_state = (state, batch), True
      jitted = jax.jit(step, donate_argnums=0)
    elif mode == 'attention':
      args, step = make_attention_step(name, arch, batch_size, length, spec['seed'])
      carries_state = False
      jitted = jax.jit(step)
    else:
      raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
    jax.block_until_ready(args)

    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    record['compile_s'] = time.perf_counter() - start
    record['flops_per_step'] = float(_first(compiled.cost_analysis()).get('flops', float('nan')))
    record.update(compiled_memory(compiled))
    limit = spec.get('memory_limit_bytes')
    if limit and record['compiled_peak_bytes'] and record['compiled_peak_bytes'] > limit:
      record.update(
        status='OOM',
        reason=(
          f'compiled peak {record["compiled_peak_bytes"] / 2**30:.1f} '
          f'GiB > memory limit {limit / 2**30:.1f} GiB (not run)'
        ),
      )
      return record
    if spec.get('compile_only'):
      record.update(status='skipped', reason=spec['compile_only'])
      return record

    def run_once(args):
      out = compiled(*args)
      jax.block_until_ready(out)
      return (out[0], *args[1:]) if carries_state else args

    # The step's own memory, like the PyTorch anchor's dRSS: peak RSS minus the RSS before the first
    # step (after compiling, with the state and batch in place).
    step_rss_base = _proc_status_bytes('VmRSS') if _reset_peak_rss() else None
    for _ in range(spec['warmup']):
      args = run_once(args)
    times = []
    for _ in range(spec['repeats']):
      start = time.perf_counter()
      args = run_once(args)
      times.append(time.perf_counter() - start)
    if spec.get('trace_dir'):
      with jax.profiler.trace(spec['trace_dir'], create_perfetto_trace=True):
        run_once(args)
      record['op_class_ms'] = op_class_times(spec['trace_dir'])
  except Exception as error:  # pylint: disable=broad-except
    if not _is_oom(error):
      raise
    record.update(
      status='OOM', reason=f'{type(error).__name__}: {str(error).splitlines()[0][:200]}'
    )
    return record

  record['step_times_s'] = times
  record['step_time_s'] = statistics.median(times)
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  record['device_peak_bytes'] = int(stats['peak_bytes_in_use']) if stats else None
  record['peak_rss_bytes'] = _peak_rss_bytes()
  record['baseline_rss_bytes'] = baseline_rss
  peak_now = _proc_status_bytes('VmHWM')
  record['step_rss_increase_bytes'] = (
    None if step_rss_base is None or peak_now is None else peak_now - step_rss_base
  )
  record['load_average_1m_after'] = os.getloadavg()[0]
  return record


def op_class_times(trace_dir: str) -> dict[str, float]:
  """Milliseconds per XLA op class in the newest Perfetto trace under `trace_dir`, largest first.

  An op class is an HLO op name without its numeric suffix (`ynn_fusion.169` -> `ynn_fusion`); only
  the events that carry an `hlo_op` argument (the executed XLA ops) count. On CPU the ops of one
  step can run on two threads at once, so the sum can exceed the step's wall time slightly.

  Raises:
    FileNotFoundError: no Perfetto trace under `trace_dir`.
  """
  paths = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not paths:
    raise FileNotFoundError(
      f'no *.trace.json.gz under {trace_dir} (jax.profiler wrote no Perfetto trace)'
    )
  with gzip.open(max(paths, key=os.path.getmtime), 'rt') as f:
    trace = json.load(f)
  totals = collections.Counter()
  for event in trace['traceEvents'] if isinstance(trace, dict) else trace:
    if event.get('ph') == 'X' and 'hlo_op' in event.get('args', {}):
      totals[re.sub(r'\.\d+$', '', event['name'])] += event['dur'] / 1e3
  return dict(totals.most_common())


def profile_table(cells, top: int = 12) -> str:
  """Milliseconds per step of the `top` op classes (by their largest cell) across the profiled
  cells."""
  profiled = [c for c in cells if c.get('op_class_ms')]
  largest = collections.Counter()
  for c in profiled:
    for name, ms in c['op_class_ms'].items():
      largest[name] = max(largest[name], ms)
  names = [name for name, _ in largest.most_common(top)]
  lines = [
    '| op class | '
    + ' | '.join(f'{c["label"]} {length_label(c["length"])}' for c in profiled)
    + ' |',
    '|---|' + '---:|' * len(profiled),
  ]
  for name in names:
    lines.append(
      f'| `{name}` | '
      + ' | '.join(f'{c["op_class_ms"].get(name, 0.0):.1f}' for c in profiled)
      + ' |'
    )
  lines.append(
    '| all ops | ' + ' | '.join(f'{sum(c["op_class_ms"].values()):.1f}' for c in profiled) + ' |'
  )
  lines.append(
    '| step (timed median) | '
    + ' | '.join(f'{1e3 * c["step_time_s"]:.1f}' for c in profiled)
    + ' |'
  )
  return '\n'.join(lines)


def _cell_main(spec_json: str) -> None:
  """Child-process entry point: runs one cell and prints its record on one tagged line."""
  from luna_jax import xla_settings

  spec = json.loads(spec_json)
  # Before JAX initialises a backend (the parent's environment is inherited).
  xla_settings.apply(remat=spec['arch']['remat'])
  record = run_cell(spec)
  print(_RESULT_PREFIX + json.dumps(record), flush=True)


def run_cell_subprocess(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
  """Runs `run_cell` in a fresh Python process; a killed process is reported as OOM."""
  command = [sys.executable, '-m', 'benchmarks.speed_memory', '--cell', json.dumps(spec)]
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=repo_root)
  except subprocess.TimeoutExpired:
    return {'status': 'timeout', 'reason': f'cell exceeded {timeout_s:.0f} s'}
  for line in proc.stdout.splitlines():
    if line.startswith(_RESULT_PREFIX):
      return json.loads(line[len(_RESULT_PREFIX) :])
  if proc.returncode < 0 or proc.returncode == 137 or _is_oom(proc.stderr):
    return {
      'status': 'OOM',
      'reason': f'process ended with code {proc.returncode} (killed: out of memory)',
    }
  tail = '\n'.join(proc.stderr.strip().splitlines()[-5:])
  return {'status': 'error', 'reason': f'exit code {proc.returncode}: {tail}'}


def _finish_record(
  record: dict[str, Any], spec: dict[str, Any], matmul_peak: float, backend: str
) -> dict[str, Any]:
  """Adds the identity of the cell and the derived figures (rates, primary memory, peak
  fraction)."""
  out = {
    'mode': spec['mode'],
    'model': spec['model'],
    'label': variants.label(spec['model']),
    'length': spec['length'],
    'batch_size': spec['batch_size'],
    **record,
  }
  if out['status'] != 'ok':
    return out
  t = out['step_time_s']
  out['steps_per_s'] = 1.0 / t
  out['examples_per_s'] = spec['batch_size'] / t
  out['tokens_per_s'] = spec['batch_size'] * spec['length'] / t
  out['flop_per_s'] = out['flops_per_step'] / t
  out['matmul_peak_fraction'] = out['flop_per_s'] / matmul_peak
  if backend == 'cpu' or out.get('device_peak_bytes') is None:
    out['memory_bytes'], out['memory_source'] = (
      out['compiled_peak_bytes'],
      'compiled memory_analysis',
    )
  else:
    out['memory_bytes'], out['memory_source'] = out['device_peak_bytes'], 'device peak_bytes_in_use'
  return out


# ----------------------------------------------------------------------------------------------
# Machine.
# ----------------------------------------------------------------------------------------------


def measure_matmul_peak(size: int, repeats: int) -> dict[str, float]:
  """The machine's dense-matmul FLOP/s: median time of a jitted `[size, size] @ [size, size]`.

  Uses the benchmark dtype float32 (on GPU with TF32 allowed by XLA's default precision).
  """
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  for _ in range(2):
    jax.block_until_ready(matmul(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  flops = 2.0 * size**3
  return {
    'size': size,
    'dtype': 'float32',
    'median_s': statistics.median(times),
    'flop_per_s': flops / statistics.median(times),
  }


def describe_machine() -> dict[str, Any]:
  """CPU model, cores, RAM, accelerator and software versions."""
  import flax
  import jax
  import jaxlib

  cpu_model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu_model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  ram_bytes = None
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          ram_bytes = int(line.split()[1]) * 1024
          break
  except OSError:
    pass
  devices = jax.devices()
  return {
    'cpu_model': cpu_model,
    'cpu_cores': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'ram_bytes': ram_bytes,
    'backend': jax.default_backend(),
    'devices': [f'{d.platform}:{d.device_kind}' for d in devices],
    'device_count': len(devices),
    'python': platform.python_version(),
    'jax': jax.__version__,
    'jaxlib': jaxlib.__version__,
    'flax': flax.__version__,
    'platform': platform.platform(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


# ----------------------------------------------------------------------------------------------
# Reports.
# ----------------------------------------------------------------------------------------------


def length_label(n: int) -> str:
  return f'{n // 1024}K' if n % 1024 == 0 else str(n)


def _gib(x: float | None) -> str:
  return '-' if x is None else f'{x / 2**30:.2f}'


def _cell(cells, model, length):
  for c in cells:
    if c['model'] == model and c['length'] == length:
      return c
  return None


def _ratio_text(cell, base, key: str, digits: int) -> str:
  if cell is None:
    return '-'
  if cell['status'] != 'ok':
    return cell['status']
  if base is None or base['status'] != 'ok':
    return 'n/a'
  return f'{cell[key] / base[key]:.{digits}f}'


def relative_table(cells, models: Sequence[str], lengths: Sequence[int], baseline: str) -> str:
  """Paper Table 2 layout: steps/s and peak memory of each model relative to `baseline`."""
  heads = [length_label(n) for n in lengths]
  lines = [
    '| Model | '
    + ' | '.join(f'steps/s {h}' for h in heads)
    + ' | '
    + ' | '.join(f'memory {h}' for h in heads)
    + ' |',
    '|---|' + '---:|' * (2 * len(lengths)),
  ]
  for model in models:
    speed = [
      _ratio_text(_cell(cells, model, n), _cell(cells, baseline, n), 'steps_per_s', 2)
      for n in lengths
    ]
    memory = [
      _ratio_text(_cell(cells, model, n), _cell(cells, baseline, n), 'memory_bytes', 2)
      for n in lengths
    ]
    lines.append(
      f'| {variants.label(model)} | ' + ' | '.join(speed) + ' | ' + ' | '.join(memory) + ' |'
    )
  return '\n'.join(lines)


def absolute_table(cells) -> str:
  """Every cell's absolute figures."""
  lines = [
    '| Model | Length | Status | steps/s | examples/s | step (ms) | compile (s) | '
    'peak memory (GiB) | peak RSS (GiB) | step RSS increase (GiB) | GFLOP/step | GFLOP/s | '
    '% matmul peak | note |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for c in cells:
    head = f'| {c["label"]} | {length_label(c["length"])} | {c["status"]} |'
    if c['status'] != 'ok':
      compiled = c.get('compiled_peak_bytes')
      memory = '-' if compiled is None else f'{_gib(compiled)} (compiled)'
      compile_s = f'{c["compile_s"]:.1f}' if 'compile_s' in c else '-'
      lines.append(
        head + f' - | - | - | {compile_s} | {memory} | - | - | - | - | - | {c.get("reason", "")} |'
      )
      continue
    lines.append(
      head
      + f' {c["steps_per_s"]:.3g} | {c["examples_per_s"]:.3g} | {1e3 * c["step_time_s"]:.0f} | '
      f'{c["compile_s"]:.1f} | {_gib(c["memory_bytes"])} | {_gib(c["peak_rss_bytes"])} | '
      f'{_gib(c.get("step_rss_increase_bytes"))} | {c["flops_per_step"] / 1e9:.1f} | '
      f'{c["flop_per_s"] / 1e9:.1f} | '
      f'{100 * c["matmul_peak_fraction"]:.0f} | load {c["load_average_1m_before"]:.1f} |'
    )
  return '\n'.join(lines)


def targets_summary(cells) -> list[str]:
  """The issue's targets, as measured: Luna-16 vs the softmax Transformer at 4K, and 4K -> 16K
  growth."""
  lines = []
  luna, base, fused = (_cell(cells, m, 4096) for m in ('luna16', BASELINE, FUSED_BASELINE))
  ok = lambda c: c is not None and c['status'] == 'ok'
  if ok(luna) and ok(base):
    speed = luna['steps_per_s'] / base['steps_per_s']
    memory = luna['memory_bytes'] / base['memory_bytes']
    lines.append(
      f'- Luna-16 vs Transformer at 4K: {speed:.2f}x steps/s (target >= 5.5x: '
      f'{"met" if speed >= 5.5 else "missed"}), {memory:.3f}x peak memory (target <= 0.10x: '
      f'{"met" if memory <= 0.10 else "missed"}).'
    )
  if ok(luna) and ok(fused):
    lines.append(
      f'- Luna-16 vs Transformer (fused) at 4K: '
      f'{luna["steps_per_s"] / fused["steps_per_s"]:.2f}x steps/s, '
      f'{luna["memory_bytes"] / fused["memory_bytes"]:.3f}x peak memory.'
    )
  long = _cell(cells, 'luna16', 16384)
  if ok(luna) and ok(long):
    time_growth = long['step_time_s'] / luna['step_time_s']
    memory_growth = long['memory_bytes'] / luna['memory_bytes']
    verdict = 'met' if max(time_growth, memory_growth) <= 4.4 else 'missed'
    lines.append(
      f'- Luna-16 from 4K to 16K: {time_growth:.2f}x step time, {memory_growth:.2f}x peak '
      f'memory (target <= 4.4x each: {verdict}).'
    )
  return lines


def machine_lines(results) -> list[str]:
  m = results['machine']
  peak = results['matmul_peak']
  ram = f'{m["ram_bytes"] / 2**30:.0f} GiB RAM' if m['ram_bytes'] else 'RAM unknown'
  return [
    f'Machine: {m["cpu_model"]}, {m["cpu_cores"]} cores, {ram}; backend `{m["backend"]}` '
    f'({", ".join(sorted(set(m["devices"])))}); jax {m["jax"]}, jaxlib {m["jaxlib"]}, '
    f'flax {m["flax"]}, Python {m["python"]}.',
    f'Dense-matmul peak (float32 {peak["size"]}x{peak["size"]}, same run): '
    f'{peak["flop_per_s"] / 1e9:.1f} GFLOP/s.',
  ]


def settings_line(results) -> str:
  s = results['settings']
  a = s['arch']
  return (
    f'Mode `{s["mode"]}`, batch size {s["batch_size"]}, {s["warmup"]} warm-up + median of '
    f'{s["repeats"]} timed runs; {a["num_layers"]} layers, d {a["emb_dim"]}, FFN {a["mlp_dim"]}, '
    f'{a["num_heads"]} heads, {a["dtype"]}, dropout {a["dropout_rate"]}, attention dropout '
    f'{a["attention_dropout_rate"]} (none in the fused attention), {a["pooling"]} pooling, '
    f'remat {a.get("remat", "none")}; '
    f'XLA_FLAGS `{results["machine"].get("xla_flags") or "(none)"}`. '
    f'Peak memory: {results["memory_source"]}. FLOPs: XLA cost analysis of the compiled step.'
  )


def write_reports(results: dict[str, Any], output_dir: str) -> None:
  """Writes results.json, table_relative.md, table_absolute.md, plot.png (when a cell was timed)
  and, if profiled, profile.md."""
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)
  cells, models, lengths = (
    results['cells'],
    results['settings']['models'],
    results['settings']['lengths'],
  )
  header = machine_lines(results) + ['', settings_line(results), '']
  relative = [f'# Relative to the softmax Transformer ({results["settings"]["mode"]})', ''] + header
  relative += [
    'Steps/s and peak memory relative to the plain (einsum) softmax Transformer, Table 2 layout '
    '(> 1 is faster for steps/s, < 1 is smaller for memory; OOM = out of memory):',
    '',
    relative_table(cells, models, lengths, BASELINE),
    '',
  ]
  if FUSED_BASELINE in models:
    relative += [
      'Relative to the fused softmax Transformer (`jax.nn.dot_product_attention`):',
      '',
      relative_table(cells, models, lengths, FUSED_BASELINE),
      '',
    ]
  targets = targets_summary(cells) if results['settings']['mode'] == 'train_step' else []
  if targets:
    relative += ['Targets:', ''] + targets + ['']
  with open(os.path.join(output_dir, 'table_relative.md'), 'w') as f:
    f.write('\n'.join(relative))
  absolute = (
    [f'# Absolute figures ({results["settings"]["mode"]})', '']
    + header
    + [absolute_table(cells), '']
  )
  with open(os.path.join(output_dir, 'table_absolute.md'), 'w') as f:
    f.write('\n'.join(absolute))
  if any(c['status'] == 'ok' for c in cells):  # Nothing to plot when every cell is compiled only.
    plot(results, os.path.join(output_dir, 'plot.png'))
  if any(c.get('op_class_ms') for c in cells):
    with open(os.path.join(output_dir, 'profile.md'), 'w') as f:
      f.write(
        '\n'.join(
          [f'# Time per XLA op class ({results["settings"]["mode"]})', '']
          + header
          + [
            'Milliseconds per step of each op class, from one profiled step after the timed runs '
            '(`jax.profiler.trace`; traces under `traces/`):',
            '',
            profile_table(cells),
            '',
          ]
        )
      )


def plot(results: dict[str, Any], path: str) -> None:
  """Steps/s and peak memory against length (log-log); OOM cells are marked on the top/bottom
  edge."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  cells, models = results['cells'], results['settings']['models']
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  panels = (
    (
      'steps_per_s',
      'training steps / s'
      if results['settings']['mode'] == 'train_step'
      else 'attention fwd+bwd / s',
    ),
    ('memory_bytes', 'peak memory (GiB)'),
  )
  for ax, (key, ylabel) in zip(axes, panels):
    for i, model in enumerate(models):
      ok = [c for c in cells if c['model'] == model and c['status'] == 'ok']
      bad = [c for c in cells if c['model'] == model and c['status'] == 'OOM']
      scale = 2**-30 if key == 'memory_bytes' else 1.0
      (line,) = ax.plot(
        [c['length'] for c in ok],
        [c[key] * scale for c in ok],
        marker='o',
        label=variants.label(model),
        color=f'C{i}',
      )
      if bad and ok:
        ax.plot(
          [c['length'] for c in bad],
          [ok[-1][key] * scale] * len(bad),
          marker='x',
          ls='none',
          color=line.get_color(),
          markersize=9,
        )
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    lengths = results['settings']['lengths']
    ax.set_xticks(lengths, [length_label(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel('sequence length')
    ax.set_ylabel(ylabel)
    ax.grid(True, which='major', alpha=0.3)
  axes[0].legend(fontsize=8)
  m = results['machine']
  fig.suptitle(
    f'{results["settings"]["mode"]}: batch {results["settings"]["batch_size"]}, '
    f'{m["backend"]} ({m["cpu_model"] if m["backend"] == "cpu" else m["devices"][0]}); '
    'x = OOM (drawn at the last measured value)',
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------------------------


def _parse_lengths(text: str) -> list[int]:
  out = []
  for item in text.split(','):
    item = item.strip().upper()
    out.append(int(item[:-1]) * 1024 if item.endswith('K') else int(item))
  return out


def run_benchmark(
  mode: str,
  args: argparse.Namespace,
  machine: dict[str, Any],
  matmul_peak: dict[str, float],
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs every (model, length) cell of one mode and returns the results document."""
  arch = Architecture(
    num_layers=args.num_layers,
    emb_dim=args.emb_dim,
    num_heads=args.num_heads,
    mlp_dim=args.mlp_dim,
    activation=args.activation,
    dropout_rate=args.dropout_rate,
    attention_dropout_rate=args.attention_dropout_rate,
    dtype=args.dtype,
    remat=args.remat,
  )
  models, lengths = args.models.split(','), _parse_lengths(args.lengths)
  long_lengths = _parse_lengths(args.long_lengths) if args.long_lengths else []
  long_models = args.long_models.split(',') if args.long_models else models
  for model in models:
    model_config(model, arch)  # Fail fast on an unknown name.
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
      cell = _finish_record(record, spec, matmul_peak['flop_per_s'], machine['backend'])
      cells.append(cell)
      summary = (
        f'{cell["steps_per_s"]:.3g} steps/s, {_gib(cell["memory_bytes"])} GiB'
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
    'trainer': 'luna_jax.train_lib.train_step' if mode == 'train_step' else None,
  }
  return {
    'machine': machine,
    'matmul_peak': matmul_peak,
    'settings': settings,
    'memory_source': memory_source,
    'flops_source': 'XLA cost_analysis() of the compiled step',
    'cells': cells,
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    default=','.join(str(n) for n in DEFAULT_LENGTHS),
    help='comma-separated sequence lengths (1024 or 1K).',
  )
  parser.add_argument(
    '--long_lengths',
    default=','.join(str(n) for n in DEFAULT_LONG_LENGTHS),
    help='further lengths run only for --long_models (e.g. 8K,16K).',
  )
  parser.add_argument(
    '--long_models', default='', help='models that also run at --long_lengths (default: all).'
  )
  parser.add_argument(
    '--max_step_s',
    type=float,
    default=None,
    help="once a model's step takes longer than this, its longer lengths are only "
    'compiled (memory guard: OOM or skipped), not timed.',
  )
  parser.add_argument('--batch_size', type=int, default=2)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--output_dir', default='benchmarks/results/local')
  parser.add_argument(
    '--memory_limit_gb',
    type=float,
    default=None,
    help='report a cell as OOM without running it when its compiled peak is above '
    'this (default on CPU: 75%% of RAM; none on GPU/TPU).',
  )
  parser.add_argument('--cell_timeout_s', type=float, default=1800.0)
  parser.add_argument(
    '--isolation',
    choices=('subprocess', 'none'),
    default='subprocess',
    help='run each cell in a fresh process (per-cell RSS/peak bytes) or in this one.',
  )
  parser.add_argument('--matmul_size', type=int, default=4096)
  parser.add_argument('--num_layers', type=int, default=4)
  parser.add_argument('--emb_dim', type=int, default=256)
  parser.add_argument('--num_heads', type=int, default=4)
  parser.add_argument('--mlp_dim', type=int, default=1024)
  parser.add_argument('--activation', default='gelu')
  parser.add_argument('--dropout_rate', type=float, default=0.1)
  parser.add_argument('--attention_dropout_rate', type=float, default=0.1)
  parser.add_argument('--dtype', default='float32')
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
    help="XLA's default flags instead of luna_jax.xla_settings (before/after).",
  )
  parser.add_argument(
    '--profile',
    action='store_true',
    help='trace one more step per cell with jax.profiler and write profile.md (time per '
    'XLA op class).',
  )
  parser.add_argument('--cell', default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  from luna_jax import xla_settings

  if args.xla_defaults:
    os.environ[xla_settings.DEFAULTS_VARIABLE] = '1'
  xla_settings.apply(remat=args.remat)
  if args.cell is not None:
    _cell_main(args.cell)
    return
  modes = args.mode.split(',')
  for mode in modes:
    if mode not in MODES:
      raise SystemExit(f'--mode must be a subset of {MODES}, got {mode!r}.')
  machine = describe_machine()
  matmul_peak = measure_matmul_peak(args.matmul_size, repeats=5)
  print(
    f'{machine["cpu_model"]} ({machine["cpu_cores"]} cores), backend {machine["backend"]}: '
    f'dense matmul {matmul_peak["flop_per_s"] / 1e9:.1f} GFLOP/s',
    flush=True,
  )
  for mode in modes:
    results = run_benchmark(
      mode, args, machine, matmul_peak, log=functools.partial(print, flush=True)
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
