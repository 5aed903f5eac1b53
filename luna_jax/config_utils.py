"""Strict key checks of config sections, and their conversion into typed dataclasses.

Each trainer section (`optimizer`, `training`) is read through a frozen dataclass whose fields are the
section's keys, so a misspelt key in a config file fails at start-up with its name instead of being
silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence, TypeVar

T = TypeVar('T')


def check_keys(config: Mapping[str, Any], expected: Sequence[str], section: str) -> None:
  """Raises ValueError naming the unknown and the missing keys of `config` against `expected`."""
  unknown = sorted(set(config) - set(expected))
  missing = sorted(set(expected) - set(config))
  if unknown or missing:
    raise ValueError(f'{section}: unknown key(s) {unknown}, missing key(s) {missing}; expected '
                     f'{sorted(expected)}.')


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
  check_keys(config, [f.name for f in dataclasses.fields(cls)], f'config.{section}')
  return cls(**dict(config))
