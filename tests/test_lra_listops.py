"""Tests of the ListOps loader and the ListOps generator."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lra
from lra import listops, listops_generator

# Hand-written rows in the official serialisation, with their labels.
ROWS = [
  ('( ( ( [MAX 2 ) 9 ) ] )', 9),
  ('( ( ( ( ( [MED 1 ) 2 ) 3 ) 4 ) ] )', 2),
  ('( ( ( [SM 9 ) ( ( ( [MIN 5 ) 3 ) ] ) ) ] )', 2),
]


def write_listops(directory: Path, rows=ROWS, line_end='\r\n') -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for name in listops.FILES.values():
    text = f'Source\tTarget{line_end}' + ''.join(f'{s}\t{t}{line_end}' for s, t in rows)
    (directory / name).write_text(text, newline='')


def evaluate(tokens: list[str]) -> int:
  """Independent stack evaluator of a tokenised ListOps expression."""
  stack: list = []
  for token in tokens:
    if token == 'X':
      args = []
      while not isinstance(stack[-1], str):
        args.append(stack.pop())
      op = stack.pop()
      args.reverse()
      stack.append(
        {'[MIN': min(args), '[MAX': max(args), '[SM': sum(args) % 10, '[MED': int(np.median(args))}[
          op
        ]
      )
    else:
      stack.append(token if token.startswith('[') else int(token))
  return stack[0]


def test_exact_token_ids(tmp_path):
  write_listops(tmp_path)
  data = lra.load_task('listops', tmp_path, max_length=12, cache=False)
  assert (data.vocab_size, data.num_classes, data.max_length, data.dual) == (16, 10, 12, False)
  # pad 0, digits 1..10, X 11, [MAX 12, [MED 13, [MIN 14, [SM 15.
  expected = np.array(
    [
      [12, 3, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0],
      [13, 2, 3, 4, 5, 11, 0, 0, 0, 0, 0, 0],
      [15, 10, 14, 6, 4, 11, 11, 0, 0, 0, 0, 0],
    ]
  )
  for split in (data.train, data.validation, data.test):
    np.testing.assert_array_equal(split.inputs, expected)
    np.testing.assert_array_equal(split.lengths, [4, 6, 7])
    np.testing.assert_array_equal(split.targets, [9, 2, 2])
    assert split.lengths.dtype == split.targets.dtype == np.int32
  assert [evaluate(listops.tokenize_source(s)) for s, _ in ROWS] == [9, 2, 2]


def test_truncation_and_lf_line_ends(tmp_path):
  write_listops(tmp_path, line_end='\n')
  data = lra.load_task('listops', tmp_path, max_length=3, cache=False)
  np.testing.assert_array_equal(data.train.inputs, [[12, 3, 10], [13, 2, 3], [15, 10, 14]])
  np.testing.assert_array_equal(data.train.lengths, [3, 3, 3])


def test_vocabulary_is_independent_of_hash_seed():
  code = 'import lra.listops as l; print(l.TOKEN_IDS, l.encode("( ( [SM 1 ) ] )").tolist())'
  outputs = {
    subprocess.run(
      [sys.executable, '-c', code],
      capture_output=True,
      text=True,
      check=True,
      env={**os.environ, 'PYTHONHASHSEED': seed},
    ).stdout
    for seed in ('1', '2')
  }
  assert len(outputs) == 1


@pytest.mark.parametrize(
  'row, message',
  [
    ('( ( [MAX 2 ) ] )\t7\textra', ':3: expected 2'),
    ('( ( [MAX 2 ) ] )\t10', ':3: label'),
    ('( ( [FOO 2 ) ] )\t1', ":3: unknown ListOps token '[FOO'"),
    ('( ( [MAX 2 ) ] )\tnan', ':3: label'),
    ('( ( [MAX 2 ) ] )\tinf', ':3: label'),
    ('\t3', ':3: empty expression'),
    (' \t3', ':3: empty expression'),
    ('( ( ) )\t3', ':3: empty expression'),
  ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
  write_listops(tmp_path, rows=ROWS[:1])
  path = tmp_path / 'basic_val.tsv'
  path.write_text(path.read_text() + row + '\n')
  with pytest.raises(lra.DataError, match=re.escape(f'basic_val.tsv{message}')):
    lra.load_task('listops', tmp_path, cache=False)


def test_blank_lines_are_skipped(tmp_path):
  write_listops(tmp_path / 'plain')
  write_listops(tmp_path / 'blank')
  for name in listops.FILES.values():
    path = tmp_path / 'blank' / name
    lines = path.read_bytes().split(b'\r\n')
    lines.insert(2, b'')  # Between the first two rows, and a trailing blank line.
    path.write_bytes(b'\r\n'.join(lines) + b'\r\n')
  plain = lra.load_task('listops', tmp_path / 'plain', max_length=12, cache=False)
  blank = lra.load_task('listops', tmp_path / 'blank', max_length=12, cache=False)
  assert blank.train.num_examples == len(ROWS)
  for split in ('train', 'validation', 'test'):
    for name, array in getattr(plain, split).arrays().items():
      np.testing.assert_array_equal(getattr(blank, split).arrays()[name], array)


def test_an_integral_float_label_is_accepted_and_a_fraction_refused(tmp_path):
  write_listops(tmp_path, rows=ROWS[:1])
  path = tmp_path / 'basic_val.tsv'
  original = path.read_text()
  path.write_text(original + '( ( [MAX 2 ) ] )\t1.0\n')
  assert lra.load_task('listops', tmp_path, cache=False).validation.targets.tolist() == [9, 1]
  path.write_text(original + '( ( [MAX 2 ) ] )\t1.5\n')
  with pytest.raises(
    lra.DataError, match=re.escape("basic_val.tsv:3: label '1.5' is out of range")
  ):
    lra.load_task('listops', tmp_path, cache=False)


@pytest.mark.parametrize('line_end', ['\r\n', '\r'])
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, line_end):
  write_listops(tmp_path, rows=ROWS[:2], line_end=line_end)
  path = tmp_path / 'basic_train.tsv'
  lines = path.read_bytes().split(line_end.encode())
  lines[2] = lines[2].replace(b'\t', b'\xff\t')
  path.write_bytes(line_end.encode().join(lines))
  with pytest.raises(lra.DataError, match=re.escape('basic_train.tsv:3: not valid UTF-8')):
    lra.load_task('listops', tmp_path, cache=False)


def test_bad_header(tmp_path):
  write_listops(tmp_path)
  (tmp_path / 'basic_test.tsv').write_text('Target\tSource\n')
  with pytest.raises(lra.DataError, match='basic_test.tsv:1: expected the header'):
    lra.load_task('listops', tmp_path, cache=False)


def test_missing_directory_names_files_and_command(tmp_path):
  with pytest.raises(lra.DataError) as info:
    lra.load_task('listops', tmp_path / 'nowhere')
  for name in listops.FILES.values():
    assert name in str(info.value)
  assert 'python -m lra.listops_generator --output_dir' in str(info.value)


def test_generator_labels_on_hand_checked_trees():
  assert listops_generator.apply_operator('[MED', [1, 2, 3, 4]) == 2
  assert listops_generator.apply_operator('[MED', [7, 1, 4]) == 4
  assert listops_generator.apply_operator('[SM', [9, 8, 7]) == 4
  assert listops_generator.apply_operator('[MIN', [5, 3, 8]) == 3
  assert listops_generator.apply_operator('[MAX', [5, 3, 8]) == 8
  tree = ((('[MAX', 2), 9), ']')
  assert listops_generator.to_string(tree) == '( ( ( [MAX 2 ) 9 ) ] )'


def test_generator_distribution_and_files(tmp_path, capsys):
  kwargs = dict(min_length=10, max_length=60, max_depth=4, max_args=5, seed=3)
  splits = listops_generator.generate(300, 20, 20, **kwargs)
  assert [len(rows) for rows in splits.values()] == [300, 20, 20]
  sources = [s for rows in splits.values() for s, _ in rows]
  assert len(set(sources)) == len(sources)
  for source, label in (row for rows in splits.values() for row in rows):
    tokens = listops.tokenize_source(source)
    assert 10 < len(tokens) < 60
    assert evaluate(tokens) == label
  assert listops_generator.generate(300, 20, 20, **kwargs) == splits
  assert listops_generator.generate(300, 20, 20, **{**kwargs, 'seed': 4}) != splits
  parallel = listops_generator.generate(300, 20, 20, **kwargs, num_workers=2)
  assert [len(rows) for rows in parallel.values()] == [300, 20, 20]
  parallel_sources = [s for rows in parallel.values() for s, _ in rows]
  assert len(set(parallel_sources)) == len(parallel_sources)
  for source, label in (row for rows in parallel.values() for row in rows):
    assert evaluate(listops.tokenize_source(source)) == label
  assert parallel != splits
  assert listops_generator.generate(300, 20, 20, **kwargs, num_workers=2) == parallel
  with pytest.raises(SystemExit):
    listops_generator.main(['--output_dir', str(tmp_path / 'none'), '--num_workers', '0'])
  assert 'num_workers must be at least 1, got 0' in capsys.readouterr().err
  listops_generator.main(
    [
      '--output_dir',
      str(tmp_path),
      '--num_train',
      '50',
      '--num_val',
      '5',
      '--num_test',
      '5',
      '--min_length',
      '10',
      '--max_length',
      '60',
      '--max_depth',
      '4',
      '--max_args',
      '5',
    ]
  )
  data = lra.load_task('listops', tmp_path, max_length=64)
  sizes = (data.train.num_examples, data.validation.num_examples, data.test.num_examples)
  assert sizes == (50, 5, 5)
  assert data.train.lengths.max() < 60 and data.train.lengths.min() > 10


def test_generator_gives_up_on_impossible_lengths():
  with pytest.raises(lra.DataError, match='No new tree'):
    listops_generator.generate(5, 1, 1, min_length=40, max_length=60, max_depth=2, max_args=3)


@pytest.mark.parametrize(
  'settings, message',
  [
    (dict(min_length=10, max_length=60, max_args=1), '--max_args 1: operators take at least 2'),
    (dict(min_length=10, max_length=12, max_args=2), 'must exceed min_length by at least 3'),
  ],
)
def test_generator_settings_without_room_are_named(settings, message):
  with pytest.raises(lra.DataError, match=message):
    listops_generator.generate(5, 1, 1, max_depth=2, **settings)
