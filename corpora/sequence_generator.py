r"""Seeded toy corpora for the causal Luna models, in the `seq2seq` and `lm` file formats.

  python -m corpora.sequence_generator --task sort --output_dir DIR [--num_train 20000 \
      --num_val 500 --num_test 500 --min_length 4 --max_length 12 --seed 0] [--overwrite]

Tasks:
  sort / reverse: source = a random digit string, target = its digits sorted / reversed
                  (`train.tsv`, `validation.tsv`, `test.tsv`, lines `source<TAB>target`);
  lm:             one ListOps expression per line in compact form with its value,
                  e.g. `[MAX 2 9 [MIN 3 4 ] ]=9` (`train.txt`, `validation.txt`, `test.txt`).
Existing split files are never replaced unless `--overwrite` is given; running the same command
again (same settings, files intact) does nothing.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from corpora.sequences import LM_FILES, SEQ2SEQ_FILES
from lra import cli, listops_generator
from lra.core import DataError
from lra.files import writing_outputs

TASKS = ('sort', 'reverse', 'lm')


def digit_pairs(
  task: str, count: int, rng: random.Random, min_length: int, max_length: int
) -> list[tuple[str, str]]:
  """`count` (source, target) pairs of digit strings of length in [min_length, max_length]."""
  pairs = []
  for _ in range(count):
    source = ''.join(rng.choice('0123456789') for _ in range(rng.randint(min_length, max_length)))
    pairs.append((source, ''.join(sorted(source)) if task == 'sort' else source[::-1]))
  return pairs


#: The ListOps trees of the 'lm' task: their deepest operators' depth, their most arguments.
LM_TREES = {'max_depth': 4, 'max_args': 5}


def listops_lines(
  counts: dict[str, int], seed: int, min_length: int, max_length: int
) -> dict[str, list[str]]:
  """ListOps expressions `[OP a b ... ]=value` per split, from the official-distribution
  generator."""
  trees = listops_generator.generate(
    counts['train'],
    counts['validation'],
    counts['test'],
    min_length=min_length,
    max_length=max_length,
    **LM_TREES,
    seed=seed,
  )
  compact = lambda source: ' '.join(t for t in source.split() if t not in '()')
  return {
    split: [f'{compact(src)}={label}' for src, label in examples]
    for split, examples in trees.items()
  }


def write(
  task: str,
  output_dir: str | Path,
  *,
  num_train: int = 20000,
  num_val: int = 500,
  num_test: int = 500,
  min_length: int = 4,
  max_length: int = 12,
  seed: int = 0,
  overwrite: bool = False,
) -> Path:
  """Writes a toy corpus; lengths are digits (sort/reverse) or ListOps tokens (lm).

  Returns:
    The output directory.

  Raises:
    DataError: min_length above max_length, lengths with no room for a ListOps tree (lm), or a
      split file exists, was not written with these settings, and `overwrite` is False.
  """
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}')
  if task == 'lm':  # Refused before writing_outputs moves the files in the way aside.
    listops_generator.check_settings(min_length, max_length, LM_TREES['max_args'])
  elif min_length > max_length:
    raise DataError(f'--min_length {min_length} is above --max_length {max_length}.')
  out = Path(output_dir)
  files = LM_FILES if task == 'lm' else SEQ2SEQ_FILES
  paths = [out / name for name in files.values()]
  counts = {'train': num_train, 'validation': num_val, 'test': num_test}
  settings = dict(task=task, **counts, min_length=min_length, max_length=max_length, seed=seed)
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return out
    out.mkdir(parents=True, exist_ok=True)
    if task == 'lm':
      for split, lines in listops_lines(counts, seed, min_length, max_length).items():
        (out / LM_FILES[split]).write_text(''.join(f'{line}\n' for line in lines))
    else:
      rng = random.Random(seed)
      for split, count in counts.items():
        pairs = digit_pairs(task, count, rng, min_length, max_length)
        (out / SEQ2SEQ_FILES[split]).write_text(''.join(f'{s}\t{t}\n' for s, t in pairs))
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--task', required=True, choices=TASKS)
  parser.add_argument('--output_dir', required=True, type=cli.folder)
  cli.add_integer_flags(
    parser,
    [
      ('num_train', 20000, 1, 'training examples'),
      ('num_val', 500, 1, 'validation examples'),
      ('num_test', 500, 1, 'test examples'),
      ('min_length', 4, 1, 'shortest source (digits; lm: ListOps tokens)'),
      ('max_length', 12, 1, 'longest source (digits; lm: ListOps tokens)'),
      ('seed', 0, 0, 'random seed'),
    ],
  )
  parser.add_argument(
    '--overwrite', action='store_true', help='replace existing split files (default: refuse)'
  )
  args = parser.parse_args(argv)
  try:
    out = write(
      args.task,
      args.output_dir,
      num_train=args.num_train,
      num_val=args.num_val,
      num_test=args.num_test,
      min_length=args.min_length,
      max_length=args.max_length,
      seed=args.seed,
      overwrite=args.overwrite,
    )
  except DataError as e:
    cli.refuse(e)
  counts = {'train': args.num_train, 'validation': args.num_val, 'test': args.num_test}
  files = LM_FILES if args.task == 'lm' else SEQ2SEQ_FILES
  listing = ', '.join(f'{files[split]} ({count} lines)' for split, count in counts.items())
  print(f'{out}: the {args.task} corpus, {listing}')


if __name__ == '__main__':
  main()
