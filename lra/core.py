"""Shared types of the LRA data package: the error type, split and task containers, and the checks
of loaded files and splits."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lra.batching import FIXED_SIZE, Batching
from lra.errors import DataError, MissingDataError

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a task as host arrays.

  Attributes:
    inputs: [N, max_length] integer tokens, right-padded with 0 where the task has padding (compact
      unsigned dtype; may be memory-mapped from the cache).
    lengths: [N] int32 number of valid positions (== max_length for the image tasks, where 0 is
      a pixel value).
    targets: [N] int32 class labels, or [N, T] target tokens (0 = padding) for the token-level
      tasks `seq2seq` and `lm` (package `corpora`).
    inputs2: [N, max_length] tokens of the second document (retrieval only), else None.
    lengths2: [N] int32 valid positions of the second document (retrieval only), else None.
    num_truncated: examples whose source was longer than the arrays (either document, or the
      target) and was cut to fit.
  """

  inputs: np.ndarray
  lengths: np.ndarray
  targets: np.ndarray
  inputs2: np.ndarray | None = None
  lengths2: np.ndarray | None = None
  num_truncated: int = 0

  @property
  def num_examples(self) -> int:
    return int(self.targets.shape[0])

  def arrays(self) -> dict[str, np.ndarray]:
    """Returns the array fields that are set, by name (what a batch holds)."""
    return {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(self)
      if isinstance(getattr(self, f.name), np.ndarray)
    }


@dataclasses.dataclass(frozen=True)
class TaskData:
  """The three splits of a task and what a model needs to know about them.

  `batching` cuts the splits into batches: fixed-size batches (`Batching`) unless the data brings
  its own, e.g. the token-budget batches of `corpora.translation`, whose splits are then of the
  type that batching reads.
  """

  name: str
  train: Split
  validation: Split
  test: Split
  vocab_size: int
  num_classes: int
  max_length: int
  dual: bool = False
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  batching: Batching = FIXED_SIZE


def splits_to_arrays(splits: Mapping[str, Split]) -> dict[str, np.ndarray]:
  """Flattens named splits into `{'<split>.<field>': array}` (the cache's storage format)."""
  return {
    f'{name}.{field}': array
    for name, split in splits.items()
    for field, array in {**split.arrays(), 'num_truncated': np.array(split.num_truncated)}.items()
  }


def arrays_to_splits(arrays: Mapping[str, np.ndarray]) -> dict[str, Split]:
  """Inverse of `splits_to_arrays`."""
  fields: dict[str, dict[str, Any]] = {}
  for key, array in arrays.items():
    name, field = key.split('.', 1)
    fields.setdefault(name, {})[field] = int(array) if field == 'num_truncated' else array
  return {name: Split(**kwargs) for name, kwargs in fields.items()}


def check_splits(
  task: str, splits: Mapping[str, Split], sources: Mapping[str, str | Path], limit: str
) -> None:
  """Checks loaded splits before any training: refuses empty ones, reports truncation.

  Logs one warning line per split that had examples cut to the array length.

  Args:
    task: task name, for the messages.
    splits: split name -> Split.
    sources: split name -> the file or folder it was read from.
    limit: the option(s) that cut the examples, e.g. `max_length 2000`.

  Raises:
    DataError: a split has no examples (naming its source).
  """
  for name, split in splits.items():
    if split.num_examples == 0:
      raise DataError(
        f'{sources[name]}: no examples for the {task} {name} split. Every split '
        'needs at least one: check that the data is complete, or regenerate it.'
      )
    if split.num_truncated:
      logging.warning(
        '%s %s (%s): %d of %d examples are longer than %s and were truncated.',
        task,
        name,
        sources[name],
        split.num_truncated,
        split.num_examples,
        limit,
      )


def check_arrays(
  task: str,
  splits: Mapping[str, Split],
  sources: Mapping[str, str | Path],
  *,
  vocab_size: int,
  num_classes: int,
  max_length: int,
) -> None:
  """Checks the arrays of loaded splits against what the models take (their input contract).

  The models are jitted code and check no values: an id outside the vocabulary embeds as NaN, a
  label outside the classes gives a meaningless loss. Every loader's splits pass here.

  Args:
    task: task name, for the messages.
    splits: split name -> Split.
    sources: split name -> the file or folder it was read from.
    vocab_size: token ids must lie in [0, vocab_size).
    num_classes: class labels (1-D targets) must lie in [0, num_classes).
    max_length: the inputs' width.

  Raises:
    DataError: integer arrays of another shape or dtype, lengths outside [0, max_length], ids or
      labels out of range, naming the split, its source, the array and the value.
  """
  for name, split in splits.items():
    where = f'{sources[name]}: {task} {name} split'
    arrays = split.arrays()
    for field, array in arrays.items():
      if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f'{where}: {field} has dtype {array.dtype}, expected integers.')
    widths = [('inputs', 'lengths'), ('inputs2', 'lengths2')]
    for inputs, lengths in [pair for pair in widths if pair[0] in arrays]:
      tokens, counts = arrays[inputs], arrays[lengths]
      if tokens.shape != (split.num_examples, max_length) or counts.shape != tokens.shape[:1]:
        raise DataError(
          f'{where}: {inputs} {tokens.shape} and {lengths} {counts.shape}, expected '
          f'({split.num_examples}, {max_length}) and ({split.num_examples},).'
        )
      _check_range(where, lengths, counts, 0, max_length + 1)
      _check_range(where, inputs, tokens, 0, vocab_size)
    targets = arrays['targets']
    _check_range(where, 'targets', targets, 0, num_classes if targets.ndim == 1 else vocab_size)


