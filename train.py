"""Trains and evaluates a Luna or Transformer classifier on an LRA task (or any model of
`luna_jax.build_model`: causal LMs, encoder-decoders, masked-LM pretraining, GLUE finetuning).

  python train.py --config configs/listops.py:luna256 --workdir runs/listops_luna256 \
      --config.data.data_dir=data/lra_release/lra_release/listops-1000

This file is intentionally kept short: the training logic lives in `luna_jax.training.trainer`,
which tests and notebooks import directly. `--config.<field>=<value>` overrides any config field
(unknown fields are rejected); `--config.debug=True` shrinks the run to a smoke test (one small
layer, batch 8, 5 steps), replacing those fields whatever the command line says, and a warning
names each override it replaces.

Several processes (hosts), outside a cluster that jax detects: run the same command in every process
with `--coordinator_address=<host of process 0>:<port> --num_processes=N --process_id=<0..N-1>`
(or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID and
`--config.training.distributed=True`) and a workdir that all of them share.
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import lra
from luna_jax import config_utils
from luna_jax.model.config import RENAMED_KEYS
from luna_jax.training import (
  checkpointing,
  distributed,
  run_config,
  trainer,
  workdir,
  xla_settings,
)

FLAGS = flags.FLAGS
flags.DEFINE_string(
  'workdir',
  None,
  'Folder for checkpoints, metrics and results; an existing run in it is resumed.',
  required=True,
)
config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file, optionally with an argument, e.g. configs/text.py:luna16.',
  lock_config=True,
)
flags.mark_flag_as_required('config')
flags.DEFINE_string(
  'coordinator_address',
  None,
  'Multi-process runs: host:port of process 0 '
  '(sets JAX_COORDINATOR_ADDRESS and --config.training.distributed=True).',
)
flags.DEFINE_integer(
  'num_processes', None, 'Multi-process runs: number of processes (sets JAX_NUM_PROCESSES).'
)
flags.DEFINE_integer(
  'process_id',
  None,
  'Multi-process runs: index of this process, 0 to num_processes - 1 (sets JAX_PROCESS_ID).',
)
_PROCESS_FLAGS = {
  'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
  'num_processes': distributed.NUM_PROCESSES_ENV,
  'process_id': distributed.PROCESS_ID_ENV,
}


#: Errors in what the user gave (config, workdir, data), reported by their message alone.
USER_ERRORS = (
  config_utils.ConfigError,
  checkpointing.CheckpointMismatchError,
  workdir.WorkdirLockedError,
  workdir.WorkdirKindError,
  workdir.WorkdirUnusableError,
  lra.DataError,
  # Training diverged: the message names the step, the metrics and the checkpoint that is kept.
  FloatingPointError,
)


class _HideOrbaxInfo(logging.Filter):
  """Drops orbax's per-save INFO lines, which would bury the progress bar."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or 'orbax' not in record.pathname


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  absl_logging.get_absl_handler().addFilter(_HideOrbaxInfo())
  xla_settings.apply(remat=FLAGS.config.model.remat)  # Before the first JAX computation.
  process_flags = {
    env: getattr(FLAGS, flag)
    for flag, env in _PROCESS_FLAGS.items()
    if getattr(FLAGS, flag) is not None
  }
  if process_flags:
    os.environ.update({env: str(value) for env, value in process_flags.items()})
    FLAGS.config.training.distributed = True
  try:
    replaced = run_config.replaced_by_debug(
      FLAGS.config, config_flags.get_override_values(FLAGS['config'])
    )
    if replaced:
      absl_logging.warning(replaced)
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:  # The message says what is wrong and what to do: no traceback.
    sys.exit(f'Error: {e}')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config argument the file does not take, a flag value that does not
  parse and an override of a config field that does not exist each reported as one `Error:` line
  instead of a traceback."""
  try:
    return FLAGS(argv)
  except (flags.Error, config_utils.ConfigError) as e:
    # A config file's get_config(argument) refusing its argument: ml_collections re-raises the
    # ConfigError with the traceback in its message, and absl wraps that; report the first one.
    # Any other flag error (e.g. `--config.training.batch_size=abc`) is reported as absl words it.
    cause = e
    while cause.__context__ is not None:
      cause = cause.__context__
    sys.exit(f'Error: {cause if isinstance(cause, config_utils.ConfigError) else e}')
  except (AttributeError, KeyError) as e:
    # ml_collections' message: the quoted name, then possibly a line 'Did you mean "x" ...?'.
    message = e.args[0] if e.args else e
    message = message.args[0] if isinstance(message, KeyError) and message.args else str(message)
    quoted, _, suggestion = str(message).partition('\n')
    name = quoted.strip('"\'')
    given = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and name in a]
    renamed = RENAMED_KEYS.get(name) if given and given[0].startswith('--config.model.') else None
    if renamed:
      hint = f'({name} is now {renamed}).'
    elif suggestion:
      hint = f'({suggestion.strip()})'
    else:
      hint = '(configs/base.py lists every field with a comment).'
    sys.exit(f'Error: {given[0] if given else name}: the config has no field {name!r} {hint}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
