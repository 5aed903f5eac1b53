"""Multi-process training: connecting this process to the others (`jax.distributed`)."""

from __future__ import annotations

import os

import jax

#: Environment variables of a multi-process run outside a detected cluster (with the coordinator's
#: `JAX_COORDINATOR_ADDRESS`, which jax reads itself).
NUM_PROCESSES_ENV = 'JAX_NUM_PROCESSES'
PROCESS_ID_ENV = 'JAX_PROCESS_ID'


def initialize_distributed() -> None:
  """Connects this process to the others with `jax.distributed.initialize`.

  The coordinator address (`host:port` of process 0) comes from `JAX_COORDINATOR_ADDRESS`, the
  process count and this process's index from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`; what is
  unset is detected by jax (SLURM, Open MPI, Cloud TPU, Kubernetes).

  Raises:
    ValueError: a process count or index that is not an integer (naming the variable), or settings
      that neither the environment nor a detected cluster provide.
  """
  settings = {}
  for name, key in ((NUM_PROCESSES_ENV, 'num_processes'), (PROCESS_ID_ENV, 'process_id')):
    value = os.environ.get(name)
    if value:
      try:
        settings[key] = int(value)
      except ValueError:
        raise ValueError(f'{name}={value!r} is not an integer.') from None
  try:
    jax.distributed.initialize(**settings)
  except ValueError as e:
    raise ValueError(
      f'training.distributed=True: {e} Set JAX_COORDINATOR_ADDRESS (host:port of process 0), '
      f'{NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} (or train.py --coordinator_address, '
      '--num_processes, --process_id), or run under SLURM, Open MPI or on Cloud TPU.'
    ) from e
