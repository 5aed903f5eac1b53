"""Translation end to end on a tiny parallel corpus the test writes: training on token batches with
BLEU in the results, gradient accumulation over token batches, checkpoint averaging, the translate
command, the vocabulary guard; BLEU against sacreBLEU's own command; tokenised BLEU against
sacreBLEU on text sacremoses tokenised; averaging is the mean of the parameters."""

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import sacrebleu
import sacremoses

import lra
from configs import wmt14
from corpora import translation as translation_data
from corpora.token_batches import TokenBatching, TokenPairs
from luna_jax import average_checkpoints as average_command
from luna_jax import translate as translate_command
from luna_jax.training import checkpointing, run_config, trainer, translation
from luna_jax.training.run_config import DecodingConfig
from luna_jax.training.steps import TrainState
from tests.test_gradient_accumulation import steps_of
from tests.test_training_path import assert_trees_close

WORDS = ['null', 'eins', 'zwei', 'drei', 'vier', 'fünf', 'sechs', 'sieben', 'acht', 'neun']


def write_corpus(folder, seed=0):
  """Digits -> German number words ('3 1' -> 'drei eins .'), 1 or 2 digits."""
  rng = random.Random(seed)
  for split, count in (('train', 200), ('validation', 12), ('test', 12)):
    digits = [[rng.randrange(10) for _ in range(rng.randint(1, 2))] for _ in range(count)]
    (folder / f'{split}.en').write_text(''.join(' '.join(map(str, d)) + '\n' for d in digits))
    (folder / f'{split}.de').write_text(
      ''.join(' '.join(WORDS[i] for i in d) + ' .\n' for d in digits), encoding='utf-8'
    )


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  folder = tmp_path_factory.mktemp('digits')
  write_corpus(folder)
  translation_data.main(['vocabulary', '--data_dir', str(folder), '--vocab_size', '60'])
  return folder


def tiny_config(data_dir, steps):
  config = wmt14.get_config('luna16_softplus_tied')
  config.data.data_dir = str(data_dir)
  config.data.options.update(max_length=8, max_target_length=8, max_tokens=64)
  config.model.update(num_layers=1, emb_dim=16, mlp_dim=32, num_heads=2, num_pack_heads=2)
  config.model.update(projection_length=4, chunk_size=8)
  config.optimizer.update(warmup_steps=2, learning_rate=1e-2)
  config.training.update(
    num_train_steps=steps, eval_every=steps, checkpoint_every=2, log_every=2, num_devices=1
  )
  config.decoding.update(beam_size=2, max_len_b=8)
  return config


