"""The LRA trainer: one data-parallel training loop for every task, model and device count.

`train_and_evaluate(config, workdir)` checks the config once (`parse_config`), locks the workdir,
loads the task with `lra`, builds the model with `luna_jax.build_model`, trains with `jax.pmap` over
the local devices (global batch split across them, gradients averaged with `pmean`, one dropout key
per device and step), evaluates on the validation split every `eval_every` steps and on the test
split at the end, and writes into `workdir`. What a batch is scored with (its preparation, the loss
and its weights, the evaluation metrics) is the model's `objective` (`luna_jax.objectives`); the
trainer does not depend on the model family. It writes:

  .lock                the workdir lock (`luna_jax.workdir`)
  config.json          the resolved config
  metrics.jsonl        one JSON object per logged step (train_*, validation_*, test_*)
  tensorboard/         the same scalars as TensorBoard event files
  checkpoints/         the last `keep_checkpoints` train states (resumable, verified on restore)
  best/                the parameters with the best validation accuracy
  damaged_checkpoints/ checkpoints that failed verification, set aside
  results.json         final validation/test metrics, the best validation checkpoint's step and test
                       metrics, the config, parameter count, speed, devices

A run started again with the same workdir resumes from its newest intact checkpoint if its config
differs only in RESCHEDULE_KEYS (and the device count, which is recorded) and, batches being a pure
function of (seed, step), finishes on the same device count with the same parameters as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from flax import jax_utils

import corpora
import lra
import luna_jax
from lra.files import write_atomically
from luna_jax import (
  checkpointing,
  config_utils,
  metric_log,
  objectives,
  optim,
  pretrained,
  self_pretraining,
)
from luna_jax import workdir as workdir_lib
from luna_jax.config_utils import spec

Batch = Mapping[str, Any]
PyTree = Any

#: Top-level config keys.
CONFIG_KEYS = (
  'seed',
  'debug',
  'init_from',
  'data',
  'model',
  'optimizer',
  'training',
  'self_pretraining',
)
#: Name of the pmap axis.
AXIS = 'batch'
#: Prefixes of the metrics the final evaluation logs (at the last step).
FINAL_PREFIXES = ('test_', 'best_test_')
#: `config.training` keys that may change when a run is resumed: they extend or re-schedule it.
RESCHEDULE_KEYS = (
  'num_train_steps',
  'eval_every',
  'log_every',
  'checkpoint_every',
  'num_eval_batches',
  'keep_checkpoints',
)
#: Folded into a training step's dropout key to give the objective's batch-preparation key (a value
#: no Flax rng derivation folds in: Flax folds in hashes of module names and small call counters).
PREPARE_FOLD = 2**31 - 1
#: Evaluation batch i is prepared with the key `fold_in(PRNGKey(EVAL_SEED), i)` (then the device
#: index), in every evaluation of every run.
EVAL_SEED = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The `config.data` section, checked (see configs/base.py for what each field means)."""

  task: str = spec(choices=(*lra.TASKS, *corpora.TASKS))
  data_dir: str = spec()
  options: dict = spec()


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """The `config.training` section, checked (see configs/base.py for what each field means)."""

  batch_size: int = spec(minimum=1)
  eval_batch_size: int = spec(minimum=0)
  num_train_steps: int = spec(minimum=1)
  eval_every: int = spec(minimum=1)
  num_eval_batches: int = spec(minimum=1, also=(-1,))
  log_every: int = spec(minimum=1)
  checkpoint_every: int = spec(minimum=1)
  keep_checkpoints: int = spec(minimum=1)
  num_devices: int = spec(minimum=1, also=(-1,))
  distributed: bool = spec()
  label_smoothing: float = spec(minimum=0.0, below=1.0)


@dataclasses.dataclass(frozen=True)
class SelfPretrainingConfig:
  """The `config.self_pretraining` section, checked (see configs/base.py and
  `luna_jax.self_pretraining`)."""

  num_train_steps: int = spec(minimum=0, also=(-1,))


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The whole experiment config, parsed once and checked (`parse_config`); what the trainer uses.

  `model` stays a mapping (checked by `luna_jax.check_model_config`): `luna_jax.build_model` turns
  it into the typed `ModelConfig` and head settings.
  """

  seed: int = spec(minimum=0)
  debug: bool = spec()
  init_from: str = spec()
  data: DataConfig = spec()
  model: dict = spec()
  optimizer: optim.OptimizerConfig = spec()
  training: TrainingConfig = spec()
  self_pretraining: SelfPretrainingConfig = spec()

  def to_dict(self) -> dict[str, Any]:
    """The config as plain JSON-able nested dicts (what config.json and checkpoints store)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs besides the config.

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: the model parameters (float32).
    opt_state: the optax state.
    rng: PRNG key; dropout keys are derived from it by folding in the step and the device index.
  """

  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  rng: jax.Array


def model_inputs(batch: Batch, model: flax.linen.Module) -> dict[str, Any]:
  """The model's keyword inputs (`model.input_names`) present in `batch`."""
  return {name: batch[name] for name in model.input_names if name in batch}


