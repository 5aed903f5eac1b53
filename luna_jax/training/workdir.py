"""A run's workdir: an exclusive lock, so that it belongs to one training process, and the record
of the kind of run it holds, so that it holds one kind of run.

`lock(workdir)` takes a POSIX advisory lock (`fcntl.flock`, `lra.files.acquire_lock`) on
`workdir/.lock` and writes the holder's pid and host into it. The operating system drops the lock
when the holder exits or dies, so a SIGKILLed run leaves no stale lock: the next start takes it at
once. A second process that finds the lock taken fails with `WorkdirLockedError` naming the
holder's pid. (`flock` is local to a machine on some network file systems; on several hosts, lock
on the lead host only.)

`claim_kind(workdir, kind, debug)` records in `workdir/kind.json` what the workdir holds (one of
`KINDS`, and whether it is a debug run) and refuses any other kind later: a self-pretraining run
started in a plain run's workdir would overwrite its `results.json`, a real run would resume a
debug one. A workdir written before the record existed is recognised by its `config.json` (or, for
self-pretraining, by its `pretrain`/`finetune` stages).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lra.files import LockedError, acquire_lock, write_atomically
from luna_jax.model.config import MLM_MODELS
from luna_jax.training.checkpointing import BEST_DIR, CHECKPOINTS_DIR, DAMAGED_DIR
from luna_jax.training.self_pretraining import FINETUNE_DIR, PRETRAIN_DIR

#: Name of the lock file inside the workdir.
LOCK_FILE = '.lock'
#: Name of the record of the kind of run a workdir holds.
KIND_FILE = 'kind.json'
#: The kinds of run: trained from scratch, masked-LM pretraining, a self-pretraining run (two stages
#: in sub-folders), trained from another run's encoder (`init_from`).
KINDS = ('plain', 'pretraining', 'self-pretraining', 'finetuning')
#: Where a self-pretraining run keeps its stages.
_STAGE_DIRS = (PRETRAIN_DIR, FINETUNE_DIR)


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


class WorkdirKindError(RuntimeError):
  """The workdir holds another kind of run than the one started in it."""


class WorkdirUnusableError(RuntimeError):
  """The workdir cannot be created or written (a file of that name, no permission)."""


def run_kind(config: Mapping[str, Any]) -> str:
  """The kind (one of `KINDS`) of the run of a resolved config as nested dicts
  (`RunConfig.to_dict()`, `config.json`)."""
  if config['self_pretraining']['num_train_steps']:
    return 'self-pretraining'
  if config['model']['name'] in MLM_MODELS:
    return 'pretraining'
  return 'finetuning' if config['init_from'] else 'plain'


def _describe(kind: str, debug: bool) -> str:
  return f'{"debug " if debug else ""}{kind}'


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir/checkpoints/` holds a step's checkpoint."""
  folder = os.path.join(workdir, CHECKPOINTS_DIR)
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _holds_a_run(workdir: str) -> bool:
  """Whether `workdir` holds anything of a run: its config, a checkpoint, results or stages (the
  checkpointer makes an empty `checkpoints/` before a start can fail, e.g. on `init_from`)."""
  names = ('config.json', 'results.json', *_STAGE_DIRS)
  return has_checkpoint(workdir) or any(os.path.exists(os.path.join(workdir, n)) for n in names)


def recorded_kind(workdir: str) -> tuple[str, bool] | None:
  """The (kind, debug) of the run `workdir` holds, or None for a workdir without a run.

  Read from `KIND_FILE`, else (a workdir written before it existed) from its `config.json`, else a
  `results.json` with the pretraining stage's figures or a stage sub-folder means self-pretraining.

  Raises:
    WorkdirKindError: one of those files is not what the trainer writes (naming it).
  """
  path = os.path.join(workdir, KIND_FILE)
  if os.path.isfile(path):
    return _read_run_file(path, lambda record: (record['kind'], record['debug']))
  config_path = os.path.join(workdir, 'config.json')
  if os.path.isfile(config_path):
    return _read_run_file(config_path, lambda config: (run_kind(config), bool(config['debug'])))
  results_path = os.path.join(workdir, 'results.json')
  if os.path.isfile(results_path):
    pretraining = _read_run_file(
      results_path,
      lambda results: bool(results['config']['debug']) if 'pretraining' in results else None,
    )
    if pretraining is not None:
      return 'self-pretraining', pretraining
  if any(os.path.isdir(os.path.join(workdir, stage)) for stage in _STAGE_DIRS):
    return 'self-pretraining', False
  return None


def _read_run_file(path: str, read: Callable[[Any], Any]) -> Any:
  """`read` of the JSON file `path`; a WorkdirKindError naming it when it is not what the trainer
  writes there (hand-edited, another program's)."""
  try:
    with open(path, encoding='utf-8') as f:
      return read(json.load(f))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise WorkdirKindError(
      f'{path} is not the file a luna_jax run writes ({type(e).__name__}: {e}): the workdir '
      'holds something else. Use another --workdir.'
    ) from None