def test_train_average_translate_and_the_vocabulary_guard(
  corpus, tmp_path, monkeypatch, fast_compilation
):
  workdir = tmp_path / 'run'
  # Trained with the data folder relative to the working directory; translated from another.
  monkeypatch.chdir(corpus.parent)
  results = trainer.train_and_evaluate(tiny_config(corpus.name, 4), str(workdir))
  monkeypatch.chdir(tmp_path)
  assert results['bleu']['signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
  assert results['bleu']['decoding']['beam_size'] == 2
  hypotheses = (workdir / 'translations' / 'test.de').read_text(encoding='utf-8').splitlines()
  references = (corpus / 'test.de').read_text(encoding='utf-8').splitlines()
  assert len(hypotheses) == len(references) == 12
  assert results['test']['bleu'] == translation.bleu(hypotheses, references)['bleu']
  assert 0.0 <= results['validation']['bleu'] <= 100.0
  # The tokenised BLEU beside it, in the data's target language, in results.json too.
  tokenized = translation.tokenized_bleu(hypotheses, references, 'de')
  assert results['test']['tokenized_bleu'] == tokenized['bleu']
  assert results['bleu']['tokenized_signature'] == tokenized['signature']
  assert 0.0 <= results['validation']['tokenized_bleu'] <= 100.0
  written = json.loads((workdir / 'results.json').read_text())
  assert written['test']['tokenized_bleu'] == tokenized['bleu']
  assert written['bleu']['tokenized_signature'].startswith("\u2019->' + moses -a -l de ")

  # The translate command on the final checkpoint reproduces the run's test BLEU.
  output, scores = tmp_path / 'test.hyp.de', tmp_path / 'scores.json'
  command = ['--input', str(corpus / 'test.en'), '--output', str(output)]
  translate = lambda checkpoint, *extra: translate_command.main(
    ['--checkpoint', str(checkpoint), *command, *extra]
  )
  translate(workdir / 'checkpoints' / '4', '--reference', str(corpus / 'test.de'))
  translate(workdir, '--reference', str(corpus / 'test.de'), '--scores', str(scores))
  assert output.read_text(encoding='utf-8').splitlines() == hypotheses
  written = json.loads(scores.read_text())
  assert written['bleu'] == results['test']['bleu']
  assert written['tokenized_bleu'] == results['test']['tokenized_bleu']
  assert written['tokenized_signature'] == results['bleu']['tokenized_signature']

  # Averaging the last 2 checkpoints gives their mean, which translates too.
  averaged = checkpointing.average_checkpoints(str(workdir), 2)
  assert averaged.endswith('averaged/4')
  read = lambda path: checkpointing.read_checkpoint(str(path))
  mean = jax.tree.map(
    lambda a, b: ((a.astype(np.float64) + b) / 2).astype(a.dtype),
    read(workdir / 'checkpoints' / '2')[0]['params'],
    read(workdir / 'checkpoints' / '4')[0]['params'],
  )
  params, record, _ = read(averaged)
  jax.tree.map(np.testing.assert_array_equal, params['params'], mean)
  assert record['averaged_steps'] == [2, 4] and record['vocabulary'].startswith('sentencepiece:')
  translate(averaged)
  assert len(output.read_text(encoding='utf-8').splitlines()) == 12

  # Another vocabulary is refused: for translating, and for resuming (same file name, retrained).
  other = tmp_path / 'other'
  other.mkdir()
  shutil.copy(corpus / 'train.en', other / 'train.en')
  shutil.copy(corpus / 'train.de', other / 'train.de')
  translation_data.main(['vocabulary', '--data_dir', str(other), '--vocab_size', '40'])
  with pytest.raises(SystemExit, match='was trained with vocabulary .*sentencepiece:'):
    translate(averaged, '--tokenizer', str(other / 'spm.model'))
  output.unlink()
  with pytest.raises(SystemExit, match='has 11 lines'):
    (tmp_path / 'short.de').write_text('\n'.join(references[:11]) + '\n', encoding='utf-8')
    translate(averaged, '--reference', str(tmp_path / 'short.de'))
  assert not output.exists()  # Refused before decoding, not after.
  shutil.copy(other / 'spm.model', corpus / 'spm.model.new')
  (corpus / 'spm.model').replace(corpus / 'spm.model.old')
  (corpus / 'spm.model.new').replace(corpus / 'spm.model')
  try:
    with pytest.raises(trainer.VocabularyChangedError, match=r'was trained on vocabulary '):
      trainer.train_and_evaluate(tiny_config(corpus, 6), str(workdir))
  finally:
    (corpus / 'spm.model.old').replace(corpus / 'spm.model')


def test_sigterm_during_the_final_beam_search_stops_the_run(corpus, tmp_path, monkeypatch):
  """The signal comes while the first batch is decoded; the next batch is not."""
  real_beam_search, calls = translation.generation.beam_search, []

  def beam_search(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_beam_search(*args, **kwargs)

  monkeypatch.setattr(translation.generation, 'beam_search', beam_search)
  with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM: training stopped after step 2'):
    trainer.train_and_evaluate(tiny_config(corpus, 2), str(tmp_path / 'run'))
  assert len(calls) == 1
  assert not (tmp_path / 'run' / 'results.json').exists()


def test_a_capped_evaluation_translates_its_first_batches_only(corpus, tmp_path, monkeypatch):
  """Also: every output of the barely trained model ends with an EOS, forced at the model's last
  position where the decoding caps (source + 9 here) lie beyond it; none may be empty."""
  real_beam_search, outputs = translation.generation.beam_search, []

  def beam_search(*args, **kwargs):
    best, scores = real_beam_search(*args, **kwargs)
    outputs.extend(np.asarray(best).tolist())
    assert kwargs['min_length'] == 1  # No empty translation (fairseq's --min-len 1).
    return best, scores

  monkeypatch.setattr(translation.generation, 'beam_search', beam_search)
  config = tiny_config(corpus, 2)
  config.training.num_eval_batches = 1
  results = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  translated = (tmp_path / 'run' / 'translations' / 'test.de').read_text().splitlines()
  assert 0 < results['test']['num_sentences'] == len(translated) < 12
  assert results['partial_evaluation']
  eos = translation_data.text_tokenizers.SP_EOS_ID
  assert outputs and all(eos in row for row in outputs)


def test_the_runs_tokenizer_is_found_where_training_found_it_or_as_spelt_from_here(
  corpus, tmp_path, monkeypatch
):
  """The recorded real path of the data folder first (a relative data_dir from elsewhere); the
  config's spelling from here when that folder moved (a run copied to another machine)."""
  config = run_config.parse_config(tiny_config('digits', 2)).to_dict()
  vocabulary = translation_data.Vocabulary(corpus / 'spm.model').name
  for name, real in (('moved', str(tmp_path / 'gone')), ('recorded', str(corpus))):
    record = {'config': config, 'vocabulary': vocabulary, 'real_paths': {'data_dir': real}}
    checkpointer = checkpointing.Checkpointer(str(tmp_path / name), keep=1)
    checkpointer.save(1, {'params': {'w': np.zeros(2, np.float32)}}, record)
    checkpointer.close()
  monkeypatch.chdir(tmp_path)
  with pytest.raises(lra.DataError, match=r'No SentencePiece model at .*gone/spm.model or digits/'):
    translation.load_translator(str(tmp_path / 'moved'))
  assert translation.load_translator(str(tmp_path / 'recorded'))[2].name == vocabulary
  (tmp_path / 'digits').symlink_to(corpus)  # The data, moved here.
  assert translation.load_translator(str(tmp_path / 'moved'))[2].name == vocabulary
  # Where training found it now holds another vocabulary: the one as spelt from here is taken.
  (tmp_path / 'gone').mkdir()
  for name in ('train.en', 'train.de'):
    (tmp_path / 'gone' / name).write_text('\n'.join(f'{i} {i + 1} .' for i in range(40)) + '\n')
  translation_data.main(['vocabulary', '--data_dir', str(tmp_path / 'gone'), '--vocab_size', '30'])
  assert translation.load_translator(str(tmp_path / 'moved'))[2].name == vocabulary
  monkeypatch.setenv('HOME', str(tmp_path))
  assert run_config.real_path('~/digits') == str(corpus.resolve())


def test_token_batches_of_a_translation_model_accumulate_too(corpus):
  """Token-level weights (target tokens, filler rows 0) summed over the micro-batches."""
  results, (_, _, _, batch) = steps_of(tiny_config(corpus, 1), (2,))
  assert len(batch['weights']) % 2 == 0
  (whole_state, whole), (part_state, part) = results[1], results[2]
  np.testing.assert_allclose(part['loss'], whole['loss'], rtol=2e-5)
  assert_trees_close(part_state.params, whole_state.params, rel=2e-5)


def test_output_caps_are_fairseqs_max_len_plus_the_eos():
  """fairseq allows floor(max_len_a * n + max_len_b) tokens before the EOS; a cap counts the EOS."""
  decoding = DecodingConfig(beam_size=1, length_penalty=0.0, max_len_a=1.2, max_len_b=2)
  lengths = np.array([3, 5, 7])
  expected = [math.floor(1.2 * n + 2) + 1 for n in lengths.tolist()]
  np.testing.assert_array_equal(translation.output_caps(lengths, decoding), expected)
  assert int(translation.output_caps(np.asarray(4), decoding)) == math.floor(1.2 * 4 + 2) + 1


#: The stand-in vocabulary's words: ids 4, 5, ... after the four SentencePiece specials.
_WORDS = ['.', 'eins', 'zwei', 'drei', 'vier', 'fünf']
_EOS = translation_data.text_tokenizers.SP_EOS_ID
_STOP = 4  # '.'


class _WordVocabulary:
  """A stand-in for `corpora.translation.Vocabulary`: one id per word, the EOS appended."""

  def encode(self, lines):
    return [np.array([_WORDS.index(w) + 4 for w in line.split()] + [_EOS]) for line in lines]

  def decode(self, ids):
    return [' '.join(_WORDS[i - 4] for i in sequence) for sequence in ids]


def _echo_beam_search(model, params, inputs, lengths, *, max_length, max_output_lengths, **_):
  """A deterministic stand-in translator: each source's words, then '.', then the EOS (never an
  empty output, as beam search with min_length 1), within its cap; padding after."""
  best = np.zeros((len(inputs), max_length), np.int32)
  for row, (source, n, cap) in enumerate(zip(np.asarray(inputs), lengths, max_output_lengths)):
    words = [*source[: int(n) - 1], _STOP][: int(cap) - 1]
    best[row, : len(words) + 1] = [*words, _EOS]
  return best, np.zeros(len(inputs), np.float32)


_ECHO_MODEL = SimpleNamespace(config=SimpleNamespace(max_length=16))
_ECHO_DECODING = DecodingConfig(beam_size=1, length_penalty=0.0, max_len_a=1.0, max_len_b=2)


def test_translate_pairs_gives_each_source_its_own_output_past_filler_rows(monkeypatch):
  """The last source is short (bucket 4), the first long (bucket 8, 2 rows a batch): that batch's
  filler row (-1) must not land on the last source."""
  monkeypatch.setattr(translation.generation, 'beam_search', _echo_beam_search)
  sources = [[5, 6, 7, 8, 9, _EOS], [6, _EOS]]
  pairs = TokenPairs(
    source=np.concatenate(sources).astype(np.int32),
    source_lengths=np.array([len(s) for s in sources], np.int32),
    target=np.full(2, _EOS, np.int32),
    target_lengths=np.ones(2, np.int32),
    line_numbers=np.array([1, 2], np.int32),
  )
  batching = TokenBatching(16, (4, 8))
  assert [len(rows) for _, rows in batching.plan(pairs, 1, None)] == [4, 2]  # with fillers
  outputs = translation.translate_pairs(
    _ECHO_MODEL, {}, pairs, batching, _ECHO_DECODING, eos_id=_EOS
  )
  assert outputs == [[5, 6, 7, 8, 9, _STOP], [6, _STOP]]


def test_translate_lines_gives_a_whitespace_line_an_empty_translation(monkeypatch):
  monkeypatch.setattr(translation.generation, 'beam_search', _echo_beam_search)
  translations, cut = translation.translate_lines(
    _ECHO_MODEL,
    {},
    _WordVocabulary(),
    ['eins zwei', ' \t ', ''],
    _ECHO_DECODING,
    max_length=8,
    max_tokens=64,
  )
  assert (translations, cut) == (['eins zwei .', '', ''], 0)


def test_translate_lines_counts_as_cut_only_sources_longer_than_max_length(monkeypatch):
  """max_length counts the EOS: 3 words fit in 4 ids, 4 words are cut to 3."""
  monkeypatch.setattr(translation.generation, 'beam_search', _echo_beam_search)
  translations, cut = translation.translate_lines(
    _ECHO_MODEL,
    {},
    _WordVocabulary(),
    ['eins zwei drei', 'eins zwei drei vier'],
    _ECHO_DECODING,
    max_length=4,
    max_tokens=64,
  )
  assert (translations, cut) == (['eins zwei drei .', 'eins zwei drei .'], 1)


def test_translate_lines_with_max_tokens_below_max_length_decodes_a_source_a_batch(monkeypatch):
  monkeypatch.setattr(translation.generation, 'beam_search', _echo_beam_search)
  lines = ['eins zwei drei vier fünf', 'zwei', 'drei vier']
  translations, cut = translation.translate_lines(
    _ECHO_MODEL, {}, _WordVocabulary(), lines, _ECHO_DECODING, max_length=8, max_tokens=4
  )
  assert (translations, cut) == ([f'{line} .' for line in lines], 0)


def test_a_run_with_longer_targets_than_sources_is_rebuilt_with_the_longer_positions(
  corpus, tmp_path
):
  """The decoder is trained on targets of max_target_length tokens: its position table must hold
  them when the checkpoint is loaded to translate."""
  config = tiny_config(corpus, 2)
  config.data.options.update(max_length=8, max_target_length=12)
  record = {
    'config': run_config.parse_config(config).to_dict(),
    'vocabulary': translation_data.Vocabulary(corpus / 'spm.model').name,
  }
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'run'), keep=1)
  checkpointer.save(1, {'params': {'w': np.zeros(2, np.float32)}}, record)
  checkpointer.close()
  model = translation.load_translator(str(tmp_path / 'run'))[0]
  assert model.config.max_length == 12


