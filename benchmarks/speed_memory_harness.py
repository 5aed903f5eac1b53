"""The measurement harness of the speed and memory benchmark (`benchmarks.speed_memory`): the
models and steps of each mode, one (mode, model, length) cell's compilation, timing and memory, and
the machine's description and dense-matmul peak.

Every cell runs in a fresh subprocess (`run_cell_subprocess`, so the process's peak RSS and the
device's peak bytes belong to that cell) or in this one (`run_cell`), is compiled ahead of time
(`jax.jit(...).lower(...).compile()`, compile time reported separately), warmed up, and then timed
`repeats` times with `jax.block_until_ready`; the median is reported. FLOPs per step come from XLA's
cost analysis of the compiled program (every op), and model FLOPs per step from the settings
(`benchmarks.model_flops`: the matmuls a step needs), which give the model FLOPs utilisation (MFU)
against the dense-matmul peak measured in the same run (`measure_matmul_peak`). Peak memory is
the device's `peak_bytes_in_use` on GPU/TPU and the compiled program's `memory_analysis()` peak on
CPU (the process's peak RSS is reported beside it). A cell whose compiled peak exceeds its memory
limit, or that fails with RESOURCE_EXHAUSTED, or whose process is killed by SIGKILL, is reported
as OOM. With a `trace_dir`, a cell runs one more step under `jax.profiler.trace` and reports the
milliseconds per XLA op class.
"""

from __future__ import annotations

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
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import model_flops
from configs import variants
from lra.files import write_atomically

MODES = ('train_step', 'attention')
#: Classes of the benchmark's synthetic binary task (LRA Text).
NUM_CLASSES = 2
#: The dtypes whose dense-matmul peak a run measures (`measure_matmul_peak`).
MATMUL_DTYPES = ('float32', 'bfloat16')
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
    precision: the precision policy (`luna_jax.model.config.PRECISIONS`).
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
  precision: str = 'float32'
  remat: str = 'none'


def model_config(name: str, arch: Architecture) -> dict[str, Any]:
  """The `config.model` mapping of a benchmark model.

  Args:
    name: a variant of configs/variants.py: 'transformer' (einsum softmax attention),
      'transformer_fused' (`jax.nn.dot_product_attention`), the baselines 'linformer',
      'linear_transformer', 'performer' (`luna_jax.model.baselines`, LRA defaults r = 16 and 256
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
    precision=arch.precision,
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
    'targets': rng.integers(0, NUM_CLASSES, size=(batch_size,), dtype=np.int32),
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

  from luna_jax.training import optim, steps

  optimizer = optim.make_optimizer(optim.OptimizerConfig(**_optimizer_config()))
  state = steps.create_train_state(jax.random.PRNGKey(seed), model, optimizer, batch)
  return state, functools.partial(steps.train_step, model=model, optimizer=optimizer)


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

  Transformer: `luna_jax.model.layers.SelfAttention` (q/k/v/out projections + softmax or fused
  attention), or its Linformer / linear / Performer subclass (`luna_jax.model.baselines`), built
  through `luna_jax.model.registry.TRANSFORMER_ATTENTIONS`. Luna:
  `luna_jax.model.layers.LunaAttention` (pack and unpack with their projections,
  `luna_jax.model.registry.LUNA_ATTENTIONS`) on x and an `[l, d]` P. All keys valid (full-length
  masks), no dropout.

  Returns:
    `(args, step)` with `step(*args) -> gradients` (not jitted).
  """
  import jax
  import jax.numpy as jnp

  from luna_jax.model import config, registry

  cfg = model_config(name, arch)
  settings = config.ModelConfig(
    vocab_size=1, max_length=length, prepend_cls=False, **config.split_model_config(cfg)[1]
  )
  dtype, matmul_dtype = settings.compute_dtype, settings.matmul_dtype
  d, h = arch.emb_dim, arch.num_heads
  k_params, k_x, k_p = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(k_x, (batch_size, length, d), dtype)
  mask = jnp.ones((batch_size, length), bool)
  if cfg['name'] == 'transformer':
    builder = registry.TRANSFORMER_ATTENTIONS[settings.attention_implementation]
    module = builder(settings)(num_heads=h, qkv_dim=d, dtype=dtype, matmul_dtype=matmul_dtype)
    inputs = (x,)
    call_args = lambda inputs: (inputs[0], mask)
  else:
    l = settings.projection_length
    builder = registry.LUNA_ATTENTIONS[settings.luna_attention_implementation]
    module = builder(settings)(features=d, num_heads=h, dtype=dtype, matmul_dtype=matmul_dtype)
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


