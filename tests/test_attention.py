"""Luna attention, layers and encoders against the float64 NumPy reference of the paper's
equations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import attention as attn
from luna_jax.model import layers
from tests import reference as ref

RNG = np.random.default_rng(0)


def assert_close(actual, expected, rel=1e-5):
  """Elementwise |a - e| <= rel * max|e| (relative to the tensor's scale)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  scale = np.max(np.abs(expected))
  err = np.max(np.abs(actual - expected))
  assert err <= rel * scale, f'max error {err:.3g} > {rel:g} * {scale:.3g}'


def normal(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def lengths_mask(lengths, size):
  return np.arange(size)[None, :] < np.asarray(lengths)[:, None]


def test_dot_product_attention_matches_reference_with_padding():
  b, n, m, h, d = 2, 5, 7, 2, 8
  q, k, v = normal(b, n, d), normal(b, m, d), normal(b, m, d)
  mask = lengths_mask([7, 3], m)
  out, probs = attn.dot_product_attention(
    attn.split_heads(q, h), attn.split_heads(k, h), attn.split_heads(v, h), jnp.asarray(mask)
  )
  assert_close(attn.merge_heads(out), ref.attention(*map(np.float64, (q, k, v)), h, mask))
  np.testing.assert_array_equal(np.asarray(probs)[1, :, :, 3:], 0.0)


def test_transformer_self_attention_module_matches_reference():
  b, n, d, h = 2, 6, 16, 4
  x = normal(b, n, d)
  mask = jnp.asarray(lengths_mask([6, 2], n))
  module = luna_jax.SelfAttention(num_heads=h, qkv_dim=d)
  params = module.init(jax.random.PRNGKey(0), x, mask)['params']
  p = ref.to64(params)
  x64 = np.float64(x)
  expected = ref.linear(
    ref.attention(
      ref.linear(x64, p['query']),
      ref.linear(x64, p['key']),
      ref.linear(x64, p['value']),
      h,
      np.asarray(mask),
    ),
    p['out'],
  )
  assert_close(module.apply({'params': params}, x, mask), expected)
  assert all('bias' not in v for v in params.values())


@pytest.mark.parametrize(
  'tie_kv,heads,pack_heads', [(False, 4, 4), (True, 4, 4), (False, 4, 2), (True, 2, 8)]
)
def test_luna_attention_matches_reference(tie_kv, heads, pack_heads):
  b, n, l, d = 2, 9, 4, 16
  x, p = normal(b, n, d), normal(b, l, d)
  x_mask = lengths_mask([9, 3], n)
  p_mask = lengths_mask([4, 3], l)
  module = luna_jax.LunaAttention(
    features=d, num_heads=heads, num_pack_heads=pack_heads, tie_kv=tie_kv
  )
  args = (x, p, x, jnp.asarray(x_mask), jnp.asarray(p_mask))
  params = module.init(jax.random.PRNGKey(1), *args)['params']
  expected_names = {'pack_query', 'query', 'out'} | (
    {'pack_kv', 'kv'} if tie_kv else {'pack_key', 'pack_value', 'key', 'value'}
  )
  assert set(params) == expected_names
  y_x, y_p = module.apply({'params': params}, *args)
  x64, p64 = np.float64(x), np.float64(p)
  e_x, e_p = ref.luna_attention(
    ref.to64(params), x64, p64, x64, heads, pack_heads, tie_kv, x_mask, p_mask
  )
  assert_close(y_x, e_x)
  assert_close(y_p, e_p)


@pytest.mark.parametrize('tie_kv,heads,pack_heads', [(False, 4, 2), (True, 2, 4)])
def test_luna_attention_function_matches_reference(tie_kv, heads, pack_heads):
  """The pure function on projected inputs against eqs. (3)-(5) in float64 (identity W_O)."""
  b, n, m, l, d = 2, 6, 7, 3, 8
  x, p, c = normal(b, n, d), normal(b, l, d), normal(b, m, d)
  context_mask, p_mask = lengths_mask([7, 4], m), lengths_mask([3, 2], l)
  kv = ['kv'] if tie_kv else ['key', 'value']
  pack_kv = ['pack_' + name for name in kv]
  params = {
    name: {'kernel': normal(d, d), 'bias': normal(d)}
    for name in ['query', 'pack_query', *pack_kv, *kv]
  }
  linear = lambda z, name: z @ params[name]['kernel'] + params[name]['bias']
  pack_key, pack_value = (
    attn.split_heads(linear(c, name), pack_heads) for name in (pack_kv[0], pack_kv[-1])
  )
  out = attn.luna_attention(
    attn.split_heads(linear(x, 'query'), heads),
    attn.split_heads(linear(p, 'pack_query'), pack_heads),
    pack_key,
    pack_value,
    jnp.concatenate([params[k]['kernel'] for k in kv], axis=1),
    jnp.concatenate([params[k]['bias'] for k in kv]),
    jnp.asarray(context_mask),
    jnp.asarray(p_mask),
  )
  identity_out = {'out': {'kernel': np.eye(d)}}
  e_x, e_p = ref.luna_attention(
    ref.to64(params) | identity_out,
    *map(np.float64, (x, p, c)),
    heads,
    pack_heads,
    tie_kv,
    context_mask,
    p_mask,
  )
  assert_close(attn.merge_heads(out.unpacked), e_x)
  assert_close(out.packed, e_p)
  assert out.pack_probs.shape == (b, pack_heads, l, m)
  assert out.unpack_probs.shape == (b, heads, n, l)
  np.testing.assert_array_equal(np.asarray(out.unpack_probs)[1, :, :, 2:], 0.0)  # masked P slot
  with pytest.raises(ValueError, match='unpack_kernel'):
    attn.luna_attention(out.unpacked, out.unpacked, pack_key, pack_value, normal(d, 3 * d))


def test_masked_p_slots_and_padded_tokens_never_leak():
  b, n, l, d = 2, 8, 4, 16
  x, p = normal(b, n, d), normal(b, l, d)
  x_mask = jnp.asarray(lengths_mask([8, 3], n))
  p_mask = jnp.asarray(lengths_mask([4, 2], l))
  module = luna_jax.LunaAttention(features=d, num_heads=4)
  params = module.init(jax.random.PRNGKey(2), x, p, x, x_mask, p_mask)
  y_x, y_p = module.apply(params, x, p, x, x_mask, p_mask)
  # Garbage in the padded tokens of example 1 and in its masked P slots.
  x2 = x.at[1, 3:].set(100.0)
  p2 = p.at[1, 2:].set(-50.0)
  y_x2, y_p2 = module.apply(params, x2, p2, x2, x_mask, p_mask)
  np.testing.assert_allclose(y_x2[1, :3], y_x[1, :3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y_p2[1, :2], y_p[1, :2], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(y_x2[0], y_x[0])


@pytest.mark.parametrize('normalize_before', [False, True])
def test_luna_encoder_layer_matches_reference(normalize_before):
  b, n, l, d, heads = 2, 7, 3, 16, 4
  x, p = normal(b, n, d), normal(b, l, d)
  x_mask = lengths_mask([7, 4], n)
  p_mask = lengths_mask([3, 3], l)
  layer = luna_jax.LunaEncoderLayer(
    num_heads=heads, mlp_dim=24, num_pack_heads=2, normalize_before=normalize_before
  )
  args = (x, p, jnp.asarray(x_mask), jnp.asarray(p_mask))
  params = layer.init(jax.random.PRNGKey(3), *args)['params']
  # Non-trivial LayerNorm parameters, so the test sees which norm is applied where.
  params = jax.tree_util.tree_map_with_path(
    lambda path, v: v + 0.1 * normal(*v.shape) if 'norm' in jax.tree_util.keystr(path) else v,
    params,
  )
  out_x, out_p = layer.apply({'params': params}, *args)
  e_x, e_p = ref.luna_layer(
    ref.to64(params),
    np.float64(x),
    np.float64(p),
    heads,
    2,
    False,
    x_mask,
    p_mask,
    normalize_before,
  )
  assert_close(out_x, e_x)
  assert_close(out_p, e_p)


@pytest.mark.parametrize(
  'omega,tie_kv,implementation,beta',
  [
    ('softplus', False, 'scan', math.log(2.0)),
    ('elu', True, 'scan', math.log(2.0)),
    ('softplus', True, 'chunked', math.log(2.0)),
    ('elu', False, 'chunked', math.log(2.0)),
    ('softplus', False, 'scan', 2.0),  # A sharpness of its own reaches both forms.
    ('softplus', False, 'chunked', 2.0),
  ],
)
def test_causal_luna_matches_naive_reference(omega, tie_kv, implementation, beta):
  b, n, l, d, heads = 2, 10, 3, 8, 2
  x, p = normal(b, n, d), normal(b, l, d)
  p_mask = lengths_mask([3, 2], l)
  module = luna_jax.LunaCausalAttention(
    features=d,
    num_heads=heads,
    tie_kv=tie_kv,
    omega=omega,
    softplus_beta=beta,
    implementation=implementation,
    chunk_size=4,
  )
  params = module.init(jax.random.PRNGKey(4), x, p, jnp.asarray(p_mask))['params']
  y = module.apply({'params': params}, x, p, jnp.asarray(p_mask))
  expected = ref.causal_luna_attention(
    ref.to64(params), np.float64(x), np.float64(p), heads, tie_kv, omega, beta, p_mask
  )
  assert_close(y, expected)


def test_softplus_beta_default_is_log2_form():
  z = jnp.array([-3.0, 0.0, 2.5])
  np.testing.assert_allclose(
    attn.causal_pack_activation(z), np.log2(1 + 2.0 ** np.asarray(z)), rtol=1e-6
  )
  np.testing.assert_allclose(
    attn.causal_pack_activation(z, beta=2.0), np.log1p(np.exp(2 * np.asarray(z))) / 2, rtol=1e-6
  )


def test_causal_luna_is_causal():
  b, n, l, d = 1, 12, 4, 8
  x, p = normal(b, n, d), normal(b, l, d)
  module = luna_jax.LunaCausalAttention(features=d, num_heads=2)
  params = module.init(jax.random.PRNGKey(5), x, p)
  y = module.apply(params, x, p)
  t = 6
  y2 = module.apply(params, x.at[:, t + 1 :].set(normal(b, n - t - 1, d)), p)
  np.testing.assert_array_equal(y2[:, : t + 1], y[:, : t + 1])
  assert not np.allclose(y2[:, t + 1 :], y[:, t + 1 :])


def test_single_decoding_steps_equal_the_scan():
  b, n, l, h, dh = 2, 7, 3, 2, 4
  pq = normal(b, l, h, dh)
  q, pk, k, v = (normal(b, n, h, dh) for _ in range(4))
  p_mask = jnp.asarray(lengths_mask([3, 1], l))
  y_scan, final = attn.causal_luna_attention(pq, q, pk, k, v, p_mask)
  state = attn.init_causal_state(b, h, dh, l)
  step = jax.jit(attn.causal_luna_step)
  for t in range(n):
    state, y_t = step(state, pq, q[:, t], pk[:, t], k[:, t], v[:, t], p_mask)
    np.testing.assert_allclose(y_t, y_scan[:, t], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.num_steps, [n, n])
  np.testing.assert_allclose(state.value_accum, final.value_accum, rtol=1e-6)


def test_scan_continues_from_a_state():
  b, n, l, h, dh = 1, 8, 2, 1, 4
  pq = normal(b, l, h, dh)
  q, pk, k, v = (normal(b, n, h, dh) for _ in range(4))
  full, _ = attn.causal_luna_attention(pq, q, pk, k, v)
  first, state = attn.causal_luna_attention(pq, q[:, :3], pk[:, :3], k[:, :3], v[:, :3])
  rest, _ = attn.causal_luna_attention(
    pq, q[:, 3:], pk[:, 3:], k[:, 3:], v[:, 3:], initial_state=state
  )
  np.testing.assert_allclose(jnp.concatenate([first, rest], axis=1), full, rtol=1e-5, atol=1e-6)


def test_attention_dropout_drops_and_rescales():
  q, k, v = normal(1, 4, 1, 8), normal(1, 6, 1, 8), jnp.ones((1, 6, 1, 8))
  out, _ = attn.dot_product_attention(
    q, k, v, dropout_rate=0.5, dropout_rng=jax.random.PRNGKey(0), deterministic=False
  )
  kept, _ = attn.dot_product_attention(q, k, v)
  np.testing.assert_allclose(kept, 1.0, rtol=1e-6)  # rows of probs sum to 1, values are ones
  assert not np.allclose(out, kept)
  with pytest.raises(ValueError, match='rng'):
    attn.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=False)


# ----------------------------------------------------------------------------------------------
# The fused path (`jax.nn.dot_product_attention`) against the exact one.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('padding', ['masks', 'key_lengths'])
@pytest.mark.parametrize('use_cudnn', [False, True], ids=['xla', 'cudnn_fallback'])
def test_fused_attention_equals_exact_attention_in_values_and_gradients(
  monkeypatch, use_cudnn, padding
):
  if use_cudnn:  # On a machine without cuDNN the flash kernel refuses and XLA's takes over.
    monkeypatch.setattr(attn, 'fused_implementation', lambda dtype: 'cudnn')
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 7, 2, 4)), jnp.float32) for _ in range(3))
  lengths = jnp.array([7, 4])
  key_mask = jnp.arange(7)[None] < lengths[:, None]
  query_mask = jnp.array([[True] * 7, [True, False, True, True, False, False, True]])
  if padding == 'key_lengths':  # The Transformer's prefix mask, without a query mask.
    query_mask = None

  def exact(q, k, v):
    return attn.dot_product_attention(q, k, v, key_mask, query_mask=query_mask)[0]

  def fused(q, k, v):
    if padding == 'key_lengths':
      return attn.fused_dot_product_attention(q, k, v, key_lengths=lengths)
    return attn.fused_dot_product_attention(q, k, v, key_mask, query_mask)

  # Every row, the padded queries' too: with key lengths they attend to the valid keys, as here.
  np.testing.assert_allclose(fused(q, k, v), exact(q, k, v), rtol=1e-5, atol=1e-6)
  cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  grads = [
    jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cotangent), argnums=(0, 1, 2))(q, k, v)
    for f in (exact, fused)
  ]
  for g_exact, g_fused in zip(*grads):
    np.testing.assert_allclose(g_fused, g_exact, rtol=1e-4, atol=1e-5)


