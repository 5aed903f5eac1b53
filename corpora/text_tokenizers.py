"""Text tokenizers for pretraining corpora and GLUE-format tasks: UTF-8 bytes, SentencePiece, or the
GPT-2 BPE with a fairseq dictionary (the authors' released Luna-BERT models).

  'bytes'              the byte-level vocabulary of the LRA text tasks (pad 0, byte b -> b + 1)
                       plus a separator id 257 between documents (or sentence pairs); vocab 258.
  <path>.model         a SentencePiece model; train one on your corpus with
                         python -m corpora.text_tokenizers --input_dir corpus/ --vocab_size 8000 \\
                             --model_prefix corpus/spm
                       ids: pad 0, unk 1, bos 2, separator (eos) 3, then the pieces.
                       Documents of any length are used (longer ones than SentencePiece's
                       4192-byte sentence limit are split at sentence ends); the counts of what
                       was used are printed and kept in <prefix>.json. An existing model is
                       never replaced without --overwrite.
  <folder>             a folder with `dict.txt` (a fairseq dictionary), `encoder.json` and
                       `vocab.bpe` (GPT-2's byte-level BPE): RoBERTa's and the authors' Luna-BERT
                       vocabulary, id for id. Ids as fairseq's `Dictionary`: `<s>` 0, `<pad>` 1,
                       `</s>` 2, `<unk>` 3, then one per line of dict.txt (the model's `<mask>`
                       comes last, after them). Text is GPT-2-BPE-encoded and every BPE id is looked
                       up in dict.txt (absent: `<unk>`); an example is framed as the authors'
                       `LunaHubInterface.encode` does (fairseq-apollo
                       `fairseq/models/luna_bert/hub_interface.py`): `<s> a </s>`, or
                       `<s> a </s> </s> b </s>` for a pair.

SentencePiece (Kudo and Richardson, 2018) rather than Hugging Face `tokenizers` for the corpora's
own vocabularies: one small dependency that trains a subword model from raw text with one call (no
pre-tokenisation, no language-specific rules), is deterministic given its settings, stores the
whole model in a single file that can be hashed to identify the vocabulary, and is what the Flax
WMT/LM1B examples use. The GPT-2 BPE runs on Hugging Face `tokenizers` (maintained, reads GPT-2's
`encoder.json`/`vocab.bpe` as they are, with GPT-2's byte-to-unicode alphabet and pre-tokenisation
regex); fairseq downloads these two files, here they must be given (no network at run time).

Every tokenizer has a `name` that identifies its vocabulary ('bytes', 'sentencepiece:<the SHA-256
of the model file, 16 hex digits>', 'fairseq-dict:<the SHA-256 of dict.txt, 16 hex digits>'): a
pretrained encoder is only finetuned on data of the same name.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lra import cli, tokenize
from lra.core import DataError
from lra.files import write_atomically, writing_outputs

BYTES = 'bytes'
#: The byte vocabulary's separator id (after the 256 byte ids and padding).
BYTE_SEPARATOR_ID = tokenize.BYTE_VOCAB_SIZE
#: SentencePiece ids fixed at training time (padding 0 as in every LRA task).
SP_PAD_ID, SP_UNK_ID, SP_BOS_ID, SP_EOS_ID = 0, 1, 2, 3
#: fairseq's `Dictionary` specials, ids 0-3 in this order, and the masked-LM task's mask symbol,
#: added after the dictionary's lines (fairseq `fairseq/data/dictionary.py`,
#: `fairseq/tasks/masked_lm.py`).
FAIRSEQ_SPECIALS = ('<s>', '<pad>', '</s>', '<unk>')
FAIRSEQ_BOS_ID, FAIRSEQ_PAD_ID, FAIRSEQ_EOS_ID, FAIRSEQ_UNK_ID = 0, 1, 2, 3
FAIRSEQ_MASK = '<mask>'
#: The files of a GPT-2 BPE tokenizer folder.
FAIRSEQ_DICT, GPT2_ENCODER, GPT2_MERGES = 'dict.txt', 'encoder.json', 'vocab.bpe'


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A text tokenizer.

  Attributes:
    name: identifies the vocabulary ('bytes', 'sentencepiece:<digest>' or
      'fairseq-dict:<digest>').
    vocab_size: number of ids (padding included).
    separator_id: id placed between documents of a packed corpus and between the two sentences
      of a pair.
    special_ids: ids that are not text (padding, separators); masked-LM never selects them.
    encode: UTF-8 text -> 1-D int array of ids (no separators added).
    sources: the files it reads (none for bytes), hashed into the data cache's fingerprint.
    bos_ids: ids that start an example (`join`).
    eos_ids: ids that end each text of an example (`join`).
  """

  name: str
  vocab_size: int
  separator_id: int
  special_ids: tuple[int, ...]
  encode: Callable[[str], np.ndarray]
  sources: tuple[Path, ...] = ()
  bos_ids: tuple[int, ...] = ()
  eos_ids: tuple[int, ...] = ()

  def join(self, parts: Sequence[np.ndarray]) -> np.ndarray:
    """One example from its encoded texts: `bos first eos (separator next eos)...`.

    Args:
      parts: 1-D int arrays, one per text (a sentence, or the two of a pair).

    Returns:
      1-D int32 ids: for bytes and SentencePiece `a <sep> b`; for the GPT-2 BPE `<s> a </s> </s> b
      </s>`, as the authors' `LunaHubInterface.encode`.
    """
    pieces = [np.asarray(self.bos_ids, np.int32)]
    for i, part in enumerate(parts):
      if i:
        pieces.append(np.array([self.separator_id], np.int32))
      pieces += [np.asarray(part, np.int32), np.asarray(self.eos_ids, np.int32)]
    return np.concatenate(pieces)


