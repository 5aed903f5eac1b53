"""Text tokenizers of the corpora (`corpora.text_tokenizers`): reading corpus lines, splitting long
documents for SentencePiece, and the checks of tokenizer files, on small files the tests write."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from corpora import text_tokenizers
from lra import DataError

FIXTURES = Path(__file__).parent / 'data' / 'fairseq_luna_bert'


def test_lines_end_at_newlines_only_and_blank_ones_are_skipped(tmp_path):
  """A trailing tab or space and a lone carriage return are text; CRLF ends a line; a line of
  spaces is skipped unless `keep_empty`."""
  path = tmp_path / 'a.tsv'
  path.write_bytes(b'a\t\n b \r\nc\rd\n   \n\n')
  assert list(text_tokenizers.read_lines(path)) == [(1, 'a\t'), (2, ' b '), (3, 'c\rd')]
  assert [n for n, _ in text_tokenizers.read_lines(path, keep_empty=True)] == [1, 2, 3, 4, 5]


def test_long_documents_are_split_by_utf8_bytes_not_characters():
  """Every piece of a document of two-byte characters fits the byte limit, and the pieces hold
  every non-space character in order."""
  text = 'éééééé. ab. ' + 'ü' * 12
  pieces = text_tokenizers.split_document(text, 10)
  assert all(len(piece.encode('utf-8')) <= 10 for piece in pieces), pieces
  assert ''.join(pieces).replace(' ', '') == text.replace(' ', '')


def test_a_sentencepiece_model_with_other_special_ids_is_refused(tmp_path):
  """A model trained with SentencePiece's own ids (no padding id 0) is refused, naming its ids."""
  import sentencepiece

  words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon']
  sentencepiece.SentencePieceTrainer.train(
    sentence_iterator=iter([' '.join(words[i:] + words[:i]) for i in range(5)] * 20),
    model_prefix=str(tmp_path / 'other'),
    vocab_size=20,
    minloglevel=2,
  )
  with pytest.raises(DataError, match=r'pad/unk/bos/eos ids are \(-1, 0, 1, 2\), expected'):
    text_tokenizers.load_tokenizer(str(tmp_path / 'other.model'))


def test_an_empty_corpus_is_named_as_such(tmp_path):
  """A corpus of blank lines fails saying it is empty, and leaves no model behind."""
  corpus = tmp_path / 'a.txt'
  corpus.write_text('\n  \n\n')
  with pytest.raises(DataError, match='the corpus is empty'):
    text_tokenizers.train_sentencepiece([corpus], str(tmp_path / 'spm'), 8)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt']


def test_an_encoder_json_with_ids_that_are_not_integers_is_refused(tmp_path):
  """GPT-2's encoder.json maps tokens to integer ids: another value is named as the problem."""
  folder = tmp_path / 'tok'
  folder.mkdir()
  for name in ('dict.txt', 'encoder.json', 'vocab.bpe'):
    shutil.copy(FIXTURES / 'tied' / name, folder / name)
  encoder = json.loads((folder / 'encoder.json').read_text(encoding='utf-8'))
  encoder[next(iter(encoder))] = 'zero'
  (folder / 'encoder.json').write_text(json.dumps(encoder), encoding='utf-8')
  with pytest.raises(DataError, match='not a JSON object of BPE token -> integer id'):
    text_tokenizers.load_tokenizer(str(folder))


def test_a_vocabulary_needs_a_piece_besides_the_four_special_ids(tmp_path):
  """`vocab_size` 4 holds only pad, unk, bos and eos: refused before anything is read or written."""
  with pytest.raises(DataError, match='--vocab_size 4: must be at least 5'):
    text_tokenizers.train_sentencepiece([tmp_path / 'none.txt'], str(tmp_path / 'spm'), 4)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('edited', ['encoder.json', 'vocab.bpe'])
def test_glue_arrays_cached_with_a_gpt2_tokenizer_follow_an_edit_of_its_bpe_files(tmp_path, edited):
  """The cached GLUE arrays of a GPT-2 BPE tokenizer are rebuilt when `encoder.json` or
  `vocab.bpe` changes, though the tokenizer's name (its `dict.txt`) stays the same."""
  import corpora

  folder = tmp_path / 'tok'
  folder.mkdir()
  for name in ('dict.txt', 'encoder.json', 'vocab.bpe'):
    shutil.copy(FIXTURES / 'tied' / name, folder / name)
  data_dir = tmp_path / 'sst2'
  data_dir.mkdir()
  for name in ('train.tsv', 'dev.tsv'):
    (data_dir / name).write_text('sentence\tlabel\nthe wind and the rain\t1\n', encoding='utf-8')

  def load(**options):
    options = dict(glue_task='sst2', tokenizer=str(folder), max_length=16, **options)
    return corpora.load_task('glue', data_dir, **options).train.inputs.copy()

  before = load()
  if edited == 'vocab.bpe':  # No merges: every byte its own token.
    (folder / edited).write_text('#version: 0.2\n', encoding='utf-8')
  else:  # Two merged tokens of the sentence trade ids.
    encoder = json.loads((folder / edited).read_text(encoding='utf-8'))
    encoder['Ġthe'], encoder['Ġand'] = encoder['Ġand'], encoder['Ġthe']
    (folder / edited).write_text(json.dumps(encoder), encoding='utf-8')
  after = load()
  assert (data_dir / 'lra_cache').is_dir()
  assert not np.array_equal(after, before)
  np.testing.assert_array_equal(after, load(cache=False))
