"""Averages the parameters of a run's last N checkpoints into a new verified checkpoint.

  python -m luna_jax.average_checkpoints --workdir runs/wmt14/luna16 --num 10

writes `<workdir>/averaged/<newest step>/` (`luna_jax.training.checkpointing.average_checkpoints`:
the mean of every parameter, with its SHA-256 digest and the run's record), which `python -m
luna_jax.translate --checkpoint` reads. The run must keep at least N checkpoints
(`training.keep_checkpoints`; 10 in configs/wmt14.py, as the paper averages the last 10 epochs').
"""

from __future__ import annotations

import argparse
import os
import sys

from luna_jax.training import checkpointing
from luna_jax.training.checkpointing import AVERAGED_DIR


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--workdir', required=True, help="the run's folder")
  parser.add_argument('--num', type=int, default=10, help='checkpoints to average (newest)')
  args = parser.parse_args(argv)
  if args.num < 1:
    sys.exit(f'Error: --num {args.num}: must be >= 1 (the checkpoints to average).')
  try:
    path = checkpointing.average_checkpoints(args.workdir, args.num)
  except (FileNotFoundError, ValueError, checkpointing.CheckpointUnreadableError) as e:
    sys.exit(f'Error: {e}')
  workdir, step = os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
  record = checkpointing.read_record(workdir, step, AVERAGED_DIR)
  print(f'wrote {path}: the mean of the checkpoints of steps {record["averaged_steps"]}')


if __name__ == '__main__':
  main()
