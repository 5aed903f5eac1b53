"""A plain-text pretraining corpus (task 'corpus'): one document per line, packed into blocks.

`data_dir` is a text file or a folder of `*.txt` files (read in sorted order), UTF-8, one document
per line; empty lines are skipped. Every document is tokenised (`corpora.text_tokenizers`: option
`tokenizer`, 'bytes' or a SentencePiece model file) and followed by the separator id, and the
stream is cut into blocks of `max_length` tokens, which may span documents (RoBERTa's
"FULL-SENTENCES" packing, Liu et al., 2019, §4.2); the tail shorter than a block is dropped. A
seeded `heldout_fraction` of the blocks (at least one) is the validation split, which is also the
test split. Blocks are cached like every LRA task (`lra.cache`, keyed by the files' contents, the
tokenizer and the options).

The splits hold no labels: `targets` is the block itself (the masked-LM objective masks it at
training time). `info` carries the tokenizer's `vocabulary` name and `special_ids`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from corpora import text_tokenizers
from lra import tokenize
from lra.cache import Cache
from lra.core import (
  DataError,
  Split,
  TaskData,
  arrays_to_splits,
  check_arrays,
  splits_to_arrays,
)


def pack_blocks(
  files: list[Path], tokenizer: text_tokenizers.Tokenizer, block_length: int
) -> np.ndarray:
  """Tokenises the documents of `files` and packs them into blocks.

  Args:
    files: UTF-8 text files, one document per line.
    tokenizer: the tokenizer; its separator follows every document.
    block_length: L, tokens per block.

  Returns:
    `[num_blocks, L]` uint16 (uint32 for vocabularies over 65536) token ids; the tail is dropped.

  Raises:
    DataError: an undecodable line (naming file and line), no document at all, or fewer tokens
      than two blocks (naming the files and the counts).
  """
  pieces, num_documents = [], 0
  for path in files:
    for _, text in text_tokenizers.read_lines(path):
      pieces.append(tokenizer.encode(text))
      pieces.append(np.array([tokenizer.separator_id], np.int32))
      num_documents += 1
  names = ', '.join(str(f) for f in files)
  if not num_documents:
    raise DataError(f'{names}: the corpus is empty (no non-empty line). Put one document per line.')
  stream = np.concatenate(pieces)
  num_blocks = stream.size // block_length
  if num_blocks < 2:
    raise DataError(
      f'{names}: {num_documents} document(s), {stream.size} tokens '
      f'({tokenizer.name}) make {num_blocks} block(s) of max_length {block_length}; '
      'pretraining needs at least 2 (one held out for validation). Add text or '
      'lower --config.data.options.max_length.'
    )
  blocks = stream[: num_blocks * block_length].reshape(num_blocks, block_length)
  return blocks.astype(tokenize.id_dtype(tokenizer.vocab_size))


def _split(blocks: np.ndarray) -> Split:
  lengths = np.full(blocks.shape[0], blocks.shape[1], np.int32)
  return Split(blocks, lengths, blocks)


def load(
  data_dir: Path,
  *,
  cache: Cache,
  max_length: int,
  tokenizer: str,
  heldout_fraction: float,
  split_seed: int,
) -> TaskData:
  """Loads a corpus as masked-LM data (see the module docstring).

  Args:
    data_dir: a text file or a folder of `*.txt` files.
    cache: tokenised-array cache.
    max_length: L, tokens per block.
    tokenizer: 'bytes' or the path of a SentencePiece model.
    heldout_fraction: fraction of the blocks held out for validation (at least one block, and at
      least one left for training).
    split_seed: seed of the held-out choice.

  Returns:
    The corpus; validation and test are the same held-out blocks.

  Raises:
    DataError: see `pack_blocks`; a missing corpus or tokenizer; a fraction outside (0, 1).
  """
  if not 0.0 < heldout_fraction < 1.0:
    raise DataError(f'heldout_fraction must be in (0, 1), got {heldout_fraction!r}')
  files = text_tokenizers.text_files(data_dir)
  tok = text_tokenizers.load_tokenizer(tokenizer)

  def build() -> dict[str, np.ndarray]:
    blocks = pack_blocks(files, tok, max_length)
    order = np.random.default_rng(split_seed).permutation(blocks.shape[0])
    # At least one block each side (pack_blocks makes at least 2).
    num_heldout = min(max(1, int(round(heldout_fraction * blocks.shape[0]))), blocks.shape[0] - 1)
    heldout, train = np.sort(order[:num_heldout]), np.sort(order[num_heldout:])
    return splits_to_arrays({'train': _split(blocks[train]), 'validation': _split(blocks[heldout])})

  params = {
    'max_length': max_length,
    'tokenizer': tok.name,
    'heldout_fraction': heldout_fraction,
    'split_seed': split_seed,
  }
  splits = arrays_to_splits(
    cache.load_or_build(
      f'corpus-{max_length}',
      build,
      params=params,
      content_files=[*files, *tok.sources],
    )
  )
  check_arrays(
    'corpus',
    {name: splits[name] for name in ('train', 'validation')},
    {'train': data_dir, 'validation': data_dir},
    vocab_size=tok.vocab_size,
    num_classes=tok.vocab_size,
    max_length=max_length,
  )
  logging.info(
    'corpus %s: %d training and %d held-out blocks of %d tokens (%s).',
    data_dir,
    splits['train'].num_examples,
    splits['validation'].num_examples,
    max_length,
    tok.name,
  )
  return TaskData(
    name='corpus',
    train=splits['train'],
    validation=splits['validation'],
    test=splits['validation'],
    vocab_size=tok.vocab_size,
    num_classes=tok.vocab_size,
    max_length=max_length,
    info={'vocabulary': tok.name, 'special_ids': list(tok.special_ids)},
  )
