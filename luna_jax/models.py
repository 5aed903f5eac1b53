"""The model factory: `config.model` -> a Flax module, by `config.model.name`.

  'luna', 'transformer'   LRA classifiers (`SequenceClassifier`: encoder, pooling, head; two towers
                          for Retrieval)
  'luna_lm'               decoder-only causal Luna language model (`LunaLM`)
  'luna_seq2seq'          encoder-decoder Luna (`LunaSeq2Seq`)
  'luna_mlm', 'transformer_mlm'
                          the encoder with a tied LM head, for masked-LM pretraining (`MaskedLM`)

Every model declares `input_names`, the batch fields its `__call__` takes.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from luna_jax import config_utils
from luna_jax.attention_registry import ATTENTIONS
from luna_jax.classifiers import INTERACTIONS, POOLINGS, SequenceClassifier
from luna_jax.decoders import LunaLM, LunaSeq2Seq
from luna_jax.encoders import ENCODERS, REMAT, ModelConfig
from luna_jax.mlm import MaskedLM

Model = SequenceClassifier | LunaLM | LunaSeq2Seq | MaskedLM
#: The token-level models (trained on `corpora.TOKEN_TASKS`).
TOKEN_MODELS = ('luna_lm', 'luna_seq2seq')
#: Masked-LM models: '<encoder>_mlm' for every encoder.
MLM_SUFFIX = '_mlm'
MLM_MODELS = tuple(name + MLM_SUFFIX for name in ENCODERS)
MODEL_NAMES = (*ENCODERS, *TOKEN_MODELS, *MLM_MODELS)
#: Keys of `config.model` that are not `ModelConfig` fields (used by the classifiers only), with
#: their types.
_HEAD_KEYS = {'name': str, 'pooling': str, 'classifier_hidden_dim': int, 'interaction': str}
#: Compute dtypes (`config.model.dtype`).
DTYPES = ('float32', 'bfloat16')
_SIZE = {'minimum': 1}
_RATE = {'minimum': 0.0, 'below': 1.0}
#: What each `config.model` key allows (see `config_utils.spec`); other keys get a type check only.
MODEL_RULES: dict[str, dict[str, Any]] = {
  'name': {'choices': MODEL_NAMES},
  'pooling': {'choices': POOLINGS},
  'interaction': {'choices': INTERACTIONS},
  'classifier_hidden_dim': _SIZE,
  'num_layers': _SIZE,
  'emb_dim': _SIZE,
  'num_heads': _SIZE,
  'mlp_dim': _SIZE,
  'qkv_dim': _SIZE,
  'num_pack_heads': _SIZE,
  'projection_length': _SIZE,
  'low_rank_features': _SIZE,
  'nb_features': _SIZE,
  'chunk_size': _SIZE,
  'dropout_rate': _RATE,
  'attention_dropout_rate': _RATE,
  'activation_dropout_rate': _RATE,
  'activation': {'choices': ('gelu', 'gelu_tanh', 'relu')},
  'positional': {'choices': ('learned', 'sinusoidal')},
  'attention_implementation': {'choices': ATTENTIONS},
  'omega': {'choices': ('softplus', 'elu')},
  'causal_implementation': {'choices': ('chunked', 'scan')},
  'dtype': {'choices': DTYPES},
  'remat': {'choices': tuple(REMAT)},
}
#: `ModelConfig` fields that come from the data and the pooling, not from `config.model`.
_DATA_FIELDS = ('vocab_size', 'max_length', 'prepend_cls')


def check_model_config(model_config: Mapping[str, Any], section: str = 'config.model') -> None:
  """Checks the keys, types and allowed values of a (possibly partial) `config.model` mapping.

  Args:
    model_config: `name`, the classifier keys and any `ModelConfig` field except vocab_size,
      max_length and prepend_cls; absent keys take their defaults.
    section: the mapping's name in messages.

  Raises:
    config_utils.ConfigError: naming `section.key`, the value and what is allowed.
  """
  hints = {
    **{
      name: hint
      for name, hint in typing.get_type_hints(ModelConfig).items()
      if name not in _DATA_FIELDS
    },
    **_HEAD_KEYS,
  }
  unknown = sorted(set(model_config) - set(hints))
  if unknown:
    raise config_utils.ConfigError(f'{section}: unknown key(s) {unknown}; known: {sorted(hints)}.')
  for name, value in model_config.items():
    error = config_utils.value_error(value, hints[name], MODEL_RULES.get(name, {}))
    if error:
      raise config_utils.ConfigError(f'{section}.{name}={value!r}: {error}.')
  emb_dim = model_config.get('emb_dim', ModelConfig.emb_dim)
  num_heads = model_config.get('num_heads', ModelConfig.num_heads)
  widths = {
    'num_heads': (num_heads, model_config.get('qkv_dim') or emb_dim),
    'num_pack_heads': (model_config.get('num_pack_heads') or num_heads, emb_dim),
  }
  for key, (heads, width) in widths.items():
    if width % heads:
      raise config_utils.ConfigError(
        f'{section}.{key}={heads}: must divide the attention width {width} (emb_dim, or '
        'qkv_dim for the Transformer).'
      )


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
    model_config: `name`, the classifier keys `pooling`, `classifier_hidden_dim`, `interaction`, and
      any `ModelConfig` field except vocab_size / max_length / prepend_cls, which come from the data
      and the pooling.
    vocab_size: token vocabulary size (the masked LMs add the mask id, `vocab_size`).
    num_classes: output classes (classifiers).
    max_length: longest input (for seq2seq: the longer of source and target) in tokens.
    dual: build the Retrieval two-tower classifier.
    bos_id: first decoder input of 'luna_seq2seq'.
    special_ids: ids the masked LMs never mask (`lra.special_ids`).

  Returns:
    An uninitialised Flax module.

  Raises:
    ValueError: on an unknown key or a value out of range (`check_model_config`), naming it.
  """
  check_model_config(model_config)
  fields = {f.name for f in dataclasses.fields(ModelConfig)} - set(_DATA_FIELDS)
  cfg = dict(model_config)
  name = cfg.get('name', 'luna')
  pooling = cfg.get('pooling', 'cls')
  encoder_name = name.removesuffix(MLM_SUFFIX)
  # A masked LM keeps the CLS vector of the classifier it will be finetuned into (same pooling),
  # so that the two encoders have the same parameters.
  encoder = ModelConfig(
    vocab_size=vocab_size + int(name in MLM_MODELS),
    max_length=max_length,
    prepend_cls=encoder_name in ENCODERS and pooling == 'cls',
    **{k: v for k, v in cfg.items() if k in fields},
  )
  if name == 'luna_lm':
    return LunaLM(encoder)
  if name in MLM_MODELS:
    return MaskedLM(encoder_name, encoder, tuple(special_ids))
  if name == 'luna_seq2seq':
    if bos_id is None:
      raise ValueError("'luna_seq2seq' needs the data's bos_id.")
    return LunaSeq2Seq(encoder, bos_id=bos_id)
  return SequenceClassifier(
    encoder_name=name,
    encoder=encoder,
    num_classes=num_classes,
    pooling=pooling,
    hidden_dim=cfg.get('classifier_hidden_dim', encoder.mlp_dim),
    dual=dual,
    interaction=cfg.get('interaction', 'nli'),
  )
