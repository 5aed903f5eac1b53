"""Typed, checked config sections: one mechanism for every section of the experiment config.

A section is a frozen dataclass whose fields are the section's keys. Each field declares its type by
annotation (int, float, bool, str, Optional[...]) and its allowed values with `spec` (a range, a set
of choices, or a check function). `parse_section(cls, mapping, 'training')` accepts exactly the
class's keys and checks every value, so a misspelt key or a value out of range fails at start-up
with `config.training.eval_every=0: must be >= 1` instead of deep inside training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar('T')


class ConfigError(ValueError):
  """A config key or value the trainer does not accept (the message names it)."""


def spec(
  *,
  default: Any = dataclasses.MISSING,
  minimum: float | None = None,
  above: float | None = None,
  below: float | None = None,
  maximum: float | None = None,
  choices: Collection[Any] | None = None,
  also: Sequence[Any] = (),
  check: Callable[[Any], str | None] | None = None,
) -> Any:
  """A dataclass field with the allowed values of a config key.

  Args:
    default: the field's default value (none: the key is required).
    minimum, maximum: inclusive bounds of a number.
    above, below: exclusive bounds of a number.
    choices: the allowed values (an enum; a registry dict stays live: a name added to it later is
      allowed).
    also: special values allowed besides the range (e.g. -1 for 'all').
    check: returns an error text for a bad value, or None.

  Returns:
    A `dataclasses.field` carrying the spec in its metadata.
  """
  rule = dict(
    minimum=minimum,
    above=above,
    below=below,
    maximum=maximum,
    choices=choices,
    also=tuple(also),
    check=check,
  )
  return dataclasses.field(default=default, metadata={'spec': rule})


def check_keys(config: Mapping[str, Any], expected: Sequence[str], section: str) -> None:
  """Raises ConfigError naming the unknown and the missing keys of `config` against `expected`."""
  unknown = sorted(set(config) - set(expected))
  missing = sorted(set(expected) - set(config))
  if unknown or missing:
    raise ConfigError(
      f'{section}: unknown key(s) {unknown}, missing key(s) {missing}; expected {sorted(expected)}.'
    )


def _type_error(value: Any, hint: Any) -> str | None:
  """Why `value` is not of the annotated type `hint` (None when it is); ints pass as floats."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    options = typing.get_args(hint)
    if value is None and type(None) in options:
      return None
    inner = [option for option in options if option is not type(None)]
    return _type_error(value, inner[0]) if len(inner) == 1 else None
  if hint is bool:
    ok = isinstance(value, bool)
  elif hint is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif hint is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif hint is str:
    ok = isinstance(value, str)
  else:
    return None
  return None if ok else f'must be of type {hint.__name__}, got {type(value).__name__}'


def value_error(value: Any, hint: Any, rule: Mapping[str, Any]) -> str | None:
  """Why `value` breaks its type `hint` or its `spec` rule, or None when it is allowed.

  A float must be finite whatever the rule: NaN and infinities are never a setting.
  """
  error = _type_error(value, hint)
  if error is None and isinstance(value, float) and not math.isfinite(value):
    return 'must be a finite number'
  also = rule.get('also', ())
  if error or value is None or value in also:
    return error
  suffix = f' (or one of {list(also)})' if also else ''
  bounds = (
    ('minimum', '>=', lambda v, b: v >= b),
    ('above', '>', lambda v, b: v > b),
    ('below', '<', lambda v, b: v < b),
    ('maximum', '<=', lambda v, b: v <= b),
  )
  for name, sign, holds in bounds:
    bound = rule.get(name)
    if bound is not None and not holds(value, bound):
      return f'must be {sign} {bound}{suffix}'
  choices = rule.get('choices')
  # By equality, as a list: a registry dict's `in` would hash the value (a list raises TypeError).
  if choices is not None and value not in list(choices):
    return f'must be one of {list(choices)}'
  check = rule.get('check')
  return check(value) if check is not None else None


def parse_section(cls: type[T], config: Mapping[str, Any], section: str) -> T:
  """Builds the section dataclass `cls` from `config`, checking keys, types and allowed values.

  Args:
    cls: a frozen dataclass whose fields are made with `spec` (or plain fields: type check only).
    config: the config section (a ConfigDict or dict).
    section: the section's dotted name for messages, e.g. 'config.training'.

  Returns:
    `cls(**config)`, ints of float fields (`float` or `float | None`) converted to float.

  Raises:
    ConfigError: naming unknown or missing keys, or `section.key=value` and what is allowed.
  """
  fields = {f.name: f for f in dataclasses.fields(cls)}
  values = dict(config)
  check_keys(values, list(fields), section)
  hints = typing.get_type_hints(cls)
  for name, value in values.items():
    error = value_error(value, hints[name], fields[name].metadata.get('spec', {}))
    if error:
      raise ConfigError(f'{section}.{name}={value!r}: {error}.')
    if isinstance(value, int) and float in (hints[name], *typing.get_args(hints[name])):
      values[name] = float(value)
  return cls(**values)


def non_finite_values(config: Mapping[str, Any], prefix: str = 'config') -> list[str]:
  """The dotted keys of every float in the nested mapping `config` that is NaN or infinite.

  Args:
    config: a config (ConfigDict or dict), searched through nested mappings, lists and tuples.
    prefix: the name of `config` in the keys, e.g. 'config'.

  Returns:
    'prefix.key=value' for each non-finite float, in key order.
  """
  found = []
  for key in sorted(config):
    value, name = config[key], f'{prefix}.{key}'
    if isinstance(value, Mapping):
      found += non_finite_values(value, name)
    elif isinstance(value, (list, tuple)):
      found += non_finite_values({str(i): item for i, item in enumerate(value)}, name)
    elif isinstance(value, float) and not math.isfinite(value):
      found.append(f'{name}={value!r}')
  return found
