"""Token-level tasks for the causal models: parallel-text and document readers, toy generators."""

import numpy as np
import pytest

import corpora
import lra
from corpora import sequence_generator
from corpora.sequences import BOS_ID, EOS_ID, VOCAB_SIZE


def write_pairs(tmp_path, lines):
  for name in ('train.tsv', 'validation.tsv', 'test.tsv'):
    (tmp_path / name).write_bytes(lines)
  return tmp_path


def test_parallel_text_is_byte_tokenised_with_eos(tmp_path):
  write_pairs(tmp_path, b'ab\tBA\n\xc3\xa9\tz\r\n')
  data = corpora.load_task('seq2seq', tmp_path, max_length=4, max_target_length=3, cache=False)
  np.testing.assert_array_equal(data.train.inputs, [[98, 99, 0, 0], [196, 170, 0, 0]])
  np.testing.assert_array_equal(data.train.lengths, [2, 2])
  np.testing.assert_array_equal(data.train.targets, [[67, 66, EOS_ID], [123, EOS_ID, 0]])
  assert data.vocab_size == VOCAB_SIZE and data.info == {'bos_id': BOS_ID, 'eos_id': EOS_ID}


def test_long_targets_are_cut_to_keep_the_eos(tmp_path):
  write_pairs(tmp_path, b'a\tabcdef\n')
  data = corpora.load_task('seq2seq', tmp_path, max_length=4, max_target_length=3, cache=False)
  np.testing.assert_array_equal(data.test.targets, [[98, 99, EOS_ID]])


@pytest.mark.parametrize(
  'line, message',
  [(b'no tab here', 'expected 2 tab-separated fields'), (b'\tb', 'empty source')],
)
def test_malformed_pair_names_file_and_line(tmp_path, line, message):
  write_pairs(tmp_path, b'a\tb\n' + line + b'\n')
  with pytest.raises(lra.DataError, match=rf'train\.tsv:2: {message}'):
    corpora.load_task('seq2seq', tmp_path, cache=False)


def test_documents_become_next_token_pairs(tmp_path):
  for name in ('train.txt', 'validation.txt', 'test.txt'):
    (tmp_path / name).write_text('ab\n\nc\n')
  data = corpora.load_task('lm', tmp_path, max_length=4, cache=False)
  np.testing.assert_array_equal(data.train.inputs, [[BOS_ID, 98, 99, 0], [BOS_ID, 100, 0, 0]])
  np.testing.assert_array_equal(data.train.targets, [[98, 99, EOS_ID, 0], [100, EOS_ID, 0, 0]])
  np.testing.assert_array_equal(data.train.lengths, [3, 2])


def test_missing_corpus_names_files_and_generator(tmp_path):
  with pytest.raises(lra.DataError, match='(?s)train.tsv.*corpora.sequence_generator --task sort'):
    corpora.load_task('seq2seq', tmp_path / 'nothing')


@pytest.mark.parametrize('task', ['sort', 'reverse'])
def test_generated_pairs_are_correct_and_seeded(tmp_path, task):
  sequence_generator.write(task, tmp_path / 'a', num_train=50, num_val=5, num_test=5, seed=3)
  sequence_generator.write(task, tmp_path / 'b', num_train=50, num_val=5, num_test=5, seed=3)
  text = (tmp_path / 'a' / 'train.tsv').read_text()
  assert text == (tmp_path / 'b' / 'train.tsv').read_text()
  for line in text.splitlines():
    source, target = line.split('\t')
    assert 4 <= len(source) <= 12 and source.isdigit()
    assert target == (''.join(sorted(source)) if task == 'sort' else source[::-1])


def test_lengths_the_wrong_way_round_are_one_error_line_and_no_folder(tmp_path, capsys):
  args = ['--task', 'sort', '--output_dir', str(tmp_path / 'out'), '--min_length', '9']
  with pytest.raises(SystemExit) as exit_info:
    sequence_generator.main([*args, '--max_length', '3'])
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == 'Error: --min_length 9 is above --max_length 3.\n'
  assert not (tmp_path / 'out').exists()
  sequence_generator.main([*args, '--max_length', '9'])  # One length is a range.
  assert {len(line.split('\t')[0]) for line in (tmp_path / 'out' / 'test.tsv').open()} == {9}


