"""The precision policies (`luna_jax.model.config.PRECISIONS`): every model under the 'bfloat16'
policy computes what it computes in float32, to bfloat16's rounding; its residual stream, P and
LayerNorm outputs stay float32 while every projection's and attention's matmul takes bfloat16
inputs, in the forward and the backward pass (`mixed_einsum`); and 'bfloat16_all' is the mode that
runs the activations in bfloat16 too."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import config as model_config
from luna_jax.model.kernels import LayerNorm, float32_einsum, mixed_einsum, project, tied_logits
from luna_jax.model.layers import (
  FeedForward,
  LunaAttention,
  LunaEncoderLayer,
  SelfAttention,
  TransformerEncoderLayer,
)

B, N, VOCAB = 3, 24, 20
SIZES = {'num_layers': 2, 'emb_dim': 32, 'num_heads': 2, 'mlp_dim': 64, 'projection_length': 4}
#: bfloat16 keeps 8 significand bits, a relative rounding error up to 2^-9 (0.2%) per matmul input;
#: two layers of projections, attention and FFN compound it to about 1% of the outputs, and a
#: gradient (the backward pass's matmuls see the forward's rounded inputs) about as much.
OUTPUT_TOLERANCE = 0.03
GRADIENT_COSINE = 0.999


def build(name: str, precision: str) -> nn.Module:
  return luna_jax.build_model(
    {'name': name, 'precision': precision, **SIZES},
    vocab_size=VOCAB,
    num_classes=5,
    max_length=N,
    bos_id=1,
  )


def inputs_of(name: str) -> dict[str, jax.Array]:
  tokens = jax.random.randint(jax.random.PRNGKey(0), (B, N), 2, VOCAB)
  if name == 'luna_lm':
    return {'inputs': tokens}
  batch = {'inputs': tokens, 'lengths': jnp.array([N, 10, 5])}
  if name.endswith('seq2seq'):
    batch['targets'] = jnp.flip(tokens, axis=1)
  return batch


def relative(a: jax.Array, b: jax.Array) -> float:
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize('name', model_config.MODEL_NAMES)
def test_bfloat16_policy_matches_float32_in_values_and_gradients(name):
  batch = inputs_of(name)
  models = {p: build(name, p) for p in ('float32', 'bfloat16')}
  params = models['float32'].init(jax.random.PRNGKey(1), **batch)['params']
  rng = {'dropout': jax.random.PRNGKey(2)}  # The same dropout masks in both.

  def outputs(model, params):
    return model.apply({'params': params}, **batch, train=True, rngs=rng)

  results = {}
  for precision, model in models.items():
    cotangent = jax.random.normal(jax.random.PRNGKey(3), outputs(model, params).shape)
    loss = lambda p, m=model, c=cotangent: jnp.sum(outputs(m, p).astype(jnp.float32) * c)
    results[precision] = (outputs(model, params), jax.grad(loss)(params))
  (out32, grad32), (out16, grad16) = results['float32'], results['bfloat16']
  assert out16.dtype == jnp.float32
  assert 0.0 < relative(out32, out16) < OUTPUT_TOLERANCE
  flat32, flat16 = (jax.flatten_util.ravel_pytree(g)[0] for g in (grad32, grad16))
  cosine = float(jnp.dot(flat32, flat16) / (jnp.linalg.norm(flat32) * jnp.linalg.norm(flat16)))
  assert cosine > GRADIENT_COSINE, f'{name}: gradient cosine {cosine}'
  assert relative(flat32, flat16) < OUTPUT_TOLERANCE


def _captured_dtypes(name: str, precision: str) -> dict[str, set[str]]:
  """The dtypes of every LayerNorm, FFN and encoder-layer output, by module path."""
  model = build(name, precision)
  batch = inputs_of(name)
  variables = model.init(jax.random.PRNGKey(1), **batch)
  kinds = (LayerNorm, nn.LayerNorm, FeedForward, LunaEncoderLayer, TransformerEncoderLayer)
  _, state = model.apply(
    variables,
    **batch,
    capture_intermediates=lambda module, method: isinstance(module, kinds) and method == '__call__',
    mutable=['intermediates'],
  )
  found: dict[str, set[str]] = {}
  for path, value in jax.tree_util.tree_leaves_with_path(state['intermediates']):
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    if keys[-1] == '__call__':  # Not what the attentions sow.
      found.setdefault('/'.join(keys[:-1]), set()).add(str(value.dtype))
  return found


@pytest.mark.parametrize('name', ['luna', 'transformer', 'luna_lm'])
def test_residual_stream_and_normalisers_stay_float32_under_the_policy(name):
  policy, everything = _captured_dtypes(name, 'bfloat16'), _captured_dtypes(name, 'bfloat16_all')
  assert policy.keys() == everything.keys() and len(policy) >= 4
  for module, dtypes in policy.items():
    assert dtypes == {'float32'}, f'{name} {module}: {dtypes} under the bfloat16 policy'
  for module, dtypes in everything.items():
    assert dtypes == {'bfloat16'}, f'{name} {module}: {dtypes} under bfloat16_all'


def _equations(jaxpr: jax.extend.core.Jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in it."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for inner in param if isinstance(param, tuple) else (param,):
        inner = getattr(inner, 'jaxpr', inner)
        if hasattr(inner, 'eqns'):
          yield from _equations(inner)


def _dot_operand_dtypes(jaxpr: jax.extend.core.Jaxpr, rank: int | None = None) -> list[tuple]:
  """The operand dtypes of every matrix product (`dot_general` of operands of rank >= 2, or of
  exactly `rank`) in `jaxpr` and the jaxprs nested in it; `LayerNorm`'s statistics and the bias
  gradients are float32 matrix-vector products."""
  found = []
  for eqn in _equations(jaxpr):
    ranks = [v.aval.ndim for v in eqn.invars] if eqn.primitive.name == 'dot_general' else [0]
    if min(ranks) >= 2 and (rank is None or set(ranks) == {rank}):
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
  return found


@pytest.mark.parametrize(
  'layer,args,attentions',
  [
    (LunaEncoderLayer(num_heads=2, mlp_dim=32), (jnp.ones((2, 8, 16)), jnp.ones((2, 4, 16))), 2),
    (TransformerEncoderLayer(num_heads=2, qkv_dim=16, mlp_dim=32), (jnp.ones((2, 8, 16)),), 1),
  ],
  ids=['luna', 'transformer'],
)
def test_every_matmul_of_a_layer_takes_bfloat16_inputs_under_the_policy(layer, args, attentions):
  """Forward and backward: every matmul, the projections' and the FFN's (2-D) and the attention's
  (batched, 4-D; `mixed_einsum`, four in the backward of each attention: two gradients of q k^T
  and two of p v)."""
  variables = layer.init(jax.random.PRNGKey(0), *args)
  for matmul_dtype in (jnp.bfloat16, None):
    policy = layer.clone(dtype=jnp.float32, matmul_dtype=matmul_dtype)
    forward = lambda v, policy=policy: policy.apply(v, *args)
    expected = 'float32' if matmul_dtype is None else 'bfloat16'
    forward_jaxpr = jax.make_jaxpr(forward)(variables).jaxpr
    dots = _dot_operand_dtypes(forward_jaxpr)
    assert len(dots) >= 6 and all(set(d) == {expected} for d in dots), dots
    loss = lambda v, forward=forward: sum(jnp.sum(y) for y in jax.tree.leaves(forward(v)))
    grad_jaxpr = jax.make_jaxpr(jax.grad(loss))(variables).jaxpr
    backward = _dot_operand_dtypes(grad_jaxpr)
    assert all(set(d) == {expected} for d in backward), backward
    assert len(_dot_operand_dtypes(grad_jaxpr, rank=2)) >= 3 * 4
    batched = len(_dot_operand_dtypes(grad_jaxpr, rank=4)) - len(
      _dot_operand_dtypes(forward_jaxpr, 4)
    )
    assert batched >= 4 * attentions, batched


def test_the_former_dtype_key_names_its_replacement():
  with pytest.raises(luna_jax.config_utils.ConfigError, match="precision='bfloat16_all'"):
    model_config.check_model_config({'dtype': 'bfloat16'})


@pytest.mark.parametrize('dtype, precision', [('float32', 'float32'), ('bfloat16', 'bfloat16_all')])
def test_a_stored_dtype_upgrades_to_the_precision_that_computes_what_it_did(dtype, precision):
  """dtype='bfloat16' ran every activation in bfloat16, which is 'bfloat16_all', not the
  'bfloat16' policy (float32 activations, bfloat16 matmul inputs)."""
  stored = {'name': 'luna', 'dtype': dtype}
  upgraded = model_config.upgrade_model_config(stored)
  assert upgraded == {'name': 'luna', 'precision': precision}
  assert model_config.PRECISIONS[precision] == (jnp.dtype(dtype), jnp.dtype(dtype))
  model_config.check_model_config(upgraded)
  assert stored == {'name': 'luna', 'dtype': dtype}  # The stored mapping is left as it was.


@pytest.mark.parametrize('name', ['luna', 'luna_lm', 'luna_mlm'])
def test_under_the_policy_weight_gradients_stay_float32_and_no_matmul_mixes_dtypes(name):
  """Every projection, FFN and output layer runs `mixed_einsum` (the mixed `project` path):
  their kernel gradients are float32 sums, not bfloat16-rounded values, and no 2-D matmul of the
  backward pairs a float32 operand with a bfloat16 one (XLA would run it in float32 on a GPU)."""
  model, batch = build(name, 'bfloat16'), inputs_of(name)
  params = model.init(jax.random.PRNGKey(1), **batch)['params']
  loss = lambda p: jnp.sum(jnp.square(model.apply({'params': p}, **batch).astype(jnp.float32)))
  grads = jax.grad(loss)(params)
  kernels = {
    jax.tree_util.keystr(path): np.asarray(g)
    for path, g in jax.tree_util.tree_leaves_with_path(grads)
    if jax.tree_util.keystr(path).endswith("['kernel']")
  }
  assert len(kernels) >= 8
  for path, g in kernels.items():
    rounded = np.asarray(jnp.asarray(g).astype(jnp.bfloat16).astype(jnp.float32))
    assert g.dtype == np.float32 and np.any(g != rounded), f'{name} {path}: bfloat16-rounded'
  dots = _dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr, rank=2)
  assert sum(set(d) == {'bfloat16'} for d in dots) >= 12
  assert all(len(set(d)) == 1 for d in dots), [d for d in dots if len(set(d)) > 1]


#: Softmax attentions of each model under `SIZES` (2 layers): Luna's pack and unpack, a
#: Transformer's self-attention, a decoder's cross-attention (Luna's: pack and unpack) and
#: self-attention (the Transformer decoder's; causal Luna's is float32, not softmax attention).
SOFTMAX_ATTENTIONS = {
  'luna': 4,
  'transformer': 2,
  'luna_lm': 0,
  'luna_seq2seq': 8,
  'transformer_seq2seq': 6,
  'luna_mlm': 4,
  'transformer_mlm': 2,
}


@pytest.mark.parametrize('name', model_config.MODEL_NAMES)
def test_no_matmul_of_the_backward_mixes_dtypes_under_the_policy(name):
  """No matmul of any rank (2-D projections, batched attention) of a model's backward pass pairs a
  float32 operand with a bfloat16 one (XLA would run it in float32 on a GPU), and each softmax
  attention's four backward matmuls take bfloat16 on both sides; causal Luna's matmuls are float32
  on both sides."""
  assert SOFTMAX_ATTENTIONS.keys() == set(model_config.MODEL_NAMES)
  model, batch = build(name, 'bfloat16'), inputs_of(name)
  params = model.init(jax.random.PRNGKey(1), **batch)['params']
  rng = {'dropout': jax.random.PRNGKey(2)}
  outputs = lambda p: model.apply({'params': p}, **batch, train=True, rngs=rng)
  loss = lambda p: jnp.sum(outputs(p).astype(jnp.float32))
  grad_jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
  dots = _dot_operand_dtypes(grad_jaxpr)
  assert all(len(set(d)) == 1 for d in dots), [d for d in dots if len(set(d)) > 1]
  batched = [d for d in _dot_operand_dtypes(grad_jaxpr, rank=4) if d == ('bfloat16', 'bfloat16')]
  forward = _dot_operand_dtypes(jax.make_jaxpr(outputs)(params).jaxpr, rank=4)
  assert len(batched) - len(forward) >= 4 * SOFTMAX_ATTENTIONS[name]


@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', model_config.MODEL_NAMES)
def test_the_attention_backward_recomputes_no_matmul(name, precision):
  """Each softmax attention's backward runs its four matmuls and no more: the checkpointed
  `_attend` saves the probabilities and recomputes no `q k^T` (it did when the name sat on the
  softmax's result, which the softmax's derivative does not read; jax 0.10's XLA merged most of
  that recomputation away, jax 0.11's does not). `luna_lm` (no softmax attention) holds it
  whatever `_attend` does."""
  model, batch = build(name, precision), inputs_of(name)
  params = model.init(jax.random.PRNGKey(1), **batch)['params']
  rng = {'dropout': jax.random.PRNGKey(2)}
  outputs = lambda p: model.apply({'params': p}, **batch, train=True, rngs=rng)
  loss = lambda p: jnp.sum(outputs(p).astype(jnp.float32))
  train = _dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr, rank=4)
  forward = _dot_operand_dtypes(jax.make_jaxpr(outputs)(params).jaxpr, rank=4)
  assert len(forward) == 2 * SOFTMAX_ATTENTIONS[name]
  assert len(train) == 3 * len(forward)


def _bfloat16(x: np.ndarray) -> np.ndarray:
  """x rounded to bfloat16, as float64."""
  return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16), np.float64)


@pytest.mark.parametrize('spec', ['bqhd,bkhd->bhqk', 'bhqk,bkhd->bqhd', 'ij,jk->ik'])
def test_mixed_einsum_is_the_float32_sum_of_bfloat16_rounded_products(spec):
  """Forward and both gradients against float64 numpy: the einsum of the bfloat16-rounded inputs
  (and, for the gradients, of the bfloat16-rounded output gradient) up to float32 accumulation:
  products of two bfloat16 numbers are exact in float32, and a sum of at most 16 of them is off by
  at most 16 float32 roundings of the sum of their magnitudes. The gradients of float32 inputs are
  float32; the output gradient's rounding shows (the unrounded one gives other gradients)."""
  sizes = dict(b=2, q=5, k=7, h=3, d=16, i=6, j=16)
  (a_names, b_names), out = spec.split('->')[0].split(','), spec.split('->')[1]
  shape = lambda names: tuple(sizes[n] for n in names)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  a, b, g = (
    np.asarray(jax.random.normal(key, shape(names)))
    for key, names in zip(keys, (a_names, b_names, out), strict=True)
  )
  y, vjp = jax.vjp(lambda a, b: mixed_einsum(spec, a, b, jnp.bfloat16), a, b)
  da, db = vjp(jnp.asarray(g))
  assert y.dtype == da.dtype == db.dtype == jnp.float32
  a16, b16, g16 = _bfloat16(a), _bfloat16(b), _bfloat16(g)
  expected = {
    'y': (np.asarray(y), f'{a_names},{b_names}->{out}', a16, b16),
    'da': (np.asarray(da), f'{out},{b_names}->{a_names}', g16, b16),
    'db': (np.asarray(db), f'{a_names},{out}->{b_names}', a16, g16),
  }
  for which, (got, einsum, x, z) in expected.items():
    bound = 16 * 2.0**-24 * np.einsum(einsum, np.abs(x), np.abs(z))
    error = np.abs(got - np.einsum(einsum, x, z))
    assert np.all(error <= bound), f'{which}: {np.max(error / bound)} x the bound'
  unrounded = np.abs(np.asarray(da) - np.einsum(f'{out},{b_names}->{a_names}', g, b16))
  assert np.any(
    unrounded > 16 * 2.0**-24 * np.einsum(f'{out},{b_names}->{a_names}', np.abs(g), np.abs(b16))
  )
  _, vjp16 = jax.vjp(
    lambda a, b: mixed_einsum(spec, a, b, jnp.bfloat16),
    *(jnp.asarray(x, jnp.bfloat16) for x in (a, b)),
  )
  assert all(grad.dtype == jnp.bfloat16 for grad in vjp16(jnp.asarray(g)))


def test_float32_einsum_takes_mixed_einsum_for_16_bit_inputs_only():
  """bfloat16 and float16 inputs: `mixed_einsum` (a float16 cotangent for float16 inputs); float32
  inputs: the plain float32 einsum and autodiff, bit for bit."""
  spec = 'bqhd,bkhd->bhqk'
  q, k = (jax.random.normal(key, (2, 5, 3, 4)) for key in jax.random.split(jax.random.PRNGKey(0)))
  g = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5, 5))
  plain = lambda q, k: jnp.einsum(spec, q, k, preferred_element_type=jnp.float32)
  for got, want in zip(
    jax.vjp(functools.partial(float32_einsum, spec), q, k)[1](g),
    jax.vjp(plain, q, k)[1](g),
    strict=True,
  ):
    assert np.array_equal(got, want)
  for dtype in (jnp.bfloat16, jnp.float16):
    q16, k16 = q.astype(dtype), k.astype(dtype)
    y, vjp = jax.vjp(functools.partial(float32_einsum, spec), q16, k16)
    y_mixed, vjp_mixed = jax.vjp(
      functools.partial(mixed_einsum, spec, matmul_dtype=dtype), q16, k16
    )
    assert y.dtype == jnp.float32 and np.array_equal(y, y_mixed)
    for got, want in zip(vjp(g), vjp_mixed(g), strict=True):
      assert got.dtype == dtype and np.array_equal(got, want)
    grad_jaxpr = jax.make_jaxpr(vjp)(g).jaxpr
    assert _dot_operand_dtypes(grad_jaxpr) == [(str(jnp.dtype(dtype)),) * 2] * 2


