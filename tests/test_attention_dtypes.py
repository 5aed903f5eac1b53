"""Every attention module runs in float32 and bfloat16, with and without padding, and gives finite
outputs and finite gradients: padded positions hold large values, which must be masked before any
exponential or division sees them."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from luna_jax.model import registry
from luna_jax.model.layers import LunaCausalAttention, SelfAttention

B, N, D, H, L = 2, 6, 8, 2, 3
#: Row 0 holds unit-scale tokens and padding far larger than them, row 1 large tokens and zero
#: padding: either way, an exponential that sees a padded position before the mask overflows.
SCALES, PADDING = np.array([1.0, 30.0]), np.array([300.0, 0.0])

#: Built as the encoders build them: every registered attention (one added to the registry is
#: checked too), plus the fused attention given lengths and the causal Luna attentions.
CONFIG = luna_jax.ModelConfig(
  vocab_size=8, max_length=N, prepend_cls=False, low_rank_features=3, nb_features=8
)
ATTENTIONS = {
  **{
    name: functools.partial(build(CONFIG), num_heads=H, qkv_dim=D)
    for name, build in registry.TRANSFORMER_ATTENTIONS.items()
  },
  # The Transformer's padding_mask='lengths': the key mask as lengths (cuDNN's sequence lengths).
  'fused_lengths': functools.partial(SelfAttention, num_heads=H, qkv_dim=D, implementation='fused'),
  **{
    name: functools.partial(build(CONFIG), features=D, num_heads=H)
    for name, build in registry.LUNA_ATTENTIONS.items()
  },
  'causal_luna': functools.partial(LunaCausalAttention, features=D, num_heads=H, chunk_size=4),
  'causal_luna_scan': functools.partial(
    LunaCausalAttention, features=D, num_heads=H, implementation='scan'
  ),
}


def apply(name, module, variables, x, mask, p, p_mask):
  """The module's output on x (and P for Luna), as float32."""
  if name in registry.LUNA_ATTENTIONS:
    y_x, y_p = module.apply(variables, x, p, x, mask, p_mask)
    return jnp.concatenate([y_x, y_p], axis=1).astype(jnp.float32)
  if name.startswith('causal_luna'):
    return module.apply(variables, x, p, p_mask).astype(jnp.float32)
  if name == 'fused_lengths':
    return module.apply(variables, x, mask, key_lengths=jnp.sum(mask, -1)).astype(jnp.float32)
  return module.apply(variables, x, mask).astype(jnp.float32)


@pytest.mark.parametrize('padded', [False, True], ids=['unpadded', 'padded'])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', list(ATTENTIONS))
def test_attention_is_finite_in_values_and_gradients(name, dtype, padded):
  rng = np.random.default_rng(0)
  lengths = np.array([4, 2]) if padded else np.array([N, N])
  mask = np.arange(N)[None] < lengths[:, None]
  p_mask = np.arange(L)[None] < np.minimum(lengths, L)[:, None]
  fill = lambda m, shape: np.where(
    m[..., None], rng.normal(size=shape) * SCALES[:, None, None], PADDING[:, None, None]
  )
  x, p = fill(mask, (B, N, D)), fill(p_mask, (B, L, D))
  x, p = jnp.asarray(x, dtype), jnp.asarray(p, dtype)
  mask, p_mask = jnp.asarray(mask), jnp.asarray(p_mask)
  module = ATTENTIONS[name](dtype=jnp.dtype(dtype))
  init_args = (
    (x, p, x, mask, p_mask)
    if name in registry.LUNA_ATTENTIONS
    else ((x, p, p_mask) if name.startswith('causal_luna') else (x, mask))
  )
  variables = module.init(jax.random.PRNGKey(1), *init_args)
  out = apply(name, module, variables, x, mask, p, p_mask)
  assert np.all(np.isfinite(out)), f'{name}: non-finite output'
  cotangent = jnp.asarray(rng.normal(size=out.shape), jnp.float32)

  def loss(variables, x, p):
    return jnp.sum(apply(name, module, variables, x, mask, p, p_mask) * cotangent)

  grads = jax.grad(loss, argnums=(0, 1, 2))(variables, x, p)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(np.asarray(g, np.float32))), f'{name}: non-finite gradient {path}'
