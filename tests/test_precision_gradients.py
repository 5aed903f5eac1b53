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


def test_entropy_is_over_the_keys_of_the_real_query_rows():
  """Entropy sums over the keys of each row and averages only the rows of real queries."""
  probs = jnp.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # One example, one head: rows 0 and 1.
  entropy = lambda mask: precision_gradients.attention_entropy(probs, jnp.array([mask]))
  assert entropy([True, False]) == 0.0
  assert entropy([False, True]) == pytest.approx(np.log(2))
  assert entropy([True, True]) == pytest.approx(np.log(2) / 2)


def test_comparison_of_a_scaled_gradient():
  """A gradient twice the reference: cosine 1, norm ratio 2 (bfloat16 over float32), relative
  error 1 (relative to the float32 norm)."""
  g = {'w': np.array([3.0, -4.0])}
  figures = precision_gradients.compare(g, {'w': 2 * g['w']})['all']
  assert figures['cosine'] == pytest.approx(1.0)
  assert figures['norm_ratio'] == pytest.approx(2.0)
  assert figures['relative_error'] == pytest.approx(1.0)
  assert figures['norm32'] == pytest.approx(5.0)


def test_measure_summarizes_batches_and_policies():
  """Per-batch figures and their mean, min and max; the batch-to-batch cosine of the float32
  gradients; the uniform entropy over real tokens and the CLS position."""
  batches = [
    {'lengths': np.array([3, 5]), 'g': np.array([1.0, 0.0])},
    {'lengths': np.array([7, 7]), 'g': np.array([1.0, 1.0])},
  ]

  def float32(params, batch, key):
    return 1.0, {'w': batch['g']}, {'layer_0': float(batch['lengths'][0])}

  def bfloat16(params, batch, key):
    return 2.0, {'w': batch['g'] + np.array([0.0, 1.0])}, {'layer_0': 0.0}

  gradients = {'float32': float32, 'bfloat16': bfloat16}
  measured = precision_gradients.measure({}, batches, gradients, seed=0, prepend_cls=True)
  per_batch = [b['comparison']['bfloat16']['all']['cosine'] for b in measured['batches']]
  summary = measured['summary']
  cosine = summary['comparison']['bfloat16']['all']
  assert per_batch[0] < per_batch[1]
  assert (cosine['min_cosine'], cosine['max_cosine']) == pytest.approx(tuple(per_batch))
  assert cosine['mean_cosine'] == pytest.approx(np.mean(per_batch))
  assert summary['batch_to_batch_cosine'] == pytest.approx(1 / np.sqrt(2))
  assert summary['entropy'] == {'layer_0': {'float32': 5.0, 'bfloat16': 0.0}}
  assert summary['loss'] == {'float32': 1.0, 'bfloat16': 2.0}
  for cls, rows in ((True, [[4.0, 6.0], [8.0, 8.0]]), (False, [[3.0, 5.0], [7.0, 7.0]])):
    uniform = [np.sum(np.multiply(r, np.log(r))) / np.sum(r) for r in rows]
    measured = precision_gradients.measure({}, batches, gradients, seed=0, prepend_cls=cls)
    assert measured['summary']['uniform_entropy'] == pytest.approx(np.mean(uniform))


def test_adam_steps_run_at_the_peak_learning_rate():
  """The rate is the schedule's maximum, and AdamW's first step moves each weight by it against
  its gradient's sign."""
  from luna_jax.training import optim

  config = optim.OptimizerConfig(
    learning_rate=0.05,
    schedule='constant * linear_warmup * rsqrt_decay',
    warmup_steps=10,
    steps_per_cycle=100,
    weight_decay=0.0,
    b1=0.9,
    b2=0.98,
    eps=1e-9,
    grad_clip_norm=None,
  )
  schedule = optim.schedule_from_config(config)
  params = {'w': np.array([0.5, -1.0, 2.0], np.float32)}
  grads = {'w': np.array([3.0, -0.1, 0.2], np.float32)}
  moved, peak = precision_gradients.adam_steps(
    params, {}, lambda p, b, k: (0.0, grads, {}), config, 1, 0
  )
  assert peak == pytest.approx(max(float(schedule(step)) for step in range(50)))
  np.testing.assert_allclose(moved['w'] - params['w'], -peak * np.sign(grads['w']), rtol=1e-4)


def test_entropies_read_only_the_real_query_rows():
  """Padding tokens change no entropy: padded query rows are left out, padded keys masked."""
  import jax

  config = precision_gradients.load_config('listops_cpu:transformer')
  model_config = dict(config.model.to_dict(), num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=32)
  model = precision_gradients.luna_jax.build_model(
    dict(model_config, num_heads=2), vocab_size=8, num_classes=2, max_length=8
  )
  batch = {
    'inputs': np.array([[3, 4, 5, 0, 0, 0, 0, 0]], np.int32),
    'lengths': np.array([3], np.int32),
    'targets': np.array([1], np.int32),
  }
  inputs = precision_gradients.steps.batch_inputs(batch, model)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), **inputs)['params']
  gradient = precision_gradients.make_gradient_fn(model, 8)
  key = jax.random.PRNGKey(1)
  padded = dict(batch, inputs=np.array([[3, 4, 5, 7, 6, 7, 6, 7]], np.int32))
  (real,), (other,) = (gradient(params, b, key)[2].values() for b in (batch, padded))
  assert float(other) == pytest.approx(float(real), rel=1e-6)