@pytest.mark.parametrize('spec', ['ij,jk', 'ii,ij->j', 'ij,jk->i', 'ij,jk,kl->il', '...i,ij->...j'])
def test_mixed_einsum_rejects_what_its_backward_cannot_transpose(spec):
  with pytest.raises(ValueError, match='mixed_einsum takes'):
    mixed_einsum(spec, jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.bfloat16)


def test_layer_norm_statistics_are_float32_for_bfloat16_inputs():
  """bfloat16 inputs far from zero (mean 50, std 1): the output is the float64 LayerNorm of those
  inputs rounded once to bfloat16, which bfloat16 statistics (mean rounded to 0.25) would miss."""
  x = jnp.asarray(50.0 + jax.random.normal(jax.random.PRNGKey(0), (4, 64)), jnp.bfloat16)
  module = LayerNorm(dtype=jnp.bfloat16)
  y = module.apply(module.init(jax.random.PRNGKey(1), x), x)
  assert y.dtype == jnp.bfloat16
  x64 = np.asarray(x, np.float64)
  centred = x64 - x64.mean(-1, keepdims=True)
  expected = centred / np.sqrt(np.mean(centred**2, -1, keepdims=True) + module.epsilon)
  error = np.abs(np.asarray(y, np.float64) - expected)
  assert np.all(error <= 2.0**-8 * np.abs(expected) + 1e-5), np.max(error)


