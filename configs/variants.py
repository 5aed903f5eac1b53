"""The model variants: one table for the task configs, the speed/memory benchmark and the report.

A variant is a name (`configs/<task>.py:<name>`, `benchmarks.speed_memory --models <name>`, the rows
of `benchmarks.report`'s leaderboard) with the `config.model` settings that make it (the rest of the
model is the task's recipe), its display label and its row of the Luna paper's Table 1 (Ma et al.,
NeurIPS 2021; the baselines' numbers there are Tay et al., 2021's). Adding a variant is one entry of
`VARIANTS`. Besides the entries, the benchmark takes any Luna projection length: 'luna<l>',
'luna<l>_tied' (K/V tied inside pack and unpack) and 'luna<l>_noncontextual' (a learned P per
layer, Table 5).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

#: The LRA tasks of Table 1 (`config.data.task` names) in its column order, and their titles.
TABLE1_TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder32')
TABLE1_TITLES = ('ListOps', 'Text', 'Retrieval', 'Image', 'Pathfinder')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One model variant.

  Attributes:
    label: display name in tables and plots.
    model: the `config.model` settings that make the variant.
    table1: the paper's Table 1 test accuracies (%) in `TABLE1_TASKS` order, or None.
    task_configs: whether the task configs take it as their argument (else only the benchmark).
  """

  label: str
  model: Mapping[str, Any]
  table1: tuple[float, ...] | None = None
  task_configs: bool = True


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
}
_LUNA_NAME = re.compile(r'luna(\d+)(_tied|_noncontextual)?')


def _luna(
  projection_length: int,
  kind: str = '',
  table1: tuple[float, ...] | None = None,
  task_configs: bool = True,
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
  return Variant(f'Luna-{projection_length}{label}', model, table1, task_configs)


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
}
#: The arguments of the task configs (`configs/<task>.py:<variant>`).
CONFIG_VARIANTS = tuple(name for name, variant in VARIANTS.items() if variant.task_configs)
#: `config.model` defaults (configs/base.py) of the settings variants differ in.
_DEFAULTS = {'attention_implementation': 'softmax', 'contextual_p': True, 'tie_kv': False}


def get(name: str) -> Variant:
  """The variant called `name`: an entry of `VARIANTS` or 'luna<l>[_tied|_noncontextual]'.

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
    "'luna<l>_tied' or 'luna<l>_noncontextual'."
  )


def label(name: str) -> str:
  """The display label of variant `name` ('Luna-16', 'Luna-64 (tied kv)'), or `name` if unknown."""
  try:
    return get(name).label
  except ValueError:
    return name


def variant_of(model_config: Mapping[str, Any]) -> str:
  """The variant of a stored `config.model`, e.g. 'luna16', 'performer'.

  The first task-config variant whose settings it has (absent keys take the base config's
  defaults; the fused softmax kernel counts as softmax, the same function), else
  'luna<l>[_tied|_noncontextual]' for Luna, else the model name.
  """
  settings = {**_DEFAULTS, **model_config}
  if settings['attention_implementation'] == 'fused':
    settings['attention_implementation'] = 'softmax'
  for name in CONFIG_VARIANTS:
    if all(settings.get(key) == value for key, value in VARIANTS[name].model.items()):
      return name
  if settings['name'] == 'luna':
    kind = '_tied' if settings['tie_kv'] else '' if settings['contextual_p'] else '_noncontextual'
    return f'luna{settings["projection_length"]}{kind}'
  return settings['name']
