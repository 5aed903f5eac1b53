"""Learning-rate schedules and the optimizer of the LRA trainer.

The schedules are the official LRA ones (`create_learning_rate_scheduler` in
`lra_benchmarks/utils/train_utils.py`): a product of named factors evaluated at the 0-based update
count, so the learning rate of the very first update is 0 under `linear_warmup`.

  constant                 base_learning_rate
  linear_warmup            min(1, step / warmup_steps)
  rsqrt_decay              1 / sqrt(max(step, warmup_steps))           (peak base / sqrt(warmup))
  rsqrt_normalized_decay   sqrt(warmup_steps) / sqrt(max(step, warmup_steps))   (peak = base)
  cosine_decay             max(0, (1 + cos(pi * (p mod 1))) / 2), p = max(0, step - warmup) / steps_per_cycle

`constant * linear_warmup * rsqrt_normalized_decay` is fairseq's `inverse_sqrt` with the peak learning
rate `base_learning_rate` (the Luna recipes; fairseq warms up from 1e-7 instead of 0).

The optimizer is AdamW as in both official codebases: Adam with decoupled weight decay scaled by the
learning rate (`param -= lr * wd * param`) applied to every parameter, optionally behind gradient
clipping by global norm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from luna_jax import config_utils

FACTORS = ('constant', 'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay', 'cosine_decay')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The `config.optimizer` section (every field required; see configs/base.py for documentation)."""
  learning_rate: float
  schedule: str
  warmup_steps: int
  steps_per_cycle: int
  weight_decay: float
  b1: float
  b2: float
  eps: float
  grad_clip_norm: Optional[float]

  @classmethod
  def from_mapping(cls, config: Mapping[str, Any]) -> 'OptimizerConfig':
    """Builds the config from a mapping, naming unknown or missing keys (ValueError)."""
    return config_utils.dataclass_from_mapping(cls, config, 'optimizer')


def learning_rate_schedule(factors: str, base_learning_rate: float, warmup_steps: int,
                           steps_per_cycle: int = 100000) -> optax.Schedule:
  """Builds an official-LRA learning-rate schedule.

  Args:
    factors: factor names joined by '*', e.g. 'constant * linear_warmup * rsqrt_decay' (see the module
      docstring for the definitions).
    base_learning_rate: the `constant` factor.
    warmup_steps: warmup length in updates.
    steps_per_cycle: cosine period in updates (cosine_decay only).

  Returns:
    A function from the 0-based update count to the learning rate (float32 scalar).

  Raises:
    ValueError: on an unknown factor name or a non-positive warmup used by a factor.
  """
  names = [name.strip() for name in factors.split('*')]
  unknown = [name for name in names if name not in FACTORS]
  if unknown:
    raise ValueError(f'unknown learning-rate factor(s) {unknown}; known: {list(FACTORS)}.')
  if warmup_steps <= 0 and set(names) & {'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay'}:
    raise ValueError(f'warmup_steps must be positive for {factors!r}, got {warmup_steps}.')

  def schedule(count):
    step = jnp.asarray(count, jnp.float32)
    warmup = jnp.float32(max(warmup_steps, 1))
    value = jnp.float32(1.0)
    for name in names:
      if name == 'constant':
        value *= base_learning_rate
      elif name == 'linear_warmup':
        value *= jnp.minimum(1.0, step / warmup)
      elif name == 'rsqrt_decay':
        value *= jax.lax.rsqrt(jnp.maximum(step, warmup))
      elif name == 'rsqrt_normalized_decay':
        value *= jnp.sqrt(warmup) * jax.lax.rsqrt(jnp.maximum(step, warmup))
      else:  # cosine_decay
        progress = jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle)
        value *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
    return value

  return schedule


def schedule_from_config(optimizer_config: Mapping[str, Any]) -> optax.Schedule:
  """The learning-rate schedule described by a `config.optimizer` mapping."""
  cfg = OptimizerConfig.from_mapping(optimizer_config)
  return learning_rate_schedule(cfg.schedule, cfg.learning_rate, cfg.warmup_steps,
                                cfg.steps_per_cycle)


def make_optimizer(optimizer_config: Mapping[str, Any]) -> optax.GradientTransformation:
  """Builds AdamW with the configured schedule, behind optional global-norm gradient clipping.

  Args:
    optimizer_config: the `config.optimizer` mapping: learning_rate, schedule (factor string),
      warmup_steps, steps_per_cycle, weight_decay, b1, b2, eps, grad_clip_norm (None or <= 0: off).

  Returns:
    The optax transformation.

  Raises:
    ValueError: naming unknown or missing keys, or an unknown schedule factor.
  """
  cfg = OptimizerConfig.from_mapping(optimizer_config)
  adamw = optax.adamw(schedule_from_config(optimizer_config), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay)
  if cfg.grad_clip_norm is not None and cfg.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)
  return adamw
