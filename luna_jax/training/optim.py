"""Learning-rate schedules and the optimizer of the LRA trainer.

The schedules are the official LRA ones (`create_learning_rate_scheduler` in
`lra_benchmarks/utils/train_utils.py`): a product of named factors evaluated at the 0-based update
count, so the learning rate of the very first update is 0 under `linear_warmup`.

  constant                 base_learning_rate
  linear_warmup            min(1, step / warmup_steps)
  rsqrt_decay              1 / sqrt(max(step, warmup_steps))           (peak base / sqrt(warmup))
  rsqrt_normalized_decay   sqrt(warmup_steps) / sqrt(max(step, warmup_steps))   (peak = base)
  cosine_decay             max(0, (1 + cos(pi * (p mod 1))) / 2),
                           p = max(0, step - warmup_steps) / steps_per_cycle
  linear_decay             max(0, 1 - p), the same p: linear decay to 0 over steps_per_cycle
                           after the warmup (BERT/RoBERTa pretraining and finetuning, Table 8)

`constant * linear_warmup * rsqrt_normalized_decay` is fairseq's `inverse_sqrt` with the peak
learning rate `base_learning_rate` (the Luna recipes; fairseq warms up from 1e-7 instead of 0).

The optimizer is AdamW as in both official codebases: Adam with decoupled weight decay scaled by the
learning rate (`param -= lr * wd * param`) applied to every parameter, optionally behind gradient
clipping by global norm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from luna_jax import config_utils

FACTORS = (
  'constant',
  'linear_warmup',
  'rsqrt_decay',
  'rsqrt_normalized_decay',
  'cosine_decay',
  'linear_decay',
)


def schedule_error(factors: str, warmup_steps: int = 1) -> str | None:
  """Why the factor string `factors` with `warmup_steps` is not a valid schedule, or None."""
  names = [name.strip() for name in factors.split('*')]
  unknown = [name for name in names if name not in FACTORS]
  if unknown:
    return f'unknown learning-rate factor(s) {unknown}; known: {list(FACTORS)}'
  if warmup_steps <= 0 and set(names) & {'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay'}:
    return f'warmup_steps must be positive for {factors!r}, got {warmup_steps}'
  return None


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The `config.optimizer` section, checked (see configs/base.py for what each field means)."""

  learning_rate: float = config_utils.spec(above=0.0)
  schedule: str = config_utils.spec(check=schedule_error)
  warmup_steps: int = config_utils.spec(minimum=0)
  steps_per_cycle: int = config_utils.spec(minimum=1)
  weight_decay: float = config_utils.spec(minimum=0.0)
  b1: float = config_utils.spec(minimum=0.0, below=1.0)
  b2: float = config_utils.spec(minimum=0.0, below=1.0)
  eps: float = config_utils.spec(above=0.0)
  grad_clip_norm: float | None = config_utils.spec(minimum=0.0)

  def __post_init__(self):
    error = schedule_error(self.schedule, self.warmup_steps)
    if error:
      raise config_utils.ConfigError(f'config.optimizer: {error}.')

  @classmethod
  def from_mapping(cls, config: Mapping[str, Any]) -> OptimizerConfig:
    """Builds and checks the section (ValueError naming the key and what is allowed)."""
    return config_utils.parse_section(cls, config, 'config.optimizer')


def learning_rate_schedule(
  factors: str, base_learning_rate: float, warmup_steps: int, steps_per_cycle: int = 100000
) -> optax.Schedule:
  """Builds an official-LRA learning-rate schedule.

  Args:
    factors: factor names joined by '*', e.g. 'constant * linear_warmup * rsqrt_decay' (see the
      module docstring for the definitions).
    base_learning_rate: the `constant` factor.
    warmup_steps: warmup length in updates.
    steps_per_cycle: cosine period, or linear-decay length, in updates after the warmup
      (cosine_decay and linear_decay only).

  Returns:
    A function from the 0-based update count to the learning rate (float32 scalar).

  Raises:
    ValueError: on an unknown factor name or a non-positive warmup used by a factor.
  """
  error = schedule_error(factors, warmup_steps)
  if error:
    raise ValueError(error + '.')
  names = [name.strip() for name in factors.split('*')]

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
      elif name == 'linear_decay':
        value *= jnp.maximum(0.0, 1.0 - jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle))
      else:  # cosine_decay
        progress = jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle)
        value *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
    return value

  return schedule


def schedule_from_config(cfg: OptimizerConfig) -> optax.Schedule:
  """The learning-rate schedule of the `config.optimizer` section."""
  return learning_rate_schedule(
    cfg.schedule, cfg.learning_rate, cfg.warmup_steps, cfg.steps_per_cycle
  )


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """Builds AdamW with the configured schedule, behind optional global-norm gradient clipping.

  Args:
    cfg: the checked `config.optimizer` section (`OptimizerConfig.from_mapping`); grad_clip_norm
      None or 0 turns clipping off.

  Returns:
    The optax transformation.
  """
  adamw = optax.adamw(
    schedule_from_config(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
  )
  if cfg.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)
  return adamw