def _check_range(where: str, field: str, array: np.ndarray, low: int, high: int) -> None:
  """Raises DataError unless every value of `array` lies in [low, high)."""
  if array.size and (int(array.min()) < low or int(array.max()) >= high):
    bad = int(array.min()) if int(array.min()) < low else int(array.max())
    raise DataError(f'{where}: {field} holds {bad}, outside [{low}, {high}).')


def task_data(
  name: str,
  splits: Mapping[str, Split],
  sources: Mapping[str, str | Path],
  limit: str,
  *,
  vocab_size: int,
  num_classes: int,
  max_length: int,
  dual: bool = False,
  info: dict[str, Any] | None = None,
  checked_as: str | None = None,
) -> TaskData:
  """A loader's last step: checks the splits it read (`check_splits`) and returns its TaskData.

  Args:
    name: the task's name (`TaskData.name`).
    splits: 'train', 'validation' and 'test' -> Split, in any order; one Split may serve as two
      (GLUE's dev set is validation and test).
    sources: split name -> the file or folder it was read from. Only the splits named here are
      checked (in the order of `splits`), so a split serving twice is checked once.
    limit: the option(s) that cut the examples, e.g. `max_length 2000` (for the messages).
    vocab_size: token ids lie in [0, vocab_size).
    num_classes: number of labels (the vocabulary size for token-level targets).
    max_length: L, the arrays' length.
    dual: two documents per example (retrieval).
    info: task-specific extras (`TaskData.info`).
    checked_as: the task as the messages name it, when not `name` (e.g. 'glue sst2').

  Returns:
    The task.

  Raises:
    DataError: a checked split has no examples, or arrays out of shape or range (`check_arrays`),
      naming its source.
  """
  checked = {split: data for split, data in splits.items() if split in sources}
  check_splits(checked_as or name, checked, sources, limit)
  sizes = dict(vocab_size=vocab_size, num_classes=num_classes, max_length=max_length)
  check_arrays(checked_as or name, checked, sources, **sizes)
  return TaskData(
    name,
    splits['train'],
    splits['validation'],
    splits['test'],
    vocab_size=vocab_size,
    num_classes=num_classes,
    max_length=max_length,
    dual=dual,
    info={} if info is None else info,
  )


def require_files(
  paths: Sequence[Path], how_to_get: str, *, generated: bool = False, folders: bool = False
) -> None:
  """Raises MissingDataError naming every expected file when any of `paths` is missing (or is a
  folder where a file is expected, or the other way round).

  Args:
    paths: files the task reads (with `folders`: folders).
    how_to_get: the command or instructions that produce them.
    generated: `how_to_get` runs a generator, which refuses to overwrite the files that do exist
      unless given `--overwrite` (the message then says so).
    folders: `paths` are folders.
  """
  present = Path.is_dir if folders else Path.is_file
  problems = {
    p: '   (missing)' if not p.exists() else f'   (not a {"folder" if folders else "file"})'
    for p in paths
    if not present(p)
  }
  missing = list(problems)
  if missing:
    listing = '\n'.join(f'  {p}{problems.get(p, "")}' for p in paths)
    note = ''
    if generated and len(missing) < len(paths):
      note = (
        '\nThe generator refuses to overwrite the files that exist; add --overwrite to '
        'replace them all (this deletes them).'
      )
    raise MissingDataError(f'Data files not found. Expected:\n{listing}\n{how_to_get}{note}')


def not_a_folder(path: Path) -> MissingDataError:
  """The error for a data folder `path` that is a file (a data_dir naming one of its files)."""
  return MissingDataError(
    f"{path} is a file, not a folder: give data_dir the folder that holds the task's data (the "
    'layout the loader reads: README, section Data).'
  )


def line_list(line_numbers: Sequence[int], shown: int = 5) -> str:
  """Line numbers for a warning: the first `shown`, then '...' if there are more ('3, 7, ...')."""
  more = ', ...' if len(line_numbers) > shown else ''
  return ', '.join(str(n) for n in line_numbers[:shown]) + more


def parse_label(text: str | bytes | int, num_classes: int, where: str) -> int:
  """Parses an integer class label (an integral float such as `1.0` is accepted).

  Args:
    text: the label field (or an already numeric label).
    num_classes: labels must lie in [0, num_classes).
    where: `file:line` for error messages.

  Returns:
    The label.

  Raises:
    DataError: a label that is not a number or out of range, naming `where`.
  """
  text = text.decode('latin-1') if isinstance(text, bytes) else str(text)
  try:
    value = float(text)
  except ValueError:
    raise DataError(f'{where}: label {text!r} is not a number') from None
  if not math.isfinite(value) or value != int(value) or not 0 <= value < num_classes:
    raise DataError(
      f'{where}: label {text!r} is out of range (expected an integer in [0, {num_classes - 1}])'
    )
  return int(value)
