"""Apollo, the milestone schedule and per-parameter clipping against the authors' code.

`tests/data/apollo_reference/` was written by `benchmarks/apollo_reference.py`, which ran
fairseq-apollo's own `Apollo`, `MilestoneScheduler` and `clip_param_grad_norm_` (PyTorch, float32)
on a small least-squares problem; here luna_jax's `make_optimizer` runs the same recipes from the
same start and must follow the same trajectory.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base as configs_base
from luna_jax.training import apollo, optim

REFERENCE = Path(__file__).parent / 'data' / 'apollo_reference'
SPEC = json.loads((REFERENCE / 'spec.json').read_text())


def loss_fn(params, x, y):
  """The reference's problem: sum((tanh(x w + b) v - y)^2) / examples."""
  hidden = jnp.tanh(x @ params['w'] + params['b'])
  return jnp.sum((hidden @ params['v'] - y) ** 2) / x.shape[0]


def recipe(case: dict) -> optim.OptimizerConfig:
  schedule = SPEC['schedule']
  return optim.OptimizerConfig(
    name='apollo',
    learning_rate=case['lr'],
    schedule='constant * linear_warmup * milestone_decay',
    warmup_steps=schedule['warmup_updates'],
    warmup_init_learning_rate=case['warmup_init_lr'],
    milestones=tuple(schedule['milestones']),
    decay_rate=schedule['decay_rate'],
    steps_per_cycle=1,
    b1=SPEC['beta'],
    b2=0.98,
    eps=case['eps'],
    rebound=case['rebound'],
    weight_decay=case['weight_decay'],
    weight_decay_type=case['weight_decay_type'],
    grad_clip_norm=case['clip'],
    grad_clip_mode='each',
  )


@pytest.mark.parametrize('case', sorted(SPEC['cases']))
def test_apollo_follows_the_authors_optimizer_step_for_step(case):
  reference = np.load(REFERENCE / 'reference.npz')
  config = recipe(SPEC['cases'][case])
  optimizer = optim.make_optimizer(config)
  params = {k: jnp.asarray(reference[f'init_{k}']) for k in SPEC['shapes']}
  x, y = jnp.asarray(reference['x']), jnp.asarray(reference['y'])

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = optimizer.update(grads, state, params)
    return jax.tree.map(jnp.add, params, updates), state

  state = optimizer.init(params)
  schedule = optim.schedule_from_config(config)
  for t in range(SPEC['steps']):
    np.testing.assert_allclose(schedule(t), reference[f'{case}/lr'][t], rtol=1e-6)
    params, state = step(params, state)
    for k in SPEC['shapes']:
      want = reference[f'{case}/params_{k}'][t + 1]
      # float32 on both sides; the reference moves each tensor by 0.1 to 20 over the run.
      np.testing.assert_allclose(params[k], want, rtol=1e-4, atol=1e-4, err_msg=f'{k}, step {t}')


def numpy_apollo_step(grad, m, hessian, direction, param, count, case):
  """One Apollo update of one tensor, from the module docstring's equations, in float64."""
  beta, eps, weight_decay = 0.9, 1e-4, case['weight_decay']
  if case['weight_decay_type'] == 'L2':
    grad = grad + weight_decay * param
  alpha = (1 - beta) / (1 - beta**count)
  delta_grad = grad - m
  if case['rebound'] == 'belief':
    bound = np.abs(delta_grad).max()
  else:
    bound, eps = 0.01, eps / 0.01
  m = m + alpha * delta_grad
  norm = (direction**4).sum() ** 0.25 + eps
  direction = direction / norm
  v = direction**2
  delta = -alpha * (delta_grad / norm * direction).sum() - (hessian * v).sum()
  hessian = hessian + delta * v
  if case['rebound'] == 'belief':
    curvature = np.maximum(np.abs(hessian), bound) + eps / alpha
  else:
    curvature = np.maximum(np.abs(hessian), bound)
  direction = m / curvature
  if case['weight_decay_type'] == 'decoupled':
    direction = direction + weight_decay * param
  elif case['weight_decay_type'] == 'stable':
    direction = direction + weight_decay / curvature.mean() * param
  return direction, m, hessian


