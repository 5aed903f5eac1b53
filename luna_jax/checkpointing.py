"""Orbax checkpoints of a training run: the latest N train states and the best parameters.

  workdir/checkpoints/<step>/   full TrainState (step, params, optimizer state, rng), the last
                                `keep` periodic/final saves
  workdir/best/<step>/          {'params'} of the best validation accuracy so far

Orbax writes each checkpoint into a temporary folder and renames it once complete, so an interrupted
save never leaves a checkpoint that `latest_step` would pick up (unfinished temporaries are removed
on the next start). The data position needs no saving: training batch k is a pure function of the
data seed and k, and k is the restored step.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores the train state and the best parameters of one workdir.

  Args:
    workdir: the run's folder.
    keep: how many periodic/final checkpoints to keep.
  """

  def __init__(self, workdir: str, keep: int):
    common = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)
    self._latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common))
    self._best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics['accuracy'], best_mode='max',
            keep_checkpoints_without_metrics=False, **common))

  @property
  def directory(self) -> str:
    return str(self._latest.directory)

  def latest_step(self) -> Optional[int]:
    """The step of the newest complete train-state checkpoint, or None."""
    return self._latest.latest_step()

  def restore_latest(self, target: Any) -> Any:
    """Restores the newest train state into the structure, shapes and dtypes of `target`.

    Returns `target` itself when there is no checkpoint yet.
    """
    step = self._latest.latest_step()
    if step is None:
      return target
    return self._latest.restore(step, args=ocp.args.StandardRestore(jax.device_get(target)))

  def save(self, step: int, state: Any) -> None:
    """Saves the (host-local, unreplicated) train state as checkpoint `step`."""
    if self._latest.latest_step() != step:
      self._latest.save(step, args=ocp.args.StandardSave(jax.device_get(state)), force=True)

  def save_if_best(self, step: int, params: Any, accuracy: float) -> None:
    """Offers `params` with validation `accuracy`; only the best one is kept."""
    if step not in self._best.all_steps():
      self._best.save(step, args=ocp.args.StandardSave({'params': jax.device_get(params)}),
                      metrics={'accuracy': float(accuracy)}, force=True)

  def best_step(self) -> Optional[int]:
    """The step of the best checkpoint so far, or None."""
    return self._best.best_step()

  def restore_best_params(self, target_params: Any) -> Any:
    """Restores the best parameters into the structure of `target_params`."""
    restored = self._best.restore(
        self._best.best_step(),
        args=ocp.args.StandardRestore({'params': jax.device_get(target_params)}))
    return restored['params']

  def close(self) -> None:
    self._latest.close()
    self._best.close()
