"""Encoders and classifiers: reference match, padding invariance, dtypes, gradients, parameter
counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import luna_jax
from tests import reference as ref
from tests.test_attention import assert_close

RNG = np.random.default_rng(1)


def tokens(b, n, vocab, lengths):
  ids = RNG.integers(1, vocab, size=(b, n))
  ids[np.arange(n)[None, :] >= np.asarray(lengths)[:, None]] = 0
  return jnp.asarray(ids, jnp.int32), jnp.asarray(lengths, jnp.int32)


def small_config(**overrides):
  cfg = dict(
    vocab_size=20,
    max_length=12,
    num_layers=2,
    emb_dim=16,
    num_heads=4,
    mlp_dim=32,
    projection_length=5,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
  )
  cfg.update(overrides)
  return luna_jax.ModelConfig(**cfg)


def test_luna_encoder_matches_reference_with_p_flowing_between_layers():
  cfg = small_config(num_pack_heads=2)
  ids, lengths = tokens(2, 12, cfg.vocab_size, [12, 3])
  enc = luna_jax.LunaEncoder(cfg)
  params = enc.init(jax.random.PRNGKey(0), ids, lengths)['params']
  out = enc.apply({'params': params}, ids, lengths)

  p64 = ref.to64(params)
  emb = p64['embed']
  x = emb['token_embedding']['embedding'][np.asarray(ids)]
  x = np.concatenate([np.broadcast_to(emb['cls'], (2, 1, 16)), x], axis=1)
  x = x + emb['position_embedding'][None, :13]
  x = ref.layer_norm(x, p64['embedding_norm'], 1e-5)
  p = ref.layer_norm(
    np.broadcast_to(p64['projected_embeddings'], (2, 5, 16)), p64['projected_embedding_norm'], 1e-5
  )
  full = np.asarray(lengths) + 1  # CLS
  x_mask = np.arange(13)[None] < full[:, None]
  p_mask = np.arange(5)[None] < full[:, None]
  x, p = x * x_mask[..., None], p * p_mask[..., None]
  for i in range(cfg.num_layers):
    x, p = ref.luna_layer(p64[f'layer_{i}'], x, p, 4, 2, False, x_mask, p_mask, False)

  np.testing.assert_array_equal(out.x_mask, x_mask)
  np.testing.assert_array_equal(out.p_mask, [[True] * 5, [True] * 4 + [False]])
  assert_close(np.asarray(out.x)[x_mask], x[x_mask])
  assert_close(np.asarray(out.p)[p_mask], p[p_mask])


def test_luna_encoder_over_embeddings_matches_reference_and_ignores_padding():
  """`embed=False`: the Luna layers over the caller's embeddings, P flowing between them as in the
  token encoder; no token table, CLS, positions or embedding LayerNorm; padded rows change
  nothing valid."""
  cfg = small_config(num_pack_heads=2)
  lengths = jnp.array([12, 3])
  x_in = jnp.asarray(RNG.normal(size=(2, 12, 16)), jnp.float32)
  enc = luna_jax.LunaEncoder(cfg, embed=False)
  params = enc.init(jax.random.PRNGKey(0), x_in, lengths)['params']
  assert not {'embed', 'embedding_norm'} & set(params)
  out = enc.apply({'params': params}, x_in, lengths)

  p64 = ref.to64(params)
  p = ref.layer_norm(
    np.broadcast_to(p64['projected_embeddings'], (2, 5, 16)), p64['projected_embedding_norm'], 1e-5
  )
  x_mask = np.arange(12)[None] < np.asarray(lengths)[:, None]
  p_mask = np.arange(5)[None] < np.asarray(lengths)[:, None]
  x, p = np.asarray(x_in, np.float64) * x_mask[..., None], p * p_mask[..., None]
  for i in range(cfg.num_layers):
    x, p = ref.luna_layer(p64[f'layer_{i}'], x, p, 4, 2, False, x_mask, p_mask, False)
  np.testing.assert_array_equal(out.x_mask, x_mask)
  assert_close(np.asarray(out.x)[x_mask], x[x_mask])
  assert_close(np.asarray(out.p)[p_mask], p[p_mask])

  garbage = enc.apply({'params': params}, x_in.at[1, 3:].set(1e4), lengths)
  np.testing.assert_array_equal(garbage.x[1, :3], out.x[1, :3])
  np.testing.assert_array_equal(garbage.p[1, :3], out.p[1, :3])
  with pytest.raises(ValueError, match=r'\[batch, n, emb_dim=16\] embeddings, got shape \(2, 12\)'):
    enc.init(jax.random.PRNGKey(0), jnp.ones((2, 12), jnp.int32), lengths)


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_valid_outputs_ignore_padding_content_and_padded_length(name):
  cfg = small_config(max_length=20)
  enc = luna_jax.ENCODERS[name](cfg)
  ids, lengths = tokens(2, 12, cfg.vocab_size, [12, 4])
  variables = enc.init(jax.random.PRNGKey(1), ids, lengths)
  out = enc.apply(variables, ids, lengths)
  garbage = ids.at[1, 4:].set(7)
  longer = jnp.concatenate([ids, jnp.full((2, 8), 3, jnp.int32)], axis=1)  # padded to 20, not zero
  for other in (garbage, longer):
    out2 = enc.apply(variables, other, lengths)
    np.testing.assert_allclose(out2.x[1, :5], out.x[1, :5], rtol=1e-5, atol=1e-5)  # CLS + 4 tokens
    np.testing.assert_allclose(out2.x[0, :13], out.x[0, :13], rtol=1e-5, atol=1e-5)
    if name == 'luna':
      np.testing.assert_allclose(out2.p[1, :5], out.p[1, :5], rtol=1e-5, atol=1e-5)


def test_short_sequence_gets_no_more_p_slots_than_tokens():
  cfg = small_config(projection_length=8, max_length=12)
  ids, lengths = tokens(3, 12, cfg.vocab_size, [12, 5, 1])
  enc = luna_jax.LunaEncoder(dataclasses.replace(cfg, prepend_cls=False))
  out = enc.apply(enc.init(jax.random.PRNGKey(2), ids, lengths), ids, lengths)
  np.testing.assert_array_equal(out.p_mask.sum(axis=1), [8, 5, 1])


def test_mt_recipe_scales_p_and_adds_sinusoid():
  cfg = small_config(
    positional='sinusoidal', embed_scale=True, embedding_layernorm=False, num_layers=1
  )
  ids, lengths = tokens(1, 12, cfg.vocab_size, [12])
  enc = luna_jax.LunaEncoder(cfg)
  params = enc.init(jax.random.PRNGKey(3), ids, lengths)['params']
  first_p = []

  def read_first_p(method, args, kwargs, context):  # The P that the first layer is given.
    if isinstance(context.module, luna_jax.LunaEncoderLayer) and context.method_name == '__call__':
      first_p.append(args[1])
    return method(*args, **kwargs)

  with nn.intercept_methods(read_first_p):
    enc.apply({'params': params}, ids, lengths)
  expected = np.asarray(params['projected_embeddings']) * 4.0 + np.asarray(
    luna_jax.sinusoidal_positions(5, 16)
  )
  np.testing.assert_allclose(first_p[0][0], expected, rtol=1e-6)
  assert 'embedding_norm' not in params


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_jit_grad_gives_finite_nonzero_gradients(name):
  model_cfg = dict(
    name=name,
    num_layers=2,
    emb_dim=32,
    num_heads=4,
    mlp_dim=64,
    projection_length=4,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
  )
  ids, lengths = tokens(4, 16, 30, [16, 9, 3, 12])
  model = luna_jax.build_model(model_cfg, vocab_size=30, num_classes=3, max_length=16)
  variables = model.init(jax.random.PRNGKey(4), ids, lengths)
  targets = jnp.array([0, 1, 2, 1])

  @jax.jit
  def loss_fn(params, rng):
    logits = model.apply({'params': params}, ids, lengths, train=True, rngs={'dropout': rng})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=1))

  grads = jax.grad(loss_fn)(variables['params'], jax.random.PRNGKey(5))
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize('precision', ['bfloat16', 'bfloat16_all'])
@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_bfloat16_forward_within_1e2_relative_of_float32(name, precision):
  cfg = small_config(max_length=16, emb_dim=32, mlp_dim=64)
  ids, lengths = tokens(4, 16, cfg.vocab_size, [16, 9, 3, 12])
  f32_enc = luna_jax.ENCODERS[name](cfg)
  bf16_enc = luna_jax.ENCODERS[name](dataclasses.replace(cfg, precision=precision))
  variables = f32_enc.init(jax.random.PRNGKey(6), ids, lengths)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  f32, bf16 = f32_enc.apply(variables, ids, lengths), bf16_enc.apply(variables, ids, lengths)
  assert bf16.x.dtype == (jnp.bfloat16 if precision == 'bfloat16_all' else jnp.float32)
  for a, b in [(f32.x, bf16.x)] + ([(f32.p, bf16.p)] if name == 'luna' else []):
    rel = np.linalg.norm(np.asarray(b, np.float32) - a) / np.linalg.norm(a)
    assert 0 < rel <= 1e-2, rel


def count(variables):
  return sum(x.size for x in jax.tree.leaves(variables))


def init_text_model(name, length=1000, **extra):
  cfg = dict(name=name, num_layers=4, emb_dim=256, num_heads=4, mlp_dim=1024, **extra)
  model = luna_jax.build_model(cfg, vocab_size=257, num_classes=2, max_length=length)
  ids = jnp.ones((1, length), jnp.int32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, jnp.array([length]))


def test_lra_text_transformer_parameter_count():
  d, ffn, vocab, layers = 256, 1024, 257, 4
  per_layer = 2 * (2 * d) + 4 * d * d + (d * ffn + ffn + ffn * d + d)  # 2 LNs, q/k/v/out, MLP
  head = d * ffn + ffn + ffn * 2 + 2
  expected = vocab * d + d + layers * per_layer + 2 * d + head  # embed, CLS, blocks, final LN, head
  # The official LRA Text Transformer (LRA text_classification/configs/base_tc_config.py).
  assert expected == 3_486_722
  assert (
    count(init_text_model('transformer', activation='gelu_tanh', positional='sinusoidal'))
    == expected
  )


def test_lra_text_luna16_parameter_count():
  d, ffn, vocab, layers, l, n = 256, 1024, 257, 4, 16, 4000
  attention = 7 * (d * d + d)  # untied: pack q/k/v, unpack q/k/v, out
  per_layer = attention + 3 * (2 * d) + (d * ffn + ffn + ffn * d + d)
  embeddings = vocab * d + d + (n + 1) * d + l * d + 2 * (2 * d)  # tokens, CLS, positions, P, 2 LNs
  head = d * ffn + ffn + ffn * 2 + 2
  assert count(init_text_model('luna', length=n, projection_length=l)) == (
    embeddings + layers * per_layer + head
  )
  tied = count(init_text_model('luna', length=n, projection_length=l, tie_kv=True))
  assert count(init_text_model('luna', length=n, projection_length=l)) - tied == (
    layers * 2 * (d * d + d)
  )


@pytest.mark.parametrize('dual', [False, True])
@pytest.mark.parametrize(
  'name, pooling',
  [
    *(('luna', p) for p in ('cls', 'first', 'mean', 'p')),
    *(('transformer', p) for p in ('cls', 'first', 'mean')),
  ],
)
def test_an_empty_sequence_gives_finite_logits_and_gradients(name, pooling, dual):
  """Length 0 is a valid input (an empty Retrieval document; `lra.core.check_arrays` allows it):
  no softmax over an all-masked row may turn it or the batch's gradients into NaN."""
  cfg = dict(name=name, pooling=pooling, num_layers=1, emb_dim=16, num_heads=2, mlp_dim=16)
  ids, lengths = tokens(2, 8, 20, [0, 5])
  inputs = (ids, lengths, ids[::-1], lengths[::-1]) if dual else (ids, lengths)
  model = luna_jax.build_model(cfg, vocab_size=20, num_classes=3, max_length=8, dual=dual)
  params = model.init(jax.random.PRNGKey(0), *inputs)['params']
  total, grads = jax.value_and_grad(lambda p: model.apply({'params': p}, *inputs).sum())(params)
  assert np.isfinite(total)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_pooling_modes_and_dual_interactions():
  x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[True, True, True], [True, False, False]])
  out = luna_jax.EncoderOutput(x, mask, p=x[:, :2] * 10, p_mask=mask[:, :2])
  np.testing.assert_allclose(luna_jax.pool(out, 'cls'), x[:, 0])
  np.testing.assert_allclose(luna_jax.pool(out, 'mean'), [[2, 3], [6, 7]])
  np.testing.assert_allclose(luna_jax.pool(out, 'p'), [[10, 20], [60, 70]])
  u, v = jnp.array([[1.0, 2.0]]), jnp.array([[3.0, 5.0]])
  np.testing.assert_allclose(luna_jax.combine_pair(u, v, 'concat'), [[1, 2, 3, 5]])
  np.testing.assert_allclose(luna_jax.combine_pair(u, v, 'nli'), [[1, 2, 3, 5, 3, 10, -2, -3]])


