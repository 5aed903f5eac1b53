"""The trainer: one data-parallel training loop for every task, model and device count.

`train_and_evaluate(config, workdir)` checks the config once (`parse_config`), locks the workdir,
loads the task (an LRA task with `lra`, any other with `corpora`), builds the model with
`luna_jax.build_model`, trains with `jax.pmap` over the local devices (every process's devices
in a multi-process run; global batch split across them, gradients summed over the devices with
`psum` of losses already divided by the global batch weight, one dropout key per device and
step), evaluates on the validation split every `eval_every` steps and on the test split at the
end, and writes into `workdir`. What a batch is scored with (its preparation, the loss and its
weights, the evaluation metrics) is the model's `objective` (`luna_jax.model.objectives`); the
trainer does not depend on the model family. It writes:

  .lock                the workdir lock (`luna_jax.training.workdir`)
  kind.json            the kind of run it holds (plain, pretraining, self-pretraining, finetuning)
  config.json          the resolved config
  metrics.jsonl        one JSON object per logged step (train_*, validation_*, test_*)
  tensorboard/         the same scalars as TensorBoard event files
  checkpoints/         the last `keep_checkpoints` train states (resumable, verified on restore)
  best/                the parameters with the best validation accuracy
  damaged_checkpoints/ checkpoints that failed verification, set aside
  results.json         final validation/test metrics, the best validation checkpoint's step and test
                       metrics, the config, parameter count, speed, devices; for data with BLEU
                       references (translation) also the BLEU of beam search on validation and
                       test, sacreBLEU's and the paper's tokenised BLEU
                       (`luna_jax.training.translation.score_splits`)
  translations/        those detokenised translations, one file per split

A run started again with the same workdir resumes from its newest intact checkpoint if its config
differs only in RESCHEDULE_KEYS (and the device count, which is recorded) and, batches being a pure
function of (seed, step), finishes on the same device count with the same parameters as an
uninterrupted run; a changed `gradient_accumulation_steps` gives the same updates up to float
rounding and dropout masks (each micro-batch draws its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
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
from luna_jax.config_utils import ConfigError
from luna_jax.training import (
  accelerators,
  checkpointing,
  metric_log,
  optim,
  pretrained,
  self_pretraining,
  translation,
)
from luna_jax.training import workdir as workdir_lib
from luna_jax.training.distributed import initialize_distributed
from luna_jax.training.metric_log import TrainLog, check_finite
from luna_jax.training.run_config import (
  RESCHEDULE_KEYS,
  ConfigChangedError,
  RunConfig,
  TrainingConfig,
  config_changes,
  parse_config,
  paths_as_stored,
  real_path,
  require_data_dir,
  upgrade_stored_config,
)
from luna_jax.training.steps import (
  AXIS,
  Batch,
  PyTree,
  TrainState,
  create_train_state,
  device_batches,
  eval_step,
  evaluate,
  global_device_count,
  run_train_step,
  select_devices,
  unreplicate,
)

#: Prefixes of the metrics the final evaluation logs (at the last step).
FINAL_PREFIXES = ('test_', 'best_test_')


def _describe_devices(devices: Sequence[jax.Device]) -> dict[str, Any]:
  return {
    'jax_version': jax.__version__,
    'backend': jax.default_backend(),
    'device_kind': devices[0].device_kind,
    'local_devices': len(devices),
    'process_count': jax.process_count(),
    'global_devices': global_device_count(devices),
  }


def _write_json(path: str, value: Any) -> None:
  """Writes JSON atomically (`lra.files.write_atomically`)."""
  write_atomically(path, json.dumps(value, indent=2))


class VocabularyChangedError(ConfigError):
  """A run is resumed on data tokenised with another vocabulary than its checkpoints'."""


