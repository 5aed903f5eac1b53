"""The XLA speed kernels under the model: dropout masks, bias adds, matmuls, GELU and LayerNorm
written the way XLA's CPU compiler runs fastest, each equal in value (and gradient) to the plain
formula it replaces, which its docstring names.

  threefry2x32, dropout_keep_mask, dropout   16-bit dropout masks from one fused Threefry pass
  add_bias, linear                           bias adds and matmuls whose gradients are matmuls
  mixed_einsum, float32_einsum               bfloat16-input, float32-accumulating matmuls whose
                                             backward matmuls take bfloat16 inputs too
  exact_gelu                                 erf GELU with a hand-written derivative
  LayerNorm                                  `nn.LayerNorm` with its reductions as matrix-vector
                                             products
  project, dense, tied_logits                matmuls of parameters under a precision policy
  DenseParams, stacked_params, fused_dense   several `nn.Dense` projections of one input as one
                                             matmul, with one `nn.Dense` entry each in the tree

The attention math (`luna_jax.model.attention`) and the layers (`luna_jax.model.layers`) build on
these; nothing here is specific to Luna.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = jnp.dtype

F32 = jnp.float32

#: Random bits per element of a dropout mask.
_DROPOUT_BITS = 16


#: Threefry-2x32 rotation constants, rounds 1-4 and 5-8 (Salmon et al., 2011, Table 4).
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key_1: Array, key_2: Array, x_1: Array, x_2: Array) -> tuple[Array, Array]:
  """The Threefry-2x32 hash with 20 rounds (Salmon et al., "Parallel random numbers: as easy as
  1, 2, 3", SC 2011), bit for bit `jax.extend.random.threefry2x32_p`.

  Written out round by round so that XLA fuses the whole hash into one element-wise pass; JAX's
  CPU lowering of `threefry2x32_p` runs the rounds as a 5-iteration while loop, one pass over
  memory (and a copy of the loop state) per iteration, about 4x slower on a 1M-element mask.

  Args:
    key_1, key_2: uint32 key words (scalars or broadcastable to the counts).
    x_1, x_2: uint32 counter words, the same shape.

  Returns:
    The two uint32 output words, shaped like `x_1`.
  """
  keys = (key_1, key_2, key_1 ^ key_2 ^ np.uint32(0x1BD11BDA))
  x_1, x_2 = x_1 + keys[0], x_2 + keys[1]
  for i in range(5):
    for rotation in _THREEFRY_ROTATIONS[i % 2]:
      x_1 = x_1 + x_2
      x_2 = ((x_2 << np.uint32(rotation)) | (x_2 >> np.uint32(32 - rotation))) ^ x_1
    x_1 = x_1 + keys[(i + 1) % 3]
    x_2 = x_2 + keys[(i + 2) % 3] + np.uint32(i + 1)
  return x_1, x_2


def dropout_keep_mask(rng: Array, rate: float, shape: tuple[int, ...]) -> Array:
  """A bool keep mask, P(True) = 1 - rate rounded to a multiple of 2^-16 (so within 2^-17).

  Each element compares 16 random bits against an integer threshold. One Threefry-2x32 hash
  (`threefry2x32`, the hash of JAX's default generator) gives two 32-bit words, so four elements
  share a hash where `jax.random.bits` hashes once per element; the words are split in one
  element-wise pass (no concatenation). The hash key is drawn from `rng` itself, so any PRNG
  implementation's key works.

  Args:
    rng: PRNG key.
    rate: probability of dropping, in (0, 1).
    shape: mask shape.

  Returns:
    `shape` bool, True where an element is kept.
  """
  size = math.prod(shape)
  quarter = -(-size // 4)
  key_1, key_2 = jax.random.bits(rng, (2,), jnp.uint32)
  counts = jnp.arange(quarter, dtype=jnp.uint32)
  words = threefry2x32(key_1, key_2, counts, jnp.zeros_like(counts))
  # Element j * quarter + i takes the high (even j) or low (odd j) half of word j // 2 of hash i.
  j = jax.lax.broadcasted_iota(jnp.uint32, (4, quarter), 0)
  word = jnp.where(j < 2, words[0][None], words[1][None])
  halves = (word >> ((np.uint32(1) - j % 2) * np.uint32(16))) & np.uint32(0xFFFF)
  threshold = np.uint32(round((1.0 - rate) * 2.0**_DROPOUT_BITS))
  return (halves.reshape(-1)[:size] < threshold).reshape(shape)


def dropout(x: Array, rate: float, rng: Array | None, deterministic: bool) -> Array:
  """Inverted dropout; the identity when `deterministic` or `rate == 0`.

  Args:
    x: any array.
    rate: probability of zeroing an element, in [0, 1).
    rng: PRNG key, required when not deterministic and rate > 0.
    deterministic: disable dropout.

  Returns:
    An array like `x`.

  Raises:
    ValueError: dropout on without `rng`.
  """
  if deterministic or rate == 0.0:
    return x
  if rng is None:
    raise ValueError('dropout needs an rng when deterministic=False and rate > 0.')
  return apply_keep_mask(x, dropout_keep_mask(rng, rate, x.shape), rate)


def apply_keep_mask(x: Array, keep: Array, rate: float) -> Array:
  """`x` where `keep`, scaled by 1 / (1 - rate); zero elsewhere (inverted dropout)."""
  return jnp.where(keep, x * np.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))


@jax.custom_vjp
def add_bias(y: Array, bias: Array) -> Array:
  """`y + bias` (bias broadcast over the leading axes) whose bias gradient is a matmul.

  Autodiff's bias gradient is a sum of the output gradient over every leading axis, which XLA's CPU
  compiler splits into slow windowed partial sums (`reduce-window`); here it is `1^T G` with G the
  gradient as rows, one matrix-vector product (in float32, cast back to the bias dtype).

  Args:
    y: `[..., f]`.
    bias: `[f]`.

  Returns:
    `[..., f]`, dtype of `y + bias`.
  """
  return y + bias


def _add_bias_fwd(y: Array, bias: Array) -> tuple[Array, Array]:
  return y + bias, jnp.zeros((0,), bias.dtype)


def _add_bias_bwd(bias_like: Array, g: Array) -> tuple[Array, Array]:
  rows = g.reshape(-1, g.shape[-1])
  ones = jnp.ones((rows.shape[0],), rows.dtype)
  bias_grad = jnp.dot(ones, rows, preferred_element_type=jnp.float32)
  return g, bias_grad.astype(bias_like.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def linear(x: Array, kernel: Array, bias: Array | None = None) -> Array:
  """`x kernel + bias` over the last axis, as one 2-D matmul on the rows of x.

  Flattening the leading axes first lets XLA's CPU compiler run the weight gradient `X^T G` as one
  matmul with no transposing copy (a contraction over two leading axes is first transposed), and
  `add_bias` makes the bias gradient a matmul too. The result equals `nn.Dense`'s (same dot, same
  bias add) in values and gradients.

  Args:
    x: `[..., in]`.
    kernel: `[in, out]`, the dtype of x.
    bias: optional `[out]`.

  Returns:
    `[..., out]`.
  """
  y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])
  return y if bias is None else add_bias(y, bias)


#: The 16-bit float dtypes: a matmul of two such inputs accumulates in float32 (`float32_einsum`).
_HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def mixed_einsum(spec: str, a: Array, b: Array, matmul_dtype: Dtype) -> Array:
  """`jnp.einsum(spec, a, b)` as a TPU's default-precision matmul: both inputs rounded to
  `matmul_dtype` (bfloat16), products accumulated in float32, a float32 result.

  The backward pass does the same: its two matmuls (the einsums `out,b->a` and `a,out->b`) take
  the output gradient rounded to `matmul_dtype` and the saved rounded inputs, accumulate in float32
  and return each input's gradient in that input's dtype (a float32 kernel gets a float32
  gradient, never rounded). Autodiff of the forward alone would pair a float32 gradient with a
  bfloat16 operand, a mixed-dtype matmul that XLA runs in float32 on a GPU, and would round the
  gradient of a kernel cast outside the matmul to bfloat16. The saved residuals are the rounded
  inputs. `'ij,jk->ik'` is the 2-D matmul of the projections (`project`); the batched attention
  matmuls reach it through `float32_einsum`.

  Args:
    spec: a two-operand einsum with an explicit output, `'<a>,<b>-><out>'`, each index a letter
      named once per operand, and each index of an operand in the other operand or the output.
    a: the first operand, any float dtype.
    b: the second operand, any float dtype.
    matmul_dtype: the dtype the inputs (and, in the backward, the output gradient) are rounded to.

  Returns:
    The einsum, float32.

  Raises:
    ValueError: for a spec outside that form.
  """
  return _mixed_einsum_fwd(spec, a, b, matmul_dtype)[0]


def _einsum_names(spec: str) -> tuple[str, str, str]:
  """The index names `(a, b, out)` of a `mixed_einsum` spec `'<a>,<b>-><out>'`.

  Raises:
    ValueError: for a spec outside that form (see `mixed_einsum`).
  """
  inputs, arrow, out = spec.replace(' ', '').partition('->')
  operands = inputs.split(',')
  if (
    not arrow
    or len(operands) != 2
    or not all(name.isalpha() and len(set(name)) == len(name) for name in (*operands, out))
    or not set(operands[0]) <= set(operands[1] + out)
    or not set(operands[1]) <= set(operands[0] + out)
  ):
    raise ValueError(
      f"mixed_einsum takes '<a>,<b>-><out>' with each index named once per operand and each "
      f'index of an operand in the other or the output; got {spec!r}.'
    )
  return operands[0], operands[1], out


def _gradient_matmul(result: str, x: tuple[str, Array], y: tuple[str, Array]) -> Array:
  """The einsum of two `(names, array)` operands into `result`, float32-accumulated, with first the
  operand that holds the result's first free index (one the other operand lacks).

  `dot_general`'s output (batch, first operand's free, second operand's free indices) is then in
  the result's order, and XLA's CPU compiler contracts the first operand over its last axis, the
  form of its bfloat16 matmul kernel; the other order (the attention's key gradient as
  `'bqhd,bhqk->bkhd'`) becomes a dot with a transposed first operand, which XLA's CPU runtime runs
  with a kernel that has no bfloat16 x bfloat16 -> float32 case ("Unsupported element type for
  DotThunk").
  """
  free = [name for name in result if (name in x[0]) != (name in y[0])]
  if free and free[0] in y[0]:
    x, y = y, x
  return jnp.einsum(f'{x[0]},{y[0]}->{result}', x[1], y[1], preferred_element_type=F32)


def _mixed_einsum_fwd(spec: str, a: Array, b: Array, matmul_dtype: Dtype):
  _einsum_names(spec)
  am, bm = a.astype(matmul_dtype), b.astype(matmul_dtype)
  y = jnp.einsum(spec, am, bm, preferred_element_type=F32)
  return y, (am, bm, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _mixed_einsum_bwd(
  spec: str, matmul_dtype: Dtype, residuals: tuple[Array, ...], g: Array
) -> tuple[Array, Array]:
  am, bm, a_like, b_like = residuals
  a, b, out = _einsum_names(spec)
  g = g.astype(matmul_dtype)
  da = _gradient_matmul(a, (out, g), (b, bm))
  db = _gradient_matmul(b, (a, am), (out, g))
  return da.astype(a_like.dtype), db.astype(b_like.dtype)


mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def float32_einsum(spec: str, a: Array, b: Array) -> Array:
  """`jnp.einsum(spec, a, b)` accumulated in float32, a float32 result: the attention's batched
  matmuls (`luna_jax.model.attention`, the decoders' softmax attention).

  Two inputs of one 16-bit dtype (bfloat16 or float16) go through `mixed_einsum`, whose backward
  matmuls take 16-bit operands on both sides too (autodiff would pair the float32 output gradient
  with them); any other inputs (float32 ones) take the plain `jnp.einsum` with
  `preferred_element_type=float32` and autodiff's backward.

  Args:
    spec: a two-operand einsum with an explicit output (see `mixed_einsum`).
    a: the first operand.
    b: the second operand.

  Returns:
    The einsum, float32.

  Raises:
    ValueError: for 16-bit inputs and a spec `mixed_einsum` does not take.
  """
  if a.dtype == b.dtype and a.dtype in _HALF_DTYPES:
    return mixed_einsum(spec, a, b, a.dtype)
  return jnp.einsum(spec, a, b, preferred_element_type=F32)


@jax.custom_vjp
def exact_gelu(x: Array) -> Array:
  """Exact (erf) GELU, `x * Phi(x) = x (1 + erf(x / sqrt(2))) / 2` (Hendrycks & Gimpel, 2016).

  The erf form of PyTorch's `F.gelu` (the authors' activation); it matches `jax.nn.gelu(x,
  approximate=False)` (an erfc form) to float rounding, and the erf is cheaper than the erfc on CPU.
  The backward keeps only `x` and evaluates the derivative `Phi(x) + x * phi(x)` from it, where
  autodiff keeps x, the CDF and the erf derivative: the FFN's backward holds one `[..., mlp_dim]`
  array per layer fewer (XLA recomputes the activation that the second matmul's gradient needs).

  Args:
    x: any float array.

  Returns:
    An array like `x`.
  """
  return x * _normal_cdf(x)


def _normal_cdf(x: Array) -> Array:
  return 0.5 + 0.5 * jax.lax.erf(x * np.asarray(math.sqrt(0.5), x.dtype))


def _exact_gelu_fwd(x: Array) -> tuple[Array, Array]:
  return exact_gelu(x), x


def _exact_gelu_bwd(x: Array, g: Array) -> tuple[Array]:
  pdf = jnp.exp(-0.5 * jnp.square(x)) * np.asarray(1.0 / math.sqrt(2.0 * math.pi), x.dtype)
  return (g * (_normal_cdf(x) + x * pdf),)


exact_gelu.defvjp(_exact_gelu_fwd, _exact_gelu_bwd)


def _row_mean(x: Array) -> Array:
  """Mean over the last axis as a matrix-vector product `[rows, d] @ [d]` (keepdims).

  XLA's CPU compiler splits a plain sum over a long axis into slow windowed partial sums
  (`reduce-window`); a dot runs as one matrix-vector product, and its transpose is a broadcast.
  """
  d = x.shape[-1]
  mean = jnp.dot(x.reshape(-1, d), jnp.full((d,), 1.0 / d, x.dtype))
  return mean.reshape(*x.shape[:-1], 1)


@jax.custom_vjp
def _scale_shift(x_hat: Array, scale: Array, bias: Array) -> Array:
  """`x_hat * scale + bias`; the scale and bias gradients are matrix-vector products over rows."""
  return x_hat * scale + bias


def _scale_shift_fwd(x_hat: Array, scale: Array, bias: Array) -> tuple[Array, tuple[Array, Array]]:
  return x_hat * scale + bias, (x_hat, scale)


def _scale_shift_bwd(residuals: tuple[Array, Array], g: Array) -> tuple[Array, Array, Array]:
  x_hat, scale = residuals
  d = g.shape[-1]
  ones = jnp.ones((g.size // d,), g.dtype)
  column_sum = lambda z: jnp.dot(ones, z.reshape(-1, d))
  return g * scale, column_sum(g * x_hat), column_sum(g)


_scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


class LayerNorm(nn.Module):
  """`nn.LayerNorm` (same parameters `scale` and `bias`, same initial values, same function) with
  its reductions as matrix-vector products, which XLA runs faster on CPU.

  `y = (x - mean) / sqrt(var + epsilon) * scale + bias` over the last axis, statistics in float32
  (two passes: the variance of the centred x).

  Attributes:
    epsilon: added to the variance.
    dtype: output dtype.
    param_dtype: parameter dtype.
  """

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`[..., d]` -> `[..., d]` in `dtype`."""
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (d,), self.param_dtype)
    f32 = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(f32)
    centred = x - _row_mean(x)
    x_hat = centred * jax.lax.rsqrt(_row_mean(centred * centred) + self.epsilon)
    return _scale_shift(x_hat, scale.astype(f32), bias.astype(f32)).astype(self.dtype)


class DenseParams(nn.Module):
  """The parameters of one `nn.Dense` (same names, shapes and initial values), not applied.

  Several projections of one input then run as a single matmul (`fused_dense`) while the parameter
  tree, and so every checkpoint, keeps one `nn.Dense`-shaped entry per projection.

  Attributes:
    features: output width.
    use_bias: declare a bias.
    kernel_init: kernel initialiser.
    bias_init: bias initialiser.
    param_dtype: parameter dtype.
  """

  features: int
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[Array, Array | None]:
    """Returns `(kernel [in_features, features], bias [features] or None)`."""
    kernel = self.param('kernel', self.kernel_init, (in_features, self.features), self.param_dtype)
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    return kernel, bias


def stacked_params(
  projections: Sequence[DenseParams], in_features: int
) -> tuple[Array, Array | None]:
  """The kernels (and biases) of several projections side by side, in the parameters' dtype.

  Args:
    projections: `DenseParams` modules (all with or all without bias).
    in_features: their input width.

  Returns:
    `(kernel [in_features, sum of features], bias [sum of features] or None)`.
  """
  params = [projection(in_features) for projection in projections]
  kernel = jnp.concatenate([k for k, _ in params], axis=1)
  bias = None if params[0][1] is None else jnp.concatenate([b for _, b in params])
  return kernel, bias


def is_mixed(kernel: Array, matmul_dtype: Dtype | None) -> bool:
  """Whether a matmul with this (parameter-dtype) kernel takes the mixed-precision path: a
  `matmul_dtype` is given and differs from the kernel's dtype."""
  return matmul_dtype is not None and jnp.dtype(matmul_dtype) != kernel.dtype


def project(
  x: Array, kernel: Array, bias: Array | None, dtype: Dtype, matmul_dtype: Dtype | None = None
) -> Array:
  """`x kernel + bias` over the last axis from parameters in their own dtype, under a precision
  policy (`luna_jax.model.config.PRECISIONS`).

  Mixed precision (`is_mixed`: bfloat16 under both bfloat16 policies): `mixed_einsum` rounds x and
  the kernel to `matmul_dtype`, accumulates in float32 and runs the backward's matmuls in bfloat16
  too, returning float32 kernel gradients; the bias is added in float32 and the sum rounded once
  to `dtype`: a TPU's default matmul precision, what Tay et al.'s LRA runs used. Otherwise (the
  float32 policy) x, the kernel and the bias are cast to `dtype` (`nn.Dense` numerics) and
  multiplied by `linear`.

  Args:
    x: `[..., in]`.
    kernel: `[in, out]`.
    bias: optional `[out]`.
    dtype: output dtype (and the matmul dtype when `matmul_dtype` is None).
    matmul_dtype: dtype the matmul inputs are rounded to; None: `dtype`.

  Returns:
    `[..., out]` in `dtype`.
  """
  if is_mixed(kernel, matmul_dtype):
    y = mixed_einsum('ij,jk->ik', x.reshape(-1, x.shape[-1]), kernel, jnp.dtype(matmul_dtype))
    y = y.reshape(*x.shape[:-1], kernel.shape[-1])
    return (y if bias is None else add_bias(y, bias.astype(F32))).astype(dtype)
  kernel = nn.dtypes.promote_dtype(kernel, dtype=matmul_dtype or dtype)[0]
  bias = None if bias is None else nn.dtypes.promote_dtype(bias, dtype=dtype)[0]
  return linear(nn.dtypes.promote_dtype(x, dtype=kernel.dtype)[0], kernel, bias).astype(dtype)


def tied_logits(x: Array, embedding: Array, matmul_dtype: Dtype) -> Array:
  """`x embedding^T` over the last axis, float32: the logits of an output layer tied to a
  `[vocab, d]` token embedding, under a precision policy (`project`'s mixed path when
  `matmul_dtype` is not the embedding's dtype)."""
  if is_mixed(embedding, matmul_dtype):
    return project(x, embedding.T, None, F32, matmul_dtype)
  return jnp.einsum('...d,vd->...v', x, embedding, preferred_element_type=F32)


def dense(
  x: Array, kernel: Array, bias: Array | None, dtype: Dtype, matmul_dtype: Dtype | None = None
) -> Array:
  """`nn.Dense`'s computation on given parameters (a contraction over x's last axis, float32
  accumulation, the bias broadcast), or `project`'s mixed path under a mixed policy: the output
  layers that were `nn.Dense` modules keep their float32 numerics bit for bit.

  Args:
    x: `[..., in]`.
    kernel: `[in, out]`.
    bias: optional `[out]`.
    dtype: output dtype.
    matmul_dtype: dtype the matmul inputs are rounded to; None: `dtype`.

  Returns:
    `[..., out]` in `dtype`.
  """
  if is_mixed(kernel, matmul_dtype):
    return project(x, kernel, bias, dtype, matmul_dtype)
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=matmul_dtype or dtype)
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  y = jax.lax.dot_general(x, kernel, dims, preferred_element_type=F32)
  y = y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
  return y.astype(dtype)


def fused_dense(
  x: Array, projections: Sequence[DenseParams], dtype: Dtype, matmul_dtype: Dtype | None = None
) -> list[Array]:
  """Applies several Dense projections of the same input as one matmul `x [W_1 | W_2 | ...]`
  (`project`, under the precision policy its dtypes name).

  The same function as applying each projection on its own (`nn.Dense` numerics in float32); one
  wide matmul reads `x` once and runs faster, and `linear` keeps its gradients free of transposing
  copies and windowed reductions.

  Args:
    x: `[..., in]`.
    projections: `DenseParams` modules (all with or all without bias).
    dtype: output dtype (and the matmul dtype when `matmul_dtype` is None).
    matmul_dtype: dtype the matmul inputs are rounded to; None: `dtype`.

  Returns:
    One `[..., features_i]` array per projection, in `dtype`.
  """
  y = project(x, *stacked_params(projections, x.shape[-1]), dtype, matmul_dtype)
  if len(projections) == 1:
    return [y]
  splits = np.cumsum([projection.features for projection in projections])[:-1]
  return jnp.split(y, splits, axis=-1)
