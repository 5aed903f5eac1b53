r"""What an LRA recipe's training step takes on an NVIDIA H100 or H200, from XLA:GPU compiling it on
this machine, which needs no GPU: the device memory of the step (XLA's buffer assignment: train
state, batch and temporaries) and whether it fits the card, the kernels one step launches, and
whether the Transformer's attention is cuDNN's flash attention. Nothing is run, so there is no
time; this sizes and checks GPU sessions before their minutes are spent.

  pip install "jax-cuda13-plugin[with-cuda]==$(python -c 'import jax; print(jax.__version__)')"
  python -m benchmarks.gpu_compile --target h100 --runs listops:luna16,listops:transformer \
      [--lengths 1K,2K,4K] [--output benchmarks/results/gpu_compile/<name>] \
      [-- --config.model.precision=bfloat16]

Runs are `benchmarks.step_cost`'s (`<config name>:<variant>[+mlm]`, the full recipe and its batch
size; flags after `--` override every config as in `train.py`); `--lengths` compiles each run at
each of these input lengths instead of its config's `max_length`.

How: jax's compile-only devices (`jax.experimental.topologies.get_topology_desc` with the CUDA
plugin's `topology` and `target_config` options) run XLA:GPU's compiler for a GPU described by a
`GpuTargetConfigProto` (`target_config`: the card's multiprocessors, memory, bandwidth, caches and
compute capability 9.0) instead of one found on the machine. The step is traced under
`luna_jax.model.attention.target_platform('cuda')`, so the fused attention takes the cuDNN branch it
takes on the GPU. Without a device XLA autotunes nothing (its GEMMs get default configurations), so
the kernels are the GPU's up to those choices. The CUDA plugin's start-up check of the CUDA
libraries' versions needs a driver and is skipped (`JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1`, set by
`compile_only_device` before the plugin loads), and the command line runs jax on the CPU
(`jax_platforms='cpu'` unless `JAX_PLATFORMS` says otherwise), so that it does not look for a GPU
either.

Kernels are counted in the optimised HLO (`kernels`, `summarize`): every instruction of the
entry computation and of its loop bodies that launches work on the device (fusions, library calls,
copies), not the bookkeeping ones (parameters, tuples, bitcasts, constants), each with the bytes of
its operands and results; their sum at the card's bandwidth is the step's memory-bound time, an
estimate (slices and in-place updates make it larger than the traffic, repeated reads smaller).
With gradient accumulation the micro-batch loop's body counts once, so the bytes are not the
step's.

Needs jax >= 0.11 (jax 0.10.2's XLA:GPU fails to tile some GEMMs without a device). jax's
trace-time check of cuDNN's head size reads the host's device, a CPU, so up to 128 features per
head pass it instead of Hopper's 256 (LRA's heads have at most 64).
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import step_cost
from benchmarks.speed_memory_harness import compiled_memory, write_results
from lra import cli

#: The cards, as their GPU target configuration needs them: multiprocessors, device memory (bytes,
#: as `nvidia-smi` reports it on an H100 80GB HBM3 and an H200), peak memory bandwidth (bytes/s,
#: NVIDIA's data sheets: 3.35 TB/s, 4.8 TB/s), L2 (bytes, as PyTorch reports it) and boost clock.
TARGETS = {
  'h100': dict(
    description='NVIDIA H100 80GB HBM3',
    core_count=132,
    memory_bytes=81559 * 2**20,
    bandwidth=3.35e12,
    l2_bytes=50 * 2**20,
    clock_ghz=1.98,
  ),
  'h200': dict(
    description='NVIDIA H200',
    core_count=132,
    memory_bytes=143771 * 2**20,
    bandwidth=4.8e12,
    l2_bytes=60 * 2**20,
    clock_ghz=1.98,
  ),
}
#: How many of the kernels that move the most bytes each run's record keeps.
TOP_KERNELS = 12
#: The plugin this needs, for the message when it is missing.
PLUGIN_HINT = (
  'XLA:GPU compiles only with the CUDA plugin of this jax: '
  'pip install "jax-cuda13-plugin[with-cuda]==<jax version>" (no GPU needed).'
)
#: Opcodes that launch nothing on the device: buffers, views, control flow and constants.
BOOKKEEPING_OPCODES = frozenset(
  {
    'parameter',
    'get-tuple-element',
    'tuple',
    'bitcast',
    'constant',
    'after-all',
    'opt-barrier',
    'while',
    'partition-id',
    'replica-id',
  }
)
#: Opcodes whose called computations `kernels` does not read: it refuses a program that has them.
UNREAD_OPCODES = frozenset({'call', 'conditional', 'async-start'})
_COMPUTATION = re.compile(r'^(ENTRY )?%(\S+) .*\{$')
_INSTRUCTION = re.compile(r'^\s+(?:ROOT )?%(\S+) = ')
_OPCODE = re.compile(r' ([\w-]+)\(([^)]*)\)')
_GEMM = re.compile(r'gemm|cublas|__cudnn\$fusion')
_OPERAND = re.compile(r'%([\w.-]+)')
_ARRAY = re.compile(r'\b([a-z]\w*)\[([\d,]*)\]')
#: Bytes per element of the HLO element types these programs use.
ELEMENT_BYTES = {
  'pred': 1,
  's8': 1,
  'u8': 1,
  's16': 2,
  'u16': 2,
  'bf16': 2,
  'f16': 2,
  's32': 4,
  'u32': 4,
  'f32': 4,
  's64': 8,
  'u64': 8,
  'f64': 8,
  'token': 0,
}
_BODY = re.compile(r'\bbody=%([\w.-]+)')


def target_config(target: str, dnn_version: tuple[int, int] = (9, 8)) -> str:
  """The `GpuTargetConfigProto` text of `target` (a key of `TARGETS`; compute capability 9.0).

  Args:
    target: 'h100' or 'h200'.
    dnn_version: the cuDNN (major, minor) XLA may assume; cuDNN's fused attention needs 9.x.

  Raises:
    KeyError: an unknown target.
  """
  card = TARGETS[target]
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {card['core_count']}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(card['bandwidth'])}
  l2_cache_size: {card['l2_bytes']}
  clock_rate_ghz: {card['clock_ghz']}
  device_memory_size: {card['memory_bytes']}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: {dnn_version[0]} minor: {dnn_version[1]} }}
device_description_str: "{card['description']}"
"""


