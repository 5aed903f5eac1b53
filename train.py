r"""Trains and evaluates a Luna or Transformer classifier on an LRA task (or any model of
`luna_jax.build_model`: causal LMs, encoder-decoders, masked-LM pretraining, GLUE finetuning).

  python train.py --config configs/listops.py:luna256 --workdir runs/listops_luna256 \
      --config.data.data_dir=data/lra_release/lra_release/listops-1000

This file is intentionally kept short: the training logic lives in `luna_jax.training.trainer`,
which tests and notebooks import directly, and what a command adds to it (errors as one line,
signals) in `luna_jax.training.command_line`. `--config.<field>=<value>` overrides any config field
(unknown fields are rejected); `--config.debug=True` shrinks the run to a smoke test (one small
layer, batch 8, 5 steps), replacing those fields whatever the command line says, and a warning
names each override it replaces.

Several processes (hosts), outside a cluster that jax detects: run the same command in every process
with `--coordinator_address=<host of process 0>:<port> --num_processes=N --process_id=<0..N-1>`
(or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID and
`--config.training.distributed=True`) and a workdir that all of them share.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from luna_jax.training import command_line, distributed

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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  process_flags = {
    env: getattr(FLAGS, flag)
    for flag, env in _PROCESS_FLAGS.items()
    if getattr(FLAGS, flag) is not None
  }
  if process_flags:
    os.environ.update({env: str(value) for env, value in process_flags.items()})
    FLAGS.config.training.distributed = True
  command_line.run(FLAGS.config, FLAGS.workdir, config_flags.get_override_values(FLAGS['config']))


if __name__ == '__main__':
  app.run(main, flags_parser=command_line.parse_flags)