def device_key(rng: jax.Array, axis_name: str | None) -> jax.Array:
  """`rng` folded with this device's index along `axis_name` (unchanged when it is None)."""
  return rng if axis_name is None else jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


def create_train_state(
  rng: jax.Array,
  model: flax.linen.Module,
  optimizer: optax.GradientTransformation,
  example_batch: Batch,
) -> TrainState:
  """Initialises parameters and optimizer state.

  Args:
    rng: PRNG key; split into the init key and the state's dropout key.
    model: the model from `luna_jax.build_model`.
    optimizer: the optax transformation.
    example_batch: a batch with the model inputs (only shapes and dtypes matter).

  Returns:
    A TrainState at step 0.
  """
  init_rng, state_rng = jax.random.split(rng)
  variables = jax.jit(functools.partial(model.init, train=False))(
    init_rng, **model_inputs(example_batch, model)
  )
  params = variables['params']
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=state_rng
  )


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  model: flax.linen.Module,
  optimizer: optax.GradientTransformation,
  axis_name: str | None = None,
  label_smoothing: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on the (per-device) batch.

  Pure. The model's objective (`model.objective`, see `luna_jax.objectives`) prepares the batch and
  weighs the loss. The loss is the mean over the whole global batch: every device divides its summed
  loss by the global weight (number of examples, or of target tokens for the token-level models) and
  gradients are summed over `axis_name`, so one device and N devices take the same step. Each device
  gets its own dropout key `fold_in(fold_in(state.rng, step), device index)`, and the objective its
  batch-preparation key `fold_in(dropout key, PREPARE_FOLD)`.

  Args:
    state: the current state.
    batch: 'inputs' [b, L] int32, 'lengths' [b] int32, 'targets' [b] (class labels) or [b, T]
      (tokens, 0 = padding) int32, plus whatever else the model takes ('inputs2', 'lengths2').
    model: the model (`luna_jax.build_model`).
    optimizer: the optax transformation the state was created with.
    axis_name: the pmap axis, or None on a single device (plain `jax.jit`).
    label_smoothing: label smoothing of the training loss.

  Returns:
    The new state and scalar metrics: loss, accuracy (per example or per token), grad_norm (after
    averaging, before clipping) and param_norm (of the new parameters).
  """
  objective = model.objective
  dropout_rng = device_key(jax.random.fold_in(state.rng, state.step), axis_name)
  batch = objective.prepare(batch, jax.random.fold_in(dropout_rng, PREPARE_FOLD))
  weights = objective.weights(batch)
  total = jnp.sum(weights)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
  total = jnp.maximum(total, 1.0)

  def loss_fn(params):
    logits = model.apply(
      {'params': params}, **model_inputs(batch, model), train=True, rngs={'dropout': dropout_rng}
    )
    return jnp.sum(objective.losses(logits, batch, label_smoothing) * weights) / total, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = jnp.sum((jnp.argmax(logits, axis=-1) == batch['targets']) * weights) / total
  if axis_name is not None:
    loss, accuracy, grads = jax.lax.psum((loss, accuracy, grads), axis_name)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    'loss': loss,
    'accuracy': accuracy,
    'grad_norm': optax.tree.norm(grads),
    'param_norm': optax.tree.norm(params),
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(
  params: PyTree,
  batch: Batch,
  rng: jax.Array | None = None,
  *,
  model: flax.linen.Module,
  axis_name: str | None = None,
) -> dict[str, jax.Array]:
  """The objective's metric sums (`model.objective.metric_sums`) on one (per-device) batch, without
  dropout.

  Args:
    params: the model parameters.
    batch: like `train_step`'s, plus optional 'weights' [b] float32 (0 marks padding rows).
    rng: the batch-preparation key (folded with the device index along `axis_name`); None:
      `PRNGKey(EVAL_SEED)`.
    model: the model.
    axis_name: the pmap axis to sum over, or None.

  Returns:
    Float32 scalars {'loss', 'correct', 'count'}: summed loss, correct predictions and weight
    (examples, or target tokens for the token-level models); for token-level models also
    'sequences_correct' (examples whose every target token is predicted, i.e. that greedy decoding
    reproduces exactly) and 'sequences'.
  """
  objective = model.objective
  rng = jax.random.PRNGKey(EVAL_SEED) if rng is None else rng
  batch = objective.prepare(batch, device_key(rng, axis_name))
  logits = model.apply({'params': params}, **model_inputs(batch, model), train=False)
  sums = objective.metric_sums(logits, batch)
  return jax.lax.psum(sums, axis_name) if axis_name is not None else sums


# ------------------------------------------------------------------------------------------------
# Devices and sharding
# ------------------------------------------------------------------------------------------------


def select_devices(num_devices: int, batch_sizes: Sequence[int]) -> list[jax.Device]:
  """The local devices to train on, checking that every global batch size divides across them.

  Args:
    num_devices: -1 for every local device, else the first `num_devices` (single process only).
    batch_sizes: global batch sizes that will be split over the devices of all processes.

  Returns:
    The local devices.

  Raises:
    ValueError: a batch size not divisible by the global device count, or a bad `num_devices`.
  """
  local = jax.local_devices()
  if num_devices != -1:
    if not 1 <= num_devices <= len(local) or jax.process_count() > 1:
      raise ValueError(
        f'training.num_devices={num_devices}: use -1 (all) or 1..{len(local)} '
        f'on a single process ({jax.process_count()} processes).'
      )
    local = local[:num_devices]
  total = len(local) * jax.process_count()
  for batch_size in batch_sizes:
    if batch_size % total:
      raise ValueError(
        f'batch size {batch_size} is not divisible by the number of devices {total} '
        f'({len(local)} per process x {jax.process_count()} processes); choose a '
        f'multiple of {total} (--config.training.batch_size / eval_batch_size).'
      )
  return local


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy of every leaf of a pmap-replicated tree ([devices, ...] -> [...])."""
  return jax.tree.map(lambda x: x.addressable_shards[0].data.reshape(x.shape[1:]), tree)


