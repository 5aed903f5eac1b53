"""Long Range Arena data: every task in its official format, as fixed-length host token arrays.

    data = lra.load_task('listops', 'data/listops-1000')
    for batch in lra.train_batches(data.train, 32, seed=0):
      ...

The official data: `python -m lra.prepare --tasks all --data_dir data` (downloads, verifies,
extracts and tokenises it; `lra.prepare.task_data_dir` says where each task is). Offline
generators: `python -m lra.listops_generator`, `python -m lra.pathfinder_generator` and
`python -m lra.synthetic` (see the README's Data section). The data beyond LRA (token-level tasks,
pretraining corpora, GLUE) is in the package `corpora`, which builds on this one.
"""

from lra.batching import Batching, eval_batches, eval_sample, train_batches
from lra.core import DataError, Split, TaskData
from lra.pretraining import special_ids, unlabelled, vocabulary
from lra.registry import TASKS, data_source, load_task

__all__ = [
  'TASKS',
  'Batching',
  'DataError',
  'Split',
  'TaskData',
  'data_source',
  'eval_batches',
  'eval_sample',
  'load_task',
  'special_ids',
  'train_batches',
  'unlabelled',
  'vocabulary',
]
