"""Learning-rate schedules and the optimizer (`luna_jax.training.optim`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from luna_jax.training import optim

OPTIMIZER = {
  'learning_rate': 0.1,
  'schedule': 'constant',
  'warmup_steps': 0,
  'steps_per_cycle': 1,
  'weight_decay': 0.0,
  'b1': 0.9,
  'b2': 0.98,
  'eps': 1e-9,
  'grad_clip_norm': 0.0,
}


def test_official_rsqrt_schedule():
  lr = optim.learning_rate_schedule('constant * linear_warmup * rsqrt_decay', 0.05, 1000)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(lr(500), 0.05 * 0.5 / np.sqrt(1000), rtol=1e-6)
  np.testing.assert_allclose(lr(1000), 0.05 / np.sqrt(1000), rtol=1e-6)  # Peak 1.58e-3.
  np.testing.assert_allclose(lr(4999), 0.05 / np.sqrt(4999), rtol=1e-6)


def test_normalized_rsqrt_is_fairseq_inverse_sqrt_with_peak_base():
  lr = optim.learning_rate_schedule('constant * linear_warmup * rsqrt_normalized_decay', 1e-4, 1000)
  np.testing.assert_allclose(lr(1000), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(4000), 1e-4 * np.sqrt(1000 / 4000), rtol=1e-6)
  np.testing.assert_allclose(lr(250), 0.25e-4, rtol=1e-6)


def test_cosine_schedule():
  lr = optim.learning_rate_schedule('constant * linear_warmup * cosine_decay', 1e-3, 100, 1000)
  np.testing.assert_allclose(lr(100), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(600), 0.5e-3, rtol=1e-5)
  np.testing.assert_allclose(lr(1099), 0.0, atol=1e-8)
  # Each cycle of steps_per_cycle steps after the warmup starts again at the peak.
  np.testing.assert_allclose(lr(1100), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(1350), lr(350), rtol=1e-6)


def test_linear_decay_schedule():
  lr = optim.learning_rate_schedule('constant * linear_warmup * linear_decay', 6e-4, 100, 900)
  assert float(lr(50)) == pytest.approx(3e-4)
  assert float(lr(100)) == pytest.approx(6e-4)
  assert float(lr(550)) == pytest.approx(3e-4)
  assert float(lr(1000)) == 0.0 and float(lr(2000)) == 0.0


def test_bad_schedules_are_rejected():
  with pytest.raises(ValueError, match='rsqrt'):
    optim.learning_rate_schedule('constant * rsqrt', 1.0, 10)
  with pytest.raises(ValueError, match='warmup_steps'):
    optim.learning_rate_schedule('constant * linear_warmup', 1.0, 0)


def test_weight_decay_is_decoupled_and_scaled_by_the_learning_rate():
  optimizer = optim.make_optimizer(optim.OptimizerConfig(**{**OPTIMIZER, 'weight_decay': 0.5}))
  params = {'w': jnp.full((3,), 2.0)}
  updates, _ = optimizer.update(
    jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params
  )
  np.testing.assert_allclose(updates['w'], -0.1 * 0.5 * 2.0, rtol=1e-6)


def test_gradient_clipping_by_global_norm():
  params = {'w': jnp.zeros((4,))}
  grads = {'w': jnp.full((4,), 100.0)}  # Global norm 200.
  for clip, norm in ((0.0, 200.0), (1.0, 1.0)):
    optimizer = optim.make_optimizer(optim.OptimizerConfig(**{**OPTIMIZER, 'grad_clip_norm': clip}))
    _, state = optimizer.update(grads, optimizer.init(params), params)
    first_moment = optax.tree_utils.tree_get(state, 'mu')  # (1 - b1) * the (clipped) gradient.
    np.testing.assert_allclose(optax.tree.norm(first_moment), 0.1 * norm, rtol=1e-5)


def test_optimizer_config_keys_are_checked():
  with pytest.raises(ValueError, match='lr'):
    optim.OptimizerConfig.from_mapping({**OPTIMIZER, 'lr': 1.0})


def test_optimizer_config_makes_ints_of_float_fields_floats_optional_ones_too():
  from configs import base

  section = base.get_config().optimizer.to_dict()
  cfg = optim.OptimizerConfig.from_mapping({**section, 'learning_rate': 1, 'grad_clip_norm': 1})
  assert type(cfg.learning_rate) is float and type(cfg.grad_clip_norm) is float
  assert (
    optim.OptimizerConfig.from_mapping({**section, 'grad_clip_norm': None}).grad_clip_norm is None
  )
  with pytest.raises(ValueError, match='grad_clip_norm=True'):
    optim.OptimizerConfig.from_mapping({**section, 'grad_clip_norm': True})


def test_adamw_follows_its_definition_with_the_configured_settings_and_schedule():
  """Three AdamW updates equal Adam with bias correction, the configured b1, b2 and eps, plus the
  decoupled weight decay, each at the schedule's learning rate of its 0-based update count."""
  settings = {
    **OPTIMIZER,
    'learning_rate': 0.2,
    'schedule': 'constant * linear_warmup',
    'warmup_steps': 2,
    'b1': 0.5,
    'b2': 0.75,
    'eps': 0.3,
    'weight_decay': 0.1,
  }
  optimizer = optim.make_optimizer(optim.OptimizerConfig(**settings))
  params = {'w': jnp.array([1.0, -2.0])}
  state = optimizer.init(params)
  p, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
  for count, g in enumerate(([1.0, 0.5], [3.0, -1.0], [-2.0, 4.0])):
    updates, state = optimizer.update({'w': jnp.array(g)}, state, params)
    params = optax.apply_updates(params, updates)
    lr = 0.2 * min(1.0, count / 2)
    m = 0.5 * m + 0.5 * np.array(g)
    v = 0.75 * v + 0.25 * np.square(g)
    m_hat, v_hat = m / (1 - 0.5 ** (count + 1)), v / (1 - 0.75 ** (count + 1))
    p = p - lr * (m_hat / (np.sqrt(v_hat) + 0.3) + 0.1 * p)
    np.testing.assert_allclose(params['w'], p, rtol=1e-5)


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('weight_decay', -0.1, r'optimizer\.weight_decay=-0\.1: must be >= 0\.0'),
    ('eps', 0.0, r'optimizer\.eps=0\.0: must be > 0\.0'),
    ('b2', 1.0, r'optimizer\.b2=1\.0: must be < 1\.0'),
    ('warmup_init_learning_rate', 0.1, 'warmup_init_learning_rate=0.1 must be below learning_rate'),
  ],
)
def test_optimizer_settings_out_of_their_range_are_refused(key, value, message):
  """AdamW's settings are checked at their bounds: the warmup must start below the peak."""
  full = {
    **OPTIMIZER,
    'name': 'adamw',
    'weight_decay_type': None,
    'rebound': 'constant',
    'grad_clip_mode': 'global',
    'warmup_init_learning_rate': 0.0,
    'milestones': (),
    'decay_rate': 0.1,
  }
  optim.OptimizerConfig.from_mapping(full)
  with pytest.raises(ValueError, match=message):
    optim.OptimizerConfig.from_mapping({**full, key: value})
