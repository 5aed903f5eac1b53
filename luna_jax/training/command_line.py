"""What `train.py` does around `trainer.train_and_evaluate`, so that it stays a few lines: its
flags parsed with every error in them (a config file that does not load, a misspelt field) as one
`Error:` line instead of a traceback, and the run ended the same way on an error in what the user
gave, a full disk or a signal (`run`).
"""

from __future__ import annotations

import difflib
import errno
import functools
import logging
import os
import re
import signal
import sys
import traceback
from typing import Any, NoReturn

from absl import flags
from absl import logging as absl_logging
from ml_collections import ConfigDict

import lra
from luna_jax import config_utils
from luna_jax.model.config import RENAMED_KEYS
from luna_jax.training import checkpointing, metric_log, run_config, trainer, xla_settings
from luna_jax.training.workdir import (
  WorkdirKindError,
  WorkdirLockedError,
  WorkdirUnusableError,
  remove_untouched_now,
)

FLAGS = flags.FLAGS

#: Errors in what the user gave (config, workdir, data), reported by their message alone.
USER_ERRORS = (
  config_utils.ConfigError,
  checkpointing.CheckpointMismatchError,
  checkpointing.CheckpointUnreadableError,  # The message says to run again, or what to move.
  metric_log.MetricLogError,
  WorkdirLockedError,
  WorkdirKindError,
  WorkdirUnusableError,
  lra.DataError,
  # Training diverged: the message names the step, the metrics and the checkpoint that is kept.
  FloatingPointError,
)


