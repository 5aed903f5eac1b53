"""A run's metric log: scalar metrics to TensorBoard event files (tensorboardX) and JSON lines.

`workdir/tensorboard/` holds the event files (`tensorboard --logdir workdir/tensorboard`;
`read_events` reads them back) and `workdir/metrics.jsonl` one JSON object per write,
`{"step": s, "<name>": value, ...}`. Only the lead process writes; the others get a writer that does
nothing, so calling code needs no branching.

Both files are written synchronously and flushed at every write, so what was logged before a
checkpoint is on disk when the checkpoint is: the events go straight into tensorboardX's
`EventsWriter` (its `SummaryWriter` queues them in a thread that `flush()` does not drain).

A run resumed from a checkpoint at step s re-runs the steps after s, so the writer first drops what
an interrupted run logged after s: the lines of `metrics.jsonl` with a larger step (and a torn last
line) are removed. Lines at step s whose names start with one of `redo_prefixes` (the final
evaluation of a finished run, which is evaluated again) go too. TensorBoard is told to purge its
events from step s on (a `SessionLog.START` event, what tensorboardX's `purge_step` writes), and the
lines of step s that were kept are written again, so each step is logged once in both, as in an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog

from lra.files import write_atomically
from lra.tfds_source import tfrecord_frames
from luna_jax.training import checkpointing


class MetricLogError(RuntimeError):
  """A run's `metrics.jsonl` holds what the trainer does not write (the message names file and
  line)."""


class MetricWriter:
  """Writes scalar summaries of one run.

  Args:
    workdir: the run's folder.
    enabled: False on non-lead processes (every call becomes a no-op).
    start_step: the step training (re)starts from; what was logged after it is dropped.
    redo_prefixes: names logged at `start_step` that this run logs again (dropped first).
  """

  def __init__(
    self, workdir: str, enabled: bool = True, start_step: int = 0, redo_prefixes: Sequence[str] = ()
  ):
    self._enabled = enabled
    if not enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    kept = _drop_entries(path, start_step, tuple(redo_prefixes))
    logdir = os.path.join(workdir, 'tensorboard')
    os.makedirs(logdir, exist_ok=True)
    # tensorboardX names files by the second; a resumed run may start within the second its
    # predecessor did, so nanoseconds keep the names unique and in order.
    self._events = EventsWriter(
      os.path.join(logdir, 'events'), filename_suffix=f'.{time.time_ns()}.{os.getpid()}'
    )
    self._events.write_event(
      Event(wall_time=time.time(), step=start_step, session_log=SessionLog(status=SessionLog.START))
    )
    for entry in kept:
      self._write_events(entry['step'], {k: v for k, v in entry.items() if k != 'step'})
    self._events.flush()
    self._jsonl = open(path, 'a', encoding='utf-8')

  def _write_events(self, step: int, values: Mapping[str, float]) -> None:
    for name, value in values.items():
      self._events.write_event(
        Event(wall_time=time.time(), step=step, summary=summary.scalar(name, value))
      )

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Records `scalars` (name -> number) at training step `step`, flushed to both files."""
    if not self._enabled:
      return
    values = {name: float(value) for name, value in scalars.items()}
    self._write_events(step, values)
    self._jsonl.write(json.dumps({'step': step, **values}) + '\n')
    self.flush()

  def flush(self) -> None:
    """Writes what the event and JSON-lines files buffer (a no-op when not `enabled`)."""
    if self._enabled:
      self._events.flush()
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes both files (a no-op when not `enabled`)."""
    if self._enabled:
      self._events.close()
      self._jsonl.close()


def read_events(logdir: str) -> list[Event]:
  """Every event of the event files in `logdir` (a run's `tensorboard/`), the files in name order
  (the order `MetricWriter` started them); a torn last record (a killed process) is left out.

  Each event has its 'step', 'wall_time' (seconds since the epoch, when it was written) and either
  `summary.value` (tag, simple_value) or a `session_log` (a resumed run's purge, see the module).
  """
  events = []
  for name in sorted(os.listdir(logdir)):
    if not name.startswith('events.out.tfevents.'):
      continue
    frames = tfrecord_frames(os.path.join(logdir, name), torn_ok=True)
    events.extend(Event.FromString(frame) for frame in frames)
  return events


def _drop_entries(path: str, step: int, redo_prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
  """Rewrites the JSON-lines file `path` (if any) without what a run restarting at `step` redoes.

  Dropped: entries of later steps, entries at `step` with a name starting with one of
  `redo_prefixes`, and lines that do not parse (the torn last line of a killed process). The new
  file replaces the old one atomically, so an interruption here loses nothing.

  Returns:
    The kept entries at `step`.

  Raises:
    MetricLogError: `path` is a folder, or a line parses but is no JSON object with an integer
      'step' (written by another program or by hand).
  """
  if not os.path.exists(path):
    return []
  if os.path.isdir(path):
    raise MetricLogError(f'{path} is a folder: the run writes its metrics there. Move it away.')
  kept, at_step = [], []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:
        continue
      entry_step = entry.get('step') if isinstance(entry, dict) else None
      if isinstance(entry_step, bool) or not isinstance(entry_step, int):
        raise MetricLogError(
          f'{path}:{number}: {line.strip()[:80]!r} is not a metrics entry (one JSON object with '
          'an integer "step" a line, as the trainer writes): fix or remove that line.'
        )
      if entry_step > step or (
        entry_step == step
        and redo_prefixes
        and any(name.startswith(redo_prefixes) for name in entry if name != 'step')
      ):
        continue
      kept.append(line if line.endswith('\n') else line + '\n')
      if entry_step == step:
        at_step.append(entry)
  write_atomically(path, ''.join(kept))
  return at_step


class TrainLog:
  """Holds per-step device metrics until a log point and measures the training speed.

  Waiting for metrics forces a device sync, so it happens only at log, eval and checkpoint points
  (`collect`). Each step's copy of the first device's metrics to the host starts when the step is
  added and runs behind it on the device, so a log point waits for its last step alone, with no
  device work or transfers of its own. Speed is measured between collections and summed over every
  session of the run (the totals are saved with each checkpoint); `restart_clock` excludes what
  happened since the last collection (evaluation, checkpointing), and `exclude_from_timing` the
  pending steps (the first step of a session, which includes compilation).
  """

  def __init__(self, train_time: float = 0.0, timed_steps: int = 0, pending: Sequence = ()):
    #: (step, the first device's [1] metrics) of the steps since the last collection; `pending`:
    #: those a checkpoint between log points saved (`pending_to_json`), untimed.
    self._pending: list[tuple[int, dict[str, Any]]] = [
      (step, {name: np.asarray(value, dtype) for name, (value, dtype) in metrics.items()})
      for step, metrics in pending
    ]
    self._untimed = 0
    self._mark = time.perf_counter()
    self.train_time, self.timed_steps = train_time, timed_steps

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Holds the metrics of `step` (name -> replicated [devices] array of the pmapped step) and
    starts copying the first device's values to the host; returns without waiting."""
    first = {name: value.addressable_shards[0].data for name, value in metrics.items()}
    for value in first.values():
      value.copy_to_host_async()
    self._pending.append((step, first))

  def restart_clock(self) -> None:
    """Starts the speed clock again now: what happened since the last collection is not timed."""
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
    values = [{name: np.asarray(v).reshape(()) for name, v in m.items()} for _, m in self._pending]
    self._pending.clear()
    now = time.perf_counter()
    elapsed, self._mark = max(now - self._mark, 1e-9), now
    timed, self._untimed = len(steps) - self._untimed, 0
    if not timed:
      return steps, values, None
    self.train_time += elapsed
    self.timed_steps += timed
    return steps, values, timed / elapsed


def pending_to_json(steps: Sequence[int], values: Sequence[Mapping[str, Any]]) -> list:
  """`TrainLog.collect`'s steps and values as JSON for a checkpoint's record: [[step, {name:
  [value, dtype]}]], which `TrainLog(pending=...)` takes back with the same dtypes (so that the
  next log point's means are the same bits)."""
  return [
    [step, {name: [value.item(), str(value.dtype)] for name, value in metrics.items()}]
    for step, metrics in zip(steps, values)
  ]


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
