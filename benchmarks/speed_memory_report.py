"""The reports of the speed and memory benchmark (`benchmarks.speed_memory`): `results.json`, the
tables (relative to a softmax baseline in the paper's Table 2 layout, absolute figures, time per XLA
op class), the targets' summary and the plot.

Not the LRA accuracy leaderboard, which is `benchmarks.report`.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence
from typing import Any

from configs import variants
from lra.files import write_atomically

#: One benchmark cell as `results.json` holds it (model, length, status, figures).
Cell = dict[str, Any]

#: The model every ratio is taken against, and the fast softmax baseline.
BASELINE = 'transformer'
FUSED_BASELINE = 'transformer_fused'


def read_results(path: str, mode: str = 'train_step') -> dict[str, Any]:
  """A `results.json` of `benchmarks.speed_memory` run in `mode`.

  Raises:
    ValueError: a missing or unreadable file, or results of another mode, naming the file and the
      command that writes it.
  """
  command = f'python -m benchmarks.speed_memory --mode {mode} --output_dir <folder>'
  try:
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
    found = results['settings']['mode']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: no speed_memory results ({e}); {command} writes them.') from None
  if found != mode:
    raise ValueError(f'{path}: mode {found!r}, expected {mode} results ({command}).')
  return results


def length_label(n: int) -> str:
  """A sequence length as the tables write it: '4K' for 4096, '100' for 100."""
  return f'{n // 1024}K' if n % 1024 == 0 else str(n)


def gib(x: float | None) -> str:
  """Bytes in GiB with two decimals; '-' for None."""
  return '-' if x is None else f'{x / 2**30:.2f}'


def _cell(cells: Sequence[Cell], model: str, length: int) -> Cell | None:
  for c in cells:
    if c['model'] == model and c['length'] == length:
      return c
  return None


def _ratio_text(cell: Cell | None, base: Cell | None, key: str, digits: int) -> str:
  if cell is None:
    return '-'
  if cell['status'] != 'ok':
    return cell['status']
  if base is None or base['status'] != 'ok':
    return 'n/a'
  return f'{cell[key] / base[key]:.{digits}f}'


def relative_table(
  cells: Sequence[Cell], models: Sequence[str], lengths: Sequence[int], baseline: str
) -> str:
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


def _model_columns(cell: Cell) -> str:
  """The model GFLOP/step, model TFLOP/s and MFU (%) cells of a row; '-' where a figure is absent
  (documents written before model FLOPs were counted, cells not timed)."""
  figures = (
    ('model_flops_per_step', 1e-9, '.1f'),
    ('model_flop_per_s', 1e-12, '.3g'),
    ('mfu', 100.0, '.1f'),
  )
  return ' | '.join(
    '-' if cell.get(key) is None else f'{scale * cell[key]:{spec}}' for key, scale, spec in figures
  )


def absolute_table(cells: Sequence[Cell]) -> str:
  """Every cell's absolute figures. GFLOP/step, GFLOP/s and % matmul peak are XLA's count of
  every op; model GFLOP/step, model TFLOP/s and MFU count the model's matmuls
  (`benchmarks.model_flops`)."""
  lines = [
    '| Model | Length | Status | steps/s | examples/s | step (ms) | compile (s) | '
    'peak memory (GiB) | peak RSS (GiB) | step RSS increase (GiB) | GFLOP/step | GFLOP/s | '
    '% matmul peak | model GFLOP/step | model TFLOP/s | MFU (%) | note |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for c in cells:
    head = f'| {c["label"]} | {length_label(c["length"])} | {c["status"]} |'
    if c['status'] != 'ok':
      compiled = c.get('compiled_peak_bytes')
      memory = '-' if compiled is None else f'{gib(compiled)} (compiled)'
      compile_s = f'{c["compile_s"]:.1f}' if 'compile_s' in c else '-'
      lines.append(
        head + f' - | - | - | {compile_s} | {memory} | - | - | - | - | - | {_model_columns(c)} | '
        f'{c.get("reason", "")} |'
      )
      continue
    lines.append(
      head
      + f' {c["steps_per_s"]:.3g} | {c["examples_per_s"]:.3g} | {1e3 * c["step_time_s"]:.0f} | '
      f'{c["compile_s"]:.1f} | {gib(c["memory_bytes"])} | {gib(c["peak_rss_bytes"])} | '
      f'{gib(c.get("step_rss_increase_bytes"))} | {c["flops_per_step"] / 1e9:.1f} | '
      f'{c["flop_per_s"] / 1e9:.1f} | '
      f'{100 * c["matmul_peak_fraction"]:.0f} | {_model_columns(c)} | '
      f'load {c["load_average_1m_before"]:.1f} |'
    )
  return '\n'.join(lines)


def profile_table(cells: Sequence[Cell], top: int = 12) -> str:
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


def targets_summary(cells: Sequence[Cell]) -> list[str]:
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


def machine_lines(results: dict[str, Any]) -> list[str]:
  """The machine and its measured dense-matmul peaks, as the tables' header lines (documents
  written before the bfloat16 peak was measured have the float32 one only)."""
  m = results['machine']
  ram = f'{m["ram_bytes"] / 2**30:.0f} GiB RAM' if m['ram_bytes'] else 'RAM unknown'
  lines = [
    f'Machine: {m["cpu_model"]}, {m["cpu_cores"]} cores, {ram}; backend `{m["backend"]}` '
    f'({", ".join(sorted(set(m["devices"])))}); jax {m["jax"]}, jaxlib {m["jaxlib"]}, '
    f'flax {m["flax"]}, Python {m["python"]}.',
  ]
  if 'matmul_peaks' not in results:
    peak = results['matmul_peak']
    return lines + [
      f'Dense-matmul peak (float32 {peak["size"]}x{peak["size"]}, same run): '
      f'{peak["flop_per_s"] / 1e9:.1f} GFLOP/s.'
    ]
  names = {
    'float32': 'float32 (TF32 on NVIDIA GPUs)',
    'bfloat16': 'bfloat16 (float32 accumulation)',
  }
  peaks = ', '.join(
    f'{names[dtype]} {peak["flop_per_s"] / 1e12:.3g} TFLOP/s'
    for dtype, peak in results['matmul_peaks'].items()
  )
  size, device = (results['matmul_peak'][key] for key in ('size', 'device'))
  return lines + [
    f'Dense-matmul peaks ({size}x{size} matmuls on {device}, same run): {peaks}. MFU = model '
    f'FLOP/s over the {results["mfu_dtype"]} peak.'
  ]


def settings_line(results: dict[str, Any]) -> str:
  """The run's settings (mode, batch, timing, architecture, XLA flags, sources) in one line."""
  s = results['settings']
  a = s['arch']
  return (
    f'Mode `{s["mode"]}`, batch size {s["batch_size"]}, {s["warmup"]} warm-up + median of '
    f'{s["repeats"]} timed runs; {a["num_layers"]} layers, d {a["emb_dim"]}, FFN {a["mlp_dim"]}, '
    f'{a["num_heads"]} heads, precision {a.get("precision") or a["dtype"]}, '
    f'dropout {a["dropout_rate"]}, attention dropout '
    f'{a["attention_dropout_rate"]} (none in the fused attention), {a["pooling"]} pooling, '
    f'remat {a.get("remat", "none")}; '
    f'XLA_FLAGS `{results["machine"].get("xla_flags") or "(none)"}`. '
    f'Peak memory: {results["memory_source"]}. FLOPs: XLA cost analysis of the compiled step.'
    + (f' Model FLOPs: {results["model_flops_source"]}.' if 'model_flops_source' in results else '')
  )


