"""Deterministic, resumable batch iterators over a `Split` (host numpy arrays), and `Batching`, the
way a task's data is cut into batches (`TaskData.batching`; the trainer asks only it).

Training batch k is a pure function of (seed, k): epoch e = k // (N // batch_size) visits the
examples in the order of a permutation drawn from `np.random.default_rng([seed, e])`, and the
remainder of each epoch is dropped. A run resumed at step k therefore sees exactly the batches an
uninterrupted run sees from step k on. This is a few lines of numpy rather than a grain pipeline:
random access to batch k is all that is needed and the arrays are already in memory (or mmapped).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from lra.errors import DataError


def _check_processes(batch_size: int, process_index: int, process_count: int) -> int:
  """Validates the process layout and returns the per-process batch size."""
  if batch_size <= 0 or process_count <= 0 or batch_size % process_count:
    raise DataError(
      f'batch_size {batch_size} must be a positive multiple of process_count {process_count}'
    )
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index {process_index} is not in [0, {process_count})')
  return batch_size // process_count


def _gather(split: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
  """Returns the examples at `indices` as int32 arrays."""
  return {name: np.asarray(array[indices], np.int32) for name, array in split.arrays().items()}


def train_batches(
  split: Any,
  batch_size: int,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields shuffled training batches forever, starting at global step `start_step`.

  Args:
    split: the training split.
    batch_size: global batch size B (over all processes).
    seed: shuffling seed (non-negative).
    start_step: index of the first global batch to yield.
    process_index: this process's slice of each global batch.
    process_count: number of processes; must divide B.

  Yields:
    {'inputs': [B/P, L] int32, 'lengths': [B/P] int32, 'targets': [B/P] int32}, plus 'inputs2' and
    'lengths2' for two-document tasks.

  Raises:
    DataError: a negative seed or start step, or a batch larger than the split.
  """
  local = _check_processes(batch_size, process_index, process_count)
  if seed < 0 or start_step < 0:
    raise DataError(f'seed ({seed}) and start_step ({start_step}) must be non-negative')
  steps_per_epoch = split.num_examples // batch_size
  if steps_per_epoch == 0:
    raise DataError(f'batch_size {batch_size} exceeds the {split.num_examples} training examples')
  epoch, order = -1, None
  for step in itertools.count(start_step):
    step_epoch, within = divmod(step, steps_per_epoch)
    if step_epoch != epoch:
      epoch = step_epoch
      order = np.random.default_rng([seed, epoch]).permutation(split.num_examples)
    start = within * batch_size + process_index * local
    yield _gather(split, order[start : start + local])


def eval_batches(
  split: Any, batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """Yields every example once, in order, in full batches; the last one is padded.

  Padding rows repeat example 0 (so they are well-formed inputs) and carry weight 0. Every
  process yields the same number of batches.

  Args:
    split: the split to evaluate.
    batch_size: global batch size B.
    process_index: this process's slice of each global batch.
    process_count: number of processes; must divide B.

  Yields:
    The fields of `train_batches` plus 'weights': [B/P] float32, 1 for real examples, 0 for padding.
  """
  local = _check_processes(batch_size, process_index, process_count)
  n = split.num_examples
  for start in range(0, n, batch_size):
    positions = np.arange(start + process_index * local, start + (process_index + 1) * local)
    real = positions < n
    batch = _gather(split, np.where(real, positions, 0))
    batch['weights'] = real.astype(np.float32)
    yield batch


@dataclasses.dataclass(frozen=True)
class Batching:
  """Fixed-size batches (`train_batches`, `eval_batches`): the batching of every task whose data
  does not bring its own (`TaskData.batching`; the token-budget batches of `corpora.translation`
  subclass this).

  Every method takes the global device count, so that a batching that sizes batches per device can
  make each global batch divide over the devices; this one does not use it.
  """

  def train_batches(
    self,
    split: Any,
    batch_size: int,
    *,
    num_devices: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
  ) -> Iterator[dict[str, np.ndarray]]:
    """`train_batches` of `split` (`num_devices` unused): batch k is a pure function of (seed,
    k)."""
    del num_devices
    return train_batches(
      split,
      batch_size,
      seed=seed,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
    )

  def eval_batches(
    self,
    split: Any,
    batch_size: int,
    *,
    num_devices: int,
    process_index: int = 0,
    process_count: int = 1,
  ) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of `split` (`num_devices` unused): every example once, with 'weights'."""
    del num_devices
    return eval_batches(split, batch_size, process_index=process_index, process_count=process_count)

  def example(self, split: Any) -> dict[str, np.ndarray]:
    """A one-example batch of `split` (int32 arrays): what a model is initialised with."""
    return {name: np.asarray(array[:1], np.int32) for name, array in split.arrays().items()}


#: Fixed-size batches: the default `TaskData.batching`.
FIXED_SIZE = Batching()
