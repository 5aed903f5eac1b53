r"""One GPU session of the side-by-side benchmark, made to fit one call on a lent GPU machine:
luna_jax's training step against the authors' PyTorch Luna and PyTorch's softmax Transformer, and
the paper's Table 2 on the GPU, cell by cell in priority order, with the results written as it goes.

What is compared (the LRA Text model of Table 2: 4 layers, d 256, FFN 1024, 4 heads, dropout 0.1,
AdamW; one full training step):
  luna_jax   `python -m benchmarks.speed_memory --mode train_step` with one model and one length
             per cell: `luna16`, `luna256`, `transformer` (einsum softmax) and, for Table 2,
             `transformer_fused` (`jax.nn.dot_product_attention`: cuDNN's flash attention on an
             NVIDIA GPU for 16-bit inputs, XLA's otherwise; the environment's probe records which
             it lowered to); `--precision float32` (XLA's default precision, TF32 matmuls on the
             GPU), `bfloat16` (bfloat16 matmul inputs, float32 accumulation, residual stream,
             normalisers and softmax) and `bfloat16_all`. Memory: the device's peak_bytes_in_use.
             A profile cell (setting `bfloat16-profile`) adds `--profile`: after the timed steps
             one more step is traced with jax.profiler, and the cell's document gets `op_class_ms`
             (`benchmarks.speed_memory_harness.op_class_times`: on a GPU, milliseconds per kernel
             name), cut here to the largest `PROFILE_TOP` classes (the rest summed in
             `op_class_ms_left_out`); the trace stays in the cell's temporary folder.
  PyTorch    the anchor torch_luna_anchor.py (`--device cuda`, one model and one length per cell)
             with the authors' `luna16` and `luna256` and PyTorch's `softmax` Transformer
             (nn.TransformerEncoderLayer, which calls scaled_dot_product_attention): settings
             `tf32` (float32 with TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1: TF32 matmuls, as JAX's
             float32), `bf16` (autocast), `fp16` (autocast and GradScaler, the authors' --fp16),
             each eager or `-compile` (torch.compile). Memory: max_memory_allocated.
  Batch 32 (LRA's) first, then batch 4 (the committed CPU comparison's); lengths 1K, 2K, 4K.

The cells, in the order they run (`--list` prints them with their estimates). The first call
measures what issue 23's targets are judged on: each side at its best setting (luna_jax's bfloat16
policy; PyTorch's autocast bf16, eager or compiled, whichever is faster), batch 32, 4K, where the
MFU targets are set, and the profiles that explain a miss. A block is, at one precision, batch and
length: luna_jax and eager PyTorch alternating, model by model (Luna-16, Transformer, Luna-256), so
that what is finished comes in pairs; then the fused Transformer; then PyTorch under torch.compile
for the three (10 cells, 396 s).
   1. batch 32, 4K, bfloat16 / bf16: one block
   2. profiles, batch 32, 4K, bfloat16: Luna-16, the Transformer (exact), the fused Transformer
      (3 cells, 180 s)
   3. batch 32, 1K, bfloat16 / bf16: one block
   4. batch 32, 2K, the same
   5. batch 32, float32 / tf32: a block each at 4K, 1K, 2K (1,188 s)
   6. batch 32, bfloat16_all: Luna-16, Transformer, Luna-256, fused Transformer; 4K, 1K, 2K
      (540 s)
   7. batch 4: bfloat16 / bf16 blocks at 4K, 1K, 2K, then float32 / tf32 ones (2,376 s)
   8. batch 32, fp16 (PyTorch alone; 108 s)

Time per cell, estimated from the committed H200 runs (benchmarks/results/gpu/): a luna_jax cell is
a fresh process that compiles its step in about 25 s (`compile_s` 24-26 s there, every model and
length) after an estimated 10-15 s of start-up (interpreter, JAX's GPU client, the state's own jit;
the Luna-16 cell there took 51 s in all, beside another job), and steps take milliseconds
(Transformer at batch 4: 5.6 ms at 1K, 30 ms at 4K; at batch 32 about 8x that, 0.25 s at 4K, so 13
steps take 3 s): JAX_CELL_S = 45 s; a profile cell adds a traced step and the trace's parsing:
JAX_PROFILE_CELL_S = 60 s. An eager PyTorch cell (import, CUDA context, 13 steps): TORCH_CELL_S =
12 s; a torch.compile one (Inductor's compile in the warm-up steps, fresh per process):
TORCH_COMPILE_CELL_S = 60 s. Stage 1 takes 396 s, stages 1-2 576 s, stages 1-4 1,368 s, all eight
about 5,580 s (144 cells; about twelve calls of 8 minutes). One call with `--deadline_s 480` (8
minutes; a call's limit is 10), after about 20 s of probes, is estimated to finish stage 1 (at 416
s), then to defer the profiles (54 s left before the 10 s reserve, 60 s each) and run the first 1K
luna_jax cell of stage 3 (Luna-16), which fits; the next call starts with the profiles. Later
sessions go on from there (`--previous`), and each session's measured `wall_s` per cell corrects
these estimates. A cell that does not fit in what is left of the deadline is not started
('deferred'); one that outruns its timeout or the deadline is killed and recorded ('timeout'); both
run again next time.

Outputs, all under `--out` (three files, within the device tool's limit of 8):
  session.json     the environment (nvidia-smi, versions, whether the fused attention lowers to
                   cuDNN, the TF32 settings) and every cell: its id, command, wall time, status and
                   the tool's own JSON document (`result`); written again after each cell
  gpu_session.log  what is printed
  table.md         `benchmarks.vs_pytorch` over the previous sessions' files and this one

Rerunning: `--previous DIR_OR_FILE ...` reads earlier session files (a folder: its session*.json)
and skips their cells that finished ('ok' or 'OOM'); commit each session's session.json as
benchmarks/results/gpu/vs_pytorch/session_<n>.json and pass that folder. `--cells PATTERN,...`
keeps only the cells whose id matches a pattern (fnmatch: 'jax-*-b32-4096', '*-luna16-*').

  python -m benchmarks.gpu_session --list
  python -m benchmarks.gpu_session --out $OUT --anchor .anchor \
      --previous benchmarks/results/gpu/vs_pytorch --deadline_s 480

`benchmarks/prepare_gpu_session.sh` lays out `.anchor/` (the anchor and the authors' two module
files) and `.whl/` (the wheels the GPU image lacks). The JAX processes take GPU memory as they
need it, up to 90% of it (`xla_settings.gpu_memory_on_demand`): the benchmark's parent process
initialises the GPU (it measures the matmul peak) and would otherwise hold 75% of the GPU's memory
while each cell's child process runs, leaving the cell a quarter, and XLA caps each process at 75%
by default (batch 32 at 4K needs about 65 GiB for the Transformer: 8.1 GiB at batch 4 on the
H200). `--dry_run` runs the same plumbing on a CPU at toy sizes (batches 2 and 1,
lengths 128, 256, 512, PyTorch on the CPU) to check it end to end without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import vs_pytorch
from lra import cli
from lra.files import write_atomically
from luna_jax.training import xla_settings

#: The folder `benchmarks/prepare_gpu_session.sh` lays out, and what the PyTorch cells run from it:
#: the anchor script and the folder of the authors' two module files.
DEFAULT_ANCHOR, ANCHOR_SCRIPT, AUTHORS_MODULES = '.anchor', 'torch_luna_anchor.py', 'fairseq_luna'
#: Estimated wall time of one cell (seconds; see the module docstring).
JAX_CELL_S, TORCH_CELL_S, TORCH_COMPILE_CELL_S = 45.0, 12.0, 60.0
#: Estimated wall time of a luna_jax profile cell: one more step, traced, and the trace's parsing.
JAX_PROFILE_CELL_S = 60.0
#: (luna_jax model, PyTorch anchor model) pairs, in the order their cells run.
PAIRS = (('luna16', 'luna16'), ('transformer', 'softmax'), ('luna256', 'luna256'))
#: The fused Transformer of Table 2 (luna_jax only).
FUSED = 'transformer_fused'
#: Suffix of a luna_jax setting that also profiles the step (`speed_memory --profile`).
PROFILE = '-profile'
#: The luna_jax models profiled at batch 32, 4K, bfloat16 (stage 2).
PROFILED = ('luna16', 'transformer', FUSED)
#: Op classes kept per profiled cell in the session file (largest first; the rest summed).
PROFILE_TOP = 25
#: Warm-up and timed steps of every cell (PyTorch's warm-up covers torch.compile's compilation).
WARMUP, REPEATS = 3, 10
#: Statuses after which a cell is not run again.
FINISHED = ('ok', 'oom')
#: Seconds kept free at the end of the deadline to write the table.
RESERVE_S = 10.0
#: Environment of every luna_jax process (see the module docstring).
JAX_ENV = xla_settings.gpu_memory_on_demand()
#: Environment of the PyTorch cells named tf32: float32 matmuls in TF32, as JAX's default.
TF32_ENV = {'TORCH_ALLOW_TF32_CUBLAS_OVERRIDE': '1'}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (side, model, setting, batch, length) measurement.

  Attributes:
    side: 'jax' (luna_jax) or 'torch' (the PyTorch anchor).
    model: the side's model name ('luna16', 'transformer', 'transformer_fused' / 'softmax').
    setting: luna_jax's `--precision` ('float32', 'bfloat16', 'bfloat16_all'), with '-profile'
      for a cell that also profiles its step, or PyTorch's 'tf32', 'bf16', 'fp16', with
      '-compile' for torch.compile.
    batch: batch size.
    length: sequence length (tokens).
  """

  side: str
  model: str
  setting: str
  batch: int
  length: int

  @property
  def id(self) -> str:
    """E.g. 'jax-luna16-float32-b32-4096', 'jax-luna16-bfloat16-profile-b32-4096',
    'torch-softmax-bf16-compile-b32-1024'."""
    return f'{self.side}-{self.model}-{self.setting}-b{self.batch}-{self.length}'

  @property
  def estimate_s(self) -> float:
    """Estimated wall time (seconds)."""
    if self.side == 'jax':
      return JAX_PROFILE_CELL_S if self.setting.endswith(PROFILE) else JAX_CELL_S
    return TORCH_COMPILE_CELL_S if self.setting.endswith('-compile') else TORCH_CELL_S


