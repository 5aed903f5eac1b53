"""The attention registry: `config.model.attention_implementation` names -> the self-attention
module the LRA Transformer block builds.

  softmax    `luna_jax.layers.SelfAttention`, einsum softmax attention (the reference)
  fused      `luna_jax.layers.SelfAttention` through `jax.nn.dot_product_attention`
  linformer, linear, performer
             the baselines of `luna_jax.baselines`
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from luna_jax.baselines import LinearSelfAttention, LinformerSelfAttention, PerformerSelfAttention
from luna_jax.layers import SelfAttention

#: Values of `attention_implementation` (`ModelConfig`, config.model) for the LRA Transformer block.
ATTENTIONS = ('softmax', 'fused', 'linformer', 'linear', 'performer')


def self_attention_module(
  implementation: str,
  *,
  max_length: int | None = None,
  low_rank_features: int = 16,
  nb_features: int = 256,
  redraw_features: bool = False,
) -> Callable[..., nn.Module]:
  """The self-attention constructor of an `attention_implementation` name.

  Args:
    implementation: one of `ATTENTIONS`.
    max_length: Linformer's fixed length (the encoder's sequence length, CLS included).
    low_rank_features: Linformer's projected length.
    nb_features: Performer's number of random features.
    redraw_features: Performer: a new projection at every training step.

  Returns:
    A callable taking `SelfAttention`'s fields (num_heads, qkv_dim, attention_dropout_rate, dtype,
    param_dtype, name) and returning the module.

  Raises:
    ValueError: an unknown `implementation`, naming the known ones.
  """
  if implementation in ('softmax', 'fused'):
    return functools.partial(SelfAttention, implementation=implementation)
  if implementation == 'linformer':
    return functools.partial(
      LinformerSelfAttention, max_length=max_length, low_rank_features=low_rank_features
    )
  if implementation == 'linear':
    return LinearSelfAttention
  if implementation == 'performer':
    return functools.partial(
      PerformerSelfAttention, nb_features=nb_features, redraw_features=redraw_features
    )
  raise ValueError(f'attention_implementation must be one of {ATTENTIONS}, got {implementation!r}.')
