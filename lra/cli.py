"""Argument types of the command lines (the generators, `lra.prepare`, the tokenizer command, the
benchmarks): each checks its value where it enters, so that a bad flag fails at once with one line
from argparse, `error: argument --num_train: must be an integer >= 1, got '0'`, instead of an
empty file, a silent no-op or a traceback later. `refuse` ends a command on an error of its data
(files it will not overwrite, data it cannot make) with one line, without argparse's usage.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn


def refuse(error: Exception) -> NoReturn:
  """Ends a command on an error of its data: `Error: <error>` on stderr and exit status 1, as
  `train.py` and `lra.prepare` do; argparse's usage (and its status 2) is for a flag's error."""
  print(f'Error: {error}', file=sys.stderr)
  raise SystemExit(1)


def integer(minimum: int) -> Callable[[str], int]:
  """An argparse type: an integer >= `minimum`."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value < minimum:
      raise argparse.ArgumentTypeError(f'must be an integer >= {minimum}, got {text!r}')
    return value

  return parse


def add_integer_flags(
  parser: argparse.ArgumentParser, flags: Sequence[tuple[str, int, int | None, str]]
) -> None:
  """Adds a `--<name>` integer flag for each (name, default, minimum, meaning) of `flags` (minimum
  None: any integer, the command checks it), its help the meaning and the default."""
  for name, default, minimum, meaning in flags:
    parser.add_argument(
      f'--{name}',
      type=int if minimum is None else integer(minimum),
      default=default,
      help=f'{meaning} (default %(default)s)',
    )


def number(
  *, minimum: float | None = None, above: float | None = None, below: float | None = None
) -> Callable[[str], float]:
  """An argparse type: a finite float within the given bounds (inclusive `minimum`, exclusive
  `above` and `below`)."""
  bounds = [
    (f'>= {minimum}', lambda v: minimum is None or v >= minimum),
    (f'> {above}', lambda v: above is None or v > above),
    (f'< {below}', lambda v: below is None or v < below),
  ]
  given = (minimum, above, below)
  wanted = ' and '.join(text for (text, _), bound in zip(bounds, given) if bound is not None)

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      value = math.nan
    if not math.isfinite(value) or not all(holds(value) for _, holds in bounds):
      raise argparse.ArgumentTypeError(f'must be a finite number {wanted}, got {text!r}')
    return value

  return parse


def path(text: str) -> Path:
  """An argparse type: a non-empty path (an empty one would silently mean the working
  directory)."""
  if not text.strip():
    raise argparse.ArgumentTypeError(
      "must name a folder or file, got '' (never the working directory by default)"
    )
  return Path(text).expanduser()


def folder(text: str) -> Path:
  """An argparse type: a non-empty path (as `path`) to a folder that exists or can be made, that is
  one no part of which is an existing file or link that is not a folder."""
  value = path(text)
  existing = next(p for p in (value, *value.parents) if p.exists() or p.is_symlink())
  if not existing.is_dir():
    raise argparse.ArgumentTypeError(f'{existing} exists and is not a folder')
  return value


def lengths(text: str) -> list[int]:
  """An argparse type: comma-separated sequence lengths >= 1, each an integer or `<n>K` (n * 1024),
  e.g. '1K,2048'."""
  values = []
  for item in text.split(','):
    item = item.strip().upper()
    try:
      value = int(item[:-1]) * 1024 if item.endswith('K') else int(item)
    except ValueError:
      value = 0
    if value < 1:
      raise argparse.ArgumentTypeError(
        f'must be comma-separated lengths >= 1 (an integer or <n>K), got {text!r}'
      )
    values.append(value)
  return values