def _moved_stage_source(stored: str, new: str, workdir: str) -> bool:
  """Whether `workdir` is a self-pretraining run's finetune stage (its folder holds such a run)
  whose source, `new`, is the pretrain stage beside it, and `stored`, the one it was trained from,
  was a pretrain stage too: the run's folder moved since (`self_pretraining.stage_configs` derives
  the source from it)."""
  stage = os.path.abspath(workdir)
  run = os.path.dirname(stage)
  return (
    os.path.basename(stage) == self_pretraining.FINETUNE_DIR
    and new == os.path.join(run, self_pretraining.PRETRAIN_DIR)
    and os.path.basename(stored) == self_pretraining.PRETRAIN_DIR
    # Its kind file, not the stage folders alone (which an older workdir's kind is read from).
    and os.path.isfile(os.path.join(run, workdir_lib.KIND_FILE))
    and workdir_lib.recorded_kind(run)[0] == 'self-pretraining'
  )


def restore_run(
  checkpointer: checkpointing.Checkpointer,
  state: TrainState,
  run: RunConfig,
  workdir: str,
  global_devices: int,
  vocabulary: str | None = None,
) -> tuple[TrainState, dict[str, Any], RunConfig]:
  """Resumes the workdir's run from its newest intact checkpoint, if any, under the config rule.

  The checkpoint's stored config must equal `run` except for RESCHEDULE_KEYS, the device count and
  the decoding section; `data.data_dir` and `init_from` may name the same folder otherwise spelt,
  and `init_from` may be left out (a resumed run restores its encoder from its own checkpoint, so
  the source is not read and may be gone; the stored value is kept). The data's vocabulary must
  be the one the checkpoint records. A different global device count is allowed: it is stated in
  one warning and added to the record's 'device_changes'.

  Args:
    checkpointer: the workdir's checkpointer.
    state: the freshly initialised state (returned when there is no checkpoint).
    run: this session's config.
    workdir: the run's folder (for messages).
    global_devices: devices over all processes in this session.
    vocabulary: the data's vocabulary name (`lra.vocabulary`); None: not checked.

  Returns:
    (state, record, run): the record saved with the checkpoint ('config', 'vocabulary',
    'global_devices', 'device_changes', 'train_time', 'timed_steps'), or a fresh one; `run` with
    the checkpoint's `init_from` when one was restored.

  Raises:
    ConfigChangedError: naming every setting that differs, with both values.
    VocabularyChangedError: the data's vocabulary is not the checkpoint's (a replaced tokenizer).
    checkpointing.CheckpointMismatchError: the checkpoint's arrays do not fit the model.
  """
  new_config = run.to_dict()

  def check(step: int, record: dict[str, Any]) -> None:
    stored = upgrade_stored_config(record.get('config', {}))
    as_stored = paths_as_stored(new_config, stored, record.get('real_paths'))
    # init_from is not read on resume (the run's encoder is in its own checkpoint): it may be left
    # out once the run has a checkpoint, and a self-pretraining run's finetune stage reads its
    # source from the pretrain stage beside it, wherever the run's folder has moved since.
    left_out = not as_stored['init_from'] and 'init_from' in stored
    if left_out or _moved_stage_source(
      stored.get('init_from', ''), as_stored['init_from'], workdir
    ):
      as_stored['init_from'] = stored['init_from']
    raise_if_changed(
      stored, as_stored, workdir, f'checkpoint at step {step}', record.get('real_paths')
    )
    if vocabulary is not None and record.get('vocabulary', vocabulary) != vocabulary:
      raise VocabularyChangedError(
        f'{workdir} was trained on vocabulary {record["vocabulary"]!r} (checkpoint at step '
        f'{step}), but the data now gives {vocabulary!r}: the tokenizer file '
        f'({run.data.options.get("tokenizer", "bytes")}) was replaced since. Put the original '
        'tokenizer back (the same file), or use a new --workdir to train on the new vocabulary.'
      )

  state, record = checkpointer.restore_latest(state, check)
  if record is None:
    fresh = {'global_devices': global_devices, 'device_changes': [], 'train_time': 0.0}
    return state, {**fresh, 'timed_steps': 0}, run
  step = int(state.step)
  stored_init_from = record.get('config', {}).get('init_from', run.init_from)
  if stored_init_from != run.init_from:
    logging.info('Resuming step %d: init_from is not read (kept as %r).', step, stored_init_from)
    run = dataclasses.replace(run, init_from=stored_init_from)
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
  return state, record, run