def plan(lengths: Sequence[int] = (1024, 2048, 4096), batches: Sequence[int] = (32, 4)) -> list:
  """Every cell of the comparison, in the order they run (stages 1-8 of the module docstring).

  Args:
    lengths: the short, middle and long length (1K, 2K, 4K).
    batches: the main and the second batch size (32, 4).

  Returns:
    A list of `Cell`s, each once.
  """
  short, middle, long = lengths
  big, small = batches
  cells = []

  def block(precision: str, torch_setting: str, batch: int, length: int) -> None:
    """One precision at one size: luna_jax and eager PyTorch alternating, model by model, then the
    fused Transformer, then PyTorch under torch.compile."""
    for jax_model, torch_model in PAIRS:
      cells.append(Cell('jax', jax_model, precision, batch, length))
      cells.append(Cell('torch', torch_model, torch_setting, batch, length))
    cells.append(Cell('jax', FUSED, precision, batch, length))
    cells.extend(Cell('torch', m, f'{torch_setting}-compile', batch, length) for _, m in PAIRS)

  block('bfloat16', 'bf16', big, long)  # Stage 1.
  for model in PROFILED:  # Stage 2.
    cells.append(Cell('jax', model, 'bfloat16' + PROFILE, big, long))
  for n in (short, middle):  # Stages 3-4.
    block('bfloat16', 'bf16', big, n)
  for n in (long, short, middle):  # Stage 5.
    block('float32', 'tf32', big, n)
  for n in (long, short, middle):  # Stage 6.
    cells += [Cell('jax', m, 'bfloat16_all', big, n) for m in [*(m for m, _ in PAIRS), FUSED]]
  for precision, torch_setting in (('bfloat16', 'bf16'), ('float32', 'tf32')):  # Stage 7.
    for n in (long, short, middle):
      block(precision, torch_setting, small, n)
  for n in (long, short, middle):  # Stage 8.
    cells += [Cell('torch', model, 'fp16', big, n) for _, model in PAIRS]
  return cells


