r"""Leaderboard report: a Table-1-style markdown of LRA runs next to the paper, and a Figure-1-style
plot.

  python -m benchmarks.report --runs_dir runs --output_dir reports \
      [--benchmark_json benchmarks/results/cpu/train_step/results.json] [--length 4096] \
      [--checkpoint final|best]

Every `results.json` under `--runs_dir` (written by `luna_jax.training.trainer.train_and_evaluate`)
is one run; runs are grouped by model variant (read from the stored config: model name, attention,
projection length, contextual P) and task. `leaderboard.md` gives the test accuracy (%) per task (of
the final parameters, the official LRA protocol, or with `--checkpoint best` of the best validation
checkpoint's; both are in every `results.json`; a best checkpoint chosen on test data, because the
run's validation split was its test split, is marked †), mean ± sample standard deviation over the
runs (seeds) when there are several, the 5-task average and the average without Retrieval (computed
from the per-task means, only when every task is there), each model's row from the Luna paper's
Table 1 next to it. `figure1.png` plots, like the paper's Figure 1, the average accuracy without
Retrieval against training steps/s, bubble area proportional to peak memory, from a
`benchmarks.speed_memory` train_step JSON at one sequence length; a model's accuracy is ours when
every task but Retrieval has runs, else the paper's (hollow bubble).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from configs.variants import (
  CONFIG_VARIANTS,
  TABLE1_TASKS,
  TABLE1_TITLES,
  VARIANTS,
  label,
  variant_of,
)

#: `--checkpoint` choices -> how `leaderboard.md` names the parameters its accuracies come from.
CHECKPOINTS = {'final': 'the final parameters', 'best': 'the best validation checkpoint'}


def collect_runs(runs_dir: str, checkpoint: str = 'final') -> dict[tuple[str, str], list[float]]:
  """Test accuracies (%) of every run under `runs_dir`, by (variant, task), in seed order.

  Args:
    runs_dir: folder searched for `results.json` files.
    checkpoint: 'final' (`results['test']`) or 'best' (`results['best']['test']`).

  Raises:
    ValueError: an unknown `checkpoint`, or (with 'best') a results.json without the best
      checkpoint's test metrics, naming the file and what to do.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {tuple(CHECKPOINTS)}, got {checkpoint!r}.')
  runs: dict[tuple[str, str], list[tuple[int, float]]] = {}
  for root, _, files in sorted(os.walk(runs_dir)):
    if 'results.json' not in files:
      continue
    path = os.path.join(root, 'results.json')
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
    config = results['config']
    key = (variant_of(config['model']), config['data']['task'])
    test = results['test'] if checkpoint == 'final' else results.get('best', {}).get('test')
    if test is None:
      raise ValueError(
        f"{path} has no test metrics of the best checkpoint ('best': {{'test': ...}}); "
        'it was written by an older trainer: use --checkpoint final, or evaluate again '
        'by running the same command with the same --workdir.'
      )
    runs.setdefault(key, []).append((config['seed'], 100.0 * test['accuracy']))
  return {key: [acc for _, acc in sorted(values)] for key, values in runs.items()}


def selected_on_test(results: Mapping[str, Any]) -> bool:
  """Whether the run's best checkpoint was chosen on test data (validation split = test split).

  Results written before the trainer recorded it (`best.selected_on_test`) are Text runs when true:
  the Text loader then always validated on the test split.
  """
  return bool(
    results.get('best', {}).get('selected_on_test', results['config']['data']['task'] == 'text')
  )


