"""Batches by tokens for sequence-to-sequence data: ragged token pairs (`TokenPairs`) cut into
length-bucketed batches of at most `max_tokens` tokens per device (`TokenBatching`, fairseq's
`--max-tokens`; Ott et al., 2018, "Scaling Neural Machine Translation").

An example's size is the longer of its source and its target, EOS included (fairseq's
`num_tokens`). Each example falls into the smallest bucket of `length_buckets` that holds it; a
bucket of padded length L gives every device `max(1, max_tokens // L)` rows, so a batch never holds
more than `max_tokens` tokens (padding included) on a device, and the padded shape (rows, L) is one
of `len(buckets)`: XLA compiles at most that many training programs (and as many evaluation
programs), however long the run.

Epoch e of the training batches is a pure function of (seed, e): the examples of each bucket are
shuffled with `np.random.default_rng([seed, e])`, cut into global batches (the last one of a bucket
filled up with weight-0 copies of its first example, so that no example is lost or repeated), and
the batches of all buckets are shuffled together with the same generator. Batch k is batch
`k mod E` of epoch `k // E` (E batches per epoch, fixed by the lengths), so a run resumed at step k
sees exactly what an uninterrupted run sees on the same number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np

import lra
from lra.core import DataError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TokenPairs:
  """One split of a parallel corpus as ragged token arrays (every sequence ends with its EOS).

  Attributes:
    source: `[total source tokens]` unsigned ints, the sources one after the other.
    source_lengths: `[N]` int32 tokens of each source.
    target: `[total target tokens]` unsigned ints, the targets one after the other.
    target_lengths: `[N]` int32 tokens of each target.
    line_numbers: `[N]` int32, the 1-based line of each pair in its file(s).
    num_truncated: pairs cut to the length limits (validation and test keep every pair).
    num_skipped: pairs left out (empty side; over the limits in training), by reason.
  """

  source: np.ndarray
  source_lengths: np.ndarray
  target: np.ndarray
  target_lengths: np.ndarray
  line_numbers: np.ndarray
  num_truncated: int = 0
  num_skipped: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_examples(self) -> int:
    return int(self.source_lengths.shape[0])

  @property
  def sizes(self) -> np.ndarray:
    """`[N]` int32: the longer of each pair's source and target (what a batch pads to)."""
    return np.maximum(self.source_lengths, self.target_lengths)

  def arrays(self) -> dict[str, np.ndarray]:
    """The arrays by name (what the cache stores)."""
    return {
      'source': self.source,
      'source_lengths': self.source_lengths,
      'target': self.target,
      'target_lengths': self.target_lengths,
      'line_numbers': self.line_numbers,
    }

  def take(self, rows: np.ndarray) -> TokenPairs:
    """The pairs at `rows` (in that order) as a TokenPairs of their own."""
    source_starts, target_starts = self._starts
    pick = lambda flat, starts, lengths: np.concatenate(
      [flat[starts[r] : starts[r] + lengths[r]] for r in rows] or [flat[:0]]
    )
    return dataclasses.replace(
      self,
      source=pick(self.source, source_starts, self.source_lengths),
      source_lengths=self.source_lengths[rows],
      target=pick(self.target, target_starts, self.target_lengths),
      target_lengths=self.target_lengths[rows],
      line_numbers=self.line_numbers[rows],
    )

  @functools.cached_property
  def _starts(self) -> tuple[np.ndarray, np.ndarray]:
    """Where each source and each target starts in its flat array (computed once)."""
    return tuple(
      np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
      for lengths in (self.source_lengths, self.target_lengths)
    )

  def sequences(self, rows: np.ndarray, length: int) -> Batch:
    """The pairs at `rows`, right-padded with 0 to `length` (which must hold them).

    Returns:
      {'inputs': `[len(rows), length]`, 'lengths': `[len(rows)]`, 'targets': `[len(rows),
      length]`}, int32.
    """
    positions = np.arange(length)[None, :]
    padded = []
    for flat, lengths, starts in zip(
      (self.source, self.target), (self.source_lengths, self.target_lengths), self._starts
    ):
      valid = positions < lengths[rows][:, None]
      indices = np.where(valid, starts[rows][:, None] + positions, 0)
      padded.append(np.where(valid, flat[indices], 0).astype(np.int32))
    return {
      'inputs': padded[0],
      'lengths': self.source_lengths[rows].astype(np.int32),
      'targets': padded[1],
    }


