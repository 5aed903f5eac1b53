"""Self-pretraining: masked-LM pretraining on a task's own training inputs, then finetuning.

Amos, Berant and Gupta ("Never Train from Scratch", ICLR 2024) pretrain each LRA model with a
denoising objective on the task's training inputs alone (no labels, no other data) before training
it on the task. `config.self_pretraining.num_train_steps` > 0 (or the `spt` flag of a task config)
turns one run into two stages in one workdir:

  <workdir>/pretrain   the same encoder with a tied LM head ('<encoder>_mlm'), trained with the
                       masked-LM objective (`luna_jax.model.mlm`) on the task's inputs
                       (`lra.unlabelled`) for `self_pretraining.num_train_steps` steps, same
                       optimizer and batch;
  <workdir>/finetune   the task's classifier, its encoder initialised from the pretrain stage
                       (`init_from`), trained as configured.

Each stage is an ordinary run (resumable, verified checkpoints, its own results.json); a stage whose
results.json records its last step is skipped, so the command run again resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from luna_jax.config_utils import ConfigError
from luna_jax.model.config import ENCODER_NAMES, MLM_SUFFIX
from luna_jax.training.checkpointing import CHECKPOINTS_DIR

PRETRAIN_DIR = 'pretrain'
FINETUNE_DIR = 'finetune'


def stages_instead(workdir: str, verb: str) -> str | None:
  """Where `workdir` is a self-pretraining run's top folder (a stage folder, no checkpoints of its
  own), the sentence naming its stages for a command that wants one run (`verb`: what to do with
  one); None for any other folder."""
  stages = [os.path.join(workdir, stage) for stage in (FINETUNE_DIR, PRETRAIN_DIR)]
  if os.path.isdir(os.path.join(workdir, CHECKPOINTS_DIR)) or not any(map(os.path.isdir, stages)):
    return None
  return (
    f'{workdir} is a self-pretraining run: {verb} one of its stages, {stages[0]} (the '
    f'classifier) or {stages[1]} (the masked LM).'
  )


def num_pretraining_steps(config: ml_collections.ConfigDict) -> int:
  """The self-pretraining steps of `config` (-1 resolved to training.num_train_steps)."""
  steps = config.self_pretraining.num_train_steps
  return config.training.num_train_steps if steps == -1 else steps


def stage_configs(
  config: ml_collections.ConfigDict, workdir: str
) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The (workdir, config) of each stage of a self-pretraining run.

  Args:
    config: a config with self-pretraining steps (> 0 or -1) and a classifier model.
    workdir: the run's folder.

  Returns:
    [(<workdir>/pretrain, masked-LM config), (<workdir>/finetune, classifier config)]; neither has
    a self-pretraining stage of its own. The pretrain stage starts from `config.init_from` if set;
    the finetune stage's `init_from` is the pretrain folder's absolute path.

  Raises:
    ConfigError: the model is not one of the encoder classifiers.
  """
  if config.model.name not in ENCODER_NAMES:
    raise ConfigError(
      f'config.self_pretraining needs an encoder classifier '
      f'({sorted(ENCODER_NAMES)}), not config.model.name={config.model.name!r}.'
    )
  pretrain_dir = os.path.join(workdir, PRETRAIN_DIR)
  pretrain = ml_collections.ConfigDict(config.to_dict())
  pretrain.model.name = config.model.name + MLM_SUFFIX
  pretrain.training.num_train_steps = num_pretraining_steps(config)
  pretrain.self_pretraining.num_train_steps = 0
  finetune = ml_collections.ConfigDict(config.to_dict())
  finetune.self_pretraining.num_train_steps = 0
  # Absolute, so that a resume names the same source however the workdir is then spelt.
  finetune.init_from = os.path.abspath(pretrain_dir)
  return [(pretrain_dir, pretrain), (os.path.join(workdir, FINETUNE_DIR), finetune)]


def stage_results(workdir: str) -> dict[str, Any] | None:
  """The results.json of a stage that ended (at its 'step' then), else None. A stage is finished
  when that step is its `num_train_steps`; one trained past it is resumed, and refused there (a
  run is never shortened).

  Raises:
    ConfigError: a results.json that is no run's results (hand-edited, another program's: the
      trainer writes it atomically), naming it.
  """
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
    if not isinstance(results.get('step'), int):
      raise ValueError('no integer step')
  except (ValueError, AttributeError) as e:
    raise ConfigError(
      f'{path} is not the results of a stage ({type(e).__name__}: {e}): remove it, and the '
      'stage is evaluated again from its checkpoint.'
    ) from None
  return results