def xla_cost(compiled) -> dict[str, float]:
  """XLA's cost analysis of a compiled program (`'flops'`, `'bytes accessed'`, ...): `{}` where the
  backend gives none; `cost_analysis()` is a dict in recent JAX and a one-element list in older
  releases."""
  analysis = compiled.cost_analysis()
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
    A result record (see `finish_record`); `status` is 'ok', 'OOM' or 'skipped'.

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
        model_config(name, arch), vocab_size=257, num_classes=NUM_CLASSES, max_length=length
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
    record['flops_per_step'] = float(xla_cost(compiled).get('flops', float('nan')))
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
  """Milliseconds per op class in the newest Perfetto trace under `trace_dir`, largest first.

  On a CPU (and a TPU) an op class is an HLO op name without its numeric suffix (`ynn_fusion.169`
  -> `ynn_fusion`), and only the events that carry an `hlo_op` argument (the executed XLA ops)
  count. On CPU the ops of one step can run on two threads at once, so the sum can exceed the
  step's wall time slightly.

  On a GPU the trace's device rows ('Stream #...' rows of a '/device:...' process, where the
  CUDA profiler puts kernels, copies and memsets) count instead, every event there, whether or not
  it carries an `hlo_op`, by its name: the kernel's (XLA's fusions, e.g. `loop_add_fusion_2`;
  cuBLAS's and cuDNN's kernels under their library names), with a trailing `.N` or `_N` removed
  and cut to 120 characters. XLA annotates each kernel launch with its `hlo_op`, so the host's
  launch calls (`cuLaunchKernel`) carry one too and are left out: their time is the CPU's, not the
  kernels'. Kernels on several streams at once can sum to more than the step.

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
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  devices = {
    e['pid']
    for e in events
    if e.get('ph') == 'M'
    and e.get('name') == 'process_name'
    and str(e.get('args', {}).get('name', '')).startswith('/device:')
  }
  streams = {
    (e['pid'], e.get('tid'))
    for e in events
    if e.get('ph') == 'M'
    and e.get('name') == 'thread_name'
    and e['pid'] in devices
    and str(e.get('args', {}).get('name', '')).startswith('Stream')
  }
  kernels = [e for e in events if e.get('ph') == 'X' and (e['pid'], e.get('tid')) in streams]
  totals = collections.Counter()
  if kernels:
    for event in kernels:
      totals[re.sub(r'([._]\d+)+$', '', event['name'])[:120]] += event['dur'] / 1e3
  else:
    for event in events:
      if event.get('ph') == 'X' and 'hlo_op' in event.get('args', {}):
        totals[re.sub(r'\.\d+$', '', event['name'])] += event['dur'] / 1e3
  return dict(totals.most_common())


def cell_main(spec_json: str) -> None:
  """Child-process entry point (`python -m benchmarks.speed_memory --cell <spec>`): runs one cell
  and prints its record on one tagged line for `run_cell_subprocess`."""
  from luna_jax.training import xla_settings

  spec = json.loads(spec_json)
  # Before JAX initialises a backend (the parent's environment is inherited).
  xla_settings.apply(remat=spec['arch']['remat'])
  record = run_cell(spec)
  print(_RESULT_PREFIX + json.dumps(record), flush=True)


def run_cell_subprocess(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
  """Runs `run_cell` in a fresh Python process; one that prints no record is `failed_cell`."""
  command = [sys.executable, '-m', 'benchmarks.speed_memory', '--cell', json.dumps(spec)]
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=repo_root)
  except subprocess.TimeoutExpired:
    return {'status': 'timeout', 'reason': f'cell exceeded {timeout_s:.0f} s'}
  for line in proc.stdout.splitlines():
    if line.startswith(_RESULT_PREFIX):
      return json.loads(line[len(_RESULT_PREFIX) :])
  return failed_cell(proc.returncode, proc.stderr)


def failed_cell(returncode: int, stderr: str) -> dict[str, Any]:
  """The record of a cell process that printed no result: 'OOM' where it was killed by SIGKILL
  (the kernel's OOM killer; exit code -9, or 137 through a shell) or ended on XLA's
  RESOURCE_EXHAUSTED, else 'error' with the last lines of `stderr` (an abort or a segfault is not
  out of memory, and XLA's allocator warns that it "ran out of memory" where that is no failure)."""
  if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or 'RESOURCE_EXHAUSTED' in stderr:
    return {
      'status': 'OOM',
      'reason': f'process ended with code {returncode} (killed: out of memory)',
    }
  tail = '\n'.join(stderr.strip().splitlines()[-5:])
  return {'status': 'error', 'reason': f'exit code {returncode}: {tail}'}


def model_flops_per_step(spec: dict[str, Any]) -> int:
  """The model FLOPs of one step of a cell (`benchmarks.model_flops`: matmuls only).

  train_step: `model_flops.train_step_flops` of the LRA Text classifier (3x its forward matmuls).
  attention: 3x the forward matmuls of one attention module (`model_flops.attention_flops`) per
  example, since the step differentiates with respect to the parameters and every input.

  Args:
    spec: a cell's `mode`, `model`, `length`, `batch_size` and `arch` (see `run_cell`).

  Returns:
    FLOPs (an int).

  Raises:
    ValueError: an unknown mode or model.
  """
  cfg = model_config(spec['model'], Architecture(**spec['arch']))
  length, batch_size = spec['length'], spec['batch_size']
  if spec['mode'] == 'train_step':
    return model_flops.train_step_flops(
      cfg, length=length, num_classes=NUM_CLASSES, batch_size=batch_size
    )
  if spec['mode'] == 'attention':
    head, settings = model_flops.encoder_config(cfg, length)
    attention = model_flops.attention_flops(head.name, settings, length)
    return model_flops.TRAIN_STEP_FACTOR * batch_size * attention
  raise ValueError(f'mode must be one of {MODES}, got {spec["mode"]!r}.')


def mfu_dtype(arch: dict[str, Any]) -> str:
  """The `MATMUL_DTYPES` entry whose peak a run is measured against: its matmul inputs' dtype
  (`precision`, or `dtype` in results written before the precision policies)."""
  precision = arch.get('precision') or arch.get('dtype', 'float32')
  return 'float32' if precision == 'float32' else 'bfloat16'


def finish_record(
  record: dict[str, Any],
  spec: dict[str, Any],
  matmul_peaks: dict[str, dict[str, Any]],
  backend: str,
) -> dict[str, Any]:
  """Adds the identity of the cell and the derived figures: rates, primary memory, model FLOPs,
  and the fractions of the matmul peak of the compute dtype (`mfu_dtype`).

  `matmul_peak_fraction` is XLA's FLOP count (every op) per second over that peak; `mfu` is the
  model FLOPs (`model_flops_per_step`) per second over it.

  Args:
    record: what `run_cell` returned.
    spec: the cell's spec.
    matmul_peaks: `measure_matmul_peak` results by dtype, those of `MATMUL_DTYPES`.
    backend: `jax.default_backend()` of the run.

  Returns:
    The cell's entry of `results.json`.
  """
  out = {
    'mode': spec['mode'],
    'model': spec['model'],
    'label': variants.label(spec['model']),
    'length': spec['length'],
    'batch_size': spec['batch_size'],
    **record,
    'model_flops_per_step': model_flops_per_step(spec),
  }
  if out['status'] != 'ok':
    return out
  t = out['step_time_s']
  peak = matmul_peaks[mfu_dtype(spec['arch'])]['flop_per_s']
  out['steps_per_s'] = 1.0 / t
  out['examples_per_s'] = spec['batch_size'] / t
  out['tokens_per_s'] = spec['batch_size'] * spec['length'] / t
  out['flop_per_s'] = out['flops_per_step'] / t
  out['matmul_peak_fraction'] = out['flop_per_s'] / peak
  out['model_flop_per_s'] = out['model_flops_per_step'] / t
  out['mfu'] = out['model_flop_per_s'] / peak
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


def measure_matmul_peak(
  dtype: str = 'float32', size: int = 4096, repeats: int = 5
) -> dict[str, Any]:
  """The default device's dense-matmul FLOP/s: the median time of a jitted `[size, size] @ [size,
  size]` matmul, counted as `2 size^3` FLOPs.

  'float32' multiplies float32 matrices at XLA's default precision, which on NVIDIA GPUs with
  tensor cores (Ampere and later) runs TF32 matmuls: the peak the benchmark's float32 models get.
  'bfloat16' multiplies bfloat16 matrices with float32 accumulation and output
  (`preferred_element_type=float32`), as the models' bfloat16 matmuls do. Two untimed runs come
  first (compilation is ahead of time).

  Args:
    dtype: one of `MATMUL_DTYPES`.
    size: the matrices' side.
    repeats: timed runs.

  Returns:
    `size`, `dtype`, `device` (platform and kind, e.g. 'gpu:NVIDIA H200'), `median_s` (seconds)
    and `flop_per_s`.

  Raises:
    ValueError: a dtype not in `MATMUL_DTYPES`.
  """
  import jax
  import jax.numpy as jnp

  if dtype not in MATMUL_DTYPES:
    raise ValueError(f'dtype must be one of {MATMUL_DTYPES}, got {dtype!r}.')
  a, b = (
    jax.random.normal(jax.random.PRNGKey(seed), (size, size), jnp.float32).astype(dtype)
    for seed in (0, 1)
  )
  matmul = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
  compiled = jax.jit(matmul).lower(a, b).compile()
  seconds = median_seconds(compiled, (a, b), repeats, warmup=2)
  device = jax.devices()[0]
  return {
    'size': size,
    'dtype': dtype,
    'device': f'{device.platform}:{device.device_kind}',
    'median_s': seconds,
    'flop_per_s': 2.0 * size**3 / seconds,
  }


def median_seconds(fn: Callable[..., Any], args: Sequence[Any], repeats: int, warmup: int) -> float:
  """The median wall-clock seconds of `repeats` calls `fn(*args)`, each waited for
  (`jax.block_until_ready`), after `warmup` untimed calls."""
  import jax

  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def write_results(output_dir: str | os.PathLike, results: Any, table: str) -> None:
  """Writes a benchmark's `results.json` (`results` as JSON) and `table.md` (`table`) in
  `output_dir`, made if missing; each file is replaced whole (`lra.files.write_atomically`)."""
  os.makedirs(output_dir, exist_ok=True)
  write_atomically(os.path.join(output_dir, 'results.json'), json.dumps(results, indent=1) + '\n')
  write_atomically(
    os.path.join(output_dir, 'table.md'), table if table.endswith('\n') else table + '\n'
  )


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
