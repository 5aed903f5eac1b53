"""The attention registries: a `config.model` name -> the attention module a layer builds.

Each entry is a builder: it takes the `ModelConfig` (`luna_jax.model.config`), reads the fields its
attention needs, and returns the module's constructor, which the layer then calls with the fields
every attention of its side shares.

Transformer side (`attention_implementation`; `TransformerEncoderLayer` adds num_heads, qkv_dim,
attention_dropout_rate, dtype, matmul_dtype, param_dtype, name):

  softmax    `SelfAttention`, einsum softmax attention (the reference)
  fused      `SelfAttention` through `jax.nn.dot_product_attention`
  linformer  `LinformerSelfAttention` (low_rank_features; the encoder's length)
  linear     `LinearSelfAttention` (elu + 1 features)
  performer  `PerformerSelfAttention` (nb_features, redraw_features)

Luna side (`luna_attention_implementation`; `LunaEncoderLayer` adds features, num_heads,
attention_dropout_rate, dtype, matmul_dtype, param_dtype, name):

  luna       `LunaAttention`, pack and unpack softmax attention (eqs. 3-5; num_pack_heads, tie_kv)

A new attention is its class, one line here and, with a hyper-parameter, one `ModelConfig` field
(with its rule) and its default in `configs/base.py`; a variant name for the task configs and the
benchmark is one entry of `configs/variants.py`, and the benchmark's MFU needs its FLOPs in
`benchmarks/model_flops.py`. The dicts are read when a model is built: an entry added from one's
own code before that (`TRANSFORMER_ATTENTIONS['mine'] = builder`) is a valid config value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn

from luna_jax.model.baselines import (
  LinearSelfAttention,
  LinformerSelfAttention,
  PerformerSelfAttention,
)
from luna_jax.model.layers import LunaAttention, SelfAttention

if TYPE_CHECKING:
  from luna_jax.model.config import ModelConfig

#: A builder: the model config -> the constructor of one attention module.
Builder = Callable[['ModelConfig'], Callable[..., nn.Module]]

#: `attention_implementation` -> the LRA Transformer block's self-attention.
TRANSFORMER_ATTENTIONS: dict[str, Builder] = {
  'softmax': lambda cfg: functools.partial(SelfAttention, implementation='softmax'),
  'fused': lambda cfg: functools.partial(SelfAttention, implementation='fused'),
  'linformer': LinformerSelfAttention.from_config,
  'linear': lambda cfg: LinearSelfAttention,
  'performer': PerformerSelfAttention.from_config,
}

#: `luna_attention_implementation` -> the Luna layer's pack-and-unpack attention.
LUNA_ATTENTIONS: dict[str, Builder] = {
  'luna': LunaAttention.from_config,
}
