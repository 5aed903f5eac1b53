"""The optimised training path equals its unfused reference: exact GELU with its own backward,
fused projections, the attention's stored residuals, the dropout mask, per-layer remat, and the
XLA settings."""

import os
import re

import flax.linen as nn
import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import attention as attn
from luna_jax.model import encoders, kernels, layers
from luna_jax.training import xla_settings

RNG = np.random.default_rng(0)


def normal(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def assert_trees_close(actual, expected, rel=1e-5):
  """|a - e| <= rel * max|e| leafwise, max|e| over the whole tree (float32 values and gradients; a
  gradient that is zero in exact arithmetic, such as a key bias's, is float32 noise on its own)."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  pairs = [
    (np.asarray(a, np.float64), np.asarray(e, np.float64))
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected))
  ]
  scale = max(np.max(np.abs(e), initial=0.0) for _, e in pairs)
  for a, e in pairs:
    assert a.shape == e.shape
    err = np.max(np.abs(a - e), initial=0.0)
    assert err <= rel * scale, f'max error {err:.3g} > {rel:g} * {scale:.3g}'


def plain_attention(q, k, v, mask, keep=None, rate=0.0):
  """Unfused reference: softmax(q k^T / sqrt(dh)), inverted dropout; autodiff keeps everything."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if keep is not None:
    probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
  return jnp.einsum('bhqk,bkhd->bqhd', probs, v)


def dense(x, params):
  return x @ params['kernel'] + params.get('bias', 0.0)


def test_exact_gelu_values_and_gradient_match_autodiff_of_the_erf_form():
  x = jnp.concatenate([jnp.linspace(-9.0, 9.0, 2001), normal(1000)])
  assert_trees_close(kernels.exact_gelu(x), jax.nn.gelu(x, approximate=False))
  grad = jax.vmap(jax.grad(kernels.exact_gelu))(x)
  assert_trees_close(grad, jax.vmap(jax.grad(lambda z: jax.nn.gelu(z, approximate=False)))(x))


def test_threefry2x32_is_bitwise_jax_threefry():
  keys = jax.random.bits(jax.random.PRNGKey(0), (2,), jnp.uint32)
  edges = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], np.uint32)
  x_1 = jnp.concatenate([jnp.asarray(edges), jnp.arange(1000, dtype=jnp.uint32)])
  x_2 = jnp.concatenate([jnp.asarray(edges[::-1]), jax.random.bits(jax.random.PRNGKey(1), (1000,))])
  for key_1, key_2 in [(keys[0], keys[1]), (np.uint32(0), np.uint32(2**32 - 1))]:
    ours = jax.jit(kernels.threefry2x32)(key_1, key_2, x_1, x_2)
    jax_words = jax.extend.random.threefry2x32_p.bind(
      jnp.uint32(key_1), jnp.uint32(key_2), x_1, x_2
    )
    for word, expected in zip(ours, jax_words, strict=True):
      np.testing.assert_array_equal(np.asarray(word), np.asarray(expected))


def test_dropout_keep_mask_rate_and_scaling():
  keep = kernels.dropout_keep_mask(jax.random.PRNGKey(0), 0.1, (1000, 1000))
  assert keep.dtype == jnp.bool_
  assert abs(float(jnp.mean(keep)) - 0.9) < 4 * np.sqrt(0.09 / 1e6)  # 4 sigma of a binomial
  x = normal(64, 64)
  y = kernels.dropout(x, 0.25, jax.random.PRNGKey(1), deterministic=False)
  kept = kernels.dropout_keep_mask(jax.random.PRNGKey(1), 0.25, x.shape)
  np.testing.assert_allclose(y, np.where(kept, np.asarray(x) / 0.75, 0.0), rtol=1e-6)


