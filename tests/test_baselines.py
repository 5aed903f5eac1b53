"""The LRA baselines (Linformer, Linear Transformer, Performer) and non-contextual Luna.

Each attention is checked against a float64 NumPy reference written from its own formula; the task
configs of every baseline build a model, and a representative subset trains end to end.
"""

import functools
import importlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lra
import luna_jax
from configs import base
from luna_jax import config_utils
from luna_jax.model import attention as attn
from luna_jax.model import baselines, encoders, layers, registry
from luna_jax.training import trainer
from tests import reference as ref
from tests.test_attention import assert_close, lengths_mask, normal
from tests.test_train import tiny_config

NEW_VARIANTS = (
  'linformer',
  'linear_transformer',
  'performer',
  'luna16_noncontextual',
  'luna16_pmean',
)


# ----------------------------------------------------------------------------------------------
# Float64 references, one head at a time.
# ----------------------------------------------------------------------------------------------


def heads_of(x, h):
  """(B, n, d) -> list of h arrays (B, n, d/h)."""
  return np.split(x, h, axis=-1)


def ref_linformer(q, k, v, e, f, h, mask):
  """softmax(q_h (E^T k_h)^T / sqrt(dh)) (F^T v_h), masked keys zeroed; q (B, n, d), k/v (B, m,
  d)."""
  m = k.shape[1]
  k, v = k * mask[..., None], v * mask[..., None]
  outs = []
  for qh, kh, vh in zip(heads_of(q, h), heads_of(k, h), heads_of(v, h)):
    kp = np.einsum('mr,bmd->brd', e[:m], kh)
    vp = np.einsum('mr,bmd->brd', f[:m], vh)
    outs.append(ref.softmax(qh @ kp.transpose(0, 2, 1) / math.sqrt(qh.shape[-1])) @ vp)
  return np.concatenate(outs, axis=-1)


def ref_kernel_attention(phi_q, phi_k, v):
  """phi_q (sum_j phi_k_j v_j^T) / (phi_q . sum_j phi_k_j) for one head: (B, n, f), (B, m, f), (B,
  m, d)."""
  numerator = np.einsum('bnf,bmf,bmd->bnd', phi_q, phi_k, v)
  return numerator / np.einsum('bnf,bmf->bn', phi_q, phi_k)[..., None]


def ref_linear(q, k, v, h, mask):
  elu1 = lambda x: np.where(x > 0, x + 1.0, np.exp(x))
  return np.concatenate(
    [
      ref_kernel_attention(elu1(qh), elu1(kh) * mask[..., None], vh)
      for qh, kh, vh in zip(heads_of(q, h), heads_of(k, h), heads_of(v, h))
    ],
    -1,
  )


def ref_favor(x, w):
  """phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x / dh^(1/4); x (B, n, dh), w (m, dh)."""
  x = x / x.shape[-1] ** 0.25
  return np.exp(x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)) / math.sqrt(w.shape[0])


def ref_performer(q, k, v, w, h, mask):
  return np.concatenate(
    [
      ref_kernel_attention(ref_favor(qh, w), ref_favor(kh, w) * mask[..., None], vh)
      for qh, kh, vh in zip(heads_of(q, h), heads_of(k, h), heads_of(v, h))
    ],
    -1,
  )


def module_reference(params, x, mask, h, core):
  """out(core(query(x), key(x), value(x))) with the module's float64 parameters."""
  p, x = ref.to64(params), np.float64(x)
  q, k, v = (ref.linear(x, p[name]) for name in ('query', 'key', 'value'))
  return ref.linear(core(q, k, v, p), p['out'])


# ----------------------------------------------------------------------------------------------
# Attention modules against the references.
# ----------------------------------------------------------------------------------------------

B, N, D, H = 2, 6, 16, 4
X = normal(B, N, D)
MASK = lengths_mask([6, 3], N)


def test_linformer_matches_reference_with_padding_below_the_fixed_length():
  module = baselines.LinformerSelfAttention(
    num_heads=H, qkv_dim=D, max_length=9, low_rank_features=3
  )
  params = module.init(jax.random.PRNGKey(0), X, jnp.asarray(MASK))['params']
  assert params['key_projection'].shape == params['value_projection'].shape == (9, 3)
  expected = module_reference(
    params,
    X,
    MASK,
    H,
    lambda q, k, v, p: ref_linformer(q, k, v, p['key_projection'], p['value_projection'], H, MASK),
  )
  assert_close(module.apply({'params': params}, X, jnp.asarray(MASK)), expected)