def write_reports(results: dict[str, Any], output_dir: str) -> None:
  """Writes results.json, table_relative.md, table_absolute.md, plot.png (when a cell was timed)
  and, if profiled, profile.md; each text file replaced whole (`lra.files.write_atomically`)."""
  os.makedirs(output_dir, exist_ok=True)
  write_atomically(os.path.join(output_dir, 'results.json'), json.dumps(results, indent=1))
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
  write_atomically(os.path.join(output_dir, 'table_relative.md'), '\n'.join(relative))
  absolute = (
    [f'# Absolute figures ({results["settings"]["mode"]})', '']
    + header
    + [absolute_table(cells), '']
  )
  write_atomically(os.path.join(output_dir, 'table_absolute.md'), '\n'.join(absolute))
  if any(c['status'] == 'ok' for c in cells):  # Nothing to plot when every cell is compiled only.
    plot(results, os.path.join(output_dir, 'plot.png'))
  if any(c.get('op_class_ms') for c in cells):
    profile = [
      f'# Time per XLA op class ({results["settings"]["mode"]})',
      '',
      *header,
      'Milliseconds per step of each op class, from one profiled step after the timed runs '
      '(`jax.profiler.trace`; traces under `traces/`):',
      '',
      profile_table(cells),
      '',
    ]
    write_atomically(os.path.join(output_dir, 'profile.md'), '\n'.join(profile))


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