@pytest.mark.parametrize('rebound', apollo.REBOUNDS)
@pytest.mark.parametrize('weight_decay_type', apollo.WEIGHT_DECAY_TYPES)
def test_apollo_step_from_a_mid_run_state_matches_the_equations(rebound, weight_decay_type):
  """From a state whose curvature is partly above the floors (unlike early in a run), so that
  the curvature's mean, clamp and bound all matter."""
  rng = np.random.default_rng(1)
  case = {'rebound': rebound, 'weight_decay': 0.05, 'weight_decay_type': weight_decay_type}
  arrays = [rng.standard_normal((5, 3)) for _ in range(5)]
  arrays[2] = arrays[2] * 0.2  # The curvature B: entries both below and above the floors.
  grad, m, hessian, direction, param = arrays
  transform = apollo.scale_by_apollo(0.9, 1e-4, rebound, 0.05, weight_decay_type)
  state = apollo.ApolloState(
    jnp.asarray(3, jnp.int32),
    *({'x': jnp.asarray(a, jnp.float32)} for a in (m, hessian, direction)),
  )
  updates, new_state = transform.update(
    {'x': jnp.asarray(grad, jnp.float32)}, state, {'x': jnp.asarray(param, jnp.float32)}
  )
  want = numpy_apollo_step(grad, m, hessian, direction, param, 4, case)
  got = (updates['x'], new_state.exp_avg_grad['x'], new_state.approx_hessian['x'])
  for name, g, w in zip(('direction', 'm', 'B'), got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_array_equal(new_state.update['x'], updates['x'])
  assert int(new_state.count) == 4


def test_an_unset_weight_decay_type_is_the_authors_default():
  """fairseq-apollo's `Apollo.__init__`: 'L2' with the constant rebound, 'decoupled' with belief;
  the base config leaves the type unset for every optimizer."""
  rng = np.random.default_rng(2)
  params = {'w': jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
  grads = [{'w': jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)} for _ in range(3)]
  for rebound, authors, other in (('constant', 'L2', 'decoupled'), ('belief', 'decoupled', 'L2')):
    directions = {}
    for kind in (None, authors, other):
      transform = apollo.scale_by_apollo(0.9, 1e-4, rebound, 0.05, kind)
      state = transform.init(params)
      for grad in grads:
        update, state = transform.update(grad, state, params)
      directions[kind] = np.asarray(update['w'])
    np.testing.assert_array_equal(directions[None], directions[authors])
    assert not np.allclose(directions[None], directions[other])
  base = configs_base.get_config().optimizer
  assert base.weight_decay_type is None
  for name in optim.OPTIMIZERS:
    assert optim.OptimizerConfig(**{**SETTINGS, 'name': name}).weight_decay_type is None


def test_each_tensor_is_clipped_to_the_norm_on_its_own():
  grads = {'big': jnp.full((4,), 10.0), 'small': jnp.full((4,), 0.01)}  # Norms 20 and 0.02.
  clipped, _ = optim.clip_each_by_norm(1.0).update(grads, None)
  np.testing.assert_allclose(jnp.linalg.norm(clipped['big']), 20 / (20 + 1e-6), rtol=1e-6)
  np.testing.assert_array_equal(clipped['small'], grads['small'])


def test_milestone_schedule_is_fairseqs():
  """fairseq's MilestoneScheduler, written out: lr from init to base over the warmup, then times
  the decay rate at each milestone, for the 0-based update count."""
  lr = optim.learning_rate_schedule(
    'constant * linear_warmup * milestone_decay',
    0.1,
    1000,
    warmup_init_learning_rate=1e-5,
    milestones=(300000, 450000),
    decay_rate=0.1,
  )
  for count, want in (
    (0, 1e-5),
    (500, 1e-5 + 500 * (0.1 - 1e-5) / 1000),
    (1000, 0.1),
    (299999, 0.1),
    (300000, 0.01),
    (449999, 0.01),
    (450000, 0.001),
    (499999, 0.001),
  ):
    np.testing.assert_allclose(lr(count), want, rtol=1e-5, err_msg=str(count))


def test_a_warmup_start_keeps_the_other_schedules():
  lr = optim.learning_rate_schedule(
    'constant * linear_warmup * rsqrt_normalized_decay', 5e-4, 4000, warmup_init_learning_rate=1e-7
  )
  np.testing.assert_allclose(lr(0), 1e-7, rtol=1e-5)
  np.testing.assert_allclose(lr(4000), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(16000), 2.5e-4, rtol=1e-6)


#: An AdamW `config.optimizer` with a constant learning rate, the other keys at their defaults.
SETTINGS = {
  'learning_rate': 0.1,
  'schedule': 'constant',
  'warmup_steps': 100,
  'steps_per_cycle': 1,
  'weight_decay': 0.0,
  'b1': 0.9,
  'b2': 0.98,
  'eps': 1e-8,
  'grad_clip_norm': 0.0,
}


@pytest.mark.parametrize(
  'changes, message',
  [
    ({'schedule': 'constant * milestone_decay'}, 'needs milestones'),
    ({'schedule': 'constant * milestone_decay', 'milestones': (5, 3)}, 'must increase'),
    ({'schedule': 'constant * linear_warmup * milestone_decay', 'milestones': (10,)}, 'warmup'),
    ({'warmup_init_learning_rate': 0.5}, 'must be below'),
    ({'weight_decay_type': 'L2'}, "AdamW's weight decay is 'decoupled'"),
    ({'rebound': 'belief'}, "rebound='belief' is Apollo's"),
    ({'milestones': (500,)}, r'milestones \[500\] are used by milestone_decay only'),
  ],
)
def test_inconsistent_optimizer_settings_are_refused_by_name(changes, message):
  with pytest.raises(ValueError, match=message):
    optim.OptimizerConfig(**{**SETTINGS, **changes})


def test_milestones_need_only_come_after_a_warmup_the_schedule_has():
  """Without linear_warmup, warmup_steps is unused: a milestone below it is a valid one."""
  config = optim.OptimizerConfig(
    **{
      **SETTINGS,
      'schedule': 'constant * milestone_decay',
      'warmup_steps': 1000,
      'milestones': (10,),
    }
  )
  lr = optim.schedule_from_config(config)
  np.testing.assert_allclose([lr(9), lr(10)], [0.1, 0.01], rtol=1e-6)


def test_apollo_refuses_bad_settings_and_needs_params_for_weight_decay():
  with pytest.raises(ValueError, match='beta'):
    apollo.scale_by_apollo(beta=1.0)
  with pytest.raises(ValueError, match='rebound'):
    apollo.scale_by_apollo(rebound='linear')
  transform = apollo.scale_by_apollo(weight_decay=1e-2)
  params = {'w': jnp.ones((2,))}
  with pytest.raises(ValueError, match='parameters'):
    transform.update(params, transform.init(params))


def test_apollos_state_is_float32_for_bfloat16_parameters():
  """Apollo keeps m, B and d in float32 for bfloat16 parameters (the wider of the two dtypes)."""
  transform = apollo.scale_by_apollo()
  params = {'w': jnp.ones((3,), jnp.bfloat16), 'v': jnp.ones((2,), jnp.float32)}
  state = transform.init(params)
  _, state = transform.update(params, state)
  for tree in (state.exp_avg_grad, state.approx_hessian, state.update):
    assert {name: x.dtype for name, x in tree.items()} == {'w': jnp.float32, 'v': jnp.float32}
