"""Model FLOPs of the LRA classifiers from their settings: the numerator of the model FLOPs
utilisation (MFU), counted from the config, not from what XLA happens to compile.

Only matmuls count, each `[m, k] @ [k, n]` as `2 m k n` FLOPs (a multiply-add is 2 FLOPs), the
convention of the MFU literature (Chowdhery et al., 2022, "PaLM", appendix B; Kaplan et al., 2020,
section 2.1). Not counted: the token and position embeddings (table lookups, no matmul),
element-wise work (softmax, masks, dropout, GELU, residual adds, biases), reductions (pooling,
LayerNorm statistics, the normalisers of the linear attentions, bias gradients: sums that
`luna_jax.model.kernels` partly writes as matrix-vector products, memory-bound, not matmuls), the
loss and the optimizer update. A training step counts 3x the forward matmuls
(`TRAIN_STEP_FACTOR`: each forward matmul has two backward matmuls of its size, one per operand's
gradient), and nothing for what rematerialisation recomputes (`config.model.remat`): MFU compares
models and settings by the work the model needs, not by the work an implementation does.

Per example and layer, with n positions (a prepended CLS included), width d, FFN width f,
attention width q (`qkv_dim`, default d), h heads and dh = q / h:

  FFN (both encoders)          4 n d f
  Transformer projections      2 n d (3q) + 2 n q d        (q, k, v; output)
    softmax / fused            4 n^2 q                     (q k^T; probabilities @ v)
    Linformer, r positions     8 n r q                     (E^T K, F^T V; q k^T, probs @ v)
    linear (elu + 1)           4 n q dh                    (sum_j k_j v_j^T; q @ that sum)
    Performer, m features      8 n q m                     (features of q, k; as linear)
  Luna, projection length l    2 n d (d + c)               (unpack q; pack k, v of X)
                               + 2 l d d + 4 l n d         (pack: P W_PQ; attention)
                               + 2 l d c + 4 n l d         (unpack: Y_P [W_K | W_V]; attention)
                               + 2 n d d                   (output projection)

with c = 2d for separate K and V and c = d for tied K/V (`tie_kv`: one projection serves both).
Luna's P path has no other matmul: Y_P reaches the next layer through a residual and a LayerNorm
(eq. 6). The Performer's random projection takes no gradient, so its training step does 4 n q m
FLOPs per layer less than 3x the forward (the count keeps the convention). The head adds
`2 (F H + H C)` per example (one hidden layer of width H, C classes; with two,
`2 (F H + H (H/2) + (H/2) C)`), with F = d, or 2d / 4d for the Retrieval pair's 'concat' / 'nli'
features; the Retrieval model encodes both documents.

Sources: the modules of `luna_jax.model.layers` (`LunaAttention`, `SelfAttention`, `FeedForward`),
`luna_jax.model.baselines` and `luna_jax.model.classifiers`; Luna's matmuls are the authors'
`LunarMultiheadAttention` (fairseq-apollo, `fairseq/modules/luna_attention.py`). The forward count
equals the matmul FLOPs of the compiled forward program exactly, and for Luna and the softmax
Transformer 3x it equals those of the compiled training step (tests/test_model_flops.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from luna_jax.model.config import (
  ENCODER_NAMES,
  HeadConfig,
  ModelConfig,
  check_model_config,
  split_model_config,
)

#: Matmul FLOPs of a training step (forward and backward) per forward matmul FLOP.
TRAIN_STEP_FACTOR = 3


def matmul_flops(m: int, k: int, n: int) -> int:
  """FLOPs of an `[m, k] @ [k, n]` matmul: `2 m k n` (m n k multiply-adds of 2 FLOPs each)."""
  return 2 * m * k * n


def encoder_config(model_config: Mapping[str, Any], length: int) -> tuple[HeadConfig, ModelConfig]:
  """The checked settings of an LRA classifier, as `luna_jax.build_model` makes them.

  Args:
    model_config: a `config.model` mapping (`HeadConfig` and `ModelConfig` fields; absent keys take
      their defaults) naming 'luna' or 'transformer'.
    length: tokens per input (`max_length`; a CLS position is added for 'cls' pooling).

  Returns:
    `(head, encoder)` settings.

  Raises:
    ValueError: a key or value `check_model_config` refuses (its `ConfigError`), or a model other
      than the encoder classifiers `ENCODER_NAMES`.
  """
  check_model_config(model_config)
  head, settings = split_model_config(model_config)
  if head.name not in ENCODER_NAMES:
    raise ValueError(f'model FLOPs are counted for {ENCODER_NAMES}, not {head.name!r}.')
  encoder = ModelConfig(
    vocab_size=1, max_length=length, prepend_cls=head.pooling == 'cls', **settings
  )
  return head, encoder


def attention_flops(name: str, config: ModelConfig, length: int) -> int:
  """Forward matmul FLOPs of one self-attention module on one example: input projections,
  attention and output projection (the formulas of the module docstring).

  Args:
    name: 'luna' (`LunaAttention`, pack and unpack) or 'transformer' (`SelfAttention` or the
      baseline of `config.attention_implementation`).
    config: the encoder settings.
    length: positions n of the sequence (CLS included).

  Returns:
    FLOPs (an int).

  Raises:
    ValueError: an unknown name or attention implementation.
  """
  n, d = length, config.emb_dim
  if name == 'luna':
    if config.luna_attention_implementation != 'luna':
      raise ValueError(
        f'unknown Luna attention {config.luna_attention_implementation!r}: add its FLOPs to '
        'benchmarks/model_flops.py (attention_flops).'
      )
    l, kv = config.projection_length, (1 if config.tie_kv else 2) * d
    return (
      matmul_flops(n, d, d + kv)  # Unpack queries and pack keys/values of X, one matmul.
      + matmul_flops(l, d, d)  # Pack queries P W_PQ.
      + 2 * matmul_flops(l, d, n)  # Pack logits and probabilities @ values, all heads.
      + matmul_flops(l, d, kv)  # Unpack keys/values of Y_P.
      + 2 * matmul_flops(n, d, l)  # Unpack logits and probabilities @ values.
      + matmul_flops(n, d, d)  # Output projection.
    )
  if name != 'transformer':
    raise ValueError(f"name must be 'luna' or 'transformer', got {name!r}.")
  q = config.qkv_dim or d
  projections = matmul_flops(n, d, 3 * q) + matmul_flops(n, q, d)
  implementation, dh = config.attention_implementation, q // config.num_heads
  if implementation in ('softmax', 'fused'):
    return projections + 2 * matmul_flops(n, q, n)
  if implementation == 'linformer':
    r = config.low_rank_features
    return projections + 2 * matmul_flops(r, n, q) + 2 * matmul_flops(n, q, r)
  if implementation == 'linear':
    return projections + 2 * matmul_flops(n, q, dh)
  if implementation == 'performer':
    return projections + 4 * matmul_flops(n, q, config.nb_features)
  raise ValueError(
    f'unknown attention implementation {implementation!r}: add its FLOPs to '
    'benchmarks/model_flops.py (attention_flops).'
  )


def layer_flops(name: str, config: ModelConfig, length: int) -> int:
  """Forward matmul FLOPs of one encoder layer on one example: the attention and the FFN.

  Args:
    name: 'luna' or 'transformer' (see `attention_flops`).
    config: the encoder settings.
    length: positions n (CLS included).

  Returns:
    FLOPs (an int).
  """
  d, f = config.emb_dim, config.mlp_dim
  return (
    attention_flops(name, config, length) + matmul_flops(length, d, f) + matmul_flops(length, f, d)
  )


def head_flops(head: HeadConfig, config: ModelConfig, num_classes: int, dual: bool) -> int:
  """Forward matmul FLOPs of the classifier head on one example (`ClassifierHead`).

  Args:
    head: the head settings (hidden width, hidden layers, Retrieval interaction).
    config: the encoder settings (width d; the hidden width defaults to `mlp_dim`).
    num_classes: output classes.
    dual: the Retrieval pair: features `[u, v]` (2d) or `[u, v, u*v, u-v]` (4d).

  Returns:
    FLOPs (an int).
  """
  features = config.emb_dim * ((2 if head.interaction == 'concat' else 4) if dual else 1)
  hidden = head.classifier_hidden_dim or config.mlp_dim
  widths = [features, hidden, hidden // 2][: head.classifier_hidden_layers + 1] + [num_classes]
  return sum(matmul_flops(1, a, b) for a, b in zip(widths[:-1], widths[1:]))


def forward_flops(
  model_config: Mapping[str, Any],
  *,
  length: int,
  num_classes: int,
  batch_size: int = 1,
  dual: bool = False,
) -> int:
  """Forward matmul FLOPs of an LRA classifier ('luna' or 'transformer') on one batch.

  Args:
    model_config: a `config.model` mapping, as `luna_jax.build_model` takes it.
    length: tokens per input (every input padded to it: the model runs all positions).
    num_classes: output classes.
    batch_size: examples (pairs for `dual`).
    dual: the Retrieval two-tower model (both documents `length` tokens).

  Returns:
    FLOPs (an int).

  Raises:
    ValueError: see `encoder_config`.
  """
  head, config = encoder_config(model_config, length)
  positions = length + int(config.prepend_cls)
  encoder = config.num_layers * layer_flops(head.name, config, positions)
  example = (2 if dual else 1) * encoder + head_flops(head, config, num_classes, dual)
  return batch_size * example


def train_step_flops(
  model_config: Mapping[str, Any],
  *,
  length: int,
  num_classes: int,
  batch_size: int = 1,
  dual: bool = False,
) -> int:
  """Matmul FLOPs of one training step: `TRAIN_STEP_FACTOR` x `forward_flops` (same arguments)."""
  return TRAIN_STEP_FACTOR * forward_flops(
    model_config, length=length, num_classes=num_classes, batch_size=batch_size, dual=dual
  )
