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
  milestone_decay          decay_rate ** (number of milestones <= step): fairseq-apollo's
                           `milestone` scheduler (`fairseq/optim/lr_scheduler/
                           milestone_lr_scheduler.py`; the WMT'14 Apollo recipe)

With `warmup_init_learning_rate` w > 0, `linear_warmup` starts from w instead of 0: it is
min(1, w / base + (1 - w / base) * step / warmup_steps), so `constant * linear_warmup` rises
linearly from w to base_learning_rate as fairseq's `--warmup-init-lr` does.
`constant * linear_warmup * rsqrt_normalized_decay` is fairseq's `inverse_sqrt` with the peak
learning rate `base_learning_rate` (the Luna recipes).

The optimizer (`name`) is AdamW as in both official codebases (Adam with decoupled weight decay
scaled by the learning rate, `param -= lr * wd * param`, on every parameter), or Apollo
(`luna_jax.training.apollo`), the optimizer of the paper's WMT'14 Luna rows. Gradients are
optionally clipped first: to a global norm ('global', fairseq `--clip-mode total`), or each
parameter tensor to that norm ('each', fairseq-apollo `--clip-mode each`, `fairseq/utils.py`
`clip_param_grad_norm_`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from luna_jax import config_utils
from luna_jax.training import apollo

FACTORS = (
  'constant',
  'linear_warmup',
  'rsqrt_decay',
  'rsqrt_normalized_decay',
  'cosine_decay',
  'linear_decay',
  'milestone_decay',
)
#: The optimizers of `config.optimizer.name`.
OPTIMIZERS = ('adamw', 'apollo')
#: Gradient clipping modes: one global norm, or each parameter tensor's own norm.
CLIP_MODES = ('global', 'each')


def schedule_error(
  factors: str, warmup_steps: int = 1, milestones: Sequence[int] | None = None
) -> str | None:
  """Why the factor string `factors` with `warmup_steps` and `milestones` is not a valid schedule,
  or None (milestones None: not checked). Milestones must come after the warmup of
  `linear_warmup` and are refused without `milestone_decay` (they would do nothing)."""
  names = [name.strip() for name in factors.split('*')]
  unknown = [name for name in names if name not in FACTORS]
  if unknown:
    return f'unknown learning-rate factor(s) {unknown}; known: {list(FACTORS)}'
  if warmup_steps <= 0 and set(names) & {'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay'}:
    return f'warmup_steps must be positive for {factors!r}, got {warmup_steps}'
  if milestones is not None and 'milestone_decay' in names:
    if not milestones or any(not isinstance(m, int) or isinstance(m, bool) for m in milestones):
      return f'milestone_decay needs milestones, a list of update counts, got {milestones!r}'
    warmup = warmup_steps if 'linear_warmup' in names else 0
    if list(milestones) != sorted(set(milestones)) or milestones[0] <= warmup:
      return (
        f'milestones {list(milestones)} must increase and come after the warmup '
        f'({warmup} steps: fairseq ignores a milestone inside it)'
      )
  elif milestones:
    return f'milestones {list(milestones)} are used by milestone_decay only, not in {factors!r}'
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
  name: str = config_utils.spec(default='adamw', choices=OPTIMIZERS)
  weight_decay_type: str | None = config_utils.spec(default=None, choices=apollo.WEIGHT_DECAY_TYPES)
  rebound: str = config_utils.spec(default='constant', choices=apollo.REBOUNDS)
  grad_clip_mode: str = config_utils.spec(default='global', choices=CLIP_MODES)
  warmup_init_learning_rate: float = config_utils.spec(default=0.0, minimum=0.0)
  milestones: tuple[int, ...] = config_utils.spec(default=())
  decay_rate: float = config_utils.spec(default=0.1, above=0.0)

  def __post_init__(self):
    object.__setattr__(self, 'milestones', tuple(self.milestones))
    error = schedule_error(self.schedule, self.warmup_steps, self.milestones)
    if error is None and self.warmup_init_learning_rate >= self.learning_rate:
      error = (
        f'warmup_init_learning_rate={self.warmup_init_learning_rate} must be below '
        f'learning_rate={self.learning_rate} (the warmup rises from one to the other)'
      )
    if error is None and self.name == 'adamw' and self.weight_decay_type not in (None, 'decoupled'):
      error = (
        f"weight_decay_type={self.weight_decay_type!r} is Apollo's; AdamW's weight decay is "
        "'decoupled'"
      )
    if error is None and self.name == 'adamw' and self.rebound != 'constant':
      error = f"rebound={self.rebound!r} is Apollo's; AdamW has no rebound (leave 'constant')"
    if error:
      raise config_utils.ConfigError(f'config.optimizer: {error}.')

  @classmethod
  def from_mapping(cls, config: Mapping[str, Any]) -> OptimizerConfig:
    """Builds and checks the section (ValueError naming the key and what is allowed)."""
    return config_utils.parse_section(cls, config, 'config.optimizer')


def learning_rate_schedule(
  factors: str,
  base_learning_rate: float,
  warmup_steps: int,
  steps_per_cycle: int = 100000,
  *,
  warmup_init_learning_rate: float = 0.0,
  milestones: Sequence[int] = (),
  decay_rate: float = 0.1,
) -> optax.Schedule:
  """Builds an official-LRA (or fairseq) learning-rate schedule.

  Args:
    factors: factor names joined by '*', e.g. 'constant * linear_warmup * rsqrt_decay' (see the
      module docstring for the definitions).
    base_learning_rate: the `constant` factor.
    warmup_steps: warmup length in updates.
    steps_per_cycle: cosine period, or linear-decay length, in updates after the warmup
      (cosine_decay and linear_decay only).
    warmup_init_learning_rate: where `constant * linear_warmup` starts (fairseq's
      `--warmup-init-lr`; 0 in the official LRA).
    milestones: the update counts where milestone_decay multiplies by decay_rate, increasing and
      after the warmup.
    decay_rate: milestone_decay's factor per milestone passed.

  Returns:
    A function from the 0-based update count to the learning rate (float32 scalar).

  Raises:
    ValueError: on an unknown factor name, a non-positive warmup used by a factor, or milestones
      missing, unordered or inside the warmup, or given without milestone_decay.
  """
  error = schedule_error(factors, warmup_steps, tuple(milestones))
  if error:
    raise ValueError(error + '.')
  names = [name.strip() for name in factors.split('*')]
  warmup_start = warmup_init_learning_rate / base_learning_rate

  def schedule(count):
    step = jnp.asarray(count, jnp.float32)
    warmup = jnp.float32(max(warmup_steps, 1))
    value = jnp.float32(1.0)
    for name in names:
      if name == 'constant':
        value *= base_learning_rate
      elif name == 'linear_warmup':
        value *= jnp.minimum(1.0, warmup_start + (1.0 - warmup_start) * step / warmup)
      elif name == 'rsqrt_decay':
        value *= jax.lax.rsqrt(jnp.maximum(step, warmup))
      elif name == 'rsqrt_normalized_decay':
        value *= jnp.sqrt(warmup) * jax.lax.rsqrt(jnp.maximum(step, warmup))
      elif name == 'linear_decay':
        value *= jnp.maximum(0.0, 1.0 - jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle))
      elif name == 'milestone_decay':
        passed = jnp.sum(jnp.asarray(count) >= jnp.asarray(milestones))
        value *= jnp.float32(decay_rate) ** passed.astype(jnp.float32)
      else:  # cosine_decay
        progress = jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle)
        value *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
    return value

  return schedule


