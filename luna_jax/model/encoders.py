"""Sequence encoders: the Luna encoder (contextual P flowing layer to layer) and the official LRA
Transformer.

Both take token ids and lengths and return an `EncoderOutput`, so a config switches them by name
(`ENCODERS`); the Luna encoder also takes embeddings of the caller's (`embed=False`).
Hyper-parameters travel in one frozen `ModelConfig`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model.config import ENCODER_NAMES, REMAT, ModelConfig
from luna_jax.model.layers import (
  BERT_INIT,
  LunaEncoderLayer,
  TransformerEncoderLayer,
  sinusoidal_positions,
)
from luna_jax.model.registry import LUNA_ATTENTIONS, TRANSFORMER_ATTENTIONS

Array = jax.Array


def remat_layer(layer: type[nn.Module], remat: str, deterministic_argnum: int) -> type[nn.Module]:
  """The layer class under the `remat` choice of `ModelConfig` (`nn.remat` = `jax.checkpoint`).

  Args:
    layer: a Flax layer class.
    remat: a key of `REMAT`.
    deterministic_argnum: position of the layer's `deterministic` argument (self = 0); it is static,
      so the layer must be called with it positionally.

  Returns:
    `layer` itself for 'none', else its rematerialised version.

  Raises:
    ValueError: on an unknown `remat`.
  """
  if remat not in REMAT:
    raise ValueError(f'remat must be one of {tuple(REMAT)}, got {remat!r}.')
  if remat == 'none':
    return layer
  return nn.remat(layer, policy=REMAT[remat], static_argnums=(deterministic_argnum,))


class EncoderOutput(NamedTuple):
  """What an encoder returns.

  Attributes:
    x: `[batch, n, d]` final token states (n includes the CLS position when prepended).
    x_mask: `[batch, n]` bool, True for real tokens (and CLS).
    p: `[batch, l, d]` final packed states (Luna) or None.
    p_mask: `[batch, l]` bool, True for usable P slots (Luna) or None.
  """

  x: Array
  x_mask: Array
  p: Array | None = None
  p_mask: Array | None = None


def check_positions(config: ModelConfig, num_tokens: int, what: str = '') -> None:
  """Raises when `num_tokens` token positions do not fit the model's position table.

  A position past the table embeds as NaN (`TokenEmbedding`'s lookup fills with NaN), so every
  entry point that knows its length checks it here first, to fail with a clear error instead.

  Args:
    config: the model config (the table has `max_length` token positions, plus CLS).
    num_tokens: positions the call needs, CLS excluded.
    what: the count as the caller's user knows it (default: '<num_tokens> tokens').

  Raises:
    ValueError: when `num_tokens > config.max_length`.
  """
  if num_tokens > config.max_length:
    raise ValueError(
      f'The model has positions for {config.max_length} tokens (max_length); got '
      f'{what or f"{num_tokens} tokens"}. Rebuild the model with a larger '
      'max_length.'
    )


def length_mask(lengths: Array, size: int) -> Array:
  """`[batch]` lengths -> `[batch, size]` bool mask, True at positions < length."""
  return jnp.arange(size)[None, :] < lengths[:, None]


def nonzero_mask(tokens: Array, prepend_cls: bool) -> Array:
  """The official LRA padding mask `inputs > 0` (LRA `models/transformer/transformer.py`).

  Token 0 is masked wherever it occurs (for the pixel tasks: every black pixel); a prepended CLS
  position takes the first token's entry, as LRA's copies `src_padding_mask[:, :1]`. LRA masks
  the attention with this mask's outer product with itself (`SelfAttention.attend` with it as key
  and query mask).

  Args:
    tokens: `[batch, n]` int token ids.
    prepend_cls: whether the encoder prepends a CLS vector.

  Returns:
    `[batch, n + prepend_cls]` bool, True for attendable keys.
  """
  mask = tokens > 0
  return jnp.concatenate([mask[:, :1], mask], axis=1) if prepend_cls else mask


def zero_padding_row(init: nn.initializers.Initializer) -> nn.initializers.Initializer:
  """`init` with row 0 (the padding token's embedding) set to zero, as fairseq's
  `init_bert_params` does for `nn.Embedding(padding_idx)`."""

  def initializer(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    return init(key, shape, dtype).at[0].set(0)

  return initializer


def layer_names(cfg: ModelConfig) -> list[str]:
  """The parameter scope of each of the `num_layers` applications: `layer_<i>`, or `layer_0`
  every time with `shared_layers`."""
  return [f'layer_{0 if cfg.shared_layers else i}' for i in range(cfg.num_layers)]


class TokenEmbedding(nn.Module):
  """Token embedding, optional CLS vector and position embedding (no normalisation, no dropout).

  Attributes:
    config: the model config.
    embedding_stddev: stddev of the token (and CLS) embedding init.
    position_stddev: stddev of a learned position table init.
    cls_init_zero: initialise the CLS vector with zeros (official LRA) instead of the embedding
      init.
    zero_padding_embedding: initialise the padding token's (id 0) embedding with zeros.
    shared_embedding: an `nn.Embed` owned by a parent model, used instead of a table of this
      module's own (`ModelConfig.share_embeddings`).
  """

  config: ModelConfig
  embedding_stddev: float
  position_stddev: float
  cls_init_zero: bool = False
  zero_padding_embedding: bool = False
  shared_embedding: nn.Module | None = None

  @nn.compact
  def __call__(self, tokens: Array, lengths: Array, offset: Array | int = 0) -> tuple[Array, Array]:
    """Embeds token ids.

    Args:
      tokens: `[batch, n]` int ids.
      lengths: `[batch]` int real lengths.
      offset: position of the first token (incremental decoding), a scalar or `[batch]`.

    Returns:
      (`[batch, n', d]` embeddings, `[batch]` lengths'), with n' = n + 1 when a CLS vector is
      prepended. A traced `offset` past the table (incremental decoding) gives NaN embeddings.

    Raises:
      ValueError: a static `offset + n` exceeds `max_length` (see `check_positions`).
    """
    cfg = self.config
    if isinstance(offset, int):
      check_positions(cfg, offset + tokens.shape[1])
    d = cfg.emb_dim
    init = nn.initializers.normal(self.embedding_stddev)
    token_init = zero_padding_row(init) if self.zero_padding_embedding else init
    embed = self.shared_embedding
    if embed is None:
      embed = nn.Embed(cfg.vocab_size, d, embedding_init=token_init, name='token_embedding')
    x = embed(tokens)
    if cfg.embed_scale:
      x = x * math.sqrt(d)
    if cfg.prepend_cls:
      cls = self.param('cls', nn.initializers.zeros if self.cls_init_zero else init, (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, d)), x], axis=1)
      lengths = lengths + 1
    size = cfg.max_length + int(cfg.prepend_cls)
    positions = jnp.reshape(jnp.asarray(offset), (-1, 1)) + jnp.arange(x.shape[1])[None, :]
    if cfg.positional == 'learned':
      table = self.param(
        'position_embedding', nn.initializers.normal(self.position_stddev), (size, d)
      )
    elif cfg.positional == 'sinusoidal':
      table = sinusoidal_positions(size, d)
    else:
      raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {cfg.positional!r}.")
    position_embeddings = jnp.take(table, positions, axis=0, mode='fill', fill_value=jnp.nan)
    return (x + position_embeddings).astype(cfg.compute_dtype), lengths


def learned_p(module: nn.Module, cfg: ModelConfig, name: str = 'projected_embeddings') -> Array:
  """Declares a learned `[l, d]` P table on `module` (init N(0, d^-1/2)) and applies the MT recipe
  (sqrt(d) scale with `embed_scale`, slot sinusoid with sinusoidal positions)."""
  d, l = cfg.emb_dim, cfg.projection_length
  p = module.param(name, nn.initializers.normal(d**-0.5), (l, d))
  if cfg.embed_scale:
    p = p * math.sqrt(d)
  if cfg.positional == 'sinusoidal':
    p = p + sinusoidal_positions(l, d)
  return p.astype(cfg.compute_dtype)


class LunaEncoder(nn.Module):
  """Luna encoder: embeddings, the first P, and `num_layers` Luna layers with P flowing between
  them.

  First-layer P is a learned `[l, d]` table, init N(0, d^-1/2), shared by the batch. With
  `embedding_layernorm` (LRA/BERT recipe) it is LayerNorm-ed; with `embed_scale` and sinusoidal
  positions (MT recipe) it is scaled by sqrt(d) and gets the sinusoid of its slot index. The P mask
  is `j < length` (the CLS counted), so a short sequence never has more usable packed slots than
  tokens. Padded tokens and masked P rows are zeroed at the input (LRA recipe); they never influence
  valid outputs.

  With `contextual_p=False` (the paper's non-contextual ablation) layer i takes its own learned
  table `projected_embeddings_<i>` (prepared like the first P) instead of layer i-1's packed output
  Y_P; the returned P is the last layer's P output, LN(P_i + Y_P) post-LN (P_i + Y_P pre-LN). With
  `shared_layers` one layer (`layer_0`) is applied `num_layers` times (fairseq-apollo
  `fairseq/models/luna_lra/luna_lra_encoder.py`, `tie_layer_weights`). With `param_init='bert'` the
  token, CLS and position embeddings and every layer's Dense kernels are N(0, 0.02) and the padding
  token's row is zero (`init_bert_params`; the first P keeps N(0, d^-1/2): it is a parameter of the
  authors' LunaLRAEncoder, which that function leaves alone).

  With `embed=False` the encoder is its Luna layers over embeddings of the caller's own (image
  patches, features, another model's outputs): the first P and the layers as above, with no token
  table, CLS, positions, embedding LayerNorm or embedding dropout (their parameters are not made),
  so the config's `vocab_size` and `max_length` are unused (any length is taken).

  Attributes:
    config: the model config (a `ModelConfig`; `build_model` makes one from a mapping).
    shared_embedding: the token table of an encoder-decoder that shares its embeddings
      (`TokenEmbedding.shared_embedding`), or None.
    embed: embed token ids (True) or take embeddings (False).
  """

  config: ModelConfig
  shared_embedding: nn.Module | None = None
  embed: bool = True

  @nn.compact
  def __call__(self, tokens: Array, lengths: Array, *, deterministic: bool = True) -> EncoderOutput:
    """Encodes right-padded token ids, or with `embed=False` right-padded embeddings.

    Args:
      tokens: `[batch, n]` int token ids; with `embed=False`, `[batch, n, emb_dim]` embeddings
        (any float dtype; cast to the config's compute dtype).
      lengths: `[batch]` int number of real tokens.
      deterministic: disable dropout.

    Returns:
      `EncoderOutput` with x `[batch, n(+1), d]` (the CLS first with `prepend_cls`, token ids
      only) and p `[batch, l, d]`.

    Raises:
      ValueError: with `embed=False`, inputs that are not `[batch, n, emb_dim]`.
    """
    cfg = self.config
    d, l, dtype = cfg.emb_dim, cfg.projection_length, cfg.compute_dtype
    bert = cfg.param_init == 'bert'
    if self.embed:
      stddev = 0.02 if bert else d**-0.5
      x, lengths = TokenEmbedding(
        cfg,
        stddev,
        stddev,
        zero_padding_embedding=bert,
        shared_embedding=self.shared_embedding,
        name='embed',
      )(tokens, lengths)
      if cfg.embedding_layernorm:
        x = nn.LayerNorm(epsilon=1e-5, dtype=dtype, name='embedding_norm')(x)
      x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    elif tokens.ndim != 3 or tokens.shape[-1] != d:
      raise ValueError(
        f'LunaEncoder(embed=False) takes [batch, n, emb_dim={d}] embeddings, got shape '
        f'{tokens.shape}.'
      )
    else:
      x = tokens
    x_mask = length_mask(lengths, x.shape[1])
    p_mask = length_mask(lengths, l)
    x = jnp.where(x_mask[..., None], x, 0).astype(dtype)

    def initial_p(suffix: str = '') -> Array:
      p = jnp.broadcast_to(
        learned_p(self, cfg, 'projected_embeddings' + suffix)[None], (x.shape[0], l, d)
      )
      if cfg.embedding_layernorm:
        p = nn.LayerNorm(epsilon=1e-5, dtype=dtype, name='projected_embedding_norm' + suffix)(p)
      p = nn.Dropout(cfg.dropout_rate)(p, deterministic=deterministic)
      return jnp.where(p_mask[..., None], p, 0).astype(dtype)

    p = initial_p() if cfg.contextual_p else None
    attention = LUNA_ATTENTIONS[cfg.luna_attention_implementation](cfg)
    layer = remat_layer(LunaEncoderLayer, cfg.remat, deterministic_argnum=5)
    layers = {
      name: layer(
        num_heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim,
        normalize_before=cfg.normalize_before,
        activation=cfg.activation,
        dropout_rate=cfg.dropout_rate,
        attention_dropout_rate=cfg.attention_dropout_rate,
        activation_dropout_rate=cfg.activation_dropout_rate,
        attention_module=attention,
        ffn_kernel_init=BERT_INIT if bert else None,
        dtype=dtype,
        matmul_dtype=cfg.matmul_dtype,
        name=name,
      )
      for name in dict.fromkeys(layer_names(cfg))
    }
    for i, name in enumerate(layer_names(cfg)):
      if not cfg.contextual_p:
        p = initial_p(f'_{i}')
      x, p = layers[name](x, p, x_mask, p_mask, deterministic)
    if cfg.normalize_before:
      x = nn.LayerNorm(epsilon=1e-5, dtype=dtype, name='final_norm')(x)
      p = nn.LayerNorm(epsilon=1e-5, dtype=dtype, name='final_p_norm')(p)
    return EncoderOutput(x, x_mask, p, p_mask)


class TransformerEncoder(nn.Module):
  """The official LRA Transformer encoder (LRA `models/transformer/transformer.py`): N(0, 1)
  embeddings, zero-init CLS, sinusoidal (or N(0, 0.02) learned) positions, dropout, pre-LN blocks
  without q/k/v/out biases, final LayerNorm. `attention_implementation` swaps the attention, which
  makes the LRA baselines Linformer, Linear Transformer and Performer (`luna_jax.model.baselines`).
  `padding_mask='nonzero'` masks the attention by LRA's `inputs > 0` (`nonzero_mask`) instead of by
  length, as LRA does: the masked tokens get no attention, and their own queries attend uniformly to
  every position (their rows of the outer-product mask are all masked). The length mask also goes to
  the attention as the lengths it is made of (`SelfAttention.attend`'s `key_lengths`), which the
  fused attention hands cuDNN instead of a mask. The returned `x_mask` (what 'mean' pooling
  averages) stays the length mask, as LRA's MEAN pooling averages every position.
  `shared_layers` applies `layer_0` `num_layers` times (LRA's `tied_weights`).

  Attributes:
    config: the model config.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: Array, lengths: Array, *, deterministic: bool = True) -> EncoderOutput:
    """Encodes right-padded token ids.

    Args:
      tokens: `[batch, n]` int token ids.
      lengths: `[batch]` int number of real tokens.
      deterministic: disable dropout.

    Returns:
      `EncoderOutput` with x `[batch, n(+1), d]` and no P.
    """
    cfg = self.config
    dtype = cfg.compute_dtype
    x, lengths = TokenEmbedding(cfg, 1.0, 0.02, cls_init_zero=True, name='embed')(tokens, lengths)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    mask = length_mask(lengths, x.shape[1])
    if cfg.padding_mask == 'nonzero':
      key_mask = query_mask = nonzero_mask(tokens, cfg.prepend_cls)
      key_lengths = None
    elif cfg.padding_mask == 'lengths':
      key_mask, query_mask, key_lengths = mask, None, lengths
    else:
      raise ValueError(f"padding_mask must be 'lengths' or 'nonzero', got {cfg.padding_mask!r}.")
    attention = TRANSFORMER_ATTENTIONS[cfg.attention_implementation](cfg)
    layer = remat_layer(TransformerEncoderLayer, cfg.remat, deterministic_argnum=3)
    layers = {
      name: layer(
        num_heads=cfg.num_heads,
        qkv_dim=cfg.qkv_dim or cfg.emb_dim,
        mlp_dim=cfg.mlp_dim,
        dropout_rate=cfg.dropout_rate,
        attention_dropout_rate=cfg.attention_dropout_rate,
        activation=cfg.activation,
        attention_module=attention,
        dtype=dtype,
        matmul_dtype=cfg.matmul_dtype,
        name=name,
      )
      for name in dict.fromkeys(layer_names(cfg))
    }
    for name in layer_names(cfg):
      x = layers[name](x, key_mask, deterministic, query_mask, key_lengths)
    x = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name='final_norm')(x)
    return EncoderOutput(x, mask)


#: Encoders selectable by `config.model.name`, named in `luna_jax.model.config.ENCODER_NAMES`.
ENCODERS = dict(zip(ENCODER_NAMES, (LunaEncoder, TransformerEncoder), strict=True))
