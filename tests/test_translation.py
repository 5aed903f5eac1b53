"""Translation end to end on a tiny parallel corpus the test writes: training on token batches with
BLEU in the results, checkpoint averaging, the translate command, the vocabulary guard; BLEU
against sacreBLEU's own command; averaging is the mean of the parameters."""

import json
import random
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import wmt14
from corpora import translation as translation_data
from luna_jax import translate as translate_command
from luna_jax.training import checkpointing, trainer, translation
from luna_jax.training.steps import TrainState

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


def test_train_average_translate_and_the_vocabulary_guard(corpus, tmp_path, fast_compilation):
  workdir = tmp_path / 'run'
  results = trainer.train_and_evaluate(tiny_config(corpus, 4), str(workdir))
  assert results['bleu']['signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
  assert results['bleu']['decoding']['beam_size'] == 2
  hypotheses = (workdir / 'translations' / 'test.de').read_text(encoding='utf-8').splitlines()
  references = (corpus / 'test.de').read_text(encoding='utf-8').splitlines()
  assert len(hypotheses) == len(references) == 12
  assert results['test']['bleu'] == translation.bleu(hypotheses, references)['bleu']
  assert 0.0 <= results['validation']['bleu'] <= 100.0

  # The translate command on the final checkpoint reproduces the run's test BLEU.
  output, scores = tmp_path / 'test.hyp.de', tmp_path / 'scores.json'
  command = ['--input', str(corpus / 'test.en'), '--output', str(output)]
  translate = lambda checkpoint, *extra: translate_command.main(
    ['--checkpoint', str(checkpoint), *command, *extra]
  )
  translate(workdir / 'checkpoints' / '4', '--reference', str(corpus / 'test.de'))
  translate(workdir, '--reference', str(corpus / 'test.de'), '--scores', str(scores))
  assert output.read_text(encoding='utf-8').splitlines() == hypotheses
  assert json.loads(scores.read_text())['bleu'] == results['test']['bleu']

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
  with pytest.raises(SystemExit, match='has 11 lines'):
    (tmp_path / 'short.de').write_text('\n'.join(references[:11]) + '\n', encoding='utf-8')
    translate(averaged, '--reference', str(tmp_path / 'short.de'))
  shutil.copy(other / 'spm.model', corpus / 'spm.model.new')
  (corpus / 'spm.model').replace(corpus / 'spm.model.old')
  (corpus / 'spm.model.new').replace(corpus / 'spm.model')
  try:
    with pytest.raises(trainer.VocabularyChangedError, match=r'was trained on vocabulary '):
      trainer.train_and_evaluate(tiny_config(corpus, 6), str(workdir))
  finally:
    (corpus / 'spm.model.old').replace(corpus / 'spm.model')


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
  with pytest.raises(FileNotFoundError, match=r'5 checkpoints to average, but only 3 intact'):
    checkpointing.average_checkpoints(str(tmp_path), 5)
