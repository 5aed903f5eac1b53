"""GLUE-format sentence and sentence-pair classification (task 'glue'): SST-2, QNLI, QQP.

`data_dir` holds the GLUE files of one task as distributed: `train.tsv` and `dev.tsv`, tab-separated
with a header row (GLUE's `test.tsv` has no labels and is not read). The paper reports development
set results (Table 6), so `dev.tsv` is both the validation and the test split (the trainer records
that its "best" checkpoint is then chosen on test data).

  glue_task  columns read                   labels (-> class id)
  sst2       sentence                       0, 1
  qnli       question, sentence             entailment, not_entailment
  qqp        question1, question2           0, 1 (is_duplicate)

Text is tokenised with option `tokenizer` (`corpora.text_tokenizers`: 'bytes', a SentencePiece
model, the pretraining corpus's, or a folder with a fairseq dictionary and GPT-2's BPE files, the
authors' released models'); a pair is one sequence (`Tokenizer.join`: `first <separator> second`,
or RoBERTa's `<s> first </s> </s> second </s>` for the GPT-2 BPE), cut to `max_length` tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import logging

from corpora import text_tokenizers
from lra import tokenize
from lra.cache import Cache
from lra.core import (
  DataError,
  Split,
  TaskData,
  arrays_to_splits,
  line_list,
  require_files,
  splits_to_arrays,
  task_data,
)

#: glue_task -> (text columns, label column, labels in class-id order).
GLUE_TASKS = {
  'sst2': (('sentence',), 'label', ('0', '1')),
  'qnli': (('question', 'sentence'), 'label', ('entailment', 'not_entailment')),
  'qqp': (('question1', 'question2'), 'is_duplicate', ('0', '1')),
}
FILES = {'train': 'train.tsv', 'validation': 'dev.tsv'}
#: Tasks whose rows with another number of fields than the header are skipped (with a warning), not
#: refused: GLUE's QQP files hold some (fairseq's `examples/roberta/preprocess_GLUE_tasks.sh` drops
#: them with `awk NF==6`).
SKIPS_MALFORMED_ROWS = ('qqp',)


def read_tsv(
  path: Path, max_length: int, *, glue_task: str, tokenizer: text_tokenizers.Tokenizer
) -> Split:
  """Reads one GLUE TSV file into a Split.

  Args:
    path: the file (header row first).
    max_length: L; longer inputs are cut.
    glue_task: a key of GLUE_TASKS.
    tokenizer: the text tokenizer.

  Returns:
    inputs `[N, L]` (uint16, or uint32 for vocabularies over 65536), lengths, targets `[N]`.

  Each text field is stripped of surrounding whitespace before it is tokenised (SST-2's sentences
  end in a space), as fairseq's `examples/roberta/multiprocessing_bpe_encoder.py` strips each line.

  Raises:
    DataError: a missing column in the header, a row with another number of fields than the
      header (skipped with a warning for the tasks of SKIPS_MALFORMED_ROWS), an unknown label, or
      undecodable text (naming file and line).
  """
  columns, label_column, labels = GLUE_TASKS[glue_task]
  label_ids = {label: i for i, label in enumerate(labels)}
  rows = text_tokenizers.read_lines(path)
  header_line = next(rows, None)
  if header_line is None:
    raise DataError(f'{path}: empty file; expected a header row with {[*columns, label_column]}.')
  header = header_line[1].split('\t')
  missing = [c for c in (*columns, label_column) if c not in header]
  if missing:
    raise DataError(
      f'{path}:{header_line[0]}: header {header} lacks column(s) {missing} of GLUE {glue_task}.'
    )
  text_index = [header.index(c) for c in columns]
  label_index = header.index(label_column)
  sequences, targets, num_truncated, skipped = [], [], 0, []
  for line_no, text in rows:
    fields = text.split('\t')
    if len(fields) != len(header) and glue_task in SKIPS_MALFORMED_ROWS:
      skipped.append(line_no)
      continue
    if len(fields) != len(header):
      raise DataError(
        f'{path}:{line_no}: {len(fields)} tab-separated field(s), the header has {len(header)}.'
      )
    label = fields[label_index]
    if label not in label_ids:
      raise DataError(
        f'{path}:{line_no}: label {label!r} in column {label_column!r} is not one of '
        f'{list(labels)}.'
      )
    tokens = tokenizer.join([tokenizer.encode(fields[i].strip()) for i in text_index])
    num_truncated += tokens.size > max_length
    sequences.append(tokens[:max_length])
    targets.append(label_ids[label])
  if skipped:
    logging.warning(
      "%s: skipped %d row(s) without the header's %d tab-separated fields (lines %s), as fairseq "
      'does for GLUE %s.',
      path,
      len(skipped),
      len(header),
      line_list(skipped),
      glue_task.upper(),
    )
  inputs, lengths = tokenize.pad(sequences, max_length, tokenize.id_dtype(tokenizer.vocab_size))
  return Split(inputs, lengths, np.asarray(targets, np.int32), num_truncated=num_truncated)


def load(
  data_dir: Path, *, cache: Cache, max_length: int, glue_task: str, tokenizer: str
) -> TaskData:
  """Loads a GLUE-format task (see the module docstring).

  Args:
    data_dir: folder with `train.tsv` and `dev.tsv`.
    cache: tokenised-array cache.
    max_length: L.
    glue_task: 'sst2', 'qnli' or 'qqp'.
    tokenizer: 'bytes', the path of a SentencePiece model, or a GPT-2 BPE folder
      (`corpora.text_tokenizers.load_tokenizer`).

  Returns:
    The task; validation and test are both `dev.tsv`; `info` has `vocabulary` and `special_ids`.

  Raises:
    DataError: an unknown glue_task, missing files, malformed rows (see `read_tsv`).
  """
  if glue_task not in GLUE_TASKS:
    raise DataError(f'glue_task {glue_task!r} is not one of {sorted(GLUE_TASKS)}.')
  tok = text_tokenizers.load_tokenizer(tokenizer)
  paths = {split: data_dir / name for split, name in FILES.items()}
  require_files(
    list(paths.values()),
    f'Download the GLUE {glue_task.upper()} data (train.tsv, dev.tsv) into this folder.',
  )

  # The tokenizer's name is part of the cache key, its files part of the fingerprint.
  splits = arrays_to_splits(
    cache.load_or_build(
      f'glue-{glue_task}-{tok.name.replace(":", "-")}',
      lambda: splits_to_arrays(
        {
          split: read_tsv(path, max_length, glue_task=glue_task, tokenizer=tok)
          for split, path in paths.items()
        }
      ),
      # 'stripped' keeps arrays cached before the text was stripped (and QQP's malformed rows
      # skipped) from being reused.
      params={'max_length': max_length, 'stripped': True},
      content_files=[*paths.values(), *tok.sources],
    )
  )
  return task_data(
    'glue',
    {**splits, 'test': splits['validation']},
    paths,
    f'max_length {max_length}',
    vocab_size=tok.vocab_size,
    num_classes=len(GLUE_TASKS[glue_task][2]),
    max_length=max_length,
    info={'vocabulary': tok.name, 'special_ids': list(tok.special_ids)},
    checked_as=f'glue {glue_task}',
  )