def _encode_bytes(text: str) -> np.ndarray:
  return tokenize.encode_bytes(text, len(text.encode('utf-8'))).astype(np.int32)


def load_tokenizer(spec: str) -> Tokenizer:
  """The tokenizer named by `spec`: 'bytes', the path of a SentencePiece `.model` file, or a folder
  with a fairseq `dict.txt` and GPT-2's `encoder.json` and `vocab.bpe`.

  Raises:
    DataError: no spec; the model file is missing or not a SentencePiece model with the ids
      above; a folder without the three files, or with files that are not in their formats
      (`gpt2_tokenizer`).
  """
  if spec == BYTES:
    return Tokenizer(
      BYTES, BYTE_SEPARATOR_ID + 1, BYTE_SEPARATOR_ID, (0, BYTE_SEPARATOR_ID), _encode_bytes
    )
  if not spec:
    raise DataError(
      'no tokenizer given: set --config.data.options.tokenizer to "bytes", a SentencePiece model '
      f'or a folder with {FAIRSEQ_DICT}, {GPT2_ENCODER} and {GPT2_MERGES}.'
    )
  if Path(spec).expanduser().is_dir():
    return gpt2_tokenizer(Path(spec).expanduser())
  import sentencepiece  # Imported on use: the byte tokenizer and the LRA tasks do not need it.

  path = Path(spec).expanduser()
  if not path.is_file():
    raise DataError(
      f'tokenizer {spec!r}: no such file or folder. Use "bytes", a folder with {FAIRSEQ_DICT}, '
      f'{GPT2_ENCODER} and {GPT2_MERGES}, or train a SentencePiece model with: python -m '
      f'corpora.text_tokenizers --input_dir <corpus> --vocab_size 8000 --model_prefix '
      f'{path.with_suffix("")}'
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
    (path,),
  )


@dataclasses.dataclass(frozen=True)
class FairseqDictionary:
  """A fairseq dictionary as `fairseq.data.Dictionary.load` builds it from a `dict.txt`.

  Attributes:
    symbols: one per id: the four `FAIRSEQ_SPECIALS`, then one per line of the file.
    indices: symbol -> id (a line flagged `#fairseq:overwrite` takes over its symbol's id).
    name: the vocabulary's name, 'fairseq-dict:<SHA-256 of the file, 16 hex digits>'.
  """

  symbols: tuple[str, ...]
  indices: dict[str, int]
  name: str

  @property
  def mask_id(self) -> int:
    """The id of the masked-LM task's `<mask>`, added after the file's symbols."""
    return len(self.symbols)