def fake_cuda_device(monkeypatch):
  """Makes `attn.fused_implementation` see an NVIDIA GPU (it reads only the default backend and
  the first device's platform version); returns the fake client, whose version can be changed."""

  class Client:
    platform_version = 'cuda 12080'

  class Device:
    client = Client()

  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(jax, 'devices', lambda: [Device()])
  return Client


@pytest.mark.parametrize('padding', ['key_lengths', 'nonzero'])
def test_fused_attention_gives_cudnn_the_lengths_and_keeps_the_nonzero_mask_dense(
  monkeypatch, padding
):
  calls = []
  xla_attention = jax.nn.dot_product_attention

  def record(query, key, value, **kwargs):
    calls.append(kwargs)
    return xla_attention(query, key, value, **{**kwargs, 'implementation': 'xla'})

  fake_cuda_device(monkeypatch)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 2, 8)), jnp.bfloat16) for _ in range(3))
  lengths = jnp.array([6, 3], jnp.int16)  # Cast to the int32 that jax asks for.
  nonzero = jnp.array([[True] * 6, [True, False, True, False, False, True]])
  if padding == 'key_lengths':
    out = attn.fused_dot_product_attention(q, k, v, key_lengths=lengths)
    exact = attn.dot_product_attention(q, k, v, jnp.arange(6)[None] < lengths[:, None])[0]
  else:
    out = attn.fused_dot_product_attention(q, k, v, nonzero, nonzero)
    exact = attn.dot_product_attention(q, k, v, nonzero, query_mask=nonzero)[0]
  [kwargs] = calls
  assert kwargs['implementation'] == 'cudnn'
  assert 'query_seq_lengths' not in kwargs
  if padding == 'key_lengths':
    assert kwargs['mask'] is None
    assert kwargs['key_value_seq_lengths'].dtype == jnp.int32
    np.testing.assert_array_equal(kwargs['key_value_seq_lengths'], [6, 3])
  else:  # LRA's outer-product mask is no prefix mask: cuDNN gets it whole, as a bias.
    assert kwargs['key_value_seq_lengths'] is None
    # Rows of valid queries keep their key mask; a masked query's row takes every key (its query
    # is zeroed, so it attends uniformly, as the exact path's masked rows do).
    dense = jnp.where(nonzero[:, :, None], nonzero[:, None, :], True)[:, None]
    np.testing.assert_array_equal(kwargs['mask'], dense)
  np.testing.assert_allclose(np.float32(out), np.float32(exact), atol=2e-2)
  with pytest.raises(ValueError, match='not both'):
    attn.fused_dot_product_attention(q, k, v, nonzero, key_lengths=lengths)


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize('padding', ['key_lengths', 'nonzero', 'none'])
@pytest.mark.parametrize('q_len,k_len', [(7, 7), (7, 4), (6, 5)])
def test_fused_attention_gives_cudnn_even_lengths_and_equals_exact_attention(
  monkeypatch, padding, q_len, k_len, dtype
):
  # jax's cuDNN flash attention refuses odd lengths in training (a CLS makes LRA's lengths odd).
  calls = []
  xla_attention = jax.nn.dot_product_attention

  def record(query, key, value, **kwargs):
    calls.append((query.shape[1], key.shape[1], kwargs))
    return xla_attention(query, key, value, **{**kwargs, 'implementation': 'xla'})

  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  rng = np.random.default_rng(q_len * 10 + k_len)
  q = jnp.asarray(rng.normal(size=(2, q_len, 2, 8)), dtype)
  k, v = (jnp.asarray(rng.normal(size=(2, k_len, 2, 8)), dtype) for _ in range(2))
  lengths = jnp.array([k_len, 3])
  key_mask = jnp.arange(k_len)[None] < lengths[:, None]
  if padding == 'nonzero':  # An example without a valid key: its rows attend uniformly.
    key_mask = key_mask.at[1].set(False)
  query_mask = jnp.asarray(rng.random((2, q_len)) < 0.7).at[:, 0].set(True)
  if padding == 'key_lengths':
    masks, exact_masks = {'key_lengths': lengths}, (key_mask, None)
  elif padding == 'nonzero':
    masks, exact_masks = {'key_mask': key_mask, 'query_mask': query_mask}, (key_mask, query_mask)
  else:
    masks, exact_masks = {}, (None, None)

  def exact(q, k, v):
    return attn.dot_product_attention(q, k, v, exact_masks[0], query_mask=exact_masks[1])[0]

  def fused(q, k, v):
    return attn.fused_dot_product_attention(q, k, v, **masks)

  with attn.target_platform('cuda'):
    out = fused(q, k, v)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    grads = [
      jax.grad(lambda *a, f=f: jnp.sum(f(*a).astype(jnp.float32) * cotangent), argnums=(0, 1, 2))(
        q, k, v
      )
      for f in (exact, fused)
    ]
  assert calls and all(
    kwargs['implementation'] == 'cudnn' and padded_q % 2 == 0 and padded_k % 2 == 0
    for padded_q, padded_k, kwargs in calls
  )
  padded_q, padded_k, kwargs = calls[0]
  assert (padded_q, padded_k) == (q_len + q_len % 2, k_len + k_len % 2)
  if k_len % 2 and padding != 'nonzero':  # The padded key is beyond every example's length.
    np.testing.assert_array_equal(
      kwargs['key_value_seq_lengths'], lengths if padding == 'key_lengths' else [k_len, k_len]
    )
  assert out.shape == q.shape
  # Every row, the masked queries' too: they attend uniformly on both paths.
  tolerance = 2e-3 if dtype == jnp.float16 else 2e-2
  np.testing.assert_allclose(np.float32(out), np.float32(exact(q, k, v)), atol=tolerance)
  for g_exact, g_fused in zip(*grads, strict=True):
    np.testing.assert_allclose(
      np.float32(g_fused), np.float32(g_exact), atol=5 * tolerance, rtol=5 * tolerance
    )