def test_linformer_rejects_inputs_longer_than_its_fixed_length():
  module = baselines.LinformerSelfAttention(num_heads=H, qkv_dim=D, max_length=5)
  with pytest.raises(ValueError, match='fixed length of 5 positions; got an input of 6'):
    module.init(jax.random.PRNGKey(0), X, jnp.asarray(MASK))
  config = luna_jax.ModelConfig(
    vocab_size=10,
    max_length=4,
    num_layers=1,
    emb_dim=D,
    num_heads=H,
    mlp_dim=8,
    attention_implementation='linformer',
    positional='sinusoidal',
  )
  # In a model, the position table refuses the input first
  # (luna_jax.model.encoders.check_positions).
  with pytest.raises(ValueError, match=r'positions for 4 tokens \(max_length\); got 6 tokens'):
    encoders.TransformerEncoder(config).init(
      jax.random.PRNGKey(0), jnp.ones((1, 6), jnp.int32), jnp.array([6])
    )


def test_linear_transformer_matches_reference_and_ignores_padding():
  module = baselines.LinearSelfAttention(num_heads=H, qkv_dim=D)
  params = module.init(jax.random.PRNGKey(0), X, jnp.asarray(MASK))['params']
  expected = module_reference(params, X, MASK, H, lambda q, k, v, p: ref_linear(q, k, v, H, MASK))
  out = module.apply({'params': params}, X, jnp.asarray(MASK))
  assert_close(out, expected)
  noisy = X.at[1, 3:].set(100.0)  # Padding content must not reach the real positions.
  assert_close(module.apply({'params': params}, noisy, jnp.asarray(MASK))[1, :3], out[1, :3])


def test_performer_matches_favor_formula_with_its_projection():
  module = baselines.PerformerSelfAttention(num_heads=H, qkv_dim=D, nb_features=24)
  params = module.init(jax.random.PRNGKey(0), X, jnp.asarray(MASK))['params']
  w = module.apply({'params': params}, True, method=baselines.PerformerSelfAttention.projection)
  assert w.shape == (24, D // H)
  expected = module_reference(
    params, X, MASK, H, lambda q, k, v, p: ref_performer(q, k, v, np.float64(w), H, MASK)
  )
  assert_close(module.apply({'params': params}, X, jnp.asarray(MASK)), expected, rel=1e-4)


def test_favor_features_equal_the_formula_up_to_the_cancelling_stabiliser():
  x, w = normal(2, 5, 1, 8), normal(16, 8)
  expected = ref_favor(np.float64(x[:, :, 0]), np.float64(w))
  query = np.asarray(baselines.favor_features(x, w, is_query=True))[:, :, 0]
  # Query rows are divided by their own largest exp term: the ratio is constant along each row.
  ratio = query / expected
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape), rtol=1e-4)
  key = np.asarray(baselines.favor_features(x, w, is_query=False))[:, :, 0]
  ratio = key / expected  # Keys: one factor per (batch, head).
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=1e-4)


def test_orthogonal_random_matrix_has_orthogonal_blocks_of_gaussian_norm_rows():
  w = np.asarray(baselines.orthogonal_random_matrix(jax.random.PRNGKey(3), 20, 8), np.float64)
  assert w.shape == (20, 8)
  for block in (w[:8], w[8:16], w[16:]):
    unit = block / np.linalg.norm(block, axis=1, keepdims=True)
    np.testing.assert_allclose(unit @ unit.T, np.eye(len(block)), atol=1e-5)


def test_haar_orthogonal_is_the_positive_diagonal_qr_factor():
  """Q of A = QR with diag(R) > 0 is unique: LAPACK's Q with its signs corrected must equal it."""
  a = np.random.default_rng(0).normal(size=(16, 16))
  q, r = np.linalg.qr(a)
  expected = q * np.sign(np.diag(r))[None, :]
  np.testing.assert_allclose(
    baselines._haar_orthogonal(jnp.asarray(a, jnp.float32)), expected, atol=1e-4
  )


def test_favor_approximates_softmax_attention_with_many_features():
  """A Monte-Carlo estimate: the error shrinks with the number of features.

  Scores q.k/sqrt(dh) have std 0.25 and outputs about 0.2; with 16384 features the largest error is
  about 0.01 (seeds 0-2), with 16 features about 0.1-0.15.
  """
  b, n, h, dh = 2, 16, 2, 8
  q, k, v = (0.5 * normal(b, n, h, dh) for _ in range(3))
  exact, _ = attn.dot_product_attention(q, k, v)
  errors = {}
  for m in (16, 16384):
    w = baselines.orthogonal_random_matrix(jax.random.PRNGKey(0), m, dh)
    errors[m] = float(jnp.max(jnp.abs(baselines.performer_attention(q, k, v, w) - exact)))
  assert errors[16384] < 0.03 and errors[16384] < errors[16] / 3, errors