@pytest.mark.parametrize('interaction', ['concat', 'nli'])
def test_dual_encoder_shares_weights_and_is_symmetric_in_shape(interaction):
  model = luna_jax.build_model(
    dict(
      name='luna',
      num_layers=1,
      emb_dim=16,
      num_heads=2,
      mlp_dim=16,
      projection_length=4,
      interaction=interaction,
    ),
    vocab_size=20,
    num_classes=2,
    max_length=10,
    dual=True,
  )
  a, la = tokens(2, 10, 20, [10, 4])
  b, lb = tokens(2, 10, 20, [6, 10])
  variables = model.init(jax.random.PRNGKey(6), a, la, b, lb)
  assert list(variables['params']) == ['sequence_encoder', 'head']
  width = 2 * 16 if interaction == 'concat' else 4 * 16
  assert variables['params']['head']['hidden']['kernel'].shape[0] == width
  logits = model.apply(variables, a, la, b, lb)
  swapped = model.apply(variables, b, lb, a, la)
  assert logits.shape == (2, 2) and not np.allclose(logits, swapped)
  # Each document is encoded with its own lengths, then the pair goes through the head.
  separately = model.apply(
    variables,
    method=lambda m: m.head(luna_jax.combine_pair(m.encode(a, la), m.encode(b, lb), interaction)),
  )
  np.testing.assert_allclose(logits, separately, rtol=1e-6)