class _HideOrbaxInfo(logging.Filter):
  """Drops orbax's per-save INFO lines, which would bury the progress bar."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or 'orbax' not in record.pathname


def run(config: ConfigDict, workdir: str, overrides: dict[str, Any]) -> None:
  """`trainer.train_and_evaluate(config, workdir)` as a command: the errors in what the user gave
  (USER_ERRORS) and a full disk end it with one `Error:` line and exit status 1, a stop the trainer
  saved (SIGINT/SIGTERM in its loop) with its message and 128 + the signal's number, and the same
  signals outside the loop (loading, compiling, after the last step) at once, with one line
  (`_exit_at_once`).

  Args:
    config: the parsed `--config`, with its command-line overrides applied.
    workdir: the run's folder (`--workdir`).
    overrides: the `--config.<field>` values given on the command line, by field
      (`config_flags.get_override_values`), for the warning that names those `config.debug`
      replaces.
  """
  absl_logging.get_absl_handler().addFilter(_HideOrbaxInfo())
  # jax's INFO line about each platform it probes and lacks ('Unable to initialize backend tpu');
  # the backend in use is logged by the trainer.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  try:
    run_config.check_sections(config)  # Before their fields are read, here and below.
    xla_settings.apply(remat=config.model.remat)  # Before the first JAX computation.
    replaced = run_config.replaced_by_debug(config, overrides)
    if replaced:
      absl_logging.warning(replaced)
    # Several processes' training loop stops at once too (the trainer's stop after a step needs
    # one process), so there the run resumes from its last checkpoint.
    said = 'stopped outside the training loop; every trained step is saved'
    if config.training.distributed:
      said = 'stopped at once (several processes); the run resumes from its last checkpoint'
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
      signal.signal(number, functools.partial(_exit_at_once, said=said))
    trainer.train_and_evaluate(config, workdir)
    for number in signals:  # Finished: a signal now ends nothing left to go on with.
      signal.signal(number, signal.SIG_DFL)
  except USER_ERRORS as e:  # The message says what is wrong and what to do: no traceback.
    sys.exit(f'Error: {e}')
  except trainer.TrainingInterrupted as e:  # Saved: the message says how to resume.
    print(e, file=sys.stderr)
    sys.exit(128 + e.signum)
  except Exception as e:  # pylint: disable=broad-except
    if not _out_of_space(e):
      raise
    print(
      f'Error: no space left on the device of {workdir} ({str(e).splitlines()[0][:300]}). '
      'Free some and run the same command again: the run resumes from its last complete '
      'checkpoint (an unfinished one is never used).',
      file=sys.stderr,
      flush=True,
    )
    # Now, not at interpreter exit: orbax's writer threads, failing too, would print their
    # tracebacks after this line. The run's files are closed (train_and_evaluate's exit stack).
    os._exit(1)


def _chain(error: BaseException) -> list[BaseException]:
  """`error` and the errors it came from (`raise ... from`, or raised while handling), outermost
  first, each once: Python keeps `__context__` free of cycles but not `__cause__` (`raise e from
  e`), which ends the chain where an error comes up again."""
  chain = [error]
  while (previous := chain[-1].__cause__ or chain[-1].__context__) is not None:
    if any(previous is e for e in chain):
      break
    chain.append(previous)
  return chain


def _out_of_space(error: BaseException) -> bool:
  """Whether `error`, or one it came from, is a full disk (orbax reports it as a ValueError with
  tensorstore's message)."""
  return any(
    (isinstance(e, OSError) and e.errno == errno.ENOSPC) or 'No space left on device' in str(e)
    for e in _chain(error)
  )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config file that does not load (or is not Python), a config
  argument the file does not take, a get_config() that returns no ConfigDict, a flag value that does
  not parse, a config field that does not exist (set on the command line, or read or set by a
  config file) and a field a config file sets to a value of another type each reported as one
  `Error:` line instead of a traceback. Any other error of a
  config file's own code keeps its traceback, which says where it is."""
  try:
    parsed = FLAGS(argv)
    config = FLAGS.config
    if not isinstance(config, ConfigDict):
      try:
        config.keys()  # ml_collections defers a config file's load error to the first use.
      except AttributeError as e:  # A get_config() that returned no mapping at all.
        if "object has no attribute 'keys'" not in str(e):
          raise
      _exit_not_a_config_dict(argv, f'a {type(config).__name__}')
    return parsed
  except flags.DuplicateFlagError:
    sys.exit(f'Error: --config={_config_file(argv)}: {_NOT_A_CONFIG_FILE}')
  except SyntaxError:  # A .py file's own syntax error keeps its traceback (the caret).
    if _config_file(argv).split(':')[0].endswith('.py'):
      raise
    sys.exit(f'Error: --config={_config_file(argv)}: {_NOT_A_CONFIG_FILE}')
  except (flags.Error, config_utils.ConfigError, OSError) as e:
    # A config file's get_config(argument) refusing its argument: ml_collections re-raises the
    # ConfigError with the traceback in its message, and absl wraps that; report the first one.
    # A file that does not load: the last line of ml_collections' message names the error. Any
    # other flag error (e.g. `--config.training.batch_size=abc`) is reported as absl words it.
    cause = _chain(e)[-1]
    if isinstance(cause, config_utils.ConfigError):
      sys.exit(f'Error: {cause}')
    if isinstance(cause, TypeError) and 'get_config()' in str(cause):  # Its argument, or none.
      sys.exit(f'Error: --config={_config_file(argv)}: {cause}.')
    wrong_types = [_wrong_type(x, argv) for x in _chain(e) if isinstance(x, TypeError)]
    if any(wrong_types):
      sys.exit(f'Error: {next(filter(None, wrong_types))}')
    if isinstance(e, OSError):
      reason = str(cause).strip().splitlines()[-1].strip()
      sys.exit(f'Error: --config={_config_file(argv)}: cannot load it: {reason}.')
    # absl's words for a required flag left out, and for a get_config() that returned None.
    unset = re.search(r'Flag --(\w+) must have a value other than None', str(e))
    if unset and (unset[1] != 'config' or _config_file(argv) == '?'):
      sys.exit(f'Error: --{unset[1]} is required: {FLAGS[unset[1]].help} (python {argv[0]} --help)')
    if unset:
      _exit_not_a_config_dict(argv, 'None')
    sys.exit(f'Error: {e}')
  except (AttributeError, KeyError) as e:
    message = _missing_field(e, argv)
    if message is None:
      raise
    sys.exit(f'Error: {message}')
  except NameError:  # A word of text in a file that is not Python, run as Python.
    if _config_file(argv).split(':')[0].endswith('.py'):
      raise
    sys.exit(f'Error: --config={_config_file(argv)}: {_NOT_A_CONFIG_FILE}')


def _exit_at_once(signum: int, frame: object, said: str) -> NoReturn:
  """Ends the run on SIGINT or SIGTERM outside the training loop, which in a single-process run
  stops after its step with a checkpoint (`trainer`'s own handler, while it trains): before it
  (loading the data, compiling) there is nothing to save, after it every step is saved and a rerun
  evaluates again. A KeyboardInterrupt raised inside XLA's compilation could crash the
  interpreter. A workdir the run has written nothing in yet is cleaned up as a failed start's
  (`workdir.remove_untouched_now`). `said`: what stopped and what a rerun goes on from."""
  del frame
  remove_untouched_now()
  print(
    f'{signal.Signals(signum).name}: {said}. Run the same command to go on.',
    file=sys.stderr,
    flush=True,
  )
  sys.stdout.flush()
  os._exit(128 + signum)


#: Where a misspelt field's name can be looked up.
_EVERY_FIELD = '(configs/base.py lists every field with a comment).'
#: What a config file is, for a --config that names another kind of file.
_NOT_A_CONFIG_FILE = (
  'not a config file: a config file defines get_config() returning an ml_collections.ConfigDict '
  '(e.g. configs/quickstart.py).'
)


def _exit_not_a_config_dict(argv: list[str], returned: str) -> NoReturn:
  """Exits with the one line for a --config file whose get_config() returned `returned`."""
  sys.exit(
    f'Error: --config={_config_file(argv)}: get_config() returned {returned}, not an '
    'ml_collections.ConfigDict.'
  )


def _config_file(argv: list[str]) -> str:
  """The value of --config in `argv` (the flag may not have parsed)."""
  for i, arg in enumerate(argv):
    if arg.startswith(('--config=', '-config=')):
      return arg.partition('=')[2]
    if arg in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
  return '?'


def _missing_field(error: AttributeError | KeyError, argv: list[str]) -> str | None:
  """The message for ml_collections' error about a config field that does not exist, set on the
  command line (`--config.<path>=...`) or read or set by a config file (naming its line); None for
  any other error."""
  message = error.args[0] if error.args else error
  message = message.args[0] if isinstance(message, KeyError) and message.args else str(message)
  if "has no attribute 'get_config'" in message:
    return f'--config={_config_file(argv)}: {_NOT_A_CONFIG_FILE}'
  line = _config_file_line(error, argv)
  in_file = re.match(r'Key "([^"]+)" does not exist and cannot be added', message)
  if in_file:  # A locked config that a config file sets an unknown field of.
    name = in_file.group(1)
    present = re.findall(r"'(\w+)': ", message)
    close = difflib.get_close_matches(name, present, n=1)
    hint = f'(did you mean {close[0]!r}?)' if close else _EVERY_FIELD
    return (
      f'--config={_config_file(argv)}{line} sets {name!r}, a field the config does not have {hint}'
    )
  # The quoted name, then possibly a line 'Did you mean "x" ...?'.
  quoted, _, suggestion = message.partition('\n')
  name = quoted.strip('"\'')
  given = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and name in a]
  if not given:
    if not line:  # Not ml_collections' error about the config file's config.
      return None
    hint = f'({suggestion.strip()})' if suggestion else _EVERY_FIELD
    return (
      f'--config={_config_file(argv)}{line} reads {name!r}, a field the config does not have {hint}'
    )
  renamed = RENAMED_KEYS.get(name) if given[0].startswith('--config.model.') else None
  if renamed:
    hint = f'({name} is now {renamed}).'
  elif suggestion:
    hint = f'({suggestion.strip()})'
  else:
    hint = _EVERY_FIELD
  return f'{given[0]}: the config has no field {name!r} {hint}'


