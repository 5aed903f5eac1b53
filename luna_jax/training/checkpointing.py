"""Verified orbax checkpoints of a training run: the latest N train states and the best parameters.

  workdir/checkpoints/<step>/       full TrainState (step, params, optimizer state, rng), the last
                                    `keep` periodic/final saves
  workdir/best/<step>/              {'params'} of the best validation accuracy so far, and of the
                                    best up to each kept train state (what a run resumed there
                                    falls back to)
  workdir/damaged_checkpoints/      checkpoints found damaged on restore, set aside
  workdir/averaged/<step>/          {'params'}: the mean of the last N checkpoints' parameters
                                    (`average_checkpoints`, one command: python -m
                                    luna_jax.average_checkpoints)

Orbax writes each checkpoint into a temporary folder and renames it once complete, so an interrupted
save never leaves a checkpoint that `latest_step` would pick up (unfinished temporaries are removed
on the next start). Every checkpoint also carries, in orbax's step metadata (`custom_metadata`), the
SHA-256 of the arrays it holds and the caller's record of the run (config, devices, timing).
Restoring checks, newest checkpoint first, that orbax's commit marker is there, that the metadata
reads, that the arrays fit the target, and that the restored arrays hash to the stored digest. A
checkpoint that fails is named in a warning, moved to `damaged_checkpoints/`, and the next older one
is tried (a best checkpoint whose metrics file does not read, when the run starts). An error of the
machine while reading (an I/O error other than a missing file, memory) is no sign of damage: it
stops with `CheckpointUnreadableError`, the checkpoint left where it is. The data position needs no
saving: training batch k is a pure function of the data seed and k, and k is the restored step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging as std_logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

#: Key of the arrays' SHA-256 in a checkpoint's custom metadata.
DIGEST_KEY = 'sha256'
#: Folder of the workdir that holds the last `keep_checkpoints` train states.
CHECKPOINTS_DIR = 'checkpoints'
#: Folder of the workdir that holds the parameters of the best validation accuracy.
BEST_DIR = 'best'
#: Folder of the workdir that damaged checkpoints are moved to.
DAMAGED_DIR = 'damaged_checkpoints'
#: Folder of the workdir that averaged parameters are written to (`average_checkpoints`).
AVERAGED_DIR = 'averaged'
#: Called with (step, record) before a checkpoint is restored; raises to refuse it.
RecordCheck = Callable[[int, dict[str, Any]], None]


class CheckpointMismatchError(ValueError):
  """A checkpoint is intact but does not fit the model (other shapes or structure)."""


class CheckpointUnreadableError(OSError):
  """The machine failed reading a checkpoint (an I/O error other than a missing file, memory):
  nothing says the checkpoint is damaged, so it is left where it is."""


class _Damaged(Exception):
  """A checkpoint failed verification (the message says how)."""


#: Errors of reading a file that say it is not there, which in a checkpoint is damage.
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def _damage(error: Exception, what: str, path: str) -> _Damaged:
  """`error`, raised reading the checkpoint at `path`, as damage to it (`what`: which part), or
  CheckpointUnreadableError where it is the machine's (an I/O error other than a missing file, or
  memory): an error that may pass must not set an intact checkpoint aside, nor make the run fall
  back to an older one and drop the best parameters after it."""
  if isinstance(error, MemoryError) or (
    isinstance(error, OSError) and error.errno is not None and error.errno not in _MISSING
  ):
    raise CheckpointUnreadableError(
      f'{path}: could not be read ({type(error).__name__}: {error}); it is left as it is. Run the '
      f'same command again; should the error stay, move that folder out of its parent to go on '
      'from the checkpoint before it.',
    ) from error
  return _Damaged(f'{what}: {type(error).__name__}: {str(error)[:200]}')


def flat_leaves(tree: Any) -> dict[str, Any]:
  """The leaves of `tree` by '/'-joined path ('params/encoder/kernel', 'opt_state/0/mu/...').

  A TrainState and orbax's stored view of it (nested dicts and lists) give the same paths.
  """
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _without_digest(record: dict[str, Any]) -> dict[str, Any]:
  """A checkpoint's record as the trainer wrote it: without the digest `save` adds."""
  return {k: v for k, v in record.items() if k != DIGEST_KEY}