def test_classifier_dropout_acts_in_training_only():
  model = luna_jax.build_model(
    dict(name='luna', num_layers=1, emb_dim=16, num_heads=2, mlp_dim=16, projection_length=4),
    vocab_size=20,
    num_classes=3,
    max_length=10,
  )  # The default dropout rates, 0.1.
  ids, lengths = tokens(2, 10, 20, [10, 6])
  variables = model.init(jax.random.PRNGKey(0), ids, lengths)
  train = lambda seed: model.apply(
    variables, ids, lengths, train=True, rngs={'dropout': jax.random.PRNGKey(seed)}
  )
  assert not np.allclose(train(1), train(2))  # Different dropout masks.
  evaluate = lambda seed: model.apply(
    variables, ids, lengths, rngs={'dropout': jax.random.PRNGKey(seed)}
  )
  np.testing.assert_array_equal(evaluate(1), evaluate(2))
  np.testing.assert_array_equal(evaluate(1), model.apply(variables, ids, lengths))


@pytest.mark.parametrize('hidden_layers', [1, 2])
def test_tanh_head_is_dense_tanh_dense(hidden_layers):
  """RoBERTa's GLUE head (pooler_activation_fn tanh): Dense -> tanh -> Dense, no ReLU."""
  head = luna_jax.ClassifierHead(8, 3, hidden_layers=hidden_layers, activation='tanh')
  features = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
  params = head.init(jax.random.PRNGKey(1), features)['params']
  h = features
  for name in ('hidden', 'hidden_2')[:hidden_layers]:
    h = jnp.tanh(h @ params[name]['kernel'] + params[name]['bias'])
  expected = h @ params['logits']['kernel'] + params['logits']['bias']
  np.testing.assert_allclose(head.apply({'params': params}, features), expected, rtol=1e-5)


