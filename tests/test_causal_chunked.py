"""The chunked-parallel causal Luna form equals the scan and the naive formula, in values and
gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_jax.model import attention as attn

RNG = np.random.default_rng(2)


def inputs(b=2, n=23, l=5, h=2, dh=4):
  f = lambda *s: jnp.asarray(RNG.normal(size=s), jnp.float32)
  p_mask = jnp.asarray(np.arange(l)[None] < np.array([[l], [2]]))
  return (f(b, l, h, dh), *(f(b, n, h, dh) for _ in range(4))), p_mask


@pytest.mark.parametrize('chunk_size', [1, 4, 7, 23, 64])
@pytest.mark.parametrize('omega', ['softplus', 'elu'])
def test_chunked_equals_scan_values_state_and_gradients(chunk_size, omega):
  args, p_mask = inputs()
  scan = lambda *a: attn.causal_luna_attention(*a, p_mask, omega=omega)
  chunked = lambda *a: attn.causal_luna_attention_chunked(
    *a, p_mask, omega=omega, chunk_size=chunk_size
  )
  (y_s, st_s), (y_c, st_c) = scan(*args), chunked(*args)
  np.testing.assert_allclose(y_c, y_s, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(y_s))))
  np.testing.assert_array_equal(st_c.num_steps, st_s.num_steps)
  np.testing.assert_allclose(st_c.key_accum, st_s.key_accum, rtol=1e-5, atol=1e-4)
  loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)[0]))
  g_s = jax.grad(loss(scan), argnums=range(5))(*args)
  g_c = jax.grad(loss(chunked), argnums=range(5))(*args)
  for a, b in zip(g_s, g_c):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def test_chunked_continues_from_a_state_and_matches_one_shot():
  args, p_mask = inputs(n=20)
  full, _ = attn.causal_luna_attention_chunked(*args, p_mask, chunk_size=8)
  head = [a if i == 0 else a[:, :9] for i, a in enumerate(args)]
  tail = [a if i == 0 else a[:, 9:] for i, a in enumerate(args)]
  first, state = attn.causal_luna_attention_chunked(*head, p_mask, chunk_size=8)
  rest, _ = attn.causal_luna_attention_chunked(*tail, p_mask, chunk_size=8, initial_state=state)
  np.testing.assert_allclose(jnp.concatenate([first, rest], 1), full, rtol=1e-5, atol=1e-6)


def test_chunked_dropout_is_seeded_and_active():
  args, p_mask = inputs()
  run = lambda seed: attn.causal_luna_attention_chunked(
    *args,
    p_mask,
    chunk_size=4,
    dropout_rate=0.3,
    dropout_rng=jax.random.PRNGKey(seed),
    deterministic=False,
  )[0]
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))


@pytest.mark.parametrize('chunk_size', [4, 5, 64])
def test_chunked_future_tokens_contribute_exactly_nothing(chunk_size):
  """Changing position 14's query, keys and value leaves every earlier output bit-identical: the
  earlier positions of its own chunk (after earlier chunks: 4, 5) and of earlier chunks."""
  args, p_mask = inputs(n=20)
  changed = [a if i == 0 else a.at[:, 14].add(3.0) for i, a in enumerate(args)]
  run = lambda a: attn.causal_luna_attention_chunked(*a, p_mask, chunk_size=chunk_size)[0]
  before, after = np.asarray(run(args)), np.asarray(run(changed))
  np.testing.assert_array_equal(after[:, :14], before[:, :14])
  assert not np.allclose(after[:, 14:], before[:, 14:])


@pytest.mark.parametrize(
  'form', [attn.causal_luna_attention, attn.causal_luna_attention_chunked], ids=['scan', 'chunked']
)
def test_bfloat16_inputs_are_computed_in_float32(form):
  # Head size 8: the query scale 8^-0.5 is not a power of two, so scaling before the float32 cast
  # would round q / sqrt(dh) to bfloat16 and change the result.
  args, p_mask = inputs(dh=8)
  low = [a.astype(jnp.bfloat16) for a in args]
  y_low, _ = form(*low, p_mask)
  y_high, _ = form(*(a.astype(jnp.float32) for a in low), p_mask)
  assert y_low.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y_low, y_high.astype(jnp.bfloat16))


def test_dropout_without_a_key_is_a_clear_error():
  args, p_mask = inputs()
  for form in (attn.causal_luna_attention, attn.causal_luna_attention_chunked):
    with pytest.raises(ValueError, match='dropout needs an rng'):
      form(*args, p_mask, dropout_rate=0.1, deterministic=False)