def shard(batch: Batch, num_devices: int) -> dict[str, np.ndarray]:
  """Reshapes this process's host batch [b, ...] to [num_devices, b / num_devices, ...]."""
  return {k: np.reshape(v, (num_devices, -1) + v.shape[1:]) for k, v in batch.items()}


def evaluate(
  p_eval_step,
  params: PyTree,
  split: lra.Split,
  batch_size: int,
  num_devices: int,
  objective: objectives.Objective,
  max_batches: int = -1,
) -> dict[str, float]:
  """The objective's metrics of replicated `params` on a split.

  Args:
    p_eval_step: the pmapped `eval_step` (params and batch mapped, the key broadcast).
    params: replicated parameters.
    split: the split to evaluate.
    batch_size: global evaluation batch size.
    num_devices: local devices.
    objective: the model's objective, which turns the summed metrics into means.
    max_batches: evaluate only the first `max_batches` batches (-1: the whole split).

  Returns:
    `objective.summarize` of the sums: {'accuracy', 'loss', 'num_examples'}, and for token-level
    models 'sequence_accuracy'.
  """
  batches = lra.eval_batches(
    split, batch_size, process_index=jax.process_index(), process_count=jax.process_count()
  )
  key = jax.random.PRNGKey(EVAL_SEED)
  totals = None
  for i, batch in enumerate(batches):
    if i == max_batches:
      break
    sums = p_eval_step(params, shard(batch, num_devices), jax.random.fold_in(key, i))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return objective.summarize(jax.device_get(unreplicate(totals)))


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def apply_debug(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A smoke-test version of `config`: one small layer, batch 8, 5 steps, capped evaluation.

  The data and the model family (Luna/Transformer, pooling, head) are unchanged.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.update(
    num_layers=1,
    emb_dim=32,
    num_heads=2,
    mlp_dim=64,
    classifier_hidden_dim=32,
    projection_length=min(config.model.get('projection_length', 8), 8),
  )
  if config.model.get('qkv_dim') is not None:
    config.model.qkv_dim = 32
  if config.model.get('num_pack_heads') is not None:
    config.model.num_pack_heads = 2
  config.optimizer.warmup_steps = min(config.optimizer.get('warmup_steps', 2), 2)
  config.training.update(
    batch_size=8,
    eval_batch_size=8,
    num_train_steps=5,
    eval_every=5,
    num_eval_batches=2,
    log_every=1,
    checkpoint_every=5,
  )
  return config


def parse_config(config: ml_collections.ConfigDict) -> RunConfig:
  """Checks every key and value of `config` once, applies `debug`, and returns the typed sections.

  Raises:
    config_utils.ConfigError: an unknown or missing key, a value of the wrong type or out of its
      range (an interval or size < 1, a rate outside [0, 1), an unknown choice or dtype name),
      naming `config.<section>.<key>`, the value and what is allowed.
  """
  config_utils.check_keys(config, CONFIG_KEYS, 'config')
  if config.debug is True:
    config = apply_debug(config)
  luna_jax.check_model_config(config.model)
  sections = {
    'data': config_utils.parse_section(DataConfig, config.data.to_dict(), 'config.data'),
    'model': config.model.to_dict(),
    'optimizer': optim.OptimizerConfig.from_mapping(config.optimizer),
    'training': config_utils.parse_section(TrainingConfig, config.training, 'config.training'),
    'self_pretraining': config_utils.parse_section(
      SelfPretrainingConfig, config.self_pretraining, 'config.self_pretraining'
    ),
  }
  return config_utils.parse_section(RunConfig, {**config, **sections}, 'config')


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` checked (`parse_config`) and with `debug` applied, as a new ConfigDict."""
  return ml_collections.ConfigDict(parse_config(config).to_dict())


def config_changes(
  stored: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ''
) -> list[str]:
  """The settings that differ between two config dicts, as 'key: stored -> new' lines.

  Keys of `config.training` in RESCHEDULE_KEYS and `training.num_devices` (a device-count change is
  handled separately) are not compared.
  """
  changes = []
  for key in sorted(set(stored) | set(new)):
    name = f'{prefix}{key}'
    if name in {f'training.{k}' for k in (*RESCHEDULE_KEYS, 'num_devices')}:
      continue
    old_value, new_value = stored.get(key, '(absent)'), new.get(key, '(absent)')
    if isinstance(old_value, Mapping) and isinstance(new_value, Mapping):
      changes += config_changes(old_value, new_value, f'{name}.')
    elif old_value != new_value:
      changes.append(f'{name}: {old_value!r} -> {new_value!r}')
  return changes


# ------------------------------------------------------------------------------------------------
# Training loop
# ------------------------------------------------------------------------------------------------


class ConfigChangedError(config_utils.ConfigError):
  """A workdir's run is resumed with settings other than those it was trained with."""


class _TrainLog:
  """Holds per-step device metrics until a log point and measures the training speed.

  Fetching metrics forces a device sync, so it happens only at log, eval and checkpoint points
  (`collect`). Speed is measured between collections and summed over every session of the run (the
  totals are saved with each checkpoint); `restart_clock` excludes what happened since the last
  collection (evaluation, checkpointing), and `exclude_from_timing` the pending steps (the first
  step of a session, which includes compilation).
  """

  def __init__(self, train_time: float = 0.0, timed_steps: int = 0):
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._untimed = 0
    self._mark = time.perf_counter()
    self.train_time, self.timed_steps = train_time, timed_steps

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._pending.append((step, metrics))

  def restart_clock(self) -> None:
    self._mark = time.perf_counter()

  def exclude_from_timing(self) -> None:
    """Waits for the pending steps and leaves them and their time out of the speed figures."""
    jax.block_until_ready([metrics for _, metrics in self._pending])
    self._untimed = len(self._pending)
    self.restart_clock()

  def steps_per_sec(self) -> float | None:
    """Timed training steps per second over the whole run, or None before any was timed."""
    return self.timed_steps / self.train_time if self.timed_steps else None

  def collect(self) -> tuple[list[int], list[dict[str, float]], float | None]:
    """Empties the log: the pending steps, their metrics (host values of the first device's
    replica) and the steps per second of the timed ones (None when none was timed)."""
    steps = [step for step, _ in self._pending]
    values = jax.device_get([unreplicate(m) for _, m in self._pending])
    self._pending.clear()
    now = time.perf_counter()
    elapsed, self._mark = max(now - self._mark, 1e-9), now
    timed, self._untimed = len(steps) - self._untimed, 0
    if not timed:
      return steps, values, None
    self.train_time += elapsed
    self.timed_steps += timed
    return steps, values, timed / elapsed


def check_finite(
  steps: Sequence[int],
  values: Sequence[Mapping[str, float]],
  checkpointer: checkpointing.Checkpointer,
) -> None:
  """Stops training at the first of `steps` with a non-finite metric.

  Raises:
    FloatingPointError: naming the step, the non-finite metrics and the last good (verified)
      checkpoint, or saying that there is none.
  """
  for step, metrics in zip(steps, values):
    bad = [f'{name}={value}' for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
      good = checkpointer.last_good_step()
      raise FloatingPointError(
        f'Non-finite {", ".join(bad)} at step {step}; training stopped. '
        + (
          f'The last good checkpoint (step {good}, verified) in {checkpointer.directory} is kept.'
          if good is not None
          else f'There is no intact checkpoint in {checkpointer.directory}.'
        )
      )


#: Environment variables of a multi-process run outside a detected cluster (with the coordinator's
#: `JAX_COORDINATOR_ADDRESS`, which jax reads itself).
NUM_PROCESSES_ENV = 'JAX_NUM_PROCESSES'
PROCESS_ID_ENV = 'JAX_PROCESS_ID'


def initialize_distributed() -> None:
  """Connects this process to the others with `jax.distributed.initialize`.

  The coordinator address (`host:port` of process 0) comes from `JAX_COORDINATOR_ADDRESS`, the
  process count and this process's index from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`; what is
  unset is detected by jax (SLURM, Open MPI, Cloud TPU, Kubernetes).

  Raises:
    ValueError: a process count or index that is not an integer (naming the variable), or settings
      that neither the environment nor a detected cluster provide.
  """
  settings = {}
  for name, key in ((NUM_PROCESSES_ENV, 'num_processes'), (PROCESS_ID_ENV, 'process_id')):
    value = os.environ.get(name)
    if value:
      try:
        settings[key] = int(value)
      except ValueError:
        raise ValueError(f'{name}={value!r} is not an integer.') from None
  try:
    jax.distributed.initialize(**settings)
  except ValueError as e:
    raise ValueError(
      f'training.distributed=True: {e} Set JAX_COORDINATOR_ADDRESS (host:port of process 0), '
      f'{NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} (or train.py --coordinator_address, '
      '--num_processes, --process_id), or run under SLURM, Open MPI or on Cloud TPU.'
    ) from e


def _describe_devices(devices: Sequence[jax.Device]) -> dict[str, Any]:
  return {
    'jax_version': jax.__version__,
    'backend': jax.default_backend(),
    'device_kind': devices[0].device_kind,
    'local_devices': len(devices),
    'process_count': jax.process_count(),
    'global_devices': len(devices) * jax.process_count(),
  }


def _write_json(path: str, value: Any) -> None:
  """Writes JSON atomically (`lra.files.write_atomically`)."""
  write_atomically(path, json.dumps(value, indent=2))


def restore_run(
  checkpointer: checkpointing.Checkpointer,
  state: TrainState,
  run: RunConfig,
  workdir: str,
  global_devices: int,
) -> tuple[TrainState, dict[str, Any]]:
  """Resumes the workdir's run from its newest intact checkpoint, if any, under the config rule.

  The checkpoint's stored config must equal `run` except for RESCHEDULE_KEYS and the device count.
  A different global device count is allowed: it is stated in one warning and added to the record's
  'device_changes'.

  Args:
    checkpointer: the workdir's checkpointer.
    state: the freshly initialised state (returned when there is no checkpoint).
    run: this session's config.
    workdir: the run's folder (for messages).
    global_devices: devices over all processes in this session.

  Returns:
    (state, record): the record saved with the checkpoint ('config', 'global_devices',
    'device_changes', 'train_time', 'timed_steps'), or a fresh one.

  Raises:
    ConfigChangedError: naming every setting that differs, with both values.
    checkpointing.CheckpointMismatchError: the checkpoint's arrays do not fit the model.
  """
  new_config = run.to_dict()

  def check(step: int, record: dict[str, Any]) -> None:
    changes = config_changes(record.get('config', {}), new_config)
    if changes:
      raise ConfigChangedError(
        f'{workdir} holds a run trained with other settings (checkpoint at step {step}):\n  '
        + '\n  '.join(changes)
        + '\nOnly training.'
        + ', training.'.join(RESCHEDULE_KEYS)
        + ' and the device count may change when a run is resumed. Use another --workdir for '
        f'a new run, or resume this one with the settings in {workdir}/config.json.'
      )

  state, record = checkpointer.restore_latest(state, check)
  if record is None:
    return state, {
      'global_devices': global_devices,
      'device_changes': [],
      'train_time': 0.0,
      'timed_steps': 0,
    }
  step = int(state.step)
  if record['global_devices'] != global_devices:
    logging.warning(
      'Resuming step %d, trained so far on %d devices, on %d devices: the run will '
      'not be bit-identical to one on a single device count (dropout masks and '
      'summation order change); recorded in results.json (devices.changes).',
      step,
      record['global_devices'],
      global_devices,
    )
    record['device_changes'] = [
      *record['device_changes'],
      {'step': step, 'from': record['global_devices'], 'to': global_devices},
    ]
    record['global_devices'] = global_devices
  return state, record


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates one model on one LRA task; resumes from `workdir` if it has a checkpoint.

  The workdir is locked for the duration (`luna_jax.workdir.lock`), the config is checked once
  (`parse_config`) and, on resume, compared with the checkpoint's (`restore_run`). The stages are
  `_setup`, `_train`, `_final_evaluation` and `_write_results`. With `config.init_from` the encoder
  starts from another run's (`initialize_from`); with `config.self_pretraining.num_train_steps` the
  run is a pretrain and a finetune stage (`train_with_self_pretraining`).

  Args:
    config: the experiment config (configs/base.py documents every field).
    workdir: folder for checkpoints, metrics and results (created if needed).

  Returns:
    The content of `workdir/results.json`: 'validation' and 'test' ({'accuracy', 'loss',
    'num_examples'}, and 'sequence_accuracy' for the token-level models) of the final parameters,
    'best' ('step' of the best validation checkpoint or None, 'test': its test metrics or None when
    its parameters could not be restored, 'selected_on_test': whether the validation split was the
    test split, 'directory'), 'step', 'num_params', 'steps_per_sec' (over every session of the
    run), 'devices' (with 'changes' of the device count on resume) and 'config'.

  Raises:
    ValueError: unknown/missing config keys or values out of range (named), indivisible batch
      sizes; ConfigChangedError and checkpointing.CheckpointMismatchError on resume.
    workdir.WorkdirLockedError: another process trains in `workdir`.
    lra.DataError: missing data, unknown data options.
    FloatingPointError: a non-finite loss, gradient or parameter norm (names the step).
  """
  run = parse_config(config)
  if run.training.distributed and not jax.distributed.is_initialized():
    initialize_distributed()
  if run.self_pretraining.num_train_steps:
    return train_with_self_pretraining(config, workdir)
  is_lead = jax.process_index() == 0
  logging.info(
    'JAX %s, process %d/%d, local devices %s',
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  with contextlib.ExitStack() as stack:
    if is_lead:
      stack.enter_context(workdir_lib.lock(workdir))
    os.makedirs(workdir, exist_ok=True)
    session, state = _setup(run, workdir, is_lead, stack)
    state, validation = _train(session, state)
    return _write_results(session, _final_evaluation(session, state, validation))


@dataclasses.dataclass
class _Session:
  """What one call of `train_and_evaluate` sets up (`_setup`) for its later stages."""

  run: RunConfig
  workdir: str
  is_lead: bool
  devices: list[jax.Device]
  eval_batch_size: int
  data: lra.TaskData
  model: flax.linen.Module
  num_params: int
  checkpointer: checkpointing.Checkpointer
  writer: metric_log.MetricWriter
  #: The run record restored with the checkpoint (`restore_run`), or a fresh one.
  record: dict[str, Any]
  start_step: int
  p_train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
  p_eval_step: Callable[..., dict[str, jax.Array]]
  train_log: _TrainLog

  def evaluate(self, params: PyTree, split: lra.Split) -> dict[str, float]:
    """`evaluate` of replicated `params` on `split`, capped at `training.num_eval_batches`."""
    return evaluate(
      self.p_eval_step,
      params,
      split,
      self.eval_batch_size,
      len(self.devices),
      self.model.objective,
      max_batches=self.run.training.num_eval_batches,
    )

  def checkpoint_record(self) -> dict[str, Any]:
    """The record saved with a checkpoint: the restored one with the config, the data's
    vocabulary (what `init_from` checks) and speed totals."""
    return {
      **self.record,
      'config': self.run.to_dict(),
      'vocabulary': lra.vocabulary(self.data),
      'train_time': self.train_log.train_time,
      'timed_steps': self.train_log.timed_steps,
    }


def _setup(
  run: RunConfig, workdir: str, is_lead: bool, stack: contextlib.ExitStack
) -> tuple[_Session, TrainState]:
  """Loads the data, builds the model and the optimizer, restores or creates the state (returned
  replicated) and compiles the steps; `stack` closes the checkpointer and the metric writer."""
  training = run.training
  eval_batch_size = training.eval_batch_size or training.batch_size
  devices = select_devices(training.num_devices, (training.batch_size, eval_batch_size))
  data = load_data(run)
  model, optimizer, state = build(run, data)
  if run.init_from:
    state = initialize_from(state, run.init_from, model, data, optimizer)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))

  checkpointer = stack.enter_context(
    contextlib.closing(checkpointing.Checkpointer(workdir, training.keep_checkpoints))
  )
  state, record = restore_run(checkpointer, state, run, workdir, len(devices) * jax.process_count())
  start_step = int(state.step)
  if is_lead:
    _write_json(os.path.join(workdir, 'config.json'), run.to_dict())
  logging.info(
    '%s/%s: %d parameters; %s at step %d of %d.',
    run.data.task,
    run.model['name'],
    num_params,
    'resuming' if start_step else 'starting',
    start_step,
    training.num_train_steps,
  )
  # A finished run evaluates again: what its final evaluation logged is logged anew.
  writer = stack.enter_context(
    contextlib.closing(
      metric_log.MetricWriter(
        workdir,
        enabled=is_lead,
        start_step=start_step,
        redo_prefixes=FINAL_PREFIXES if start_step >= training.num_train_steps else (),
      )
    )
  )
  p_train_step, p_eval_step = _map_steps(model, optimizer, training, devices)
  session = _Session(
    run=run,
    workdir=workdir,
    is_lead=is_lead,
    devices=devices,
    eval_batch_size=eval_batch_size,
    data=data,
    model=model,
    num_params=num_params,
    checkpointer=checkpointer,
    writer=writer,
    record=record,
    start_step=start_step,
    p_train_step=p_train_step,
    p_eval_step=p_eval_step,
    train_log=_TrainLog(record['train_time'], record['timed_steps']),
  )
  return session, jax_utils.replicate(state, devices, axis_name=AXIS)  # Sharded as pmap outputs.