def test_bleu_equals_sacrebleus_own_command(tmp_path):
  hypotheses = [
    'Der kleine Hund sieht den Ball im Garten.',
    'Heute kauft eine Frau ein rotes Auto .',
    'Das ist gut',
  ]
  references = [
    'Der kleine Hund sieht den roten Ball im Garten.',
    'Heute kauft die Frau ein rotes Auto.',
    'Das ist sehr gut.',
  ]
  (tmp_path / 'hyp.de').write_text('\n'.join(hypotheses) + '\n', encoding='utf-8')
  (tmp_path / 'ref.de').write_text('\n'.join(references) + '\n', encoding='utf-8')
  command = [sys.executable, '-m', 'sacrebleu', str(tmp_path / 'ref.de')]
  command += ['-i', str(tmp_path / 'hyp.de'), '-b', '-w', '6']
  theirs = float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
  ours = translation.bleu(hypotheses, references)
  assert ours['bleu'] == pytest.approx(theirs, abs=1e-6) and 20 < theirs < 80
  assert ours['signature'] == 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1'
  with pytest.raises(ValueError, match='3 hypotheses for 2 references'):
    translation.bleu(hypotheses, references[:2])


def test_tokenized_bleu_is_sacrebleu_on_moses_tokenised_text():
  hypotheses = [
    'Die E-Mail-Adresse des Kunden ist neu.',
    'Wie geht’s dem Hund?',
    'Er sagt "gut" & geht.',
  ]
  references = [
    'Die E-Mail-Nummer des Kunden ist neu.',
    "Wie geht's dem Hund heute?",
    'Er sagt "gut" & geht.',
  ]
  # fairseq's test preprocessing: ’ -> ', then Moses -a -l de with the perl tokenizer's escaping.
  assert translation.moses_tokenize(hypotheses, 'de') == [
    'Die E @-@ Mail @-@ Adresse des Kunden ist neu .',
    'Wie geht &apos; s dem Hund ?',
    'Er sagt &quot; gut &quot; &amp; geht .',
  ]
  moses = sacremoses.MosesTokenizer(lang='de')
  tokenize = lambda lines: [
    moses.tokenize(
      line.replace('\u2019', "'"), aggressive_dash_splits=True, return_str=True, escape=True
    )
    for line in lines
  ]
  metric = sacrebleu.metrics.BLEU(tokenize='none')
  expected = metric.corpus_score(tokenize(hypotheses), [tokenize(references)])
  ours = translation.tokenized_bleu(hypotheses, references, 'de')
  assert ours['bleu'] == pytest.approx(expected.score, abs=1e-9)
  assert ours['signature'] == (
    f"\u2019->' + moses -a -l de (sacremoses {sacremoses.__version__}) + {metric.get_signature()}"
  )
  assert 'tok:none' in ours['signature']
  # Split compounds share their parts: a wrong last part costs one token, not the whole word.
  compound = translation.tokenized_bleu(hypotheses[:1], references[:1], 'de')['bleu']
  assert compound > translation.bleu(hypotheses[:1], references[:1])['bleu']
  # ’ and ' are the same on both sides (13a tells them apart).
  for pair in ((["Wie geht's?"], ['Wie geht’s?']), (['Wie geht’s?'], ["Wie geht's?"])):
    assert translation.tokenized_bleu(*pair, 'de')['bleu'] == pytest.approx(100.0)
    assert translation.bleu(*pair)['bleu'] < 100.0
  assert translation.tokenized_bleu(references, references, 'de')['bleu'] == pytest.approx(100.0)
  with pytest.raises(ValueError, match='3 hypotheses for 2 references'):
    translation.tokenized_bleu(hypotheses, references[:2], 'de')
  with pytest.raises(ValueError, match='no hypotheses'):
    translation.tokenized_bleu([], [], 'de')


