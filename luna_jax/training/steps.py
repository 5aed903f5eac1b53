"""The jitted steps and what runs them on the devices: the train state, one optimisation step,
one evaluation step, device selection, sharding of host batches (and their prefetching onto the
devices) and a split's evaluation.

The steps are pure functions of (state or parameters, batch, key), written for one device and
mapped over the local devices (every process's, in a multi-process run) with `jax.pmap` by
`luna_jax.training.trainer` (`axis_name` names the
mapped axis; None runs them under plain `jax.jit`). What a batch is scored with is the model's
`objective` (`luna_jax.model.objectives`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import jax_utils

import lra
from luna_jax.config_utils import ConfigError
from luna_jax.model import objectives

if TYPE_CHECKING:
  from luna_jax.training.run_config import TrainingConfig

Batch = Mapping[str, Any]
PyTree = Any

#: Name of the pmap axis.
AXIS = 'batch'
#: Folded into a training step's dropout key to give the objective's batch-preparation key (a value
#: no Flax rng derivation folds in: Flax folds in hashes of module names and small call counters).
PREPARE_FOLD = 2**31 - 1
#: Evaluation batch i is prepared with the key `fold_in(PRNGKey(EVAL_SEED), i)` (then the device
#: index), in every evaluation of every run.
EVAL_SEED = 0


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


def batch_inputs(batch: Batch, model: flax.linen.Module) -> dict[str, Any]:
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
    init_rng, **batch_inputs(example_batch, model)
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
  micro_batches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on the (per-device) batch.

  Pure. The model's objective (`model.objective`, see `luna_jax.model.objectives`) prepares the
  batch and weighs the loss. The loss is the mean over the whole global batch: every device divides
  its summed loss by the global weight (number of examples, or of target tokens for the token-level
  models) and gradients are summed over `axis_name`, so one device and N devices take the same step.
  Each device gets its own dropout key `fold_in(fold_in(state.rng, step), device index)`, and the
  objective its batch-preparation key `fold_in(dropout key, PREPARE_FOLD)`.

  Gradient accumulation (`micro_batches` > 1): the prepared batch is cut into that many equal
  micro-batches along its rows, run one after the other (`jax.lax.scan`, so only one
  micro-batch's activations are alive at a time) with dropout keys `fold_in(dropout key, i)`, and
  their gradients, losses and accuracies summed before the one optimizer update. Each is already
  divided by the whole batch's weight, so the step is that of the whole batch (fairseq's
  `--update-freq`, here with the batch size unchanged).

  Args:
    state: the current state.
    batch: 'inputs' [b, L] int32, 'lengths' [b] int32, 'targets' [b] (class labels) or [b, T]
      (tokens, 0 = padding) int32, plus whatever else the model takes ('inputs2', 'lengths2').
    model: the model (`luna_jax.build_model`).
    optimizer: the optax transformation the state was created with.
    axis_name: the pmap axis, or None on a single device (plain `jax.jit`).
    label_smoothing: label smoothing of the training loss.
    micro_batches: micro-batches per step; must divide the batch's rows.

  Returns:
    The new state and scalar metrics: loss, accuracy (per example or per token), grad_norm (after
    averaging, before clipping) and param_norm (of the new parameters).

  Raises:
    ValueError: (at trace time) `micro_batches` does not divide the batch's rows.
  """
  objective = model.objective
  dropout_rng = device_key(jax.random.fold_in(state.rng, state.step), axis_name)
  batch = objective.prepare(batch, jax.random.fold_in(dropout_rng, PREPARE_FOLD))
  weights = objective.weights(batch)
  total = jnp.sum(weights)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
  total = jnp.maximum(total, 1.0)

  def loss_fn(params, batch, weights, key):
    logits = model.apply(
      {'params': params}, **batch_inputs(batch, model), train=True, rngs={'dropout': key}
    )
    return jnp.sum(objective.losses(logits, batch, label_smoothing) * weights) / total, logits

  def loss_accuracy_grads(batch, weights, key):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, batch, weights, key
    )
    accuracy = jnp.sum(objective.hits(logits, batch) * weights) / total
    return loss, accuracy, grads

  if micro_batches == 1:
    loss, accuracy, grads = loss_accuracy_grads(batch, weights, dropout_rng)
  else:
    rows = weights.shape[0]
    if rows % micro_batches:
      raise ValueError(
        f'{micro_batches} micro-batches (training.gradient_accumulation_steps) do not divide '
        f'the {rows} rows of a device batch.'
      )

    def cut(x):
      return x.reshape((micro_batches, rows // micro_batches) + x.shape[1:])

    def accumulate(sums, micro):
      index, micro_batch, micro_weights = micro
      key = jax.random.fold_in(dropout_rng, index)
      return jax.tree.map(jnp.add, sums, loss_accuracy_grads(micro_batch, micro_weights, key)), None

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
    micro = (jnp.arange(micro_batches), jax.tree.map(cut, batch), cut(weights))
    (loss, accuracy, grads), _ = jax.lax.scan(accumulate, zeros, micro)
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


def run_train_step(
  model: flax.linen.Module,
  optimizer: optax.GradientTransformation,
  training: TrainingConfig,
  axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step` with a run's settings: `training` (a `TrainingConfig`) gives the label smoothing
  and the micro-batches (`gradient_accumulation_steps`). Not jitted: the trainer pmaps it over
  `axis_name`, the benchmarks jit it on one device."""
  return functools.partial(
    train_step,
    model=model,
    optimizer=optimizer,
    axis_name=axis_name,
    label_smoothing=training.label_smoothing,
    micro_batches=training.gradient_accumulation_steps,
  )


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
  logits = model.apply({'params': params}, **batch_inputs(batch, model), train=False)
  sums = objective.metric_sums(logits, batch)
  return jax.lax.psum(sums, axis_name) if axis_name is not None else sums


# ------------------------------------------------------------------------------------------------
# Devices and sharding
# ------------------------------------------------------------------------------------------------


def global_device_count(devices: Sequence[jax.Device]) -> int:
  """Devices over all processes when each process trains on as many as `devices` (this
  process's), as `select_devices` requires."""
  return len(devices) * jax.process_count()


def select_devices(num_devices: int, batch_sizes: Sequence[int]) -> list[jax.Device]:
  """The local devices to train on, checking that every global batch size divides across them.

  Args:
    num_devices: -1 for every local device, else the first `num_devices` (single process only).
    batch_sizes: global batch sizes that will be split over the devices of all processes.

  Returns:
    The local devices.

  Raises:
    ConfigError: a batch size not divisible by the global device count, or a bad `num_devices`.
  """
  local = jax.local_devices()
  if num_devices != -1:
    if not 1 <= num_devices <= len(local) or jax.process_count() > 1:
      raise ConfigError(
        f'training.num_devices={num_devices}: use -1 (all) or 1..{len(local)} on a single '
        + (
          f'process ({jax.process_count()} processes here).'
          if jax.process_count() > 1
          else 'process.'
        )
      )
    local = local[:num_devices]
  total = global_device_count(local)
  for batch_size in batch_sizes:
    if batch_size % total:
      raise ConfigError(
        f'batch size {batch_size} is not divisible by the number of devices {total} '
        f'({len(local)} per process x {jax.process_count()} processes); choose a '
        f'multiple of {total} (--config.training.batch_size / eval_batch_size).'
      )
  return local


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy of every leaf of a pmap-replicated tree ([devices, ...] -> [...]),
  read from this process's own shard: unlike `flax.jax_utils.unreplicate` (`x[0]`), no gather of
  another process's devices in a multi-process run."""
  return jax.tree.map(lambda x: x.addressable_shards[0].data.reshape(x.shape[1:]), tree)


def shard(batch: Batch, num_devices: int) -> dict[str, np.ndarray]:
  """Reshapes this process's host batch [b, ...] to [num_devices, b / num_devices, ...]."""
  return {k: np.reshape(v, (num_devices, -1) + v.shape[1:]) for k, v in batch.items()}


def device_batches(
  batches: Iterable[Batch],
  devices: Sequence[jax.Device],
  prefetch: int = 0,
  limit: int | None = None,
) -> Iterator[Batch]:
  """This process's host batches in the pmapped steps' layout, optionally sent to the devices early.

  Each batch [b, ...] becomes [len(devices), b / len(devices), ...] (`shard`). With `prefetch` > 0
  it is also put on `devices`, split along its first axis as `jax.pmap` takes it (axis `AXIS`), and
  `prefetch` batches ahead of the one handed out: when the step of batch t is dispatched, batches
  t + 1 ... t + prefetch are already on the devices or on their way there
  (`flax.jax_utils.prefetch_to_device`, which fills its buffer in the calling thread). The batches
  and their order are unchanged, so are the results; the host iterator runs `prefetch` batches
  ahead, so an error it raises comes that many batches early. Each process feeds its own devices.

  Args:
    batches: host batches, dicts of numpy arrays [b, ...] with b divisible by len(devices).
    devices: this process's devices, in the order the pmapped step maps over them.
    prefetch: batches kept on the devices beyond the one handed out (0: host arrays, which the
      pmapped step sends to the devices when it is called).
    limit: take at most this many batches (None: all); the prefetch never reads past them.

  Yields:
    Dicts of [len(devices), b / len(devices), ...] arrays: numpy when `prefetch` is 0, else
    `jax.Array`s sharded over `devices`.
  """
  sharded = (shard(batch, len(devices)) for batch in itertools.islice(batches, limit))
  if not prefetch:
    return sharded
  return jax_utils.prefetch_to_device(sharded, prefetch + 1, devices, axis_name=AXIS)


def evaluate(
  p_eval_step: Callable[..., dict[str, jax.Array]],
  params: PyTree,
  split: lra.Split,
  batch_size: int,
  devices: Sequence[jax.Device],
  objective: objectives.Objective,
  max_batches: int = -1,
  batching: lra.Batching = lra.batching.FIXED_SIZE,
  prefetch: int = 0,
) -> dict[str, float]:
  """The objective's metrics of replicated `params` on a split.

  Fixed-size batches of a split share one shape (the last one is padded,
  `lra.batching.eval_batches`), so `p_eval_step` compiles once for it (token-budget batches,
  `corpora.token_batches`, once per length bucket); nothing is fetched from the devices before the
  end.

  Args:
    p_eval_step: the pmapped `eval_step` (params and batch mapped, the key broadcast).
    params: replicated parameters.
    split: the split to evaluate (of the type `batching` reads).
    batch_size: global evaluation batch size.
    devices: this process's devices, in the order `p_eval_step` maps over them.
    objective: the model's objective, which turns the summed metrics into means.
    max_batches: evaluate about `max_batches` batches' worth of a fixed, seeded sample of the
      split (`batching.sample`, `lra.eval_sample` for fixed-size batches; the whole split when it
      has no more examples), or -1: the whole split.
    batching: the data's batching (`lra.TaskData.batching`; default fixed-size batches).
    prefetch: batches sent to the devices ahead of the one evaluated (`device_batches`).

  Returns:
    `objective.summarize` of the sums: {'accuracy', 'loss', 'num_examples'}, and for token-level
    models 'sequence_accuracy', for masked-LM pretraining 'perplexity'.
  """
  if max_batches != -1:
    split = batching.sample(split, max_batches * batch_size)
  batches = batching.eval_batches(
    split,
    batch_size,
    num_devices=global_device_count(devices),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  key = jax.random.PRNGKey(EVAL_SEED)
  totals = None
  for i, batch in enumerate(device_batches(batches, devices, prefetch)):
    sums = p_eval_step(params, batch, jax.random.fold_in(key, i))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return objective.summarize(jax.device_get(unreplicate(totals)))
