"""Deterministic, resumable batch iterators over a `Split` (host numpy arrays), and `Batching`, the
way a task's data is cut into batches (`TaskData.batching`; the trainer asks only it).

Training batch k is a pure function of (seed, k): epoch e = k // (N // batch_size) visits the
examples in the order of a permutation drawn from `np.random.default_rng([seed, e])`, and the
remainder of each epoch is dropped. A run resumed at step k therefore sees exactly the batches an
uninterrupted run sees from step k on. Evaluation visits a split in its stored order
(`eval_batches`); a partial evaluation takes a fixed, seeded sample of it (`eval_sample`), since the
stored order may be sorted by class. This is a few lines of numpy rather than a grain pipeline:
random access to batch k is all that is needed and the arrays are already in memory (or mmapped).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from lra.errors import DataError

if TYPE_CHECKING:
  from lra.core import Split


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
    {'inputs': [B/P, L] int32, 'lengths': [B/P] int32, 'targets': [B/P] int32 ([B/P, T] for the
    token tasks)}, plus 'inputs2' and 'lengths2' for two-document tasks.

  Raises (at the first batch: this is a generator):
    DataError: a seed or start step that is not a non-negative integer, a batch larger than the
      split, a batch size that is not a positive multiple of `process_count`, or a
      `process_index` outside [0, process_count).
  """
  local = _check_processes(batch_size, process_index, process_count)
  integers = all(
    isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (seed, start_step)
  )
  if not integers or seed < 0 or start_step < 0:
    raise DataError(
      f'seed ({seed!r}) and start_step ({start_step!r}) must be non-negative integers'
    )
  steps_per_epoch = split.num_examples // batch_size
  if steps_per_epoch == 0:
    raise DataError(
      f'batch_size {batch_size} (training.batch_size) exceeds the {split.num_examples} training '
      'examples.'
    )
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

  Raises (at the first batch: this is a generator):
    DataError: a batch size that is not a positive multiple of `process_count`, or a
      `process_index` outside [0, process_count).
  """
  local = _check_processes(batch_size, process_index, process_count)
  n = split.num_examples
  for start in range(0, n, batch_size):
    positions = np.arange(start + process_index * local, start + (process_index + 1) * local)
    real = positions < n
    batch = _gather(split, np.where(real, positions, 0))
    batch['weights'] = real.astype(np.float32)
    yield batch


#: Seed of the `eval_sample` draw: every run, seed and process evaluates the same sample.
EVAL_SAMPLE_SEED = 0


def eval_sample(split: Split, num_examples: int, seed: int = EVAL_SAMPLE_SEED) -> Split:
  """A fixed, seeded, uniformly drawn sample of a split, for an evaluation of part of it.

  Splits are often stored sorted (by class, as the IMDb and LRA files are), so their first
  examples are no estimate of the whole; a uniform sample without replacement is, and it mixes the
  classes in their proportions. The sample is a pure function of (`seed`, the split's size).

  Args:
    split: the split.
    num_examples: the sample size (>= 1).
    seed: the draw's seed.

  Returns:
    `split` itself when it has at most `num_examples` examples; else a Split of `num_examples` of
    its examples, kept in their stored order.

  Raises:
    DataError: `num_examples` < 1.
  """
  if split.num_examples <= num_examples:
    sample_rows(split.num_examples, num_examples, seed)  # Checks num_examples.
    return split
  chosen = sample_rows(split.num_examples, num_examples, seed)
  return dataclasses.replace(split, **{name: a[chosen] for name, a in split.arrays().items()})


def sample_rows(size: int, num_examples: int, seed: int = EVAL_SAMPLE_SEED) -> np.ndarray:
  """The sorted rows of `eval_sample`'s draw of `num_examples` of `size` examples (all of them
  when there are no more); DataError when `num_examples` < 1."""
  if num_examples < 1:
    raise DataError(f'eval_sample: num_examples must be >= 1, got {num_examples}.')
  if size <= num_examples:
    return np.arange(size)
  return np.sort(np.random.default_rng(seed).choice(size, num_examples, replace=False))


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

  def sample(self, split: Any, num_examples: int) -> Any:
    """`eval_sample` of `split`: a fixed, seeded sample of `num_examples` examples."""
    return eval_sample(split, num_examples)

  def example(self, split: Any) -> dict[str, np.ndarray]:
    """A one-example batch of `split` (int32 arrays): what a model is initialised with."""
    return {name: np.asarray(array[:1], np.int32) for name, array in split.arrays().items()}

  def micro_batched(self, micro_batches: int, batch_size: int, num_devices: int) -> Batching:
    """This batching for gradient accumulation over `micro_batches` micro-batches: each device's
    training batch must cut into that many equal parts (`luna_jax.training.steps.train_step`).

    Raises:
      DataError: `batch_size / num_devices` rows a device are not a multiple of `micro_batches`.
    """
    if (batch_size // num_devices) % micro_batches:
      raise DataError(
        f'training.gradient_accumulation_steps={micro_batches} must divide the '
        f'{batch_size // num_devices} rows each of the {num_devices} devices gets of a batch of '
        f'{batch_size} (training.batch_size).'
      )
    return self


#: Fixed-size batches: the default `TaskData.batching`.
FIXED_SIZE = Batching()