def read_fairseq_dictionary(path: Path) -> FairseqDictionary:
  """Reads a fairseq `dict.txt`: lines `<symbol> <count> [#fairseq:overwrite]` (fairseq
  `fairseq/data/dictionary.py`, `Dictionary.add_from_file`).

  Args:
    path: the file (UTF-8).

  Returns:
    The dictionary, specials first.

  Raises:
    DataError: no such file, not UTF-8, a line not in the format, a symbol given twice without the
      overwrite flag, or a `<mask>` line (the masked-LM task adds `<mask>` after the file).
  """
  path = Path(path).expanduser()
  if not path.is_file():
    raise DataError(f'{path}: no such fairseq dictionary (dict.txt).')
  data = path.read_bytes()
  try:
    lines = data.decode('utf-8').splitlines()
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 ({e.reason} at byte {e.start}).') from None
  symbols = list(FAIRSEQ_SPECIALS)
  indices = {symbol: i for i, symbol in enumerate(symbols)}
  for line_no, line in enumerate(lines, start=1):
    fields = line.rstrip().rsplit(' ', 1)
    overwrite = len(fields) == 2 and fields[1] == '#fairseq:overwrite'
    if overwrite:
      fields = fields[0].rsplit(' ', 1)
    if len(fields) != 2 or not fields[1].lstrip('-').isdigit():
      raise DataError(f"{path}:{line_no}: {line!r} is not '<symbol> <count> [#fairseq:overwrite]'.")
    symbol = fields[0]
    if symbol == FAIRSEQ_MASK:
      raise DataError(
        f'{path}:{line_no}: {FAIRSEQ_MASK} is in the file; the masked-LM task adds it after the '
        'file, so this is not a masked-LM dictionary.'
      )
    if symbol in indices and not overwrite:
      raise DataError(
        f'{path}:{line_no}: symbol {symbol!r} again (line of id {indices[symbol]}); fairseq '
        'refuses duplicates without #fairseq:overwrite.'
      )
    indices[symbol] = len(symbols)
    symbols.append(symbol)
  return FairseqDictionary(
    tuple(symbols), indices, f'fairseq-dict:{hashlib.sha256(data).hexdigest()[:16]}'
  )