def load_data(run: RunConfig) -> lra.TaskData:
  """The task's data (an LRA task from `lra`, any other from `corpora`); for a masked LM its inputs
  alone (`lra.unlabelled`)."""
  load_task = lra.load_task if run.data.task in lra.TASKS else corpora.load_task
  data = load_task(run.data.task, run.data.data_dir, **run.data.options)
  return lra.unlabelled(data) if run.model['name'] in luna_jax.MLM_MODELS else data


def build(
  run: RunConfig, data: lra.TaskData
) -> tuple[flax.linen.Module, optax.GradientTransformation, TrainState]:
  """The model for `data`, the optimizer and a freshly initialised state."""
  # Token-level tasks: positions must cover the targets too (seq2seq decoder, LM).
  max_length = max([data.max_length, *data.train.targets.shape[1:]])
  model = luna_jax.build_model(
    run.model,
    vocab_size=data.vocab_size,
    num_classes=data.num_classes,
    max_length=max_length,
    dual=data.dual,
    bos_id=data.info.get('bos_id'),
    special_ids=lra.special_ids(data),
  )
  optimizer = optim.make_optimizer(run.optimizer)
  example = {name: np.asarray(array[:1], np.int32) for name, array in data.train.arrays().items()}
  return (
    model,
    optimizer,
    create_train_state(jax.random.PRNGKey(run.seed), model, optimizer, example),
  )


