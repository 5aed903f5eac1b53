"""The objective contract of `luna_jax.model.objectives` as the trainer's steps use it: `prepare`
runs inside the step, with a key that is a pure function of (state key, step) in training and of the
given key in evaluation, and what it returns is what the loss and the metrics score."""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import objectives
from luna_jax.training import steps
from tests.test_train import constant_optimizer, random_rows

pytestmark = pytest.mark.usefixtures('fast_compilation')

NUM_CLASSES = 4


@dataclasses.dataclass(frozen=True)
class RandomLabels(objectives.Classification):
  """Scores against labels drawn from the preparation key (a stand-in for dynamic masking)."""

  def prepare(self, batch, rng):
    return {**batch, 'targets': jax.random.randint(rng, batch['targets'].shape, 0, NUM_CLASSES)}


class RandomLabelClassifier(luna_jax.SequenceClassifier):
  objective: ClassVar[objectives.Objective] = RandomLabels()


def models(dropout_rate=0.0):
  """A tiny Transformer classifier (residual dropout `dropout_rate`, no attention dropout) and its
  twin scored against drawn labels."""
  encoder = luna_jax.ModelConfig(
    vocab_size=8,
    max_length=6,
    num_layers=1,
    emb_dim=16,
    num_heads=2,
    mlp_dim=16,
    dropout_rate=dropout_rate,
    attention_dropout_rate=0.0,
  )
  fields = dict(
    encoder_name='transformer',
    encoder=encoder,
    num_classes=NUM_CLASSES,
    pooling='mean',
    hidden_dim=16,
  )
  return luna_jax.SequenceClassifier(**fields), RandomLabelClassifier(**fields)


def test_prepare_draws_from_the_step_key_in_train_and_eval_steps():
  plain, random_labels = models()
  batch = random_rows(0, 8, targets=np.zeros(8))
  optimizer = constant_optimizer(1e-3)
  state = steps.create_train_state(jax.random.PRNGKey(0), plain, optimizer, batch)
  train = jax.jit(functools.partial(steps.train_step, model=random_labels, optimizer=optimizer))
  evaluate = {
    model: jax.jit(functools.partial(steps.eval_step, model=model))
    for model in (plain, random_labels)
  }

  def drawn(key):
    return {**batch, 'targets': jax.random.randint(key, (8,), 0, NUM_CLASSES)}

  labels = []
  for step in (0, 1):
    key = jax.random.fold_in(jax.random.fold_in(state.rng, step), steps.PREPARE_FOLD)
    _, prepared = train(state.replace(step=state.step + step), batch)
    expected = evaluate[plain](state.params, drawn(key))  # No dropout: the same logits.
    np.testing.assert_allclose(prepared['loss'], expected['loss'] / expected['count'], rtol=1e-6)
    assert float(prepared['accuracy']) == float(expected['correct'] / expected['count'])
    labels.append(drawn(key)['targets'])
  assert not np.array_equal(*labels)

  key = jax.random.PRNGKey(7)
  prepared = evaluate[random_labels](state.params, batch, key)
  expected = evaluate[plain](state.params, drawn(key), key)
  assert jax.tree.map(float, prepared) == jax.tree.map(float, expected)


def test_token_hits_never_predict_padding_as_greedy_decoding_does():
  # Position 0: padding (id 0) has the highest logit, the target (2) the next: greedy decoding
  # never emits padding, so it emits 2, and the hit counts. Position 1: 3 beats the target 1.
  logits = np.array([[[9.0, 1.0, 5.0, 0.0], [0.0, 1.0, 0.0, 4.0]]], np.float32)
  batch = {'targets': np.array([[2, 1]], np.int32)}
  token = objectives.TokenPrediction()
  np.testing.assert_array_equal(token.hits(logits, batch), [[True, False]])
  sums = token.metric_sums(logits, {'targets': np.array([[2, 0]], np.int32)})
  assert (float(sums['correct']), float(sums['sequences_correct'])) == (1.0, 1.0)
  # A classifier's classes are all predictions (class 0 included).
  label = {'targets': np.array([0], np.int32)}
  np.testing.assert_array_equal(objectives.Classification().hits(logits[:, 0], label), [True])


def test_label_smoothing_and_padding_weights_reach_the_loss():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
  targets = jnp.array([[1, 2, 0], [3, 0, 0]])
  # Smoothed cross-entropy: (1 - ls) of the target's log-probability, ls of their mean.
  log_p = jax.nn.log_softmax(logits)
  on_target = jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(
    objectives.cross_entropy(logits, targets, 0.1),
    -0.9 * on_target - 0.1 * log_p.mean(-1),
    rtol=1e-5,
  )
  # Padding targets (0) count for nothing: not in the count, nor through their logits.
  token = objectives.TokenPrediction()
  sums = token.metric_sums(logits, {'targets': targets})
  moved = token.metric_sums(logits.at[targets == 0].set(7.0), {'targets': targets})
  assert float(sums['count']) == 3.0
  np.testing.assert_allclose(moved['loss'], sums['loss'], rtol=1e-6)
  # The train step's loss is the smoothed one it is given (no dropout: the same logits).
  plain, _ = models()
  batch = random_rows(0, 4, num_classes=NUM_CLASSES)
  optimizer = constant_optimizer(1e-3)
  state = steps.create_train_state(jax.random.PRNGKey(0), plain, optimizer, batch)
  train = functools.partial(steps.train_step, model=plain, optimizer=optimizer, label_smoothing=0.1)
  _, metrics = jax.jit(train)(state, batch)
  logits = plain.apply({'params': state.params}, batch['inputs'], batch['lengths'])
  expected = objectives.cross_entropy(logits, batch['targets'], 0.1).mean()
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
