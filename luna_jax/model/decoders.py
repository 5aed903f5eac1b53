"""Causal Luna models: the decoder-only language model and the encoder-decoder (paper §3.3, §4.2).

Decoder-only (`LunaLM`): every layer owns a learnable P (§3.3: P must carry no information about X),
runs causal Luna self-attention (eq. 7), then the FFN, post-LN. Encoder-decoder (`LunaSeq2Seq`): a
`LunaEncoder` encodes the source; decoder layer 1 takes the encoder's final P; every decoder layer
runs causal Luna self-attention with its input P, then Luna cross-attention that packs the encoder
output with that P (giving the next layer's P) and unpacks it for the target positions, then the FFN
(fairseq-apollo, `fairseq/modules/luna_layer.py`, LunaDecoderLayer).
Since P never sees target tokens, each decoder layer's P, pack queries and cross-attention
keys/values are computed once per source sentence (`init_cache`) and decoding costs O(1) time and
O(l*d) memory per token (`decode_step`).

Caches are plain pytrees whose every leaf has the batch as leading axis, so beam search can reorder
them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model import attention as attn
from luna_jax.model import kernels, objectives
from luna_jax.model.config import ModelConfig
from luna_jax.model.encoders import (
  EncoderOutput,
  LunaEncoder,
  TokenEmbedding,
  learned_p,
  length_mask,
  remat_layer,
)
from luna_jax.model.kernels import DenseParams, fused_dense
from luna_jax.model.layers import (
  OUT_INIT,
  PROJ_INIT,
  FeedForward,
  LunaAttention,
  LunaCausalAttention,
  dropout_rng,
  matmul_dtype,
)

Array = jax.Array
Cache = dict[str, Any]


def shift_right(targets: Array, bos_id: int) -> Array:
  """Decoder inputs for teacher forcing: `[batch, n]` -> `[bos, t_0, ..., t_{n-2}]`."""
  return jnp.concatenate([jnp.full_like(targets[:, :1], bos_id), targets[:, :-1]], axis=1)


class _DecoderBlock(nn.Module):
  """Shared pieces of the decoder layers: causal self-attention, norms, FFN and dropout."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    dtype = cfg.compute_dtype
    self.self_attention = LunaCausalAttention(
      features=cfg.emb_dim,
      num_heads=cfg.num_heads,
      tie_kv=cfg.tie_kv,
      attention_dropout_rate=cfg.attention_dropout_rate,
      omega=cfg.omega,
      implementation=cfg.causal_implementation,
      chunk_size=cfg.chunk_size,
      dtype=dtype,
      matmul_dtype=cfg.matmul_dtype,
    )
    self.self_attention_norm = nn.LayerNorm(epsilon=1e-5, dtype=dtype)
    self.ffn = FeedForward(
      cfg.mlp_dim,
      cfg.activation,
      cfg.activation_dropout_rate,
      dtype=dtype,
      matmul_dtype=cfg.matmul_dtype,
    )
    self.ffn_norm = nn.LayerNorm(epsilon=1e-5, dtype=dtype)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.setup_extra()

  def setup_extra(self):
    """Hook for the sub-layers between self-attention and FFN."""

  def _residual(self, norm: nn.Module, x: Array, y: Array, deterministic: bool) -> Array:
    return norm(x + self.dropout(y, deterministic=deterministic))

  def _feed_forward(self, x: Array, deterministic: bool) -> Array:
    return self._residual(self.ffn_norm, x, self.ffn(x, deterministic=deterministic), deterministic)


class LunaLMLayer(_DecoderBlock):
  """Decoder-only Luna layer: X_A = LN(X + CausalLuna(X, P)), X' = LN(X_A + FFN(X_A)), P learned."""

  def setup_extra(self):
    self.p = learned_p(self, self.config)

  def _p(self, batch: int) -> Array:
    return jnp.broadcast_to(self.p[None], (batch, *self.p.shape))

  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """`[batch, n, d]` -> `[batch, n, d]` (`deterministic` may be positional for `nn.remat`)."""
    y = self.self_attention(x, self._p(x.shape[0]), deterministic=deterministic)
    x = self._residual(self.self_attention_norm, x, y, deterministic)
    return self._feed_forward(x, deterministic)

  def init_cache(self, batch: int) -> Cache:
    """Pack queries of this layer's P and an empty causal state."""
    return {
      'pack_query': self.self_attention.project_p(self._p(batch)),
      'state': self.self_attention.init_state(batch, self.config.projection_length),
    }

  def step(self, x: Array, cache: Cache) -> tuple[Array, Cache]:
    """One token: `[batch, d]` -> (`[batch, d]`, new cache)."""
    y, state = self.self_attention.step(x, cache['pack_query'], None, cache['state'])
    x = self.self_attention_norm(x + y)
    return self._feed_forward(x, True), {**cache, 'state': state}


