"""The run configuration: the experiment config's sections as checked, typed dataclasses.

`parse_config(config)` checks every key and value of an `ml_collections` experiment config once
(names, types, ranges, choices; `configs/base.py` documents every field), applies `debug`, and
returns a `RunConfig`; `config_changes` lists what differs between a stored and a new config, which
decides whether a workdir's run may be resumed (`RESCHEDULE_KEYS` may change).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

import corpora
import lra
from luna_jax import config_utils
from luna_jax.config_utils import spec
from luna_jax.model.config import MLM_SUFFIX, check_model_config, upgrade_model_config
from luna_jax.training import optim

#: Top-level config keys.
CONFIG_KEYS = (
  'seed',
  'debug',
  'init_from',
  'data',
  'model',
  'optimizer',
  'training',
  'self_pretraining',
  'decoding',
)
#: `config.training` keys that may change when a run is resumed: they extend or re-schedule it, or
#: change its speed alone (prefetch_batches; gradient_accumulation_steps, whose updates equal the
#: unsplit batch's up to float rounding and dropout masks).
RESCHEDULE_KEYS = (
  'num_train_steps',
  'eval_every',
  'log_every',
  'checkpoint_every',
  'num_eval_batches',
  'keep_checkpoints',
  'prefetch_batches',
  'gradient_accumulation_steps',
)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The `config.data` section, checked (see configs/base.py for what each field means)."""

  task: str = spec(choices=(*lra.TASKS, *corpora.TASKS))
  data_dir: str = spec()
  options: dict = spec()


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """The `config.training` section, checked (see configs/base.py for what each field means)."""

  batch_size: int = spec(minimum=1)
  eval_batch_size: int = spec(minimum=0)
  num_train_steps: int = spec(minimum=1)
  eval_every: int = spec(minimum=1)
  num_eval_batches: int = spec(minimum=1, also=(-1,))
  log_every: int = spec(minimum=1)
  checkpoint_every: int = spec(minimum=1)
  keep_checkpoints: int = spec(minimum=1)
  num_devices: int = spec(minimum=1, also=(-1,))
  distributed: bool = spec()
  label_smoothing: float = spec(minimum=0.0, below=1.0)
  prefetch_batches: int = spec(minimum=0)
  gradient_accumulation_steps: int = spec(minimum=1)


