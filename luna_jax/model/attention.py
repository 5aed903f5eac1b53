"""Attention as pure functions: softmax attention, Luna pack/unpack and Luna causal attention.

Every function here works on already-projected, head-split tensors laid out as
`[batch, length, heads, head_dim]` (the layout of `flax.linen` and `jax.nn.dot_product_attention`),
so the Flax modules in `luna_jax.model.layers` only own the projections' parameters (Luna's unpack
keys and values, projections of the packed Y_P, are computed inside `luna_attention` from the
kernel the module passes). Logits, softmax and every normaliser are computed in float32 whatever
the input dtype; outputs come back in the dtype of the values unless an `out_dtype` asks for
another. The softmax attention's two matmuls accumulate in
float32 (`luna_jax.model.kernels.float32_einsum`), on 16-bit operands in the backward pass too when
their inputs are 16-bit.

Shapes name the projection length (the length of P, `projection_length` in the configs) l, as the
paper does. Masks are boolean, `True` = "may be attended to". A query row whose keys are all masked
gets a uniform distribution instead of NaN (the masked logits are the most negative finite float32,
not -inf).

Luna (Ma et al., 2021, §3; `luna_attention`):
  pack:    Y_P = Attn(P, C)   with the context key mask,
  unpack:  Y_X = Attn(X, Y_P) with the P mask.
Causal Luna (eq. 7), per head, with t the 1-based position and q and the P queries both scaled by
1/sqrt(dh):

  a_t        = omega(pk_t . PQ^T)                   (l,)    omega = softplus(beta) or elu + 1
  logits_t   = (1/t) q_t . sum_{j<=t} k_j a_j^T     (l,)    then the P mask, softmax over l -> u_t
  y_t        = (1/t) u_t . sum_{j<=t} a_j v_j^T     (dh,)

The running sums are the state carried by `jax.lax.scan` (`causal_luna_attention`) and advanced one
token at a time by `causal_luna_step`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from luna_jax.model.kernels import (
  apply_keep_mask,
  dropout,
  dropout_keep_mask,
  float32_einsum,
  project,
)

Array = jax.Array

#: Default softplus sharpness of the authors' causal Luna (log2(1 + 2^z), so omega(0) = 1).
SOFTPLUS_BETA = math.log(2.0)
_MASK_VALUE = float(jnp.finfo(jnp.float32).min)
#: Checkpoint name of the softmax attention's probabilities, the one tensor `_attend` saves.
_PROBS_NAME = 'attention_probs'


def check_masks(**masks: Array | None) -> None:
  """Refuses a mask that is not boolean, naming it: an additive float mask (0 / -inf, the
  PyTorch and fairseq convention) would otherwise read as all True and mask nothing.

  Raises:
    ValueError: a mask given whose dtype is not bool.
  """
  for name, mask in masks.items():
    if mask is None:
      continue
    # Read where the mask is: no copy to or from the device for it (a list is made an array).
    dtype = mask.dtype if hasattr(mask, 'dtype') else np.asarray(mask).dtype
    if dtype != np.bool_:
      raise ValueError(
        f'{name} has dtype {dtype}: masks are bool, True where attending is allowed (an '
        'additive 0 / -inf mask m is `m == 0`).'
      )


def attention_weights(
  query: Array, key: Array, key_mask: Array | None = None, query_mask: Array | None = None
) -> Array:
  """Softmax attention probabilities softmax(q k^T / sqrt(head_dim)), in float32.

  Args:
    query: `[batch, q_len, heads, head_dim]`.
    key: `[batch, k_len, heads, head_dim]`.
    key_mask: optional bool, True where a key may be attended to: `[batch, k_len]` (padding), or
      `[batch, q_len, k_len]` for a mask per query (causal decoding), any axis of size 1
      broadcast.
    query_mask: optional `[batch, q_len]` bool; a False query's whole row is masked, so it attends
      uniformly to every key (LRA's padding mask, the outer product of the query and key masks
      as a -1e10 bias: flax's deprecated `nn.SelfAttention`, which LRA
      `models/transformer/transformer.py` calls with `padding_mask=inputs > 0`).

  Returns:
    `[batch, heads, q_len, k_len]` float32 probabilities; each row sums to 1.

  Raises:
    ValueError: a mask that is not bool (`check_masks`).
  """
  check_masks(key_mask=key_mask, query_mask=query_mask)
  scale = query.shape[-1] ** -0.5
  logits = float32_einsum('bqhd,bkhd->bhqk', query, key) * scale
  if key_mask is not None:
    per_query = key_mask[:, None] if key_mask.ndim == 3 else key_mask[:, None, None, :]
    logits = jnp.where(per_query, logits, _MASK_VALUE)
  if query_mask is not None:
    logits = jnp.where(query_mask[:, None, :, None], logits, _MASK_VALUE)
  return _softmax_named(logits)


@jax.custom_jvp
def _softmax_named(logits: Array) -> Array:
  """`jax.nn.softmax` over the last axis (`[..., k_len]` float32 logits -> probabilities of the
  same shape and dtype) whose derivative reads its output under the checkpoint name `_PROBS_NAME`,
  so `_attend`'s policy, which saves that name, keeps all the backward needs.

  The derivative is jax's own softmax rule, `p * (t - sum(p * t))` (`jax_softmax_custom_jvp`);
  jax 0.10 and 0.11 by default differentiate `jax.nn.softmax` through its exponentials, their sum
  and the division, so gradients differ from theirs by float rounding. With `checkpoint_name`
  applied to the softmax's result instead, the derivative read values the policy does not save
  (those exponentials and their sum, or with the custom rule the softmax's inner output): the
  backward recomputed the logits, their matmul included. jax 0.10's XLA merged most of that
  recomputation back into the forward's (not under `model.remat`); jax 0.11's does not."""
  return jax.nn.softmax(logits, axis=-1)


@_softmax_named.defjvp
def _softmax_named_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
  (logits,), (tangent,) = primals, tangents
  probs = checkpoint_name(jax.nn.softmax(logits, axis=-1), _PROBS_NAME)
  return probs, probs * (tangent - jnp.sum(probs * tangent, axis=-1, keepdims=True))


def dot_product_attention(
  query: Array,
  key: Array,
  value: Array,
  key_mask: Array | None = None,
  *,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
  query_mask: Array | None = None,
  out_dtype: jnp.dtype | None = None,
) -> tuple[Array, Array]:
  """Multi-head scaled dot-product softmax attention with a key padding mask.

  Args:
    query: `[batch, q_len, heads, head_dim]`.
    key: `[batch, k_len, heads, head_dim]`.
    value: `[batch, k_len, heads, v_dim]`.
    key_mask: optional bool, True where a key may be attended to: `[batch, k_len]`, or
      `[batch, q_len, k_len]` per query (see `attention_weights`).
    query_mask: optional `[batch, q_len]` bool, False for a query that attends uniformly to every
      key (LRA's padding mask, see `attention_weights`).
    dropout_rate: attention dropout on the probabilities.
    dropout_rng: PRNG key for the attention dropout.
    deterministic: disable dropout.
    out_dtype: dtype of `out` (the float32 product rounded once); None: value's dtype.

  Returns:
    `(out, probs)`: out `[batch, q_len, heads, v_dim]` in `out_dtype`; probs
    `[batch, heads, q_len, k_len]` float32 before dropout.

  Raises:
    ValueError: dropout on without `dropout_rng`; a mask that is not bool (`check_masks`).
  """
  keep = None
  if _dropout_on(dropout_rng, dropout_rate, deterministic):
    b, q_len, h, _ = query.shape
    keep = dropout_keep_mask(dropout_rng, dropout_rate, (b, h, q_len, key.shape[1]))
  out_dtype = value.dtype if out_dtype is None else jnp.dtype(out_dtype)
  return _attend(query, key, value, key_mask, keep, dropout_rate, query_mask, out_dtype)


@functools.partial(
  jax.checkpoint,
  static_argnums=(5, 7),
  policy=jax.checkpoint_policies.save_only_these_names(_PROBS_NAME),
)
def _attend(
  query: Array,
  key: Array,
  value: Array,
  key_mask: Array | None,
  keep: Array | None,
  rate: float,
  query_mask: Array | None,
  out_dtype: jnp.dtype,
) -> tuple[Array, Array]:
  """Softmax attention with an optional dropout keep mask. The backward keeps only the float32
  probabilities and the bool mask (and the inputs): the dropped probabilities and the logits are
  not stored but recomputed (element-wise) or not needed. Both matmuls are `float32_einsum`s, so
  with 16-bit inputs the four matmuls of the backward take 16-bit operands too."""
  probs = attention_weights(query, key, key_mask, query_mask)
  dropped = probs if keep is None else apply_keep_mask(probs, keep, rate)
  out = float32_einsum('bhqk,bkhd->bqhd', dropped.astype(value.dtype), value)
  return out.astype(out_dtype), probs


def key_value(projected: Sequence[Array]) -> tuple[Array, Array]:
  """`(K, V)` from the K/V projections: `[K, V]`, or `[KV]` when tied (then K = V).

  Luna's `tie_kv` shares one projection between the keys and the values (paper §4.2); every module
  builds its K/V projections as a list of one or two and reads them back through here.

  Raises:
    ValueError: when `projected` holds neither one nor two arrays.
  """
  if len(projected) not in (1, 2):
    raise ValueError(f'expected one tied K/V projection or two, got {len(projected)}.')
  return projected[0], projected[-1]


class LunaAttentionOutput(NamedTuple):
  """What `luna_attention` returns.

  Attributes:
    unpacked: `[batch, n, heads, v_dim]` Y_X before the output projection, in the values' dtype.
    packed: `[batch, l, d]` Y_P, the pack heads concatenated (Luna has no pack output projection).
    pack_probs: `[batch, pack_heads, l, m]` float32 pack probabilities, before dropout.
    unpack_probs: `[batch, heads, n, l]` float32 unpack probabilities, before dropout.
  """

  unpacked: Array
  packed: Array
  pack_probs: Array
  unpack_probs: Array


def _dropout_on(dropout_rng: Array | None, dropout_rate: float, deterministic: bool) -> bool:
  """Whether attention dropout applies.

  Raises:
    ValueError: it applies and there is no `dropout_rng`.
  """
  if deterministic or dropout_rate <= 0.0:
    return False
  if dropout_rng is None:
    raise ValueError('dropout needs an rng when deterministic=False and rate > 0.')
  return True


def _pack_unpack_rngs(
  dropout_rng: Array | None, dropout_rate: float, deterministic: bool
) -> tuple[Array | None, Array | None]:
  """The dropout keys of the pack and the unpack attention (None, None when dropout is off).

  Raises:
    ValueError: dropout on without `dropout_rng`.
  """
  if not _dropout_on(dropout_rng, dropout_rate, deterministic):
    return None, None
  pack_rng, unpack_rng = jax.random.split(dropout_rng)
  return pack_rng, unpack_rng


def luna_attention(
  query: Array,
  pack_query: Array,
  pack_key: Array,
  pack_value: Array,
  unpack_kernel: Array,
  unpack_bias: Array | None = None,
  context_mask: Array | None = None,
  p_mask: Array | None = None,
  *,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
  packed_dtype: jnp.dtype | None = None,
  unpack_dtype: jnp.dtype | None = None,
  matmul_dtype: jnp.dtype | None = None,
) -> LunaAttentionOutput:
  """Bidirectional Luna attention from projected inputs: pack, then unpack (§3, eqs. 3-5).

    pack:    Y_P = Attn(P W_PQ, C W_PK, C W_PV)            with the context key mask,
    unpack:  Y_X = Attn(X W_Q, Y_P W_K, Y_P W_V)           with the P key mask,
  each Attn being `dot_product_attention` (softmax(q k^T / sqrt(head_dim)) v per head). The
  unpack keys and values are projections of Y_P, so their weights come in here
  (`unpack_kernel = [W_K | W_V]`, or the one tied `W_K = W_V`); the output projection of Y_X is
  left to the caller. This is `LunarMultiheadAttention.forward` of the authors' code
  (fairseq-apollo, `fairseq/modules/luna_attention.py`).

  Args:
    query: `[batch, n, heads, head_dim]` projected unpack queries X W_Q.
    pack_query: `[batch, l, pack_heads, pack_head_dim]` projected P W_PQ.
    pack_key: `[batch, m, pack_heads, pack_head_dim]` projected context keys C W_PK.
    pack_value: `[batch, m, pack_heads, pack_head_dim]` projected context values C W_PV.
    unpack_kernel: `[d, 2 * d]` the unpack key and value kernels side by side, or `[d, d]` one
      kernel for both (tied K/V), with d = pack_heads * pack_head_dim = heads * head_dim.
    unpack_bias: optional `[2 * d]` or `[d]` biases of those projections.
    context_mask: optional `[batch, m]` bool, True where a context key may be attended to.
    p_mask: optional `[batch, l]` bool, True for usable P slots.
    dropout_rate: attention dropout on the pack and the unpack probabilities.
    dropout_rng: PRNG key, split into the pack and the unpack dropout keys.
    deterministic: disable dropout.
    packed_dtype: dtype of Y_P, which also feeds the next layer's P (float32 under the mixed
      precision policy); None: the pack values' dtype.
    unpack_dtype: dtype of the unpack keys and values (they only feed matmuls); None: Y_P's.
    matmul_dtype: dtype the unpack projection's inputs are rounded to
      (`luna_jax.model.kernels.project`); None: `unpack_dtype`.

  Returns:
    A `LunaAttentionOutput` (Y_X before its output projection, Y_P, both probabilities).

  Raises:
    ValueError: when the unpack kernel's width is neither d nor 2 * d, dropout lacks a key, or a
      mask is not bool (naming it, `check_masks`).
  """
  check_masks(context_mask=context_mask, p_mask=p_mask)
  _, _, heads, head_dim = query.shape
  d = heads * head_dim
  if unpack_kernel.shape[-1] not in (d, 2 * d):
    raise ValueError(
      f'unpack_kernel must be [d, d] (tied K/V) or [d, 2d] with d = {d}; got {unpack_kernel.shape}.'
    )
  pack_rng, unpack_rng = _pack_unpack_rngs(dropout_rng, dropout_rate, deterministic)
  kwargs = dict(dropout_rate=dropout_rate, deterministic=deterministic)
  y_p, pack_probs = dot_product_attention(
    pack_query,
    pack_key,
    pack_value,
    context_mask,
    dropout_rng=pack_rng,
    out_dtype=packed_dtype,
    **kwargs,
  )
  packed = merge_heads(y_p)
  kv = project(packed, unpack_kernel, unpack_bias, unpack_dtype or packed.dtype, matmul_dtype)
  key, value = key_value([split_heads(z, heads) for z in jnp.split(kv, kv.shape[-1] // d, -1)])
  unpacked, unpack_probs = dot_product_attention(
    query, key, value, p_mask, dropout_rng=unpack_rng, **kwargs
  )
  return LunaAttentionOutput(unpacked, packed, pack_probs, unpack_probs)


def fused_dot_product_attention(
  query: Array,
  key: Array,
  value: Array,
  key_mask: Array | None = None,
  query_mask: Array | None = None,
  *,
  key_lengths: Array | None = None,
) -> Array:
  """Softmax attention through `jax.nn.dot_product_attention`: cuDNN's flash attention on an NVIDIA
  GPU for bfloat16 or float16 inputs (`fused_implementation`), XLA's implementation otherwise.

  No attention dropout (the fused kernels have none); the exact path (`dot_product_attention`)
  keeps it. A query whose keys are all masked attends uniformly over every key, as in
  `attention_weights`, on both implementations (`_cudnn_attention`) when the masks are given; with
  `key_lengths`, a length of 0 is left to the kernel on cuDNN.

  Padding reaches the kernels in one of two forms (jax 0.10-0.12, `jax/_src/nn/functions.py`
  `dot_product_attention` and `jax/_src/cudnn/fused_attention_stablehlo.py`):
    - `key_lengths` (a prefix key mask, the Transformer's `padding_mask='lengths'`) goes as
      `key_value_seq_lengths`, cuDNN's padding mask: no `[batch, 1, q_len, k_len]` array is built.
      No `query_seq_lengths` is passed, on purpose: jax's cuDNN branch then sets them to q_len
      itself, so every query row, padded ones included, attends to its example's first
      `key_lengths` keys, as the exact path's rows do (values and gradients equal at every row);
      with `query_seq_lengths`, XLA's implementation masks the padded rows' logits and zeroes
      their outputs, and what cuDNN writes there is up to the kernel.
    - the key and query masks together (LRA's 'nonzero' mask) go as one `[batch, 1, q_len, k_len]`
      `mask`, which cuDNN's branch adds to the logits as a large negative bias
      (`combine_bias_and_mask`). Either mask alone runs on XLA's implementation: cuDNN's branch
      takes no other mask shape (`check_layout`).
  cuDNN's kernels also train only on even lengths: jax 0.10-0.12 `check_is_flash_attention`
  refuses an odd query or key length when the attention is differentiated and a bias is given,
  and jax always gives one (a zero-size placeholder when there is none). A prepended CLS makes
  LRA's lengths odd (ListOps 2001, Text 4001), so an odd length reaches cuDNN one position longer.
  A configuration cuDNN refuses while tracing falls back to XLA's; one that fails later, when XLA
  compiles, is an error.

  Args:
    query: `[batch, q_len, heads, head_dim]`.
    key: `[batch, k_len, heads, head_dim]`.
    value: `[batch, k_len, heads, head_dim]`.
    key_mask: optional `[batch, k_len]` bool.
    query_mask: optional `[batch, q_len]` bool, False for a query whose whole row is masked.
    key_lengths: optional `[batch]` int (cast to int32), the key mask as lengths: key j may be
      attended to iff j < `key_lengths[b]`; instead of `key_mask`.

  Returns:
    `[batch, q_len, heads, head_dim]` in the inputs' dtype.

  Raises:
    ValueError: when both `key_mask` and `key_lengths` are given; a mask that is not bool.
  """
  check_masks(key_mask=key_mask, query_mask=query_mask)
  if key_lengths is not None:
    if key_mask is not None:
      raise ValueError('give the key padding as key_mask or as key_lengths, not both.')
    key_lengths = key_lengths.astype(jnp.int32)
  both_masks_or_none = (key_mask is None) == (query_mask is None)
  if fused_implementation(query.dtype) == 'cudnn' and both_masks_or_none:
    try:
      return _cudnn_attention(query, key, value, key_mask, query_mask, key_lengths)
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # A shape, head size or cuDNN version the flash kernel does not take: XLA's below.
  mask = None if key_mask is None else key_mask[:, None, None, :]
  if query_mask is not None:
    rows = query_mask[:, None, :, None]
    mask = rows if mask is None else mask & rows
  return jax.nn.dot_product_attention(
    query, key, value, mask=mask, key_value_seq_lengths=key_lengths, implementation='xla'
  )


def _cudnn_attention(
  query: Array,
  key: Array,
  value: Array,
  key_mask: Array | None,
  query_mask: Array | None,
  key_lengths: Array | None,
) -> Array:
  """`fused_dot_product_attention` on cuDNN's flash attention: key lengths, or both masks (one
  dense mask), or no padding; the arguments as there.

  A row whose keys are all masked (a False query, or no valid key) gets a zero query and every
  real key: its logits are all 0, so it attends uniformly, and no gradient reaches its query or
  the keys through it, as in `attention_weights` (cuDNN adds the mask as a bias, under which such
  a row would attend by its logits in float16). An odd length is padded by one position: the
  extra key is masked out (False in the mask, or beyond `key_lengths`, which are set to the old
  key length when not given), and the extra query row is dropped from the output.

  Raises:
    ValueError, NotImplementedError, RuntimeError: what jax's cuDNN branch raises for a
      configuration it does not take.
  """
  batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
  mask = None
  if key_mask is not None:  # With query_mask: LRA's outer-product mask, as one dense mask.
    attends = query_mask & jnp.any(key_mask, axis=1, keepdims=True)
    query = jnp.where(attends[:, :, None, None], query, jnp.zeros((), query.dtype))
    mask = jnp.where(attends[:, :, None], key_mask[:, None, :], True)

  def pad(x: Array, axis: int, value: bool = False) -> Array:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, 1)
    return jnp.pad(x, widths, constant_values=value)

  if q_len % 2:
    query = pad(query, 1)
    if mask is not None:
      mask = pad(mask, 1, True)
  if k_len % 2:
    key, value = pad(key, 1), pad(value, 1)
    if mask is not None:
      mask = pad(mask, 2)
    elif key_lengths is None:
      key_lengths = jnp.full((batch,), k_len, jnp.int32)
  out = jax.nn.dot_product_attention(
    query,
    key,
    value,
    mask=None if mask is None else mask[:, None],
    key_value_seq_lengths=key_lengths,
    implementation='cudnn',
  )
  return out[:, :q_len]


def fused_implementation(dtype: jnp.dtype) -> str:
  """'cudnn' when attention is traced for an NVIDIA GPU (the default backend, or the platform of an
  enclosing `target_platform`) and `dtype` is bfloat16 or float16 (cuDNN's flash attention takes
  only 16-bit inputs), else 'xla'. `jax.nn.dot_product_attention` itself picks XLA's
  implementation unless told otherwise (jax 0.10-0.12)."""
  platform = _TARGET_PLATFORM.get()
  if platform is None:
    platform = jax.default_backend()
    if platform == 'gpu':
      platform = 'rocm' if 'rocm' in jax.devices()[0].client.platform_version else 'cuda'
  sixteen_bit = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  return 'cudnn' if platform == 'cuda' and sixteen_bit else 'xla'


#: The platforms `target_platform` takes.
PLATFORMS = ('cuda', 'rocm', 'cpu', 'tpu')
#: The platform attention is traced for inside `target_platform` (None: the default backend's).
_TARGET_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
  'luna_jax_attention_target_platform', default=None
)


@contextlib.contextmanager
def target_platform(platform: str) -> Iterator[None]:
  """Within the block, attention is traced for `platform` ('cuda', 'rocm', 'cpu' or 'tpu') instead
  of the default backend: for compiling ahead of time for a device this process does not have,
  e.g. an NVIDIA GPU's program on a CPU host (`jax.experimental.topologies`;
  `benchmarks.gpu_compile`). Only `fused_implementation` reads it (a context variable, so in this
  thread). jax's caches of traced functions do not know of it, so they are cleared on entering and
  on leaving the block (`jax.clear_caches`): a function jitted outside is traced again inside.
  Those caches are the process's, so another thread that traces the same function meanwhile may
  get a trace made for the other platform: do not use it beside concurrent tracing.

  Raises:
    ValueError: another platform name (e.g. 'gpu', which does not say whose).
  """
  if platform not in PLATFORMS:
    raise ValueError(f'platform must be one of {PLATFORMS}, not {platform!r}.')
  jax.clear_caches()
  token = _TARGET_PLATFORM.set(platform)
  try:
    yield
  finally:
    _TARGET_PLATFORM.reset(token)
    jax.clear_caches()


def merge_heads(x: Array) -> Array:
  """`[batch, length, heads, head_dim]` -> `[batch, length, heads * head_dim]`."""
  return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def split_heads(x: Array, num_heads: int) -> Array:
  """`[batch, length, d]` -> `[batch, length, heads, d // heads]` (head i owns features
  i*dh..(i+1)*dh-1).

  Raises:
    ValueError: d not divisible by `num_heads`.
  """
  d = x.shape[-1]
  if d % num_heads:
    raise ValueError(f'feature size {d} is not divisible by {num_heads} heads.')
  return x.reshape(*x.shape[:-1], num_heads, d // num_heads)


# ----------------------------------------------------------------------------------------------
# Causal Luna attention (eq. 7).
# ----------------------------------------------------------------------------------------------


class CausalLunaState(NamedTuple):
  """Running sums of causal Luna attention after `num_steps` tokens.

  Attributes:
    key_accum: `[batch, heads, head_dim, l]` float32, sum_j k_j a_j^T.
    value_accum: `[batch, heads, l, head_dim]` float32, sum_j a_j v_j^T.
    num_steps: `[batch]` int32, tokens consumed so far (t - 1 before the next token).
  """

  key_accum: Array
  value_accum: Array
  num_steps: Array


def init_causal_state(
  batch: int, heads: int, head_dim: int, projection_length: int
) -> CausalLunaState:
  """An empty causal Luna state (no token seen yet) for a P of `projection_length` slots."""
  return CausalLunaState(
    key_accum=jnp.zeros((batch, heads, head_dim, projection_length), jnp.float32),
    value_accum=jnp.zeros((batch, heads, projection_length, head_dim), jnp.float32),
    num_steps=jnp.zeros((batch,), jnp.int32),
  )


def causal_pack_activation(
  scores: Array, omega: str = 'softplus', beta: float = SOFTPLUS_BETA
) -> Array:
  """The pack activation omega of causal Luna: softplus with sharpness beta, or elu + 1.

  Args:
    scores: float32 pack scores of any shape.
    omega: 'softplus' ((1/beta) log(1 + exp(beta z))) or 'elu' (elu(z) + 1).
    beta: softplus sharpness; the authors' default ln 2 gives log2(1 + 2^z).

  Returns:
    Positive weights with the shape of `scores`.

  Raises:
    ValueError: an unknown `omega`.
  """
  if omega == 'softplus':
    return jax.nn.softplus(beta * scores) / beta
  if omega == 'elu':
    return jax.nn.elu(scores) + 1.0
  raise ValueError(f"omega must be 'softplus' or 'elu', got {omega!r}.")


def causal_luna_step(
  state: CausalLunaState,
  pack_query: Array,
  query: Array,
  pack_key: Array,
  key: Array,
  value: Array,
  p_mask: Array | None = None,
  *,
  omega: str = 'softplus',
  beta: float = SOFTPLUS_BETA,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
) -> tuple[CausalLunaState, Array]:
  """Advances causal Luna attention by one token (incremental decoding).

  Args:
    state: the `CausalLunaState` after the previous tokens.
    pack_query: `[batch, l, heads, head_dim]` projected P (unscaled), the same at every step.
    query: `[batch, heads, head_dim]` projected query of the new token (unscaled).
    pack_key: `[batch, heads, head_dim]` pack key of the new token.
    key: `[batch, heads, head_dim]` unpack key of the new token.
    value: `[batch, heads, v_dim]` value of the new token.
    p_mask: optional `[batch, l]` bool, True for usable P slots.
    omega: pack activation, see `causal_pack_activation`.
    beta: softplus sharpness.
    dropout_rate: attention dropout on the pack weights and the unpack probabilities.
    dropout_rng: PRNG key for this step's dropout.
    deterministic: disable dropout.

  Returns:
    `(new_state, y)` with y `[batch, heads, v_dim]` in value's dtype.

  Raises:
    ValueError: an unknown `omega`, dropout on without `dropout_rng`, or a `p_mask` that is not
      bool.
  """
  check_masks(p_mask=p_mask)
  scale = query.shape[-1] ** -0.5
  f32 = jnp.float32
  t = (state.num_steps + 1).astype(f32)[:, None, None]  # [b, 1, 1]
  scores = jnp.einsum('bhd,blhd->bhl', pack_key.astype(f32), pack_query.astype(f32) * scale)
  a = causal_pack_activation(scores, omega, beta)
  pack_rng, unpack_rng = _pack_unpack_rngs(dropout_rng, dropout_rate, deterministic)
  a = dropout(a, dropout_rate, pack_rng, deterministic)
  key_accum = state.key_accum + jnp.einsum('bhd,bhl->bhdl', key.astype(f32), a)
  value_accum = state.value_accum + jnp.einsum('bhl,bhd->bhld', a, value.astype(f32))
  logits = jnp.einsum('bhd,bhdl->bhl', query.astype(f32) * scale, key_accum) / t
  if p_mask is not None:
    logits = jnp.where(p_mask[:, None, :], logits, _MASK_VALUE)
  probs = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, unpack_rng, deterministic)
  y = jnp.einsum('bhl,bhld->bhd', probs, value_accum) / t
  return CausalLunaState(key_accum, value_accum, state.num_steps + 1), y.astype(value.dtype)


def causal_luna_attention(
  pack_query: Array,
  query: Array,
  pack_key: Array,
  key: Array,
  value: Array,
  p_mask: Array | None = None,
  *,
  omega: str = 'softplus',
  beta: float = SOFTPLUS_BETA,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
  initial_state: CausalLunaState | None = None,
) -> tuple[Array, CausalLunaState]:
  """Causal Luna attention (eq. 7) as a `jax.lax.scan` over time.

  The scan carries only the per-head `l x head_dim` running sums, so the forward pass holds
  O(n*d + l*d) memory instead of the O(n*l*d) of a cumulative-sum formulation. (Reverse-mode
  differentiation of a scan stores one carry per step; the chunked form is the one for long training
  runs.)

  Args:
    pack_query: `[batch, l, heads, head_dim]` projected P (unscaled; P must not depend on X).
    query: `[batch, n, heads, head_dim]` projected unpack queries (unscaled).
    pack_key: `[batch, n, heads, head_dim]` projected pack keys.
    key: `[batch, n, heads, head_dim]` projected unpack keys.
    value: `[batch, n, heads, v_dim]` projected values.
    p_mask: optional `[batch, l]` bool, True for usable P slots.
    omega: pack activation, 'softplus' (default, beta = ln 2) or 'elu' (elu + 1).
    beta: softplus sharpness.
    dropout_rate: attention dropout on pack weights and unpack probabilities.
    dropout_rng: PRNG key (one is folded in per position).
    deterministic: disable dropout.
    initial_state: state to continue from (default: empty).

  Returns:
    `(y, final_state)` with y `[batch, n, heads, v_dim]` in value's dtype.

  Raises:
    ValueError: an unknown `omega`, dropout on without `dropout_rng`, or a `p_mask` that is not
      bool.
  """
  b, n, h, dh = query.shape
  state = initial_state
  if state is None:
    state = init_causal_state(b, h, dh, pack_query.shape[1])
  use_dropout = _dropout_on(dropout_rng, dropout_rate, deterministic)

  def body(carry, xs):
    q_t, pk_t, k_t, v_t, t = xs
    rng = jax.random.fold_in(dropout_rng, t) if use_dropout else None
    carry, y_t = causal_luna_step(
      carry,
      pack_query,
      q_t,
      pk_t,
      k_t,
      v_t,
      p_mask,
      omega=omega,
      beta=beta,
      dropout_rate=dropout_rate,
      dropout_rng=rng,
      deterministic=deterministic,
    )
    return carry, y_t

  time_major = [jnp.swapaxes(z, 0, 1) for z in (query, pack_key, key, value)]
  final_state, ys = jax.lax.scan(body, state, (*time_major, jnp.arange(n)))
  return jnp.swapaxes(ys, 0, 1), final_state


def _exclusive_cumsum(x: Array, axis: int) -> Array:
  """Sums of the elements strictly before each index along `axis` (zero first).

  Shifting the inclusive sum, rather than subtracting x from it, keeps each sum exactly
  independent of x and of everything after it (`cumsum(x) - x` is not: rounding carries x in).
  """
  sums = jnp.cumsum(x, axis=axis)
  zero = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
  return jnp.concatenate([zero, jax.lax.slice_in_dim(sums, 0, x.shape[axis] - 1, axis=axis)], axis)


def causal_luna_attention_chunked(
  pack_query: Array,
  query: Array,
  pack_key: Array,
  key: Array,
  value: Array,
  p_mask: Array | None = None,
  *,
  chunk_size: int = 64,
  omega: str = 'softplus',
  beta: float = SOFTPLUS_BETA,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
  initial_state: CausalLunaState | None = None,
) -> tuple[Array, CausalLunaState]:
  """Causal Luna attention (eq. 7) in exact chunked-parallel form.

  Eq. (7) is two nested causal linear attentions with a softmax between them, so within a chunk of C
  positions both sums split into the running sums before the chunk plus a lower-triangular matmul:
    logits = (Q K0 + tril(Q Kc^T) A) / t,   u = softmax(logits),   Y = (u V0 + tril(u A^T) Vc) / t,
  with A the chunk's pack weights and t the 1-based positions. The running sums (K0, V0) of every
  chunk are an exclusive cumulative sum of per-chunk sums, so all chunks are computed at once as
  batched matmuls: no sequential loop, memory O(n*d + (n/C)*l*d). Same function as
  `causal_luna_attention` (dropout masks are drawn differently). Causality is exact: a position's
  output is bit-identical whatever finite values the later positions hold (a NaN or inf later in
  the same chunk reaches it through the masked products, 0 * NaN; the scan form keeps it out).

  Args:
    pack_query: `[batch, l, heads, head_dim]` projected P (unscaled).
    query: `[batch, n, heads, head_dim]` unscaled unpack queries.
    pack_key: `[batch, n, heads, head_dim]` pack keys.
    key: `[batch, n, heads, head_dim]` unpack keys.
    value: `[batch, n, heads, v_dim]` values.
    p_mask: optional `[batch, l]` bool, True for usable P slots.
    chunk_size: positions per chunk; n need not be a multiple (the tail is padded and dropped).
    omega: pack activation, 'softplus' or 'elu'.
    beta: softplus sharpness.
    dropout_rate: attention dropout on pack weights and unpack probabilities.
    dropout_rng: PRNG key.
    deterministic: disable dropout.
    initial_state: state to continue from (default: empty).

  Returns:
    `(y, final_state)` with y `[batch, n, heads, v_dim]` in value's dtype.

  Raises:
    ValueError: an unknown `omega`, dropout on without `dropout_rng`, or a `p_mask` that is not
      bool.
  """
  check_masks(p_mask=p_mask)
  b, n, h, dh = query.shape
  projection_length = pack_query.shape[1]
  c = max(1, min(chunk_size, n))
  num_chunks = -(-n // c)
  pad = num_chunks * c - n
  f32 = jnp.float32
  scale = dh**-0.5
  state = (
    initial_state if initial_state is not None else init_causal_state(b, h, dh, projection_length)
  )

  def chunks(z):  # [b, n, h, e] -> [b, h, num_chunks, c, e]; padded positions are zero.
    z = jnp.pad(z.astype(f32), ((0, 0), (0, pad), (0, 0), (0, 0)))
    return z.reshape(b, num_chunks, c, h, z.shape[-1]).transpose(0, 3, 1, 2, 4)

  q, pk, k, v = chunks(query) * scale, chunks(pack_key), chunks(key), chunks(value)
  a = causal_pack_activation(
    jnp.einsum('bhnce,blhe->bhncl', pk, pack_query.astype(f32) * scale), omega, beta
  )
  pack_rng, unpack_rng = _pack_unpack_rngs(dropout_rng, dropout_rate, deterministic)
  a = dropout(a, dropout_rate, pack_rng, deterministic)
  chunk_keys = jnp.einsum('bhnce,bhncl->bhnel', k, a)
  chunk_values = jnp.einsum('bhncl,bhnce->bhnle', a, v)
  key_before = state.key_accum[:, :, None] + _exclusive_cumsum(chunk_keys, axis=2)
  value_before = state.value_accum[:, :, None] + _exclusive_cumsum(chunk_values, axis=2)
  positions = jnp.arange(1, num_chunks * c + 1, dtype=f32).reshape(num_chunks, c)
  t = (state.num_steps.astype(f32)[:, None, None] + positions)[:, None, :, :, None]
  causal = jnp.tril(jnp.ones((c, c), bool))
  qk = jnp.where(causal, jnp.einsum('bhnie,bhnje->bhnij', q, k), 0.0)
  logits = (
    jnp.einsum('bhnie,bhnel->bhnil', q, key_before) + jnp.einsum('bhnij,bhnjl->bhnil', qk, a)
  ) / t
  if p_mask is not None:
    logits = jnp.where(p_mask[:, None, None, None, :], logits, _MASK_VALUE)
  u = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, unpack_rng, deterministic)
  ua = jnp.where(causal, jnp.einsum('bhnil,bhnjl->bhnij', u, a), 0.0)
  y = (
    jnp.einsum('bhnil,bhnle->bhnie', u, value_before) + jnp.einsum('bhnij,bhnje->bhnie', ua, v)
  ) / t
  y = y.transpose(0, 2, 3, 1, 4).reshape(b, num_chunks * c, h, -1)[:, :n]
  final = CausalLunaState(
    key_before[:, :, -1] + chunk_keys[:, :, -1],
    value_before[:, :, -1] + chunk_values[:, :, -1],
    state.num_steps + n,
  )
  return y.astype(value.dtype), final
