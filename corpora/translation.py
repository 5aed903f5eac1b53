"""Parallel text for machine translation (paper §4.2 and appendix A.2: WMT'14 En-De), tokenised
with one SentencePiece vocabulary shared by source and target, batched by tokens.

Files in `data_dir`, for each split (`train`, `validation`, `test`), either layout:
  <split>.<source_lang> and <split>.<target_lang>   line i of one translates line i of the other
  <split>.tsv                                       lines `source<TAB>target`
(the plain files win where both exist). `python -m corpora.wmt14` writes WMT'14 En-De in the first
layout from TFDS data; `python -m corpora.translation_generator` a small rule-based corpus.

The vocabulary: one command trains a joint BPE SentencePiece model on the training text of both
languages (the paper shares source and target vocabularies, 37K BPE types):

  python -m corpora.translation vocabulary --data_dir DIR --vocab_size 37000

writes `DIR/spm.model`, the data option `tokenizer`'s default (a bare file name is looked up in
`data_dir`). Its identity ('sentencepiece:<SHA-256 prefix>', `corpora.text_tokenizers`) is the
data's vocabulary, stored in every checkpoint: a model is never resumed, nor used to translate,
with another vocabulary.

Both sides get the EOS appended (fairseq's binarised data); the decoder starts from BOS. What is
checked, before any training:
  - the two files of a split must have as many lines (else an error naming both and the line where
    the shorter one ends); a TSV line must have 2 fields, every line valid UTF-8 (else an error
    naming file and line);
  - a pair with an empty side is skipped, in every split, and counted;
  - a training pair longer than `max_length` (source) or `max_target_length` (target) tokens, EOS
    included, is skipped and counted (fairseq's size filter); a validation or test pair is kept,
    cut to the limits, and counted (`num_truncated`), so that BLEU covers the whole test set.
Each count is logged as one warning line naming the file and the first such lines, and kept in
`TaskData.info['skipped']`. The splits are `corpora.token_batches.TokenPairs` in the token cache;
the task batches them with `corpora.token_batches.TokenBatching` (`max_tokens` per device). The
raw target lines of validation and test (`info['references']`) are what BLEU is scored against.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from corpora import text_tokenizers
from corpora.token_batches import TokenBatching, TokenPairs, length_buckets
from lra import cli, tokenize
from lra.cache import Cache
from lra.core import DataError, TaskData, line_list
from lra.files import writing_outputs

SPLITS = ('train', 'validation', 'test')
#: The data option `tokenizer`'s default, in `data_dir`.
DEFAULT_TOKENIZER = 'spm.model'
#: Sentences the vocabulary command samples at most from the training text (SentencePiece's
#: `input_sentence_size`; WMT'14 En-De has 9M).
VOCABULARY_SENTENCES = 10_000_000
#: Encoded per SentencePiece call.
_CHUNK = 10_000


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """Where one split is: two aligned plain files, or one TSV file."""

  source: Path
  target: Path | None = None

  @property
  def paths(self) -> list[Path]:
    return [self.source] if self.target is None else [self.source, self.target]

  def __str__(self) -> str:
    return ' + '.join(str(p) for p in self.paths)


def split_files(data_dir: Path, split: str, source_lang: str, target_lang: str) -> SplitFiles:
  """The files of `split`: `<split>.<source_lang>` + `<split>.<target_lang>`, else `<split>.tsv`.

  Raises:
    DataError: neither layout is there (naming both and the commands that write them).
  """
  plain = (data_dir / f'{split}.{source_lang}', data_dir / f'{split}.{target_lang}')
  if all(p.is_file() for p in plain):
    return SplitFiles(*plain)
  tsv = data_dir / f'{split}.tsv'
  if tsv.is_file():
    return SplitFiles(tsv)
  raise DataError(
    f'No {split} split in {data_dir}: expected {plain[0].name} and {plain[1].name} (one sentence '
    f"a line, aligned), or {tsv.name} (source<TAB>target). WMT'14 En-De: python -m corpora.wmt14 "
    f'--output_dir {shlex.quote(str(data_dir))}; a small generated corpus: python -m '
    f'corpora.translation_generator --output_dir {shlex.quote(str(data_dir))}'
  )


def _decoded(path: Path, line_no: int, raw: bytes) -> str:
  try:
    return raw.decode('utf-8').rstrip('\r\n')
  except UnicodeDecodeError as e:
    raise DataError(
      f'{path}:{line_no}: not valid UTF-8 ({e.reason} at byte {e.start}); convert the file to '
      'UTF-8 or remove the line (in both files of the pair).'
    ) from None


def read_pairs(files: SplitFiles) -> Iterator[tuple[int, str, str]]:
  """Yields (1-based line number, source, target) of every line, empty sides included.

  Raises:
    DataError: the two files have different numbers of lines, a TSV line without 2 fields, a line
      that is not UTF-8 (each naming file and line).
  """
  if files.target is None:
    with open(files.source, 'rb') as f:
      for line_no, raw in enumerate(f, start=1):
        fields = _decoded(files.source, line_no, raw).split('\t')
        if len(fields) != 2:
          raise DataError(
            f'{files.source}:{line_no}: expected 2 tab-separated fields (source, target), got '
            f'{len(fields)}'
          )
        yield line_no, fields[0], fields[1]
    return
  with open(files.source, 'rb') as source, open(files.target, 'rb') as target:
    for line_no in range(1, 1 << 62):
      raw_source, raw_target = source.readline(), target.readline()
      if not raw_source or not raw_target:
        if raw_source or raw_target:
          longer, shorter = (
            (files.source, files.target) if raw_source else (files.target, files.source)
          )
          raise DataError(
            f'{shorter} ends after line {line_no - 1} but {longer} goes on (line {line_no}): '
            'the two files of a split must be aligned line by line.'
          )
        return
      yield (
        line_no,
        _decoded(files.source, line_no, raw_source),
        _decoded(files.target, line_no, raw_target),
      )


class Vocabulary:
  """A joint SentencePiece model: its identity (`name`), batch encoding and decoding.

  Args:
    path: the `.model` file (ids: pad 0, unk 1, bos 2, eos 3; `python -m corpora.translation
      vocabulary` writes one).

  Raises:
    DataError: no such file, or not a SentencePiece model with those ids.
  """

  def __init__(self, path: str | Path):
    tokenizer = text_tokenizers.load_tokenizer(str(path))
    if not tokenizer.name.startswith('sentencepiece:'):
      raise DataError(
        f'{path}: not a SentencePiece model ({tokenizer.name}); translation takes the joint one '
        'that `python -m corpora.translation vocabulary` writes.'
      )
    import sentencepiece  # After load_tokenizer, which checks the file.

    self.path = Path(path)
    self.name = tokenizer.name
    self.size = tokenizer.vocab_size
    self._processor = sentencepiece.SentencePieceProcessor(model_file=str(path))

  def encode(self, lines: list[str]) -> list[np.ndarray]:
    """Token ids of each line, EOS appended."""
    return [
      np.asarray([*ids, text_tokenizers.SP_EOS_ID], np.int64)
      for ids in self._processor.encode(lines)
    ]

  def decode(self, ids: list[list[int]]) -> list[str]:
    """Detokenised text of each id sequence (cut at its first EOS; padding and BOS dropped)."""
    specials = {text_tokenizers.SP_PAD_ID, text_tokenizers.SP_BOS_ID}
    texts = []
    for sequence in ids:
      sequence = list(sequence)
      if text_tokenizers.SP_EOS_ID in sequence:
        sequence = sequence[: sequence.index(text_tokenizers.SP_EOS_ID)]
      texts.append(self._processor.decode([int(i) for i in sequence if i not in specials]))
    return texts


def cut_keeping_eos(ids: np.ndarray, max_length: int) -> np.ndarray:
  """`ids` (ending in EOS) cut to at most `max_length` ids, the last still the EOS."""
  if len(ids) <= max_length:
    return ids
  return np.append(ids[: max_length - 1], text_tokenizers.SP_EOS_ID).astype(ids.dtype)


def resolve_tokenizer(data_dir: Path, tokenizer: str) -> Path:
  """The model file of the `tokenizer` option: a bare file name is in `data_dir`."""
  path = Path(tokenizer).expanduser()
  return data_dir / path if path.parent == Path('.') else path


def _note(counts: dict[str, list[int]], split: str, files: SplitFiles, what: str) -> None:
  lines = counts.get(what, [])
  if lines:
    logging.warning(
      'translation %s (%s): %d pair(s) %s (lines %s).',
      split,
      files,
      len(lines),
      {
        'empty': 'with an empty side were skipped',
        'too_long': 'longer than the length limits were skipped',
        'truncated': 'longer than the length limits were cut to them',
      }[what],
      line_list(lines),
    )


def tokenize_split(
  files: SplitFiles,
  vocabulary: Vocabulary,
  *,
  max_length: int,
  max_target_length: int,
  skip_long: bool,
) -> tuple[TokenPairs, dict[str, list[int]]]:
  """Reads and encodes one split (module docstring for what is skipped, cut and counted).

  Returns:
    (the split, {'empty', 'too_long', 'truncated': the line numbers of the pairs concerned}).

  Raises:
    DataError: misaligned files, a malformed TSV line, a line that is not UTF-8.
  """
  dtype = tokenize.id_dtype(vocabulary.size)
  kept = {'source': [], 'target': [], 'line': []}
  noted: dict[str, list[int]] = {'empty': [], 'too_long': [], 'truncated': []}

  def flush(chunk):
    sources = vocabulary.encode([s for _, s, _ in chunk])
    targets = vocabulary.encode([t for _, _, t in chunk])
    for (line_no, _, _), source, target in zip(chunk, sources, targets):
      if len(source) > max_length or len(target) > max_target_length:
        if skip_long:
          noted['too_long'].append(line_no)
          continue
        noted['truncated'].append(line_no)
        source = cut_keeping_eos(source, max_length)
        target = cut_keeping_eos(target, max_target_length)
      kept['source'].append(source.astype(dtype))
      kept['target'].append(target.astype(dtype))
      kept['line'].append(line_no)

  chunk = []
  for line_no, source, target in read_pairs(files):
    if not source.strip() or not target.strip():
      noted['empty'].append(line_no)
      continue
    chunk.append((line_no, source, target))
    if len(chunk) == _CHUNK:
      flush(chunk)
      chunk = []
  flush(chunk)
  join = lambda arrays: np.concatenate(arrays) if arrays else np.zeros((0,), dtype)
  pairs = TokenPairs(
    source=join(kept['source']),
    source_lengths=np.array([len(s) for s in kept['source']], np.int32),
    target=join(kept['target']),
    target_lengths=np.array([len(t) for t in kept['target']], np.int32),
    line_numbers=np.array(kept['line'], np.int32),
    num_truncated=len(noted['truncated']),
    num_skipped={'empty': len(noted['empty']), 'too_long': len(noted['too_long'])},
  )
  return pairs, noted


def _to_arrays(split: TokenPairs, noted: dict[str, list[int]]) -> dict[str, np.ndarray]:
  """A split and its noted lines as the cache's arrays."""
  arrays = dict(split.arrays())
  for what, lines in noted.items():
    arrays[f'noted_{what}'] = np.array(lines, np.int64)
  return arrays