def test_mixed_project_adds_the_bias_in_float32_and_rounds_once():
  """Under 'bfloat16_all' (bfloat16 output) the bias meets the float32 product before the one
  rounding: with a bias that cancels the product, the small sum keeps its digits."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (8, 16))
  kernel = jax.random.normal(keys[1], (16, 12))
  x16, k16 = (_bfloat16(np.asarray(a)) for a in (x, kernel))
  product = x16 @ k16
  small = 0.01 * np.asarray(jax.random.normal(keys[2], (8, 12)), np.float64)
  bias = np.float32(-product[0] + small[0])  # Row 0's product cancels: its sum is small.
  y = project(x, kernel, jnp.asarray(bias), jnp.bfloat16, jnp.bfloat16)
  assert y.dtype == jnp.bfloat16
  expected = product + np.float64(bias)
  bound = 2.0**-8 * np.abs(expected) + 16 * 2.0**-24 * (np.abs(x16) @ np.abs(k16) + np.abs(bias))
  error = np.abs(np.asarray(y, np.float64) - expected)
  assert np.all(error <= bound), np.max(error / bound)


def test_tied_logits_are_float32_under_a_mixed_policy():
  """`tied_logits` with a bfloat16 matmul dtype: float32 logits, the `mixed_einsum` of x and the
  embedding's transpose bit for bit (not rounded to bfloat16)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 16))
  embedding = jax.random.normal(jax.random.PRNGKey(1), (20, 16))
  logits = tied_logits(x, embedding, jnp.bfloat16)
  expected = mixed_einsum('ij,jk->ik', x.reshape(6, 16), embedding.T, jnp.bfloat16)
  assert logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, np.asarray(expected).reshape(2, 3, 20))


