"""The model's settings, one schema per knob: `ModelConfig` (every model's hyper-parameters) and
`HeadConfig` (the classifier keys of `config.model`), each field with its type, default and allowed
values (`luna_jax.config_utils.spec`).

`configs/base.py` gives every field the same default (a test checks it) with a one-line comment;
`check_model_config` checks a `config.model` mapping against these fields, so a misspelt key or a
value out of range is named at start-up.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from luna_jax import config_utils
from luna_jax.config_utils import spec
from luna_jax.model.registry import LUNA_ATTENTIONS, TRANSFORMER_ATTENTIONS

#: `ModelConfig.remat` -> the `jax.checkpoint` policy of each layer ('none': no checkpoint).
REMAT = {'none': None, 'layer': None, 'dots': jax.checkpoint_policies.dots_saveable}
#: Precision policies (`ModelConfig.precision`): name -> (activation dtype, matmul-input dtype).
#: Every matmul accumulates in float32; logits, softmax, LayerNorm statistics and the loss are
#: float32, and parameters, gradients and optimizer state stay float32, in every policy.
#:   float32       everything float32 (XLA's default matmul precision: TF32 on NVIDIA GPUs)
#:   bfloat16      matmul inputs rounded to bfloat16; the residual stream, LayerNorm outputs, the
#:                 FFN activation and P stay float32 (a TPU's default precision, as in Tay et al.'s
#:                 LRA runs; the causal Luna sums and the kernel feature maps stay float32)
#:   bfloat16_all  the activations too are bfloat16 (faster, less memory; not the official recipe)
PRECISIONS = {
  'float32': (jnp.float32, jnp.float32),
  'bfloat16': (jnp.float32, jnp.bfloat16),
  'bfloat16_all': (jnp.bfloat16, jnp.bfloat16),
}
#: Former `config.model` keys -> what replaced them (named when an old config still sets them).
RENAMED_KEYS = {
  'dtype': "precision (dtype='bfloat16' is precision='bfloat16_all'; see PRECISIONS)",
}
#: The former `dtype` values -> the `precision` that computes what they did.
_DTYPE_PRECISIONS = {'float32': 'float32', 'bfloat16': 'bfloat16_all'}
#: Sequence representations of the classifiers (`luna_jax.model.classifiers.pool`).
POOLINGS = ('cls', 'first', 'mean', 'p')
#: Activations of the classifier head's hidden layers (`luna_jax.model.classifiers.ClassifierHead`).
CLASSIFIER_ACTIVATIONS = ('relu', 'tanh')
#: Hidden layers of the classifier head (`luna_jax.model.classifiers.ClassifierHead`).
CLASSIFIER_HIDDEN_LAYERS = (1, 2)
#: Parameter initialisations of the Luna classifier (`ModelConfig.param_init`).
PARAM_INITS = ('default', 'bert')
#: Attention padding masks of the Transformer-family encoders (`ModelConfig.padding_mask`).
PADDING_MASKS = ('lengths', 'nonzero')
#: Retrieval features of two pooled documents (`luna_jax.model.classifiers.combine_pair`).
INTERACTIONS = ('concat', 'nli')
#: The encoders (`luna_jax.model.encoders.ENCODERS`), each also a classifier model name.
ENCODER_NAMES = ('luna', 'transformer')
#: The token-level models (trained on `corpora.TOKEN_TASKS`).
TOKEN_MODELS = ('luna_lm', 'luna_seq2seq', 'transformer_seq2seq')
#: The token models with no Luna encoder, whose layers `shared_layers` cannot tie.
UNTIED_MODELS = ('luna_lm', 'transformer_seq2seq')
#: Masked-LM models: '<encoder>_mlm' for every encoder.
MLM_SUFFIX = '_mlm'
MLM_MODELS = tuple(name + MLM_SUFFIX for name in ENCODER_NAMES)
#: Every `config.model.name` that `luna_jax.model.build.build_model` builds.
MODEL_NAMES = (*ENCODER_NAMES, *TOKEN_MODELS, *MLM_MODELS)
#: The models `ModelConfig.param_init='bert'` applies to: the Luna encoder with either head.
BERT_MODELS = ('luna', 'luna' + MLM_SUFFIX)
_SIZE = {'minimum': 1}
_RATE = {'minimum': 0.0, 'below': 1.0}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of every model: the encoders, the decoders and the baselines (each ignores the
  fields it does not use).

  Attributes:
    vocab_size: number of token ids (0 is padding); from the data.
    max_length: longest input in tokens, before a CLS token is prepended; from the data.
    num_layers: encoder layers.
    emb_dim: model width d.
    num_heads: attention heads (Luna: unpack heads).
    mlp_dim: FFN hidden size.
    qkv_dim: Transformer attention width (default emb_dim).
    num_pack_heads: Luna pack heads (default num_heads).
    projection_length: Luna's l, the length of P.
    tie_kv: Luna K/V weight tying inside pack and inside unpack.
    normalize_before: Luna pre-LN instead of the paper's post-LN (the Luna encoder: 'luna' and
      'luna_mlm').
    activation: FFN activation: 'gelu' (exact), 'gelu_tanh' or 'relu'.
    dropout_rate: embedding and residual dropout.
    attention_dropout_rate: attention-probability dropout.
    activation_dropout_rate: dropout after the FFN activation (Luna models and the seq2seq
      Transformer; the LRA Transformer has none).
    positional: 'learned' or 'sinusoidal' token positions.
    embedding_layernorm: LayerNorm on token embeddings and on the first P (Luna LRA recipe).
    embed_scale: multiply token embeddings and the first P by sqrt(d) (Luna MT recipe).
    prepend_cls: prepend a learned CLS vector (pooled by the 'cls' head); from the pooling ('cls'
      only: 'first' pools the data's own first token, e.g. RoBERTa's `<s>`).
    attention_implementation: Transformer attention, a key of
      `luna_jax.model.registry.TRANSFORMER_ATTENTIONS`: 'softmax', 'fused', or the baselines
      'linformer', 'linear' (elu + 1) and 'performer' (FAVOR+).
    luna_attention_implementation: Luna encoder attention, a key of
      `luna_jax.model.registry.LUNA_ATTENTIONS`: 'luna' (pack and unpack, eqs. 3-5).
    low_rank_features: Linformer's projected length r.
    nb_features: Performer's number of random features.
    redraw_features: Performer: draw a new random projection at every training step.
    contextual_p: Luna: P flows from layer to layer (the paper); False gives every layer (encoder
      and decoder) its own learned P table and drops Y_P between layers (the non-contextual
      ablation, paper Table 5).
    share_embeddings: token models: one embedding table for the source, the target and the output
      projection, which then has no bias (fairseq `--share-all-embeddings`, the WMT recipe).
    shared_layers: the Luna and Transformer encoders (classifiers, masked LMs, luna_seq2seq's
      encoder): one layer's parameters applied `num_layers` times (fairseq-apollo's
      `tie_layer_weights`, `fairseq/models/luna_lra/luna_lra_encoder.py`; LRA's `tied_weights`),
      instead of `num_layers` layers of their own; refused for `UNTIED_MODELS`. The decoders'
      layers are never tied.
    param_init: initialisation of the Luna encoder models (`PARAM_INITS`): 'default' (each
      module's own: the authors' Luna modules without `--apply-bert-init`, N(0, d^-1/2)
      embeddings, xavier projections, lecun_normal heads) or 'bert' (fairseq's `init_bert_params`,
      which the authors' ListOps and Text architectures apply, `fairseq/models/luna_lra/model.py`:
      every Dense kernel and embedding N(0, 0.02), the padding token's embedding row and every bias
      zero; the first P table and the LayerNorms keep their own init). 'bert' needs a name in
      `BERT_MODELS`.
    padding_mask: the Transformer's attention mask (`PADDING_MASKS`): 'lengths' (keys past each
      example's length) or 'nonzero' (the official LRA mask `inputs > 0`, LRA
      `models/transformer/transformer.py`: token 0 is masked wherever it occurs, so black pixels
      get no attention and their own queries attend uniformly to every position; a prepended CLS
      takes the first token's entry). 'nonzero' needs the softmax Transformer (`name`
      'transformer' or 'transformer_mlm', `attention_implementation` 'softmax' or 'fused'): LRA's
      Linformer, linear and FAVOR+ attentions ignore their padding mask.
    omega: causal Luna pack activation: 'softplus' (beta = ln 2) or 'elu' (elu + 1).
    causal_implementation: causal Luna form: 'chunked' (parallel) or 'scan'.
    chunk_size: positions per chunk of the chunked causal form.
    precision: the mixed-precision policy, one of `PRECISIONS` ('float32', 'bfloat16' = matmul
      inputs in bfloat16 with float32 accumulation and a float32 residual stream, or
      'bfloat16_all'); parameters stay float32.
    remat: rematerialisation of each layer in the backward pass (`REMAT`): 'none' (keep every
      residual), 'layer' (keep only the layer inputs, recompute the layer) or 'dots' (keep the
      matmul outputs, recompute the element-wise work: `jax.checkpoint_policies.dots_saveable`).

  Raises:
    config_utils.ConfigError: at construction, a value outside its field's rule (a size below 1,
      a rate outside [0, 1), an unknown choice), naming the field; `check_model_config` checks
      the types and the rules between fields too.
  """

  vocab_size: int = spec(**_SIZE)
  max_length: int = spec(**_SIZE)
  num_layers: int = spec(default=4, **_SIZE)
  emb_dim: int = spec(default=256, **_SIZE)
  num_heads: int = spec(default=4, **_SIZE)
  mlp_dim: int = spec(default=1024, **_SIZE)
  qkv_dim: int | None = spec(default=None, **_SIZE)
  num_pack_heads: int | None = spec(default=None, **_SIZE)
  projection_length: int = spec(default=16, **_SIZE)
  tie_kv: bool = spec(default=False)
  normalize_before: bool = spec(default=False)
  activation: str = spec(default='gelu', choices=('gelu', 'gelu_tanh', 'relu'))
  dropout_rate: float = spec(default=0.1, **_RATE)
  attention_dropout_rate: float = spec(default=0.1, **_RATE)
  activation_dropout_rate: float = spec(default=0.0, **_RATE)
  positional: str = spec(default='learned', choices=('learned', 'sinusoidal'))
  embedding_layernorm: bool = spec(default=True)
  embed_scale: bool = spec(default=False)
  prepend_cls: bool = spec(default=True)
  attention_implementation: str = spec(default='softmax', choices=TRANSFORMER_ATTENTIONS)
  luna_attention_implementation: str = spec(default='luna', choices=LUNA_ATTENTIONS)
  low_rank_features: int = spec(default=16, **_SIZE)
  nb_features: int = spec(default=256, **_SIZE)
  redraw_features: bool = spec(default=False)
  contextual_p: bool = spec(default=True)
  shared_layers: bool = spec(default=False)
  param_init: str = spec(default='default', choices=PARAM_INITS)
  padding_mask: str = spec(default='lengths', choices=PADDING_MASKS)
  share_embeddings: bool = spec(default=False)
  omega: str = spec(default='softplus', choices=('softplus', 'elu'))
  causal_implementation: str = spec(default='chunked', choices=('chunked', 'scan'))
  chunk_size: int = spec(default=64, **_SIZE)
  precision: str = spec(default='float32', choices=tuple(PRECISIONS))
  remat: str = spec(default='none', choices=tuple(REMAT))

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      error = config_utils.value_error(value, Any, field.metadata.get('spec', {}))
      if error:
        raise config_utils.ConfigError(f'ModelConfig.{field.name}={value!r}: {error}.')

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The activations' dtype under `precision`."""
    return jnp.dtype(PRECISIONS[self.precision][0])

  @property
  def matmul_dtype(self) -> jnp.dtype:
    """The dtype of the matmul inputs under `precision`."""
    return jnp.dtype(PRECISIONS[self.precision][1])


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """The keys of `config.model` that are not `ModelConfig` fields: which model, and the classifier
  head (the token models and the masked LMs ignore all but `name`).

  Attributes:
    name: the model, one of `MODEL_NAMES`.
    pooling: sequence representation, one of `POOLINGS`: 'cls' prepends a CLS vector, 'first'
      reads the first token's state (no CLS vector).
    classifier_hidden_dim: hidden width of the Dense -> activation -> Dense head (None: mlp_dim).
    classifier_hidden_layers: 1 (Dense(h) -> act -> Dense(classes)) or 2 (Dense(h) -> act ->
      Dense(h // 2) -> act -> Dense(classes), LRA's `classifier_head_dual`).
    classifier_activation: the head's hidden activation, one of `CLASSIFIER_ACTIVATIONS`: 'relu'
      (the LRA heads) or 'tanh' (RoBERTa's and the authors' GLUE head, fairseq-apollo
      `fairseq/models/luna_bert/model.py` `LunaCLSClassificationHead`, pooler_activation_fn tanh).
    classifier_logits_bias: give the head's logits layer a bias: LRA's heads and RoBERTa's GLUE
      head have one; the authors' Luna LRA head has none (fairseq-apollo
      `fairseq/models/luna_lra/model.py`, `sentence_projection_layer`, bias=False).
    interaction: Retrieval features of the two documents, one of `INTERACTIONS`.
  """

  name: str = spec(default='luna', choices=MODEL_NAMES)
  pooling: str = spec(default='cls', choices=POOLINGS)
  classifier_hidden_dim: int | None = spec(default=None, **_SIZE)
  classifier_hidden_layers: int = spec(default=1, choices=CLASSIFIER_HIDDEN_LAYERS)
  classifier_activation: str = spec(default='relu', choices=CLASSIFIER_ACTIVATIONS)
  classifier_logits_bias: bool = spec(default=True)
  interaction: str = spec(default='concat', choices=INTERACTIONS)


