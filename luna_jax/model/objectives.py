"""Training objectives: what a model family's outputs are scored against in training and evaluation.

  Classification    one class label per example (the LRA classifiers): cross-entropy and accuracy
                    per example.
  TokenPrediction   one target token per position, 0 = padding (the causal LM and the
                    encoder-decoder): cross-entropy and accuracy per target token, plus the share of
                    sequences whose every target token is predicted.

Every model names its objective in its `objective` class attribute; the train and evaluation steps
(`luna_jax.training.steps`) call nothing else to prepare a batch, weigh the loss and count the
hits and metrics, so a new model family plugs in with one `Objective` subclass and that one
attribute. An objective provides

  prepare(batch, rng)         the batch the model sees, run inside the jitted train and eval steps
                              before the forward pass (identity here; an objective that corrupts
                              its inputs, such as masked-language-model pretraining, draws from
                              `rng`, which the trainer derives from the step, so that a resumed
                              run draws the same);
  weights(batch)              what each target counts for in the loss and the metrics;
  losses(logits, batch, ...)  the cross-entropy of every target (weigh with `weights`);
  hits(logits, batch)         which targets the model predicts (the accuracy, weighed too);
  metric_sums(logits, batch)  weighted sums, added over batches and devices;
  summarize(totals)           the evaluation metrics from the summed totals.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

Batch = Mapping[str, Any]


def cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy per target, optionally label-smoothed: `[..., V]`, `[...]` -> `[...]`."""
  if label_smoothing == 0.0:
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, labels)


def example_weights(batch: Batch) -> jax.Array:
  """`[b]` float32: the batch's 'weights' (0 marks a padding row of an evaluation batch), else 1."""
  return batch.get('weights', jnp.ones(batch['targets'].shape[:1], jnp.float32))


@dataclasses.dataclass(frozen=True)
class Objective(abc.ABC):
  """Cross-entropy on `batch['targets']` with argmax accuracy; subclasses define `weights`."""

  def prepare(self, batch: Batch, rng: jax.Array) -> Batch:
    """The batch the model is applied to (and scored on); `rng` is the step's preparation key.

    Args:
      batch: the (per-device) batch as the data pipeline gives it.
      rng: PRNG key, distinct per step and device (train) or per batch and device (evaluation).

    Returns:
      The batch, unchanged here.
    """
    del rng
    return batch

  @abc.abstractmethod
  def weights(self, batch: Batch) -> jax.Array:
    """What each target of `batch['targets']` counts for (same shape), float32."""

  def losses(self, logits: jax.Array, batch: Batch, label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of every target: `[*targets.shape, V]` logits -> `targets.shape` float32."""
    return cross_entropy(logits, batch['targets'], label_smoothing)

  def hits(self, logits: jax.Array, batch: Batch) -> jax.Array:
    """Whether each target is the argmax of its logits: `[*targets.shape, V]` logits ->
    `targets.shape` bool (weigh with `weights`)."""
    return jnp.argmax(logits, axis=-1) == batch['targets']

  def metric_sums(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """{'loss', 'correct', 'count'}: summed weighted loss (unsmoothed), correct predictions and
    weight of one batch, float32 scalars."""
    weights = self.weights(batch)
    return {
      'loss': jnp.sum(self.losses(logits, batch) * weights),
      'correct': jnp.sum(self.hits(logits, batch) * weights),
      'count': jnp.sum(weights),
    }

  def summarize(self, totals: Mapping[str, Any]) -> dict[str, float]:
    """{'accuracy', 'loss', 'num_examples'} from `metric_sums` added over a split (host values)."""
    count = max(float(totals['count']), 1.0)
    return {
      'accuracy': float(totals['correct']) / count,
      'loss': float(totals['loss']) / count,
      'num_examples': int(totals['count']),
    }


@dataclasses.dataclass(frozen=True)
class Classification(Objective):
  """One class label per example: `targets` [b] int32, logits [b, num_classes]."""

  def weights(self, batch: Batch) -> jax.Array:
    """`[b]`: the example weights (0 on padding rows)."""
    return example_weights(batch)


@dataclasses.dataclass(frozen=True)
class TokenPrediction(Objective):
  """One target token per position: `targets` [b, T] int32 (0 = padding), logits [b, T, V]."""

  def weights(self, batch: Batch) -> jax.Array:
    """`[b, T]`: the example weight on every non-padding target, 0 on padding."""
    return example_weights(batch)[:, None] * (batch['targets'] > 0)

  def hits(self, logits: jax.Array, batch: Batch) -> jax.Array:
    """Whether each target is the argmax of its logits over the ids but 0: padding is never a
    prediction, as in greedy decoding and beam search (`luna_jax.model.generation`), so that
    'sequence_accuracy' is the share of sequences greedy decoding reproduces."""
    return jnp.argmax(logits[..., 1:], axis=-1) + 1 == batch['targets']

  def metric_sums(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """`Objective.metric_sums` per target token, plus 'sequences_correct' (examples whose every
    target token is predicted, i.e. that greedy decoding reproduces exactly) and 'sequences'."""
    sums = super().metric_sums(logits, batch)
    targets = batch['targets']
    whole = jnp.all(self.hits(logits, batch) | (targets == 0), axis=-1)
    weights = example_weights(batch)
    return {**sums, 'sequences_correct': jnp.sum(whole * weights), 'sequences': jnp.sum(weights)}

  def summarize(self, totals: Mapping[str, Any]) -> dict[str, float]:
    """Token 'accuracy' and 'loss', 'num_examples' (sequences) and 'sequence_accuracy'."""
    metrics = super().summarize(totals)
    metrics['num_examples'] = int(totals['sequences'])
    metrics['sequence_accuracy'] = float(totals['sequences_correct']) / max(
      float(totals['sequences']), 1.0
    )
    return metrics