def test_translate_refuses_an_empty_input_before_loading_a_model(tmp_path, capsys):
  empty = tmp_path / 'empty.en'
  empty.write_text('')
  with pytest.raises(SystemExit, match=f'Error: {empty} is empty: there is nothing to translate.'):
    translate_command.main(
      [
        '--checkpoint',
        str(tmp_path / 'none'),
        '--input',
        str(empty),
        '--output',
        str(tmp_path / 'o'),
      ]
    )


def test_translate_refuses_bad_input_in_one_line_before_decoding(tmp_path):
  """Checkpoints of another task or of no run, input that is a folder or not UTF-8, an output with
  no folder to go in: each one `Error:` line. A lone carriage return is part of its line (as
  `corpora.translation` reads files), so the input and reference below are one line each."""
  records = {
    'listops': {'config': {'data': {'task': 'listops'}}},
    'converted': {'config': {'model': {}}, 'converted_from': {}},
  }
  for name, record in records.items():
    checkpointer = checkpointing.Checkpointer(str(tmp_path / name), keep=1)
    checkpointer.save(1, {'params': {'w': np.zeros(2, np.float32)}}, record)
    checkpointer.close()
  source, reference, latin1 = tmp_path / 'in.en', tmp_path / 'ref.de', tmp_path / 'latin1.en'
  source.write_bytes(b'one\rline\n')
  reference.write_bytes(b'eine Zeile\n')
  latin1.write_bytes(b'ok\ncaf\xe9\n')

  def translate(checkpoint='listops', input=source, output=tmp_path / 'o', *extra):
    arguments = ['--checkpoint', str(tmp_path / checkpoint), '--input', str(input)]
    translate_command.main([*arguments, '--output', str(output), *extra])

  cases = [
    (
      ('listops', source, tmp_path / 'o', '--reference', str(reference)),
      r"listops/checkpoints/1 is a checkpoint of a 'listops' run, not of a translation run",
    ),
    (('converted',), r"converted/checkpoints/1 is a checkpoint of the authors' released weights"),
    (('listops', tmp_path), rf'Error: \[Errno 21\] Is a directory: .{tmp_path}.'),
    (('listops', latin1), rf'Error: {latin1}:2: not valid UTF-8'),
    (('listops', source, tmp_path), rf'Error: {tmp_path} is a folder: name the file to write'),
    (
      ('listops', source, tmp_path / 'none' / 'o'),
      rf'{tmp_path / "none" / "o"}: there is no folder {tmp_path / "none"} to',
    ),
  ]
  for arguments, message in cases:
    with pytest.raises(SystemExit, match=message):
      translate(*arguments)
  with pytest.raises(SystemExit) as error:  # argparse: usage and exit status 2.
    translate('listops', source, tmp_path / 'o', '--scores', str(tmp_path / 's.json'))
  assert error.value.code == 2
  assert not (tmp_path / 'o').exists()
  with pytest.raises(lra.DataError, match=r'bytes: not a SentencePiece model \(bytes\)'):
    translation_data.Vocabulary('bytes')  # e.g. --tokenizer bytes


