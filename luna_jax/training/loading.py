"""Loading a trained run for generation or evaluation: `load_run(workdir)`.

    run = load_run('runs/sort')                       # the newest intact checkpoint
    tokens = generation.greedy_decode(run.model, run.params, inputs, lengths, max_length=16,
                                      eos_id=257)
    run = load_run('runs/quickstart', checkpoint='best')  # the best validation parameters

The model is rebuilt from the run's stored config and the data sizes saved with its checkpoints
(`trainer.model_inputs`; for checkpoints saved before those were recorded, the run's data is loaded
again to get them), and the parameters are read verified (`checkpointing.read_checkpoint`), without
changing anything in the workdir.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any

import flax
import jax
import ml_collections

import luna_jax
from luna_jax.config_utils import ConfigError
from luna_jax.training import checkpointing, run_config, self_pretraining, trainer

#: `load_run`'s choices of parameters.
CHECKPOINTS = ('latest', 'best')


class LoadRunError(ConfigError):
  """`load_run` found no usable run (the message names the workdir and what is missing)."""


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  """A trained run, ready for `model.apply({'params': params}, ...)` or `generation`.

  Attributes:
    model: the Flax module (`luna_jax.build_model` of the run's config).
    params: its parameters (nested dicts of jax arrays, float32 as trained).
    config: the run's resolved config (nested dicts, as in `config.json`).
    step: the training step of the parameters.
    checkpoint: the checkpoint folder they were read from.
    vocabulary: the name of the vocabulary the run was trained on (`lra.vocabulary`); inputs must
      be tokenised with it.
  """

  model: flax.linen.Module
  params: Any
  config: dict[str, Any]
  step: int
  checkpoint: str
  vocabulary: str


def load_run(workdir: str, *, checkpoint: str = 'latest') -> LoadedRun:
  """The model and trained parameters of the run in `workdir`.

  Args:
    workdir: the run's `--workdir` (of `train.py`); for a self-pretraining run, its `finetune`
      (or `pretrain`) stage folder. Or one checkpoint folder of a run, `<workdir>/checkpoints/
      <step>` or `<workdir>/averaged/<step>` (`average_checkpoints`), read as it is.
    checkpoint: 'latest' (the newest intact training checkpoint: the final parameters of a
      finished run; of a checkpoint folder, that folder) or 'best' (the parameters with the best
      validation accuracy; a workdir only).

  Returns:
    The loaded run.

  Raises:
    LoadRunError: an unknown `checkpoint`, 'best' of a checkpoint folder, a workdir without an
      intact checkpoint (damaged ones are named), a self-pretraining run's top folder (naming its
      stage folders), a converted release (`convert_fairseq`'s output, for `init_from`), or a
      saved config that builds no model here (e.g. its attention is no longer registered).
    lra.DataError: the checkpoints predate the recorded data sizes and the run's data is gone.
  """
  if checkpoint not in CHECKPOINTS:
    raise LoadRunError(f'checkpoint={checkpoint!r}: must be one of {CHECKPOINTS}.')
  folder = os.path.normpath(os.path.abspath(os.path.expanduser(workdir)))
  parent = os.path.basename(os.path.dirname(folder))
  if (
    checkpoint == 'best'
    and os.path.basename(folder).isdigit()
    and parent in (checkpointing.CHECKPOINTS_DIR, checkpointing.AVERAGED_DIR)
    and not os.path.isdir(os.path.join(folder, checkpointing.CHECKPOINTS_DIR))
  ):
    raise LoadRunError(
      f"checkpoint='best' reads a run's {checkpointing.BEST_DIR}/ folder, and {workdir} is one "
      f'checkpoint folder: give load_run its workdir, {os.path.dirname(os.path.dirname(folder))}.'
    )
  stages = self_pretraining.stages_instead(workdir, 'load')
  if stages:
    raise LoadRunError(stages)
  try:
    tree, record, latest = checkpointing.read_checkpoint(workdir)
    if checkpoint == 'best':
      tree, _, path = checkpointing.read_checkpoint(workdir, checkpointing.BEST_DIR)
    else:
      path = latest
  except FileNotFoundError as e:
    raise LoadRunError(f'load_run({workdir!r}): {e}') from None
  if 'converted_from' in record:
    raise LoadRunError(
      f"{workdir} holds a conversion of the authors' released weights "
      '(luna_jax.training.convert_fairseq), not a training run: finetune from it with '
      f'{shlex.quote(f"--config.init_from={workdir}")}.'
    )
  config = run_config.upgrade_stored_config(record['config'])
  if 'model_inputs' in record:
    inputs = record['model_inputs']
  else:
    run = run_config.parse_config(ml_collections.ConfigDict(config))
    inputs = trainer.model_inputs(trainer.load_data(run))
  try:
    model = luna_jax.build_model(config['model'], **inputs)
  except ConfigError as e:
    raise LoadRunError(
      f'{path}: the config saved with it builds no model here: {e} An attention registered from '
      "one's own code (luna_jax.model.registry) is registered again before load_run."
    ) from None
  return LoadedRun(
    model=model,
    params=jax.tree.map(jax.numpy.asarray, tree['params']),
    config=config,
    step=int(os.path.basename(path)),
    checkpoint=path,
    vocabulary=record['vocabulary'],
  )
