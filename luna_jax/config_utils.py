"""Strict conversion of ml_collections config sections into typed dataclasses.

Each trainer section (`optimizer`, `training`) is read through a frozen dataclass whose fields are the
section's keys, so a misspelt key in a config file fails at start-up with its name instead of being
silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar('T')


def dataclass_from_mapping(cls: type[T], config: Mapping[str, Any], section: str) -> T:
  """Instantiates the dataclass `cls` from the mapping `config`, which must have exactly its fields.

  Args:
    cls: a dataclass type.
    config: the config section (a ConfigDict or dict).
    section: the section's name, for the error message.

  Returns:
    `cls(**config)`.

  Raises:
    ValueError: naming the unknown and the missing keys.
  """
  names = {f.name for f in dataclasses.fields(cls)}
  given = dict(config)
  unknown, missing = sorted(set(given) - names), sorted(names - set(given))
  if unknown or missing:
    raise ValueError(f'config.{section}: unknown key(s) {unknown}, missing key(s) {missing}; '
                     f'expected exactly {sorted(names)}.')
  return cls(**given)