def _from_arrays(arrays: dict[str, np.ndarray]) -> tuple[TokenPairs, dict[str, list[int]]]:
  noted = {key[6:]: arrays[key].tolist() for key in arrays if key.startswith('noted_')}
  fields = {key: arrays[key] for key in arrays if not key.startswith('noted_')}
  split = TokenPairs(
    **fields,
    num_truncated=len(noted['truncated']),
    num_skipped={'empty': len(noted['empty']), 'too_long': len(noted['too_long'])},
  )
  return split, noted


def references(files: SplitFiles, line_numbers: np.ndarray) -> list[str]:
  """The raw target text at `line_numbers` (1-based, increasing) of a split's files."""
  wanted = iter(line_numbers.tolist())
  following = next(wanted, None)
  found = []
  for line_no, _, target in read_pairs(files):
    if line_no == following:
      found.append(target)
      following = next(wanted, None)
  return found


def load(
  data_dir: Path,
  *,
  cache: Cache,
  max_length: int,
  max_target_length: int,
  source_lang: str,
  target_lang: str,
  tokenizer: str,
  max_tokens: int,
) -> TaskData:
  """Loads a parallel corpus (module docstring), tokenised through the cache.

  Args:
    data_dir: the folder with the split files.
    cache: tokenised-array cache (keyed by the files' and the vocabulary's contents).
    max_length: most source tokens, EOS included.
    max_target_length: most target tokens, EOS included.
    source_lang: suffix of the source files.
    target_lang: suffix of the target files.
    tokenizer: the joint SentencePiece model (a bare file name is in `data_dir`).
    max_tokens: tokens per device and batch (`TokenBatching`).

  Returns:
    The task: `TokenPairs` splits, vocab_size (= num_classes) of the vocabulary, max_length the
    longer of the two limits, `batching` a `TokenBatching`, and `info` with 'bos_id', 'eos_id',
    'vocabulary' (its identity), 'tokenizer' (the model file), 'special_ids', 'languages',
    'skipped' ({split: {reason: count}}, with 'truncated') and 'references' ({'validation',
    'test': raw target lines of the kept pairs}).

  Raises:
    DataError: missing files or vocabulary, malformed lines (named), `max_tokens` below the longest
      padded example, a split left with no pairs.
  """
  files = {split: split_files(data_dir, split, source_lang, target_lang) for split in SPLITS}
  model_path = resolve_tokenizer(data_dir, tokenizer)
  if not model_path.is_file():
    raise DataError(
      f'No vocabulary at {model_path}. Train the joint SentencePiece model on the training text '
      f'with: python -m corpora.translation vocabulary --data_dir {shlex.quote(str(data_dir))} '
      f'--source_lang {source_lang} --target_lang {target_lang} --vocab_size 37000\n'
      "(37000: the WMT'14 vocabulary of the paper; a small corpus supports fewer pieces, and "
      "SentencePiece names the most it can learn: e.g. 400 for the README's toy corpus)."
    )
  vocabulary = Vocabulary(model_path)
  batching = TokenBatching(max_tokens, length_buckets(max(max_length, max_target_length)))
  splits, noted = {}, {}
  for split, split_paths in files.items():

    def build(split=split, split_paths=split_paths):
      pairs, lines = tokenize_split(
        split_paths,
        vocabulary,
        max_length=max_length,
        max_target_length=max_target_length,
        skip_long=split == 'train',
      )
      return _to_arrays(pairs, lines)

    arrays = cache.load_or_build(
      f'translation-{split}',
      build,
      params={
        'split': split,
        'max_length': max_length,
        'max_target_length': max_target_length,
        'layout': [p.name for p in split_paths.paths],
      },
      content_files=[*split_paths.paths, model_path],
    )
    splits[split], noted[split] = _from_arrays(arrays)
    for what in ('empty', 'too_long', 'truncated'):
      _note(noted[split], split, split_paths, what)
    if splits[split].num_examples == 0:
      raise DataError(
        f'{split_paths}: no pairs left for the translation {split} split (skipped: '
        f'{splits[split].num_skipped}). Every split needs at least one.'
      )
  return TaskData(
    'translation',
    splits['train'],
    splits['validation'],
    splits['test'],
    vocab_size=vocabulary.size,
    num_classes=vocabulary.size,
    max_length=max(max_length, max_target_length),
    info={
      'bos_id': text_tokenizers.SP_BOS_ID,
      'eos_id': text_tokenizers.SP_EOS_ID,
      'vocabulary': vocabulary.name,
      'tokenizer': str(model_path),
      'special_ids': [
        text_tokenizers.SP_PAD_ID,
        text_tokenizers.SP_BOS_ID,
        text_tokenizers.SP_EOS_ID,
      ],
      'languages': [source_lang, target_lang],
      'skipped': {
        name: {**split.num_skipped, 'truncated': split.num_truncated}
        for name, split in splits.items()
      },
      'references': {
        name: references(files[name], splits[name].line_numbers) for name in ('validation', 'test')
      },
    },
    batching=batching,
  )


