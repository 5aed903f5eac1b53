"""Classification models for LRA: pooling, the MLP head, single and dual (Retrieval) encoders.

Pooling (paper Table 1 and Table 3):
  'cls'  - the state of the prepended CLS vector (position 0);
  'first' - the state of the input's own first token, with no CLS vector prepended (RoBERTa's and
           the authors' Luna-BERT `<s>`, which their tokenizer puts first: fairseq-apollo
           `fairseq/models/luna_bert/model.py`, `LunaCLSClassificationHead`);
  'mean' - mean over the real tokens (padding excluded);
  'p'    - mean over the usable rows of Luna's final P (the authors average every row of a
           batch-sliced P; averaging the usable rows makes an example's representation independent
           of its batch).
Retrieval encodes both documents with one shared encoder and classifies `[u, v]` ('concat', official
LRA) or `[u, v, u*v, u-v]` ('nli', Luna's and most re-implementations').
`luna_jax.model.build.build_model` builds these from a config.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_jax.model import objectives
from luna_jax.model.config import CLASSIFIER_ACTIVATIONS, INTERACTIONS, POOLINGS, ModelConfig
from luna_jax.model.encoders import ENCODERS, EncoderOutput

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
  """Dense(hidden) -> ReLU (or tanh) -> Dense(num_classes); no dropout (as in the official heads).

  Attributes:
    hidden_dim: hidden width.
    num_classes: output classes.
    activation: 'relu' (the LRA heads) or 'tanh' (RoBERTa's GLUE head).
  """

  hidden_dim: int
  num_classes: int
  activation: str = 'relu'

  @nn.compact
  def __call__(self, features: Array) -> Array:
    """`[batch, f]` -> `[batch, num_classes]` float32 logits.

    Raises:
      ValueError: an activation not in `CLASSIFIER_ACTIVATIONS`.
    """
    if self.activation not in CLASSIFIER_ACTIVATIONS:
      raise ValueError(
        f'activation must be one of {CLASSIFIER_ACTIVATIONS}, got {self.activation!r}.'
      )
    act = nn.relu if self.activation == 'relu' else jnp.tanh
    h = act(nn.Dense(self.hidden_dim, name='hidden')(features))
    return nn.Dense(self.num_classes, name='logits')(h)


class SequenceClassifier(nn.Module):
  """An encoder, a pooling and a classifier head; with `dual`, a shared-encoder two-tower model.

  Attributes:
    encoder_name: key of `luna_jax.model.encoders.ENCODERS` ('luna' or 'transformer').
    encoder: the model config of the encoder.
    num_classes: output classes.
    pooling: 'cls', 'first', 'mean' or 'p'.
    hidden_dim: classifier hidden width.
    head_activation: the classifier head's hidden activation, 'relu' or 'tanh'.
    dual: two inputs (Retrieval) instead of one.
    interaction: dual features, 'concat' or 'nli'.
  """

  encoder_name: str
  encoder: ModelConfig
  num_classes: int
  pooling: str = 'cls'
  hidden_dim: int = 256
  head_activation: str = 'relu'
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
    self.head = ClassifierHead(self.hidden_dim, self.num_classes, self.head_activation)

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
    """
    features = self.encode(inputs, lengths, train=train)
    if self.dual:
      if inputs2 is None or lengths2 is None:
        raise ValueError('a dual model needs inputs2 and lengths2.')
      features = combine_pair(
        features, self.encode(inputs2, lengths2, train=train), self.interaction
      )
    return self.head(features)