class LunaSeq2SeqLayer(_DecoderBlock):
  """Encoder-decoder Luna layer: causal self-attention, Luna cross-attention updating P, FFN;
  post-LN.

  With `contextual_p=False` (the non-contextual ablation, paper Table 5) the layer ignores the P it
  is given and uses a learned P table of its own (as `LunaLMLayer`), still masked with the
  encoder's P mask; the P it returns is then unused by the next layer.
  """

  def setup_extra(self):
    cfg = self.config
    if not cfg.contextual_p:
      self.p = learned_p(self, cfg)
    self.cross_attention = LunaAttention(
      features=cfg.emb_dim,
      num_heads=cfg.num_heads,
      num_pack_heads=cfg.num_pack_heads,
      tie_kv=cfg.tie_kv,
      attention_dropout_rate=cfg.attention_dropout_rate,
      dtype=cfg.compute_dtype,
      matmul_dtype=cfg.matmul_dtype,
    )
    self.cross_attention_norm = nn.LayerNorm(epsilon=1e-5, dtype=cfg.compute_dtype)
    self.p_norm = nn.LayerNorm(epsilon=1e-5, dtype=cfg.compute_dtype)

  def __call__(
    self,
    x: Array,
    p: Array,
    memory: Array,
    memory_mask: Array,
    p_mask: Array,
    deterministic: bool = True,
  ) -> tuple[Array, Array]:
    """Applies the layer with teacher forcing (`deterministic` may be positional for `nn.remat`).

    Args:
      x: `[batch, n, d]` target states.
      p: `[batch, l, d]` this layer's P (layer 1: the encoder's final P).
      memory: `[batch, m, d]` encoder output.
      memory_mask: `[batch, m]` bool, True for real source tokens.
      p_mask: `[batch, l]` bool, the encoder's P mask.
      deterministic: disable dropout.

    Returns:
      (`[batch, n, d]` new target states, `[batch, l, d]` the next layer's P).
    """
    p = self._own_p(p)
    y = self.self_attention(x, p, p_mask, deterministic=deterministic)
    x = self._residual(self.self_attention_norm, x, y, deterministic)
    y_p = self.cross_attention.pack(p, memory, memory_mask, deterministic=deterministic)
    k, v = self.cross_attention.unpack_keys_values(y_p)
    y_x = self.cross_attention.unpack(x, k, v, p_mask, deterministic=deterministic)
    x = self._residual(self.cross_attention_norm, x, y_x, deterministic)
    return self._feed_forward(x, deterministic), self._residual(self.p_norm, p, y_p, deterministic)

  def _own_p(self, p: Array) -> Array:
    """The P this layer works with: `p` itself, or its own table with `contextual_p=False`."""
    if self.config.contextual_p:
      return p
    return jnp.broadcast_to(self.p[None], p.shape).astype(p.dtype)

  def init_cache(self, p: Array, memory: Array, memory_mask: Array) -> tuple[Cache, Array]:
    """Everything target-independent for decoding, and the next layer's P."""
    p = self._own_p(p)
    y_p = self.cross_attention.pack(p, memory, memory_mask)
    key, value = self.cross_attention.unpack_keys_values(y_p)
    cache = {
      'pack_query': self.self_attention.project_p(p),
      'key': key,
      'value': value,
      'state': self.self_attention.init_state(p.shape[0], p.shape[1]),
    }
    return cache, self.p_norm(p + y_p)

  def step(self, x: Array, cache: Cache, p_mask: Array) -> tuple[Array, Cache]:
    """One token: `[batch, d]` -> (`[batch, d]`, new cache)."""
    y, state = self.self_attention.step(x, cache['pack_query'], p_mask, cache['state'])
    x = self.self_attention_norm(x + y)
    y = self.cross_attention.unpack(x[:, None], cache['key'], cache['value'], p_mask)[:, 0]
    x = self.cross_attention_norm(x + y)
    return self._feed_forward(x, True), {**cache, 'state': state}