def test_float32_einsum_keeps_a_float32_operand_of_a_mixed_pair_unrounded():
  """A float32 and a bfloat16 operand take the plain float32 einsum: the float32 one is not
  rounded to bfloat16."""
  spec = 'bqhd,bkhd->bhqk'
  q, k = (jax.random.normal(key, (2, 5, 3, 4)) for key in jax.random.split(jax.random.PRNGKey(0)))
  q16 = q.astype(jnp.bfloat16)
  for a, b in ((q16, k), (k, q16)):
    plain = jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(float32_einsum(spec, a, b), plain)
  rounded = float32_einsum(spec, q16, k.astype(jnp.bfloat16))
  assert not np.array_equal(rounded, float32_einsum(spec, q16, k))


class _FirstLayerReached(Exception):
  """Stops a forward pass at its first encoder layer, holding that layer's inputs."""


def _first_layer_inputs(name: str, precision: str, params) -> list:
  """The arrays the encoder hands its first layer (x, and P for Luna) under `precision`."""
  batch = inputs_of(name)
  kinds = (LunaEncoderLayer, TransformerEncoderLayer)

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, kinds) and context.method_name == '__call__':
      raise _FirstLayerReached([a for a in args[:2] if a.ndim == 3])
    return next_fun(*args, **kwargs)

  with pytest.raises(_FirstLayerReached) as reached, nn.intercept_methods(record):
    build(name, precision).apply({'params': params}, **batch)
  return reached.value.args[0]


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_the_policy_hands_the_first_layer_the_float32_embeddings_and_p(name):
  """No matmul precedes the first layer, so under 'bfloat16' its inputs (embeddings, P) are the
  float32 policy's bit for bit, not bfloat16-rounded; 'bfloat16_all' rounds them."""
  # Any parameter values serve (shapes only: no forward pass runs at initialisation).
  shapes = jax.eval_shape(build(name, 'float32').init, jax.random.PRNGKey(1), **inputs_of(name))
  leaves, tree = jax.tree.flatten(shapes['params'])
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = tree.unflatten([jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves)])
  inputs = functools.partial(_first_layer_inputs, name, params=params)
  exact = inputs('float32')
  assert len(exact) == (2 if name == 'luna' else 1)
  for got, want in zip(inputs('bfloat16'), exact, strict=True):
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, want)
  for got in inputs('bfloat16_all'):
    assert got.dtype == jnp.bfloat16


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_attention_outputs_stay_float32_under_the_policy(name):
  """The attention modules' outputs (Luna's Y_X after the output projection and Y_P, which feeds
  the next P; the Transformer's self-attention) are float32 under 'bfloat16', bfloat16 under
  'bfloat16_all'."""
  kinds = (LunaAttention, SelfAttention)
  for precision, expected in (('bfloat16', jnp.float32), ('bfloat16_all', jnp.bfloat16)):
    model, batch = build(name, precision), inputs_of(name)
    variables = model.init(jax.random.PRNGKey(1), **batch)
    _, state = model.apply(
      variables,
      **batch,
      capture_intermediates=lambda module, method: (
        isinstance(module, kinds) and method == '__call__'
      ),
      mutable=['intermediates'],
    )
    outputs = [
      value
      for path, value in jax.tree_util.tree_leaves_with_path(state['intermediates'])
      if '__call__' in jax.tree_util.keystr(path)
    ]
    assert len(outputs) == SIZES['num_layers'] * (2 if name == 'luna' else 1)
    assert all(value.dtype == expected for value in outputs), [v.dtype for v in outputs]


