"""Thin Flax (linen) modules around `luna_jax.model.attention`: attention modules, feed-forward and
layers.

Parameter names follow the authors' code (fairseq-apollo, `fairseq/modules/luna_attention.py`) where
a counterpart exists:
`pack_query`, `pack_key`/`pack_value` (or tied `pack_kv`), `query`, `key`/`value` (or tied `kv`),
`out`. All kernels are `[in, out]` Dense kernels, with biases except in the LRA Transformer's
`SelfAttention` (as the official LRA code); head split is the contiguous one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model import attention as attn
from luna_jax.model import kernels
from luna_jax.model.kernels import DenseParams, LayerNorm, exact_gelu, fused_dense, stacked_params

if TYPE_CHECKING:
  from luna_jax.model.config import ModelConfig

Array = jax.Array
Dtype = jnp.dtype

#: xavier_uniform with gain 1/sqrt(2): the authors' (and fairseq's) init of every input projection.
PROJ_INIT = nn.initializers.variance_scaling(0.5, 'fan_avg', 'uniform')
#: xavier_uniform (gain 1): their init of the output projections.
OUT_INIT = nn.initializers.xavier_uniform()
#: fairseq's `init_bert_params` for Linear and Embedding weights (`ModelConfig.param_init='bert'`).
BERT_INIT = nn.initializers.normal(0.02)


def _activation(name: str) -> Callable[[Array], Array]:
  """'gelu' = exact erf GELU (Luna), 'gelu_tanh' = tanh approximation (official LRA), 'relu'."""
  if name == 'gelu':
    return exact_gelu
  if name == 'gelu_tanh':
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == 'relu':
    return jax.nn.relu
  raise ValueError(f"activation must be 'gelu', 'gelu_tanh' or 'relu', got {name!r}.")


def kv_names(tie_kv: bool, prefix: str = '') -> tuple[str, ...]:
  """Names of the K/V projections: `<prefix>kv` when tied, else `<prefix>key`, `<prefix>value`
  (the authors' `c_proj` / `k_proj`, `v_proj`); read them back with `attn.key_value`."""
  return (prefix + 'kv',) if tie_kv else (prefix + 'key', prefix + 'value')


def matmul_dtype(module: nn.Module) -> Dtype:
  """The dtype `module`'s matmul inputs are rounded to: its `matmul_dtype`, else its `dtype`."""
  return module.matmul_dtype or module.dtype


def dropout_rng(module: nn.Module, rate: float, deterministic: bool) -> Array | None:
  """A fresh 'dropout' key of `module` when dropout is active (not deterministic, rate > 0), else
  None (then no key is drawn)."""
  return module.make_rng('dropout') if not deterministic and rate > 0.0 else None


def dropout(module: nn.Module, x: Array, rate: float, deterministic: bool) -> Array:
  """`kernels.dropout` of `x` with a fresh key of `module` (the cheap 16-bit keep mask)."""
  return kernels.dropout(x, rate, dropout_rng(module, rate, deterministic), deterministic)


class LunaAttention(nn.Module):
  """Bidirectional Luna attention: `Y_X, Y_P = LunaAttn(X, P, C)` (eqs. 3-5), `attn.luna_attention`
  with its projections.

  Pack: `Y_P = Attn(P, C)` with `num_pack_heads` heads, context keys masked by `context_mask`, no
  output projection (heads concatenated back to d). Unpack: `Y_X = Attn(X, Y_P)` with `num_heads`
  heads, P keys masked by `p_mask`, followed by the output projection. `pack`, `unpack_keys_values`
  and `unpack` are exposed separately so a decoder can pack an encoder output once and reuse the
  unpack keys/values.

  Attributes:
    features: model width d.
    num_heads: heads of the unpack attention.
    num_pack_heads: heads of the pack attention (default: num_heads).
    tie_kv: K and V share one projection inside each of pack and unpack (Q is never shared).
    attention_dropout_rate: dropout on the pack and unpack probabilities.
    kernel_init: initialiser of every projection kernel; None: the authors' xavier_uniform (gain
      1/sqrt(2) for the input projections, 1 for the output projection).
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  features: int
  num_heads: int
  num_pack_heads: int | None = None
  tie_kv: bool = False
  attention_dropout_rate: float = 0.0
  kernel_init: Callable | None = None
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, cfg: ModelConfig) -> Callable[..., LunaAttention]:
    """The constructor for a `ModelConfig`: its `num_pack_heads`, `tie_kv` and `param_init`."""
    return functools.partial(
      cls,
      num_pack_heads=cfg.num_pack_heads,
      tie_kv=cfg.tie_kv,
      kernel_init=BERT_INIT if cfg.param_init == 'bert' else None,
    )

  def setup(self):
    proj = lambda init=PROJ_INIT: DenseParams(
      self.features, kernel_init=self.kernel_init or init, param_dtype=self.param_dtype
    )
    self.pack_query, self.query, self.out = proj(), proj(), proj(OUT_INIT)
    for name in kv_names(self.tie_kv, 'pack_') + kv_names(self.tie_kv):
      setattr(self, name, proj())

  @property
  def _pack_heads(self) -> int:
    return self.num_pack_heads or self.num_heads

  def _projections(self, prefix: str = '') -> list[DenseParams]:
    return [getattr(self, name) for name in kv_names(self.tie_kv, prefix)]

  def _dropout_rng(self, deterministic: bool) -> Array | None:
    return dropout_rng(self, self.attention_dropout_rate, deterministic)

  def _pack_inputs(self, p: Array, pack_kv: list[Array]) -> tuple[Array, Array, Array]:
    """Head-split pack queries, keys and values from P and the projected context."""
    hp = self._pack_heads
    pq = attn.split_heads(
      fused_dense(p, [self.pack_query], matmul_dtype(self), self.matmul_dtype)[0], hp
    )
    pk, pv = attn.key_value([attn.split_heads(z, hp) for z in pack_kv])
    return pq, pk, pv

  def pack(
    self,
    p: Array,
    context: Array,
    context_mask: Array | None = None,
    *,
    deterministic: bool = True,
  ) -> Array:
    """`Y_P = Attn(P, C)`: `[batch, l, d]` P and `[batch, m, d]` context -> `[batch, l, d]`.

    The context keys and values are one fused matmul (`fused_dense`)."""
    pack_kv = fused_dense(
      context, self._projections('pack_'), matmul_dtype(self), self.matmul_dtype
    )
    y_p, probs = attn.dot_product_attention(
      *self._pack_inputs(p, pack_kv),
      context_mask,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=self._dropout_rng(deterministic),
      deterministic=deterministic,
      out_dtype=self.dtype,
    )
    self.sow('intermediates', 'pack_probs', probs)
    return attn.merge_heads(y_p)

  def unpack_keys_values(self, y_p: Array) -> tuple[Array, Array]:
    """Unpack keys and values from the packed context (one fused matmul): `[batch, l, d]` -> 2 x
    `[batch, l, heads, dh]`."""
    return attn.key_value(
      [
        attn.split_heads(z, self.num_heads)
        for z in fused_dense(y_p, self._projections(), matmul_dtype(self), self.matmul_dtype)
      ]
    )

  def unpack(
    self,
    x: Array,
    key: Array,
    value: Array,
    p_mask: Array | None = None,
    *,
    deterministic: bool = True,
  ) -> Array:
    """`Y_X = out(Attn(X, Y_P))` from precomputed unpack keys/values: `[batch, n, d]` -> `[batch, n,
    d]`."""
    q = attn.split_heads(
      fused_dense(x, [self.query], matmul_dtype(self), self.matmul_dtype)[0], self.num_heads
    )
    y_x, probs = attn.dot_product_attention(
      q,
      key,
      value,
      p_mask,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=self._dropout_rng(deterministic),
      deterministic=deterministic,
    )
    self.sow('intermediates', 'unpack_probs', probs)
    return fused_dense(attn.merge_heads(y_x), [self.out], self.dtype, self.matmul_dtype)[0]

  def __call__(
    self,
    x: Array,
    p: Array,
    context: Array,
    context_mask: Array | None = None,
    p_mask: Array | None = None,
    *,
    deterministic: bool = True,
  ) -> tuple[Array, Array]:
    """Applies pack and unpack attention (`attn.luna_attention`).

    For self-attention (`context is x`) the unpack queries and the pack keys and values of x are one
    fused matmul, and the unpack keys and values of Y_P are another.

    Args:
      x: `[batch, n, d]` queries of the unpack attention.
      p: `[batch, l, d]` queries of the pack attention.
      context: `[batch, m, d]` sequence to pack (x itself for self-attention).
      context_mask: optional `[batch, m]` bool, True for real context tokens.
      p_mask: optional `[batch, l]` bool, True for usable P slots.
      deterministic: disable attention dropout.

    Returns:
      `(y_x, y_p)`: `[batch, n, d]` and `[batch, l, d]`.
    """
    if context is x:
      q, *pack_kv = fused_dense(
        x, [self.query, *self._projections('pack_')], matmul_dtype(self), self.matmul_dtype
      )
    else:
      q = fused_dense(x, [self.query], matmul_dtype(self), self.matmul_dtype)[0]
      pack_kv = fused_dense(
        context, self._projections('pack_'), matmul_dtype(self), self.matmul_dtype
      )
    out = attn.luna_attention(
      attn.split_heads(q, self.num_heads),
      *self._pack_inputs(p, pack_kv),
      *stacked_params(self._projections(), self.features),
      context_mask,
      p_mask,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=self._dropout_rng(deterministic),
      deterministic=deterministic,
      packed_dtype=self.dtype,
      unpack_dtype=matmul_dtype(self),
      matmul_dtype=self.matmul_dtype,
    )
    self.sow('intermediates', 'pack_probs', out.pack_probs)
    self.sow('intermediates', 'unpack_probs', out.unpack_probs)
    return fused_dense(attn.merge_heads(out.unpacked), [self.out], self.dtype, self.matmul_dtype)[
      0
    ], out.packed


class LunaCausalAttention(nn.Module):
  """Causal Luna self-attention (eq. 7); P must carry no information about X.

  `__call__` runs a whole sequence (chunked-parallel or scan); `project_p` and `step` run
  incremental decoding with a `CausalLunaState` (O(l*d) memory and O(1) time per token).

  Attributes:
    features: model width d.
    num_heads: heads (shared by pack and unpack, as in the authors' causal module).
    tie_kv: unpack K and V share one projection of X.
    attention_dropout_rate: dropout on the pack weights and unpack probabilities.
    omega: pack activation, 'softplus' (beta = softplus_beta) or 'elu' (elu + 1).
    softplus_beta: softplus sharpness (authors: ln 2).
    implementation: 'chunked' (exact chunked-parallel form) or 'scan' (one step per position).
    chunk_size: positions per chunk of the chunked form.
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  features: int
  num_heads: int
  tie_kv: bool = False
  attention_dropout_rate: float = 0.0
  omega: str = 'softplus'
  softplus_beta: float = attn.SOFTPLUS_BETA
  implementation: str = 'chunked'
  chunk_size: int = 64
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def setup(self):
    proj = lambda init=PROJ_INIT: DenseParams(
      self.features, kernel_init=init, param_dtype=self.param_dtype
    )
    self.pack_query, self.query, self.pack_key, self.out = proj(), proj(), proj(), proj(OUT_INIT)
    for name in kv_names(self.tie_kv):
      setattr(self, name, proj())

  def project_p(self, p: Array) -> Array:
    """Pack queries from P: `[batch, l, d]` -> `[batch, l, heads, dh]` (cache them when
    decoding)."""
    return attn.split_heads(
      fused_dense(p, [self.pack_query], matmul_dtype(self), self.matmul_dtype)[0], self.num_heads
    )

  def _project_x(self, x: Array) -> tuple[Array, Array, Array, Array]:
    """Queries, pack keys, keys and values of x, one fused matmul: 4 x `[batch, n, heads, dh]`."""
    projections = [
      self.query,
      self.pack_key,
      *[getattr(self, name) for name in kv_names(self.tie_kv)],
    ]
    q, pk, *kv = (
      attn.split_heads(y, self.num_heads)
      for y in fused_dense(x, projections, matmul_dtype(self), self.matmul_dtype)
    )
    return (q, pk, *attn.key_value(kv))

  def init_state(self, batch: int, projection_length: int) -> attn.CausalLunaState:
    """An empty decoding state for `batch` sequences and a P of `projection_length` slots."""
    return attn.init_causal_state(
      batch, self.num_heads, self.features // self.num_heads, projection_length
    )

  def step(
    self, x: Array, pack_query: Array, p_mask: Array | None, state: attn.CausalLunaState
  ) -> tuple[Array, attn.CausalLunaState]:
    """One decoding step: `[batch, d]` new token state -> (`[batch, d]` output, new state)."""
    q, pk, k, v = self._project_x(x[:, None])
    state, y = attn.causal_luna_step(
      state,
      pack_query,
      q[:, 0],
      pk[:, 0],
      k[:, 0],
      v[:, 0],
      p_mask,
      omega=self.omega,
      beta=self.softplus_beta,
    )
    return self._output(y), state

  def _output(self, y: Array) -> Array:
    """The output projection of `[..., heads, dh]` attention outputs -> `[..., d]`."""
    return fused_dense(attn.merge_heads(y), [self.out], self.dtype, self.matmul_dtype)[0]

  def __call__(
    self, x: Array, p: Array, p_mask: Array | None = None, *, deterministic: bool = True
  ) -> Array:
    """Applies causal Luna attention.

    Args:
      x: `[batch, n, d]` (right padding only: position t sees positions <= t).
      p: `[batch, l, d]`.
      p_mask: optional `[batch, l]` bool, True for usable P slots.
      deterministic: disable attention dropout.

    Returns:
      `[batch, n, d]`.
    """
    kwargs = dict(
      omega=self.omega,
      beta=self.softplus_beta,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=dropout_rng(self, self.attention_dropout_rate, deterministic),
      deterministic=deterministic,
    )
    args = (self.project_p(p), *self._project_x(x), p_mask)
    if self.implementation == 'chunked':
      y, _ = attn.causal_luna_attention_chunked(*args, chunk_size=self.chunk_size, **kwargs)
    elif self.implementation == 'scan':
      y, _ = attn.causal_luna_attention(*args, **kwargs)
    else:
      raise ValueError(f"implementation must be 'chunked' or 'scan', got {self.implementation!r}.")
    return self._output(y)


class FeedForward(nn.Module):
  """Position-wise FFN: Dense(mlp_dim) -> activation -> dropout -> Dense(d).

  Attributes:
    mlp_dim: hidden size.
    activation: 'gelu' (exact), 'gelu_tanh' or 'relu'.
    activation_dropout_rate: dropout after the activation.
    kernel_init: kernel initialiser of both Dense layers.
    bias_init: bias initialiser of both Dense layers.
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  mlp_dim: int
  activation: str = 'gelu'
  activation_dropout_rate: float = 0.0
  kernel_init: Callable = nn.initializers.xavier_uniform()
  bias_init: Callable = nn.initializers.zeros
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """`[..., d]` -> `[..., d]`."""
    dense = lambda y, f, name: fused_dense(
      y,
      [
        DenseParams(
          f,
          kernel_init=self.kernel_init,
          bias_init=self.bias_init,
          param_dtype=self.param_dtype,
          name=name,
        )
      ],
      self.dtype,
      self.matmul_dtype,
    )[0]
    y = _activation(self.activation)(dense(x, self.mlp_dim, 'fc1'))
    y = dropout(self, y, self.activation_dropout_rate, deterministic)
    return dense(y, x.shape[-1], 'fc2')


class LunaEncoderLayer(nn.Module):
  """One Luna layer (eq. 6), post-LN by default.

  Post-LN (the paper and every released config):
    X_A = LN(X + drop(Y_X)),  P' = LN(P + drop(Y_P)),  X' = LN(X_A + drop(FFN(X_A))).
  Pre-LN (`normalize_before`): the LayerNorms move in front of the attention (on X and P) and the
  FFN, residuals stay un-normalised; the encoder then adds a final LayerNorm on X and P.

  Attributes:
    num_heads: unpack heads.
    num_pack_heads: pack heads (default num_heads).
    mlp_dim: FFN hidden size.
    tie_kv: tie K and V inside pack and inside unpack.
    normalize_before: pre-LN instead of post-LN.
    activation: FFN activation: 'gelu' (exact), 'gelu_tanh' or 'relu'.
    dropout_rate: residual dropout on Y_X, Y_P and the FFN output.
    attention_dropout_rate: attention-probability dropout.
    activation_dropout_rate: dropout after the FFN activation.
    layer_norm_epsilon: LayerNorm epsilon (PyTorch default 1e-5, as in the authors' code).
    attention_module: builds the attention instead of `LunaAttention(num_pack_heads, tie_kv)`,
      called with LunaAttention's other fields (`luna_jax.model.registry.LUNA_ATTENTIONS` makes
      these).
    ffn_kernel_init: kernel initialiser of the FFN; None: xavier_uniform (the authors' default).
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  num_heads: int
  mlp_dim: int
  num_pack_heads: int | None = None
  tie_kv: bool = False
  normalize_before: bool = False
  activation: str = 'gelu'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-5
  attention_module: Callable[..., nn.Module] | None = None
  ffn_kernel_init: Callable | None = None
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: Array,
    p: Array,
    x_mask: Array | None = None,
    p_mask: Array | None = None,
    deterministic: bool = True,
  ) -> tuple[Array, Array]:
    """Applies the layer (`deterministic` may be positional: `nn.remat` makes it static).

    Args:
      x: `[batch, n, d]` token states.
      p: `[batch, l, d]` projected (packed) states from the previous layer.
      x_mask: optional `[batch, n]` bool, True for real tokens.
      p_mask: optional `[batch, l]` bool, True for usable P slots.
      deterministic: disable dropout.

    Returns:
      `(x', p')`: `[batch, n, d]`, `[batch, l, d]`.

    Raises:
      ValueError: a mask that is not bool, naming it (`attention.check_masks`).
    """
    attn.check_masks(x_mask=x_mask, p_mask=p_mask)  # By this layer's names, not the attention's.
    ln = lambda name: LayerNorm(
      epsilon=self.layer_norm_epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    drop = lambda y: dropout(self, y, self.dropout_rate, deterministic)
    module = self.attention_module or functools.partial(
      LunaAttention, num_pack_heads=self.num_pack_heads, tie_kv=self.tie_kv
    )
    attention = module(
      features=x.shape[-1],
      num_heads=self.num_heads,
      attention_dropout_rate=self.attention_dropout_rate,
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      param_dtype=self.param_dtype,
      name='attention',
    )
    ffn = FeedForward(
      self.mlp_dim,
      self.activation,
      self.activation_dropout_rate,
      kernel_init=self.ffn_kernel_init or nn.initializers.xavier_uniform(),
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      param_dtype=self.param_dtype,
      name='ffn',
    )
    if self.normalize_before:
      xn, pn = ln('x_norm')(x), ln('p_norm')(p)
      y_x, y_p = attention(xn, pn, xn, x_mask, p_mask, deterministic=deterministic)
      x = x + drop(y_x)
      p = p + drop(y_p)
      x = x + drop(ffn(ln('ffn_norm')(x), deterministic=deterministic))
      return x, p
    y_x, y_p = attention(x, p, x, x_mask, p_mask, deterministic=deterministic)
    x = ln('x_norm')(x + drop(y_x))
    p = ln('p_norm')(p + drop(y_p))
    x = ln('ffn_norm')(x + drop(ffn(x, deterministic=deterministic)))
    return x, p


class SelfAttention(nn.Module):
  """Softmax multi-head self-attention of the official LRA Transformer (no biases, xavier_uniform).

  Attributes:
    num_heads: heads.
    qkv_dim: total width of queries/keys/values (may differ from the model width).
    attention_dropout_rate: attention-probability dropout (plain implementation only).
    implementation: 'softmax' (einsum, materialises the n x n matrix) or 'fused'
      (`jax.nn.dot_product_attention`, no attention dropout). The efficient-attention baselines
      (`luna_jax.model.baselines`) subclass this module and replace `attend`.
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  num_heads: int
  qkv_dim: int
  attention_dropout_rate: float = 0.0
  implementation: str = 'softmax'
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Array | None = None,
    *,
    deterministic: bool = True,
    query_mask: Array | None = None,
    key_lengths: Array | None = None,
  ) -> Array:
    """`[batch, n, d]` (key mask `[batch, n]`; query mask `[batch, n]` and key lengths `[batch]`,
    see `attend`) -> `[batch, n, d]`."""
    init = nn.initializers.xavier_uniform()
    projections = [
      DenseParams(
        self.qkv_dim, use_bias=False, kernel_init=init, param_dtype=self.param_dtype, name=name
      )
      for name in ('query', 'key', 'value')
    ]
    q, k, v = (
      attn.split_heads(y, self.num_heads)
      for y in fused_dense(x, projections, matmul_dtype(self), self.matmul_dtype)
    )
    y = self.attend(q, k, v, mask, deterministic, query_mask, key_lengths)
    out = DenseParams(
      x.shape[-1], use_bias=False, kernel_init=init, param_dtype=self.param_dtype, name='out'
    )
    return fused_dense(attn.merge_heads(y), [out], self.dtype, self.matmul_dtype)[0]

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
    """`[batch, n, heads, dh]` queries, keys, values (key mask `[batch, n]`) -> `[batch, n, heads,
    dh]`; a False entry of `query_mask` makes that query attend uniformly to every key (LRA's
    outer-product padding mask, `attn.attention_weights`). `key_lengths` (`[batch]` int) is the
    same key mask as lengths when it is a prefix mask (`padding_mask='lengths'`): the fused
    implementation masks by it instead (cuDNN's sequence lengths,
    `attn.fused_dot_product_attention`), the others by `mask`. The softmax implementation sows its
    float32 probabilities `[batch, heads, n, n]` as 'probs' in 'intermediates'."""
    if self.implementation == 'softmax':
      y, probs = attn.dot_product_attention(
        query,
        key,
        value,
        mask,
        dropout_rate=self.attention_dropout_rate,
        dropout_rng=dropout_rng(self, self.attention_dropout_rate, deterministic),
        deterministic=deterministic,
        query_mask=query_mask,
      )
      self.sow('intermediates', 'probs', probs)
      return y
    if self.implementation == 'fused':
      if key_lengths is not None:
        mask = None
      return attn.fused_dot_product_attention(
        query, key, value, mask, query_mask, key_lengths=key_lengths
      )
    raise ValueError(f"implementation must be 'softmax' or 'fused', got {self.implementation!r}.")


class TransformerEncoderLayer(nn.Module):
  """The official LRA Transformer block (LRA `models/transformer/transformer.py`): pre-LN,
  attention, residual; pre-LN, MLP, residual.

  Attributes:
    num_heads: heads.
    qkv_dim: attention width.
    mlp_dim: MLP hidden size.
    dropout_rate: residual and MLP dropout.
    attention_dropout_rate: attention-probability dropout.
    activation: MLP activation (official: 'gelu_tanh').
    attention_implementation: 'softmax' or 'fused'.
    attention_module: builds the attention instead of `SelfAttention(implementation=...)`, called
      with SelfAttention's fields (`luna_jax.model.registry.TRANSFORMER_ATTENTIONS` makes these).
    dtype: dtype of the activations (outputs, residual stream, LayerNorms).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
    param_dtype: parameter dtype.
  """

  num_heads: int
  qkv_dim: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation: str = 'gelu_tanh'
  attention_implementation: str = 'softmax'
  attention_module: Callable[..., nn.Module] | None = None
  dtype: Dtype = jnp.float32
  matmul_dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Array | None = None,
    deterministic: bool = True,
    query_mask: Array | None = None,
    key_lengths: Array | None = None,
  ) -> Array:
    """`[batch, n, d]` -> `[batch, n, d]` (`deterministic` may be positional: `nn.remat` makes it
    static); `mask` masks keys, `query_mask` whole query rows, `key_lengths` (`[batch]` int) is
    `mask` as lengths when it is a prefix mask (`SelfAttention.attend`)."""
    ln = lambda name: LayerNorm(
      epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    drop = lambda y: dropout(self, y, self.dropout_rate, deterministic)
    module = self.attention_module or functools.partial(
      SelfAttention, implementation=self.attention_implementation
    )
    y = module(
      num_heads=self.num_heads,
      qkv_dim=self.qkv_dim,
      attention_dropout_rate=self.attention_dropout_rate,
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      param_dtype=self.param_dtype,
      name='attention',
    )(
      ln('attention_norm')(x),
      mask,
      deterministic=deterministic,
      query_mask=query_mask,
      key_lengths=key_lengths,
    )
    x = x + drop(y)
    y = FeedForward(
      self.mlp_dim,
      self.activation,
      self.dropout_rate,
      bias_init=nn.initializers.normal(1e-6),
      dtype=self.dtype,
      matmul_dtype=self.matmul_dtype,
      param_dtype=self.param_dtype,
      name='ffn',
    )(ln('ffn_norm')(x), deterministic=deterministic)
    return x + drop(y)


def sinusoidal_positions(length: int, d: int) -> Array:
  """Fixed sinusoidal table `[length, d]`: sin on even features, cos on odd (LRA / flax
  convention)."""
  position = jnp.arange(length, dtype=jnp.float32)[:, None]
  div = jnp.exp(jnp.arange(0, d, 2, dtype=jnp.float32) * -(math.log(10000.0) / d))
  table = jnp.zeros((length, d), jnp.float32)
  table = table.at[:, 0::2].set(jnp.sin(position * div))
  return table.at[:, 1::2].set(jnp.cos(position * div[: d // 2]))
