"""Gradient accumulation (`training.gradient_accumulation_steps`): a batch run as micro-batches
takes the step of the whole batch."""

import functools

import jax
import numpy as np
import optax
import pytest

import lra
from corpora.token_batches import TokenBatching, length_buckets
from luna_jax.training import run_config, steps, trainer
from tests.test_objectives import NUM_CLASSES, models
from tests.test_train import checkpoint_params, random_rows, read_jsonl, tiny_config
from tests.test_training_path import assert_trees_close

pytestmark = pytest.mark.usefixtures('fast_compilation')


def without_dropout(config):
  config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  if 'activation_dropout_rate' in config.model:
    config.model.activation_dropout_rate = 0.0
  return config


def steps_of(config, micro_batches):
  """One train step from the same state on the same batch, with 1 and with each of
  `micro_batches`; returns ({k: (state, metrics)}, the step's arguments)."""
  run = run_config.parse_config(without_dropout(config))
  data = trainer.load_data(run)
  model, optimizer, state = trainer.build(run, data)
  batching = data.batching.micro_batched(max(micro_batches), 8, 1)
  batch = next(batching.train_batches(data.train, 8, num_devices=1, seed=0))
  results = {}
  for k in (1, *micro_batches):
    step = functools.partial(steps.train_step, model=model, optimizer=optimizer, micro_batches=k)
    results[k] = jax.jit(step)(state, batch)
    if k > 1:  # The micro-batches run one after the other: a scan of k iterations.
      assert f'length={k}' in str(jax.make_jaxpr(step)(state, batch))
  return results, (model, optimizer, state, batch)


@pytest.mark.parametrize('variant', ['luna16', 'transformer'])
def test_micro_batches_take_the_step_of_the_whole_batch(tiny_lra_data, variant):
  results, (model, optimizer, state, batch) = steps_of(
    tiny_config(tiny_lra_data, variant=variant), (2, 4)
  )
  (whole_state, whole), *parts = (results[k] for k in (1, 2, 4))
  for part_state, part in parts:
    for name in ('loss', 'accuracy', 'grad_norm'):
      np.testing.assert_allclose(part[name], whole[name], rtol=2e-5, err_msg=name)
    assert_trees_close(part_state.params, whole_state.params, rel=2e-5)
    assert int(part_state.step) == 1
  with pytest.raises(ValueError, match='3 micro-batches .* do not divide the 8 rows'):
    jax.eval_shape(
      functools.partial(steps.train_step, model=model, optimizer=optimizer, micro_batches=3),
      state,
      batch,
    )


@pytest.mark.parametrize('num_devices', [1, 2])
def test_a_run_with_accumulation_trains_and_may_resume_without_it(
  tiny_lra_data, tmp_path, num_devices
):
  """On one device and data-parallel over two (pmap: each device accumulates its share, then the
  gradients are summed over the devices)."""

  def config(steps, micro_batches):
    return without_dropout(
      tiny_config(
        tiny_lra_data,
        num_train_steps=steps,
        checkpoint_every=3,
        eval_every=3,
        log_every=1,
        num_devices=num_devices,
        gradient_accumulation_steps=micro_batches,
      )
    )

  trainer.train_and_evaluate(config(6, 1), str(tmp_path / 'whole'))
  trainer.train_and_evaluate(config(3, 4 // num_devices), str(tmp_path / 'micro'))
  trainer.train_and_evaluate(config(6, 1), str(tmp_path / 'micro'))  # A memory knob: may change.
  losses = [
    [m['train_loss'] for m in read_jsonl(tmp_path / name / 'metrics.jsonl') if 'train_loss' in m]
    for name in ('whole', 'micro')
  ]
  assert len(losses[0]) == len(losses[1]) == 6
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
  assert_trees_close(
    checkpoint_params(tmp_path / 'micro', 6), checkpoint_params(tmp_path / 'whole', 6), rel=1e-4
  )


def test_fixed_batches_must_cut_into_the_micro_batches():
  assert lra.batching.FIXED_SIZE.micro_batched(4, 32, 2) is lra.batching.FIXED_SIZE
  with pytest.raises(lra.DataError, match=r'gradient_accumulation_steps=3 must divide the 16 rows'):
    lra.batching.FIXED_SIZE.micro_batched(3, 32, 2)


def test_token_batches_round_their_rows_to_the_micro_batches():
  buckets = length_buckets(48)
  batching = TokenBatching(2048, buckets)
  micro = batching.micro_batched(4, 0, 1)
  for bucket, length in enumerate(buckets):
    rows = micro.rows_per_device(bucket)
    assert rows % 4 == 0 and rows * length <= 2048
    assert rows > batching.rows_per_device(bucket) - 4
  with pytest.raises(
    lra.DataError,
    match=r'times the 64 micro-batches .*lower .*or training.gradient_accumulation_steps\.$',
  ):
    batching.micro_batched(64, 0, 1)


def test_micro_batches_draw_dropout_masks_of_their_own():
  """A batch of the same rows twice, in two micro-batches: with one dropout key for both, each
  would repeat the one-batch step's masks and give its gradient exactly."""
  model, _ = models(dropout_rate=0.5)
  rows = random_rows(0, 4, num_classes=NUM_CLASSES)
  optimizer = optax.sgd(1e-3)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, rows)

  def grad_norm(batch, micro_batches):
    step = functools.partial(
      steps.train_step, model=model, optimizer=optimizer, micro_batches=micro_batches
    )
    return float(jax.jit(step)(state, batch)[1]['grad_norm'])

  twice = {name: np.concatenate([value, value]) for name, value in rows.items()}
  assert grad_norm(twice, 2) != pytest.approx(grad_norm(rows, 1), rel=1e-4)
