r"""Side-by-side tables of luna_jax and the authors' PyTorch Luna: training-step time and memory.

Reads `benchmarks.speed_memory` results (`train_step` mode), the JSON files of the PyTorch anchor
(torch_luna_anchor.py, which times the authors' Luna from fairseq-apollo and PyTorch's softmax
Transformer at the same configuration) and the session files of `benchmarks.gpu_session` (which
hold both sides' documents), and writes Markdown. Models are matched by name (`luna<l>` on both
sides, the JAX `transformer` against the PyTorch `softmax`) at equal length and batch size.

CPU table (`--jax`/`--torch` files of CPU runs): one row per JAX cell; memory on both sides is
the training step's own peak RSS increase, peak RSS minus the RSS just before the first step (for
JAX after compiling), in GiB (the anchor's `rss_increase_gb` is KiB / 2^20).

Device tables (GPU results, and every cell of a session file):
  side by side  one row per (device, model, batch, length, luna_jax precision): luna_jax's step
                against PyTorch eager and PyTorch under torch.compile at the matching precision;
                speed = PyTorch step time / luna_jax step time (above 1: luna_jax is faster),
                memory = luna_jax / PyTorch. Memory is the peak of each framework's device
                allocator, JAX's `peak_bytes_in_use` and PyTorch's `max_memory_allocated()`, both
                holding parameters, optimizer state, batch, activations and workspace; on a CPU (a
                session's dry run) the step's peak RSS increase.
  Table 2       luna_jax alone: each model's steps/s and memory relative to the Transformer (exact
                softmax, einsum) and to the fused one (`jax.nn.dot_product_attention`), per device,
                batch and precision, from the same cells.
  Precisions are matched as: luna_jax `float32` (XLA's default precision: TF32 matmuls on a GPU)
  with PyTorch float32 (`tf32` where the session set TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, else
  `float32` as the anchor runs it: true float32 matmuls); luna_jax `bfloat16` (bfloat16 matmul
  inputs, float32 accumulation, residual stream, normalisers and softmax) and `bfloat16_all`
  (everything bfloat16) with PyTorch autocast `bf16`. PyTorch cells with no luna_jax partner (fp16)
  are listed after the tables.
  Profiles      a session's profile cells (setting `<precision>-profile`: the step timed as in the
                plain cell, then one more step traced) stay out of the tables above, which the
                plain cells fill; one row each lists the largest op classes (GPU kernels by name,
                `speed_memory_harness.op_class_times`) in ms per step and as a share of the timed
                step, and all of them together.

This module reads JSON only; it imports neither JAX, torch nor the authors' code.

  python -m benchmarks.vs_pytorch --jax runs/jax_luna/train_step/results.json \
      --torch runs/torch_luna.json --out runs/table.md
  python -m benchmarks.vs_pytorch --session benchmarks/results/gpu/vs_pytorch/session_1.json \
      --out table.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from benchmarks import speed_memory_report
from lra.files import write_atomically

#: JAX benchmark model name -> PyTorch anchor model name.
TORCH_NAMES = {'transformer': 'softmax'}
#: Targets: JAX steps/s at least this multiple of PyTorch's, memory at most this multiple.
SPEED_TARGET, MEMORY_TARGET = 1.3, 1.0
#: luna_jax precision -> the PyTorch autocast setting it is compared with.
TORCH_AMP = {'float32': 'none', 'bfloat16': 'bf16', 'bfloat16_all': 'bf16'}
#: Table 2's baselines: the exact softmax Transformer and the fused one.
BASELINES = ('transformer', 'transformer_fused')
#: A session file's format tag (`benchmarks.gpu_session` writes it).
SESSION_FORMAT = 'benchmarks.gpu_session/1'
#: Suffix of a session cell's setting that profiled the step (`benchmarks.gpu_session.PROFILE`).
PROFILE = '-profile'
#: Op classes listed per profiled cell.
PROFILE_TOP = 6


def _gb(x: float | None) -> str:
  return '-' if x is None else f'{x:.2f}'


def table(jax_cells: list, torch_cells: list) -> str:
  """The CPU table: model, length, batch, both step times and memories (GiB), their ratios."""
  lines = [
    '| model | length | batch | luna_jax step (s) | PyTorch step (s) '
    '| speed, luna_jax / PyTorch | luna_jax step memory (GiB) | PyTorch step memory (GiB) '
    '| memory, luna_jax / PyTorch '
    '| targets (speed >= 1.3x, memory <= 1.0x) | load (1 min) before the luna_jax cell |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ]
  for c in jax_cells:
    name = TORCH_NAMES.get(c['model'], c['model'])
    match = [
      t
      for t in torch_cells
      if t['model'] == name and t['length'] == c['length'] and t['batch'] == c['batch_size']
    ]
    t = match[-1] if match else None
    jax_ok, torch_ok = c['status'] == 'ok', t is not None and t['status'] == 'OK'
    jax_step = f'{c["step_time_s"]:.2f}' if jax_ok else c['status']
    torch_step = f'{t["step_s_median"]:.2f}' if torch_ok else (t['status'] if t else 'not run')
    jax_mem = c.get('step_rss_increase_bytes') if jax_ok else None
    jax_mem = None if jax_mem is None else jax_mem / 2**30
    torch_mem = t['rss_increase_gb'] if torch_ok else None
    speed = t['step_s_median'] / c['step_time_s'] if jax_ok and torch_ok else None
    memory = jax_mem / torch_mem if jax_mem is not None and torch_mem else None
    if speed is None or memory is None:
      verdict = 'n/a'
    else:
      verdict = ', '.join(
        [
          f'speed {"met" if speed >= SPEED_TARGET else "missed"}',
          f'memory {"met" if memory <= MEMORY_TARGET else "missed"}',
        ]
      )
    load = f'{c["load_average_1m_before"]:.1f}' if 'load_average_1m_before' in c else '-'
    lines.append(
      f'| {c["label"]} | {c["length"]} | {c["batch_size"]} | {jax_step} | '
      f'{torch_step} | '
      f'{"-" if speed is None else f"{speed:.2f}x"} | {_gb(jax_mem)} | '
      f'{_gb(torch_mem)} | '
      f'{"-" if memory is None else f"{memory:.2f}x"} | {verdict} | {load} |'
    )
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Device tables: cells in one shape, whichever tool wrote them.
# ----------------------------------------------------------------------------------------------


def _device_name(text: str) -> str:
  """'gpu:NVIDIA H200' (JAX) or 'NVIDIA H200' (torch) -> 'NVIDIA H200'; 'cpu:cpu' -> 'cpu'."""
  name = text.split(':', 1)[1] if ':' in text else text
  return 'cpu' if name.lower() == 'cpu' else name


def jax_records(results: dict[str, Any]) -> list[dict[str, Any]]:
  """A speed_memory `train_step` results document's cells as device-table records.

  Returns:
    One dict per cell: side 'jax', device, model, label, batch, length, precision (the benchmark's
    `precision`, or `dtype` in files written before it had one), status ('ok', 'OOM', ...), step_s
    and memory_gib (None unless ok; on GPU/TPU the device peak, on a CPU the step's RSS increase).
  """
  machine, arch = results['machine'], results['settings']['arch']
  precision = arch.get('precision') or arch.get('dtype') or 'float32'
  on_cpu = machine['backend'] == 'cpu'
  records = []
  for c in results['cells']:
    ok = c['status'] == 'ok'
    memory = None
    if ok:
      memory = c.get('step_rss_increase_bytes') if on_cpu else c.get('device_peak_bytes')
    records.append(
      {
        'side': 'jax',
        'device': _device_name(machine['devices'][0]),
        'model': c['model'],
        'label': c.get('label', c['model']),
        'batch': c['batch_size'],
        'length': c['length'],
        'precision': precision,
        'status': c['status'],
        'step_s': c['step_time_s'] if ok else None,
        'memory_gib': None if memory is None else memory / 2**30,
      }
    )
  return records


def torch_records(
  document: dict[str, Any], device: str | None = None, tf32: bool = False
) -> list[dict[str, Any]]:
  """A PyTorch anchor document's cells as device-table records.

  Args:
    document: the anchor's JSON (`meta` and `cells`).
    device: the device's name where the caller knows it (a session's GPU); else each cell's own,
      or that of the document's first finished cell.
    tf32: whether the run allowed TF32 matmuls (the anchor does not record it).

  Returns:
    One dict per cell: side 'torch', device, model (the JAX name: `softmax` -> `transformer`),
    batch, length, amp ('none', 'bf16', 'fp16'), compile, tf32, status ('ok', 'OOM', 'TIMEOUT',
    ...), step_s and memory_gib (on a GPU `peak_rss_gb`, there the peak of max_memory_allocated; on
    a CPU the step's RSS increase).
  """
  meta = document.get('meta', {})
  config = meta.get('config', {})
  names = {v: k for k, v in TORCH_NAMES.items()}
  seen = next((c['device'] for c in document['cells'] if c.get('device')), None)
  records = []
  for c in document['cells']:
    name = _device_name(device or c.get('device') or seen or meta.get('device', 'cpu'))
    ok = c.get('status') == 'OK'
    memory = None
    if ok:
      memory = c['rss_increase_gb'] if name == 'cpu' else c['peak_rss_gb']
    records.append(
      {
        'side': 'torch',
        'device': name,
        'model': names.get(c['model'], c['model']),
        'batch': c['batch'],
        'length': c['length'],
        'amp': c.get('amp', config.get('amp', 'none')),
        'compile': bool(c.get('compile', config.get('compile', False))),
        'tf32': tf32,
        'status': 'ok' if ok else c.get('status', '?'),
        'step_s': c['step_s_median'] if ok else None,
        'memory_gib': memory,
      }
    )
  return records


def read_session(path: str) -> dict[str, Any]:
  """A `benchmarks.gpu_session` file.

  Raises:
    ValueError: a file that is not a session file, naming it.
  """
  with open(path) as f:
    session = json.load(f)
  if session.get('format') != SESSION_FORMAT:
    raise ValueError(f'{path}: not a {SESSION_FORMAT} session file.')
  return session


def session_records(path: str) -> list[dict[str, Any]]:
  """The device-table records of every cell a `benchmarks.gpu_session` file holds a result for,
  profile cells aside (`profile_records`).

  Raises:
    ValueError: a file that is not a session file, naming it.
  """
  session = read_session(path)
  gpu = session.get('environment', {}).get('gpu')
  records = []
  for cell in session['cells']:
    if cell.get('result') is None or cell['setting'].endswith(PROFILE):
      continue
    if cell['side'] == 'jax':
      records += jax_records(cell['result'])
    else:
      records += torch_records(cell['result'], gpu, tf32=cell['setting'].startswith('tf32'))
  return records


def profile_records(path: str) -> list[dict[str, Any]]:
  """The finished profile cells of a `benchmarks.gpu_session` file: `jax_records`' fields plus
  `op_class_ms` (largest first) and `left_out_ms` (the classes the session did not keep).

  Raises:
    ValueError: a file that is not a session file, naming it.
  """
  records = []
  for cell in read_session(path)['cells']:
    if cell['side'] != 'jax' or not cell['setting'].endswith(PROFILE) or not cell.get('result'):
      continue
    for record, c in zip(jax_records(cell['result']), cell['result']['cells']):
      if record['status'] == 'ok' and c.get('op_class_ms'):
        left_out = c.get('op_class_ms_left_out', {}).get('ms', 0.0)
        records.append(dict(record, op_class_ms=c['op_class_ms'], left_out_ms=left_out))
  return records


def profile_table(records: list[dict[str, Any]], top: int = PROFILE_TOP) -> str:
  """One row per profiled cell (a later session's wins): its `top` op classes and all of them, in
  ms per step and as a share of the timed step."""
  latest = {}
  for r in records:
    latest[(r['device'], r['model'], r['batch'], r['length'], r['precision'])] = r
  lines = [
    '| device | model | batch | length | precision | step (ms) '
    '| largest op classes: ms per step (share of the step) | all op classes |',
    '|---|---|---:|---:|---|---:|---|---:|',
  ]
  for r in latest.values():
    step_ms = 1e3 * r['step_s']
    ops = sorted(r['op_class_ms'].items(), key=lambda item: -item[1])
    largest = '; '.join(f'{name} {ms:.1f} ({ms / step_ms:.0%})' for name, ms in ops[:top])
    total = sum(r['op_class_ms'].values()) + r['left_out_ms']
    lines.append(
      f'| {r["device"]} | {r["label"]} | {r["batch"]} | {r["length"]} | {r["precision"]} '
      f'| {step_ms:.1f} | {largest} | {total:.1f} ({total / step_ms:.0%}) |'
    )
  return '\n'.join(lines)


def _latest(records: list[dict[str, Any]], **key) -> dict[str, Any] | None:
  """The last record with these field values (a later session's rerun wins)."""
  found = [r for r in records if all(r.get(k) == v for k, v in key.items())]
  ok = [r for r in found if r['status'] == 'ok']
  return (ok or found or [None])[-1]


def _ms(record: dict[str, Any] | None) -> str:
  if record is None:
    return 'not run'
  return f'{1e3 * record["step_s"]:.1f}' if record['status'] == 'ok' else record['status']


def _ratio(x: float | None, y: float | None) -> str:
  return '' if x is None or not y else f' ({x / y:.2f}x)'


def device_table(records: list[dict[str, Any]]) -> str:
  """The side-by-side table of the device records (see the module docstring)."""
  lines = [
    '| device | model | batch | length | precision, luna_jax / PyTorch '
    '| step (ms): luna_jax | PyTorch eager (speed) | PyTorch compiled (speed) '
    '| memory (GiB): luna_jax | PyTorch eager (ratio) | PyTorch compiled (ratio) |',
    '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|',
  ]
  jax = [r for r in records if r['side'] == 'jax']
  torch = [r for r in records if r['side'] == 'torch']
  keys = []
  for r in jax:
    key = (r['device'], r['model'], r['batch'], r['length'], r['precision'])
    if key not in keys:
      keys.append(key)
  for device, model, batch, length, precision in keys:
    j = _latest(jax, device=device, model=model, batch=batch, length=length, precision=precision)
    amp = TORCH_AMP.get(precision)
    common = dict(device=device, model=model, batch=batch, length=length, amp=amp)
    eager = _latest(torch, compile=False, **common)
    compiled = _latest(torch, compile=True, **common)
    ours = j['step_s'] if j['status'] == 'ok' else None
    theirs = [t for t in (eager, compiled) if t is not None]
    if not theirs:
      torch_precision = '-'
    elif amp == 'none':
      torch_precision = 'tf32' if any(t['tf32'] for t in theirs) else 'float32'
    else:
      torch_precision = amp
    cells = [
      device,
      j['label'],
      str(batch),
      str(length),
      f'{precision} / {torch_precision}',
      _ms(j),
    ]
    for t in (eager, compiled):
      speed = _ratio(t['step_s'], ours) if t and t['status'] == 'ok' else ''
      cells.append(_ms(t) + speed)
    cells.append(_gb(j['memory_gib']))
    for t in (eager, compiled):
      if t is None or t['status'] != 'ok':
        cells.append(_ms(t))
      else:
        cells.append(_gb(t['memory_gib']) + _ratio(j['memory_gib'], t['memory_gib']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def table2(records: list[dict[str, Any]]) -> str:
  """Table 2 on the device records: luna_jax's models against the exact and the fused Transformer.

  One block per (device, batch, precision) that has a baseline cell; each row a model, each column
  a length, each entry 'speed x / memory x' (steps/s and memory relative to the baseline; '-' for
  the memory where either was not measured or the baseline's is 0, as a CPU dry run's can be).
  """
  jax = [r for r in records if r['side'] == 'jax']
  groups = []
  for r in jax:
    group = (r['device'], r['batch'], r['precision'])
    if group not in groups:
      groups.append(group)
  blocks = []
  for device, batch, precision in groups:
    sub = [
      r for r in jax if (r['device'], r['batch'], r['precision']) == (device, batch, precision)
    ]
    lengths = sorted({r['length'] for r in sub})
    models = []
    for r in sub:
      if r['model'] not in models:
        models.append(r['model'])
    for baseline in BASELINES:
      if baseline not in models:
        continue
      lines = [
        f'Table 2, {device}, batch {batch}, {precision}: steps/s / memory relative to '
        f'{_latest(sub, model=baseline)["label"]}',
        '',
        '| model | ' + ' | '.join(str(n) for n in lengths) + ' |',
        '|---|' + '---:|' * len(lengths),
      ]
      for model in models:
        row = []
        for n in lengths:
          r, base = _latest(sub, model=model, length=n), _latest(sub, model=baseline, length=n)
          if r is None:
            row.append('-')
          elif r['status'] != 'ok':
            row.append(r['status'])
          elif base is None or base['status'] != 'ok':
            row.append('n/a')
          else:
            memory = r['memory_gib'], base['memory_gib']
            ratio = '-' if None in memory or not memory[1] else f'{memory[0] / memory[1]:.2f}x'
            row.append(f'{base["step_s"] / r["step_s"]:.2f}x / {ratio}')
        lines.append(f'| {_latest(sub, model=model)["label"]} | ' + ' | '.join(row) + ' |')
      blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks)


def unmatched_torch(records: list[dict[str, Any]]) -> list[str]:
  """One line per PyTorch record that no luna_jax precision is compared with (fp16)."""
  amps = set(TORCH_AMP.values())
  return [
    f'- {t["device"]} {t["model"]} batch {t["batch"]} length {t["length"]} {t["amp"]}'
    f'{" compiled" if t["compile"] else ""}: {_ms(t)} ms, {_gb(t["memory_gib"])} GiB'
    for t in records
    if t['side'] == 'torch' and t['amp'] not in amps
  ]


def render(
  jax_paths: Sequence[str] = (), torch_paths: Sequence[str] = (), session_paths: Sequence[str] = ()
) -> str:
  """The Markdown of every table the given files fill: the CPU table for CPU runs' files, the
  device tables for GPU runs' files and for session files."""
  cpu_jax, cpu_torch, records, profiles = [], [], [], []
  for path in jax_paths:
    results = speed_memory_report.read_results(path)
    if results['machine']['backend'] == 'cpu':
      cpu_jax += [dict(c, machine=results['machine']) for c in results['cells']]
    else:
      records += jax_records(results)
  for path in torch_paths:
    with open(path) as f:
      document = json.load(f)
    if document.get('meta', {}).get('device', 'cpu') == 'cpu':
      cpu_torch += document['cells']
    else:
      records += torch_records(document)
  for path in session_paths:
    records += session_records(path)
    profiles += profile_records(path)
  parts = []
  if cpu_jax:
    parts.append(table(cpu_jax, cpu_torch))
  if records:
    parts.append(device_table(records))
    if blocks := table2(records):
      parts.append(blocks)
    if lines := unmatched_torch(records):
      parts.append('PyTorch cells without a luna_jax partner:\n\n' + '\n'.join(lines))
  if profiles:
    parts.append(
      'Profiles (luna_jax; one more step traced after the timed ones, op classes as '
      '`benchmarks.speed_memory_harness.op_class_times` counts them: GPU kernels by name):\n\n'
      + profile_table(profiles)
    )
  return '\n\n'.join(parts)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--jax', nargs='+', default=[], help='speed_memory train_step results.json files'
  )
  parser.add_argument('--torch', nargs='+', default=[], help='PyTorch anchor JSON files')
  parser.add_argument(
    '--session', nargs='+', default=[], help='benchmarks.gpu_session files (session.json)'
  )
  parser.add_argument('--out', required=True, help='Markdown file to write')
  args = parser.parse_args(argv)
  if not (args.jax or args.session):
    parser.error('give --jax files (with --torch) or --session files.')
  text = render(args.jax, args.torch, args.session)
  write_atomically(args.out, text + '\n')
  print(text)


if __name__ == '__main__':
  main()