def _wrong_type(error: TypeError, argv: list[str]) -> str | None:
  """The message for ml_collections' error about a config file setting a field to a value of
  another type (e.g. `config.training.batch_size = '8'`), naming its line; None for any other
  error."""
  words = re.match(
    r"Could not override field '(\w+)' \(reference\)\. (.*) is of original type "
    r"<class '([\w.]+)'> and cannot be casted to type <class '([\w.]+)'>",
    str(error),
    re.DOTALL,
  )
  line = _config_file_line(error, argv)
  if not (words and line):
    return None
  name, value, given, field = words.groups()
  # The types by their own names (ml_collections.config_dict.config_dict.ConfigDict: ConfigDict).
  given, field = (kind.rsplit('.', 1)[-1] for kind in (given, field))
  given, field = (f'{"an" if kind[0] in "aeiouAEIOU" else "a"} {kind}' for kind in (given, field))
  value = value.replace('\n', '\\n')  # One line, whatever the value, and a short one.
  value = value if len(value) <= 80 else f'{value[:77]}...'
  return (
    f'--config={_config_file(argv)}{line} sets {name!r} to {given} ({value}): the field takes '
    f'{field}.'
  )


def _config_file_line(error: BaseException, argv: list[str]) -> str:
  """' line N' when `error` was raised by ml_collections' ConfigDict called from line N of the
  --config file; '' otherwise."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames or 'ml_collections' not in frames[-1].filename:
    return ''
  path = os.path.realpath(_config_file(argv).split(':')[0])
  lines = [f.lineno for f in frames if os.path.realpath(f.filename) == path]
  return f' line {lines[-1]}' if lines else ''
