r"""Offline ListOps generator with the official distribution, writing the official TSV format.

Trees follow `lra_benchmarks/data/listops.py`: starting at depth 1, a node below `max_depth` draws
r ~ U[0, 1) and is a leaf (a uniform digit) when r > VALUE_P = 0.25 -- so leaves are drawn with
probability 0.75 -- and is otherwise an operator (`[MIN`, `[MAX`, `[MED`, `[SM`) over 2..max_args
children; at `max_depth` it is always a leaf. Length counts operators, digits and `]` (no
parentheses); a tree is kept when `min_length < length < max_length`, root leaves never. Values:
MED = int(median), SM = sum mod 10. Unique trees are kept in generation order and split into
train/val/test. Generation stops a tree as soon as it exceeds `max_length`, so short-sequence
settings (e.g. `--min_length 10 --max_length 100 --max_depth 4`) run in seconds.

  python -m lra.listops_generator --output_dir DIR [--num_train 96000 --num_val 2000 \
      --num_test 2000 --min_length 500 --max_length 2000 --max_depth 10 --max_args 10 --seed 0] \
      [--num_workers N] [--overwrite]

The official sizes take about 5 minutes on one core; `--num_workers 16` draws them in parallel
processes (other trees of the same distribution: the files depend on the worker count).

Existing split files are never replaced unless `--overwrite` is given; running the same command
again (same settings, files intact) does nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import multiprocessing
import os
import random
import statistics
from pathlib import Path

from lra import cli
from lra.core import DataError
from lra.files import writing_outputs
from lra.listops import FILES

VALUE_P = 0.25
OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')
END = ']'
# The official serialisation nests binary tuples:
# ((('[MAX', 2), 9), ']') -> "( ( ( [MAX 2 ) 9 ) ] )".
Tree = int | str | tuple['Tree', 'Tree']
_MAX_FRUITLESS_TRIES = 200_000
#: Rounds of parallel drawing before `generate` gives up on filling the gap left by duplicates.
_MAX_ROUNDS = 100


class _TooLong(Exception):
  """Raised inside tree generation once the tree reaches the length limit."""


def apply_operator(op: str, args: list[int]) -> int:
  """Evaluates one ListOps operator on digit arguments.

  Raises:
    ValueError: an unknown operator.
  """
  if op == '[MIN':
    return min(args)
  if op == '[MAX':
    return max(args)
  if op == '[MED':
    return int(statistics.median(args))
  if op == '[SM':
    return sum(args) % 10
  raise ValueError(f'unknown operator {op!r}')


def to_string(tree: Tree) -> str:
  """Serialises a tree the official way: every pair becomes `( left right )`."""
  if isinstance(tree, tuple):
    return f'( {to_string(tree[0])} {to_string(tree[1])} )'
  return str(tree)


def _generate(
  rng: random.Random, depth: int, max_depth: int, max_args: int, budget: list[int]
) -> tuple[Tree, int]:
  """Draws one (sub)tree and returns it with its value; raises _TooLong past the budget."""
  r = rng.random() if depth < max_depth else 1.0
  budget[0] -= 1
  if budget[0] < 0:
    raise _TooLong
  if r > VALUE_P:
    value = rng.randint(0, 9)
    return value, value
  budget[0] -= 1  # The closing `]`.
  children = [
    _generate(rng, depth + 1, max_depth, max_args, budget) for _ in range(rng.randint(2, max_args))
  ]
  op = rng.choice(OPERATORS)
  tree: Tree = op
  for child, _ in children:
    tree = (tree, child)
  return (tree, END), apply_operator(op, [value for _, value in children])


def generate_tree(
  rng: random.Random, *, max_depth: int = 10, max_args: int = 10, max_length: int = 2000
) -> tuple[Tree, int, int] | None:
  """Draws one tree; returns (tree, value, length), or None when it reaches `max_length` tokens."""
  budget = [max_length - 1]
  try:
    tree, value = _generate(rng, 1, max_depth, max_args, budget)
  except _TooLong:
    return None
  return tree, value, max_length - 1 - budget[0]


def _draw_unique(
  rng: random.Random,
  count: int,
  *,
  min_length: int,
  max_length: int,
  max_depth: int,
  max_args: int,
) -> dict[str, int]:
  """Draws trees from `rng` until `count` distinct ones are kept; returns {source: label}.

  Raises:
    DataError: no new tree in `_MAX_FRUITLESS_TRIES` draws in a row.
  """
  examples: dict[str, int] = {}
  fruitless = 0
  while len(examples) < count:
    drawn = generate_tree(rng, max_depth=max_depth, max_args=max_args, max_length=max_length)
    if drawn is not None and drawn[2] > min_length and isinstance(drawn[0], tuple):
      source = to_string(drawn[0])
      if source not in examples:
        examples[source] = drawn[1]
        fruitless = 0
        continue
    fruitless += 1
    if fruitless > _MAX_FRUITLESS_TRIES:
      raise DataError(
        f'No new tree with {min_length} < length < {max_length} in '
        f'{_MAX_FRUITLESS_TRIES} draws after {len(examples)} examples (max_depth '
        f'{max_depth}, max_args {max_args}); widen the length range or the depth.'
      )
  return examples


def _draw_worker(seed: str, count: int, settings: dict[str, int]) -> dict[str, int]:
  """One worker process's share: `count` distinct trees from the RNG seeded with `seed`."""
  return _draw_unique(random.Random(seed), count, **settings)