class _TokenDecoder(nn.Module):
  """Target embedding (the config's LRA/MT recipe, no CLS), layers and the vocabulary head.

  Raises:
    ValueError: at setup, a config with `prepend_cls` (a CLS vector would take position 0 and
      shift every prediction by one).
  """

  config: ModelConfig
  #: What the trainer scores the logits with.
  objective: ClassVar[objectives.Objective] = objectives.TokenPrediction()

  def setup(self):
    cfg = self.config
    if cfg.prepend_cls:
      raise ValueError(
        f'{type(self).__name__} predicts tokens and takes no CLS vector: build it with '
        'ModelConfig(prepend_cls=False) (luna_jax.build_model does).'
      )
    stddev = cfg.emb_dim**-0.5
    self.shared_embedding = None
    if cfg.share_embeddings:
      self.shared_embedding = nn.Embed(
        cfg.vocab_size, cfg.emb_dim, embedding_init=nn.initializers.normal(stddev)
      )
    self.embed = TokenEmbedding(cfg, stddev, stddev, shared_embedding=self.shared_embedding)
    if cfg.embedding_layernorm:
      self.embedding_norm = nn.LayerNorm(epsilon=1e-5, dtype=cfg.compute_dtype)
    self.embedding_dropout = nn.Dropout(cfg.dropout_rate)
    if not cfg.share_embeddings:
      self.lm_head = DenseParams(cfg.vocab_size, kernel_init=nn.linear.default_kernel_init)
    self.setup_layers()

  def setup_layers(self):
    raise NotImplementedError

  def _embed(self, tokens: Array, offset: Array | int, deterministic: bool) -> Array:
    x, _ = self.embed(tokens, jnp.zeros(tokens.shape[:1], jnp.int32), offset)
    if self.config.embedding_layernorm:
      x = self.embedding_norm(x)
    return self.embedding_dropout(x, deterministic=deterministic)

  def _logits(self, x: Array) -> Array:
    """`[..., d]` -> `[..., vocab]` float32: the output projection, or with `share_embeddings` the
    product with the shared token table (no bias); inputs in the matmul dtype, accumulated in
    float32."""
    matmul = self.config.matmul_dtype
    if self.shared_embedding is not None:
      return kernels.tied_logits(x, self.shared_embedding.embedding, matmul)
    return kernels.dense(x, *self.lm_head(x.shape[-1]), jnp.float32, matmul)

  def _decode_step(self, tokens: Array, cache: Cache, *layer_args: Array) -> tuple[Array, Cache]:
    """`decode_step`: one input per sequence through every layer's `step` (which also takes
    `layer_args`): `[batch]` ids -> (`[batch, vocab]` logits, new cache)."""
    x = self._embed(tokens[:, None], cache['position'], True)[:, 0]
    layers = []
    for layer, layer_cache in zip(self.layers, cache['layers']):
      x, layer_cache = layer.step(x, layer_cache, *layer_args)
      layers.append(layer_cache)
    return self._logits(x), {**cache, 'position': cache['position'] + 1, 'layers': layers}


class LunaLM(_TokenDecoder):
  """Decoder-only Luna language model.

  Attributes:
    config: model hyper-parameters (`prepend_cls` must be False).
  """

  #: Batch fields passed to `__call__` (the trainer reads this).
  input_names: ClassVar[tuple[str, ...]] = ('inputs',)

  def setup_layers(self):
    layer = remat_layer(LunaLMLayer, self.config.remat, deterministic_argnum=2)
    self.layers = [layer(self.config) for _ in range(self.config.num_layers)]

  def __call__(self, inputs: Array, *, train: bool = False) -> Array:
    """`[batch, n]` ids -> `[batch, n, vocab]` float32 next-token logits (position t sees ids <=
    t)."""
    x = self._embed(inputs, 0, not train)
    for layer in self.layers:
      x = layer(x, not train)
    return self._logits(x)

  def init_cache(self, batch: int) -> Cache:
    """An empty decoding cache for `batch` sequences."""
    return {
      'position': jnp.zeros((batch,), jnp.int32),
      'layers': [layer.init_cache(batch) for layer in self.layers],
    }

  def decode_step(self, tokens: Array, cache: Cache) -> tuple[Array, Cache]:
    """Feeds one token per sequence: `[batch]` ids -> (`[batch, vocab]` logits, new cache)."""
    return self._decode_step(tokens, cache)