@pytest.mark.parametrize('mask', ['key_mask', 'query_mask'])
def test_fused_attention_with_one_mask_runs_on_xla(monkeypatch, mask):
  # cuDNN's branch takes masks only as one dense [batch, 1, q_len, k_len] array.
  calls = []
  xla_attention = jax.nn.dot_product_attention

  def record(query, key, value, **kwargs):
    calls.append(kwargs['implementation'])
    return xla_attention(query, key, value, **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  q = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 2, 8)), jnp.bfloat16)
  masks = {mask: jnp.array([[True] * 5, [True, True, False, False, False]])}
  with attn.target_platform('cuda'):
    out = attn.fused_dot_product_attention(q, q, q, **masks)
  assert calls == ['xla']
  exact = attn.dot_product_attention(
    q, q, q, masks.get('key_mask'), query_mask=masks.get('query_mask')
  )[0]
  np.testing.assert_allclose(np.float32(out), np.float32(exact), atol=2e-2)


def test_target_platform_retraces_jitted_functions_and_takes_known_platforms(monkeypatch):
  implementations = []
  xla_attention = jax.nn.dot_product_attention

  def record(query, key, value, **kwargs):
    implementations.append(kwargs['implementation'])
    return xla_attention(query, key, value, **{**kwargs, 'implementation': 'xla'})

  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  q = jnp.ones((1, 4, 1, 8), jnp.bfloat16)
  attend = jax.jit(attn.fused_dot_product_attention)
  attend(q, q, q)  # Traced for this CPU.
  with attn.target_platform('cuda'):
    attend(q, q, q)  # Traced again, for an NVIDIA GPU, not taken from the cache.
  attend(q, q, q)  # And again for the CPU after the block.
  assert implementations == ['xla', 'cudnn', 'xla']
  with pytest.raises(ValueError, match="not 'gpu'"):
    with attn.target_platform('gpu'):
      pass