def schedule_from_config(cfg: OptimizerConfig) -> optax.Schedule:
  """The learning-rate schedule of the `config.optimizer` section."""
  return learning_rate_schedule(
    cfg.schedule,
    cfg.learning_rate,
    cfg.warmup_steps,
    cfg.steps_per_cycle,
    warmup_init_learning_rate=cfg.warmup_init_learning_rate,
    milestones=cfg.milestones,
    decay_rate=cfg.decay_rate,
  )


def clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales each gradient tensor g by min(1, max_norm / (||g||_2 + 1e-6)) (fairseq-apollo
  `--clip-mode each`, `fairseq/utils.py` `clip_param_grad_norm_`)."""

  def clip(grad: jax.Array, _) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(grad.astype(jnp.float32))))
    return grad * jnp.minimum(1.0, max_norm / (norm + 1e-6)).astype(grad.dtype)

  return optax.stateless_with_tree_map(clip)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """Builds AdamW or Apollo with the configured schedule, behind optional gradient clipping.

  Args:
    cfg: the checked `config.optimizer` section (`OptimizerConfig.from_mapping`); grad_clip_norm
      None or 0 turns clipping off. Apollo takes b1 as its beta, eps, weight_decay with
      weight_decay_type, and rebound; b2 is Adam's only.

  Returns:
    The optax transformation.
  """
  schedule = schedule_from_config(cfg)
  if cfg.name == 'apollo':
    optimizer = apollo.apollo(
      schedule, cfg.b1, cfg.eps, cfg.rebound, cfg.weight_decay, cfg.weight_decay_type
    )
  else:
    optimizer = optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
  if not cfg.grad_clip_norm:
    return optimizer
  if cfg.grad_clip_mode == 'each':
    return optax.chain(clip_each_by_norm(cfg.grad_clip_norm), optimizer)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), optimizer)