class _EncoderDecoder(_TokenDecoder):
  """A source encoder and a target decoder trained teacher-forced: subclasses define
  `encode(inputs, lengths, *, train)` and `decode(decoder_inputs, encoded, *, train)`.

  Attributes:
    bos_id: the token that starts every decoder input.
  """

  bos_id: int = 1
  #: Batch fields passed to `__call__` (the trainer reads this).
  input_names: ClassVar[tuple[str, ...]] = ('inputs', 'lengths', 'targets')

  def __call__(
    self, inputs: Array, lengths: Array, targets: Array, *, train: bool = False
  ) -> Array:
    """Logits for `[batch, n]` targets given `[batch, m]` sources (decoder input = targets shifted
    right)."""
    encoded = self.encode(inputs, lengths, train=train)
    return self.decode(shift_right(targets, self.bos_id), encoded, train=train)


class LunaSeq2Seq(_EncoderDecoder):
  """Encoder-decoder Luna (byte- or token-level sequence to sequence).

  Attributes:
    config: hyper-parameters of encoder and decoder (`num_layers` each; `max_length` covers source
      and target; `prepend_cls` must be False).
    bos_id: the token that starts every decoder input.
  """

  def setup_layers(self):
    self.encoder = LunaEncoder(self.config, shared_embedding=self.shared_embedding)
    layer = remat_layer(LunaSeq2SeqLayer, self.config.remat, deterministic_argnum=6)
    self.layers = [layer(self.config) for _ in range(self.config.num_layers)]

  def encode(self, inputs: Array, lengths: Array, *, train: bool = False) -> EncoderOutput:
    """`[batch, m]` source ids and `[batch]` lengths -> the encoder output (tokens and final P)."""
    return self.encoder(inputs, lengths, deterministic=not train)

  def decode(self, decoder_inputs: Array, encoded: EncoderOutput, *, train: bool = False) -> Array:
    """Teacher-forced decoding: `[batch, n]` decoder inputs -> `[batch, n, vocab]` float32
    logits."""
    x, p = self._embed(decoder_inputs, 0, not train), encoded.p
    for layer in self.layers:
      x, p = layer(x, p, encoded.x, encoded.x_mask, encoded.p_mask, not train)
    return self._logits(x)

  def init_cache(self, encoded: EncoderOutput, num_steps: int | None = None) -> Cache:
    """Per-layer P, pack queries and cross-attention keys/values for decoding, computed once (their
    size does not depend on `num_steps`, the decoding steps to come)."""
    del num_steps
    p, layers = encoded.p, []
    for layer in self.layers:
      layer_cache, p = layer.init_cache(p, encoded.x, encoded.x_mask)
      layers.append(layer_cache)
    batch = p.shape[0]
    return {'position': jnp.zeros((batch,), jnp.int32), 'p_mask': encoded.p_mask, 'layers': layers}

  def decode_step(self, tokens: Array, cache: Cache) -> tuple[Array, Cache]:
    """Feeds one decoder input per sequence: `[batch]` ids -> (`[batch, vocab]` logits, new
    cache)."""
    return self._decode_step(tokens, cache, cache['p_mask'])


class SoftmaxAttention(nn.Module):
  """Multi-head softmax attention with biased q/k/v/out projections (fairseq `MultiheadAttention`,
  the Transformer-base baseline of Table 4): inputs xavier_uniform with gain 1/sqrt(2), output
  xavier_uniform, zero biases.

  Attributes:
    features: model width d.
    num_heads: heads.
    attention_dropout_rate: dropout on the probabilities.
    dtype: dtype of the output.
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
  """

  features: int
  num_heads: int
  attention_dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  matmul_dtype: jnp.dtype | None = None

  def setup(self):
    proj = lambda init=PROJ_INIT: DenseParams(self.features, kernel_init=init)
    self.query, self.key, self.value, self.out = proj(), proj(), proj(), proj(OUT_INIT)

  def keys_values(self, context: Array) -> tuple[Array, Array]:
    """`[batch, m, d]` -> keys and values, 2 x `[batch, m, heads, dh]` (one fused matmul)."""
    k, v = fused_dense(context, [self.key, self.value], matmul_dtype(self), self.matmul_dtype)
    return attn.split_heads(k, self.num_heads), attn.split_heads(v, self.num_heads)

  def attend(
    self, x: Array, key: Array, value: Array, mask: Array, deterministic: bool = True
  ) -> Array:
    """`[batch, n, d]` queries over precomputed keys/values -> `[batch, n, d]`; `mask` bool,
    broadcastable to `[batch, n, m]`, True where a query may attend a key (float32 softmax,
    `luna_jax.model.attention.dot_product_attention`)."""
    q = attn.split_heads(
      fused_dense(x, [self.query], matmul_dtype(self), self.matmul_dtype)[0], self.num_heads
    )
    y, _ = attn.dot_product_attention(
      q,
      key,
      value,
      mask,
      dropout_rate=self.attention_dropout_rate,
      dropout_rng=dropout_rng(self, self.attention_dropout_rate, deterministic),
      deterministic=deterministic,
    )
    return fused_dense(attn.merge_heads(y), [self.out], self.dtype, self.matmul_dtype)[0]

  def __call__(self, x: Array, context: Array, mask: Array, deterministic: bool = True) -> Array:
    """Attention of `[batch, n, d]` over `[batch, m, d]` -> `[batch, n, d]`."""
    return self.attend(x, *self.keys_values(context), mask, deterministic)