@pytest.mark.parametrize('pooling', ['cls', 'mean'])
def test_fused_transformer_with_lengths_equals_the_softmax_one_in_values_and_gradients(pooling):
  config = {
    'name': 'transformer',
    'pooling': pooling,
    'num_layers': 2,
    'emb_dim': 16,
    'mlp_dim': 32,
    'num_heads': 2,
    'dropout_rate': 0.0,
    'attention_dropout_rate': 0.0,
    'padding_mask': 'lengths',
  }
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 20, size=(3, 8)), jnp.int32)
  lengths = jnp.array([8, 3, 5])  # Two examples shorter than the batch (their padding ids nonzero).
  targets = jnp.array([0, 2, 1])
  outputs, grads = {}, {}
  for implementation in ('softmax', 'fused'):
    model = luna_jax.build_model(
      {**config, 'attention_implementation': implementation},
      vocab_size=20,
      num_classes=3,
      max_length=8,
    )
    if implementation == 'softmax':
      params = model.init(jax.random.PRNGKey(0), tokens, lengths)['params']

    def loss(params, model=model):
      logits = model.apply({'params': params}, tokens, lengths)
      log_probs = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], -1)), logits

    (_, outputs[implementation]), grads[implementation] = jax.value_and_grad(loss, has_aux=True)(
      params
    )
  np.testing.assert_allclose(outputs['fused'], outputs['softmax'], rtol=1e-5, atol=1e-6)
  fused, tree = jax.tree_util.tree_flatten(grads['fused'])
  softmax, softmax_tree = jax.tree_util.tree_flatten(grads['softmax'])
  assert tree == softmax_tree
  for g_fused, g_softmax in zip(fused, softmax, strict=True):
    assert np.all(np.isfinite(g_fused))
    np.testing.assert_allclose(g_fused, g_softmax, rtol=1e-4, atol=1e-6)