def test_impossible_lm_lengths_keep_the_corpus_overwrite_would_replace(tmp_path, capsys):
  args = ['--task', 'lm', '--output_dir', str(tmp_path), '--num_train', '20', '--num_val', '5']
  sequence_generator.main([*args, '--num_test', '5', '--min_length', '5', '--max_length', '30'])
  before = {p: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(SystemExit):
    sequence_generator.main([*args, '--min_length', '20', '--max_length', '5', '--overwrite'])
  assert 'no room for a tree' in capsys.readouterr().err
  assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_generated_lm_lines_carry_their_listops_value(tmp_path):
  sequence_generator.write(
    'lm', tmp_path, num_train=30, num_val=5, num_test=5, min_length=5, max_length=30
  )
  lines = (tmp_path / 'train.txt').read_text().splitlines()
  assert len(lines) == 30
  assert lines[0].startswith('[') and '(' not in lines[0]
  expression, value = lines[0].rsplit('=', 1)
  assert 0 <= int(value) <= 9 and expression.endswith(']')


def write_glue(folder, header, rows):
  """GLUE's train.tsv and dev.tsv, both with `header` and `rows`."""
  for name in ('train.tsv', 'dev.tsv'):
    (folder / name).write_text(header + ''.join(f'{row}\n' for row in rows))
  return folder


def test_glue_rows_longer_than_max_length_keep_their_start_and_are_counted(tmp_path):
  """A sentence of max_length bytes fits; a longer one is cut to its first max_length bytes."""
  write_glue(tmp_path, 'sentence\tlabel\n', ['abcd\t1', 'abcde\t0'])
  data = corpora.load_task('glue', tmp_path, glue_task='sst2', max_length=4, cache=False)
  assert data.train.num_truncated == 1
  np.testing.assert_array_equal(data.train.inputs[1], [t + 1 for t in b'abcd'])
  np.testing.assert_array_equal(data.train.inputs[0], data.train.inputs[1])


@pytest.mark.parametrize(
  'header, message',
  [
    (
      'sentence\tlab\n',
      r"train\.tsv:1: header \['sentence', 'lab'\] lacks column\(s\) \['label'\]",
    ),
    ('', r"train\.tsv: empty file; expected a header row with \['sentence', 'label'\]"),
  ],
)
def test_glue_file_without_its_header_columns_is_named(tmp_path, header, message):
  """A header without the task's columns, or no header at all, is refused naming the file."""
  write_glue(tmp_path, header, [])
  with pytest.raises(lra.DataError, match=message):
    corpora.load_task('glue', tmp_path, glue_task='sst2', cache=False)


def test_unknown_glue_task_is_refused(tmp_path):
  """A glue_task other than sst2, qnli, qqp is refused before any file is read."""
  with pytest.raises(
    lra.DataError, match=r"glue_task 'mnli' is not one of \['qnli', 'qqp', 'sst2'\]"
  ):
    corpora.load_task('glue', tmp_path, glue_task='mnli', cache=False)


def test_glue_ids_of_a_vocabulary_over_65536_are_kept_whole(tmp_path):
  """Ids of a vocabulary larger than uint16 holds are stored in a wider dtype, unchanged."""
  from corpora import glue, text_tokenizers

  big = text_tokenizers.Tokenizer(
    'big', 70_000, 69_998, (0, 69_998), lambda text: np.array([69_999, len(text)], np.int32)
  )
  write_glue(tmp_path, 'sentence\tlabel\n', ['abc\t1'])
  split = glue.read_tsv(tmp_path / 'train.tsv', 4, glue_task='sst2', tokenizer=big)
  np.testing.assert_array_equal(split.inputs, [[69_999, 3, 0, 0]])
  assert np.iinfo(split.inputs.dtype).max >= 69_999
