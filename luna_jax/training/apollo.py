"""Apollo, the optimizer of the paper's WMT'14 Luna rows, as an optax transformation.

Apollo (Ma, 2020, "Apollo: An Adaptive Parameter-wise Diagonal Quasi-Newton Method for Nonconvex
Stochastic Optimization") keeps, per parameter tensor, a bias-corrected moving average m of the
gradient, a diagonal quasi-Newton approximation B of the Hessian, updated from the secant condition
along the previous step d, and steps along m / max(|B|, bound). This is the algorithm of the
authors' released code (fairseq-apollo `fairseq/optim/apollo.py`, class `Apollo`), step for step;
with step count t (1-based), beta, eps, and for each parameter tensor:

  g      = grad (+ weight_decay * param for weight_decay_type 'L2')
  alpha  = (1 - beta) / (1 - beta^t)
  dg     = g - m;            m <- m + alpha * dg
  bound  = max|dg| ('belief')   or 0.01, eps <- eps / 0.01 ('constant')
  d      = d / (||d||_4 + eps);   v = d * d
  delta  = -alpha * sum(dg / (||d||_4 + eps) * d) - sum(B * v)
  B      <- B + delta * v
  D      = max(|B|, bound) + eps / alpha ('belief')   or max(|B|, 0.01) ('constant')
  d      <- m / D (+ w * param for 'decoupled' (w = weight_decay) or 'stable' (w = weight_decay /
            mean(D)))
  param  <- param - lr * d

The sums and norms run over each whole parameter tensor (fairseq loops over parameters), and d is
kept in the state with the weight decay included, as the authors' in-place update leaves it. The
learning rate is applied outside (`optax.scale_by_learning_rate`), so the schedule composes as for
Adam.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

#: Apollo's rectified bounds of the diagonal Hessian (`--apollo-rebound`).
REBOUNDS = ('constant', 'belief')
#: Apollo's weight decays (`--weight-decay-type`): added to the gradient ('L2'), added to the
#: direction ('decoupled'), or added to the direction divided by the mean curvature ('stable').
WEIGHT_DECAY_TYPES = ('L2', 'decoupled', 'stable')
#: The 'constant' rebound's floor on |B| (fairseq-apollo `apollo.py`: `rebound = 0.01`).
CONSTANT_BOUND = 0.01


class ApolloState(NamedTuple):
  """Apollo's state: the step count and, per parameter, three arrays of its shape (float32, or the
  parameter's dtype when wider)."""

  count: jax.Array  # int32 scalar: updates done.
  exp_avg_grad: optax.Updates  # m, the bias-corrected moving average of the gradient.
  approx_hessian: optax.Updates  # B, the diagonal Hessian approximation.
  update: optax.Updates  # d, the last direction (before the learning rate).


def scale_by_apollo(
  beta: float = 0.9,
  eps: float = 1e-4,
  rebound: str = 'constant',
  weight_decay: float = 0.0,
  weight_decay_type: str | None = None,
) -> optax.GradientTransformation:
  """Apollo's direction d per parameter (the module docstring); chain with
  `optax.scale_by_learning_rate` for the update `-lr * d`.

  Args:
    beta: moving-average coefficient of the gradient, in [0, 1) (`--apollo-beta`, 0.9).
    eps: >= 0 (`--apollo-eps`, 1e-4); 'belief': added to the norm of d, and eps / alpha to the
      bounded curvature; 'constant': eps / 0.01 added to the norm of d only.
    rebound: 'constant' (|B| floored at 0.01) or 'belief' (floored at max|g - m|).
    weight_decay: weight-decay coefficient, >= 0.
    weight_decay_type: one of WEIGHT_DECAY_TYPES, or None for the authors' default: 'L2' with
      the 'constant' rebound, 'decoupled' with 'belief'.

  Returns:
    The transformation; its `update` needs `params` when weight_decay > 0.

  Raises:
    ValueError: a setting outside the ranges above.
  """
  if not 0.0 <= beta < 1.0 or eps < 0.0 or weight_decay < 0.0:
    raise ValueError(
      f'Apollo needs 0 <= beta < 1, eps >= 0 and weight_decay >= 0, got beta={beta}, eps={eps}, '
      f'weight_decay={weight_decay}.'
    )
  if weight_decay_type is None:  # fairseq-apollo `Apollo.__init__`.
    weight_decay_type = 'L2' if rebound == 'constant' else 'decoupled'
  if rebound not in REBOUNDS or weight_decay_type not in WEIGHT_DECAY_TYPES:
    raise ValueError(
      f'Apollo rebound {rebound!r} / weight_decay_type {weight_decay_type!r}: expected one of '
      f'{REBOUNDS} / {WEIGHT_DECAY_TYPES}.'
    )
  belief = rebound == 'belief'
  step_eps = eps if belief else eps / CONSTANT_BOUND

  def init_fn(params: optax.Params) -> ApolloState:
    def zeros():
      return jax.tree.map(
        lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), params
      )

    return ApolloState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

  def update_fn(
    grads: optax.Updates, state: ApolloState, params: optax.Params | None = None
  ) -> tuple[optax.Updates, ApolloState]:
    if weight_decay and params is None:
      raise ValueError('Apollo with weight decay needs the parameters in update().')
    count = state.count + 1
    alpha = (1.0 - beta) / (1.0 - beta**count)

    def leaf(grad, m, hessian, direction, param):
      grad = grad.astype(m.dtype)
      if weight_decay and weight_decay_type == 'L2':
        grad = grad + weight_decay * param
      delta_grad = grad - m
      bound = jnp.max(jnp.abs(delta_grad)) if belief else CONSTANT_BOUND
      m = m + alpha * delta_grad
      norm = jnp.sum(direction**4) ** 0.25 + step_eps
      direction = direction / norm
      v_sq = direction * direction
      delta = -alpha * jnp.sum(delta_grad / norm * direction) - jnp.sum(hessian * v_sq)
      hessian = hessian + v_sq * delta
      if belief:
        curvature = jnp.maximum(jnp.abs(hessian), bound) + step_eps / alpha
      else:
        curvature = jnp.maximum(jnp.abs(hessian), bound)
      direction = m / curvature
      if weight_decay and weight_decay_type != 'L2':
        scale = (
          weight_decay / jnp.mean(curvature) if weight_decay_type == 'stable' else weight_decay
        )
        direction = direction + scale * param
      return direction, m, hessian

    treedef = jax.tree.structure(grads)
    trees = (grads, state.exp_avg_grad, state.approx_hessian, state.update)
    trees += (grads if params is None else params,)
    leaves = [leaf(*args) for args in zip(*(treedef.flatten_up_to(tree) for tree in trees))]
    directions, m, hessian = (treedef.unflatten(parts) for parts in zip(*leaves))
    return directions, ApolloState(count, m, hessian, directions)

  return optax.GradientTransformation(init_fn, update_fn)


def apollo(
  learning_rate: optax.ScalarOrSchedule,
  beta: float = 0.9,
  eps: float = 1e-4,
  rebound: str = 'constant',
  weight_decay: float = 0.0,
  weight_decay_type: str | None = None,
) -> optax.GradientTransformation:
  """Apollo with a learning rate or schedule: the update is `-learning_rate * d`
  (`scale_by_apollo` for the arguments and errors)."""
  return optax.chain(
    scale_by_apollo(beta, eps, rebound, weight_decay, weight_decay_type),
    optax.scale_by_learning_rate(learning_rate),
  )