#: `ModelConfig` fields that come from the data and the pooling, not from `config.model`.
DATA_FIELDS = ('vocab_size', 'max_length', 'prepend_cls')


def model_fields() -> dict[str, dataclasses.Field]:
  """The keys `config.model` may hold, by name: `HeadConfig`'s and `ModelConfig`'s fields, less
  `DATA_FIELDS`."""
  fields = [*dataclasses.fields(HeadConfig), *dataclasses.fields(ModelConfig)]
  return {f.name: f for f in fields if f.name not in DATA_FIELDS}


def split_model_config(model_config: Mapping[str, Any]) -> tuple[HeadConfig, dict[str, Any]]:
  """Splits a checked `config.model` mapping into its `HeadConfig` and the `ModelConfig` keyword
  arguments it sets (the data fields are the caller's to add)."""
  head_keys = {f.name for f in dataclasses.fields(HeadConfig)}
  head = HeadConfig(**{k: v for k, v in model_config.items() if k in head_keys})
  return head, {k: v for k, v in model_config.items() if k not in head_keys}


def upgrade_model_config(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """A stored `config.model` (a workdir's `config.json`, a checkpoint's record) in today's keys:
  a former `dtype` becomes the `precision` that computes what it did ('float32' -> 'float32',
  'bfloat16' -> 'bfloat16_all'), so runs made before the precision policies resume and load; a
  `shared_layers` that `UNTIED_MODELS` ignored (before it was refused for them) becomes False,
  what those runs trained."""
  upgraded = dict(model_config)
  if upgraded.get('name') in UNTIED_MODELS:
    upgraded['shared_layers'] = False
  if 'dtype' in upgraded and 'precision' not in upgraded:
    dtype = upgraded.pop('dtype')
    upgraded['precision'] = _DTYPE_PRECISIONS.get(dtype, dtype)
  return upgraded


def check_model_config(model_config: Mapping[str, Any], section: str = 'config.model') -> None:
  """Checks the keys, types and allowed values of a (possibly partial) `config.model` mapping.

  Args:
    model_config: any `HeadConfig` field and any `ModelConfig` field except `DATA_FIELDS`; absent
      keys take their defaults.
    section: the mapping's name in messages.

  Raises:
    config_utils.ConfigError: naming `section.key`, the value and what is allowed.
  """
  fields = model_fields()
  unknown = sorted(set(model_config) - set(fields))
  if unknown:
    renamed = [f'{key} is now {RENAMED_KEYS[key]}' for key in unknown if key in RENAMED_KEYS]
    raise config_utils.ConfigError(
      f'{section}: unknown key(s) {unknown}'
      + (f' ({"; ".join(renamed)})' if renamed else '')
      + f'; known: {sorted(fields)}.'
    )
  hints = {**typing.get_type_hints(HeadConfig), **typing.get_type_hints(ModelConfig)}
  for name, value in model_config.items():
    error = config_utils.value_error(value, hints[name], fields[name].metadata.get('spec', {}))
    if error:
      raise config_utils.ConfigError(f'{section}.{name}={value!r}: {error}.')
  name = model_config.get('name', HeadConfig.name)
  if model_config.get('param_init', ModelConfig.param_init) == 'bert' and name not in BERT_MODELS:
    raise config_utils.ConfigError(
      f"{section}.param_init='bert': the BERT initialisation is implemented for the Luna "
      f'encoder models {BERT_MODELS}, not {name!r}.'
    )
  if model_config.get('normalize_before', ModelConfig.normalize_before) and (
    name.removesuffix(MLM_SUFFIX) != 'luna'
  ):
    raise config_utils.ConfigError(
      f"{section}.normalize_before=True: pre-LN is implemented for the Luna encoder ('luna', "
      f"'luna_mlm'), not {name!r} (the LRA Transformer is pre-LN already; the decoders are "
      'post-LN, as in the paper).'
    )
  if model_config.get('shared_layers', ModelConfig.shared_layers) and name in UNTIED_MODELS:
    raise config_utils.ConfigError(
      f'{section}.shared_layers=True: tied layers are implemented for the encoders (the '
      f"classifiers, the masked LMs and luna_seq2seq's encoder), not {name!r}, whose layers "
      'have parameters of their own; leave the setting out.'
    )
  attention = model_config.get('attention_implementation', ModelConfig.attention_implementation)
  if model_config.get('padding_mask', ModelConfig.padding_mask) == 'nonzero' and (
    name.removesuffix(MLM_SUFFIX) != 'transformer' or attention not in ('softmax', 'fused')
  ):
    raise config_utils.ConfigError(
      f"{section}.padding_mask='nonzero': LRA's inputs > 0 mask is the softmax Transformer's "
      f'(name transformer, attention softmax or fused), not {name!r} with {attention!r}.'
    )
  emb_dim = model_config.get('emb_dim', ModelConfig.emb_dim)
  transformer = name.removesuffix(MLM_SUFFIX) == 'transformer'  # The one model with a qkv_dim.
  widths = {'num_heads': emb_dim if not transformer else model_config.get('qkv_dim') or emb_dim}
  if not transformer and name not in UNTIED_MODELS:  # A Luna encoder's, so a pack attention.
    widths['num_pack_heads'] = emb_dim
  for key, width in widths.items():
    heads = model_config.get(key) or model_config.get('num_heads', ModelConfig.num_heads)
    if width % heads:
      raise config_utils.ConfigError(
        f'{section}.{key}={heads}: must divide the attention width {width} ('
        + ('qkv_dim, or emb_dim where it is unset' if transformer else 'emb_dim')
        + ').'
      )