def compile_only_device(target: str):
  """A compile-only `jax.Device` of XLA:GPU for `target` (a key of `TARGETS`), on any host.

  Sets `JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1` (unless set) before the CUDA plugin loads: its check of
  the CUDA libraries' versions needs a driver.

  Raises:
    KeyError: an unknown target.
    RuntimeError: jax older than 0.11, or no CUDA plugin for this jax (the message names the pip
      command).
  """
  if target not in TARGETS:
    raise KeyError(f'unknown target {target!r}; known: {sorted(TARGETS)}')
  import jax

  if tuple(int(part) for part in jax.__version__.split('.')[:2]) < (0, 11):
    raise RuntimeError(
      f'jax {jax.__version__}: compiling for a GPU without one needs jax >= 0.11 (Python >= '
      "3.12); jax 0.10's XLA:GPU fails to tile some GEMMs without a device."
    )
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  from jax.experimental import topologies

  try:
    topology = topologies.get_topology_desc(
      platform='cuda', topology='1x1x1', target_config=target_config(target)
    )
  except NotImplementedError as error:  # jax names the platform it has no topology for.
    raise RuntimeError(f'{PLUGIN_HINT} ({error})') from error
  return topology.devices[0]


class Kernel(NamedTuple):
  """One kernel launch of a compiled XLA:GPU program (`kernels`)."""

  name: str  # The HLO instruction's name, e.g. 'loop_add_fusion.3'.
  kind: str  # 'gemm', 'cudnn_attention', 'other_library', 'fusion', 'copy' or 'other'.
  bytes: int  # Its results' and operands' bytes, each read or written once in full.
  shape: str  # The result's HLO shape.
  op_name: str  # The jax operation it came from (the instruction's `op_name` metadata).


#: Kernel kinds, in the order of the counts and tables.
KINDS = ('gemm', 'cudnn_attention', 'other_library', 'fusion', 'copy', 'other')