class _TransformerBlock(nn.Module):
  """Post-LN sub-layers of the Transformer-base encoder and decoder (fairseq
  `TransformerEncoderLayer` / `TransformerDecoderLayer`, normalize_before False)."""

  config: ModelConfig

  def _attention(self) -> SoftmaxAttention:
    cfg = self.config
    return SoftmaxAttention(
      cfg.emb_dim,
      cfg.num_heads,
      cfg.attention_dropout_rate,
      dtype=cfg.compute_dtype,
      matmul_dtype=cfg.matmul_dtype,
    )

  def _norm(self) -> nn.Module:
    return nn.LayerNorm(epsilon=1e-5, dtype=self.config.compute_dtype)

  def _ffn(self) -> FeedForward:
    cfg = self.config
    return FeedForward(
      cfg.mlp_dim,
      cfg.activation,
      cfg.activation_dropout_rate,
      dtype=cfg.compute_dtype,
      matmul_dtype=cfg.matmul_dtype,
    )

  def _residual(self, norm: nn.Module, x: Array, y: Array, deterministic: bool) -> Array:
    return norm(x + nn.Dropout(self.config.dropout_rate)(y, deterministic=deterministic))


class TransformerSeq2SeqEncoderLayer(_TransformerBlock):
  """X' = LN(X + SelfAttn(X)); X'' = LN(X' + FFN(X'))."""

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
    """`[batch, m, d]`, `[batch, m]` bool key mask -> `[batch, m, d]` (`deterministic` may be
    positional for `nn.remat`)."""
    y = self._attention()(x, x, mask[:, None, :], deterministic)
    x = self._residual(self._norm(), x, y, deterministic)
    return self._residual(
      self._norm(), x, self._ffn()(x, deterministic=deterministic), deterministic
    )


class TransformerSeq2SeqLayer(_TransformerBlock):
  """Decoder layer: causal softmax self-attention, softmax cross-attention, FFN; post-LN."""

  def setup(self):
    self.self_attention, self.cross_attention = self._attention(), self._attention()
    self.self_attention_norm, self.cross_attention_norm = self._norm(), self._norm()
    self.ffn, self.ffn_norm = self._ffn(), self._norm()
    self.dropout = nn.Dropout(self.config.dropout_rate)

  def _residual(self, norm: nn.Module, x: Array, y: Array, deterministic: bool) -> Array:
    return norm(x + self.dropout(y, deterministic=deterministic))

  def __call__(
    self, x: Array, memory: Array, memory_mask: Array, deterministic: bool = True
  ) -> Array:
    """Teacher forcing: `[batch, n, d]` targets over `[batch, m, d]` encoder output (`[batch, m]`
    mask) -> `[batch, n, d]`."""
    n = x.shape[1]
    causal = jnp.tril(jnp.ones((n, n), bool))[None]
    x = self._residual(
      self.self_attention_norm, x, self.self_attention(x, x, causal, deterministic), deterministic
    )
    y = self.cross_attention(x, memory, memory_mask[:, None, :], deterministic)
    x = self._residual(self.cross_attention_norm, x, y, deterministic)
    return self._residual(self.ffn_norm, x, self.ffn(x, deterministic=deterministic), deterministic)

  def init_cache(self, memory: Array, num_steps: int) -> Cache:
    """Cross-attention keys/values of the encoder output and empty self-attention keys/values for
    `num_steps` positions."""
    key, value = self.cross_attention.keys_values(memory)
    shape = (memory.shape[0], num_steps, *key.shape[2:])
    return {
      'key': key,
      'value': value,
      'self_key': jnp.zeros(shape, key.dtype),
      'self_value': jnp.zeros(shape, value.dtype),
    }

  def step(
    self, x: Array, cache: Cache, memory_mask: Array, position: Array
  ) -> tuple[Array, Cache]:
    """One token at `[batch]` positions: `[batch, d]` -> (`[batch, d]`, new cache); NaN rows at a
    position past the cache (whose write would be dropped)."""
    key, value = self.self_attention.keys_values(x[:, None])
    rows = jnp.arange(x.shape[0])
    self_key = cache['self_key'].at[rows, position].set(key[:, 0])
    self_value = cache['self_value'].at[rows, position].set(value[:, 0])
    seen = (jnp.arange(self_key.shape[1])[None] <= position[:, None])[:, None, :]
    x = self.self_attention_norm(
      x + self.self_attention.attend(x[:, None], self_key, self_value, seen)[:, 0]
    )
    y = self.cross_attention.attend(
      x[:, None], cache['key'], cache['value'], memory_mask[:, None, :]
    )
    x = self.cross_attention_norm(x + y[:, 0])
    x = self.ffn_norm(x + self.ffn(x))
    x = jnp.where((position < self_key.shape[1])[:, None], x, jnp.nan)
    return x, {**cache, 'self_key': self_key, 'self_value': self_value}