def test_fused_attention_asks_for_cudnn_only_on_an_nvidia_gpu_with_16_bit_inputs(monkeypatch):
  assert attn.fused_implementation(jnp.bfloat16) == 'xla'  # This machine's CPU.
  with attn.target_platform('cuda'):  # Compiling ahead of time for an NVIDIA GPU.
    assert attn.fused_implementation(jnp.bfloat16) == 'cudnn'
    assert attn.fused_implementation(jnp.float32) == 'xla'
  assert attn.fused_implementation(jnp.bfloat16) == 'xla'
  client = fake_cuda_device(monkeypatch)
  assert attn.fused_implementation(jnp.bfloat16) == 'cudnn'
  assert attn.fused_implementation(jnp.float16) == 'cudnn'
  assert attn.fused_implementation(jnp.float32) == 'xla'
  client.platform_version = 'rocm 6.3'
  assert attn.fused_implementation(jnp.bfloat16) == 'xla'


def test_masks_that_are_not_bool_are_refused_by_name():
  """An additive 0 / -inf mask (PyTorch's convention) would read as all True and mask nothing."""
  x = jnp.ones((1, 3, 2, 4))
  additive = jnp.array([[0.0, 0.0, -jnp.inf]])
  luna_layer, key = layers.LunaEncoderLayer(num_heads=2, mlp_dim=8), jax.random.PRNGKey(0)
  tokens, slots = jnp.ones((1, 3, 8)), jnp.ones((1, 2, 8))
  calls = {
    'key_mask': lambda: attn.dot_product_attention(x, x, x, additive),
    'query_mask': lambda: attn.attention_weights(x, x, query_mask=additive),
    'fused key_mask': lambda: attn.fused_dot_product_attention(x, x, x, additive),
    'p_mask': lambda: attn.causal_luna_attention_chunked(x, x, x, x, x, additive, chunk_size=3),
    # luna_attention names its own arguments, not those of the attentions it calls.
    'luna context_mask': lambda: attn.luna_attention(x, x, x, x, jnp.ones((8, 16)), None, additive),
    'luna p_mask': lambda: attn.luna_attention(x, x, x, x, jnp.ones((8, 16)), None, None, additive),
    # And the Luna layer its own (its x_mask is its attention's context_mask).
    'layer x_mask': lambda: luna_layer.init(key, tokens, slots, additive, None),
    'layer p_mask': lambda: luna_layer.init(key, tokens, slots, None, additive[:, :2]),
  }
  for name, call in calls.items():
    with pytest.raises(ValueError, match=f'{name.split()[-1]} has dtype float32: masks are bool'):
      call()
  jax.block_until_ready(attn.dot_product_attention(x, x, x, additive == 0))