def previous_files(paths: Sequence[str]) -> list[str]:
  """The session files among `paths` (a folder stands for its session*.json, sorted)."""
  files = []
  for path in paths:
    files += (
      sorted(glob.glob(os.path.join(path, 'session*.json'))) if os.path.isdir(path) else [path]
    )
  return files


def finished_ids(files: Sequence[str]) -> set[str]:
  """The ids of the cells that finished ('ok' or 'oom') in these session files."""
  done = set()
  for path in files:
    with open(path) as f:
      done |= {c['id'] for c in json.load(f)['cells'] if c['status'] in FINISHED}
  return done


def select(cells: Sequence[Cell], patterns: Sequence[str], done: set[str]) -> list[Cell]:
  """The cells that match one of `patterns` (all if none) and are not in `done`, in order."""
  return [
    c
    for c in cells
    if c.id not in done and (not patterns or any(fnmatch.fnmatchcase(c.id, p) for p in patterns))
  ]


def jax_command(cell: Cell, python: str, output_dir: str, timeout_s: float) -> list[str]:
  """The speed_memory command line of a luna_jax cell (its child gets `timeout_s` - 10 s); a
  profile cell adds `--profile`, which traces under `output_dir`."""
  command = [
    python,
    '-m',
    'benchmarks.speed_memory',
    '--mode',
    'train_step',
    '--models',
    cell.model,
    '--lengths',
    str(cell.length),
    '--long_lengths',
    '',
    '--batch_size',
    str(cell.batch),
    '--precision',
    cell.setting.removesuffix(PROFILE),
    '--warmup',
    str(WARMUP),
    '--repeats',
    str(REPEATS),
    '--cell_timeout_s',
    str(max(1, int(timeout_s - 10))),
    '--output_dir',
    output_dir,
  ]
  return command + (['--profile'] if cell.setting.endswith(PROFILE) else [])


