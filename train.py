"""Trains and evaluates a Luna or Transformer classifier on an LRA task.

  python train.py --config configs/listops.py:luna256 --workdir runs/listops_luna256 \
      --config.data.data_dir=data/lra_release/listops-1000

This file is intentionally kept short: the training logic lives in `luna_jax.train_lib`, which tests
and notebooks import directly. `--config.<field>=<value>` overrides any config field (unknown fields
are rejected); `--config.debug=True` shrinks the run to a smoke test.
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from luna_jax import train_lib, xla_settings

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and results; an existing run '
                    'in it is resumed.', required=True)
config_flags.DEFINE_config_file('config', None, 'Config file, optionally with an argument, e.g. '
                                'configs/text.py:luna16.', lock_config=True)
flags.mark_flag_as_required('config')


class _HideOrbaxInfo(logging.Filter):
  """Drops orbax's per-save INFO lines, which would bury the progress bar."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  absl_logging.get_absl_handler().addFilter(_HideOrbaxInfo())
  xla_settings.apply()  # Before the first JAX computation.
  train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
