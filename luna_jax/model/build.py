"""The model factory: `config.model` -> a Flax module, by `config.model.name`.

  'luna', 'transformer'   LRA classifiers (`SequenceClassifier`: encoder, pooling, head; two towers
                          for Retrieval)
  'luna_lm'               decoder-only causal Luna language model (`LunaLM`)
  'luna_seq2seq'          encoder-decoder Luna (`LunaSeq2Seq`)
  'transformer_seq2seq'   the softmax Transformer encoder-decoder (`TransformerSeq2Seq`), the
                          Transformer-base baseline of the paper's Table 4
  'luna_mlm', 'transformer_mlm'
                          the encoder with a tied LM head, for masked-LM pretraining (`MaskedLM`)

Every model declares `input_names`, the batch fields its `__call__` takes.

Input contract. The models are jitted code and check no values, so the caller must give: token
ids as integer arrays `[batch, length]` with every id in [0, vocab_size) (an id outside embeds as
NaN: JAX's out-of-range gather), `length` <= `max_length` (checked from the shape: a ValueError),
`lengths` as `[batch]` integers in [0, length] (0: an empty sequence, such as an empty Retrieval
document, for which the classifiers give finite logits), and class labels in [0, num_classes). The
host-side entry points enforce it: the data loaders (`lra.core.check_arrays`, so the trainer gets
checked batches) and generation (`luna_jax.model.generation`); code that calls `model.apply` itself
is responsible for its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from luna_jax.model.classifiers import SequenceClassifier
from luna_jax.model.config import (
  MLM_MODELS,
  MLM_SUFFIX,
  ModelConfig,
  check_model_config,
  split_model_config,
)
from luna_jax.model.decoders import LunaLM, LunaSeq2Seq, TransformerSeq2Seq
from luna_jax.model.encoders import ENCODERS
from luna_jax.model.mlm import MaskedLM

Model = SequenceClassifier | LunaLM | LunaSeq2Seq | TransformerSeq2Seq | MaskedLM
#: The encoder-decoders, by name.
SEQ2SEQ_MODELS = {'luna_seq2seq': LunaSeq2Seq, 'transformer_seq2seq': TransformerSeq2Seq}


def build_model(
  model_config: Mapping[str, Any],
  *,
  vocab_size: int,
  num_classes: int,
  max_length: int,
  dual: bool = False,
  bos_id: int | None = None,
  special_ids: Sequence[int] = (0,),
) -> Model:
  """Builds the model named by `model_config['name']` (default 'luna').

  Args:
    model_config: any `HeadConfig` field (`name`, `pooling`, `classifier_hidden_dim`,
      `classifier_hidden_layers`, `classifier_activation`, `classifier_logits_bias`,
      `interaction`) and any `ModelConfig` field except `DATA_FIELDS`, which come from the data
      and the pooling (`luna_jax.model.config`); absent keys take the dataclasses' defaults.
    vocab_size: token vocabulary size (the masked LMs add the mask id, `vocab_size`).
    num_classes: output classes (classifiers).
    max_length: longest input (for seq2seq: the longer of source and target) in tokens.
    dual: build the Retrieval two-tower classifier.
    bos_id: first decoder input of the encoder-decoders ('luna_seq2seq', 'transformer_seq2seq').
    special_ids: ids the masked LMs never mask (`lra.special_ids`).

  Returns:
    An uninitialised Flax module.

  Raises:
    ValueError: on an unknown key or a value out of range (`check_model_config`), naming it; an
      encoder-decoder without `bos_id`.
  """
  check_model_config(model_config)
  head, settings = split_model_config(model_config)
  encoder_name = head.name.removesuffix(MLM_SUFFIX)
  # A masked LM keeps the CLS vector of the classifier it will be finetuned into (same pooling),
  # so that the two encoders have the same parameters.
  encoder = ModelConfig(
    vocab_size=vocab_size + int(head.name in MLM_MODELS),
    max_length=max_length,
    prepend_cls=encoder_name in ENCODERS and head.pooling == 'cls',
    **settings,
  )
  if head.name == 'luna_lm':
    return LunaLM(encoder)
  if head.name in MLM_MODELS:
    return MaskedLM(encoder_name, encoder, tuple(special_ids))
  if head.name in SEQ2SEQ_MODELS:
    if bos_id is None:
      raise ValueError(f"{head.name!r} needs the data's bos_id.")
    return SEQ2SEQ_MODELS[head.name](encoder, bos_id=bos_id)
  return SequenceClassifier(
    encoder_name=head.name,
    encoder=encoder,
    num_classes=num_classes,
    pooling=head.pooling,
    hidden_dim=head.classifier_hidden_dim or encoder.mlp_dim,
    hidden_layers=head.classifier_hidden_layers,
    head_activation=head.classifier_activation,
    logits_bias=head.classifier_logits_bias,
    dual=dual,
    interaction=head.interaction,
  )