def test_dropout_keep_mask_neighbours_are_independent_for_any_key_and_odd_sizes():
  """Four elements share one 64-bit hash (elements i, i + n/4, i + n/2, i + 3n/4 of a flat mask):
  they and plain neighbours must still keep jointly with probability (1 - rate)^2."""
  rate, n = 0.3, 400_000
  keep = np.asarray(kernels.dropout_keep_mask(jax.random.PRNGKey(2), rate, (n,)), np.float64)
  for lag in (1, 2, n // 4, n // 2, 3 * n // 4):
    joint = np.mean(keep[:-lag] * keep[lag:])
    assert abs(joint - 0.49) < 4 * np.sqrt(0.49 * 0.51 / (n - lag)), lag  # 4 sigma
  odd = kernels.dropout_keep_mask(jax.random.key(3, impl='rbg'), 0.5, (3, 5, 7))
  assert odd.shape == (3, 5, 7) and 0 < int(odd.sum()) < 105
  assert not np.array_equal(
    kernels.dropout_keep_mask(jax.random.PRNGKey(4), 0.5, (64,)),
    kernels.dropout_keep_mask(jax.random.PRNGKey(5), 0.5, (64,)),
  )


@pytest.mark.parametrize('rate', [0.0, 0.3])
def test_attention_storing_only_probabilities_equals_plain_attention(rate):
  b, n, m, h, dh = 2, 5, 7, 2, 4
  q, k, v = normal(b, n, h, dh), normal(b, m, h, dh), normal(b, m, h, dh)
  mask = jnp.arange(m)[None] < jnp.array([[7], [3]])
  rng = jax.random.PRNGKey(3)
  keep = kernels.dropout_keep_mask(rng, rate, (b, h, n, m)) if rate else None

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v)))

  ours = lambda q, k, v: attn.dot_product_attention(
    q, k, v, mask, dropout_rate=rate, dropout_rng=rng, deterministic=not rate
  )[0]
  plain = lambda q, k, v: plain_attention(q, k, v, mask, keep, rate)
  assert_trees_close(ours(q, k, v), plain(q, k, v))
  assert_trees_close(
    jax.grad(loss, (1, 2, 3))(ours, q, k, v), jax.grad(loss, (1, 2, 3))(plain, q, k, v)
  )


def test_dense_params_initialise_like_nn_dense_and_fused_dense_equals_separate_matmuls():
  x = normal(2, 3, 8)

  class Separate(nn.Module):
    @nn.compact
    def __call__(self, x):
      return [nn.Dense(f, name=name)(x) for f, name in ((8, 'a'), (4, 'b'))]

  class Fused(nn.Module):
    @nn.compact
    def __call__(self, x):
      projections = [kernels.DenseParams(8, name='a'), kernels.DenseParams(4, name='b')]
      return kernels.fused_dense(x, projections, jnp.float32)

  params = Separate().init(jax.random.PRNGKey(0), x)
  assert_trees_close(Fused().init(jax.random.PRNGKey(0), x), params, rel=0.0)
  loss = lambda module, params, x: sum(jnp.sum(jnp.sin(y)) for y in module.apply(params, x))
  assert_trees_close(Fused().apply(params, x), Separate().apply(params, x))
  assert_trees_close(
    jax.grad(loss, (1, 2))(Fused(), params, x), jax.grad(loss, (1, 2))(Separate(), params, x)
  )


def test_layer_norm_equals_flax_layer_norm_in_values_and_gradients():
  x = 3.0 + normal(2, 5, 16)
  params = {'params': {'scale': 1.0 + 0.1 * normal(16), 'bias': normal(16)}}
  loss = lambda module, params, x: jnp.sum(jnp.sin(module.apply(params, x)))
  ours, flax_ln = kernels.LayerNorm(epsilon=1e-5), nn.LayerNorm(epsilon=1e-5)
  assert_trees_close(
    ours.init(jax.random.PRNGKey(0), x), flax_ln.init(jax.random.PRNGKey(0), x), rel=0.0
  )
  assert_trees_close(ours.apply(params, x), flax_ln.apply(params, x))
  assert_trees_close(
    jax.grad(loss, (1, 2))(ours, params, x), jax.grad(loss, (1, 2))(flax_ln, params, x)
  )
  bf16 = kernels.LayerNorm(dtype=jnp.bfloat16).apply(params, x.astype(jnp.bfloat16))
  assert bf16.dtype == jnp.bfloat16