class TransformerSeq2Seq(_EncoderDecoder):
  """The softmax Transformer encoder-decoder (Transformer-base with the config's sizes; the
  baseline row of the paper's Table 4): fairseq's `transformer_wmt_en_de`, post-LN, with the same
  embeddings, output projection, objective and decoding interface as `LunaSeq2Seq`.

  Decoding caches every past key and value of the self-attention (O(n*d) memory per layer and
  O(n) time per token, the cost Luna's O(l*d) cache avoids).

  Attributes:
    config: hyper-parameters (`num_layers` each for encoder and decoder).
    bos_id: the token that starts every decoder input.
  """

  def setup_layers(self):
    cfg = self.config
    stddev = cfg.emb_dim**-0.5
    self.source_embed = TokenEmbedding(cfg, stddev, stddev, shared_embedding=self.shared_embedding)
    if cfg.embedding_layernorm:
      self.source_embedding_norm = nn.LayerNorm(epsilon=1e-5, dtype=cfg.compute_dtype)
    encoder_layer = remat_layer(TransformerSeq2SeqEncoderLayer, cfg.remat, deterministic_argnum=3)
    self.encoder_layers = [encoder_layer(cfg) for _ in range(cfg.num_layers)]
    layer = remat_layer(TransformerSeq2SeqLayer, cfg.remat, deterministic_argnum=4)
    self.layers = [layer(cfg) for _ in range(cfg.num_layers)]

  def encode(self, inputs: Array, lengths: Array, *, train: bool = False) -> EncoderOutput:
    """`[batch, m]` source ids and `[batch]` lengths -> the encoder output (no P)."""
    x, _ = self.source_embed(inputs, lengths)
    if self.config.embedding_layernorm:
      x = self.source_embedding_norm(x)
    x = self.embedding_dropout(x, deterministic=not train)
    mask = length_mask(lengths, inputs.shape[1])
    for layer in self.encoder_layers:
      x = layer(x, mask, not train)
    return EncoderOutput(x, mask)

  def decode(self, decoder_inputs: Array, encoded: EncoderOutput, *, train: bool = False) -> Array:
    """Teacher-forced decoding: `[batch, n]` decoder inputs -> `[batch, n, vocab]` float32
    logits."""
    x = self._embed(decoder_inputs, 0, not train)
    for layer in self.layers:
      x = layer(x, encoded.x, encoded.x_mask, not train)
    return self._logits(x)

  def init_cache(self, encoded: EncoderOutput, num_steps: int | None = None) -> Cache:
    """Cross-attention keys/values, computed once, and room for `num_steps` (default
    `max_length`) self-attention keys/values per layer; a step past them gives NaN logits.

    Raises:
      ValueError: `num_steps` < 1.
    """
    steps = self.config.max_length if num_steps is None else num_steps
    if steps < 1:
      raise ValueError(f'num_steps={steps}: the cache needs room for at least one step.')
    layers = [layer.init_cache(encoded.x, steps) for layer in self.layers]
    batch = encoded.x.shape[0]
    return {
      'position': jnp.zeros((batch,), jnp.int32),
      'memory_mask': encoded.x_mask,
      'layers': layers,
    }

  def decode_step(self, tokens: Array, cache: Cache) -> tuple[Array, Cache]:
    """Feeds one decoder input per sequence: `[batch]` ids -> (`[batch, vocab]` logits, new
    cache)."""
    return self._decode_step(tokens, cache, cache['memory_mask'], cache['position'])