def tree_digest(tree: Any) -> str:
  """SHA-256 (hex) of every array of `tree`: path, dtype, shape and bytes, in path order."""
  digest = hashlib.sha256()
  for path, leaf in sorted(flat_leaves(tree).items()):
    array = np.ascontiguousarray(jax.device_get(leaf))  # No copy for host arrays.
    digest.update(f'{path}|{array.dtype}|{array.shape}|'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _abstract(tree: Any) -> Any:
  """Shapes and dtypes of `tree` (a restore target that holds no memory)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _host_target(tree: Any) -> Any:
  """Zero host arrays shaped like `tree` (allocated lazily by the OS): orbax restores into them as
  numpy arrays, which every process can take (it refuses process-local device arrays when there
  are several processes)."""
  return jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), tree)


class _VerifiedManager:
  """One orbax CheckpointManager whose checkpoints carry a digest and are verified on restore."""

  def __init__(self, workdir: str, name: str, options: ocp.CheckpointManagerOptions):
    self.workdir = os.path.abspath(workdir)
    # The handler lets a fresh manager read the arrays' metadata (`item_metadata`).
    self.manager = ocp.CheckpointManager(
      os.path.join(self.workdir, name),
      options=options,
      item_handlers=ocp.StandardCheckpointHandler(),
    )

  def path(self, step: int) -> str:
    return os.path.join(str(self.manager.directory), str(step))

  def save(
    self, step: int, tree: Any, record: dict[str, Any], metrics: dict[str, float] | None = None
  ) -> None:
    host = jax.device_get(tree)  # One copy, hashed and saved (orbax refuses process-local arrays).
    custom = {**record, DIGEST_KEY: tree_digest(host)}
    self.manager.save(
      step, args=ocp.args.StandardSave(host), metrics=metrics, custom_metadata=custom, force=True
    )

  def read_record(self, step: int) -> dict[str, Any]:
    """The step's custom metadata, after checking orbax's commit marker; raises _Damaged."""
    marker = os.path.join(self.path(step), ocp.path.atomicity_types.COMMIT_SUCCESS_FILE)
    if not os.path.exists(marker):
      raise _Damaged(f'orbax commit marker {os.path.basename(marker)} missing')
    try:
      record = self.manager.metadata(step).custom_metadata
    except Exception as e:  # Orbax raises many types for an unreadable metadata file.
      raise _damage(e, 'metadata unreadable', self.path(step)) from None
    if not record or DIGEST_KEY not in record:
      raise _Damaged('no SHA-256 digest in its metadata (damaged, or written by an older version)')
    return dict(record)

  def check_fits(self, step: int, target: Any) -> None:
    """Raises CheckpointMismatchError when the stored arrays are not those of `target`."""
    try:
      stored = {
        path: tuple(meta.shape)
        for path, meta in flat_leaves(self.manager.item_metadata(step).tree).items()
      }
    except Exception as e:  # As above: an unreadable array metadata file.
      raise _damage(e, 'array metadata unreadable', self.path(step)) from None
    wanted = {path: tuple(np.shape(leaf)) for path, leaf in flat_leaves(target).items()}
    differing = sorted(set(stored) ^ set(wanted))
    differing += sorted(p for p in set(stored) & set(wanted) if stored[p] != wanted[p])
    if differing:
      example = differing[0]
      raise CheckpointMismatchError(
        f'{self.workdir}: checkpoint {self.path(step)} does not fit the model built from this '
        f'config and data: {len(differing)} array(s) differ, e.g. {example}: stored '
        f'{stored.get(example, "absent")}, model {wanted.get(example, "absent")}. The model '
        f'settings or the data (vocabulary, classes, max_length) changed; use a new --workdir.'
      )

  def restore_verified(self, step: int, target: Any, record: dict[str, Any]) -> Any:
    """Restores `step` into `target`'s structure and checks the digest; raises _Damaged."""
    self.check_fits(step, target)
    _drop_closed_loop_callbacks()  # Before the read: a failed one's callbacks may come at once.
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(_host_target(target)))
    except Exception as e:  # Tensorstore/OCDBT raise many types for damaged data files.
      raise _damage(e, 'unreadable', self.path(step)) from None
    if tree_digest(restored) != record[DIGEST_KEY]:
      raise _Damaged('its arrays do not match the SHA-256 digest written with it')
    return restored

  def set_aside(self, step: int, reason: str) -> None:
    """Warns about a damaged checkpoint and moves it out of orbax's folder (lead process)."""
    _set_aside(self.workdir, os.path.basename(str(self.manager.directory)), step, reason)
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def _set_aside(workdir: str, folder: str, step: int, reason: str) -> None:
  """Warns about the damaged checkpoint `<workdir>/<folder>/<step>` and moves it (lead process) to
  `<workdir>/damaged_checkpoints/<folder>_<step>` (`.2`, `.3`, ... after the first)."""
  source = os.path.join(workdir, folder, str(step))
  destination = os.path.join(workdir, DAMAGED_DIR, f'{folder}_{step}')
  suffix = 1
  while os.path.exists(destination + (f'.{suffix}' if suffix > 1 else '')):
    suffix += 1
  destination += f'.{suffix}' if suffix > 1 else ''
  logging.warning(
    'Checkpoint %s is damaged (%s); moved to %s. Using the newest intact checkpoint instead.',
    source,
    reason,
    destination,
  )
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.replace(source, destination)