@pytest.mark.parametrize(
  'model, message',
  [
    # Luna's pack heads split emb_dim.
    ({'name': 'luna', 'emb_dim': 16, 'num_pack_heads': 3}, 'num_pack_heads=3: must divide .* 16'),
    # The Transformer's heads split qkv_dim, not emb_dim.
    (
      {'name': 'transformer', 'emb_dim': 16, 'num_heads': 4, 'qkv_dim': 10},
      'num_heads=4: must divide the attention width 10',
    ),
  ],
  ids=['luna_pack_heads', 'transformer_qkv_dim'],
)
def test_head_counts_must_divide_the_attention_width(model, message):
  with pytest.raises(luna_jax.config_utils.ConfigError, match=message):
    luna_jax.build_model(model, vocab_size=5, num_classes=2, max_length=8)


@pytest.mark.parametrize(
  'name', [n for n in luna_jax.MODEL_NAMES if n.removesuffix('_mlm') != 'transformer']
)
def test_heads_of_a_model_without_qkv_dim_must_divide_emb_dim(name):
  # qkv_dim (a multiple of num_heads) and num_pack_heads (a divisor of emb_dim) hide nothing.
  model = {'name': name, 'emb_dim': 6, 'num_heads': 4, 'qkv_dim': 8, 'num_pack_heads': 3}
  with pytest.raises(
    luna_jax.config_utils.ConfigError, match=r'num_heads=4: .* width 6 \(emb_dim\)'
  ):
    luna_jax.check_model_config(model)
  luna_jax.check_model_config({**model, 'num_heads': 3})