def claim_kind(workdir: str, kind: str, debug: bool) -> None:
  """Records that `workdir` holds a `kind` run (debug or not), or checks that it already does.

  A finetuning run that has a checkpoint may be resumed without its `init_from` (as a 'plain'
  config): its encoder is in its own checkpoints. A workdir whose run stopped before writing
  anything (its config, checkpoints, results) takes any kind. Call it with the workdir locked.

  Args:
    workdir: the run's folder (exists).
    kind: one of `KINDS`.
    debug: the run is a debug (smoke-test) run.

  Raises:
    WorkdirKindError: the workdir holds another kind of run, or a debug run and this one is not
      (or the other way round), naming both and what to do.
  """
  recorded = recorded_kind(workdir)
  if recorded is not None and not _holds_a_run(workdir):
    recorded = None  # A start that stopped before writing anything (e.g. on missing data).
  if recorded is not None:
    held, held_debug = recorded
    # Damaged checkpoints set aside count: the trainer then says what to do (give init_from).
    damaged = os.path.isdir(os.path.join(workdir, DAMAGED_DIR))
    resumes_finetuning = (
      held == 'finetuning' and kind == 'plain' and (has_checkpoint(workdir) or damaged)
    )
    if held_debug != debug or (held != kind and not resumes_finetuning):
      raise WorkdirKindError(
        f'{workdir} holds a {_describe(held, held_debug)} run, and this is a '
        f'{_describe(kind, debug)} run: one workdir holds one kind of run (plain, pretraining, '
        'self-pretraining, finetuning; debug runs apart), so that neither overwrites the '
        'other. Use another --workdir.'
      )
  record = {'kind': recorded[0] if recorded else kind, 'debug': debug}
  write_atomically(os.path.join(workdir, KIND_FILE), json.dumps(record))


#: The workdirs this process holds (`lock`), in the order taken, with what each held before (None:
#: it did not exist) and the outermost folder `lock` made for it (None: it made none).
_held: dict[str, tuple[set[str] | None, str | None]] = {}


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds the exclusive lock of `workdir` (created if needed) for the duration of the block.

  A block that fails having written nothing there but the lock, `claim_kind`'s record and the
  checkpointer's empty folders (a start refused for missing data or a missing `init_from`, say)
  takes them away again, and the workdir and its parents if this call made them, so that a
  mistyped start leaves no run behind for `benchmarks.report` to count as unfinished
  (`remove_untouched_now` does the same for a process that ends at once).

  Raises:
    WorkdirLockedError: another process holds it; the message names its pid and host.
    WorkdirUnusableError: it is empty, or cannot be created or its lock file written, naming why.
  """
  if not workdir:
    raise WorkdirUnusableError("--workdir is empty: name the run's folder, e.g. runs/my_run.")
  before = set(os.listdir(workdir)) if os.path.isdir(workdir) else None
  made = _outermost_missing(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = acquire_lock(os.path.join(workdir, LOCK_FILE))
  except LockedError as e:
    raise WorkdirLockedError(
      f'{workdir} is in use by another training process ({e.holder}). Wait for it to finish or '
      'stop it, or choose another --workdir.'
    ) from None
  except OSError as e:
    _remove_made(workdir, made)
    raise WorkdirUnusableError(
      f'--workdir {workdir}: cannot create it or write {LOCK_FILE} in it ({e.strerror}: '
      f'{e.filename or os.path.join(workdir, LOCK_FILE)}). Choose a folder you can write.'
    ) from None
  _held[workdir] = (before, made)
  try:
    yield
  except BaseException:
    _remove_untouched(workdir, before, made)
    raise
  finally:
    del _held[workdir]
    os.close(fd)  # Releases the lock.


def remove_untouched_now() -> None:
  """Cleans up every workdir this process holds as a failed block's exit would (`lock`), the
  newest first (a self-pretraining stage before its run): for a process about to end without
  unwinding (`os._exit` on a signal during a run's setup)."""
  for workdir, (before, made) in reversed(list(_held.items())):
    _remove_untouched(workdir, before, made)


def _outermost_missing(path: str) -> str | None:
  """The outermost of `path` and its parents that does not exist (None: `path` exists)."""
  missing = None
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _remove_made(workdir: str, made: str | None) -> None:
  """Removes `workdir` and its parents up to `made` (`_outermost_missing` before they were made),
  stopping at the first that is not empty (or not there): what `lock` made and nothing else."""
  if made is None:
    return
  path = os.path.abspath(workdir)
  with contextlib.suppress(OSError):
    while True:
      os.rmdir(path)
      if path == made:
        return
      path = os.path.dirname(path)


def _remove_untouched(workdir: str, before: set[str] | None, made: str | None) -> None:
  """Removes what `lock` and `claim_kind` added to `workdir` (which held `before`, None: did not
  exist), and the checkpointer's folders if added empty (made before `init_from` failed), when
  nothing else was added; then the workdir and the parents that `lock` made (`made`, the
  outermost). The lock file goes last: until then no other start can take it."""
  ours = {LOCK_FILE, KIND_FILE} - (before or set())
  with contextlib.suppress(OSError):  # The block's own error is the one to report.
    added = set(os.listdir(workdir)) - (before or set())
    folders = {
      name
      for name in added & {CHECKPOINTS_DIR, BEST_DIR}
      if os.path.isdir(os.path.join(workdir, name))
      and not os.path.islink(os.path.join(workdir, name))
    }
    if (
      not added
      or not (added - folders) <= ours
      or any(os.listdir(os.path.join(workdir, name)) for name in folders)
    ):
      return
    for name in sorted(folders):
      os.rmdir(os.path.join(workdir, name))  # Fails, and so stops, if one is no longer empty.
    for name in sorted(added - folders, key=lambda name: name == LOCK_FILE):
      os.remove(os.path.join(workdir, name))
    _remove_made(workdir, made)