def test_performer_redraw_draws_a_projection_per_training_step():
  module = baselines.PerformerSelfAttention(
    num_heads=H, qkv_dim=D, nb_features=8, redraw_features=True
  )
  params = module.init(jax.random.PRNGKey(0), X)['params']
  train = lambda seed: module.apply(
    {'params': params}, X, deterministic=False, rngs={'dropout': jax.random.PRNGKey(seed)}
  )
  evaluate = module.apply({'params': params}, X)
  assert not np.allclose(train(1), train(2))
  np.testing.assert_array_equal(train(1), train(1))
  fixed = module.clone(redraw_features=False)
  np.testing.assert_array_equal(
    fixed.apply(
      {'params': params}, X, deterministic=False, rngs={'dropout': jax.random.PRNGKey(1)}
    ),
    evaluate,
  )


def test_transformer_attention_registry():
  assert {'softmax', 'fused', 'linformer', 'linear', 'performer'} <= set(
    registry.TRANSFORMER_ATTENTIONS
  )
  cfg = luna_jax.ModelConfig(vocab_size=8, max_length=20, low_rank_features=3, nb_features=7)
  assert isinstance(
    registry.TRANSFORMER_ATTENTIONS['linear'](cfg)(num_heads=2, qkv_dim=8),
    baselines.LinearSelfAttention,
  )
  linformer = registry.TRANSFORMER_ATTENTIONS['linformer'](cfg)(num_heads=2, qkv_dim=8)
  # The builder reads its own fields: the encoder's length with the CLS slot, and r.
  assert (linformer.max_length, linformer.low_rank_features) == (21, 3)
  performer = registry.TRANSFORMER_ATTENTIONS['performer'](cfg)(num_heads=2, qkv_dim=8)
  assert performer.nb_features == 7
  with pytest.raises(config_utils.ConfigError, match='must be one of'):
    luna_jax.check_model_config({'attention_implementation': 'reformer'})


def test_an_attention_registered_from_user_code_is_accepted_and_built(monkeypatch):
  """The registry is read when a model is built, not when the package is imported: an attention
  added from one's own code (here the einsum softmax attention under another name) is a valid
  `attention_implementation` and is the one the encoder runs."""
  mine = lambda cfg: functools.partial(layers.SelfAttention, implementation='softmax')
  monkeypatch.setitem(registry.TRANSFORMER_ATTENTIONS, 'mine', mine)
  tokens, lengths = jnp.array([[3, 4, 5, 0]]), jnp.array([3])
  outputs = {}
  for name in ('softmax', 'mine'):
    model = luna_jax.build_model(
      {
        'name': 'transformer',
        'attention_implementation': name,
        'emb_dim': 8,
        'qkv_dim': 8,
        'mlp_dim': 8,
        'num_heads': 2,
        'num_layers': 1,
      },
      vocab_size=8,
      num_classes=2,
      max_length=4,
    )
    params = model.init(jax.random.PRNGKey(0), tokens, lengths)['params']
    outputs[name] = model.apply({'params': params}, tokens, lengths)
  np.testing.assert_array_equal(outputs['mine'], outputs['softmax'])
  monkeypatch.delitem(registry.TRANSFORMER_ATTENTIONS, 'mine')
  with pytest.raises(config_utils.ConfigError, match="attention_implementation='mine'"):
    luna_jax.check_model_config({'attention_implementation': 'mine'})
  # A value a dict cannot hash is refused as any other, not by a TypeError of the lookup.
  with pytest.raises(config_utils.ConfigError, match=r"attention_implementation=\['softmax'\]"):
    luna_jax.ModelConfig(vocab_size=8, max_length=4, attention_implementation=['softmax'])


# ----------------------------------------------------------------------------------------------
# Non-contextual Luna.
# ----------------------------------------------------------------------------------------------


