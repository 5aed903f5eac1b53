"""Text tokenizers for pretraining corpora and GLUE-format tasks: UTF-8 bytes, or SentencePiece.

  'bytes'              the byte-level vocabulary of the LRA text tasks (pad 0, byte b -> b + 1)
                       plus a separator id 257 between documents (or sentence pairs); vocab 258.
  <path>.model         a SentencePiece model; train one on your corpus with
                         python -m corpora.text_tokenizers --input_dir corpus/ --vocab_size 8000 \\
                             --model_prefix corpus/spm
                       ids: pad 0, unk 1, bos 2, separator (eos) 3, then the pieces.

SentencePiece (Kudo and Richardson, 2018) rather than Hugging Face `tokenizers`: one small
dependency that trains a subword model from raw text with one call (no pre-tokenisation, no
language-specific rules), is deterministic given its settings, stores the whole model in a single
file that can be hashed to identify the vocabulary, and is what the Flax WMT/LM1B examples use.

Every tokenizer has a `name` that identifies its vocabulary ('bytes', or 'sentencepiece:<the SHA-256
of the model file, 16 hex digits>'): a pretrained encoder is only finetuned on data of the same
name.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from lra import tokenize
from lra.core import DataError

BYTES = 'bytes'
#: The byte vocabulary's separator id (after the 256 byte ids and padding).
BYTE_SEPARATOR_ID = tokenize.BYTE_VOCAB_SIZE
#: SentencePiece ids fixed at training time (padding 0 as in every LRA task).
SP_PAD_ID, SP_UNK_ID, SP_BOS_ID, SP_EOS_ID = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A text tokenizer.

  Attributes:
    name: identifies the vocabulary ('bytes' or 'sentencepiece:<digest>').
    vocab_size: number of ids (padding included).
    separator_id: id placed between documents of a packed corpus and between the two sentences
      of a pair.
    special_ids: ids that are not text (padding, separators); masked-LM never selects them.
    encode: UTF-8 text -> 1-D int array of ids (no separators added).
    source: the model file (None for bytes), hashed into the data cache's fingerprint.
  """

  name: str
  vocab_size: int
  separator_id: int
  special_ids: tuple[int, ...]
  encode: Callable[[str], np.ndarray]
  source: Path | None = None


def _encode_bytes(text: str) -> np.ndarray:
  return tokenize.encode_bytes(text, len(text.encode('utf-8'))).astype(np.int32)


def load_tokenizer(spec: str) -> Tokenizer:
  """The tokenizer named by `spec`: 'bytes' or the path of a SentencePiece `.model` file.

  Raises:
    DataError: the model file is missing or not a SentencePiece model with the ids above.
  """
  if spec == BYTES:
    return Tokenizer(
      BYTES, BYTE_SEPARATOR_ID + 1, BYTE_SEPARATOR_ID, (0, BYTE_SEPARATOR_ID), _encode_bytes
    )
  import sentencepiece  # Imported on use: the byte tokenizer and the LRA tasks do not need it.

  path = Path(spec).expanduser()
  if not path.is_file():
    raise DataError(
      f'tokenizer {spec!r}: no such file. Use "bytes", or train a SentencePiece '
      f'model with: python -m corpora.text_tokenizers --input_dir <corpus> '
      f'--vocab_size 8000 --model_prefix {path.with_suffix("")}'
    )
  data = path.read_bytes()
  try:
    processor = sentencepiece.SentencePieceProcessor(model_proto=data)
  except (RuntimeError, OSError) as e:
    raise DataError(f'tokenizer {path}: not a SentencePiece model ({e}).') from None
  ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
  if ids != (SP_PAD_ID, SP_UNK_ID, SP_BOS_ID, SP_EOS_ID):
    raise DataError(
      f'tokenizer {path}: pad/unk/bos/eos ids are {ids}, expected '
      f'{(SP_PAD_ID, SP_UNK_ID, SP_BOS_ID, SP_EOS_ID)}; train it with '
      'python -m corpora.text_tokenizers.'
    )

  def encode(text: str) -> np.ndarray:
    return np.asarray(processor.encode(text), np.int32)

  digest = hashlib.sha256(data).hexdigest()[:16]
  return Tokenizer(
    f'sentencepiece:{digest}',
    processor.get_piece_size(),
    SP_EOS_ID,
    (SP_PAD_ID, SP_BOS_ID, SP_EOS_ID),
    encode,
    path,
  )


