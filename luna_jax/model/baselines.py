"""Efficient-attention baselines of the Luna paper's Table 1: Linformer, Linear Transformer,
Performer.

LRA (Tay et al., 2021) defines each of them as its Transformer with another self-attention, and so
does this module: the pure functions below work on projected, head-split `[batch, length, heads,
head_dim]` tensors (like `luna_jax.model.attention`), and the thin modules are
`luna_jax.model.layers.SelfAttention` (same no-bias q/k/v/out projections) with another `attend`.
`luna_jax.model.registry` maps an `attention_implementation` name to the module the LRA
Transformer block builds.

  linformer  Wang et al. (2020): keys and values projected along the sequence by learned
             `[max_length, r]` matrices E and F (one pair per layer, shared by the heads), then
             softmax attention over the
             r projected positions. The length is fixed, as in the original: longer inputs are
             rejected.
  linear     Katharopoulos et al. (2020): phi(x) = elu(x) + 1,
             out_i = phi(q_i) (sum_j phi(k_j) v_j^T) / (phi(q_i) . sum_j phi(k_j)).
  performer  Choromanski et al. (2021), FAVOR+: positive orthogonal random features of the softmax
             kernel, phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m) with x' = x / head_dim^(1/4), then
             the linear form.

Masked (padding) keys are zeroed before the projection (Linformer), in feature space (linear) or in
the exponent, before the exponential (FAVOR+), so they never contribute, in values or gradients.
Feature maps, sums and normalisers are float32; outputs come back in the values' dtype. Linear and
FAVOR+ attention have no attention dropout (as in LRA's code).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model import attention as attn
from luna_jax.model import layers
from luna_jax.model.layers import SelfAttention

if TYPE_CHECKING:
  from luna_jax.model.config import ModelConfig

Array = jax.Array

#: Added to the normalisers of the linear forms (LRA's linear attention uses the same).
_EPS = 1e-6


def no_query_mask(module: nn.Module, query_mask: Array | None) -> None:
  """Raises for a query mask: masking whole query rows is LRA's softmax Transformer's
  (`ModelConfig.padding_mask='nonzero'`); LRA's Linformer, linear and FAVOR+ attentions ignore
  their padding mask altogether.

  Raises:
    ValueError: when `query_mask` is not None, naming the module's class.
  """
  if query_mask is not None:
    raise ValueError(
      f'{type(module).__name__} takes no query mask: masking whole query rows is the softmax '
      "attention's (padding_mask='nonzero')."
    )


def linformer_attention(
  query: Array,
  key: Array,
  value: Array,
  key_projection: Array,
  value_projection: Array,
  key_mask: Array | None = None,
  *,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
) -> tuple[Array, Array]:
  """Linformer attention: softmax(q (E^T K)^T / sqrt(dh)) (F^T V).

  Args:
    query: `[batch, n, heads, head_dim]`.
    key: `[batch, m, heads, head_dim]`.
    value: `[batch, m, heads, v_dim]`.
    key_projection: E, `[max_length, r]`; its first m rows project the m keys.
    value_projection: F, `[max_length, r]`.
    key_mask: optional `[batch, m]` bool, True for real keys (masked keys are zeroed before
      projecting).
    dropout_rate: dropout on the `[n, r]` attention probabilities.
    dropout_rng: PRNG key for the dropout.
    deterministic: disable dropout.

  Returns:
    `(out, probs)`: out `[batch, n, heads, v_dim]` in value's dtype, probs `[batch, heads, n, r]`
    float32.

  Raises:
    ValueError: when m exceeds the fixed length `max_length`.
  """
  m, max_length = key.shape[1], key_projection.shape[0]
  if m > max_length:
    raise ValueError(
      f'Linformer projects a fixed length of {max_length} positions; got an input of '
      f'{m}. Rebuild the model with a larger max_length.'
    )
  if key_mask is not None:
    key = jnp.where(key_mask[:, :, None, None], key, 0)
    value = jnp.where(key_mask[:, :, None, None], value, 0)
  # In float32: XLA's CPU dot has no bfloat16 x bfloat16 -> float32 kernel for this contraction.
  project = lambda x, e: jnp.einsum(
    'bmhd,mr->brhd', x.astype(jnp.float32), e[:m].astype(jnp.float32)
  ).astype(x.dtype)
  return attn.dot_product_attention(
    query,
    project(key, key_projection),
    project(value, value_projection),
    dropout_rate=dropout_rate,
    dropout_rng=dropout_rng,
    deterministic=deterministic,
  )


def kernelized_attention(query_features: Array, key_features: Array, value: Array) -> Array:
  """The linear-attention form out_i = phi_i (sum_j psi_j v_j^T) / (phi_i . sum_j psi_j).

  Args:
    query_features: `[batch, n, heads, f]` non-negative float32 features phi of the queries.
    key_features: `[batch, m, heads, f]` non-negative float32 features psi of the keys (zero for
      masked keys).
    value: `[batch, m, heads, v_dim]`.

  Returns:
    `[batch, n, heads, v_dim]` in value's dtype.
  """
  context = jnp.einsum('bmhf,bmhd->bhfd', key_features, value.astype(jnp.float32))
  normaliser = jnp.einsum('bnhf,bhf->bnh', query_features, jnp.sum(key_features, axis=1))
  out = jnp.einsum('bnhf,bhfd->bnhd', query_features, context) / (normaliser[..., None] + _EPS)
  return out.astype(value.dtype)


def linear_attention(
  query: Array, key: Array, value: Array, key_mask: Array | None = None
) -> Array:
  """Linear Transformer attention with the feature map elu(x) + 1.

  Args:
    query: `[batch, n, heads, head_dim]`.
    key: `[batch, m, heads, head_dim]`.
    value: `[batch, m, heads, v_dim]`.
    key_mask: optional `[batch, m]` bool, True for real keys.

  Returns:
    `[batch, n, heads, v_dim]` in value's dtype.
  """
  feature_map = lambda x: jax.nn.elu(x.astype(jnp.float32)) + 1.0
  key_features = feature_map(key)
  if key_mask is not None:
    key_features = jnp.where(key_mask[:, :, None, None], key_features, 0.0)
  return kernelized_attention(feature_map(query), key_features, value)


def _haar_orthogonal(gaussian: Array) -> Array:
  """The Q of `gaussian = Q R` with R's diagonal positive (Haar-distributed for a Gaussian input).

  Classical Gram-Schmidt applied twice per column ("twice is enough" for float32 orthogonality), in
  plain jnp: a LAPACK QR custom call here hung XLA's CPU runtime when several layers drew their
  projections inside one compiled training step.

  Args:
    gaussian: `[dim, dim]` float32.

  Returns:
    `[dim, dim]` with orthonormal columns.
  """
  dim = gaussian.shape[0]

  def orthonormalise_column(j: Array, q: Array) -> Array:
    earlier = (jnp.arange(dim) < j).astype(q.dtype)  # columns already orthonormal
    v = q[:, j]
    for _ in range(2):
      v = v - q @ ((q.T @ v) * earlier)
    return q.at[:, j].set(v / jnp.linalg.norm(v))

  return jax.lax.fori_loop(0, dim, orthonormalise_column, gaussian)


def orthogonal_random_matrix(rng: Array, nb_features: int, dim: int) -> Array:
  """FAVOR+ projection: `[nb_features, dim]` rows orthogonal within each block of `dim` rows.

  Each block is the orthogonal factor (positive-diagonal R, hence Haar) of a Gaussian matrix; each
  row is then rescaled by the norm of an independent `dim`-dimensional Gaussian vector, so every row
  is marginally N(0, I) (Performer's `ortho_scaling=0`).

  Args:
    rng: PRNG key.
    nb_features: number of random features m.
    dim: head dimension.

  Returns:
    `[nb_features, dim]` float32.
  """
  num_blocks = -(-nb_features // dim)
  keys = jax.random.split(rng, num_blocks + 1)
  gaussians = jax.vmap(lambda key: jax.random.normal(key, (dim, dim), jnp.float32))(keys[:-1])
  blocks = jnp.swapaxes(jax.vmap(_haar_orthogonal)(gaussians), 1, 2)  # rows orthonormal
  rows = blocks.reshape(num_blocks * dim, dim)[:nb_features]
  norms = jnp.linalg.norm(jax.random.normal(keys[-1], (nb_features, dim), jnp.float32), axis=1)
  return rows * norms[:, None]


def favor_features(
  x: Array, projection: Array, *, is_query: bool, mask: Array | None = None
) -> Array:
  """Positive random features of the softmax kernel, up to a factor that cancels in attention.

  phi(x) = exp(W x' - |x'|^2 / 2 - c) / sqrt(m), x' = x / head_dim^(1/4), so that
  E[phi(q) . phi(k)] = exp(q . k / sqrt(head_dim)) * exp(-c_q - c_k). The stabiliser c is the
  largest exponent of each query row (queries) or of all real keys of a (batch, head) (keys); both
  cancel between the numerator and the normaliser of the attention.

  Args:
    x: `[batch, length, heads, head_dim]`.
    projection: W, `[m, head_dim]`.
    is_query: stabilise per row (queries) or per (batch, head) over the real keys (keys).
    mask: optional `[batch, length]` bool; masked positions get zero features.

  Returns:
    `[batch, length, heads, m]` float32, non-negative.
  """
  x = x.astype(jnp.float32) * x.shape[-1] ** -0.25
  exponent = jnp.einsum('blhd,md->blhm', x, projection.astype(jnp.float32)) - 0.5 * jnp.sum(
    jnp.square(x), axis=-1, keepdims=True
  )
  valid = jnp.ones(x.shape[:2], bool) if mask is None else mask
  valid = valid[:, :, None, None]
  if is_query:
    shift = jnp.max(exponent, axis=-1, keepdims=True)
  else:
    shift = jnp.max(jnp.where(valid, exponent, -jnp.inf), axis=(1, 3), keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  # Masked before the exponential: exp(-inf) = 0 with a zero gradient, where masking its result
  # would multiply an overflowed exp by the mask's zero gradient (NaN).
  exponent = jnp.where(valid, exponent - jax.lax.stop_gradient(shift), -jnp.inf)
  return jnp.exp(exponent) / math.sqrt(projection.shape[0])


def performer_attention(
  query: Array, key: Array, value: Array, projection: Array, key_mask: Array | None = None
) -> Array:
  """FAVOR+ attention (Performer) with the random projection `projection`.

  Args:
    query: `[batch, n, heads, head_dim]`.
    key: `[batch, m, heads, head_dim]`.
    value: `[batch, m, heads, v_dim]`.
    projection: `[nb_features, head_dim]`, e.g. from `orthogonal_random_matrix`.
    key_mask: optional `[batch, m]` bool, True for real keys.

  Returns:
    `[batch, n, heads, v_dim]` in value's dtype.
  """
  return kernelized_attention(
    favor_features(query, projection, is_query=True),
    favor_features(key, projection, is_query=False, mask=key_mask),
    value,
  )


class LinformerSelfAttention(SelfAttention):
  """Linformer self-attention: the LRA projections around `linformer_attention`.

  Parameters `key_projection` (E) and `value_projection` (F), `[max_length, low_rank_features]`,
  init N(0, 1/max_length) (LRA's lecun_normal over the length axis).

  Attributes:
    max_length: the fixed sequence length (longer inputs raise ValueError).
    low_rank_features: r, the projected length (LRA: 16).
  """

  max_length: int | None = None
  low_rank_features: int = 16

  @classmethod
  def from_config(cls, cfg: ModelConfig) -> Callable[..., LinformerSelfAttention]:
    """The constructor for a `ModelConfig`: the encoder's length (CLS included) and
    `low_rank_features`."""
    return functools.partial(
      cls, max_length=cfg.max_length + int(cfg.prepend_cls), low_rank_features=cfg.low_rank_features
    )

  def attend(
    self,
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    deterministic: bool,
    query_mask: Array | None = None,
    key_lengths: Array | None = None,
  ) -> Array:
    del key_lengths  # `mask` as lengths, for the fused softmax; these forms mask by `mask`.
    no_query_mask(self, query_mask)
    if self.max_length is None:
      raise ValueError('LinformerSelfAttention needs max_length.')
    shape = (self.max_length, self.low_rank_features)
    init = nn.initializers.lecun_normal(in_axis=0, out_axis=1)
    e = self.param('key_projection', init, shape, self.param_dtype)
    f = self.param('value_projection', init, shape, self.param_dtype)
    y, probs = linformer_attention(
      query,
      key,
      value,
      e,
      f,
      mask,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=layers.dropout_rng(self, self.attention_dropout_rate, deterministic),
      deterministic=deterministic,
    )
    self.sow('intermediates', 'probs', probs)
    return y


class LinearSelfAttention(SelfAttention):
  """Linear Transformer self-attention (elu + 1 features); no attention dropout."""

  def attend(
    self,
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    deterministic: bool,
    query_mask: Array | None = None,
    key_lengths: Array | None = None,
  ) -> Array:
    del key_lengths  # `mask` as lengths, for the fused softmax; these forms mask by `mask`.
    no_query_mask(self, query_mask)
    return linear_attention(query, key, value, mask)


class PerformerSelfAttention(SelfAttention):
  """Performer (FAVOR+) self-attention; no attention dropout.

  The projection is not a parameter. It is drawn from a key fixed by the module's path (so each
  layer has its own, identical in every call and run, and a constant of the compiled program), or,
  with `redraw_features`, drawn anew at every training call from the 'dropout' rng stream (a new
  projection per step; evaluation uses the fixed one).

  Attributes:
    nb_features: number of random features m (LRA: 256).
    redraw_features: redraw the projection at every training step.
  """

  nb_features: int = 256
  redraw_features: bool = False

  @classmethod
  def from_config(cls, cfg: ModelConfig) -> Callable[..., PerformerSelfAttention]:
    """The constructor for a `ModelConfig`: its `nb_features` and `redraw_features`."""
    return functools.partial(cls, nb_features=cfg.nb_features, redraw_features=cfg.redraw_features)

  def projection(self, deterministic: bool) -> Array:
    """The `[nb_features, head_dim]` random projection of this call."""
    head_dim = self.qkv_dim // self.num_heads
    if self.redraw_features and not deterministic:
      return orthogonal_random_matrix(self.make_rng('dropout'), self.nb_features, head_dim)
    with jax.ensure_compile_time_eval():
      return orthogonal_random_matrix(
        jax.random.PRNGKey(zlib.crc32('/'.join(self.path).encode())), self.nb_features, head_dim
      )

  def attend(
    self,
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    deterministic: bool,
    query_mask: Array | None = None,
    key_lengths: Array | None = None,
  ) -> Array:
    del key_lengths  # `mask` as lengths, for the fused softmax; these forms mask by `mask`.
    no_query_mask(self, query_mask)
    return performer_attention(query, key, value, self.projection(deterministic), mask)