def collect_test_selected(runs_dir: str) -> set[tuple[str, str]]:
  """The (variant, task) keys of `collect_runs` with a run whose best checkpoint was chosen on
  test data."""
  keys = set()
  for root, _, files in sorted(os.walk(runs_dir)):
    if 'results.json' in files:
      with open(os.path.join(root, 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
      if selected_on_test(results):
        keys.add((variant_of(results['config']['model']), results['config']['data']['task']))
  return keys


def averages(task_means: Mapping[str, float]) -> tuple[float | None, float | None]:
  """(5-task average, average without Retrieval); None where a task is missing."""

  def mean(tasks):
    return (
      statistics.fmean(task_means[t] for t in tasks)
      if all(t in task_means for t in tasks)
      else None
    )

  return mean(TABLE1_TASKS), mean([t for t in TABLE1_TASKS if t != 'retrieval'])


#: Mark of a figure that involves a best checkpoint chosen on test data.
ON_TEST = '†'


def _cell(values: Sequence[float] | None, on_test: bool = False) -> str:
  if not values:
    return '-'
  mark = ON_TEST if on_test else ''
  if len(values) == 1:
    return f'{values[0]:.2f}{mark}'
  return f'{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}{mark}'


def _number(value: float | None, on_test: bool = False) -> str:
  return '-' if value is None else f'{value:.2f}' + (ON_TEST if on_test else '')


def leaderboard(
  runs: Mapping[tuple[str, str], Sequence[float]], on_test: frozenset[tuple[str, str]] = frozenset()
) -> str:
  """The markdown table: for every model with runs, its paper row and its row of runs.

  Cells (and averages over them) of the (variant, task) keys in `on_test` are marked † (chosen on
  test data).
  """
  variants = [v for v in CONFIG_VARIANTS if any(key[0] == v for key in runs)]
  variants += sorted({key[0] for key in runs} - set(variants))
  lines = [
    '| Model | Source | ' + ' | '.join(TABLE1_TITLES) + ' | Avg | Avg (w/o rtl) |',
    '|---|---|' + '---:|' * (len(TABLE1_TASKS) + 2),
  ]
  for variant in variants:
    table1 = VARIANTS[variant].table1 if variant in VARIANTS else None
    if table1 is not None:
      paper = dict(zip(TABLE1_TASKS, table1))
      lines.append(
        f'| {label(variant)} | paper | '
        + ' | '.join(f'{paper[t]:.2f}' for t in TABLE1_TASKS)
        + ' | '
        + ' | '.join(_number(a) for a in averages(paper))
        + ' |'
      )
    counts = sorted({len(runs[(variant, t)]) for t in TABLE1_TASKS if (variant, t) in runs})
    source = 'ours (' + '/'.join(map(str, counts)) + (' run)' if counts == [1] else ' runs)')
    means = {t: statistics.fmean(runs[(variant, t)]) for t in TABLE1_TASKS if (variant, t) in runs}
    marked = {t for t in TABLE1_TASKS if (variant, t) in on_test}
    average_marks = (bool(marked), bool(marked - {'retrieval'}))
    lines.append(
      f'| {label(variant)} | {source} | '
      + ' | '.join(_cell(runs.get((variant, t)), t in marked) for t in TABLE1_TASKS)
      + ' | '
      + ' | '.join(_number(a, m) for a, m in zip(averages(means), average_marks))
      + ' |'
    )
  return '\n'.join(lines)


def leaderboard_markdown(
  runs: Mapping[tuple[str, str], Sequence[float]],
  runs_dir: str,
  checkpoint: str = 'final',
  on_test: frozenset[tuple[str, str]] = frozenset(),
) -> str:
  """The whole `leaderboard.md`: title, provenance (runs, which checkpoint), the table and, when
  `on_test` marks cells, the note that says what † means."""
  total = sum(len(v) for v in runs.values())
  note = (
    [
      f'{ON_TEST} Selected on test data: the best checkpoint of at least one of these runs '
      'was chosen on its validation split, which is its test split (the official LRA Text '
      'protocol), so the figure is not a held-out one.',
      '',
    ]
    if on_test
    else []
  )
  return '\n'.join(
    [
      '# LRA leaderboard',
      '',
      f'{total} runs from `{runs_dir}`: test accuracy (%) of {CHECKPOINTS[checkpoint]}, '
      'mean ± sample standard deviation over runs (seeds) where there are several. '
      'Avg: mean of the 5 task means; Avg (w/o rtl): without Retrieval (both only when every '
      'task has runs). Paper rows: Luna paper (Ma et al., NeurIPS 2021) Table 1, the baselines '
      'there from Tay et al. (2021).',
      '',
      leaderboard(runs, on_test),
      '',
      *note,
    ]
  )


def figure1(
  benchmark: Mapping[str, Any],
  runs: Mapping[tuple[str, str], Sequence[float]],
  path: str,
  length: int | None = None,
) -> None:
  """Figure 1 of the paper: average accuracy without Retrieval against steps/s, bubble area =
  memory.

  Args:
    benchmark: a `benchmarks.speed_memory` results document (train_step mode).
    runs: `collect_runs` output (may be empty: paper accuracies only).
    path: output PNG.
    length: sequence length of the speed/memory cells (default: the longest length at which every
      model with an accuracy has an 'ok' cell).

  Raises:
    ValueError: no benchmarked model has an accuracy (ours or the paper's).
  """
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  points = {}
  for variant in CONFIG_VARIANTS:
    ours = averages(
      {t: statistics.fmean(runs[(variant, t)]) for t in TABLE1_TASKS if (variant, t) in runs}
    )[1]
    table1 = VARIANTS[variant].table1
    paper = averages(dict(zip(TABLE1_TASKS, table1)))[1] if table1 is not None else None
    cells = {
      c['length']: c for c in benchmark['cells'] if c['model'] == variant and c['status'] == 'ok'
    }
    if (ours is not None or paper is not None) and cells:
      points[variant] = (ours if ours is not None else paper, ours is not None, cells)
  if not points:
    raise ValueError("no benchmarked model has an accuracy (ours or the paper's).")
  if length is None:
    length = max(set.intersection(*(set(cells) for _, _, cells in points.values())))
  fig, ax = plt.subplots(figsize=(7, 5))
  largest = max(cells[length]['memory_bytes'] for _, _, cells in points.values() if length in cells)
  for i, (variant, (accuracy, is_ours, cells)) in enumerate(points.items()):
    if length not in cells:
      continue
    cell = cells[length]
    color = f'C{i}'
    ax.scatter(
      cell['steps_per_s'],
      accuracy,
      s=2000 * cell['memory_bytes'] / largest,
      alpha=0.5,
      facecolors=color if is_ours else 'none',
      edgecolors=color,
      linewidths=2,
    )
    ax.annotate(
      f'{label(variant)}\n{cell["memory_bytes"] / 2**30:.2f} GiB',
      (cell['steps_per_s'], accuracy),
      ha='center',
      va='center',
      fontsize=8,
    )
  ax.set_xscale('log')
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel(f'training steps / s at length {length}')
  ax.set_ylabel('LRA average accuracy without Retrieval (%)')
  machine = benchmark.get('machine', {})
  ax.set_title(
    f'Accuracy, speed and memory (bubble area) on {machine.get("backend", "?")}; '
    'hollow = paper accuracy',
    fontsize=9,
  )
  ax.margins(0.25)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--runs_dir', required=True, help='folder searched for results.json files.')
  parser.add_argument(
    '--output_dir', required=True, help='where leaderboard.md and figure1.png go.'
  )
  parser.add_argument(
    '--benchmark_json',
    default='benchmarks/results/cpu/train_step/results.json',
    help="speed_memory train_step results for figure1.png ('' to skip the plot).",
  )
  parser.add_argument(
    '--length', type=int, default=None, help='sequence length of the plotted cells.'
  )
  parser.add_argument(
    '--checkpoint',
    choices=tuple(CHECKPOINTS),
    default='final',
    help='test accuracy of the final parameters (official LRA protocol) or of the best '
    'validation checkpoint.',
  )
  args = parser.parse_args(argv)
  runs = collect_runs(args.runs_dir, args.checkpoint)
  on_test = frozenset(collect_test_selected(args.runs_dir) if args.checkpoint == 'best' else ())
  os.makedirs(args.output_dir, exist_ok=True)
  with open(os.path.join(args.output_dir, 'leaderboard.md'), 'w', encoding='utf-8') as f:
    f.write(leaderboard_markdown(runs, args.runs_dir, args.checkpoint, on_test))
  print(f'{sum(map(len, runs.values()))} runs -> {os.path.join(args.output_dir, "leaderboard.md")}')
  if args.benchmark_json:
    with open(args.benchmark_json, encoding='utf-8') as f:
      benchmark = json.load(f)
    figure1(benchmark, runs, os.path.join(args.output_dir, 'figure1.png'), args.length)
    print(f'figure -> {os.path.join(args.output_dir, "figure1.png")}')


if __name__ == '__main__':
  main()