def initialize_from(
  state: TrainState,
  path: str,
  model: flax.linen.Module,
  data: lra.TaskData,
  optimizer: optax.GradientTransformation,
) -> TrainState:
  """`state` with the encoder of the run at `path` (`config.init_from`, `luna_jax.pretrained`).

  The optimizer state is initialised anew for the new parameters; a checkpoint of this run, when
  resuming, replaces all of it afterwards.

  Raises:
    pretrained.InitFromError: no usable checkpoint at `path`, a model without an encoder, or an
      encoder or vocabulary that does not fit (naming both sides).
  """
  encoder_name = getattr(model, 'encoder_name', None)
  if encoder_name is None:
    raise pretrained.InitFromError(
      f'config.init_from={path!r}: model {type(model).__name__} has '
      'no encoder to initialise (use an encoder classifier or MLM).'
    )
  params = pretrained.graft(
    jax.device_get(state.params),
    pretrained.load_encoder(path),
    vocabulary=lra.vocabulary(data),
    encoder_name=encoder_name,
  )
  params = jax.tree.map(jnp.asarray, params)
  logging.info('Encoder initialised from %s.', path)
  return state.replace(params=params, opt_state=optimizer.init(params))


def train_with_self_pretraining(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the pretrain and finetune stages of `luna_jax.self_pretraining` in `workdir`.

  Each stage is a `train_and_evaluate` run in its own sub-folder (resumable); a stage that already
  reached its last step is skipped. Writes `workdir/results.json`: the finetune stage's results
  with 'pretraining' (the pretrain stage's 'step', 'validation', 'steps_per_sec', 'directory').

  Raises:
    What `train_and_evaluate` raises; config_utils.ConfigError for a model without an encoder.
  """
  is_lead = jax.process_index() == 0
  with contextlib.ExitStack() as stack:
    if is_lead:
      stack.enter_context(workdir_lib.lock(workdir))
    os.makedirs(workdir, exist_ok=True)
    results = []
    for stage_dir, stage_config in self_pretraining.stage_configs(config, workdir):
      steps = parse_config(stage_config).training.num_train_steps
      finished = self_pretraining.finished_results(stage_dir, steps)
      if finished is not None:
        logging.info('%s finished (step %d); skipped.', stage_dir, finished['step'])
      results.append(finished or train_and_evaluate(stage_config, stage_dir))
    pretrain, finetune = results
    combined = {
      **finetune,
      'pretraining': {
        'step': pretrain['step'],
        'validation': pretrain['validation'],
        'steps_per_sec': pretrain['steps_per_sec'],
        'directory': os.path.abspath(os.path.join(workdir, self_pretraining.PRETRAIN_DIR)),
      },
    }
    if is_lead:
      _write_json(os.path.join(workdir, 'results.json'), combined)
    return combined


def _map_steps(
  model: flax.linen.Module,
  optimizer: optax.GradientTransformation,
  training: TrainingConfig,
  devices: Sequence[jax.Device],
) -> tuple[Callable, Callable]:
  """`train_step` (state donated) and `eval_step` (key broadcast) pmapped over the devices."""
  # pmap must be given the same devices in every process: all of them, so that its collectives
  # span the processes (a process's own devices alone would train one model per process).
  mapped_devices = devices if jax.process_count() == 1 else jax.devices()
  p_train_step = jax.pmap(
    functools.partial(
      train_step,
      model=model,
      optimizer=optimizer,
      axis_name=AXIS,
      label_smoothing=training.label_smoothing,
    ),
    axis_name=AXIS,
    devices=mapped_devices,
    donate_argnums=(0,),
  )
  p_eval_step = jax.pmap(
    functools.partial(eval_step, model=model, axis_name=AXIS),
    axis_name=AXIS,
    in_axes=(0, 0, None),
    devices=mapped_devices,
  )
  return p_train_step, p_eval_step


def _train(session: _Session, state: TrainState) -> tuple[TrainState, dict[str, float] | None]:
  """The training loop from `session.start_step` to `training.num_train_steps`, with logging,
  validation, best-parameter and checkpoint saves at their steps.

  Returns:
    The final (replicated) state and the last validation metrics (None when no step ran).
  """
  run, training = session.run, session.run.training
  schedule = optim.schedule_from_config(run.optimizer)
  batches = lra.train_batches(
    session.data.train,
    training.batch_size,
    seed=run.seed,
    start_step=session.start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  validation = None
  # `step` counts completed updates (1-based), as do checkpoints and metrics.
  with tqdm.tqdm(
    total=training.num_train_steps,
    initial=session.start_step,
    disable=not session.is_lead,
    desc=f'{run.data.task}/{run.model["name"]}',
    unit='step',
    dynamic_ncols=True,
  ) as bar:
    for step in range(session.start_step + 1, training.num_train_steps + 1):
      state, metrics = session.p_train_step(state, shard(next(batches), len(session.devices)))
      session.train_log.add(step, metrics)
      bar.update()
      if step == session.start_step + 1:  # Includes compilation: left out of the speed figures.
        session.train_log.exclude_from_timing()
      is_eval = step % training.eval_every == 0 or step == training.num_train_steps
      is_checkpoint = step % training.checkpoint_every == 0 or step == training.num_train_steps
      # Log points depend on the step only, so a resumed run logs what an uninterrupted one does.
      if step == 1 or is_eval or is_checkpoint or step % training.log_every == 0:
        summary = _train_summary(session, schedule)
        session.writer.write_scalars(step, summary)
        bar.set_postfix(
          loss=f'{summary["train_loss"]:.4f}',
          acc=f'{summary["train_accuracy"]:.3f}',
          steps_per_s=f'{summary.get("steps_per_sec", 0.0):.2f}',
        )
      if is_eval:
        validation = session.evaluate(state.params, session.data.validation)
        session.writer.write_scalars(step, {f'validation_{k}': v for k, v in validation.items()})
        if session.is_lead:
          bar.write(
            f'step {step}: validation accuracy {validation["accuracy"]:.4f}, '
            f'loss {validation["loss"]:.4f}'
          )
        session.checkpointer.save_if_best(step, unreplicate(state.params), validation['accuracy'])
      if is_checkpoint:
        session.checkpointer.save(step, unreplicate(state), session.checkpoint_record())
      if is_eval or is_checkpoint:
        session.train_log.restart_clock()
  return state, validation


def _train_summary(session: _Session, schedule: optax.Schedule) -> dict[str, float]:
  """The logged training scalars since the last log point: the mean of every train step metric
  (`train_*`), the learning rate of the last step and, when timed, 'steps_per_sec'.

  Raises:
    FloatingPointError: a pending step with a non-finite metric (`check_finite`).
  """
  steps, values, steps_per_sec = session.train_log.collect()
  check_finite(steps, values, session.checkpointer)
  summary = {f'train_{name}': float(np.mean([m[name] for m in values])) for name in values[0]}
  summary['learning_rate'] = float(schedule(steps[-1] - 1))
  if steps_per_sec is not None:
    summary['steps_per_sec'] = steps_per_sec
  return summary


def _final_evaluation(
  session: _Session, state: TrainState, validation: dict[str, float] | None
) -> dict[str, Any]:
  """Validation (unless `_train` just evaluated it) and test metrics of the final parameters, and
  the test metrics of the best validation checkpoint, logged at the final step.

  Also run when the run was already complete and is only being re-evaluated.

  Returns:
    {'validation', 'test', 'best', 'step'} of `train_and_evaluate`'s results.
  """
  if validation is None:
    validation = session.evaluate(state.params, session.data.validation)
  test = session.evaluate(state.params, session.data.test)
  final_step = int(unreplicate(state.step))
  session.writer.write_scalars(final_step, {f'test_{k}': v for k, v in test.items()})
  # The test metrics of the best validation checkpoint, the other protocol papers report. Where the
  # task has no validation split of its own (LRA Text), the "best" was chosen on test data.
  best_step = session.checkpointer.best_step()
  best_test = test
  if best_step is not None and best_step != final_step:
    best_params = session.checkpointer.restore_best_params(unreplicate(state.params))
    best_test = (
      None
      if best_params is None
      else session.evaluate(
        jax_utils.replicate(best_params, session.devices, axis_name=AXIS), session.data.test
      )
    )
  if best_test is not None:
    session.writer.write_scalars(final_step, {f'best_test_{k}': v for k, v in best_test.items()})
  return {
    'validation': validation,
    'test': test,
    'best': {
      'step': best_step,
      'test': best_test,
      'selected_on_test': session.data.validation is session.data.test,
      'directory': os.path.join(os.path.abspath(session.workdir), 'best'),
    },
    'step': final_step,
  }


def _write_results(session: _Session, final: dict[str, Any]) -> dict[str, Any]:
  """`train_and_evaluate`'s results: `final` (`_final_evaluation`) with the parameter count, speed,
  devices and config; written to `workdir/results.json` by the lead process."""
  results = {
    **final,
    'num_params': session.num_params,
    'steps_per_sec': session.train_log.steps_per_sec(),
    'devices': {**_describe_devices(session.devices), 'changes': session.record['device_changes']},
    'config': session.run.to_dict(),
  }
  if session.is_lead:
    path = os.path.join(session.workdir, 'results.json')
    _write_json(path, results)
    print(
      f'Finished step {final["step"]}: validation accuracy '
      f'{final["validation"]["accuracy"]:.4f}, test accuracy {final["test"]["accuracy"]:.4f}. '
      f'Results in {path}'
    )
  return results