def length_buckets(max_length: int, multiple: int = 8, growth: float = 1.25) -> tuple[int, ...]:
  """Padded lengths: multiples of `multiple`, each at least `growth` times the one before, the last
  `max_length` (so padding adds at most about a quarter to an example, plus rounding).

  E.g. `length_buckets(256)` = (8, 16, 24, 32, 40, 56, 72, 96, 120, 152, 192, 240, 256): 13
  buckets; 1024 gives 19.

  Raises:
    ValueError: `max_length` < 1.
  """
  if max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}')
  buckets = [min(multiple, max_length)]
  while buckets[-1] < max_length:
    grown = math.ceil(math.ceil(buckets[-1] * growth) / multiple) * multiple
    buckets.append(min(max(grown, buckets[-1] + multiple), max_length))
  return tuple(buckets)


@dataclasses.dataclass(frozen=True)
class TokenBatching(lra.Batching):
  """Length-bucketed batches of at most `max_tokens` tokens per device (module docstring).

  `training.batch_size` is not used: a batch has `num_devices * max(1, max_tokens // L)` rows for
  its bucket's padded length L. Every batch has 'weights' (1 for an example, 0 for a filler row),
  as evaluation batches do.

  Attributes:
    max_tokens: tokens per device and batch, padding included (fairseq `--max-tokens`).
    buckets: the padded lengths (`length_buckets`); the last must hold every example.
    row_multiple: every device's rows are a multiple of this (the micro-batches of gradient
      accumulation, `micro_batched`): `max_tokens // L` rounded down to it.
  """

  max_tokens: int
  buckets: tuple[int, ...]
  row_multiple: int = 1

  def __post_init__(self):
    if self.max_tokens < self.row_multiple * self.buckets[-1]:
      accumulation, lower = (
        (
          f' times the {self.row_multiple} micro-batches (training.gradient_accumulation_steps)',
          ', max_target_length or training.gradient_accumulation_steps',
        )
        if self.row_multiple > 1
        else ('', ' / max_target_length')
      )
      raise DataError(
        f'max_tokens {self.max_tokens} is less than the longest padded example '
        f'({self.buckets[-1]} tokens){accumulation}: raise max_tokens or lower max_length{lower}.'
      )

  def rows_per_device(self, bucket: int) -> int:
    """Rows each device gets in a batch of bucket index `bucket`."""
    rows = self.max_tokens // self.buckets[bucket]
    return max(1, rows - rows % self.row_multiple)

  def micro_batched(self, micro_batches: int, batch_size: int, num_devices: int) -> TokenBatching:
    """This batching with every device's rows a multiple of `micro_batches`, so that a batch of at
    most `max_tokens` tokens a device cuts into micro-batches of at most `max_tokens /
    micro_batches` (`batch_size` and `num_devices` are not used).

    Raises:
      DataError: `max_tokens` below `micro_batches` rows of the longest bucket.
    """
    del batch_size, num_devices
    return dataclasses.replace(self, row_multiple=micro_batches)

  def bucket_of(self, split: TokenPairs) -> np.ndarray:
    """`[N]` the bucket index of every example.

    Raises:
      DataError: an example longer than the last bucket.
    """
    sizes = split.sizes
    if sizes.size and sizes.max() > self.buckets[-1]:
      raise DataError(
        f'an example of {int(sizes.max())} tokens is longer than the largest bucket '
        f'{self.buckets[-1]}'
      )
    return np.searchsorted(np.asarray(self.buckets), sizes).astype(np.int32)

  def plan(
    self, split: TokenPairs, num_devices: int, rng: np.random.Generator | None
  ) -> list[tuple[int, np.ndarray]]:
    """One epoch's global batches as (bucket index, row indices with -1 for filler rows):
    shuffled with `rng`, or in bucket and example order when it is None."""
    buckets = self.bucket_of(split)
    batches = []
    for b in range(len(self.buckets)):
      members = np.flatnonzero(buckets == b)
      if rng is not None:
        members = rng.permutation(members)
      rows = self.rows_per_device(b) * num_devices
      for start in range(0, len(members), rows):
        chunk = members[start : start + rows]
        batches.append((b, np.concatenate([chunk, np.full(rows - len(chunk), -1, chunk.dtype)])))
    if rng is not None:
      batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches

  def _local(
    self, split: TokenPairs, batch: tuple[int, np.ndarray], process_index: int, process_count: int
  ) -> Batch:
    """This process's rows of a global batch, gathered and padded, with 'weights'."""
    bucket, rows = batch
    local = len(rows) // process_count
    mine = rows[process_index * local : (process_index + 1) * local]
    real = mine >= 0
    gathered = split.sequences(np.where(real, mine, rows[0]), self.buckets[bucket])
    gathered['weights'] = real.astype(np.float32)
    return gathered

  @staticmethod
  def _check(num_devices: int, process_index: int, process_count: int) -> None:
    if num_devices <= 0 or process_count <= 0 or num_devices % process_count:
      raise DataError(
        f'num_devices {num_devices} must be a positive multiple of process_count {process_count}'
      )
    if not 0 <= process_index < process_count:
      raise DataError(f'process_index {process_index} is not in [0, {process_count})')

  def num_batches(self, split: TokenPairs, num_devices: int) -> int:
    """Batches per epoch (training) or per pass (evaluation) on `num_devices` devices."""
    counts = np.bincount(self.bucket_of(split), minlength=len(self.buckets))
    return sum(math.ceil(n / (self.rows_per_device(b) * num_devices)) for b, n in enumerate(counts))

  def train_batches(
    self,
    split: TokenPairs,
    batch_size: int,
    *,
    num_devices: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
  ) -> Iterator[Batch]:
    """Yields shuffled training batches forever, starting at global step `start_step`.

    Args:
      split: the training split.
      batch_size: not used (the batch size comes from `max_tokens`).
      num_devices: devices over all processes.
      seed: shuffling seed (non-negative).
      start_step: index of the first global batch to yield.
      process_index: this process's slice of each global batch.
      process_count: number of processes; must divide `num_devices`.

    Yields:
      {'inputs', 'targets': `[rows, L]` int32, 'lengths': `[rows]` int32, 'weights': `[rows]`
      float32}, rows = this process's devices x `rows_per_device`, L a bucket.

    Raises (at the first batch: this is a generator):
      DataError: a negative seed or start step, an empty split, a bad process layout.
    """
    del batch_size
    self._check(num_devices, process_index, process_count)
    if seed < 0 or start_step < 0:
      raise DataError(f'seed ({seed}) and start_step ({start_step}) must be non-negative')
    if split.num_examples == 0:
      raise DataError('no training examples')
    per_epoch = self.num_batches(split, num_devices)
    epoch, batches = -1, []
    for step in itertools.count(start_step):
      step_epoch, within = divmod(step, per_epoch)
      if step_epoch != epoch:
        epoch = step_epoch
        batches = self.plan(split, num_devices, np.random.default_rng([seed, epoch]))
      yield self._local(split, batches[within], process_index, process_count)

  def eval_batches(
    self,
    split: TokenPairs,
    batch_size: int,
    *,
    num_devices: int,
    process_index: int = 0,
    process_count: int = 1,
  ) -> Iterator[Batch]:
    """Yields every example once, bucket by bucket in example order; filler rows have weight 0.

    Args: as `train_batches` (`batch_size` is not used). Every process yields the same batches'
    slices.
    """
    del batch_size
    self._check(num_devices, process_index, process_count)
    for batch in self.plan(split, num_devices, None):
      yield self._local(split, batch, process_index, process_count)

  def sample(self, split: TokenPairs, num_examples: int) -> TokenPairs:
    """The pairs of `lra.batching.sample_rows`' fixed, seeded draw of `num_examples`."""
    return split.take(lra.batching.sample_rows(split.num_examples, num_examples))

  def example(self, split: TokenPairs) -> Batch:
    """The first example, padded to its bucket."""
    bucket = int(self.bucket_of(split)[0])
    return split.sequences(np.array([0]), self.buckets[bucket])
