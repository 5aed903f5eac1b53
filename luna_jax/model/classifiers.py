"""Classification models for LRA: pooling, the MLP head, single and dual (Retrieval) encoders.

Pooling (paper Table 1 and Table 3):
  'cls'   - the state of the prepended CLS vector (position 0);
  'first' - the state of the first token (position 0; no CLS vector is prepended): the official
            LRA Retrieval model, whose 'CLS' pooling reads position 0 of an encoder built without
            a CLS token (LRA `models/layers/common_layers.py` `classifier_head_dual`), and
            RoBERTa's and the authors' Luna-BERT `<s>`, which their tokenizer puts first
            (fairseq-apollo `fairseq/models/luna_bert/model.py`, `LunaCLSClassificationHead`);
  'mean'  - mean over the real tokens (padding excluded);
  'p'     - mean over the usable rows of Luna's final P (the authors average every row of a
            batch-sliced P; averaging the usable rows makes an example's representation
            independent of its batch).
Retrieval encodes both documents with one shared encoder and classifies `[u, v]` ('concat': the
official LRA default and the paper-era Luna code, fairseq-apollo `fairseq/models/luna_lra/model.py`)
or `[u, v, u*v, u-v]` ('nli': Nystromformer's and the later Mega-era fairseq-apollo code, not the
Luna paper's).
`luna_jax.model.build.build_model` builds these from a config.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model import objectives
from luna_jax.model.config import (
  CLASSIFIER_ACTIVATIONS,
  CLASSIFIER_HIDDEN_LAYERS,
  INTERACTIONS,
  POOLINGS,
  ModelConfig,
)
from luna_jax.model.encoders import ENCODERS, EncoderOutput
from luna_jax.model.layers import BERT_INIT

Array = jax.Array


def pool(out: EncoderOutput, pooling: str) -> Array:
  """Pools an encoder output to one vector per example.

  Args:
    out: the encoder output.
    pooling: 'cls', 'first', 'mean' or 'p' (see the module docstring).

  Returns:
    `[batch, d]` float32.

  Raises:
    ValueError: an unknown pooling, or 'p' for an encoder without P.
  """
  if pooling in ('cls', 'first'):
    return out.x[:, 0].astype(jnp.float32)
  if pooling == 'mean':
    states, mask = out.x, out.x_mask
  elif pooling == 'p':
    if out.p is None:
      raise ValueError("pooling 'p' needs an encoder with a P sequence (Luna).")
    states, mask = out.p, out.p_mask
  else:
    raise ValueError(f'pooling must be one of {POOLINGS}, got {pooling!r}.')
  weights = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(states.astype(jnp.float32) * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def combine_pair(u: Array, v: Array, interaction: str) -> Array:
  """Dual-encoder features: `[u, v]` ('concat') or `[u, v, u*v, u-v]` ('nli'); `[batch, d]` each.

  Raises:
    ValueError: an unknown interaction.
  """
  if interaction == 'concat':
    return jnp.concatenate([u, v], axis=-1)
  if interaction == 'nli':
    return jnp.concatenate([u, v, u * v, u - v], axis=-1)
  raise ValueError(f'interaction must be one of {INTERACTIONS}, got {interaction!r}.')


class ClassifierHead(nn.Module):
  """Dense(hidden) -> act -> Dense(num_classes), or with two hidden layers Dense(hidden) -> act ->
  Dense(hidden // 2) -> act -> Dense(num_classes) (LRA's `classifier_head_dual`, layers 'mlp' and
  'mlp2'); act is ReLU (the LRA heads) or tanh (RoBERTa's GLUE head); no dropout (as in the
  official heads).

  Attributes:
    hidden_dim: width of the first hidden layer.
    num_classes: output classes.
    hidden_layers: 1 or 2 (`luna_jax.model.config.CLASSIFIER_HIDDEN_LAYERS`).
    kernel_init: initialiser of every kernel (None: flax's lecun_normal, as LRA's heads).
    activation: 'relu' (the LRA heads) or 'tanh' (RoBERTa's GLUE head).
    logits_bias: give the last Dense a bias (LRA's and RoBERTa's heads; the authors' Luna LRA
      head has none).
  """

  hidden_dim: int
  num_classes: int
  hidden_layers: int = 1
  kernel_init: nn.initializers.Initializer | None = None
  activation: str = 'relu'
  logits_bias: bool = True

  @nn.compact
  def __call__(self, features: Array) -> Array:
    """`[batch, f]` -> `[batch, num_classes]` float32 logits.

    Raises:
      ValueError: `hidden_layers` not in `CLASSIFIER_HIDDEN_LAYERS`, or an activation not in
        `CLASSIFIER_ACTIVATIONS`.
    """
    if self.hidden_layers not in CLASSIFIER_HIDDEN_LAYERS:
      raise ValueError(
        f'hidden_layers must be one of {CLASSIFIER_HIDDEN_LAYERS}, got {self.hidden_layers!r}.'
      )
    if self.activation not in CLASSIFIER_ACTIVATIONS:
      raise ValueError(
        f'activation must be one of {CLASSIFIER_ACTIVATIONS}, got {self.activation!r}.'
      )
    act = nn.relu if self.activation == 'relu' else jnp.tanh
    kernel_init = self.kernel_init or nn.linear.default_kernel_init
    dense = functools.partial(nn.Dense, kernel_init=kernel_init)
    widths = (self.hidden_dim, self.hidden_dim // 2)[: self.hidden_layers]
    h = features
    for i, width in enumerate(widths):
      h = act(dense(width, name='hidden' if i == 0 else f'hidden_{i + 1}')(h))
    return dense(self.num_classes, use_bias=self.logits_bias, name='logits')(h)


class SequenceClassifier(nn.Module):
  """An encoder, a pooling and a classifier head; with `dual`, a shared-encoder two-tower model.

  Attributes:
    encoder_name: key of `luna_jax.model.encoders.ENCODERS` ('luna' or 'transformer').
    encoder: the model config of the encoder.
    num_classes: output classes.
    pooling: 'cls', 'first', 'mean' or 'p'.
    hidden_dim: classifier hidden width.
    hidden_layers: classifier hidden layers, 1 or 2 (`ClassifierHead`).
    head_activation: the classifier head's hidden activation, 'relu' or 'tanh'.
    logits_bias: give the head's logits layer a bias (`ClassifierHead`).
    dual: two inputs (Retrieval) instead of one.
    interaction: dual features, 'concat' or 'nli'.

  With `encoder.param_init='bert'` the head's kernels are N(0, 0.02) too (fairseq-apollo's
  LRAModel applies `init_bert_params` to the whole model, `fairseq/models/luna_lra/model.py`).
  """

  encoder_name: str
  encoder: ModelConfig
  num_classes: int
  pooling: str = 'cls'
  hidden_dim: int = 256
  hidden_layers: int = 1
  head_activation: str = 'relu'
  logits_bias: bool = True
  dual: bool = False
  interaction: str = 'concat'
  #: Batch fields passed to `__call__` (the trainer reads this).
  input_names: ClassVar[tuple[str, ...]] = ('inputs', 'lengths', 'inputs2', 'lengths2')
  #: What the trainer scores the logits with.
  objective: ClassVar[objectives.Objective] = objectives.Classification()

  def setup(self):
    if self.encoder_name not in ENCODERS:
      raise ValueError(f'unknown encoder {self.encoder_name!r}; known: {sorted(ENCODERS)}.')
    self.sequence_encoder = ENCODERS[self.encoder_name](self.encoder)
    self.head = ClassifierHead(
      self.hidden_dim,
      self.num_classes,
      self.hidden_layers,
      BERT_INIT if self.encoder.param_init == 'bert' else None,
      self.head_activation,
      self.logits_bias,
    )

  def encode(self, tokens: Array, lengths: Array, *, train: bool = False) -> Array:
    """`[batch, n]` ids and `[batch]` lengths -> `[batch, d]` pooled float32 representation."""
    return pool(self.sequence_encoder(tokens, lengths, deterministic=not train), self.pooling)

  def __call__(
    self,
    inputs: Array,
    lengths: Array,
    inputs2: Array | None = None,
    lengths2: Array | None = None,
    *,
    train: bool = False,
  ) -> Array:
    """Classifies a batch.

    Args:
      inputs: `[batch, n]` int token ids (right-padded).
      lengths: `[batch]` int real lengths.
      inputs2: `[batch, n]` second document (dual models only).
      lengths2: `[batch]` lengths of the second document.
      train: enable dropout (needs a 'dropout' rng).

    Returns:
      `[batch, num_classes]` float32 logits.

    Raises:
      ValueError: a dual model called without `inputs2` or `lengths2`.
    """
    features = self.encode(inputs, lengths, train=train)
    if self.dual:
      if inputs2 is None or lengths2 is None:
        raise ValueError('a dual model needs inputs2 and lengths2.')
      features = combine_pair(
        features, self.encode(inputs2, lengths2, train=train), self.interaction
      )
    return self.head(features)
