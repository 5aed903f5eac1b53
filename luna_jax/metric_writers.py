"""Scalar metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines file.

`workdir/tensorboard/` holds the event files (`tensorboard --logdir workdir/tensorboard`) and
`workdir/metrics.jsonl` one JSON object per write, `{"step": s, "<name>": value, ...}`. Only the lead
process writes; the others get a writer that does nothing, so calling code needs no branching.

A run resumed from a checkpoint at step s re-runs the steps after s, so the writer first drops what an
interrupted run logged after s: the lines of `metrics.jsonl` with a larger step (and a torn last line)
are removed, and TensorBoard is told to purge its events from step s + 1 on (`purge_step`). Each step
is then logged once, as in an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import tensorboardX


class MetricWriter:
  """Writes scalar summaries of one run.

  Args:
    workdir: the run's folder.
    enabled: False on non-lead processes (every call becomes a no-op).
    start_step: the step training (re)starts from; what was logged after it is dropped.
  """

  def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
    self._enabled = enabled
    if enabled:
      path = os.path.join(workdir, 'metrics.jsonl')
      _drop_lines_after(path, start_step)
      self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'),
                                                     purge_step=start_step + 1)
      self._jsonl = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Records `scalars` (name -> number) at training step `step`."""
    if not self._enabled:
      return
    values = {name: float(value) for name, value in scalars.items()}
    for name, value in values.items():
      self._tensorboard.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({'step': step, **values}) + '\n')
    self.flush()

  def flush(self) -> None:
    if self._enabled:
      self._tensorboard.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._enabled:
      self._tensorboard.close()
      self._jsonl.close()


def _drop_lines_after(path: str, step: int) -> None:
  """Rewrites the JSON-lines file `path` (if any) without its entries for steps after `step`.

  A line that does not parse (the torn last line of a killed process) is dropped too. The new file
  replaces the old one atomically, so an interruption here loses nothing.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:
        continue
      if entry.get('step', 0) <= step:
        kept.append(line if line.endswith('\n') else line + '\n')
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(tmp, path)