def test_score_splits_records_both_bleus_in_the_datas_target_language(tmp_path, monkeypatch):
  """`score_splits` with its translations given (no model): German -> English data."""
  hypotheses = {
    'validation': ["The well-known e-mail address isn't new.", 'It works.'],
    'test': ['A long-term plan.', "Don't go."],
  }
  references = {
    'validation': ['The well-known e-mail server isn’t new.', 'It works.'],
    'test': ['A short-term plan.', "Don't go!"],
  }

  class Vocabulary:  # Decodes the "ids" `translate_pairs` gives below: the hypotheses themselves.
    def __init__(self, path):
      assert path == 'spm.model'

    decode = staticmethod(lambda ids: ids)

  monkeypatch.setattr(translation.translation_data, 'Vocabulary', Vocabulary)

  def translate_pairs(model, params, split, batching, decoding, eos_id, check_stop, max_batches):
    return hypotheses[split] if max_batches == -1 else [hypotheses[split][0], None]

  monkeypatch.setattr(translation, 'translate_pairs', translate_pairs)
  info = {
    'tokenizer': 'spm.model',
    'eos_id': 2,
    'languages': ['de', 'en'],
    'references': references,
  }
  data = SimpleNamespace(validation='validation', test='test', batching=None, info=info)
  decoding = DecodingConfig(beam_size=2, length_penalty=0.6, max_len_a=1.0, max_len_b=50)
  result = translation.score_splits(None, {}, data, decoding, str(tmp_path))
  for split in ('validation', 'test'):
    sacre = translation.bleu(hypotheses[split], references[split])
    tokenized = translation.tokenized_bleu(hypotheses[split], references[split], 'en')
    assert result[split] == {
      'bleu': sacre['bleu'],
      'tokenized_bleu': tokenized['bleu'],
      'num_sentences': 2,
    }
    assert tokenized['bleu'] > sacre['bleu']  # Split compounds, ’ as ', "n't" one token.
    assert (tmp_path / f'{split}.en').read_text().splitlines() == hypotheses[split]
  assert result['signature'] == sacre['signature']
  assert result['tokenized_signature'] == tokenized['signature']
  assert ' moses -a -l en ' in tokenized['signature']
  assert result['decoding']['beam_size'] == 2 and set(result['files']) == {'validation', 'test'}
  # A capped evaluation scores (and writes) the translated sentences only.
  capped = translation.score_splits(None, {}, data, decoding, str(tmp_path), max_batches=1)
  for split in ('validation', 'test'):
    assert capped[split]['num_sentences'] == 1
    assert (
      capped[split]['bleu']
      == translation.bleu(hypotheses[split][:1], references[split][:1])['bleu']
    )
    assert (tmp_path / f'{split}.en').read_text().splitlines() == hypotheses[split][:1]