class TrainingInterrupted(Exception):
  """SIGINT or SIGTERM stopped training after a step, and that step's checkpoint was saved.

  Attributes:
    signum: the signal's number.
  """

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum = signum
    super().__init__(
      f'{signal.Signals(signum).name}: training stopped after step {step}, saved in '
      f'{os.path.join(workdir, checkpointing.CHECKPOINTS_DIR, str(step))}. Run the same command '
      'to resume: the run goes on as if it had not stopped.'
    )


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
  """Within: the first SIGINT or SIGTERM is recorded in the yielded list instead of acted on, so
  that the training loop stops after its step with a checkpoint (the final evaluation, between its
  evaluations); a second one ends the process at once (the signal's default action). Only in the
  main thread of a single-process run (several processes would have to agree on the step; there
  the signals act at once and the run resumes from its last checkpoint)."""
  received: list[int] = []
  if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
    yield received
    return
  previous = {
    number: signal.getsignal(number) or signal.SIG_DFL for number in (signal.SIGINT, signal.SIGTERM)
  }

  def record(signum: int, frame: Any) -> None:
    del frame
    if received:  # The default action, now (a KeyboardInterrupt inside JAX's code could crash).
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    received.append(signum)
    logging.warning(
      '%s: stopping after this step, with a checkpoint (send it again to stop at once).',
      signal.Signals(signum).name,
    )

  for number in previous:
    signal.signal(number, record)
  try:
    yield received
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates one model on one task (an LRA task, or a `corpora` one: language
  modelling, sequence to sequence, translation, masked-LM pretraining, GLUE); resumes from
  `workdir` if it has a checkpoint.

  The workdir is locked for the duration (`luna_jax.training.workdir.lock`), the config is checked
  once (`parse_config`) and, on resume, compared with the checkpoint's (`restore_run`). The stages
  are `_setup`, `_train`, `_final_evaluation` and `_write_results`. With `config.init_from` the
  encoder starts from another run's (`initialize_from`); with
  `config.self_pretraining.num_train_steps` the run is a pretrain and a finetune stage
  (`train_with_self_pretraining`).

  Args:
    config: the experiment config (configs/base.py documents every field). With `debug` True the
      smoke test's settings (model size, batch, steps: `run_config.apply_debug`) replace the
      config's, whatever it sets, and silently (`train.py` warns about its command line's
      overrides): set `debug` False to set them.
    workdir: folder for checkpoints, metrics and results (created if needed).

  Returns:
    The content of `workdir/results.json`: 'validation' and 'test' ({'accuracy', 'loss',
    'num_examples'}, and 'sequence_accuracy' for the token-level models, 'perplexity' for
    masked-LM pretraining) of the final parameters,
    'best' ('step' of the best validation checkpoint or None, 'test': its test metrics or None when
    its parameters could not be restored, 'selected_on_test': whether the validation split was the
    test split, 'directory'), 'step', 'partial_evaluation' (whether a split was evaluated on a
    sample, `training.num_eval_batches`), 'num_params', 'steps_per_sec' (over every session of
    the run), 'devices' (with 'changes' of the device count on resume) and 'config'. For data with
    BLEU references, 'validation' and 'test' also hold 'bleu', and 'bleu' the sacreBLEU signature,
    the decoding settings and the translation files.

  Raises:
    ValueError: unknown/missing config keys or values out of range (named), indivisible batch
      sizes; ConfigChangedError and checkpointing.CheckpointMismatchError on resume, and a
      ConfigError for a run trained past `training.num_train_steps`.
    TrainingInterrupted: SIGINT or SIGTERM during training (the step's checkpoint is saved).
    checkpointing.CheckpointUnreadableError: the machine failed reading a checkpoint on resume.
    workdir.WorkdirLockedError: another process trains in `workdir`.
    workdir.WorkdirKindError: `workdir` holds another kind of run (`workdir.claim_kind`).
    workdir.WorkdirUnusableError: `workdir` cannot be created or its lock file written.
    lra.DataError: missing data, unknown data options.
    FloatingPointError: a non-finite loss, gradient or parameter norm (names the step).
  """
  run = parse_config(config)
  require_data_dir(run.data)
  if run.training.distributed and not jax.distributed.is_initialized():
    initialize_distributed()
  if run.self_pretraining.num_train_steps:
    return train_with_self_pretraining(config, workdir)
  is_lead = jax.process_index() == 0
  accelerators.log_backend()  # Backend and devices; warns if JAX is on the CPU beside a GPU.
  with contextlib.ExitStack() as stack:
    if is_lead:
      stack.enter_context(workdir_lib.lock(workdir))
      workdir_lib.claim_kind(workdir, workdir_lib.run_kind(run.to_dict()), run.debug)
    os.makedirs(workdir, exist_ok=True)
    session, state = _setup(run, workdir, is_lead, stack)
    with _stop_requests() as stop:
      state, validation = _train(session, state, stop)
      final = _final_evaluation(session, state, validation, stop)
    return _write_results(session, final)


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
  train_log: TrainLog

  def evaluate(self, params: PyTree, split: lra.Split) -> dict[str, float]:
    """`evaluate` of replicated `params` on `split`, capped at `training.num_eval_batches`, its
    batches prefetched to the devices (`training.prefetch_batches`)."""
    return evaluate(
      self.p_eval_step,
      params,
      split,
      self.eval_batch_size,
      self.devices,
      self.model.objective,
      max_batches=self.run.training.num_eval_batches,
      batching=self.data.batching,
      prefetch=self.run.training.prefetch_batches,
    )

  def _real_paths(self) -> dict[str, str]:
    """The real paths of the data folder and of `init_from` (the first session's: a resumed run
    keeps its source as first given, `restore_run`), for `run_config.paths_as_stored`."""
    paths = {'data_dir': real_path(self.run.data.data_dir)}
    init_from = self.record.get('real_paths', {}).get('init_from')
    if init_from or self.run.init_from:
      paths['init_from'] = init_from or real_path(self.run.init_from)
    return paths

  def checkpoint_record(self, pending_metrics: list | None = None) -> dict[str, Any]:
    """The record saved with a checkpoint: the restored one with the config, the real paths of
    the data folder and `init_from` and the data's vocabulary (what `init_from` and a resume
    check), the model's data sizes (`model_inputs`), speed totals and the metrics of the steps
    since the last log point (`metric_log.pending_to_json`; empty but for a checkpoint between
    log points)."""
    return {
      **self.record,
      'pending_metrics': pending_metrics or [],
      'config': self.run.to_dict(),
      'real_paths': self._real_paths(),
      'vocabulary': lra.vocabulary(self.data),
      'model_inputs': model_inputs(self.data),
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
  global_devices = global_device_count(devices)
  batching = data.batching.micro_batched(
    training.gradient_accumulation_steps, training.batch_size, global_devices
  )
  data = dataclasses.replace(data, batching=batching)
  model, optimizer, state = build(run, data)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))

  checkpointer = stack.enter_context(
    contextlib.closing(checkpointing.Checkpointer(workdir, training.keep_checkpoints))
  )
  state, record, run = restore_run(
    checkpointer, state, run, workdir, global_devices, lra.vocabulary(data)
  )
  start_step = int(state.step)
  if start_step > training.num_train_steps:
    raise ConfigError(
      f'{workdir} holds a run trained to step {start_step}, past the {training.num_train_steps} '
      f'steps asked for (training.num_train_steps; self_pretraining.num_train_steps for the '
      f'pretrain stage of self-pretraining): a run is never shortened. Ask for {start_step} or '
      'more to evaluate or extend it, or use another --workdir.'
    )
  checkpointer.drop_best_after(start_step)  # As metrics.jsonl drops what follows start_step.
  held = workdir_lib.recorded_kind(workdir) or ('none', False)
  if not (start_step or run.init_from) and held[0] == 'finetuning':
    # Resumed without init_from, but no checkpoint was restored (all set aside as damaged).
    raise ConfigError(
      f'{workdir} holds a finetuning run none of whose checkpoints could be restored (see '
      f'{checkpointing.DAMAGED_DIR}/ there), and no init_from was given: it would start again '
      f'from a random encoder. Start it again from its source with --config.init_from=<the '
      f'folder> (its init_from in {workdir}/config.json).'
    )
  if run.init_from and not start_step:  # A resumed run's encoder is in its own checkpoint.
    state = initialize_from(state, run.init_from, model, data, optimizer)
  if is_lead:
    _write_json(os.path.join(workdir, 'config.json'), run.to_dict())
  accumulation = training.gradient_accumulation_steps
  logging.info(
    '%s/%s: %d parameters; %s, %s at step %d of %d.',
    run.data.task,
    run.model['name'],
    num_params,
    run.optimizer.name + (f', {accumulation} micro-batches a step' if accumulation > 1 else ''),
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
  p_train_step, p_eval_step = map_steps(model, optimizer, training, devices)
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
    train_log=TrainLog(
      record['train_time'], record['timed_steps'], record.get('pending_metrics', [])
    ),
  )
  return session, jax_utils.replicate(state, devices, axis_name=AXIS)  # Sharded as pmap outputs.


def load_data(run: RunConfig) -> lra.TaskData:
  """The task's data (an LRA task from `lra`, any other from `corpora`); for a masked LM its inputs
  alone (`lra.unlabelled`)."""
  load_task = lra.load_task if run.data.task in lra.TASKS else corpora.load_task
  data = load_task(run.data.task, run.data.data_dir, **run.data.options)
  return lra.unlabelled(data) if run.model['name'] in luna_jax.MLM_MODELS else data


def model_inputs(data: lra.TaskData) -> dict[str, Any]:
  """What `luna_jax.build_model` needs from the data besides `config.model` (JSON-able: it is
  saved with every checkpoint, so that `luna_jax.training.load_run` builds the model without the
  data): vocab_size, num_classes, max_length, dual, bos_id, special_ids."""
  return {
    'vocab_size': data.vocab_size,
    'num_classes': data.num_classes,
    # Token-level tasks: positions must cover the targets too (seq2seq decoder, LM).
    'max_length': max([data.max_length, *data.batching.example(data.train)['targets'].shape[1:]]),
    'dual': data.dual,
    'bos_id': data.info.get('bos_id'),
    'special_ids': list(lra.special_ids(data)),
  }


def build(
  run: RunConfig, data: lra.TaskData
) -> tuple[flax.linen.Module, optax.GradientTransformation, TrainState]:
  """The model for `data`, the optimizer and a freshly initialised state."""
  model = luna_jax.build_model(run.model, **model_inputs(data))
  optimizer = optim.make_optimizer(run.optimizer)
  example = data.batching.example(data.train)
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
  """`state` with the encoder of the run at `path` (`config.init_from`,
  `luna_jax.training.pretrained`).

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