def test_dropout_masks_are_drawn_where_the_authors_draw_them():
  """Pack and unpack draw from two keys split from the one given; the causal scan draws at every
  position anew; the Luna layer drops Y_P out on its residual branch."""
  b, n, l, h, dh = 2, 6, 3, 2, 4
  d = h * dh
  q, pack_query = normal(b, n, h, dh), normal(b, l, h, dh)
  pack_key, pack_value = normal(b, n, h, dh), normal(b, n, h, dh)
  kernel = normal(d, 2 * d) / math.sqrt(d)
  key = jax.random.PRNGKey(7)
  dropout = dict(dropout_rate=0.3, deterministic=False)
  out = attn.luna_attention(q, pack_query, pack_key, pack_value, kernel, dropout_rng=key, **dropout)
  pack_rng, unpack_rng = jax.random.split(key)
  y_p, _ = attn.dot_product_attention(
    pack_query, pack_key, pack_value, dropout_rng=pack_rng, **dropout
  )
  keys, values = (attn.split_heads(z, h) for z in jnp.split(attn.merge_heads(y_p) @ kernel, 2, -1))
  y_x, _ = attn.dot_product_attention(q, keys, values, dropout_rng=unpack_rng, **dropout)
  assert_close(out.packed, attn.merge_heads(y_p))
  assert_close(out.unpacked, y_x)

  # The same token at every position: without dropout every output is the same (the sums grow
  # with t and are divided by t); a mask drawn once for all positions would keep them the same.
  same = [jnp.broadcast_to(normal(b, 1, h, dh), (b, n, h, dh)) for _ in range(4)]
  y, _ = attn.causal_luna_attention(pack_query, *same)
  np.testing.assert_allclose(y, jnp.broadcast_to(y[:, :1], y.shape), rtol=1e-5, atol=1e-6)
  y, _ = attn.causal_luna_attention(
    pack_query, *same, dropout_rate=0.5, dropout_rng=jax.random.PRNGKey(1), deterministic=False
  )
  assert not np.allclose(y, y[:, :1], atol=1e-6)

  # Residual dropout on Y_P: with no attention dropout, P' depends on the dropout key through it.
  layer = luna_jax.LunaEncoderLayer(num_heads=h, mlp_dim=16, dropout_rate=0.5)
  x, p = normal(b, n, d), normal(b, l, d)
  variables = layer.init(jax.random.PRNGKey(2), x, p)
  new_p = [
    layer.apply(variables, x, p, deterministic=False, rngs={'dropout': jax.random.PRNGKey(s)})[1]
    for s in (0, 1)
  ]
  assert not np.allclose(*new_p)