def kernels(hlo_text: str) -> tuple[list[Kernel], int]:
  """The kernels that one run of a compiled XLA:GPU program launches, from its optimised HLO text
  (`compiled.as_text()`), and its number of `while` loops.

  Counted: the instructions of the entry computation and of the bodies of its `while` loops (once
  each; a loop body's kernels are one iteration's) whose opcode is not in `BOOKKEEPING_OPCODES`.
  Kinds: 'gemm' (fusions XLA made around a matmul, `__triton_gemm` or cuBLAS, and cuBLAS calls),
  'cudnn_attention' (cuDNN's fused attention, forward and backward), 'other_library' (other custom
  calls), 'fusion' (XLA's own loop and reduction kernels), 'copy' (layout changes and copies) and
  'other'. A kernel's bytes count its operands and results once each in full (the memory traffic
  at kernel boundaries; a kernel that reads part of an operand, such as a slice, or reads one
  twice, makes it an estimate).

  Raises:
    ValueError: no entry computation, an element type without a known size, or an opcode of
      `UNREAD_OPCODES`.
  """
  computations: dict[str, list[str]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(2)
      computations[current] = []
      if header.group(1):
        entry = current
    elif current is not None and line.strip() == '}':
      current = None
    elif current is not None:
      computations[current].append(line)
  if entry is None:
    raise ValueError('no ENTRY computation in the HLO text')
  sizes = {}  # Instruction name -> bytes of its result, over the computations that launch kernels.
  launched, loops, bodies = [], 0, [entry]
  while bodies:
    for line in computations[bodies.pop()]:
      parsed = _instruction(line)
      if parsed is None:
        continue
      name, shape, opcode, operands = parsed
      sizes[name] = shape_bytes(shape)
      if opcode == 'while':
        loops += 1
        bodies.extend(_BODY.findall(line))
      elif opcode in UNREAD_OPCODES:
        raise ValueError(f'{opcode} in the program: kernels() reads only while bodies ({name})')
      if opcode in BOOKKEEPING_OPCODES:
        continue
      moved = sizes[name] + sum(sizes[operand] for operand in _OPERAND.findall(operands))
      op_name = re.search(r'op_name="([^"]*)"', line)
      launched.append(
        Kernel(name, _kind(opcode, line), moved, shape, op_name.group(1) if op_name else '')
      )
  return launched, loops


def _kind(opcode: str, line: str) -> str:
  """The `KINDS` entry of an instruction that launches a kernel."""
  if opcode == 'custom-call':
    target = re.search(r'custom_call_target="([^"]+)"', line)
    library = target.group(1) if target else ''
    if library.startswith('__cudnn$fmha'):
      return 'cudnn_attention'
    return 'gemm' if library.startswith('__cublas') else 'other_library'
  if opcode == 'fusion':
    # A GEMM fusion calls a computation XLA names for it, or says so in its backend config; the
    # line's operands may be other GEMMs' results, so only these two are read.
    called = re.search(r'\bcalls=%([\w.-]+)', line)
    config = re.search(r'"fusion_backend_config":\{"kind":"([^"]*)"', line)
    names = (called.group(1) if called else '', config.group(1) if config else '')
    return 'gemm' if any(_GEMM.search(name) for name in names) else 'fusion'
  return 'copy' if opcode == 'copy' else 'other'


def summarize(launched: Sequence[Kernel], loops: int) -> dict[str, int]:
  """'kernels' (all launches), one count per `KINDS` entry, 'while_loops' and 'kernel_bytes' (the
  bytes all kernels move) of `kernels`' result."""
  kinds = collections.Counter(k.kind for k in launched)
  return {
    'kernels': len(launched),
    **{kind: kinds[kind] for kind in KINDS},
    'while_loops': loops,
    'kernel_bytes': sum(k.bytes for k in launched),
  }


def _instruction(line: str) -> tuple[str, str, str, str] | None:
  """(name, result shape, opcode, operand list) of an HLO instruction line, or None for another
  line. A tuple shape may nest, so its end is found by counting parentheses."""
  match = _INSTRUCTION.match(line)
  if not match:
    return None
  rest = line[match.end() :]
  if rest.startswith('('):
    depths = itertools.accumulate({'(': 1, ')': -1}.get(char, 0) for char in rest)
    end = next(i for i, depth in enumerate(depths) if depth == 0) + 1
    shape, rest = rest[:end], rest[end:]
  else:
    shape, _, rest = rest.partition(' ')
    rest = ' ' + rest
  opcode = _OPCODE.match(rest)
  if not opcode:
    return None
  return match.group(1), shape, opcode.group(1), opcode.group(2)


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape: `bf16[32,2001,512]{2,1,0}`, a tuple of such, `f32[]` (a scalar).

  Raises:
    ValueError: an element type without a size in `ELEMENT_BYTES`.
  """
  total = 0
  for element_type, dims in _ARRAY.findall(shape):
    if element_type not in ELEMENT_BYTES:
      raise ValueError(f'no size for HLO element type {element_type!r} in {shape!r}')
    count = 1
    for dim in filter(None, dims.split(',')):
      count *= int(dim)
    total += count * ELEMENT_BYTES[element_type]
  return total


def compile_step(config, device) -> dict[str, Any]:
  """Compiles the trainer's train step of `config` (`step_cost.train_step_program`) for `device`
  (a compile-only GPU device) and reads its memory and kernels.

  Returns:
    'compile_s' (seconds on this host), `speed_memory_harness.compiled_memory`'s fields
    ('compiled_peak_bytes': what the step holds on the device at its peak, the train state
    included), `summarize`'s ('kernel_bytes' among them) and 'top_kernels' (the `TOP_KERNELS`
    kernels that move the most bytes, as dicts of `Kernel`'s fields).
  """
  import jax

  from luna_jax.model import attention

  step, state, batch = step_cost.train_step_program(config)
  placed = jax.sharding.SingleDeviceSharding(device)
  state, batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placed), (state, batch)
  )
  start = time.perf_counter()
  with attention.target_platform('cuda'):
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
  seconds = time.perf_counter() - start
  launched, loops = kernels(compiled.as_text())
  largest = sorted(launched, key=lambda k: k.bytes, reverse=True)[:TOP_KERNELS]
  return {
    'compile_s': round(seconds, 1),
    **compiled_memory(compiled),
    **summarize(launched, loops),
    'top_kernels': [k._asdict() for k in largest],
  }


def table(results: Sequence[dict[str, Any]], card: dict[str, Any]) -> str:
  """Markdown: one row per run and length, on `card` (a `TARGETS` entry). 'memory-bound ms' is the
  kernels' bytes at the card's peak bandwidth: about the step's time if it did nothing but move
  them (`kernels`: an estimate of the traffic)."""
  lines = [
    '| run | precision | attention | batch x length | peak GiB | share of the card | kernels | '
    'GEMMs | cuDNN attention | XLA fusions | copies | GB moved | memory-bound ms |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in results:
    lines.append(
      f'| {r["run"]} | {r["precision"]} | {r["attention"]} | {r["batch_size"]} x '
      f'{r["max_length"]} | {r["compiled_peak_bytes"] / 2**30:.2f} | '
      f'{r["compiled_peak_bytes"] / card["memory_bytes"]:.0%} | {r["kernels"]} | {r["gemm"]} | '
      f'{r["cudnn_attention"]} | {r["fusion"]} | {r["copy"]} | {r["kernel_bytes"] / 1e9:.1f} | '
      f'{1e3 * r["kernel_bytes"] / card["bandwidth"]:.1f} |'
    )
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  parser, argv, overrides, given = step_cost.command_line(argv, __doc__.split('\n\n')[0])
  parser.add_argument('--target', choices=sorted(TARGETS), default='h100', help='the card')
  parser.add_argument(
    '--runs',
    default='listops:luna16,listops:luna256,listops:transformer',
    help='comma-separated <config name>:<variant>[+mlm] (benchmarks.step_cost).',
  )
  parser.add_argument(
    '--lengths', default='', help="input lengths, e.g. 1K,2K,4K (default: each config's)"
  )
  parser.add_argument('--output', type=Path, help='folder for results.json and table.md')
  args = parser.parse_args(argv)
  lengths = cli.lengths(args.lengths) if args.lengths else [None]
  import jax

  if not os.environ.get('JAX_PLATFORMS'):
    jax.config.update('jax_platforms', 'cpu')
  try:
    device = compile_only_device(args.target)
  except RuntimeError as error:
    parser.error(str(error))

  results = []
  for spec in [s.strip() for s in args.runs.split(',') if s.strip()]:
    for length in lengths:
      try:
        config = step_cost.run_config_of(spec, overrides)
      except ValueError as e:
        parser.error(str(e))
      if length is not None:
        config.data.options.max_length = length
      try:
        measured = compile_step(config, device)
      except KeyError as e:  # A task without sizes in step_cost.TASK_SIZES.
        parser.error(f'{spec}: no model sizes for task {e}; known: {sorted(step_cost.TASK_SIZES)}')
      results.append(
        {
          'run': spec,
          'precision': config.model.precision,
          'attention': config.model.get('attention_implementation', '-')
          if config.model.name.startswith('transformer')
          else config.model.get('luna_attention_implementation', '-'),
          'batch_size': config.training.batch_size,
          'max_length': config.data.options.max_length,
          **measured,
        }
      )
      row = table(results[-1:], TARGETS[args.target]).splitlines()[-1]
      print(f'{row} ({measured["compile_s"]:.0f} s)', flush=True)
  markdown = table(results, TARGETS[args.target])
  print(markdown)
  if args.output:
    document = {
      'command': ['python', '-m', 'benchmarks.gpu_compile', *given],
      'overrides': overrides,
      'target': {'name': args.target, **TARGETS[args.target]},
      'target_config': target_config(args.target),
      'compiled_on': f'{device.device_kind} (compile-only, no GPU)',
      'jax_version': jax.__version__,
      'runs': results,
    }
    write_results(args.output, document, markdown)


if __name__ == '__main__':
  main()