def train_vocabulary(
  data_dir: Path,
  *,
  source_lang: str = 'en',
  target_lang: str = 'de',
  vocab_size: int = 37000,
  model_type: str = 'bpe',
  output: str = DEFAULT_TOKENIZER,
  max_sentences: int = VOCABULARY_SENTENCES,
  overwrite: bool = False,
) -> Path:
  """Trains the joint SentencePiece model on the training text of both languages.

  An existing model is kept when this same training wrote it (the same command is a no-op), and
  otherwise refused unless `overwrite`: runs trained on it refuse another vocabulary.

  Args:
    data_dir: the corpus folder (its `train` split, either layout).
    source_lang: suffix of the source files.
    target_lang: suffix of the target files.
    vocab_size: ids in all, the four special ones included (paper: 37K BPE types).
    model_type: 'bpe' (the paper) or 'unigram'.
    output: the model file (a bare file name is in `data_dir`); `.vocab` is written beside it.
    max_sentences: sentences sampled at most (SentencePiece's `input_sentence_size`).
    overwrite: replace a model that this training did not write.

  Returns:
    The `.model` path.

  Raises:
    DataError: missing or malformed training files, an `output` that is not a `.model` file or
      would replace a folder or a file of the corpus, a model in the way (without `overwrite`), or
      SentencePiece refuses the text.
  """
  files = split_files(data_dir, 'train', source_lang, target_lang)
  path = resolve_tokenizer(data_dir, output)
  corpus = {  # Every split's files, in either layout.
    (data_dir / f'{split}.{suffix}').resolve()
    for split in SPLITS
    for suffix in (source_lang, target_lang, 'tsv')
  }
  # What writing_outputs would replace with overwrite, were it in the way, must be this model's.
  outputs = [path, path.with_suffix('.vocab')] if path.suffix == '.model' else []
  refused = {p: 'a folder' for p in outputs if p.is_dir()}
  refused |= {p: 'one of the corpus files' for p in outputs if p.resolve() in corpus}
  if not outputs:
    refused = {path: 'not a .model file (SentencePiece writes <name>.model and <name>.vocab)'}
  if refused:
    wanted, what = next(iter(refused.items()))
    raise DataError(
      f'--output {output!r} would write {wanted}, which is {what}: name the model file to write '
      f'(default {DEFAULT_TOKENIZER}, in the data folder).'
    )
  settings = {
    'files': {str(f.resolve()): text_tokenizers.file_identity(f) for f in files.paths},
    'vocab_size': vocab_size,
    'model_type': model_type,
    'max_sentences': max_sentences,
  }
  with writing_outputs(outputs, overwrite, settings, elsewhere='choose another --output') as todo:
    if not todo:
      return path

    def sentences() -> Iterator[str]:
      for _, source, target in read_pairs(files):
        yield from (text for text in (source, target) if text.strip())

    text_tokenizers.train_sentencepiece_on(
      sentences(),
      str(path.with_suffix('')),
      vocab_size,
      model_type,
      max_sentences=max_sentences,
      source=str(files),
    )
  return path


