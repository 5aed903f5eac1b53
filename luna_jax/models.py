"""The model factory: `config.model` -> a Flax module, by `config.model.name`.

  'luna', 'transformer'   LRA classifiers (`SequenceClassifier`: encoder, pooling, head; two towers
                          for Retrieval)
  'luna_lm'               decoder-only causal Luna language model (`LunaLM`)
  'luna_seq2seq'          encoder-decoder Luna (`LunaSeq2Seq`)

Every model declares `input_names`, the batch fields its `__call__` takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

from luna_jax.classifiers import SequenceClassifier
from luna_jax.decoders import LunaLM, LunaSeq2Seq
from luna_jax.encoders import ENCODERS, EncoderConfig

Model = Union[SequenceClassifier, LunaLM, LunaSeq2Seq]
TOKEN_MODELS = ('luna_lm', 'luna_seq2seq')
MODEL_NAMES = (*ENCODERS, *TOKEN_MODELS)
#: Keys of `config.model` that are not `EncoderConfig` fields (used by the classifiers only).
_HEAD_KEYS = ('name', 'pooling', 'classifier_hidden_dim', 'interaction')


def build_model(model_config: Mapping[str, Any], *, vocab_size: int, num_classes: int,
                max_length: int, dual: bool = False, bos_id: Optional[int] = None) -> Model:
  """Builds the model named by `model_config['name']` (default 'luna').

  Args:
    model_config: `name`, the classifier keys `pooling`, `classifier_hidden_dim`, `interaction`, and
      any `EncoderConfig` field except vocab_size / max_length / prepend_cls, which come from the data
      and the pooling.
    vocab_size: token vocabulary size.
    num_classes: output classes (classifiers).
    max_length: longest input (for seq2seq: the longer of source and target) in tokens.
    dual: build the Retrieval two-tower classifier.
    bos_id: first decoder input of 'luna_seq2seq'.

  Returns:
    An uninitialised Flax module.

  Raises:
    ValueError: on an unknown key or model name, naming it.
  """
  fields = {f.name for f in dataclasses.fields(EncoderConfig)} - {'vocab_size', 'max_length',
                                                                  'prepend_cls'}
  cfg = dict(model_config)
  unknown = sorted(set(cfg) - fields - set(_HEAD_KEYS))
  if unknown:
    raise ValueError(f'unknown model config key(s) {unknown}; known: {sorted(fields | set(_HEAD_KEYS))}.')
  name = cfg.get('name', 'luna')
  if name not in MODEL_NAMES:
    raise ValueError(f'unknown model name {name!r}; known: {MODEL_NAMES}.')
  pooling = cfg.get('pooling', 'cls')
  encoder = EncoderConfig(vocab_size=vocab_size, max_length=max_length,
                          prepend_cls=name in ENCODERS and pooling == 'cls',
                          **{k: v for k, v in cfg.items() if k in fields})
  if name == 'luna_lm':
    return LunaLM(encoder)
  if name == 'luna_seq2seq':
    if bos_id is None:
      raise ValueError("'luna_seq2seq' needs the data's bos_id.")
    return LunaSeq2Seq(encoder, bos_id=bos_id)
  return SequenceClassifier(
      encoder_name=name, encoder=encoder, num_classes=num_classes, pooling=pooling,
      hidden_dim=cfg.get('classifier_hidden_dim', encoder.mlp_dim), dual=dual,
      interaction=cfg.get('interaction', 'nli'))