def torch_command(
  cell: Cell, python: str, anchor: str, out_path: str, timeout_s: float, device: str
) -> list[str]:
  """The anchor's command line of a PyTorch cell (its child's budget: `timeout_s` - 5 s)."""
  amp = cell.setting.removesuffix('-compile')
  command = [
    python,
    os.path.join(anchor, ANCHOR_SCRIPT),
    os.path.join(anchor, AUTHORS_MODULES),
    '--device',
    device,
    '--models',
    cell.model,
    '--lengths',
    str(cell.length),
    '--batch',
    str(cell.batch),
    '--warmup',
    str(WARMUP),
    '--repeats',
    str(REPEATS),
    '--budget',
    str(max(1, int(timeout_s - 5))),
    '--out',
    out_path,
  ]
  if amp in ('bf16', 'fp16'):
    command += ['--amp', amp]
  if cell.setting.endswith('-compile'):
    command.append('--compile')
  return command


def run_process(
  command: Sequence[str], env: dict[str, str], timeout_s: float, log_path: str
) -> tuple[int | None, str]:
  """Runs `command` in its own process group, output to `log_path`; kills the group at the timeout.

  Returns:
    `(exit code or None if killed at the timeout, the output's last 3000 characters)`.
  """
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(
      command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
      code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      code = None
  with open(log_path, errors='replace') as f:
    return code, f.read()[-3000:]


#: The tools' statuses -> this session's ('ok', 'oom', 'timeout', 'error', 'deferred').
STATUSES = {
  'ok': 'ok',
  'OK': 'ok',
  'OOM': 'oom',
  'timeout': 'timeout',
  'TIMEOUT': 'timeout',
  'error': 'error',
  'ERROR': 'error',
  'skipped': 'deferred',
  'SKIPPED': 'deferred',
}


def trim_op_classes(result: dict[str, Any], top: int = PROFILE_TOP) -> dict[str, Any]:
  """A speed_memory document with each profiled cell's `op_class_ms` cut to its `top` largest
  classes, so that the session file stays small (a step has tens of classes, a GPU step's kernel
  names more); the rest go to `op_class_ms_left_out`: {'classes': how many, 'ms': their sum}."""
  for c in result.get('cells', []):
    ops = c.get('op_class_ms')
    if ops and len(ops) > top:
      ranked = sorted(ops.items(), key=lambda item: -item[1])
      c['op_class_ms'] = dict(ranked[:top])
      rest = [ms for _, ms in ranked[top:]]
      c['op_class_ms_left_out'] = {'classes': len(rest), 'ms': round(sum(rest), 3)}
  return result


def run_cell(cell: Cell, args: argparse.Namespace, timeout_s: float, work: str) -> dict[str, Any]:
  """Runs one cell with its tool and returns its record (see the module docstring)."""
  folder = tempfile.mkdtemp(prefix=cell.id + '_', dir=work)
  if cell.side == 'jax':
    command = jax_command(cell, sys.executable, folder, timeout_s)
    env = xla_settings.environment_with(JAX_ENV)
    result_path = os.path.join(folder, 'train_step', 'results.json')
  else:
    result_path = os.path.join(folder, 'torch.json')
    device = 'cpu' if args.dry_run else 'cuda'
    command = torch_command(cell, args.torch_python, args.anchor, result_path, timeout_s, device)
    env = dict(os.environ, **(TF32_ENV if cell.setting.startswith('tf32') else {}))
  start = time.perf_counter()
  code, tail = run_process(command, env, timeout_s, os.path.join(folder, 'output.log'))
  record = {
    **dataclasses.asdict(cell),
    'id': cell.id,
    'estimate_s': cell.estimate_s,
    'command': command,
    'wall_s': round(time.perf_counter() - start, 1),
    'exit_code': code,
    'result': None,
  }
  if os.path.exists(result_path):
    with open(result_path) as f:
      record['result'] = trim_op_classes(json.load(f))
    record['status'] = STATUSES.get(record['result']['cells'][0]['status'], 'error')
  else:
    record['status'] = 'timeout' if code is None else 'error'
  if record['status'] != 'ok':
    record['output_tail'] = tail
  return record


def summary(record: dict[str, Any], gpu: str | None) -> str:
  """One line: status, step time and memory of a cell's record."""
  text = record['status']
  if record['status'] == 'ok':
    if record['side'] == 'jax':
      (r,) = vs_pytorch.jax_records(record['result'])
    else:
      (r,) = vs_pytorch.torch_records(record['result'], gpu)
    memory = '-' if r['memory_gib'] is None else f'{r["memory_gib"]:.2f}'
    text += f' {1e3 * r["step_s"]:.1f} ms, {memory} GiB'
    ops = record['result']['cells'][0].get('op_class_ms')
    if ops:
      name, ms = max(ops.items(), key=lambda item: item[1])
      text += f'; top op class {name[:60]} {ms:.1f} ms ({ms / (1e3 * r["step_s"]):.0%} of the step)'
  elif lines := (record.get('output_tail') or '').strip().splitlines():  # Its last line.
    text += ': ' + lines[-1][:160]
  return f'{text} ({record["wall_s"]:.0f} s, estimate {record["estimate_s"]:.0f} s)'


def probe(side: str) -> None:
  """Prints this Python's versions and settings as one JSON line (the environment's probes).

  'jax': JAX/jaxlib/flax/optax versions, backend, devices, default matmul precision, and whether
  luna_jax's fused attention (`luna_jax.model.attention.fused_dot_product_attention`, the
  `transformer_fused` path, with the key lengths its padding mask gives it, differentiated at an odd
  length as a CLS makes it) lowers to a cuDNN kernel or XLA's own code, in float32 and bfloat16.
  'torch': torch version, CUDA device, cuDNN and the float32 matmul precision (with the tf32
  cells' environment).
  """
  if side == 'jax':
    import flax
    import jax
    import jax.numpy as jnp
    import jaxlib
    import optax

    from luna_jax.model import attention

    info = {
      'jax': jax.__version__,
      'jaxlib': jaxlib.__version__,
      'flax': flax.__version__,
      'optax': optax.__version__,
      'backend': jax.default_backend(),
      'devices': [f'{d.platform}:{d.device_kind}' for d in jax.devices()],
      'default_matmul_precision': str(jax.config.jax_default_matmul_precision),
      'fused_attention': {},
    }
    # The training step's form: differentiated, at an odd length (1024 inputs and a CLS), which
    # jax's cuDNN branch refuses unless the attention pads it (`attention._cudnn_attention`).
    lengths = jnp.full((2,), 1025, jnp.int32)

    def loss(x):
      out = attention.fused_dot_product_attention(x, x, x, key_lengths=lengths)
      return out.astype(jnp.float32).sum()

    for dtype in ('float32', 'bfloat16'):
      x = jnp.ones((2, 1025, 4, 64), dtype)
      lowered = jax.jit(jax.grad(loss)).lower(x)
      lowered.compile()  # A configuration cuDNN takes at trace time but XLA refuses fails here.
      # jax lowers its cuDNN flash attention to custom calls named `__cudnn$fmha...`.
      cudnn = '__cudnn$fmha' in lowered.as_text()
      info['fused_attention'][dtype] = 'cudnn' if cudnn else 'xla'
  else:
    import torch

    cuda = torch.cuda.is_available()
    info = {
      'torch': torch.__version__,
      'cuda': torch.version.cuda,
      'device': torch.cuda.get_device_name() if cuda else 'cpu',
      'cudnn': torch.backends.cudnn.version() if cuda else None,
      'float32_matmul_precision': torch.get_float32_matmul_precision(),
    }
  print(json.dumps(info))


def _probe(side: str, python: str, extra_env: dict[str, str]) -> dict[str, Any]:
  """`probe(side)` run by `python` (a dict with 'error' if it fails)."""
  command = [python, '-m', 'benchmarks.gpu_session', '--probe', side]
  try:
    out = subprocess.run(
      command,
      capture_output=True,
      text=True,
      timeout=180,
      env=xla_settings.environment_with(extra_env),
    )
  except (subprocess.SubprocessError, OSError) as e:
    return {'error': str(e)}
  try:
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (ValueError, IndexError):
    return {'error': out.stderr[-1000:]}


def environment(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
  """nvidia-smi's view of the GPU and both sides' probes (`probe`), each printed as it comes."""
  env: dict[str, Any] = {'jax_env': JAX_ENV, 'tf32_env': TF32_ENV, 'dry_run': args.dry_run}
  env['nvidia_smi'], env['gpu'] = 'not found', None
  if shutil.which('nvidia-smi'):
    query = 'name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit'
    try:  # A record, not a reason to lose the session's minutes.
      out = subprocess.run(
        ['nvidia-smi', f'--query-gpu={query}', '--format=csv'],
        capture_output=True,
        text=True,
        timeout=60,
      ).stdout.strip()
      env['nvidia_smi'] = out or 'no output'
      env['gpu'] = out.splitlines()[-1].split(',')[0].strip() if out else None
    except (OSError, subprocess.TimeoutExpired) as error:
      env['nvidia_smi'] = f'failed: {error}'
  log('nvidia-smi: ' + env['nvidia_smi'].replace('\n', ' | '))
  for side, python, extra in (
    ('jax', sys.executable, JAX_ENV),
    ('torch', args.torch_python, TF32_ENV),
  ):
    env[side] = _probe(side, python, extra)
    log(f'{side}: {json.dumps(env[side])}')
  return env


def write_json(path: str, value: Any) -> None:
  """Writes `value` as JSON, replacing `path` whole (`lra.files.write_atomically`)."""
  write_atomically(path, json.dumps(value, indent=1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--out', help='folder for session.json, gpu_session.log and table.md')
  parser.add_argument(
    '--anchor', default=DEFAULT_ANCHOR, help=f'folder of {ANCHOR_SCRIPT} and {AUTHORS_MODULES}/'
  )
  parser.add_argument('--previous', nargs='*', default=[], help='earlier session files or folders')
  parser.add_argument('--cells', default='', help='comma-separated fnmatch patterns of cell ids')
  parser.add_argument(
    '--deadline_s', type=cli.number(above=0), default=480.0, help='stop starting cells then'
  )
  parser.add_argument(
    '--cell_timeout_s', type=cli.number(above=0), default=240.0, help='kill a cell after this'
  )
  parser.add_argument(
    '--torch_python', default=sys.executable, help='the Python that has torch (default: this one)'
  )
  parser.add_argument(
    '--dry_run', action='store_true', help='toy sizes, PyTorch on the CPU: checks the plumbing'
  )
  parser.add_argument('--list', action='store_true', help='print the cells and estimates, run none')
  parser.add_argument('--probe', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if not (args.list or args.probe or args.out):
    parser.error('--out is required to run cells.')
  return args


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the selected cells until the deadline, then renders the table (see the docstring)."""
  args = parse_args(argv)
  if args.probe:
    probe(args.probe)
    return
  start = time.perf_counter()
  files = previous_files(args.previous)
  sizes = dict(lengths=(128, 256, 512), batches=(2, 1)) if args.dry_run else {}
  cells = select(plan(**sizes), [p for p in args.cells.split(',') if p], finished_ids(files))
  if args.list:
    total = 0.0
    for cell in cells:
      total += cell.estimate_s
      print(f'{cell.id:<48} {cell.estimate_s:4.0f} s  (cumulative {total:5.0f} s)')
    return
  anchor = [os.path.join(args.anchor, name) for name in (ANCHOR_SCRIPT, AUTHORS_MODULES)]
  if any(cell.side == 'torch' for cell in cells) and not all(map(os.path.exists, anchor)):
    sys.exit(
      f'Error: the PyTorch cells need {anchor[0]} and {anchor[1]}/: lay them out with '
      '`bash benchmarks/prepare_gpu_session.sh SNAPSHOT ANCHOR_SCRIPT` (or give --anchor, or '
      "select JAX cells only with --cells 'jax-*')."
    )
  os.makedirs(args.out, exist_ok=True)
  session_path = os.path.join(args.out, 'session.json')
  log_path = os.path.join(args.out, 'gpu_session.log')

  def log(line: str) -> None:
    text = f'[{time.perf_counter() - start:5.0f} s] {line}'
    print(text, flush=True)
    with open(log_path, 'a') as f:
      f.write(text + '\n')

  log(f'{len(cells)} cells to run, deadline {args.deadline_s:.0f} s; previous: {files or "none"}')
  session = {
    'format': vs_pytorch.SESSION_FORMAT,
    'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    'deadline_s': args.deadline_s,
    'environment': environment(args, log),
    'cells': [],
  }
  write_json(session_path, session)
  with tempfile.TemporaryDirectory(prefix='gpu_session_') as work:
    for cell in cells:
      left = args.deadline_s - (time.perf_counter() - start) - RESERVE_S
      if cell.estimate_s > left:
        record = {**dataclasses.asdict(cell), 'id': cell.id, 'status': 'deferred', 'result': None}
        record.update(estimate_s=cell.estimate_s, wall_s=0.0)
        log(f'{cell.id}: deferred ({left:.0f} s left, estimate {cell.estimate_s:.0f} s)')
      else:
        record = run_cell(cell, args, min(args.cell_timeout_s, left), work)
        log(f'{cell.id}: {summary(record, session["environment"].get("gpu"))}')
      session['cells'].append(record)
      write_json(session_path, session)
  session['finished'] = time.strftime('%Y-%m-%d %H:%M:%S %Z')
  session['wall_s'] = round(time.perf_counter() - start, 1)
  write_json(session_path, session)
  counts = {s: sum(c['status'] == s for c in session['cells']) for s in STATUSES.values()}
  log('cells: ' + (', '.join(f'{n} {s}' for s, n in counts.items() if n) or 'none run'))
  vs_pytorch.main(['--session', *files, session_path, '--out', os.path.join(args.out, 'table.md')])


if __name__ == '__main__':
  main()