@pytest.mark.parametrize('tie_kv,self_attention', [(False, True), (False, False), (True, True)])
def test_luna_attention_fused_projections_equal_separate_ones(tie_kv, self_attention):
  b, n, m, l, d, h = 2, 6, 5, 3, 8, 2
  x, p = normal(b, n, d), normal(b, l, d)
  context = x if self_attention else normal(b, m, d)
  c_mask = jnp.arange(context.shape[1])[None] < jnp.array([[context.shape[1]], [2]])
  p_mask = jnp.arange(l)[None] < jnp.array([[3], [2]])
  module = luna_jax.LunaAttention(features=d, num_heads=h, tie_kv=tie_kv)
  params = module.init(jax.random.PRNGKey(0), x, p, context, c_mask, p_mask)['params']

  def unfused(params, x, p, context):
    context = x if self_attention else context
    pk = dense(context, params['pack_kv' if tie_kv else 'pack_key'])
    pv = pk if tie_kv else dense(context, params['pack_value'])
    split = lambda z: attn.split_heads(z, h)
    y_p = attn.merge_heads(
      plain_attention(split(dense(p, params['pack_query'])), split(pk), split(pv), c_mask)
    )
    k = dense(y_p, params['kv' if tie_kv else 'key'])
    v = k if tie_kv else dense(y_p, params['value'])
    y_x = plain_attention(split(dense(x, params['query'])), split(k), split(v), p_mask)
    return dense(attn.merge_heads(y_x), params['out']), y_p

  ours = lambda params, x, p, context: module.apply(
    {'params': params}, x, p, x if self_attention else context, c_mask, p_mask
  )
  loss = lambda fn, *args: sum(jnp.sum(jnp.sin(y)) for y in fn(*args))
  assert_trees_close(ours(params, x, p, context), unfused(params, x, p, context))
  assert_trees_close(
    jax.grad(loss, (1, 2, 3, 4))(ours, params, x, p, context),
    jax.grad(loss, (1, 2, 3, 4))(unfused, params, x, p, context),
  )


def test_self_attention_fused_qkv_equals_separate_projections():
  b, n, d, h = 2, 6, 8, 2
  x = normal(b, n, d)
  mask = jnp.arange(n)[None] < jnp.array([[6], [4]])
  module = luna_jax.SelfAttention(num_heads=h, qkv_dim=d)
  params = module.init(jax.random.PRNGKey(0), x, mask)['params']

  def unfused(params, x):
    q, k, v = (attn.split_heads(dense(x, params[name]), h) for name in ('query', 'key', 'value'))
    return dense(attn.merge_heads(plain_attention(q, k, v, mask)), params['out'])

  ours = lambda params, x: module.apply({'params': params}, x, mask)
  loss = lambda fn, params, x: jnp.sum(jnp.sin(fn(params, x)))
  assert_trees_close(ours(params, x), unfused(params, x))
  assert_trees_close(
    jax.grad(loss, (1, 2))(ours, params, x), jax.grad(loss, (1, 2))(unfused, params, x)
  )


def _loss_and_grads(name, remat, **extra):
  cfg = dict(
    name=name,
    num_layers=1,
    emb_dim=16,
    num_heads=2,
    mlp_dim=32,
    projection_length=4,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
    pooling='mean',
    remat=remat,
    **extra,
  )
  model = luna_jax.build_model(cfg, vocab_size=20, num_classes=3, max_length=12)
  tokens = jnp.asarray(np.random.default_rng(1).integers(1, 20, size=(2, 12)), jnp.int32)
  lengths = jnp.array([12, 7])
  params = model.init(jax.random.PRNGKey(0), tokens, lengths)['params']

  def loss(params):
    logits = model.apply(
      {'params': params}, tokens, lengths, train=True, rngs={'dropout': jax.random.PRNGKey(1)}
    )
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

  return params, jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_remat_equals_no_remat_in_values_and_gradients(name):
  params, expected = _loss_and_grads(name, 'none')
  for remat in ('layer', 'dots'):
    remat_params, actual = _loss_and_grads(name, remat)
    assert_trees_close(remat_params, params, rel=0.0)  # same parameter tree and initial values
    assert_trees_close(actual, expected)


