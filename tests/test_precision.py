"""The precision policies (`luna_jax.model.config.PRECISIONS`): every model under the 'bfloat16'
policy computes what it computes in float32, to bfloat16's rounding; its residual stream, P and
LayerNorm outputs stay float32 while every projection's matmul takes bfloat16 inputs; and
'bfloat16_all' is the mode that runs the activations in bfloat16 too."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import config as model_config
from luna_jax.model.kernels import LayerNorm
from luna_jax.model.layers import FeedForward, LunaEncoderLayer, TransformerEncoderLayer

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


def _dot_operand_dtypes(jaxpr: jax.extend.core.Jaxpr, rank: int | None = None) -> list[tuple]:
  """The operand dtypes of every matrix product (`dot_general` of operands of rank >= 2, or of
  exactly `rank`) in `jaxpr` and the jaxprs nested in it; `LayerNorm`'s statistics and the bias
  gradients are float32 matrix-vector products."""
  found = []
  for eqn in jaxpr.eqns:
    ranks = [v.aval.ndim for v in eqn.invars] if eqn.primitive.name == 'dot_general' else [0]
    if min(ranks) >= 2 and (rank is None or set(ranks) == {rank}):
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for param in eqn.params.values():
      for inner in param if isinstance(param, tuple) else (param,):
        inner = getattr(inner, 'jaxpr', inner)
        if hasattr(inner, 'eqns'):
          found += _dot_operand_dtypes(inner, rank)
  return found


@pytest.mark.parametrize(
  'layer,args',
  [
    (LunaEncoderLayer(num_heads=2, mlp_dim=32), (jnp.ones((2, 8, 16)), jnp.ones((2, 4, 16)))),
    (TransformerEncoderLayer(num_heads=2, qkv_dim=16, mlp_dim=32), (jnp.ones((2, 8, 16)),)),
  ],
  ids=['luna', 'transformer'],
)
def test_every_matmul_of_a_layer_takes_bfloat16_inputs_under_the_policy(layer, args):
  """Forward: every matmul. Backward: every projection's and the FFN's (2-D, `mixed_matmul`; the
  attention's own backward matmuls pair a float32 gradient with bfloat16 operands)."""
  variables = layer.init(jax.random.PRNGKey(0), *args)
  for matmul_dtype in (jnp.bfloat16, None):
    policy = layer.clone(dtype=jnp.float32, matmul_dtype=matmul_dtype)
    forward = lambda v, policy=policy: policy.apply(v, *args)
    expected = 'float32' if matmul_dtype is None else 'bfloat16'
    dots = _dot_operand_dtypes(jax.make_jaxpr(forward)(variables).jaxpr)
    assert len(dots) >= 6 and all(set(d) == {expected} for d in dots), dots
    loss = lambda v, forward=forward: sum(jnp.sum(y) for y in jax.tree.leaves(forward(v)))
    backward = _dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss))(variables).jaxpr, rank=2)
    assert len(backward) >= 3 * 4 and all(set(d) == {expected} for d in backward), backward


def test_the_former_dtype_key_names_its_replacement():
  with pytest.raises(luna_jax.config_utils.ConfigError, match="precision='bfloat16_all'"):
    model_config.check_model_config({'dtype': 'bfloat16'})


@pytest.mark.parametrize('name', ['luna', 'luna_lm', 'luna_mlm'])
def test_under_the_policy_weight_gradients_stay_float32_and_no_matmul_mixes_dtypes(name):
  """Every projection, FFN and output layer runs `mixed_matmul` (or its mixed `project` path):
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
