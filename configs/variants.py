"""The model variants: one table for the task configs, the speed/memory benchmark and the report.

A variant is a name (`configs/<task>.py:<name>`, `benchmarks.speed_memory --models <name>`, the rows
of `benchmarks.report`'s leaderboard) with the `config.model` settings that make it (the rest of the
model is the task's recipe), its display label and its row of the Luna paper's Table 1 (Ma et al.,
NeurIPS 2021; the baselines' numbers there are Tay et al., 2021's) or Table 3. Adding a variant is
one entry of `VARIANTS`. Besides the entries, the benchmark takes any Luna projection length:
'luna<l>', 'luna<l>_tied' (K/V tied inside pack and unpack), 'luna<l>_noncontextual' (a learned P
per layer, Table 5) and 'luna<l>_pmean' (the sequence read as the mean of the last layer's P instead
of the CLS vector, Table 3).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

#: The LRA tasks of Table 1 (`config.data.task` names) in its column order, and their titles.
TABLE1_TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder32')
TABLE1_TITLES = ('ListOps', 'Text', 'Retrieval', 'Image', 'Pathfinder')
#: The tasks of Table 3 (the pooling ablation: [CLS] against the mean of the last layer's P).
TABLE3_TASKS = ('listops', 'text', 'retrieval')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One model variant.

  Attributes:
    label: display name in tables and plots.
    model: the `config.model` settings that make the variant.
    table1: the paper's Table 1 test accuracies (%) in `TABLE1_TASKS` order, or None.
    task_configs: whether the task configs take it as their argument (else only the benchmark).
    table3: the paper's Table 3 test accuracies (%) in `TABLE3_TASKS` order, for the P-pooling rows
      (Table 3's [CLS] rows are Table 1's), or None.
  """

  label: str
  model: Mapping[str, Any]
  table1: tuple[float, ...] | None = None
  task_configs: bool = True
  table3: tuple[float, ...] | None = None


def _transformer(
  label: str, attention: str, table1: tuple[float, ...] | None = None, task_configs: bool = True
) -> Variant:
  """The LRA Transformer with `attention` (`config.model.attention_implementation`)."""
  return Variant(
    label, {'name': 'transformer', 'attention_implementation': attention}, table1, task_configs
  )


#: Luna variant suffixes -> (label suffix, `config.model` settings).
_LUNA_KINDS = {
  '': ('', {}),
  '_tied': (' (tied kv)', {'tie_kv': True}),
  '_noncontextual': (' (non-contextual P)', {'contextual_p': False}),
  # Table 3: "we extract P at the last layer and employ the mean pooling strategy over positions"
  # (no CLS vector; `luna_jax.model.classifiers.pool`, pooling 'p').
  '_pmean': (' (P-mean)', {'pooling': 'p'}),
}
_LUNA_NAME = re.compile(r'luna(\d+)(_tied|_noncontextual|_pmean)?')


def _luna(
  projection_length: int,
  kind: str = '',
  table1: tuple[float, ...] | None = None,
  task_configs: bool = True,
  table3: tuple[float, ...] | None = None,
) -> Variant:
  """Luna with projection length l (the length of P) and the settings of `kind` (`_LUNA_KINDS`)."""
  label, settings = _LUNA_KINDS[kind]
  model = {
    'name': 'luna',
    'projection_length': projection_length,
    'contextual_p': True,
    'tie_kv': False,
    **settings,
  }
  return Variant(f'Luna-{projection_length}{label}', model, table1, task_configs, table3)


#: Every named variant, in the order of the leaderboard's rows.
VARIANTS: dict[str, Variant] = {
  'transformer': _transformer('Transformer', 'softmax', (36.37, 64.27, 57.46, 42.44, 71.40)),
  # The same function through `jax.nn.dot_product_attention` (a benchmark model).
  'transformer_fused': _transformer('Transformer (fused)', 'fused', task_configs=False),
  'linformer': _transformer('Linformer', 'linformer', (35.70, 53.94, 52.27, 38.56, 76.34)),
  'linear_transformer': _transformer(
    'Linear Trans.', 'linear', (16.13, 65.90, 53.09, 42.34, 75.30)
  ),
  'performer': _transformer('Performer', 'performer', (18.01, 65.40, 53.82, 42.77, 77.05)),
  'luna16': _luna(16, table1=(37.43, 65.74, 79.38, 46.39, 78.36)),
  'luna128': _luna(128, table1=(38.01, 65.74, 79.55, 47.47, 78.89)),
  'luna256': _luna(256, table1=(37.98, 65.78, 79.56, 47.86, 78.55)),
  'luna16_noncontextual': _luna(16, '_noncontextual'),
  'luna16_pmean': _luna(16, '_pmean', table3=(38.06, 65.81, 80.22)),
}
#: The arguments of the task configs (`configs/<task>.py:<variant>`).
CONFIG_VARIANTS = tuple(name for name, variant in VARIANTS.items() if variant.task_configs)
#: `config.model` defaults (configs/base.py) of the settings variants differ in.
_DEFAULTS = {
  'attention_implementation': 'softmax',
  'luna_attention_implementation': 'luna',
  'contextual_p': True,
  'tie_kv': False,
  'pooling': 'cls',
}


def get(name: str) -> Variant:
  """The variant called `name`: an entry of `VARIANTS` or 'luna<l>[_tied|_noncontextual|_pmean]'.

  Raises:
    ValueError: an unknown name, listing the known ones.
  """
  if name in VARIANTS:
    return VARIANTS[name]
  match = _LUNA_NAME.fullmatch(name)
  if match:
    return _luna(int(match.group(1)), match.group(2) or '', task_configs=False)
  raise ValueError(
    f"unknown model {name!r}: use {', '.join(map(repr, VARIANTS))}, 'luna<l>', "
    "'luna<l>_tied', 'luna<l>_noncontextual' or 'luna<l>_pmean'."
  )


def label(name: str) -> str:
  """The display label of variant `name` ('Luna-16', 'Luna-64 (tied kv)'), or `name` if unknown."""
  try:
    return get(name).label
  except ValueError:
    return name


def variant_of(model_config: Mapping[str, Any]) -> str:
  """The variant of a stored `config.model`, e.g. 'luna16', 'performer', 'luna16_pmean'.

  Luna: 'luna<l>' with the first of '_tied', '_noncontextual', '_pmean' that its settings have (the
  names of the task-config variants, whose settings are these). Others: the first task-config
  variant whose settings it has (the fused softmax kernel counts as softmax, the same function),
  else the model name. An attention of one's own (registered beside the project's,
  `luna_jax.model.registry`) is named after its model, never as a variant's row:
  'transformer_<attention>', 'luna<l>_<attention>'. Absent keys take the base config's defaults.
  """
  settings = {**_DEFAULTS, **model_config}
  if settings['name'] == 'luna':
    kinds = [kind for kind, (_, values) in _LUNA_KINDS.items() if kind and _has(settings, values)]
    attention = settings['luna_attention_implementation']
    own = '' if attention == _DEFAULTS['luna_attention_implementation'] else f'_{attention}'
    return f'luna{settings["projection_length"]}{(kinds or [""])[0]}{own}'
  if settings['attention_implementation'] == 'fused':
    settings['attention_implementation'] = 'softmax'
  for name in CONFIG_VARIANTS:
    if _has(settings, VARIANTS[name].model):
      return name
  if settings['name'] == 'transformer':  # Every attention of the project's is a variant.
    return f'transformer_{settings["attention_implementation"]}'
  return settings['name']


def _has(settings: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
  return all(settings.get(key) == value for key, value in values.items())
