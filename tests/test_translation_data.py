"""Parallel text for translation: the two file layouts, what is refused (by file and line) or
skipped (counted), the joint vocabulary, and token batches (every example once an epoch, the token
budget, determinism and exact resume, a bounded set of shapes)."""

import collections
import itertools
import logging

import numpy as np
import pytest

import corpora
import lra
from corpora import translation, translation_generator, wmt14
from corpora.token_batches import TokenBatching, TokenPairs, length_buckets
from lra import tfds_source
from tests.test_lra_sources import example_proto, write_shard

OPTIONS = {'max_length': 64, 'max_target_length': 64, 'max_tokens': 256, 'cache': False}
MAX = OPTIONS['max_length']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A generated corpus with its joint vocabulary (the files the commands write)."""
  root = tmp_path_factory.mktemp('mt')
  translation_generator.write(root, num_train=400, num_val=30, num_test=30)
  translation.main(['vocabulary', '--data_dir', str(root), '--vocab_size', '300'])
  return root


def test_the_vocabulary_is_kept_by_its_own_command_and_replaced_only_with_overwrite(corpus, capsys):
  model = corpus / 'spm.model'
  before = model.read_bytes(), model.stat().st_mtime_ns
  translation.main(['vocabulary', '--data_dir', str(corpus), '--vocab_size', '300'])
  assert (model.read_bytes(), model.stat().st_mtime_ns) == before  # The same training: kept.
  with pytest.raises(SystemExit):
    translation.main(['vocabulary', '--data_dir', str(corpus), '--vocab_size', '200'])
  assert 'Refusing to overwrite existing data' in capsys.readouterr().err
  assert model.read_bytes() == before[0]
  # A vocabulary SentencePiece refuses leaves the old one, and its record, as they were.
  files = {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
  folders = sorted(p.name for p in corpus.iterdir() if p.is_dir())
  with pytest.raises(SystemExit):
    translation.main(
      ['vocabulary', '--data_dir', str(corpus), '--vocab_size', '99999', '--overwrite']
    )
  assert 'Vocabulary size too high' in capsys.readouterr().err
  assert {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()} == files
  assert sorted(p.name for p in corpus.iterdir() if p.is_dir()) == folders  # None left aside.


@pytest.mark.parametrize('output', ['.', '/', 'train.en', 'test.de', 'spm.bin', ''])
def test_the_vocabulary_never_replaces_its_data_folder_or_training_files(tmp_path, capsys, output):
  """--output '.' with --overwrite deleted the whole data folder, 'train.en' its training text;
  a name without .model trained and then failed (SentencePiece wrote spm.model); '' is not a name
  at all."""
  translation_generator.write(tmp_path, num_train=20, num_val=2, num_test=2)
  before = {p: p.read_bytes() for p in tmp_path.iterdir()}
  args = ['vocabulary', '--data_dir', str(tmp_path), '--output', output, '--overwrite']
  with pytest.raises(SystemExit):
    translation.main(args)
  assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
  error = capsys.readouterr().err
  if output:
    assert f'Error: --output {output!r} would write ' in error
  else:
    assert 'argument --output: must name a folder or file' in error


def test_the_vocabulary_never_replaces_a_split_named_like_a_model(tmp_path):
  """Languages 'model' and 'vocab' name the corpus files <split>.model and <split>.vocab: an
  --output of 'validation.model' would replace both sides of the validation split."""
  translation_generator.write(tmp_path, num_train=20, num_val=2, num_test=2)
  for path in list(tmp_path.glob('*.en')) + list(tmp_path.glob('*.de')):
    path.rename(path.with_suffix('.model' if path.suffix == '.en' else '.vocab'))
  before = {p: p.read_bytes() for p in tmp_path.iterdir()}
  for output in ('validation.model', 'test.model'):
    with pytest.raises(lra.DataError, match='which is one of the corpus files'):
      translation.train_vocabulary(
        tmp_path, source_lang='model', target_lang='vocab', output=output, overwrite=True
      )
  assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_vocabulary_command_names_a_line_that_is_not_utf8(tmp_path, capsys):
  (tmp_path / 'train.en').write_bytes(b'a house\ncaf\xe9\n')
  (tmp_path / 'train.de').write_bytes(b'ein Haus\nCafe\n')
  with pytest.raises(SystemExit) as exit_info:
    translation.main(['vocabulary', '--data_dir', str(tmp_path), '--vocab_size', '20'])
  assert exit_info.value.code == 1
  message = capsys.readouterr().err.strip().splitlines()[-1]
  assert message.startswith(f'Error: {tmp_path / "train.en"}:2: not valid UTF-8')
  assert 'SentencePiece' not in message


def write_split(folder, split, pairs, layout='plain'):
  folder.mkdir(parents=True, exist_ok=True)
  if layout == 'tsv':
    (folder / f'{split}.tsv').write_text(''.join(f'{s}\t{t}\n' for s, t in pairs))
  else:
    (folder / f'{split}.en').write_text(''.join(f'{s}\n' for s, _ in pairs))
    (folder / f'{split}.de').write_text(''.join(f'{t}\n' for _, t in pairs))


def copy_corpus(corpus, folder, layout='plain'):
  """The generated corpus in `layout`, with its vocabulary."""
  folder.mkdir()
  (folder / 'spm.model').write_bytes((corpus / 'spm.model').read_bytes())
  for split in translation.SPLITS:
    sources = (corpus / f'{split}.en').read_text().splitlines()
    targets = (corpus / f'{split}.de').read_text().splitlines()
    write_split(folder, split, list(zip(sources, targets)), layout)
  return folder


def test_joint_vocabulary_and_both_layouts_give_the_same_data(corpus, tmp_path):
  data = corpora.load_task('translation', corpus, **OPTIONS)
  vocabulary = translation.Vocabulary(corpus / 'spm.model')
  assert data.info['vocabulary'] == vocabulary.name and data.vocab_size == 300
  assert vocabulary.name.startswith('sentencepiece:')
  pieces = (corpus / 'spm.vocab').read_text()
  assert 'ß' in pieces and 'y' in pieces  # Both languages (only German has ß, only English y).
  assert data.info['bos_id'] == 2 and data.info['eos_id'] == 3 and data.max_length == MAX
  first = data.train.sequences(np.array([0]), MAX)
  source_line = (corpus / 'train.en').read_text().splitlines()[0]
  assert vocabulary.decode([first['inputs'][0].tolist()]) == [source_line]
  assert first['inputs'][0, first['lengths'][0] - 1] == 3  # EOS ends the source, and the target.
  tests = (corpus / 'test.de').read_text().splitlines()
  assert data.info['references']['test'] == tests
  tsv = corpora.load_task('translation', copy_corpus(corpus, tmp_path / 'tsv', 'tsv'), **OPTIONS)
  for split in translation.SPLITS:
    for name, array in getattr(data, split).arrays().items():
      np.testing.assert_array_equal(getattr(tsv, split).arrays()[name], array, err_msg=name)


def test_bad_lines_are_named_by_file_and_line(corpus, tmp_path):
  folder = copy_corpus(corpus, tmp_path / 'bad')
  with open(folder / 'validation.de', 'a') as f:
    f.write('Ein Satz zu viel .\n')
  with pytest.raises(lra.DataError, match=r'validation.en ends after line 30 but .*validation.de'):
    corpora.load_task('translation', folder, **OPTIONS)
  write_split(folder, 'validation', [('a', 'b')] * 3)
  (folder / 'test.en').unlink()
  write_split(folder, 'test', [('One', 'Eins'), ('Two\tthree', 'x')], 'tsv')
  (folder / 'test.de').unlink()
  with pytest.raises(lra.DataError, match=r'test.tsv:2: expected 2 tab-separated fields'):
    corpora.load_task('translation', folder, **OPTIONS)
  (folder / 'test.tsv').write_bytes(b'One\tEins\nTwo \xff\tZwei\n')
  with pytest.raises(lra.DataError, match=r'test.tsv:2: not valid UTF-8'):
    corpora.load_task('translation', folder, **OPTIONS)
  (folder / 'test.tsv').unlink()
  with pytest.raises(lra.DataError, match=r'No test split .*test.en and test.de.*test.tsv'):
    corpora.load_task('translation', folder, **OPTIONS)
  with pytest.raises(lra.DataError, match=r'No vocabulary at .*other.model.*vocabulary --data_dir'):
    corpora.load_task('translation', corpus, **{**OPTIONS, 'tokenizer': 'other.model'})


def test_empty_and_over_length_pairs_are_skipped_or_cut_and_counted(corpus, tmp_path, caplog):
  folder = copy_corpus(corpus, tmp_path / 'skips')
  long = ' '.join(['the small dog'] * 30)
  train = [('A dog .', 'Ein Hund .'), ('', 'Leer .'), (long, 'Lang .'), ('A cat .', '  ')]
  write_split(folder, 'train', train * 2)
  write_split(folder, 'test', [('A dog .', 'Ein Hund .'), (long, 'Ein langer Satz .')])
  with caplog.at_level(logging.WARNING):
    data = corpora.load_task('translation', folder, **OPTIONS)
  assert data.info['skipped']['train'] == {'empty': 4, 'too_long': 2, 'truncated': 0}
  assert data.info['skipped']['test'] == {'empty': 0, 'too_long': 0, 'truncated': 1}
  np.testing.assert_array_equal(data.train.line_numbers, [1, 5])
  assert data.test.num_examples == 2 and data.test.source_lengths[1] == OPTIONS['max_length']
  assert data.test.source[data.test.source_lengths[0] + MAX - 1] == 3  # The cut source ends in EOS.
  assert data.info['references']['test'] == ['Ein Hund .', 'Ein langer Satz .']
  assert 'train.en + ' in caplog.text
  assert '4 pair(s) with an empty side were skipped (lines 2, 4, 6, 8)' in caplog.text
  assert '2 pair(s) longer than the length limits were skipped (lines 3, 7)' in caplog.text
  write_split(folder, 'validation', [('', 'x')])
  with pytest.raises(lra.DataError, match=r'validation.en \+ .*no pairs left .*empty.: 1'):
    corpora.load_task('translation', folder, **OPTIONS)


def test_crlf_files_give_the_same_data_and_references_as_lf_ones(corpus, tmp_path):
  folder = copy_corpus(corpus, tmp_path / 'crlf')
  for split in translation.SPLITS:
    for language in ('en', 'de'):
      path = folder / f'{split}.{language}'
      path.write_bytes(path.read_bytes().replace(b'\n', b'\r\n'))
  lf = corpora.load_task('translation', corpus, **OPTIONS)
  crlf = corpora.load_task('translation', folder, **OPTIONS)
  assert crlf.info['references'] == lf.info['references']
  for split in translation.SPLITS:
    for name, array in getattr(lf, split).arrays().items():
      np.testing.assert_array_equal(getattr(crlf, split).arrays()[name], array, err_msg=name)


def test_targets_longer_than_max_length_fit_the_largest_bucket(corpus, tmp_path):
  """max_length bounds the sources only: the buckets must reach max_target_length."""
  folder = copy_corpus(corpus, tmp_path / 'targets')
  words = ' '.join(['Ein kleiner Hund'] * 5) + ' .'
  write_split(folder, 'test', [('A dog .', 'Ein Hund .'), ('A small dog .', words)])
  data = corpora.load_task(
    'translation', folder, **{**OPTIONS, 'max_length': 16, 'max_target_length': MAX}
  )
  assert data.test.target_lengths.max() > 16
  batches = list(data.batching.eval_batches(data.test, 0, num_devices=1))
  assert sum(b['weights'].sum() for b in batches) == data.test.num_examples == 2
  longest = int(data.test.target_lengths.max())
  assert any(int((b['targets'] > 0).sum(1).max()) == longest for b in batches)


def test_an_over_length_validation_pair_is_cut_and_counted_not_skipped(corpus, tmp_path):
  """As the test split: BLEU covers every validation pair."""
  folder = copy_corpus(corpus, tmp_path / 'validation')
  long = ' '.join(['the small dog'] * 30)
  write_split(folder, 'validation', [('A dog .', 'Ein Hund .'), (long, 'Ein langer Satz .')])
  data = corpora.load_task('translation', folder, **OPTIONS)
  assert data.info['skipped']['validation'] == {'empty': 0, 'too_long': 0, 'truncated': 1}
  assert data.validation.num_examples == 2 and data.validation.source_lengths[1] == MAX
  assert data.info['references']['validation'] == ['Ein Hund .', 'Ein langer Satz .']


def test_a_last_pair_with_an_empty_side_leaves_the_references_aligned(corpus, tmp_path):
  folder = copy_corpus(corpus, tmp_path / 'last')
  pairs = [('A dog .', 'Ein Hund .'), ('', 'Leer .'), ('A cat .', 'Eine Katze .'), ('A cow .', '')]
  write_split(folder, 'validation', pairs)
  write_split(folder, 'test', pairs, 'tsv')
  (folder / 'test.en').unlink()
  data = corpora.load_task('translation', folder, **OPTIONS)
  for split in ('validation', 'test'):
    np.testing.assert_array_equal(getattr(data, split).line_numbers, [1, 3])
    assert data.info['references'][split] == ['Ein Hund .', 'Eine Katze .']


def test_length_buckets():
  assert length_buckets(256) == (8, 16, 24, 32, 40, 56, 72, 96, 120, 152, 192, 240, 256)
  assert len(length_buckets(1024)) == 19 and length_buckets(5) == (5,)
  with pytest.raises(lra.DataError, match='max_tokens 100 is less than'):
    TokenBatching(100, length_buckets(128))


@pytest.mark.parametrize('num_devices', [1, 4])
def test_token_batches_cover_an_epoch_once_within_the_budget(corpus, num_devices):
  data = corpora.load_task('translation', corpus, **OPTIONS)
  batching, split = data.batching, data.train
  per_epoch = batching.num_batches(split, num_devices)
  batches = list(
    itertools.islice(
      batching.train_batches(split, 32, num_devices=num_devices, seed=3), 2 * per_epoch
    )
  )
  shapes = {b['inputs'].shape for b in batches}
  assert len(shapes) <= len(batching.buckets)  # One compiled program per bucket at most.
  for batch in batches:
    rows, length = batch['inputs'].shape
    assert length in batching.buckets and rows % num_devices == 0
    assert rows // num_devices * length <= OPTIONS['max_tokens']  # The budget, per device.
    assert np.all(batch['lengths'] <= length) and np.all((batch['targets'] > 0).sum(1) <= length)
  for epoch in (batches[:per_epoch], batches[per_epoch:]):
    seen = collections.Counter(
      (tuple(row[row > 0]), tuple(target[target > 0]))
      for b in epoch
      for row, target, weight in zip(b['inputs'], b['targets'], b['weights'])
      if weight
    )
    every = collections.Counter(
      (tuple(s['inputs'][0][s['inputs'][0] > 0]), tuple(s['targets'][0][s['targets'][0] > 0]))
      for s in (split.sequences(np.array([i]), MAX) for i in range(split.num_examples))
    )
    assert seen == every  # Every example exactly once (fillers carry weight 0).
  assert [b['lengths'].tolist() for b in batches[:per_epoch]] != [
    b['lengths'].tolist() for b in batches[per_epoch:]
  ]  # Each epoch has its own order.


def test_token_batches_are_a_function_of_seed_and_step_and_resume_exactly(corpus):
  data = corpora.load_task('translation', corpus, **OPTIONS)
  batching, split = data.batching, data.train
  run = lambda seed, start, n: list(
    itertools.islice(
      batching.train_batches(split, 0, num_devices=2, seed=seed, start_step=start), n
    )
  )
  straight = run(0, 0, 40)
  resumed = run(0, 25, 15)
  for a, b in zip(straight[25:], resumed):
    for name in a:
      np.testing.assert_array_equal(a[name], b[name])
  assert any(
    a['inputs'].shape != b['inputs'].shape or np.any(a['inputs'] != b['inputs'])
    for a, b in zip(straight, run(1, 0, 40))
  )
  # Two processes with one device each take the two halves of the global batch.
  halves = [
    next(batching.train_batches(split, 0, num_devices=2, seed=0, process_index=i, process_count=2))
    for i in (0, 1)
  ]
  np.testing.assert_array_equal(
    np.concatenate([h['inputs'] for h in halves]), straight[0]['inputs']
  )
  evaluation = list(batching.eval_batches(data.test, 0, num_devices=2))
  assert sum(b['weights'].sum() for b in evaluation) == data.test.num_examples


def test_fixed_size_batching_is_the_batch_functions():
  """Every other task keeps its batches: the default `TaskData.batching` is `lra.train_batches` /
  `lra.eval_batches` exactly."""
  rng = np.random.default_rng(0)
  split = lra.Split(rng.integers(1, 9, (20, 6)), np.full(20, 6), rng.integers(0, 2, 20))
  data = lra.TaskData('x', split, split, split, vocab_size=10, num_classes=2, max_length=6)
  own = data.batching.train_batches(split, 4, num_devices=8, seed=1, start_step=3)
  for a, b in zip(itertools.islice(own, 7), lra.train_batches(split, 4, seed=1, start_step=3)):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  for a, b in zip(data.batching.eval_batches(split, 8, num_devices=2), lra.eval_batches(split, 8)):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  assert {k: v.shape for k, v in data.batching.example(split).items()} == {
    'inputs': (1, 6),
    'lengths': (1,),
    'targets': (1,),
  }


def test_wmt14_from_prepared_tfds_shards_and_offline(tmp_path, capsys):
  """`python -m corpora.wmt14` on shards in TFDS's layout and format; without them it stops at
  once, with the command that prepares them elsewhere."""
  with pytest.raises(SystemExit):
    wmt14.main(['--tfds_dir', str(tmp_path / 'tfds'), '--output_dir', str(tmp_path / 'out')])
  assert tfds_source.prepare_command('wmt14_translate/de-en', 'DIR') in capsys.readouterr().err
  version = tmp_path / 'tfds' / 'wmt14_translate' / 'de-en' / '1.0.0'
  pairs = {
    'train': [('A dog .', 'Ein Hund .'), ('Two\nlines', 'Zwei\tZeilen'), ('Ä', 'ß')],
    'validation': [('Hello .', 'Hallo .')],
    'test': [('Yes .', 'Ja .'), ('No .', 'Nein .')],
  }
  for split, examples in pairs.items():
    records = [example_proto(en=en.encode(), de=de.encode()) for en, de in examples]
    fmt = 'array_record' if split == 'train' else 'tfrecord'
    write_shard(version / f'wmt14_translate-{split}.{fmt}-00000-of-00001', records)
  argv = ['--tfds_dir', str(tmp_path / 'tfds'), '--output_dir', str(tmp_path / 'out')]
  wmt14.main(argv)
  assert (
    'train: 3 pairs (2 sentences with line breaks or tabs made spaces)' in capsys.readouterr().out
  )
  out = tmp_path / 'out'
  assert (out / 'train.en').read_text() == 'A dog .\nTwo lines\nÄ\n'
  assert (out / 'train.de').read_text() == 'Ein Hund .\nZwei Zeilen\nß\n'
  assert (out / 'test.de').read_text() == 'Ja .\nNein .\n'
  wmt14.main(argv)  # The same shards again: nothing to do.
  assert 'nothing to do' in capsys.readouterr().out
  translation.main(['vocabulary', '--data_dir', str(out), '--vocab_size', '40'])
  data = corpora.load_task('translation', out, max_length=32, max_target_length=32)
  assert [data.train.num_examples, data.validation.num_examples, data.test.num_examples] == [
    3,
    1,
    2,
  ]
  assert data.info['references']['test'] == ['Ja .', 'Nein .']
  # An example without one of the languages is named by shard and record.
  shard = version / 'wmt14_translate-test.tfrecord-00000-of-00001'
  write_shard(shard, [example_proto(en=b'Yes .', de=b'Ja .'), example_proto(en=b'No .')])
  with pytest.raises(SystemExit):
    wmt14.main([*argv, '--overwrite'])
  assert f"{shard} record #1: no 'de' feature" in capsys.readouterr().err


def test_the_generator_names_the_files_it_wrote(tmp_path, capsys):
  translation_generator.main(
    ['--output_dir', str(tmp_path), '--num_train', '6', '--num_val', '2', '--num_test', '3']
  )
  out = capsys.readouterr().out
  assert 'train.en/.de (6 pairs), validation.en/.de (2 pairs), test.en/.de (3 pairs)' in out
  assert len((tmp_path / 'test.de').read_text(encoding='utf-8').splitlines()) == 3


def pairs_of_sizes(source_lengths, target_lengths):
  """A TokenPairs of the given lengths (token ids 1, 2, ...: their content does not matter here)."""
  source_lengths = np.asarray(source_lengths, np.int32)
  target_lengths = np.asarray(target_lengths, np.int32)
  return TokenPairs(
    source=np.arange(1, source_lengths.sum() + 1, dtype=np.uint16),
    source_lengths=source_lengths,
    target=np.arange(1, target_lengths.sum() + 1, dtype=np.uint16),
    target_lengths=target_lengths,
    line_numbers=np.arange(1, len(source_lengths) + 1, dtype=np.int32),
  )


def test_an_example_goes_to_the_smallest_bucket_that_holds_it():
  """Sizes at a bucket's length fill it, one token more goes to the next; a pair's size is its
  longer side."""
  batching = TokenBatching(64, (8, 16, 32))
  split = pairs_of_sizes([8, 9, 1, 16, 3, 32], [1, 2, 8, 5, 17, 32])
  np.testing.assert_array_equal(batching.bucket_of(split), [0, 1, 0, 1, 2, 2])


def test_token_batches_refuse_a_bad_process_layout_and_a_negative_seed():
  """Devices that do not split evenly over the processes, a process index out of range and a
  negative seed are refused by name."""
  batching = TokenBatching(64, (8, 16))
  split = pairs_of_sizes([3, 12], [4, 5])
  refused = [
    (dict(num_devices=3, seed=0, process_count=2), 'positive multiple of process_count 2'),
    (dict(num_devices=2, seed=0, process_index=2, process_count=2), r'not in \[0, 2\)'),
    (dict(num_devices=2, seed=-1), r'seed \(-1\) and start_step'),
  ]
  for arguments, message in refused:
    with pytest.raises(lra.DataError, match=message):
      next(batching.train_batches(split, 0, **arguments))
  with pytest.raises(lra.DataError, match=r'not in \[0, 2\)'):
    next(batching.eval_batches(split, 0, num_devices=2, process_index=2, process_count=2))


def test_an_epoch_shuffles_the_batches_of_all_buckets_together():
  """The batches of an epoch do not come bucket by bucket: their padded lengths are mixed."""
  batching = TokenBatching(32, (8, 16, 32))
  split = pairs_of_sizes([5] * 20 + [12] * 20 + [30] * 20, [5] * 60)
  per_epoch = batching.num_batches(split, 1)
  epoch = itertools.islice(batching.train_batches(split, 0, num_devices=1, seed=0), per_epoch)
  lengths = [batch['inputs'].shape[1] for batch in epoch]
  assert per_epoch == 5 + 10 + 20 and sorted(lengths) == [8] * 5 + [16] * 10 + [32] * 20
  assert lengths != sorted(lengths)
