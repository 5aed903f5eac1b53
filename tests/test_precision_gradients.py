"""benchmarks/precision_gradients.py: its figures, and one tiny run end to end."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import precision_gradients
from lra import listops_generator


def test_entropy_and_comparison_figures():
  uniform = jnp.full((2, 3, 4, 4), 0.25)
  one_hot = jnp.broadcast_to(jnp.eye(4), (2, 3, 4, 4))
  rows = jnp.array([[True, True, False, False], [True, True, True, True]])
  assert precision_gradients.attention_entropy(uniform, rows) == pytest.approx(np.log(4))
  assert precision_gradients.attention_entropy(one_hot, rows) == 0.0
  g = {'a': {'kernel': np.array([1.0, -2.0, 3.0])}, 'b': np.array([0.5])}
  same = precision_gradients.compare(g, g)
  assert same['all']['cosine'] == pytest.approx(1.0)
  assert same['all']['relative_error'] == 0.0 and same['a/kernel']['sign_agreement'] == 1.0
  flipped = precision_gradients.compare(g, {'a': {'kernel': -g['a']['kernel']}, 'b': g['b']})
  assert flipped['a/kernel']['cosine'] == pytest.approx(-1.0)
  assert flipped['a/kernel']['relative_error'] == pytest.approx(2.0)


def test_tiny_run_writes_results_and_table(tmp_path):
  listops_generator.main(
    [
      '--output_dir',
      str(tmp_path / 'data'),
      '--num_train',
      '8',
      '--num_val',
      '2',
      '--num_test',
      '2',
      '--min_length',
      '5',
      '--max_length',
      '30',
      '--max_depth',
      '3',
      '--max_args',
      '4',
    ]
  )
  precision_gradients.main(
    [
      '--data_dir',
      str(tmp_path / 'data'),
      '--config',
      'listops_cpu:transformer',
      '--max_length',
      '32',
      '--batch_size',
      '2',
      '--num_batches',
      '2',
      '--output_dir',
      str(tmp_path / 'out'),
    ]
  )
  results = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert [state['name'].split()[0] for state in results['states']] == ['initialisation', 'after']
  summary = results['states'][0]['summary']
  assert set(summary['comparison']) == {'bfloat16', 'bfloat16_all'}
  for name in ('bfloat16', 'bfloat16_all'):
    assert summary['comparison'][name]['all']['mean_cosine'] > 0.99
  assert set(summary['loss']) == {'float32', 'bfloat16', 'bfloat16_all'}
  assert set(summary['entropy']) == {'sequence_encoder/layer_0'}
  assert summary['batch_to_batch_cosine'] is not None
  assert '| all |' in (tmp_path / 'out' / 'table.md').read_text()