def test_remat_equals_no_remat_for_the_language_model():
  cfg = dict(name='luna_lm', num_layers=1, emb_dim=16, num_heads=2, mlp_dim=32, projection_length=4)
  tokens = jnp.asarray(RNG.integers(1, 20, size=(2, 10)), jnp.int32)
  results = []
  for remat in ('none', 'layer'):
    model = luna_jax.build_model(
      dict(cfg, remat=remat), vocab_size=20, num_classes=0, max_length=10
    )
    params = model.init(jax.random.PRNGKey(0), tokens)['params']
    loss = lambda params, model=model: jnp.mean(
      model.apply({'params': params}, tokens, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
      ** 2
    )
    results.append(jax.jit(jax.value_and_grad(loss))(params))
  assert_trees_close(results[1], results[0])


def test_unknown_remat_is_rejected_by_name():
  allowed = re.escape("remat='sometimes': must be one of ['none', 'layer', 'dots']")
  with pytest.raises(ValueError, match=allowed):
    luna_jax.build_model(
      dict(name='luna', num_layers=1, emb_dim=8, num_heads=2, mlp_dim=8, remat='sometimes'),
      vocab_size=5,
      num_classes=2,
      max_length=4,
    )
  # The layer factory checks too (decoders build their layers with it directly).
  with pytest.raises(ValueError, match="remat must be one of .*'sometimes'"):
    encoders.remat_layer(layers.LunaEncoderLayer, 'sometimes', deterministic_argnum=3)


def test_xla_settings_add_missing_flags_and_never_override_the_users(monkeypatch):
  assert xla_settings.flags_for('--a=1', ('--a=2', '--b=')) == '--a=1 --b='
  assert xla_settings.flags_for('', ('--b=',)) == '--b='
  monkeypatch.setenv('XLA_FLAGS', '--x=1')
  monkeypatch.setenv(xla_settings.DEFAULTS_VARIABLE, '1')
  assert xla_settings.apply() == '--x=1'
  monkeypatch.delenv(xla_settings.DEFAULTS_VARIABLE)
  assert xla_settings.apply() == xla_settings.flags_for('--x=1')


def test_gpu_memory_on_demand_keeps_the_users_choice_and_one_name_of_the_fraction(monkeypatch):
  """XLA caps a process's GPU memory at 75% unless told otherwise: the benchmarks' processes get
  90%, allocated as needed, except where the user set a share under either name (jax refuses
  both names together)."""
  fraction, deprecated = (
    xla_settings.MEMORY_FRACTION_VARIABLE,
    xla_settings.DEPRECATED_MEMORY_FRACTION_VARIABLE,
  )
  environ = {}  # Stands in for os.environ.
  monkeypatch.setattr(os, 'environ', environ)
  xla_settings.default_gpu_memory_on_demand()
  assert environ == {fraction: '0.900', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  environ.clear()
  environ.update({deprecated: '0.5', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'true'})
  xla_settings.default_gpu_memory_on_demand()
  assert environ == {deprecated: '0.5', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'true'}

  settings = xla_settings.gpu_memory_on_demand(0.45)
  assert list(settings.items()) == [(fraction, '0.450'), ('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')]
  env = xla_settings.environment_with(settings, {deprecated: '0.5', 'HOME': '/h'})
  assert env == {**settings, 'HOME': '/h'}
  unrelated = xla_settings.environment_with({'A': '1'}, {deprecated: '0.5'})
  assert unrelated == {deprecated: '0.5', 'A': '1'}


def test_xla_settings_add_the_memory_aware_scheduler_only_with_remat(monkeypatch):
  monkeypatch.delenv(xla_settings.DEFAULTS_VARIABLE, raising=False)
  monkeypatch.setenv('XLA_FLAGS', '')
  assert xla_settings.apply().split() == list(xla_settings.FLAGS)
  with_remat = xla_settings.FLAGS + xla_settings.REMAT_FLAGS
  assert xla_settings.apply(remat='layer').split() == list(with_remat)
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_concurrency_optimized_scheduler=true')
  assert '=true' in xla_settings.apply(remat='dots') and '=false' not in xla_settings.apply('dots')