def text_files(data_dir: Path) -> list[Path]:
  """The corpus files of `data_dir`: its `*.txt` files (sorted), or `data_dir` itself if a file.

  Raises:
    DataError: no such file or folder, or a folder without `.txt` files.
  """
  data_dir = Path(data_dir).expanduser()
  if data_dir.is_file():
    return [data_dir]
  files = sorted(data_dir.glob('*.txt')) if data_dir.is_dir() else []
  if not files:
    raise DataError(
      f'{data_dir}: no corpus. Expected a text file, or a folder of *.txt files '
      'with one document per line.'
    )
  return files


def read_lines(path: Path):
  """Yields (1-based line number, text) of the non-empty lines of a UTF-8 file.

  Raises:
    DataError: a line is not valid UTF-8 (naming the file and line).
  """
  with open(path, 'rb') as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        text = raw.decode('utf-8').rstrip('\r\n')
      except UnicodeDecodeError as e:
        raise DataError(
          f'{path}:{line_no}: not valid UTF-8 ({e.reason} at byte {e.start}); '
          'convert the file to UTF-8 or remove the line.'
        ) from None
      if text.strip():
        yield line_no, text


def train_sentencepiece(
  files: Sequence[Path], model_prefix: str, vocab_size: int, model_type: str = 'unigram'
) -> Path:
  """Trains a SentencePiece model on the lines of `files` (with the fixed special ids above).

  Args:
    files: UTF-8 text files, one document per line.
    model_prefix: output path without suffix; writes `<prefix>.model` and `<prefix>.vocab`.
    vocab_size: number of ids, special ones included.
    model_type: 'unigram' (SentencePiece's default) or 'bpe'.

  Returns:
    The `.model` path.

  Raises:
    DataError: an undecodable line, or SentencePiece refuses the corpus (e.g. too few distinct
      pieces for `vocab_size`).
  """

  def sentences():
    for path in files:
      for _, text in read_lines(path):
        yield text

  return train_sentencepiece_on(
    sentences(), model_prefix, vocab_size, model_type, source=str([str(f) for f in files])
  )


def train_sentencepiece_on(
  sentences: Iterable[str],
  model_prefix: str,
  vocab_size: int,
  model_type: str = 'unigram',
  *,
  max_sentences: int = 0,
  source: str = 'the sentences',
) -> Path:
  """Trains a SentencePiece model on `sentences` (with the fixed special ids above; every
  character kept).

  Args:
    sentences: UTF-8 text, one sentence or document each.
    model_prefix: output path without suffix; writes `<prefix>.model` and `<prefix>.vocab`.
    vocab_size: number of ids, special ones included.
    model_type: 'unigram' (SentencePiece's default) or 'bpe'.
    max_sentences: train on a uniform sample of at most this many sentences (0: all of them).
    source: where the sentences come from, for the error message.

  Returns:
    The `.model` path.

  Raises:
    DataError: SentencePiece refuses the text (e.g. too few distinct pieces for `vocab_size`).
  """
  import sentencepiece  # Imported on use: the byte tokenizer and the LRA tasks do not need it.

  Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
  try:
    sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_prefix=model_prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      pad_id=SP_PAD_ID,
      unk_id=SP_UNK_ID,
      bos_id=SP_BOS_ID,
      eos_id=SP_EOS_ID,
      character_coverage=1.0,
      input_sentence_size=max_sentences,
      minloglevel=2,
    )
  except RuntimeError as e:
    raise DataError(f'SentencePiece training on {source} failed: {e}') from None
  return Path(model_prefix + '.model')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    '--input_dir',
    required=True,
    help='a text file, or a folder of *.txt files, one document per line',
  )
  parser.add_argument('--model_prefix', required=True, help='writes <prefix>.model, .vocab')
  parser.add_argument('--vocab_size', type=int, default=8000)
  parser.add_argument('--model_type', default='unigram', choices=('unigram', 'bpe'))
  args = parser.parse_args(argv)
  try:
    path = train_sentencepiece(
      text_files(Path(args.input_dir)), args.model_prefix, args.vocab_size, args.model_type
    )
  except DataError as e:
    parser.error(str(e))
  print(
    f'wrote {path} ({load_tokenizer(str(path)).name}); use it with '
    f'--config.data.options.tokenizer={path}'
  )


if __name__ == '__main__':
  main()
