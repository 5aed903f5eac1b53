"""Scalar metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines file.

`workdir/tensorboard/` holds the event files (`tensorboard --logdir workdir/tensorboard`) and
`workdir/metrics.jsonl` one JSON object per write, `{"step": s, "<name>": value, ...}`. Only the lead
process writes; the others get a writer that does nothing, so calling code needs no branching.
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
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if enabled:
      self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')

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