def layer_inputs(contextual_p):
  """Runs a 3-layer Luna encoder; returns its params and each layer's (p input, p output)."""
  config = luna_jax.ModelConfig(
    vocab_size=12,
    max_length=8,
    num_layers=3,
    emb_dim=D,
    num_heads=H,
    mlp_dim=8,
    projection_length=4,
    contextual_p=contextual_p,
  )
  model = encoders.LunaEncoder(config)
  tokens, lengths = jnp.ones((2, 8), jnp.int32), jnp.array([8, 2])
  params = model.init(jax.random.PRNGKey(0), tokens, lengths)['params']
  seen = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, layers.LunaEncoderLayer) and context.method_name == '__call__':
      seen.append((args[1], out[1]))
    return out

  with nn.intercept_methods(record):
    model.apply({'params': params}, tokens, lengths)
  return params, seen


def test_noncontextual_luna_feeds_each_layer_its_own_learned_p():
  params, seen = layer_inputs(contextual_p=False)
  assert 'projected_embeddings' not in params
  p_mask = lengths_mask([9, 3], 4)  # CLS included: lengths 8 + 1 and 2 + 1.
  for i, (p_in, _) in enumerate(seen):
    table = np.float64(params[f'projected_embeddings_{i}'])
    normed = (table - table.mean(-1, keepdims=True)) / np.sqrt(table.var(-1, keepdims=True) + 1e-5)
    assert_close(p_in, np.where(p_mask[..., None], normed[None], 0.0))
  for (_, p_out), (p_next, _) in zip(seen, seen[1:]):
    assert not np.allclose(p_next, p_out)


def test_contextual_luna_carries_y_p_to_the_next_layer():
  params, seen = layer_inputs(contextual_p=True)
  assert 'projected_embeddings' in params and 'projected_embeddings_1' not in params
  for (_, p_out), (p_next, _) in zip(seen, seen[1:]):
    np.testing.assert_array_equal(p_next, p_out)


# ----------------------------------------------------------------------------------------------
# Configs and end-to-end training.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('task', lra.TASKS)
def test_every_baseline_config_builds_a_model(task):
  """Every new variant's full-size task config builds its model (shapes only, nothing computed)."""
  for variant in NEW_VARIANTS:
    config = importlib.import_module(f'configs.{task}').get_config(variant)
    length = config.data.options['max_length']
    model = luna_jax.build_model(
      config.model, vocab_size=260, num_classes=2, max_length=length, dual=task == 'retrieval'
    )
    tokens, lengths = jnp.ones((1, length), jnp.int32), jnp.array([length])
    inputs = (tokens, lengths, tokens, lengths) if task == 'retrieval' else (tokens, lengths)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
    assert shapes['params'], (task, variant)


@pytest.mark.parametrize(
  'task,variant',
  [
    ('listops', 'linformer'),
    ('listops', 'linear_transformer'),
    ('listops', 'performer'),
    ('listops', 'luna16_noncontextual'),
    ('retrieval', 'performer'),
    ('image', 'linformer'),
  ],
)
def test_baselines_train_end_to_end(tiny_lra_data, tmp_path, task, variant):
  config = tiny_config(tiny_lra_data, task, variant)
  if variant == 'performer':
    config.model.redraw_features = True
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 3
  assert np.isfinite(results['test']['loss']) and 0.0 <= results['test']['accuracy'] <= 1.0
  model = results['config']['model']
  if variant in base.TRANSFORMER_VARIANTS:
    assert model['attention_implementation'] == base.TRANSFORMER_VARIANTS[variant]
  else:
    assert model['name'] == 'luna' and not model['contextual_p']


def test_linformer_projections_are_initialised_over_the_length_axis():
  """E and F start as LRA's lecun_normal over the length axis: standard deviation
  1 / sqrt(max_length), not 1 / sqrt(r)."""
  max_length, r = 1024, 4
  module = baselines.LinformerSelfAttention(
    num_heads=H, qkv_dim=D, max_length=max_length, low_rank_features=r
  )
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, D)))['params']
  for name in ('key_projection', 'value_projection'):
    std = float(np.std(np.asarray(params[name])))
    assert abs(std * math.sqrt(max_length) - 1.0) < 0.05, (name, std)


def test_haar_orthogonal_is_orthogonal_to_float32_precision_at_head_width_64():
  """At LRA's head width (64), Gram-Schmidt applied twice keeps the columns orthonormal to
  float32 rounding; one pass loses orthogonality on an ill-conditioned Gaussian matrix."""
  a = np.random.default_rng(0).normal(size=(64, 64))
  q = np.asarray(baselines._haar_orthogonal(jnp.asarray(a, jnp.float32)), np.float64)
  np.testing.assert_allclose(q.T @ q, np.eye(64), atol=1e-5)