def raise_if_changed(
  stored: dict[str, Any],
  new: dict[str, Any],
  workdir: str,
  evidence: str,
  real_paths: dict[str, str] | None = None,
) -> None:
  """Refuses to resume (or to reuse the results of) a run trained with other settings.

  Args:
    stored: the run config the workdir's run was trained with (`upgrade_stored_config`d).
    new: this session's run config (`RunConfig.to_dict()`).
    workdir: the run's folder.
    evidence: what `stored` was read from, for the message ('checkpoint at step 100').
    real_paths: the real paths of `stored`'s folders as recorded with it ('data_dir',
      'init_from'), named beside a changed folder's spelling (`config_changes`).

  Raises:
    ConfigChangedError: naming every setting that differs (`config_changes`), with both values.
  """
  changes = config_changes(stored, new, real_paths=real_paths)
  if changes:
    raise ConfigChangedError(
      f'{workdir} holds a run trained with other settings ({evidence}):\n  '
      + '\n  '.join(changes)
      + '\nOnly training.'
      + ', training.'.join(RESCHEDULE_KEYS)
      + ', the device count and the decoding section may change when a run is resumed; '
      'data.data_dir and init_from may name the same folder otherwise spelt, and init_from may '
      'be left out (it is not read on resume). Use another --workdir for a new run, or resume '
      f'this one with the settings in {workdir}/config.json.'
    )


