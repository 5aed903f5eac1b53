"""Masked-language-model pretraining: BERT/RoBERTa dynamic masking, an encoder with a tied LM head.

The objective of the paper's §4.3 (Luna-128 pretrained as RoBERTa-base, appendix A.3 Table 8): of
the real (non-padding, non-special) tokens, each is selected with probability `MASK_RATE` = 15%;
a selected token is replaced by the mask id with probability 80%, by a uniformly drawn regular token
with 10%, and kept with 10% (Devlin et al., 2019, §3.1; Liu et al., 2019). The loss is the
cross-entropy on the selected tokens only. Masks are drawn inside the training step from the step's
key (`mask_tokens`), so every step sees a new mask and a resumed run draws the same ones.

`MaskedLM` is a `luna_jax.model.encoders` encoder (Luna or the Transformer, by name) and the RoBERTa
LM head (fairseq `RobertaLMHead`, which the authors' `fairseq/models/luna_bert/model.py` uses):
Dense(d) -> GELU -> LayerNorm -> the transposed token embedding plus a bias. The encoder sits at the
same path (`sequence_encoder`) as in `luna_jax.model.classifiers.SequenceClassifier`, so a
pretrained encoder is grafted into a classifier as is (`luna_jax.training.pretrained`).

Selection is a Bernoulli draw per eligible token (so a sequence has 15% selected in expectation),
where BERT draws a fixed count per sequence; the two agree in expectation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luna_jax.model import kernels, objectives
from luna_jax.model.config import ModelConfig
from luna_jax.model.encoders import ENCODERS
from luna_jax.model.kernels import DenseParams
from luna_jax.model.layers import BERT_INIT, matmul_dtype

Array = jax.Array

#: Fraction of the eligible tokens selected for prediction.
MASK_RATE = 0.15
#: Of the selected tokens: fraction replaced by the mask id, and by a random regular token (the
#: rest, 10%, is kept).
REPLACE_WITH_MASK = 0.8
REPLACE_WITH_RANDOM = 0.1


def regular_ids(vocab_size: int, special_ids: Sequence[int]) -> np.ndarray:
  """The ids in [0, vocab_size) that are not special: what a random replacement is drawn from.

  Raises:
    ValueError: no regular id is left.
  """
  ids = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids, np.int64))
  if ids.size == 0:
    raise ValueError(f'every id of the vocabulary (size {vocab_size}) is special {special_ids}.')
  return ids.astype(np.int32)


def mask_tokens(
  rng: Array,
  tokens: Array,
  lengths: Array,
  *,
  mask_id: int,
  vocab_size: int,
  special_ids: Sequence[int] = (0,),
) -> tuple[Array, Array]:
  """BERT's dynamic masking of a batch of right-padded token sequences.

  Args:
    rng: PRNG key; the same key gives the same masks.
    tokens: `[batch, n]` int token ids (ids < vocab_size).
    lengths: `[batch]` int number of real tokens; positions >= length are never selected.
    mask_id: the id that replaces 80% of the selected tokens (outside the data's ids).
    vocab_size: number of data ids; random replacements are drawn from its non-special ids.
    special_ids: ids that are never selected (padding, separators) nor drawn as replacements.

  Returns:
    (`[batch, n]` int32 corrupted inputs, `[batch, n]` bool selected positions: where the loss is).

  Raises:
    ValueError: every id below `vocab_size` is special (`regular_ids`).
  """
  select_key, action_key, random_key = jax.random.split(rng, 3)
  tokens = tokens.astype(jnp.int32)
  eligible = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
  for special in special_ids:
    eligible &= tokens != special
  selected = eligible & jax.random.bernoulli(select_key, MASK_RATE, tokens.shape)
  action = jax.random.uniform(action_key, tokens.shape)
  pool = jnp.asarray(regular_ids(vocab_size, special_ids))
  random_tokens = pool[jax.random.randint(random_key, tokens.shape, 0, pool.shape[0])]
  corrupted = jnp.where(
    action < REPLACE_WITH_MASK,
    mask_id,
    jnp.where(action < REPLACE_WITH_MASK + REPLACE_WITH_RANDOM, random_tokens, tokens),
  )
  return jnp.where(selected, corrupted, tokens), selected


@dataclasses.dataclass(frozen=True)
class MaskedLanguageModel(objectives.Objective):
  """The masked-LM objective: `prepare` masks the batch, the loss is on the selected tokens.

  `prepare` turns a batch {'inputs' [b, n], 'lengths' [b], ...} into the corrupted 'inputs', the
  original tokens as 'targets' and the 'selected' positions (`mask_tokens`); the loss and the
  metrics (masked-token accuracy; `summarize` adds the perplexity exp(loss)) count the selected
  tokens of real examples only.

  Attributes:
    vocab_size: the data's ids; the mask id is `vocab_size`.
    special_ids: ids never selected nor drawn as random replacements.
  """

  vocab_size: int
  special_ids: tuple[int, ...] = (0,)

  def prepare(self, batch: objectives.Batch, rng: Array) -> objectives.Batch:
    """`batch` with masked 'inputs', the original tokens as 'targets' and 'selected' [b, n]."""
    inputs, selected = mask_tokens(
      rng,
      batch['inputs'],
      batch['lengths'],
      mask_id=self.vocab_size,
      vocab_size=self.vocab_size,
      special_ids=self.special_ids,
    )
    return {
      **batch,
      'inputs': inputs,
      'targets': batch['inputs'].astype(jnp.int32),
      'selected': selected,
    }

  def weights(self, batch: objectives.Batch) -> Array:
    """`[b, n]`: 1 on the selected tokens of real examples, else 0."""
    return objectives.example_weights(batch)[:, None] * batch['selected']

  def summarize(self, totals: Mapping[str, Any]) -> dict[str, float]:
    """Masked-token 'accuracy', 'loss' (nats per masked token), 'perplexity' and 'num_examples'
    (masked tokens)."""
    metrics = super().summarize(totals)
    metrics['perplexity'] = math.exp(min(metrics['loss'], 700.0))
    return metrics


class LMHead(nn.Module):
  """RoBERTa's LM head: Dense(d) -> GELU -> LayerNorm -> tied output projection + bias.

  Attributes:
    vocab_size: output ids (the embedding table's rows).
    dtype: dtype of the activations (the Dense output, GELU and LayerNorm).
    kernel_init: initialiser of the Dense kernel (None: flax's lecun_normal).
    matmul_dtype: dtype of the matmul inputs (float32 accumulation); None: `dtype`.
  """

  vocab_size: int
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer | None = None
  matmul_dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: Array, embedding: Array) -> Array:
    """`[batch, n, d]` states, the `[vocab, d]` token embedding -> `[batch, n, vocab]` float32."""
    kernel_init = self.kernel_init or nn.linear.default_kernel_init
    d = x.shape[-1]
    params = DenseParams(d, kernel_init=kernel_init, name='dense')(d)
    h = kernels.dense(x, *params, self.dtype, matmul_dtype(self))
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name='norm')(nn.gelu(h, approximate=False))
    bias = self.param('bias', nn.initializers.zeros, (self.vocab_size,))
    return kernels.tied_logits(h, embedding, matmul_dtype(self)) + bias


class MaskedLM(nn.Module):
  """An encoder with a tied LM head: token ids -> per-position logits over the vocabulary.

  Attributes:
    encoder_name: key of `luna_jax.model.encoders.ENCODERS` ('luna' or 'transformer').
    encoder: the encoder config; its vocab_size is the data's plus one, the mask id (the last).
    special_ids: the data's ids that are never masked (padding, separators).

  With `encoder.param_init='bert'` the LM head's Dense kernel is N(0, 0.02) as well (the authors'
  Luna-BERT applies `init_bert_params` to the whole model, fairseq-apollo
  `fairseq/models/luna_bert/model.py`).
  """

  encoder_name: str
  encoder: ModelConfig
  special_ids: tuple[int, ...] = (0,)
  #: Batch fields passed to `__call__` (the trainer reads this).
  input_names: ClassVar[tuple[str, ...]] = ('inputs', 'lengths')

  @property
  def objective(self) -> MaskedLanguageModel:
    """What the trainer scores the logits with: masked-LM over the data's ids."""
    return MaskedLanguageModel(self.encoder.vocab_size - 1, tuple(self.special_ids))

  def setup(self):
    if self.encoder_name not in ENCODERS:
      raise ValueError(f'unknown encoder {self.encoder_name!r}; known: {sorted(ENCODERS)}.')
    self.sequence_encoder = ENCODERS[self.encoder_name](self.encoder)
    self.lm_head = LMHead(
      self.encoder.vocab_size,
      self.encoder.compute_dtype,
      BERT_INIT if self.encoder.param_init == 'bert' else None,
      self.encoder.matmul_dtype,
    )

  def __call__(self, inputs: Array, lengths: Array, *, train: bool = False) -> Array:
    """Predicts every position's token.

    Args:
      inputs: `[batch, n]` int (corrupted) token ids, right-padded.
      lengths: `[batch]` int real lengths.
      train: enable dropout (needs a 'dropout' rng).

    Returns:
      `[batch, n, vocab_size]` float32 logits (a prepended CLS position is dropped).
    """
    out = self.sequence_encoder(inputs, lengths, deterministic=not train)
    x = out.x[:, 1:] if self.encoder.prepend_cls else out.x
    embedding = self.sequence_encoder.variables['params']['embed']['token_embedding']['embedding']
    return self.lm_head(x, embedding)