def gpt2_tokenizer(folder: Path) -> Tokenizer:
  """GPT-2's byte-level BPE (`encoder.json`, `vocab.bpe`) with a fairseq dictionary (`dict.txt`),
  all in `folder`: the vocabulary of RoBERTa and of the authors' Luna-BERT models.

  Encoding follows fairseq's `gpt2` BPE and `LunaHubInterface.encode`: GPT-2 BPE ids (no leading
  space added), each written as its decimal string and looked up in the dictionary (`<unk>` when
  absent). `join` frames an example as `<s> a </s>` or `<s> a </s> </s> b </s>`.

  Args:
    folder: holds `dict.txt`, `encoder.json` and `vocab.bpe`.

  Returns:
    The tokenizer: `vocab_size` = the dictionary's ids (without `<mask>`), separator `</s>`,
    special ids `<s>`, `<pad>`, `</s>`, `<unk>`; its name is the dictionary's.

  Raises:
    DataError: a file missing, a dictionary not in its format (`read_fairseq_dictionary`), an
      `encoder.json` that is not a JSON object of token -> id, or BPE files the library refuses.
  """
  from tokenizers import Tokenizer as BpeTokenizer  # Imported on use, like sentencepiece.
  from tokenizers import models, pre_tokenizers

  paths = [folder / name for name in (FAIRSEQ_DICT, GPT2_ENCODER, GPT2_MERGES)]
  missing = [p.name for p in paths if not p.is_file()]
  if missing:
    raise DataError(
      f"tokenizer folder {folder}: {missing} missing; it needs the model's {FAIRSEQ_DICT} and "
      f"GPT-2's {GPT2_ENCODER} and {GPT2_MERGES} (fairseq downloads the latter two; copy them in)."
    )
  dictionary = read_fairseq_dictionary(paths[0])
  try:
    encoder = json.loads(paths[1].read_text(encoding='utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f'{paths[1]}: not a JSON file ({e}).') from None
  if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
    raise DataError(f'{paths[1]}: not a JSON object of BPE token -> integer id.')
  try:
    bpe = BpeTokenizer(models.BPE.from_file(str(paths[1]), str(paths[2])))
  except Exception as e:  # The library raises plain Exceptions for malformed files.
    raise DataError(f'{paths[2]}: not a BPE merges file for {paths[1]} ({e}).') from None
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  # BPE id -> dictionary id, through the id's decimal string as fairseq's encode_line does.
  lookup = np.array(
    [dictionary.indices.get(str(i), FAIRSEQ_UNK_ID) for i in range(max(encoder.values()) + 1)],
    np.int32,
  )

  def encode(text: str) -> np.ndarray:
    return lookup[np.asarray(bpe.encode(text, add_special_tokens=False).ids, np.int64)]

  return Tokenizer(
    dictionary.name,
    len(dictionary.symbols),
    FAIRSEQ_EOS_ID,
    (FAIRSEQ_BOS_ID, FAIRSEQ_PAD_ID, FAIRSEQ_EOS_ID, FAIRSEQ_UNK_ID),
    encode,
    tuple(paths),
    bos_ids=(FAIRSEQ_BOS_ID,),
    eos_ids=(FAIRSEQ_EOS_ID,),
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


def read_lines(path: Path, *, keep_empty: bool = False) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, text) of the non-empty lines of a UTF-8 file (every line with
  `keep_empty`); lines end at newlines only (a lone carriage return is text).

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
      if keep_empty or text.strip():
        yield line_no, text


#: SentencePiece's limit on the bytes of one training sentence (its `max_sentence_length`
#: default): it silently skips longer ones, so longer documents are split first (`split_document`).
MAX_SENTENCE_BYTES = 4192
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def _utf8_len(text: str) -> int:
  return len(text.encode('utf-8'))


def _units(text: str, max_bytes: int) -> Iterator[str]:
  """The sentences of `text`; a longer one than `max_bytes` as its words, a longer word in cuts of
  at most `max_bytes` bytes (at character boundaries)."""
  for sentence in _SENTENCE_END.split(text):
    if _utf8_len(sentence) <= max_bytes:
      yield sentence
      continue
    for word in sentence.split():
      while _utf8_len(word) > max_bytes:
        cut = len(word.encode('utf-8')[:max_bytes].decode('utf-8', errors='ignore'))
        yield word[:cut]
        word = word[cut:]
      if word:
        yield word


def split_document(text: str, max_bytes: int = MAX_SENTENCE_BYTES) -> list[str]:
  """Splits a document into pieces of at most `max_bytes` UTF-8 bytes, at sentence ends where it
  can (then at spaces, then anywhere), so that SentencePiece's trainer skips none of it.

  Args:
    text: one document (no newline).
    max_bytes: the longest piece in bytes (>= 4, the longest UTF-8 character).

  Returns:
    `[text]` when it fits; else consecutive pieces that cover every non-space character of `text`
    in order, consecutive sentences joined by one space while they fit.
  """
  if _utf8_len(text) <= max_bytes:
    return [text]
  pieces: list[str] = []
  current, current_bytes = '', 0
  for unit in _units(text, max_bytes):
    unit_bytes = _utf8_len(unit)
    if current and current_bytes + 1 + unit_bytes <= max_bytes:
      current, current_bytes = f'{current} {unit}', current_bytes + 1 + unit_bytes
      continue
    if current:
      pieces.append(current)
    current, current_bytes = unit, unit_bytes
  if current:
    pieces.append(current)
  return pieces


def stats_path(model: str | Path) -> Path:
  """The record of what a SentencePiece model was trained on: `<prefix>.json` beside
  `<prefix>.model`."""
  return Path(model).with_suffix('.json')


def train_sentencepiece(
  files: Sequence[Path],
  model_prefix: str,
  vocab_size: int,
  model_type: str = 'unigram',
  *,
  overwrite: bool = False,
) -> Path:
  """Trains a SentencePiece model on the documents of `files` (with the fixed special ids above).

  Documents longer than `MAX_SENTENCE_BYTES` are split (`split_document`) instead of being skipped
  by SentencePiece. What was used is written beside the model (`stats_path`): the files, the
  documents, those split, the sentences and bytes given to SentencePiece, and those skipped
  (none). As the data generators do (`lra.files.writing_outputs`), existing outputs are never
  replaced without `overwrite`; the same command on the same corpus finds its outputs and keeps
  them.

  Args:
    files: UTF-8 text files, one document per line.
    model_prefix: output path without suffix; writes `<prefix>.model`, `<prefix>.vocab` and
      `<prefix>.json`.
    vocab_size: number of ids, special ones included (>= 5).
    model_type: 'unigram' (SentencePiece's default) or 'bpe'.
    overwrite: replace outputs that exist (else they are refused, unless written by this same
      training).

  Returns:
    The `.model` path.

  Raises:
    DataError: an empty `model_prefix` or one naming a folder, `vocab_size` < 5, an unknown
      `model_type`, outputs in the way (without `overwrite`), an undecodable line, no document, or
      SentencePiece refuses the corpus (e.g. too few distinct pieces for `vocab_size`).
  """

  if not model_prefix.strip() or Path(model_prefix).name in ('', '.', '..'):
    raise DataError(
      f'--model_prefix {model_prefix!r} names no file: give a path without suffix, e.g. '
      'corpus/spm (writes corpus/spm.model).'
    )
  if vocab_size < 5:
    raise DataError(
      f'--vocab_size {vocab_size}: must be at least 5 (4 special ids: pad, unk, bos, eos, and '
      'one piece).'
    )
  if model_type not in ('unigram', 'bpe'):
    raise DataError(f'--model_type {model_type!r}: must be "unigram" or "bpe".')
  names = ', '.join(str(f) for f in files)
  model = Path(model_prefix + '.model')
  outputs = [model, Path(model_prefix + '.vocab'), stats_path(model)]
  settings = {
    'files': {str(Path(f).resolve()): file_identity(Path(f)) for f in files},
    'vocab_size': vocab_size,
    'model_type': model_type,
    'max_sentence_bytes': MAX_SENTENCE_BYTES,
  }
  with writing_outputs(
    outputs, overwrite, settings, elsewhere='choose another --model_prefix'
  ) as todo:
    if not todo:
      return model
    stats = {'files': len(files), 'documents': 0, 'documents_split': 0, 'sentences': 0, 'bytes': 0}
    problems: list[DataError] = []

    def sentences():
      try:
        for path in files:
          for _, text in read_lines(path):
            pieces = split_document(text)
            stats['documents'] += 1
            stats['documents_split'] += len(pieces) > 1
            stats['sentences'] += len(pieces)
            stats['bytes'] += sum(_utf8_len(p) for p in pieces)
            yield from pieces
      except DataError as e:  # Raised again below, rather than through SentencePiece's C++ code.
        problems.append(e)

    try:
      train_sentencepiece_on(sentences(), model_prefix, vocab_size, model_type, source=names)
    except DataError as e:
      problems.append(e)
    if not stats['documents']:
      raise DataError(
        f'{names}: the corpus is empty (no non-empty line). Put one document per line.'
      )
    if problems:
      raise problems[0]
    record = {
      **stats,
      'skipped_documents': 0,
      'max_sentence_bytes': MAX_SENTENCE_BYTES,
      'vocabulary': load_tokenizer(str(model)).name,
    }
    write_atomically(stats_path(model), json.dumps(record, indent=2, sort_keys=True))
  return model


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
  character kept): what `train_sentencepiece` and the joint translation vocabulary
  (`corpora.translation`) run.

  Args:
    sentences: UTF-8 text, one sentence each, at most `MAX_SENTENCE_BYTES` bytes (SentencePiece
      skips longer ones: split them first, `split_document`).
    model_prefix: output path without suffix; writes `<prefix>.model` and `<prefix>.vocab`.
    vocab_size: number of ids, special ones included.
    model_type: 'unigram' (SentencePiece's default) or 'bpe'.
    max_sentences: train on a uniform sample of at most this many sentences (0: all of them).
    source: where the sentences come from, for the error message.

  Returns:
    The `.model` path.

  Raises:
    DataError: SentencePiece refuses the text (e.g. too few distinct pieces for `vocab_size`), or
      reading `sentences` raised one (e.g. a line that is not UTF-8): that one, as raised (an
      OSError too).
  """
  import sentencepiece  # Imported on use: the byte tokenizer and the LRA tasks do not need it.

  reading_errors = []

  def read() -> Iterator[str]:  # SentencePiece would wrap the reader's error in its own.
    try:
      yield from sentences
    except (DataError, OSError) as e:
      reading_errors.append(e)
      raise

  Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
  try:
    sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=read(),
      model_prefix=model_prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      pad_id=SP_PAD_ID,
      unk_id=SP_UNK_ID,
      bos_id=SP_BOS_ID,
      eos_id=SP_EOS_ID,
      character_coverage=1.0,
      input_sentence_size=max_sentences,
      max_sentence_length=MAX_SENTENCE_BYTES,
      minloglevel=2,
    )
  except RuntimeError as e:
    if reading_errors:
      raise reading_errors[0] from None
    raise DataError(f'SentencePiece training on {source} failed: {_reason(e)}') from None
  return Path(model_prefix + '.model')


def _reason(error: RuntimeError) -> str:
  """SentencePiece's message without its source location ('INTERNAL: src/x.cc(744) [check] '), or
  the check that failed when the message is nothing else."""
  located = re.match(r'INTERNAL: \S+\(\d+\) \[(.*?)\] ?(.*)', str(error), re.DOTALL)
  if located is None:
    return str(error).strip()
  check, message = located.groups()
  return message.strip() or f'its check {check} failed'


def file_identity(path: Path) -> dict[str, int]:
  """Size and modification time of a corpus file: a changed corpus is another training."""
  stat = path.stat()
  return {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    '--input_dir',
    required=True,
    help='a text file, or a folder of *.txt files, one document per line',
  )
  parser.add_argument(
    '--model_prefix', required=True, help='writes <prefix>.model, <prefix>.vocab, <prefix>.json'
  )
  parser.add_argument('--vocab_size', type=cli.integer(5), default=8000)
  parser.add_argument('--model_type', default='unigram', choices=('unigram', 'bpe'))
  parser.add_argument(
    '--overwrite', action='store_true', help='replace an existing model (default: refuse)'
  )
  args = parser.parse_args(argv)
  if not args.input_dir.strip():
    parser.error(
      '--input_dir is empty: give the corpus, a text file or a folder of *.txt files (never '
      'the working directory by default).'
    )
  existed = Path(args.model_prefix + '.model').exists() and not args.overwrite
  try:
    path = train_sentencepiece(
      text_files(Path(args.input_dir)),
      args.model_prefix,
      args.vocab_size,
      args.model_type,
      overwrite=args.overwrite,
    )
  except DataError as e:
    cli.refuse(e)
  stats = json.loads(stats_path(path).read_text(encoding='utf-8'))
  print(
    f'{path} ({stats["vocabulary"]}'
    f'{", kept: already trained with these settings" if existed else ""}): trained on '
    f'{stats["documents"]} documents from '
    f'{stats["files"]} file(s), {stats["sentences"]} sentences, {stats["bytes"]} bytes; '
    f'{stats["documents_split"]} documents longer than {stats["max_sentence_bytes"]} bytes '
    f'split into sentences, {stats["skipped_documents"]} skipped (recorded in '
    f'{stats_path(path)}). Use it with --config.data.options.tokenizer={path}'
  )


if __name__ == '__main__':
  main()