def _sentence_sample(text: str) -> int:
  """An argparse type: SentencePiece's sample size, 0 (every sentence) or more than 100 (its
  `input_sentence_size` takes nothing between)."""
  value = cli.integer(0)(text)
  if 1 <= value <= 100:
    raise argparse.ArgumentTypeError(f'must be 0 (all) or an integer > 100, got {text!r}')
  return value


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  commands = parser.add_subparsers(dest='command', required=True)
  vocab = commands.add_parser('vocabulary', help='train the joint SentencePiece model')
  vocab.add_argument('--data_dir', required=True, type=cli.path)
  vocab.add_argument('--source_lang', default='en')
  vocab.add_argument('--target_lang', default='de')
  vocab.add_argument('--vocab_size', type=cli.integer(5), default=37000)
  vocab.add_argument('--model_type', default='bpe', choices=('bpe', 'unigram'))
  vocab.add_argument(
    '--output', type=cli.path, default=DEFAULT_TOKENIZER, help='model file (bare: in data_dir)'
  )
  vocab.add_argument(
    '--max_sentences',
    type=_sentence_sample,
    default=VOCABULARY_SENTENCES,
    help='sentences SentencePiece samples (0: all)',
  )
  vocab.add_argument(
    '--overwrite', action='store_true', help='replace an existing model (default: refuse)'
  )
  args = parser.parse_args(argv)
  try:
    path = train_vocabulary(
      Path(args.data_dir),
      source_lang=args.source_lang,
      target_lang=args.target_lang,
      vocab_size=args.vocab_size,
      model_type=args.model_type,
      output=str(args.output),
      max_sentences=args.max_sentences,
      overwrite=args.overwrite,
    )
  except DataError as e:
    cli.refuse(e)
  print(f'{path} ({Vocabulary(path).name})')


if __name__ == '__main__':
  main()
