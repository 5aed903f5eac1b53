r"""Side-by-side table of luna_jax and the authors' PyTorch Luna: training-step time and memory.

Reads `benchmarks.speed_memory` results (`train_step` mode) and the JSON files written by a PyTorch
anchor that times the authors' Luna (fairseq-apollo) at the same configuration, and writes one
Markdown table. Models are matched by name (`luna<l>` on both sides, the JAX `transformer` against
the PyTorch `softmax`) at equal length and batch size. Memory on both sides is the training step's
own peak RSS increase: peak RSS minus the RSS just before the first step (for JAX after
compiling), in GiB on both sides (the anchor's `rss_increase_gb` is KiB / 2^20).
This module reads JSON only; it imports neither torch nor the authors' code.

  python -m benchmarks.vs_pytorch --jax runs/jax_luna/train_step/results.json \
      --torch runs/torch_luna.json --out runs/table.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

#: JAX benchmark model name -> PyTorch anchor model name.
TORCH_NAMES = {'transformer': 'softmax'}
#: Targets: JAX steps/s at least this multiple of PyTorch's, memory at most this multiple.
SPEED_TARGET, MEMORY_TARGET = 1.3, 1.0


def load_cells(jax_paths: Sequence[str], torch_paths: Sequence[str]) -> tuple[list, list]:
  """The JAX `train_step` cells and the PyTorch cells of the given files.

  Raises:
    ValueError: a JAX results file of another mode than train_step, naming it.
  """
  jax_cells, torch_cells = [], []
  for path in jax_paths:
    with open(path) as f:
      results = json.load(f)
    if results['settings']['mode'] != 'train_step':
      raise ValueError(
        f'{path}: mode {results["settings"]["mode"]!r}, expected train_step results.'
      )
    jax_cells += [dict(c, machine=results['machine']) for c in results['cells']]
  for path in torch_paths:
    with open(path) as f:
      torch_cells += json.load(f)['cells']
  return jax_cells, torch_cells


def _gb(x: float | None) -> str:
  return '-' if x is None else f'{x:.2f}'


def table(jax_cells: list, torch_cells: list) -> str:
  """Markdown rows: model, length, batch, both step times and memories, and their ratios."""
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


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--jax', nargs='+', required=True, help='speed_memory train_step results.json files'
  )
  parser.add_argument('--torch', nargs='+', required=True, help='PyTorch anchor JSON files')
  parser.add_argument('--out', required=True, help='Markdown file to write')
  args = parser.parse_args(argv)
  jax_cells, torch_cells = load_cells(args.jax, args.torch)
  text = table(jax_cells, torch_cells)
  with open(args.out, 'w') as f:
    f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  main()