def _set_aside_unreadable_metrics(workdir: str) -> None:
  """Sets aside every best checkpoint whose metrics file (`<step>/metrics/metrics`, orbax's) is
  there but holds no accuracy: orbax reads them all as its manager starts, and one that a crash
  left empty stopped every start of the run with a JSONDecodeError. (One without the file is
  never the best, `Checkpointer._prune_best`.)"""
  best = os.path.join(workdir, BEST_DIR)
  for name in sorted(os.listdir(best)) if os.path.isdir(best) else []:
    path = os.path.join(best, name, 'metrics', 'metrics')
    if not (name.isdigit() and os.path.lexists(path)):
      continue
    try:
      with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
      accuracy = metrics['accuracy'] if isinstance(metrics, dict) else None
      if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise ValueError(f'no accuracy in {metrics!r:.80}')
    except FileNotFoundError:  # A link to nothing: orbax reads no metrics, as without the file.
      continue
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; a folder there stopped orbax too.
    except (ValueError, KeyError, IsADirectoryError) as e:
      _set_aside(workdir, BEST_DIR, int(name), f'metrics unreadable: {type(e).__name__}: {e}')


def _drop_closed_loop_callbacks() -> None:
  """Silences, from now on, the 'Event loop is closed' errors of the reads that a failed restore
  leaves under way: tensorstore completes them after orbax has closed the restore's event loop,
  and Python printed each one's traceback (about 160 for one damaged file). Installed before each
  restore, since those callbacks can run before the restore's exception reaches its caller; every
  other unraisable error still reaches the previous `sys.unraisablehook`."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_callbacks', False):
    return

  def hook(unraisable: Any) -> None:
    closed = isinstance(unraisable.exc_value, RuntimeError) and (
      str(unraisable.exc_value) == 'Event loop is closed'
    )
    if not closed:
      previous(unraisable)

  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


class _ReadOnlyNotices(std_logging.Filter):
  """Drops orbax's two warnings that a read-only manager is read-only, which `_reader` asks for
  (they printed on every translate, average and init_from)."""

  NOTICES = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.NOTICES)


_read_only_notices = _ReadOnlyNotices()


def _reader(workdir: str, name: str) -> _VerifiedManager:
  """A read-only manager of `<workdir>/<name>/` (it changes nothing there)."""
  absl_logger = std_logging.getLogger('absl')
  if _read_only_notices not in absl_logger.filters:
    absl_logger.addFilter(_read_only_notices)
  return _VerifiedManager(
    workdir,
    name,
    ocp.CheckpointManagerOptions(
      read_only=True, create=False, enable_async_checkpointing=False, cleanup_tmp_directories=False
    ),
  )


def _read_verified(manager: _VerifiedManager, step: int) -> tuple[Any, dict[str, Any]]:
  """The step's tree (nested dicts of numpy arrays, as stored) and record without the digest;
  raises _Damaged."""
  record = manager.read_record(step)
  try:
    stored = manager.manager.item_metadata(step).tree
  except Exception as e:  # As in `check_fits`; a missing array metadata file reads as None.
    raise _damage(e, 'array metadata unreadable', manager.path(step)) from None
  target = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype), stored)
  tree = manager.restore_verified(step, target, record)
  return tree, _without_digest(record)


def read_checkpoint(path: str, folder: str = CHECKPOINTS_DIR) -> tuple[Any, dict[str, Any], str]:
  """Reads, verified and without changing anything, a train state another run saved.

  Args:
    path: a run's workdir (the newest intact checkpoint of its `folder` is read) or one checkpoint
      folder, `<workdir>/<folder>/<step>` or `<workdir>/averaged/<step>` (`average_checkpoints`).
    folder: 'checkpoints' (train states) or 'best' (the best validation parameters, `{'params'}`:
      the newest step there; the older ones are the best up to earlier train states).

  Returns:
    (the stored tree as nested dicts of numpy arrays, e.g. `tree['params']`; the record saved with
    it, without the digest; the checkpoint folder read).

  Raises:
    FileNotFoundError: `path` is neither, or holds no intact checkpoint (damaged ones are named,
      not moved: the folder may be another user's; so are those a training run set aside). A
      damaged newer checkpoint skipped for an older intact one is named in a warning.
    CheckpointUnreadableError: the machine failed reading one (module docstring).
  """
  path = os.path.abspath(os.path.expanduser(path))
  parent = os.path.basename(os.path.dirname(path))
  if os.path.isdir(os.path.join(path, folder)):
    workdir, wanted = path, None
  elif (
    os.path.basename(path).isdigit() and parent in (folder, AVERAGED_DIR) and os.path.isdir(path)
  ):
    workdir, folder = os.path.dirname(os.path.dirname(path)), parent
    wanted = int(os.path.basename(path))
  else:
    raise FileNotFoundError(
      f"{path}: neither a run's workdir (with a {folder}/ folder) nor a checkpoint folder "
      f'<workdir>/{folder}/<step> or <workdir>/{AVERAGED_DIR}/<step>.'
    )
  manager = _reader(workdir, folder)
  try:
    steps = [wanted] if wanted is not None else sorted(manager.manager.all_steps(), reverse=True)
    problems = []
    for step in steps:
      try:
        tree, record = _read_verified(manager, step)
      except _Damaged as e:
        problems.append(f'{manager.path(step)}: {e}')
        continue
      if problems:
        logging.warning(
          'Reading %s, the newest intact checkpoint; newer ones are damaged:%s',
          manager.path(step),
          ''.join(f'\n  {p}' for p in problems),
        )
      return tree, record, manager.path(step)
  finally:
    manager.close()
  damaged_dir = os.path.join(workdir, DAMAGED_DIR)
  set_aside = sorted(
    name
    for name in (os.listdir(damaged_dir) if os.path.isdir(damaged_dir) else [])
    if name.startswith(f'{folder}_')
  )
  if problems:
    listing = ''.join(f'\n  {p}' for p in problems)
  elif set_aside:
    listing = f' (damaged ones were set aside in {damaged_dir}: {", ".join(set_aside)})'
  else:
    listing = ' (none saved)'
  raise FileNotFoundError(f'{path}: no intact checkpoint{listing}')


def read_record(workdir: str, step: int, folder: str = CHECKPOINTS_DIR) -> dict[str, Any] | None:
  """The record saved with `<workdir>/<folder>/<step>` (without its digest; the arrays are not
  read), without changing anything; None when that checkpoint is absent or damaged."""
  if not os.path.isdir(os.path.join(workdir, folder, str(step))):
    return None
  manager = _reader(workdir, folder)
  try:
    record = manager.read_record(step)
  except _Damaged:
    return None
  finally:
    manager.close()
  return _without_digest(record)


def on_schedule(step: int, checkpoint_every: int | None, num_train_steps: int | None) -> bool:
  """Whether a run that saves every `checkpoint_every` steps and ends at `num_train_steps` saves a
  train state at `step` (the trainer's schedule; a Ctrl-C or SIGTERM saves one off it). Without a
  `checkpoint_every` (a record that is not a training run's), every step is on it."""
  return not checkpoint_every or step % checkpoint_every == 0 or step == num_train_steps


def _on_recorded_schedule(step: int, record: Mapping[str, Any]) -> bool:
  """`on_schedule` by the config saved in checkpoint `step`'s `record`."""
  training = record.get('config', {}).get('training', {})
  return on_schedule(step, training.get('checkpoint_every'), training.get('num_train_steps'))


def average_checkpoints(workdir: str, num: int) -> str:
  """Averages the parameters of the newest `num` intact checkpoints of a run into a new verified
  checkpoint (the paper averages the last 10 epochs' checkpoints before evaluating, appendix A.2;
  fairseq's `scripts/average_checkpoints.py`).

  Each parameter is the mean over the checkpoints, summed in float64 and cast back to its dtype.
  The result is `<workdir>/averaged/<newest step>/` ({'params'}, with the SHA-256 digest and the
  newest checkpoint's record plus 'averaged_steps'), replacing one of the same step;
  `read_checkpoint` and `python -m luna_jax.translate` read it. Damaged checkpoints are named and
  passed over, not moved; so are checkpoints off the run's schedule (neither a multiple of its
  `training.checkpoint_every` nor its last step: the step a Ctrl-C or SIGTERM stopped at), so that
  the average is over evenly spaced checkpoints, as the paper's epochs.

  Args:
    workdir: the run's folder.
    num: how many checkpoints (>= 1; the run must keep that many, `training.keep_checkpoints`).

  Returns:
    The new checkpoint's folder.

  Raises:
    FileNotFoundError: not a run's workdir, or fewer than `num` intact checkpoints on its schedule
      (naming the steps there are).
    ValueError: `num` < 1, or checkpoints whose parameters differ in structure or shape.
    CheckpointUnreadableError: the machine failed reading one (module docstring).
  """
  if num < 1:
    raise ValueError(f'num must be >= 1, got {num}')
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(os.path.join(workdir, CHECKPOINTS_DIR)):
    raise FileNotFoundError(f"{workdir}: not a run's workdir (it has no checkpoints/ folder).")
  reader = _reader(workdir, CHECKPOINTS_DIR)
  sums, steps, record, problems, kept = None, [], None, [], None
  try:
    for step in sorted(reader.manager.all_steps(), reverse=True):
      if len(steps) == num:
        break
      try:
        tree, step_record = _read_verified(reader, step)
      except _Damaged as e:
        problems.append(f'{reader.path(step)}: {e}')
        logging.warning('Checkpoint %s is damaged (%s); not averaged.', reader.path(step), e)
        continue
      training = step_record.get('config', {}).get('training', {})
      kept = training.get('keep_checkpoints') if kept is None else kept  # The newest's setting.
      if not _on_recorded_schedule(step, step_record):
        every = training['checkpoint_every']
        problems.append(f'{reader.path(step)}: off the schedule (checkpoint_every {every})')
        logging.warning('Checkpoint %s is off the run schedule; not averaged.', reader.path(step))
        continue
      params = flat_leaves(tree['params'])
      if sums is None:
        sums, record = {k: np.asarray(v, np.float64) for k, v in params.items()}, step_record
        structure = jax.tree.structure(tree['params'])
      elif {k: np.shape(v) for k, v in params.items()} != {k: v.shape for k, v in sums.items()}:
        raise ValueError(f'{reader.path(step)}: its parameters differ from {reader.path(steps[0])}')
      else:
        for k, v in params.items():
          sums[k] += v
      steps.append(step)
  finally:
    reader.close()
  if len(steps) < num:
    listing = ''.join(f'\n  {p}' for p in problems)
    raise FileNotFoundError(
      f'{workdir}: {num} checkpoints to average, but only {len(steps)} intact on the run '
      f'schedule ({sorted(steps)}){listing}. '
      + (
        f'The run keeps {kept} (training.keep_checkpoints): keep more, or average fewer.'
        if kept is not None and kept < num
        else 'Average fewer, or train on to more checkpoints on the schedule.'
      )
    )
  dtypes = {k: v.dtype for k, v in flat_leaves(tree['params']).items()}
  mean = jax.tree.unflatten(
    structure, [(sums[k] / num).astype(dtypes[k]) for k in flat_leaves(tree['params'])]
  )
  writer = _VerifiedManager(
    workdir,
    AVERAGED_DIR,
    ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
  )
  try:
    if steps[0] in writer.manager.all_steps():
      writer.manager.delete(steps[0])
    writer.save(steps[0], {'params': mean}, {**record, 'averaged_steps': sorted(steps)})
    return writer.path(steps[0])
  finally:
    writer.close()


class Checkpointer:
  """Saves and restores, verified, the train state and the best parameters of one workdir.

  Args:
    workdir: the run's folder.
    keep: how many periodic/final checkpoints to keep (>= 1). Only those on their run's schedule
      count (`on_schedule`, by the config saved with each): the one a Ctrl-C or SIGTERM saved off
      the schedule is kept while it is the newest (the resumed run starts there), and deleted at
      the next save.
  """

  def __init__(self, workdir: str, keep: int):
    common = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)
    _set_aside_unreadable_metrics(os.path.abspath(workdir))
    self._latest = _VerifiedManager(  # Pruned by `_prune_latest`.
      workdir, CHECKPOINTS_DIR, ocp.CheckpointManagerOptions(max_to_keep=None, **common)
    )
    self._keep = keep
    self._best = _VerifiedManager(
      workdir,
      BEST_DIR,
      ocp.CheckpointManagerOptions(
        max_to_keep=None,  # Pruned by `_prune_best`.
        best_fn=lambda metrics: metrics['accuracy'],
        best_mode='max',
        keep_checkpoints_without_metrics=False,
        **common,
      ),
    )
    self._target: Any = None

  @property
  def directory(self) -> str:
    return str(self._latest.manager.directory)

  def restore_latest(
    self, target: Any, check: RecordCheck | None = None
  ) -> tuple[Any, dict[str, Any] | None]:
    """Restores the newest intact train state into the structure, shapes and dtypes of `target`.

    Checkpoints that fail verification are named in a warning and set aside (module docstring);
    the next older one is tried.

    Args:
      target: the freshly initialised state (returned unchanged when no checkpoint is intact).
      check: called with (step, record) of a checkpoint before it is restored; raises to refuse it.

    Returns:
      (state, the record saved with it without the digest), or (target, None).

    Raises:
      CheckpointMismatchError: an intact checkpoint whose arrays do not fit `target`.
      CheckpointUnreadableError: the machine failed reading one (module docstring).
      Whatever `check` raises.
    """
    self._target = _abstract(target)
    for step in sorted(self._latest.manager.all_steps(), reverse=True):
      try:
        record = self._latest.read_record(step)
        if check is not None:
          check(step, _without_digest(record))
        state = self._latest.restore_verified(step, target, record)
      except _Damaged as e:
        self._latest.set_aside(step, str(e))
        continue
      return state, _without_digest(record)
    return target, None

  def last_good_step(self) -> int | None:
    """The newest checkpoint that restores and matches its digest now (damaged ones are set aside).

    Needs `restore_latest` to have been called (it records the state's structure).
    """
    for step in sorted(self._latest.manager.all_steps(), reverse=True):
      try:
        self._latest.restore_verified(step, self._target, self._latest.read_record(step))
      except _Damaged as e:
        self._latest.set_aside(step, str(e))
        continue
      return step
    return None

  def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
    """Saves the (host-local, unreplicated) train state as checkpoint `step`.

    Args:
      step: the number of updates in `state`.
      state: the train state.
      record: JSON-able facts about the run kept with the checkpoint (returned by restore).
    """
    if self._latest.manager.latest_step() != step:
      self._latest.save(step, state, record)
      self._prune_latest()
      self._prune_best()

  def _prune_latest(self) -> None:
    """Deletes the train states that are neither the newest (where a resumed run starts) nor among
    the newest `keep` on their run's schedule (by the config saved with each, as
    `average_checkpoints` judges them): a stop's checkpoint pushed out a scheduled one, which
    `average_checkpoints` then missed. One whose record does not read counts as scheduled."""
    steps = sorted(self._latest.manager.all_steps())
    scheduled = []
    for step in steps:
      try:
        record = self._latest.read_record(step)
      except _Damaged:
        record = {}
      if _on_recorded_schedule(step, record):
        scheduled.append(step)
    keep = {*scheduled[-self._keep :], *steps[-1:]}
    for step in steps:
      if step not in keep:
        self._latest.manager.delete(step)

  def save_if_best(self, step: int, params: Any, accuracy: float) -> None:
    """Offers `params` with validation `accuracy`; kept while it is the best so far, or the best
    up to a kept train state."""
    if step not in self._best.manager.all_steps():
      self._best.save(step, {'params': params}, {}, metrics={'accuracy': float(accuracy)})
      self._prune_best()

  def _prune_best(self) -> None:
    """Deletes the best parameters that are neither the best so far nor the best up to a kept
    train state: a run resumed from that state drops the later ones (`drop_best_after`) and must
    still find the best its earlier steps reached. Ties go to the later step, as orbax's best, so
    the newest step kept is the best so far (what `read_checkpoint(workdir, 'best')` reads)."""
    manager = self._best.manager
    metrics = {step: manager.metrics(step) for step in manager.all_steps()}
    # A best checkpoint without its metrics (damaged) is never the best, as for orbax.
    rank = {step: (m['accuracy'], step) for step, m in metrics.items() if m is not None}
    keep = set()
    for limit in [*self._latest.manager.all_steps(), None]:
      earlier = [step for step in rank if limit is None or step <= limit]
      if earlier:
        keep.add(max(earlier, key=rank.__getitem__))
    for step in sorted(set(metrics) - keep):
      manager.delete(step)

  def drop_best_after(self, step: int) -> None:
    """Deletes the best parameters of steps after `step`, the train state a run resumes from: they
    come from a session whose later steps are redone, and need not be the parameters the resumed
    session reaches there (every process calls it, as orbax's delete is collective)."""
    for later in [s for s in self._best.manager.all_steps() if s > step]:
      logging.warning(
        'Best checkpoint %s is from after step %d, where the run resumes; deleted.',
        self._best.path(later),
        step,
      )
      self._best.manager.delete(later)

  def best_step(self) -> int | None:
    """The step of the best checkpoint so far, or None."""
    return self._best.manager.best_step()

  def restore_best_params(self, target_params: Any) -> Any | None:
    """The best parameters, verified, in the structure of `target_params`; None if damaged.

    A damaged best checkpoint is named in a warning and set aside.
    """
    step = self._best.manager.best_step()
    target = {'params': target_params}
    try:
      return self._best.restore_verified(step, target, self._best.read_record(step))['params']
    except _Damaged as e:
      self._best.set_aside(step, str(e))
      return None

  def close(self) -> None:
    self._latest.close()
    self._best.close()