def test_average_checkpoints_is_the_mean_and_passes_over_damaged_ones(tmp_path):
  rng = np.random.default_rng(0)
  states = {}
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=5)
  for step in (1, 2, 3, 4):
    params = {'a': rng.normal(size=(3, 2)).astype(np.float32), 'b': {'c': rng.normal(size=4)}}
    states[step] = TrainState(step=np.int32(step), params=params, opt_state=(), rng=np.zeros(2))
    checkpointer.save(step, states[step], {'config': {'x': 1}, 'vocabulary': 'v'})
  checkpointer.close()
  (tmp_path / 'checkpoints' / '3' / 'commit_success.txt').unlink()  # Damaged: passed over.
  path = checkpointing.average_checkpoints(str(tmp_path), 3)
  tree, record, _ = checkpointing.read_checkpoint(path)
  expected = jax.tree.map(
    lambda *xs: (sum(x.astype(np.float64) for x in xs) / 3).astype(xs[0].dtype),
    *(states[s].params for s in (4, 2, 1)),
  )
  jax.tree.map(np.testing.assert_array_equal, tree['params'], expected)
  assert tree['params']['a'].dtype == np.float32 and tree['params']['b']['c'].dtype == np.float64
  assert record == {'config': {'x': 1}, 'vocabulary': 'v', 'averaged_steps': [1, 2, 4]}
  assert (tmp_path / 'checkpoints' / '3').exists()  # Not moved: averaging changes nothing there.
  with pytest.raises(
    FileNotFoundError, match=r'5 checkpoints to average, but only 3 intact on the run schedule'
  ) as error:
    checkpointing.average_checkpoints(str(tmp_path), 5)
  assert str(error.value).endswith(
    'Average fewer, or train on to more checkpoints on the schedule.'
  )