@dataclasses.dataclass(frozen=True)
class SelfPretrainingConfig:
  """The `config.self_pretraining` section, checked (see configs/base.py and
  `luna_jax.training.self_pretraining`)."""

  num_train_steps: int = spec(minimum=0, also=(-1,))


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
  """The `config.decoding` section, checked (see configs/base.py): beam search of the data that is
  scored by BLEU (`corpora.translation`; `luna_jax.training.translation`)."""

  beam_size: int = spec(minimum=1)
  length_penalty: float = spec(minimum=0.0)
  max_len_a: float = spec(minimum=0.0)
  max_len_b: int = spec(minimum=0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The whole experiment config, parsed once and checked (`parse_config`); what the trainer uses.

  `model` stays a mapping (checked by `luna_jax.model.config.check_model_config`):
  `luna_jax.build_model` turns it into the typed `ModelConfig` and head settings.
  """

  seed: int = spec(minimum=0)
  debug: bool = spec()
  init_from: str = spec()
  data: DataConfig = spec()
  model: dict = spec()
  optimizer: optim.OptimizerConfig = spec()
  training: TrainingConfig = spec()
  self_pretraining: SelfPretrainingConfig = spec()
  decoding: DecodingConfig = spec()

  def to_dict(self) -> dict[str, Any]:
    """The config as plain JSON-able nested dicts (what config.json and checkpoints store)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


def apply_debug(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A smoke-test version of `config`: one small layer, batch 8, 5 steps, capped evaluation.

  The data and the model family (Luna/Transformer, pooling, head) are unchanged, and so is Luna's
  projection length, which names the variant (a debug sweep's rows are Luna-16, Luna-256, ...).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.update(num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64, classifier_hidden_dim=32)
  if config.model.get('qkv_dim') is not None:
    config.model.qkv_dim = 32
  if config.model.get('num_pack_heads') is not None:
    config.model.num_pack_heads = 2
  config.optimizer.warmup_steps = min(config.optimizer.get('warmup_steps', 2), 2)
  config.training.update(
    batch_size=8,
    eval_batch_size=8,
    num_train_steps=5,
    eval_every=5,
    num_eval_batches=2,
    log_every=1,
    checkpoint_every=5,
  )
  return config


def replaced_by_debug(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> str:
  """What debug (applied when the config is parsed, after the command line) replaces of the
  command line's overrides, for a warning; '' when nothing (or debug is off).

  Args:
    config: the config, overrides applied.
    overrides: the overridden fields, dotted names relative to `config` ('training.batch_size')
      -> values (`ml_collections.config_flags.get_override_values`).

  Returns:
    A sentence naming each replaced override with its value and debug's.

  Raises:
    config_utils.ConfigError: a value `parse_config` refuses (before any warning about it).
  """
  if config.debug is not True:
    return ''
  parse_config(config)
  debugged = apply_debug(config)

  def value(tree: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split('.'):
      tree = tree[part]
    return tree

  replaced = [
    f'--config.{key}={overrides[key]!r} (debug sets {value(debugged, key)!r})'
    for key in sorted(overrides)
    if value(debugged, key) != value(config, key)
  ]
  if not replaced:
    return ''
  return (
    'debug (a config argument ending in ",debug", or --config.debug=True) shrinks the run to a '
    'smoke test and replaces ' + ', '.join(replaced) + '; drop debug to set them.'
  )


#: The sections of a run config, by name, and where they are (`check_sections`).
_SECTIONS = {
  name: tuple(name.split('.'))
  for name in (
    'data',
    'data.options',
    'model',
    'optimizer',
    'training',
    'self_pretraining',
    'decoding',
  )
}


def check_sections(config: ml_collections.ConfigDict) -> None:
  """Refuses a config without its keys, or whose sections are not sections (a config file may
  set one to a value, e.g. `config.model = None`), before anything reads a field of them.

  Raises:
    config_utils.ConfigError: naming the unknown or missing keys, or the section and its value.
  """
  config_utils.check_keys(config, CONFIG_KEYS, 'config')
  for name, section in _SECTIONS.items():
    value = functools.reduce(lambda tree, key: tree[key], section, config)
    if not isinstance(value, (ml_collections.ConfigDict, dict)):
      raise config_utils.ConfigError(
        f'config.{name}={value!r}: must be a section of fields (configs/base.py sets it), not a '
        f'{type(value).__name__}.'
      )


def parse_config(config: ml_collections.ConfigDict) -> RunConfig:
  """Checks every key and value of `config` once, applies `debug`, and returns the typed sections.

  Raises:
    config_utils.ConfigError: an unknown or missing key, a value of the wrong type or out of its
      range (an interval or size < 1, a rate outside [0, 1), an unknown choice or dtype name), a
      NaN or infinite float anywhere, naming `config.<section>.<key>`, the value and what is
      allowed.
  """
  check_sections(config)
  non_finite = config_utils.non_finite_values(config.to_dict())
  if non_finite:
    raise config_utils.ConfigError(
      f'{non_finite[0]}: must be a finite number (NaN and infinities are never a setting).'
    )
  if config.debug is True:
    # The values as given are checked too, not only what debug puts in their place.
    as_given = ml_collections.ConfigDict(config.to_dict())
    as_given.debug = False
    parse_config(as_given)
    config = apply_debug(config)
  check_model_config(config.model)
  sections = {
    'data': config_utils.parse_section(DataConfig, config.data.to_dict(), 'config.data'),
    'model': config.model.to_dict(),
    'optimizer': optim.OptimizerConfig.from_mapping(config.optimizer),
    'training': config_utils.parse_section(TrainingConfig, config.training, 'config.training'),
    'self_pretraining': config_utils.parse_section(
      SelfPretrainingConfig, config.self_pretraining, 'config.self_pretraining'
    ),
    'decoding': config_utils.parse_section(DecodingConfig, config.decoding, 'config.decoding'),
  }
  check_model_fits_task(sections['model'].get('name', 'luna'), sections['data'].task)
  return config_utils.parse_section(RunConfig, {**config, **sections}, 'config')


#: The tasks each kind of model trains on (the masked LMs train on any task's inputs but the
#: token-level tasks', `lra.unlabelled`).
_MODEL_TASKS = {
  'luna_lm': ('lm',),
  'luna_seq2seq': ('seq2seq', 'translation'),
  'transformer_seq2seq': ('seq2seq', 'translation'),
  'luna': (*lra.TASKS, 'glue'),
  'transformer': (*lra.TASKS, 'glue'),
}


def check_model_fits_task(model: str, task: str) -> None:
  """Refuses a model that cannot train on a task (a classifier on a language-modelling corpus,
  a language model on a classification task, ...) before any data is loaded.

  Raises:
    config_utils.ConfigError: naming both and the tasks the model trains on.
  """
  if model.endswith(MLM_SUFFIX):
    allowed = tuple(t for t in (*lra.TASKS, *corpora.TASKS) if t not in corpora.TOKEN_TASKS)
  else:
    allowed = _MODEL_TASKS.get(model, ())
  if allowed and task not in allowed:
    raise config_utils.ConfigError(
      f'config.model.name={model!r} cannot train on config.data.task={task!r}: it trains on '
      f'{list(allowed)}. Choose a model for the task (configs/<task>.py sets one).'
    )


def require_data_dir(data: DataConfig) -> None:
  """Refuses an unset `config.data.data_dir` before a run (it would mean the working directory).

  `parse_config` accepts it, so that a config file can leave the folder to the command line.

  Raises:
    config_utils.ConfigError: `data.data_dir` is empty, naming the flag and how to get the task's
      data.
  """
  if data.data_dir.strip():
    return
  if data.task in lra.TASKS:
    source = lra.data_source(data.task, data.options.get('difficulty', 'hard'))
  else:
    source = corpora.data_source(data.task)
  raise config_utils.ConfigError(
    f'config.data.data_dir is not set: pass --config.data.data_dir=DIR, the folder of the '
    f'{data.task} data (never the working directory by default). {source}'
  )


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` checked (`parse_config`) and with `debug` applied, as a new ConfigDict."""
  return ml_collections.ConfigDict(parse_config(config).to_dict())


#: The keys added to config sections since runs first stored their config, with the values that
#: reproduce what those runs did (`upgrade_stored_config`).
ADDED_KEYS = {
  'optimizer': {
    'name': 'adamw',
    'weight_decay_type': None,
    'rebound': 'constant',
    'grad_clip_mode': 'global',
    'warmup_init_learning_rate': 0.0,
    'milestones': [],
    'decay_rate': 0.1,
  },
  'training': {'gradient_accumulation_steps': 1},
}


def upgrade_stored_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """A stored run config (`config.json`, a checkpoint's record) in today's keys: the model's
  (`luna_jax.model.config.upgrade_model_config`) and the keys of ADDED_KEYS, so that runs stored
  before they existed resume and load."""
  upgraded = dict(config)
  if 'model' in config:
    upgraded['model'] = upgrade_model_config(config['model'])
  for section, added in ADDED_KEYS.items():
    if section in config:
      upgraded[section] = {**added, **config[section]}
  return upgraded


def config_changes(
  stored: Mapping[str, Any],
  new: Mapping[str, Any],
  prefix: str = '',
  real_paths: Mapping[str, str] | None = None,
) -> list[str]:
  """The settings that differ between two config dicts, as 'key: stored -> new' lines.

  Keys of `config.training` in RESCHEDULE_KEYS, `training.num_devices` and `training.distributed`
  (a device-count change is handled separately) and the `decoding` section (it only changes the
  final evaluation) are not compared. A changed folder ('data.data_dir', 'init_from') whose real
  path `real_paths` records (a checkpoint's record: by 'data_dir', 'init_from') is named with it,
  and the new one with its own: a relative spelling alone does not say which folder it meant.
  """
  real_paths = real_paths or {}
  changes = []
  for key in sorted(set(stored) | set(new)):
    name = f'{prefix}{key}'
    devices = ('num_devices', 'distributed')
    if name in {f'training.{k}' for k in (*RESCHEDULE_KEYS, *devices)} | {'decoding'}:
      continue
    old_value, new_value = stored.get(key, '(absent)'), new.get(key, '(absent)')
    if isinstance(old_value, Mapping) and isinstance(new_value, Mapping):
      changes += config_changes(old_value, new_value, f'{name}.', real_paths)
    elif old_value != new_value:
      old_text, new_text = repr(old_value), repr(new_value)
      recorded = real_paths.get(_FOLDER_KEYS.get(name, ''))
      if recorded and isinstance(new_value, str):
        old_text, new_text = _folder(old_value, recorded), _folder(new_value, real_path(new_value))
      changes.append(f'{name}: {old_text} -> {new_text}')
  return changes


#: The config's folders, by the name their real path is recorded under (a checkpoint's
#: 'real_paths').
_FOLDER_KEYS = {'data.data_dir': 'data_dir', 'init_from': 'init_from'}


def _folder(spelling: str, path: str) -> str:
  """A folder as a config spells it, with its real path where that reads otherwise."""
  return repr(spelling) if spelling == path else f'{spelling!r} (the folder {path})'


def real_path(path: str) -> str:
  """`path` with `~` expanded and every symlink resolved, absolute (relative to the working
  directory): how the folders of a config are compared and recorded."""
  return os.path.realpath(os.path.expanduser(path))


def paths_as_stored(
  new: dict[str, Any], stored: Mapping[str, Any], real_paths: Mapping[str, str] | None = None
) -> dict[str, Any]:
  """The config dict `new` with `data.data_dir` and `init_from` written as `stored` writes them
  where they name the same folder, so that configs are compared by folders, not spellings.

  Args:
    new: a config as nested dicts (`RunConfig.to_dict()`).
    stored: the config it is compared with.
    real_paths: the real paths of `stored`'s folders when they were used (a checkpoint's record:
      'data_dir', 'init_from'); where one is given it alone decides, so that a relative path
      given from another working directory counts and a repointed symlink does not.
  """
  new = dict(new)
  real_paths = real_paths or {}

  def same(key: str, stored_path: str, new_path: str) -> bool:
    recorded = real_paths.get(key)
    # A `~` spelling recorded before `~` was expanded (as `<cwd>/~/...`): compare spellings.
    if recorded is None or stored_path.startswith('~') and f'{os.sep}~' in recorded:
      recorded = real_path(stored_path)
    return recorded == real_path(new_path)

  def as_stored(key: str, stored_path: str, new_path: str) -> str:
    if same(key, stored_path, new_path):
      return stored_path
    # The same spelling, another folder from here: its real path shows the difference.
    return real_path(new_path) if new_path == stored_path else new_path

  sources = stored.get('init_from'), new.get('init_from')
  if all(sources):
    new['init_from'] = as_stored('init_from', *sources)
  stored_dir, new_dir = (config.get('data', {}).get('data_dir') for config in (stored, new))
  if None not in (stored_dir, new_dir):
    new['data'] = {**new['data'], 'data_dir': as_stored('data_dir', stored_dir, new_dir)}
  return new


class ConfigChangedError(config_utils.ConfigError):
  """A workdir's run is resumed with settings other than those it was trained with."""