def _primitive_input_dtypes(jaxpr: jax.extend.core.Jaxpr, names: tuple[str, ...]) -> list[str]:
  """The input dtypes of every `names` primitive in `jaxpr` and the jaxprs nested in it."""
  equations = [eqn for eqn in _equations(jaxpr) if eqn.primitive.name in names]
  return [str(v.aval.dtype) for eqn in equations for v in eqn.invars]


@pytest.mark.parametrize('activation, primitive', [('gelu', 'erf'), ('gelu_tanh', 'tanh')])
def test_the_ffn_activation_is_float32_under_the_policy(activation, primitive):
  """The FFN's hidden activation (exact GELU's erf, LRA's tanh GELU) runs on float32 under the
  'bfloat16' policy (matmul inputs alone are bfloat16), on bfloat16 under 'bfloat16_all'."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
  ffn = FeedForward(mlp_dim=32, activation=activation)
  variables = ffn.init(jax.random.PRNGKey(1), x)
  for dtype, expected in ((jnp.float32, 'float32'), (jnp.bfloat16, 'bfloat16')):
    policy = ffn.clone(dtype=dtype, matmul_dtype=jnp.bfloat16)
    jaxpr = jax.make_jaxpr(policy.apply)(variables, x.astype(dtype))
    dtypes = _primitive_input_dtypes(jaxpr.jaxpr, (primitive,))
    assert dtypes and set(dtypes) == {expected}, dtypes