def test_average_checkpoints_passes_over_a_checkpoint_off_the_schedule(tmp_path, capsys, caplog):
  """Step 5 is where a Ctrl-C stopped a run that saves every 2 steps; its last step, 7, counts."""
  record = {
    'config': {'training': {'checkpoint_every': 2, 'num_train_steps': 7, 'keep_checkpoints': 4}}
  }
  for workdir, steps in ((tmp_path, (2, 4, 6, 7)), (tmp_path / 'stopped', (5,))):
    checkpointer = checkpointing.Checkpointer(str(workdir), keep=5)
    for step in steps:
      params = {'a': np.full(2, step, np.float32)}
      checkpointer.save(step, TrainState(np.int32(step), params, (), np.zeros(2)), record)
    checkpointer.close()
  # Kept beside the later ones (a run pruned by an older version: today's prunes it at step 6).
  shutil.copytree(tmp_path / 'stopped' / 'checkpoints' / '5', tmp_path / 'checkpoints' / '5')
  average_command.main(['--workdir', str(tmp_path), '--num', '3'])
  assert capsys.readouterr().out.strip().endswith('the mean of the checkpoints of steps [4, 6, 7]')
  tree, _, _ = checkpointing.read_checkpoint(str(tmp_path / 'averaged' / '7'))
  np.testing.assert_array_equal(tree['params']['a'], np.full(2, 17 / 3, np.float32))
  assert 'checkpoints/5 is off the run schedule; not averaged' in caplog.text
  assert 'read only' not in caplog.text  # orbax's notices about the readers, dropped.
  with pytest.raises(SystemExit, match=r"Error: .*/nothing: not a run's workdir"):
    average_command.main(['--workdir', str(tmp_path / 'nothing')])
  # Keeping more would help here (4 on the schedule, the run keeps 4), not for a run too short.
  keeps = r'(?s)only 4 .* The run keeps 4 \(training.keep_checkpoints\)'
  with pytest.raises(SystemExit, match=keeps):
    average_command.main(['--workdir', str(tmp_path), '--num', '5'])
  with pytest.raises(SystemExit, match=r'^Error: --num 0: must be >= 1'):
    average_command.main(['--workdir', str(tmp_path), '--num', '0'])
