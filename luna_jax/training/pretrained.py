"""Finetuning from a pretrained encoder (`config.init_from`): load it, check it, graft it.

`load_encoder(path)` reads the encoder of another run (a masked-LM pretraining run, or any
classifier) from its workdir's newest intact checkpoint, or from one checkpoint folder, through
`luna_jax.training.checkpointing.read_checkpoint` (verified against the checkpoint's SHA-256, read
only). `graft(params, encoder, ...)` puts it into a freshly initialised model: the whole encoder
subtree `sequence_encoder` (token and position embeddings, CLS vector, the first P, every layer) is
the checkpoint's, bit for bit; the head stays freshly initialised.

Two tables may be larger in the checkpoint, and their leading rows are taken: the token embedding
(a masked LM has one more id, the mask, after the data's; a byte corpus has a separator after the
bytes), when both runs use the same vocabulary (`lra.vocabulary`); and the position table, when the
new task's sequences are shorter. Anything else that differs fails, naming both sides.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
from flax import traverse_util

from luna_jax import config_utils
from luna_jax.model.config import MLM_SUFFIX
from luna_jax.training import checkpointing, self_pretraining

#: The encoder's subtree in every model that has one (classifiers and masked LMs).
ENCODER_KEY = 'sequence_encoder'
_TOKEN_TABLE = 'embed/token_embedding/embedding'
_POSITION_TABLE = 'embed/position_embedding'


#: The layer of an encoder array's path ('layer_3/...').
_LAYER = re.compile(r'layer_\d+(?=/)')


def _some(paths: list[str], shown: int = 3) -> str:
  """`paths` for a message: all of a few, else how many and the first `shown`."""
  if len(paths) <= shown:
    return str(paths)
  return f'{len(paths)} arrays ({", ".join(paths[:shown])}, ...)'


class InitFromError(config_utils.ConfigError):
  """`config.init_from` names no usable checkpoint, or one that does not fit the model."""


@dataclasses.dataclass(frozen=True)
class PretrainedEncoder:
  """An encoder read from a checkpoint.

  Attributes:
    params: the `sequence_encoder` parameter subtree (nested dicts of numpy arrays).
    vocabulary: name of the vocabulary it was trained on (`lra.vocabulary`).
    encoder_name: 'luna' or 'transformer'.
    checkpoint: the checkpoint folder it was read from.
  """

  params: dict[str, Any]
  vocabulary: str
  encoder_name: str
  checkpoint: str


def load_encoder(path: str) -> PretrainedEncoder:
  """Reads the encoder of the run at `path` (a workdir or `<workdir>/checkpoints/<step>`).

  Raises:
    InitFromError: no such path, a self-pretraining run's top folder (naming its stages), no
      intact checkpoint, or a checkpoint without an encoder or without the record of its
      vocabulary.
  """
  stages = self_pretraining.stages_instead(path, 'start from')
  if stages:
    raise InitFromError(f'config.init_from={path!r}: {stages}')
  try:
    tree, record, checkpoint = checkpointing.read_checkpoint(path)
  except FileNotFoundError as e:
    raise InitFromError(f'config.init_from={path!r}: {e}') from None
  params = tree.get('params', {})
  if ENCODER_KEY not in params:
    raise InitFromError(
      f'config.init_from={path!r}: checkpoint {checkpoint} holds no encoder '
      f'({ENCODER_KEY}); its parameters are {sorted(params)}.'
    )
  if 'vocabulary' not in record:
    raise InitFromError(
      f'config.init_from={path!r}: checkpoint {checkpoint} does not record its '
      'vocabulary (saved by an older version); pretrain again.'
    )
  name = record.get('config', {}).get('model', {}).get('name', 'luna')
  return PretrainedEncoder(
    params[ENCODER_KEY], record['vocabulary'], name.removesuffix(MLM_SUFFIX), checkpoint
  )


def graft(
  params: dict[str, Any], encoder: PretrainedEncoder, *, vocabulary: str, encoder_name: str
) -> dict[str, Any]:
  """`params` with its encoder replaced by the pretrained one (see the module docstring).

  Args:
    params: a freshly initialised model's parameters, with a `sequence_encoder` subtree.
    encoder: the pretrained encoder.
    vocabulary: the name of the new task's vocabulary.
    encoder_name: the new model's encoder ('luna' or 'transformer').

  Returns:
    New parameters: the encoder's arrays are the checkpoint's (numpy, same dtype), the rest are
    `params`'.

  Raises:
    InitFromError: another encoder or vocabulary, arrays missing on one side, or shapes that
      differ (naming the array and both shapes).
  """
  where = f'config.init_from ({encoder.checkpoint})'
  if encoder.encoder_name != encoder_name:
    raise InitFromError(
      f'{where}: pretrained encoder {encoder.encoder_name!r}, this model {encoder_name!r}.'
    )
  if encoder.vocabulary != vocabulary:
    raise InitFromError(
      f'{where}: pretrained on vocabulary {encoder.vocabulary!r}, this task '
      f'uses {vocabulary!r}; finetune with the pretraining tokenizer '
      '(--config.data.options.tokenizer) or pretrain on this vocabulary.'
    )
  if ENCODER_KEY not in params:
    raise InitFromError(f'{where}: this model has no {ENCODER_KEY} to load into.')
  source = checkpointing.flat_leaves(encoder.params)
  target = checkpointing.flat_leaves(params[ENCODER_KEY])
  only_source, only_target = sorted(set(source) - set(target)), sorted(set(target) - set(source))
  if only_source or only_target:
    layers = [len({m.group() for m in map(_LAYER.match, side) if m}) for side in (source, target)]
    counts = f' {layers[0]} pretrained layer(s), {layers[1]} in this model;'
    counts *= layers[0] != layers[1]
    raise InitFromError(
      f'{where}: the encoders differ:{counts} only pretrained {_some(only_source)}, only this '
      f'model {_some(only_target)}. Use the pretraining model settings (layers, pooling: a CLS '
      'vector exists only with pooling "cls", contextual_p, normalize_before).'
    )
  loaded = {}
  for path, fresh in target.items():
    array = np.asarray(source[path])
    rows_may_differ = path in (_TOKEN_TABLE, _POSITION_TABLE)
    fits = (
      array.shape == fresh.shape
      or rows_may_differ
      and array.ndim == 2
      and array.shape[0] >= fresh.shape[0]
      and array.shape[1:] == fresh.shape[1:]
    )
    if not fits:
      what = {_TOKEN_TABLE: ' (vocabulary size)', _POSITION_TABLE: ' (max_length)'}.get(path, '')
      raise InitFromError(
        f'{where}: {ENCODER_KEY}/{path}{what} is {array.shape} pretrained, '
        f'{tuple(fresh.shape)} in this model.'
      )
    if array.dtype != fresh.dtype:
      raise InitFromError(
        f'{where}: {ENCODER_KEY}/{path} is {array.dtype} pretrained, {fresh.dtype} in this model.'
      )
    loaded[path] = array[: fresh.shape[0]] if rows_may_differ else array
  return {**params, ENCODER_KEY: traverse_util.unflatten_dict(loaded, sep='/')}
