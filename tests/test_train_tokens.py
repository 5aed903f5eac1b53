"""The causal models through the one trainer: encoder-decoder Luna learns to sort, the Luna LM
learns its corpus, and token-level losses are the same on one and on eight devices."""

import json
import math
import os
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corpora
import luna_jax
from configs import lm as lm_config
from configs import seq2seq as seq2seq_config
from corpora import sequence_generator
from luna_jax.model import generation
from luna_jax.training import run_config, trainer
from tests.test_train import checkpoint_params, read_jsonl


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('token_tasks')
  sequence_generator.write(
    'sort', root / 'sort', num_train=5000, num_val=200, num_test=200, min_length=4, max_length=8
  )
  sequence_generator.write(
    'lm', root / 'lm', num_train=5000, num_val=200, num_test=200, min_length=5, max_length=20
  )
  return {'sort': str(root / 'sort'), 'lm': str(root / 'lm')}


def configure(module, data_dir, steps, **options):
  config = module.get_config()
  config.data.data_dir = data_dir
  config.data.options.update(options)
  config.training.update(
    num_train_steps=steps, eval_every=steps, checkpoint_every=steps, log_every=50, num_devices=1
  )
  return config


def test_seq2seq_learns_to_sort_and_greedy_decoding_matches_sequence_accuracy(data_dirs, tmp_path):
  config = configure(seq2seq_config, data_dirs['sort'], 600, max_length=8, max_target_length=9)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results['validation']['sequence_accuracy'] >= 0.8, results['validation']

  # Teacher-forced sequence accuracy is exactly the fraction greedy decoding gets right.
  data = corpora.load_task('seq2seq', data_dirs['sort'], max_length=8, max_target_length=9)
  model = luna_jax.build_model(
    config.model,
    vocab_size=data.vocab_size,
    num_classes=0,
    max_length=9,
    bos_id=data.info['bos_id'],
  )
  params = jax.tree.map(jnp.asarray, checkpoint_params(str(tmp_path), 600))
  split = data.validation
  decoded = generation.greedy_decode(
    model,
    params,
    jnp.asarray(split.inputs, jnp.int32),
    jnp.asarray(split.lengths),
    max_length=9,
    eos_id=data.info['eos_id'],
  )
  exact = np.mean(np.all(np.asarray(decoded) == split.targets, axis=1))
  assert exact == pytest.approx(results['validation']['sequence_accuracy'])


def unigram_cross_entropy(split_train, split_eval):
  """Nats per target byte of the best context-free (unigram) model fitted on the training split."""
  counts = Counter(split_train.targets[split_train.targets > 0].tolist())
  total = sum(counts.values())
  targets = split_eval.targets[split_eval.targets > 0].tolist()
  return -np.mean([math.log(counts[t] / total) for t in targets])


def test_luna_lm_learns_far_below_the_unigram_loss(data_dirs, tmp_path):
  # The validation loss is about 0.36x the unigram loss at step 200 and 0.35x at 400 (measured).
  config = configure(lm_config, data_dirs['lm'], 200, max_length=64)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  data = corpora.load_task('lm', data_dirs['lm'], max_length=64)
  unigram = unigram_cross_entropy(data.train, data.validation)
  assert results['validation']['loss'] < 0.45 * unigram, (results['validation'], unigram)


def test_token_losses_match_on_one_and_eight_devices(data_dirs, tmp_path):
  """Per-device token counts differ, so the loss must be normalised by the global token count."""
  losses = {}
  for num_devices in (1, 8):
    config = configure(seq2seq_config, data_dirs['sort'], 3, max_length=8, max_target_length=9)
    config.debug = True
    config = run_config.resolve_config(config)
    config.debug = False
    config.training.update(
      num_devices=num_devices, num_train_steps=3, log_every=1, label_smoothing=0.1
    )
    workdir = tmp_path / f'devices{num_devices}'
    trainer.train_and_evaluate(config, str(workdir))
    losses[num_devices] = [
      m['train_loss'] for m in read_jsonl(workdir / 'metrics.jsonl') if 'train_loss' in m
    ]
    with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
      assert json.load(f)['devices']['local_devices'] == num_devices
  assert len(losses[1]) == 3
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-5, atol=1e-5)