def test_build_model_rejects_unknown_key_by_name():
  with pytest.raises(ValueError, match='projection_lenght'):
    luna_jax.build_model(
      {'name': 'luna', 'projection_lenght': 16}, vocab_size=5, num_classes=2, max_length=8
    )


@pytest.mark.parametrize('name', ['luna', 'transformer'])
@pytest.mark.parametrize('positional', ['learned', 'sinusoidal'])
def test_classifier_refuses_more_tokens_than_its_positions(name, positional):
  """Built for 8 tokens, 12 must fail (a clamped lookup would give positions 8-11 one row)."""
  model = luna_jax.build_model(
    dict(
      name=name,
      num_layers=1,
      emb_dim=16,
      num_heads=2,
      mlp_dim=16,
      projection_length=4,
      positional=positional,
    ),
    vocab_size=20,
    num_classes=2,
    max_length=8,
  )
  fits, _ = tokens(2, 8, 20, [8, 5])
  variables = model.init(jax.random.PRNGKey(0), fits, jnp.array([8, 5]))
  assert model.apply(variables, fits, jnp.array([8, 5])).shape == (2, 2)
  too_long, _ = tokens(2, 12, 20, [12, 5])
  with pytest.raises(ValueError, match=r'8 tokens \(max_length\); got 12 tokens\. Rebuild'):
    model.apply(variables, too_long, jnp.array([12, 5]))


def test_pre_ln_luna_ends_with_a_layernorm_of_x_and_of_p():
  """With pre-LN layers (normalize_before) the encoder's last LayerNorms, at their initial scale 1
  and bias 0, give every real row of x and of P mean 0 and variance 1."""
  cfg = small_config(normalize_before=True)
  ids, lengths = tokens(2, 12, cfg.vocab_size, [12, 3])
  enc = luna_jax.LunaEncoder(cfg)
  out = enc.apply(enc.init(jax.random.PRNGKey(0), ids, lengths), ids, lengths)
  for states, mask in ((out.x, out.x_mask), (out.p, out.p_mask)):
    rows = np.asarray(states, np.float64)[np.asarray(mask)]
    np.testing.assert_allclose(rows.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(rows.var(-1), 1, rtol=1e-3)


def test_bert_init_zeroes_the_padding_tokens_embedding_alone():
  """param_init='bert' (fairseq's init_bert_params): row 0, the padding token's, is zero, and no
  other row is."""
  cfg = small_config(param_init='bert')
  ids, lengths = tokens(1, 12, cfg.vocab_size, [12])
  enc = luna_jax.LunaEncoder(cfg)
  table = enc.init(jax.random.PRNGKey(0), ids, lengths)['params']['embed']['token_embedding']
  rows = np.abs(np.asarray(table['embedding'])).sum(axis=1)
  assert rows[0] == 0 and np.all(rows[1:] > 0)


def test_the_nonzero_padding_mask_leaves_x_mask_the_length_mask():
  """padding_mask='nonzero' masks the attention by `inputs > 0`, but the returned x_mask (what
  'mean' pooling averages) stays the length mask, zero tokens within the length included."""
  cfg = small_config(padding_mask='nonzero')
  ids, lengths = jnp.array([[3, 0, 5, 0, 0, 0]], jnp.int32), jnp.array([4], jnp.int32)
  enc = luna_jax.TransformerEncoder(cfg)
  out = enc.apply(enc.init(jax.random.PRNGKey(0), ids, lengths), ids, lengths)
  np.testing.assert_array_equal(out.x_mask, [[True] * 5 + [False] * 2])  # CLS + 4 tokens