def check_settings(min_length: int, max_length: int, max_args: int, num_workers: int = 1) -> None:
  """Refuses settings that `generate` cannot draw from, before any file is claimed or deleted.

  Raises:
    DataError: max_args < 2, no length strictly between min_length and max_length that a tree can
      have, or num_workers < 1.
  """
  if max_args < 2:
    raise DataError(f'--max_args {max_args}: operators take at least 2 arguments.')
  if min_length + 1 >= max_length - 1:
    raise DataError(
      f'--min_length {min_length} --max_length {max_length}: max_length must exceed min_length '
      'by at least 3 (there is no room for a tree between them).'
    )
  if num_workers < 1:
    raise DataError(f'num_workers must be at least 1, got {num_workers}')


def generate(
  num_train: int = 96000,
  num_val: int = 2000,
  num_test: int = 2000,
  *,
  min_length: int = 500,
  max_length: int = 2000,
  max_depth: int = 10,
  max_args: int = 10,
  seed: int = 0,
  num_workers: int = 1,
) -> dict[str, list[tuple[str, int]]]:
  """Generates unique ListOps examples.

  With one worker, one RNG seeded with `seed` draws every tree. With `num_workers` > 1, worker w
  of round r draws its share from an RNG seeded with the string `f'{seed}/{r}/{w}'` (the same
  distribution, other trees: the output depends on `num_workers`); the shares are joined in worker
  order, trees already kept are dropped, and further rounds fill any gap that leaves. The official
  96,000 + 2,000 + 2,000 examples take about 5 minutes on one core.

  Args:
    num_train, num_val, num_test: split sizes.
    min_length, max_length: keep trees with min_length < length < max_length tokens.
    max_depth: depth of the deepest operator nodes' children (the root is depth 1).
    max_args: operators take 2..max_args arguments.
    seed: seed of the Python RNG.
    num_workers: processes drawing trees in parallel.

  Returns:
    {'train'|'validation'|'test': [(official Source string, label)]}.

  Raises:
    DataError: settings that leave no room for a tree, too few distinct trees, or
      `num_workers` < 1.
  """
  check_settings(min_length, max_length, max_args, num_workers)
  settings = dict(
    min_length=min_length, max_length=max_length, max_depth=max_depth, max_args=max_args
  )
  total = num_train + num_val + num_test
  if num_workers == 1:
    examples = _draw_unique(random.Random(seed), total, **settings)
  else:
    examples = {}
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
      for round_index in range(_MAX_ROUNDS):
        missing = total - len(examples)
        if missing <= 0:
          break
        shares = [missing // num_workers + (w < missing % num_workers) for w in range(num_workers)]
        seeds = [f'{seed}/{round_index}/{w}' for w in range(num_workers)]
        for share in pool.map(_draw_worker, seeds, shares, [settings] * num_workers):
          for source, label in share.items():
            examples.setdefault(source, label)
    if len(examples) < total:
      raise DataError(
        f'Only {len(examples)} distinct trees of {total} after {_MAX_ROUNDS} rounds of '
        f'{num_workers} workers; widen the length range or the depth.'
      )
  items = list(examples.items())
  return {
    'train': items[:num_train],
    'validation': items[num_train : num_train + num_val],
    'test': items[num_train + num_val :],
  }


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
  """Writes rows in the official format (csv tab dialect, header `Source<TAB>Target`, CRLF),
  through a temporary file renamed when complete: a killed run leaves no truncated split."""
  temporary = path.with_name(f'.{path.name}.tmp')
  with open(temporary, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, delimiter='\t')
    writer.writerow(['Source', 'Target'])
    writer.writerows(rows)
  os.replace(temporary, path)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--output_dir', required=True, type=cli.folder, help='folder of the three split files'
  )
  cli.add_integer_flags(
    parser,
    [
      ('num_train', 96000, 1, 'training examples'),
      ('num_val', 2000, 1, 'validation examples'),
      ('num_test', 2000, 1, 'test examples'),
      ('min_length', 500, 0, 'trees are longer than this, in tokens'),
      ('max_length', 2000, 1, 'trees are shorter than this, in tokens'),
      ('max_depth', 10, 1, 'deepest tree level (leaves only there)'),
      ('max_args', 10, 2, 'most operands of an operator'),
      ('seed', 0, 0, 'random seed'),
      ('num_workers', 1, None, 'processes drawing trees (other trees for every count)'),
    ],
  )
  parser.add_argument(
    '--overwrite', action='store_true', help='replace existing split files (default: refuse)'
  )
  args = vars(parser.parse_args(argv))
  output_dir, overwrite = args.pop('output_dir'), args.pop('overwrite')
  paths = [output_dir / name for name in FILES.values()]
  # One worker is the default and is left out of the recorded settings, so files generated before
  # the option existed still match.
  recorded = {k: v for k, v in args.items() if k != 'num_workers' or v != 1}
  try:
    check_settings(args['min_length'], args['max_length'], args['max_args'], args['num_workers'])
    with writing_outputs(paths, overwrite, recorded) as todo:
      if not todo:
        return
      splits = generate(**args)
      output_dir.mkdir(parents=True, exist_ok=True)
      for split, rows in splits.items():
        write_tsv(output_dir / FILES[split], rows)
        print(f'{output_dir / FILES[split]}: {len(rows)} examples')
  except DataError as e:
    cli.refuse(e)


if __name__ == '__main__':
  main()