def train_with_self_pretraining(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the pretrain and finetune stages of `luna_jax.training.self_pretraining` in `workdir`.

  Each stage is a `train_and_evaluate` run in its own sub-folder (resumable); a stage that already
  reached its last step with the same settings is skipped. The workdir may be moved between
  sessions: the finetune stage's source is the pretrain stage beside it (`_moved_stage_source`).
  Writes `workdir/results.json`: the finetune stage's results with 'pretraining' (the pretrain
  stage's 'step', 'validation', 'steps_per_sec', 'directory').

  Raises:
    What `train_and_evaluate` raises; config_utils.ConfigError for a model without an encoder, or
    for more pretraining steps once the finetune stage has started;
    ConfigChangedError: a finished stage trained with other settings.
  """
  is_lead = jax.process_index() == 0
  with contextlib.ExitStack() as stack:
    if is_lead:
      stack.enter_context(workdir_lib.lock(workdir))
      workdir_lib.claim_kind(workdir, 'self-pretraining', bool(config.debug))
    os.makedirs(workdir, exist_ok=True)
    results = []
    stages = self_pretraining.stage_configs(config, workdir)
    (pretrain_dir, _), (finetune_dir, _) = stages
    for stage_dir, stage_config in stages:
      run = parse_config(stage_config)
      steps = run.training.num_train_steps
      ended = self_pretraining.stage_results(stage_dir)
      finished = ended if ended is not None and ended['step'] == steps else None
      more = stage_dir == pretrain_dir and ended is not None and ended['step'] < steps
      if more and workdir_lib.has_checkpoint(finetune_dir):
        asked = config.self_pretraining.num_train_steps
        follows = ' (-1: as many as training.num_train_steps)' if asked == -1 else ''
        raise ConfigError(
          f'{workdir}: its finetune stage started from the {ended["step"]}-step pretraining; '
          f'self_pretraining.num_train_steps={asked}{follows} would pretrain to step {steps} '
          'and leave the classifier on the old encoder. Pass '
          f'--config.self_pretraining.num_train_steps={ended["step"]} (training.num_train_steps '
          'may grow), or use another --workdir.'
        )
      if finished is not None:
        stored = upgrade_stored_config(finished['config'])
        # The data folder compared by the real path its last checkpoint recorded, as on resume;
        # the finetune stage's init_from is the pretrain folder as this workdir spells it.
        record = checkpointing.read_record(stage_dir, finished['step']) or {}
        new = {
          **paths_as_stored(run.to_dict(), stored, record.get('real_paths')),
          'init_from': stored['init_from'],
        }
        raise_if_changed(
          stored,
          new,
          stage_dir,
          f'results.json at step {finished["step"]}',
          record.get('real_paths'),
        )
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
      path = os.path.join(workdir, 'results.json')
      _write_json(path, combined)
      _print_finished(combined, path, f' after {pretrain["step"]} self-pretraining steps')
    return combined


def map_steps(
  model: flax.linen.Module,
  optimizer: optax.GradientTransformation,
  training: TrainingConfig,
  devices: Sequence[jax.Device],
) -> tuple[Callable, Callable]:
  """The steps the trainer runs: `train_step` (state donated) and `eval_step` (key broadcast)
  pmapped over `devices` (this process's; every device of every process when there are several).

  Args:
    model: the model (`build`).
    optimizer: the optax transformation the state was created with.
    training: the run's training settings (label smoothing, gradient accumulation).
    devices: this process's devices (`select_devices`).

  Returns:
    (p_train_step, p_eval_step): p_train_step(state, batch) -> (state, metrics) and
    p_eval_step(params, batch, key) -> metric sums, on replicated state or parameters and batches
    [devices, b / devices, ...] (`device_batches`).
  """
  # pmap must be given the same devices in every process: all of them, so that its collectives
  # span the processes (a process's own devices alone would train one model per process).
  mapped_devices = devices if jax.process_count() == 1 else jax.devices()
  p_train_step = jax.pmap(
    run_train_step(model, optimizer, training, axis_name=AXIS),
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


def _train(
  session: _Session, state: TrainState, stop: Sequence[int] = ()
) -> tuple[TrainState, dict[str, float] | None]:
  """The training loop from `session.start_step` to `training.num_train_steps`, with logging,
  validation, best-parameter and checkpoint saves at their steps. Once `stop` holds a signal
  (`_stop_requests`), the loop saves the step's checkpoint, with the metrics of the steps since the
  last log point (so that the resumed run logs what an uninterrupted one does), and raises
  TrainingInterrupted.

  Batches reach the devices `training.prefetch_batches` steps ahead (`device_batches`); nothing is
  fetched from the devices between log, evaluation and checkpoint points, so the host dispatches
  steps ahead of the devices in between.

  Returns:
    The final (replicated) state and the last validation metrics (None when no step ran).
  """
  run, training = session.run, session.run.training
  schedule = optim.schedule_from_config(run.optimizer)
  batches = device_batches(
    session.data.batching.train_batches(
      session.data.train,
      training.batch_size,
      num_devices=global_device_count(session.devices),
      seed=run.seed,
      start_step=session.start_step,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    ),
    session.devices,
    training.prefetch_batches,
    limit=max(training.num_train_steps - session.start_step, 0),
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
    for step, batch in zip(range(session.start_step + 1, training.num_train_steps + 1), batches):
      state, metrics = session.p_train_step(state, batch)
      session.train_log.add(step, metrics)
      bar.update()
      if step == session.start_step + 1:  # Includes compilation: left out of the speed figures.
        session.train_log.exclude_from_timing()
      is_eval = step % training.eval_every == 0 or step == training.num_train_steps
      is_checkpoint = checkpointing.on_schedule(
        step, training.checkpoint_every, training.num_train_steps
      )
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
      if stop:
        if not is_checkpoint:  # Saved as at a checkpoint step: after the finiteness check.
          steps, values, _ = session.train_log.collect()
          check_finite(steps, values, session.checkpointer)
          record = session.checkpoint_record(metric_log.pending_to_json(steps, values))
          session.checkpointer.save(step, unreplicate(state), record)
        raise TrainingInterrupted(stop[0], step, session.workdir)
  return state, validation


def _raise_if_stopped(stop: Sequence[int], step: int, workdir: str) -> None:
  """Raises TrainingInterrupted once `stop` holds a signal (`_stop_requests`)."""
  if stop:
    raise TrainingInterrupted(stop[0], step, workdir)


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
  session: _Session,
  state: TrainState,
  validation: dict[str, float] | None,
  stop: Sequence[int] = (),
) -> dict[str, Any]:
  """Validation (unless `_train` just evaluated it) and test metrics of the final parameters, and
  the test metrics of the best validation checkpoint, logged at the final step.

  Also run when the run was already complete and is only being re-evaluated. Once `stop` holds a
  signal, it raises TrainingInterrupted before its next evaluation or beam-search batch (the final
  checkpoint is saved; the same command evaluates again).

  Returns:
    {'validation', 'test', 'best', 'step'} of `train_and_evaluate`'s results.
  """
  final_step = int(unreplicate(state.step))
  _raise_if_stopped(stop, final_step, session.workdir)
  if validation is None:
    validation = session.evaluate(state.params, session.data.validation)
    _raise_if_stopped(stop, final_step, session.workdir)
  test = session.evaluate(state.params, session.data.test)
  _raise_if_stopped(stop, final_step, session.workdir)
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
  _raise_if_stopped(stop, final_step, session.workdir)
  if best_test is not None:
    session.writer.write_scalars(final_step, {f'best_test_{k}': v for k, v in best_test.items()})
  final = {}
  if 'references' in session.data.info:  # Data scored by BLEU: translate validation and test.
    scores = translation.score_splits(
      session.model,
      unreplicate(state.params),
      session.data,
      session.run.decoding,
      os.path.join(session.workdir, 'translations') if session.is_lead else None,
      functools.partial(_raise_if_stopped, stop, final_step, session.workdir),
      session.run.training.num_eval_batches,
    )
    validation = {**validation, **scores.pop('validation')}  # 'bleu' and 'tokenized_bleu'.
    test = {**test, **scores.pop('test')}
    session.writer.write_scalars(
      final_step, {'test_bleu': test['bleu'], 'test_tokenized_bleu': test['tokenized_bleu']}
    )
    final['bleu'] = scores
  return {
    **final,
    'validation': validation,
    'test': test,
    'best': {
      'step': best_step,
      'test': best_test,
      'selected_on_test': session.data.validation is session.data.test,
      'directory': os.path.join(os.path.abspath(session.workdir), checkpointing.BEST_DIR),
    },
    'step': final_step,
  }


def _write_results(session: _Session, final: dict[str, Any]) -> dict[str, Any]:
  """`train_and_evaluate`'s results: `final` (`_final_evaluation`) with the parameter count, speed,
  devices and config; written to `workdir/results.json` by the lead process."""
  training = session.run.training
  splits = {'validation': session.data.validation, 'test': session.data.test}
  # Whether the figures come from a sample of a split: `evaluate`'s max_batches, or BLEU's
  # decoding batches (`translation.score_splits`).
  sample = training.num_eval_batches * session.eval_batch_size
  sampled = training.num_eval_batches != -1 and any(
    sample < split.num_examples for split in splits.values()
  )
  bleu_sampled = any(
    final[name].get('num_sentences', np.inf) < split.num_examples for name, split in splits.items()
  )
  results = {
    **final,
    'partial_evaluation': sampled or bleu_sampled,
    'num_params': session.num_params,
    'steps_per_sec': session.train_log.steps_per_sec(),
    'devices': {**_describe_devices(session.devices), 'changes': session.record['device_changes']},
    'config': session.run.to_dict(),
  }
  if session.is_lead:
    path = os.path.join(session.workdir, 'results.json')
    _write_json(path, results)
    _print_finished(results, path)
  return results


def _print_finished(results: dict[str, Any], path: str, note: str = '') -> None:
  """Prints a run's last line: its step, validation and test accuracy (and BLEU, or a masked
  LM's validation perplexity), `note` and where its results.json is."""
  test, validation = results['test'], results['validation']
  extra = ''
  if 'bleu' in test:
    extra = f', test BLEU {test["bleu"]:.2f} (tokenised {test["tokenized_bleu"]:.2f})'
  elif 'perplexity' in validation:
    extra = f', validation perplexity {validation["perplexity"]:.2f}'
  print(
    f'Finished step {results["step"]}{note}: validation accuracy '
    f'{validation["accuracy"]:.4f}, test accuracy {test["accuracy"]:.4f}'
    f'{extra}. Results in {path}'
  )
