"""What masked-LM pretraining needs from a task: its vocabulary's name, its special ids, its inputs.

Self-pretraining (Amos, Berant and Gupta, "Never Train from Scratch", ICLR 2024) pretrains on the
task's own training inputs, labels dropped: `unlabelled(data)` turns any task into such data. A
pretrained encoder is finetuned only on data whose `vocabulary` has the same name.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lra.core import Split, TaskData

#: The vocabulary of each task's ids, by task name (the text tasks name theirs in `info`; a task
#: in neither has a vocabulary of its own, named as the task).
VOCABULARIES = {
  'listops': 'listops',
  'text': 'bytes',
  'retrieval': 'bytes',
  'image': 'pixels',
  'pathfinder32': 'pixels',
  'pathx': 'pixels',
  'seq2seq': 'bytes+bos+eos',
  'lm': 'bytes+bos+eos',
}


def vocabulary(data: TaskData) -> str:
  """The name of the vocabulary of `data`'s token ids ('listops', 'bytes', 'pixels', ...; the
  task's name for a task `VOCABULARIES` does not list and whose `info` names none)."""
  return data.info.get('vocabulary') or VOCABULARIES.get(data.name, data.name)


def special_ids(data: TaskData) -> tuple[int, ...]:
  """The ids of `data` that are not content (never masked): padding 0, separators; none for the
  pixel tasks, whose id 0 is black and which have no padding."""
  if 'special_ids' in data.info:
    return tuple(data.info['special_ids'])
  return () if vocabulary(data) == 'pixels' else (0,)


def _unlabelled_split(split: Split) -> Split:
  if split.inputs2 is None:
    return Split(split.inputs, split.lengths, split.inputs)
  inputs = np.concatenate([split.inputs, split.inputs2])
  return Split(inputs, np.concatenate([split.lengths, split.lengths2]), inputs)


def unlabelled(data: TaskData) -> TaskData:
  """`data` as masked-LM data: every split's inputs, labels dropped (`targets` = the inputs).

  A two-document task (Retrieval) gives each document as an example of its own. Arrays are not
  copied (except the two documents' concatenation).
  """
  info = {**data.info, 'vocabulary': vocabulary(data), 'special_ids': list(special_ids(data))}
  validation = _unlabelled_split(data.validation)
  # A task whose validation split is its test split (LRA Text) keeps them one object.
  test = validation if data.test is data.validation else _unlabelled_split(data.test)
  return dataclasses.replace(
    data,
    train=_unlabelled_split(data.train),
    validation=validation,
    test=test,
    num_classes=data.vocab_size,
    dual=False,
    info=info,
  )
