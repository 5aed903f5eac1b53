"""Converts the authors' pretrained Luna masked LM (fairseq-apollo `luna_bert`) to a luna_jax run.

  python -m luna_jax.training.convert_fairseq --checkpoint luna.base.tied/model.pt \\
      --dict luna.base.tied/dict.txt --output converted/luna.base.tied

reads a fairseq checkpoint of the authors' `luna_bert` model (fairseq-apollo
`fairseq/models/luna_bert/model.py`: `LunaBertEncoder` = `LunaSentenceEncoder` + `LunaLMHead`; the
released `luna.base.tied` and `luna.base.untied`, `examples/luna/README.md`) and writes `--output`
as a luna_jax workdir holding one verified checkpoint (`checkpoints/0`, the format of
`luna_jax.training.checkpointing`) of the `luna_mlm` model (`luna_jax.model.mlm.MaskedLM`, pooling
'first': no CLS vector, the tokenizer's `<s>` comes first as in fairseq), plus `conversion.json`
(what was read and how). `--config.init_from=<output>` then finetunes it (configs/glue.py).

It lives beside `pretrained.py` and `checkpointing.py`, whose checkpoint it writes for
`config.init_from`; the PyTorch file is read without PyTorch (`torch_checkpoint`).

The mapping (fairseq key under `encoder.` -> luna_jax parameter under `params/`):

  sentence_encoder.embed_tokens.weight        sequence_encoder/embed/token_embedding/embedding
                                              (row for row: fairseq's dictionary ids)
  sentence_encoder.embed_positions.weight     sequence_encoder/embed/position_embedding: rows
                                              pad + 1 = 2 onwards (fairseq numbers the positions
                                              of real tokens from padding_idx + 1; rows 0 and 1
                                              are never used by a real token and are skipped)
  sentence_encoder.projected_embeddings       sequence_encoder/projected_embeddings (the first P)
  sentence_encoder.emb_layer_norm             sequence_encoder/embedding_norm
  sentence_encoder.proj_emb_layer_norm        sequence_encoder/projected_embedding_norm
  sentence_encoder.layers.<i>.self_attn.      sequence_encoder/layer_<i>/attention/
      pq_proj, q_proj, out_proj                   pack_query, query, out
      pc_proj, c_proj (tied K/V)                  pack_kv, kv
      pk_proj, pv_proj, k_proj, v_proj            pack_key, pack_value, key, value
  sentence_encoder.layers.<i>.                sequence_encoder/layer_<i>/
      self_attn_layer_norm                        x_norm
      self_atten_proj_layer_norm                  p_norm
      fc1, fc2, final_layer_norm                  ffn/fc1, ffn/fc2, ffn_norm
  lm_head.dense, lm_head.layer_norm           lm_head/dense, lm_head/norm
  lm_head.bias                                lm_head/bias
  lm_head.weight                              none: it must equal embed_tokens.weight (luna_jax
                                              ties the output projection to the embedding)

Linear weights `[out, in]` become kernels `[in, out]`; LayerNorm weight/bias become scale/bias;
half-precision tensors become float32 exactly. Deliberately skipped: `classification_heads.*`
(a finetuned head; luna_jax's head is new) and the two position rows above. Any other key, a
missing key, a shape that does not follow from the checkpoint's arguments, or an argument the
luna_jax model does not implement (`fix_projection_length`, `untie_weights_luna`, an activation
other than exact GELU, `encoder_layers_to_keep`, quantisation noise) is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from corpora import text_tokenizers
from luna_jax.model.build import build_model
from luna_jax.training import checkpointing, pretrained, torch_checkpoint

#: The architectures registered for `luna_bert` (fairseq-apollo
#: `fairseq/models/luna_bert/model.py`).
LUNA_BERT_ARCHS = (
  'luna_bert',
  'luna_base_512',
  'luna_base_tied_512',
  'luna_base_untied_512',
  'luna_base_2048',
  'luna_large_512',
  'luna_large_2048',
)
#: Luna's translation architectures (fairseq-apollo `fairseq/models/luna.py`): not a masked LM.
LUNA_MT_ARCHS = ('luna', 'luna_base', 'luna_base_tied', 'luna_base_untied')
#: fairseq's padding id, which offsets the learned positions (`LearnedPositionalEmbedding`).
PAD_ID = text_tokenizers.FAIRSEQ_PAD_ID
#: The file in the output that marks a conversion (and so may be replaced with --overwrite).
RECORD_FILE = 'conversion.json'
#: fairseq projection name -> luna_jax attention parameter name.
_TIED_PROJECTIONS = {'pq_proj': 'pack_query', 'q_proj': 'query', 'pc_proj': 'pack_kv'}
_TIED_PROJECTIONS.update({'c_proj': 'kv', 'out_proj': 'out'})
_UNTIED_PROJECTIONS = {'pq_proj': 'pack_query', 'q_proj': 'query', 'pk_proj': 'pack_key'}
_UNTIED_PROJECTIONS.update({'pv_proj': 'pack_value', 'k_proj': 'key', 'v_proj': 'value'})
_UNTIED_PROJECTIONS['out_proj'] = 'out'
#: fairseq layer-norm name (in a layer) -> luna_jax name.
_LAYER_NORMS = {
  'self_attn_layer_norm': 'x_norm',
  'self_atten_proj_layer_norm': 'p_norm',
  'final_layer_norm': 'ffn_norm',
}


class ConversionError(ValueError):
  """The inputs cannot be converted (the message names the file, key, shape or argument)."""


@dataclasses.dataclass(frozen=True)
class LunaBertArchitecture:
  """The settings of a `luna_bert` model, from its checkpoint's `args` (defaults: the
  `base_architecture` of fairseq-apollo `fairseq/models/luna_bert/model.py`).

  Attributes:
    arch: the registered architecture name.
    num_layers: `encoder_layers`.
    emb_dim: `encoder_embed_dim`.
    mlp_dim: `encoder_ffn_embed_dim`.
    num_heads: `encoder_attention_heads` (pack and unpack).
    projection_length: `projection_length`, Luna's l.
    max_positions: `max_positions`, the learned positions.
    tie_kv: not `untie_luna_kv`.
    dropout: `dropout` of the pretraining.
    attention_dropout: `attention_dropout` of the pretraining.
    activation_dropout: `activation_dropout` of the pretraining.
  """

  arch: str
  num_layers: int
  emb_dim: int
  mlp_dim: int
  num_heads: int
  projection_length: int
  max_positions: int
  tie_kv: bool
  dropout: float
  attention_dropout: float
  activation_dropout: float

  def model_config(self) -> dict[str, Any]:
    """The luna_jax `config.model` of this architecture (`luna_mlm`, pooling 'first')."""
    return {
      'name': 'luna_mlm',
      'pooling': 'first',
      'num_layers': self.num_layers,
      'emb_dim': self.emb_dim,
      'mlp_dim': self.mlp_dim,
      'num_heads': self.num_heads,
      'projection_length': self.projection_length,
      'tie_kv': self.tie_kv,
      'normalize_before': False,
      'activation': 'gelu',
      'positional': 'learned',
      'embedding_layernorm': True,
      'embed_scale': False,
      'contextual_p': True,
      'dropout_rate': self.dropout,
      'attention_dropout_rate': self.attention_dropout,
      'activation_dropout_rate': self.activation_dropout,
    }


def _arguments(state: Any, where: str) -> dict[str, Any]:
  """The training arguments of a fairseq checkpoint: `args` (an argparse Namespace), or the
  `model` section of a newer fairseq's `cfg`."""
  args = state.get('args')
  if args is None and isinstance(state.get('cfg'), Mapping):
    args = state['cfg'].get('model')
  if isinstance(args, argparse.Namespace):
    return vars(args)
  if isinstance(args, Mapping):
    return dict(args)
  raise ConversionError(
    f'{where}: no readable fairseq training arguments (args or cfg.model; found '
    f'{type(args).__name__}); not a checkpoint written by fairseq-apollo.'
  )


def read_architecture(args: Mapping[str, Any], where: str) -> LunaBertArchitecture:
  """Checks a `luna_bert` checkpoint's arguments and returns its architecture.

  Args:
    args: the checkpoint's training arguments.
    where: the checkpoint, for messages.

  Returns:
    The architecture.

  Raises:
    ConversionError: another model (RoBERTa, Luna for translation, any non-`luna_bert` arch), or
      an argument the luna_jax model does not implement, naming it and its value.
  """
  arch = str(args.get('arch', ''))
  if arch.startswith('roberta'):
    raise ConversionError(
      f'{where}: a RoBERTa checkpoint (arch {arch!r}): softmax attention, not Luna; this converts '
      f"the authors' luna_bert models only ({', '.join(LUNA_BERT_ARCHS)})."
    )
  if arch in LUNA_MT_ARCHS:
    raise ConversionError(
      f'{where}: a Luna translation model (arch {arch!r}), not the luna_bert masked LM '
      f'({", ".join(LUNA_BERT_ARCHS)}).'
    )
  if arch not in LUNA_BERT_ARCHS:
    raise ConversionError(
      f"{where}: arch {arch!r} is not a Luna masked LM; this converts the authors' luna_bert "
      f'models only ({", ".join(LUNA_BERT_ARCHS)}).'
    )
  get = lambda name, default: default if args.get(name) is None else args[name]
  unsupported = {
    'fix_projection_length': (get('fix_projection_length', False), False),
    'untie_weights_luna': (get('untie_weights_luna', False), False),
    'activation_fn': (get('activation_fn', 'gelu'), 'gelu'),
    'encoder_layers_to_keep': (get('encoder_layers_to_keep', None), None),
    'quant_noise_pq': (get('quant_noise_pq', 0), 0),
  }
  for name, (value, supported) in unsupported.items():
    if value != supported:
      raise ConversionError(
        f'{where}: argument {name}={value!r} is not supported (luna_jax implements {name}='
        f'{supported!r}: dynamic projection length, LM head tied to the embedding, exact GELU, '
        'all layers, no quantisation).'
      )
  return LunaBertArchitecture(
    arch=arch,
    num_layers=int(get('encoder_layers', 12)),
    emb_dim=int(get('encoder_embed_dim', 768)),
    mlp_dim=int(get('encoder_ffn_embed_dim', 3072)),
    num_heads=int(get('encoder_attention_heads', 12)),
    projection_length=int(get('projection_length', 128)),
    max_positions=int(get('max_positions', 512)),
    tie_kv=not bool(get('untie_luna_kv', False)),
    dropout=float(get('dropout', 0.1)),
    attention_dropout=float(get('attention_dropout', 0.1)),
    activation_dropout=float(get('activation_dropout', 0.0)),
  )


def _linear(prefix: str, target: str, d_in: int, d_out: int) -> dict[str, tuple[str, tuple, bool]]:
  """A torch Linear's two tensors -> (luna_jax path, expected source shape, transpose)."""
  return {
    f'{prefix}.weight': (f'{target}/kernel', (d_out, d_in), True),
    f'{prefix}.bias': (f'{target}/bias', (d_out,), False),
  }


def _norm(prefix: str, target: str, d: int) -> dict[str, tuple[str, tuple, bool]]:
  """A LayerNorm's two tensors -> (luna_jax path, expected source shape, transpose)."""
  return {
    f'{prefix}.weight': (f'{target}/scale', (d,), False),
    f'{prefix}.bias': (f'{target}/bias', (d,), False),
  }


def key_map(
  arch: LunaBertArchitecture, vocab_rows: int
) -> dict[str, tuple[str, tuple[int, ...], bool]]:
  """Every source key the model has (without the `encoder.` prefix) -> (luna_jax parameter path
  under `params/`, the expected source shape, whether the tensor is transposed).

  `sentence_encoder.embed_positions.weight` maps to the position table after dropping its first
  pad + 1 rows; `lm_head.weight` is absent here (checked equal to the embedding instead).
  """
  d, ff, s = arch.emb_dim, arch.mlp_dim, 'sentence_encoder'
  e = 'sequence_encoder'
  keys = {
    f'{s}.embed_tokens.weight': (f'{e}/embed/token_embedding/embedding', (vocab_rows, d), False),
    f'{s}.embed_positions.weight': (
      f'{e}/embed/position_embedding',
      (arch.max_positions + PAD_ID + 1, d),
      False,
    ),
    f'{s}.projected_embeddings': (f'{e}/projected_embeddings', (arch.projection_length, d), False),
    **_norm(f'{s}.emb_layer_norm', f'{e}/embedding_norm', d),
    **_norm(f'{s}.proj_emb_layer_norm', f'{e}/projected_embedding_norm', d),
    **_linear('lm_head.dense', 'lm_head/dense', d, d),
    **_norm('lm_head.layer_norm', 'lm_head/norm', d),
    'lm_head.bias': ('lm_head/bias', (vocab_rows,), False),
  }
  projections = _TIED_PROJECTIONS if arch.tie_kv else _UNTIED_PROJECTIONS
  for i in range(arch.num_layers):
    source, target = f'{s}.layers.{i}', f'{e}/layer_{i}'
    for name, new in projections.items():
      keys.update(_linear(f'{source}.self_attn.{name}', f'{target}/attention/{new}', d, d))
    for name, new in _LAYER_NORMS.items():
      keys.update(_norm(f'{source}.{name}', f'{target}/{new}', d))
    keys.update(_linear(f'{source}.fc1', f'{target}/ffn/fc1', d, ff))
    keys.update(_linear(f'{source}.fc2', f'{target}/ffn/fc2', ff, d))
  return keys


def _float32(array: np.ndarray, key: str, where: str) -> np.ndarray:
  if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != 'bfloat16':
    raise ConversionError(f'{where}: {key} is {array.dtype}, not a floating-point tensor.')
  return array.astype(np.float32)


def convert_state_dict(
  checkpoint: torch_checkpoint.TorchCheckpoint,
  arch: LunaBertArchitecture,
  dictionary: text_tokenizers.FairseqDictionary,
) -> tuple[dict[str, np.ndarray], list[str]]:
  """Maps the checkpoint's `model` state dict onto the luna_jax `luna_mlm` parameters.

  Args:
    checkpoint: the open fairseq checkpoint.
    arch: its architecture (`read_architecture`).
    dictionary: the model's dictionary (its ids are the embedding's rows, `<mask>` last).

  Returns:
    (flat parameters by '/'-path under `params/`, float32; the source keys skipped on purpose).

  Raises:
    ConversionError: a key that is unknown, missing or of another shape (naming it), an embedding
      whose rows do not match the dictionary, or an LM head not tied to the embedding.
  """
  where = str(checkpoint.path)
  state = checkpoint.obj['model']
  # Old fairseq masked LMs named the encoder 'decoder' (`LunaBertModel.upgrade_state_dict_named`).
  prefix = 'encoder.' if any(key.startswith('encoder.') for key in state) else 'decoder.'
  tensors = {}
  for key, value in state.items():
    if not isinstance(value, torch_checkpoint.TensorRef):
      raise ConversionError(
        f'{where}: model entry {key} is a {type(value).__name__}, not a tensor.'
      )
    tensors[key.removeprefix(prefix) if key.startswith(prefix) else key] = value
  if not any(k.startswith('sentence_encoder.projected_embeddings') for k in tensors):
    roberta = any('.self_attn.k_proj.' in k or 'in_proj_weight' in k for k in tensors)
    raise ConversionError(
      f"{where}: no sentence_encoder.projected_embeddings (Luna's P): "
      + (
        'a RoBERTa/Transformer masked LM, not Luna.'
        if roberta
        else "not the authors' luna_bert model."
      )
    )
  vocab_rows = dictionary.mask_id + 1
  embedding = tensors.get('sentence_encoder.embed_tokens.weight')
  if embedding is not None and embedding.shape[:1] != (vocab_rows,):
    raise ConversionError(
      f'{where}: the token embedding has {embedding.shape[0]} rows, but the dictionary gives '
      f'{vocab_rows} ids (4 specials + {len(dictionary.symbols) - 4} lines of dict.txt + '
      "<mask>): this dict.txt is not the model's."
    )
  keys = key_map(arch, vocab_rows)
  skipped = sorted(k for k in tensors if k.startswith('classification_heads.'))
  expected = {*keys, 'lm_head.weight'}
  unknown = sorted(set(tensors) - expected - set(skipped))
  missing = sorted(expected - set(tensors))
  if unknown or missing:
    raise ConversionError(
      f"{where}: the state dict is not that of luna_bert {arch.arch} with the checkpoint's "
      f'arguments: unknown key(s) {[prefix + k for k in unknown]}, missing key(s) '
      f'{[prefix + k for k in missing]}.'
    )
  params = {}
  for key, (target, shape, transpose) in keys.items():
    if tensors[key].shape != shape:
      raise ConversionError(
        f'{where}: {prefix}{key} has shape {tensors[key].shape}, expected {shape} from the '
        f'arguments ({arch}).'
      )
    array = _float32(checkpoint.array(tensors[key]), prefix + key, where)
    if key.endswith('embed_positions.weight'):
      array = array[PAD_ID + 1 :]
    params[target] = np.ascontiguousarray(array.T) if transpose else array
  head = tensors['lm_head.weight']
  if head.shape != tensors['sentence_encoder.embed_tokens.weight'].shape or not np.array_equal(
    checkpoint.array(head), checkpoint.array(tensors['sentence_encoder.embed_tokens.weight'])
  ):
    raise ConversionError(
      f'{where}: {prefix}lm_head.weight differs from the token embedding (an untied LM head); '
      'luna_jax ties the output projection to the embedding.'
    )
  skipped += [
    f'{prefix}sentence_encoder.embed_positions.weight rows 0-{PAD_ID} (padding positions)',
    f'{prefix}lm_head.weight (the token embedding, tied)',
  ]
  return params, skipped


def parameter_shapes(arch: LunaBertArchitecture, vocab_size: int) -> dict[str, tuple[int, ...]]:
  """The parameter shapes of the luna_jax `luna_mlm` model of `arch`.

  Args:
    arch: the architecture.
    vocab_size: the dictionary's ids without `<mask>` (the model adds it).

  Returns:
    Shape by '/'-path under `params/` (computed abstractly: no memory, no initialisation).
  """
  model = build_model(
    arch.model_config(),
    vocab_size=vocab_size,
    num_classes=vocab_size,
    max_length=arch.max_positions,
    special_ids=(0, 1, 2, 3),
  )
  tokens = jnp.zeros((1, arch.max_positions), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, jnp.ones(1, jnp.int32)))
  return {
    path.removeprefix('params/'): tuple(leaf.shape)
    for path, leaf in checkpointing.flat_leaves(shapes).items()
  }


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 24), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _check_output(output: Path, overwrite: bool) -> None:
  if not output.exists() or (output.is_dir() and not any(output.iterdir())):
    return
  if not overwrite:
    raise ConversionError(
      f'{output} exists and is not empty; give --overwrite to replace an earlier conversion, or '
      'another --output.'
    )
  if not (output / RECORD_FILE).is_file():
    raise ConversionError(
      f'{output} exists and was not written by this converter (no {RECORD_FILE}); '
      '--overwrite only replaces an earlier conversion. Remove it yourself or choose another '
      '--output.'
    )


def convert(checkpoint: str, dictionary: str, output: str, overwrite: bool = False) -> dict:
  """Converts a fairseq-apollo `luna_bert` checkpoint into a luna_jax workdir (module docstring).

  Args:
    checkpoint: the fairseq `model.pt`.
    dictionary: its `dict.txt`.
    output: the folder to write (a luna_jax workdir with `checkpoints/0` and `conversion.json`);
      written under a temporary name and renamed when verified.
    overwrite: replace `output` if it holds an earlier conversion.

  Returns:
    The conversion record (also in `<output>/conversion.json`).

  Raises:
    FileNotFoundError: no checkpoint file.
    ConversionError: `output` is in the way; no dictionary file; a truncated or non-PyTorch file;
      a checkpoint that is not a `luna_bert` model, or one with an unsupported argument, key or
      shape; a dictionary not in fairseq's format or not the model's (each naming what and where).
  """
  source, out = Path(checkpoint).expanduser(), Path(output).expanduser().absolute()
  _check_output(out, overwrite)
  try:
    vocab = text_tokenizers.read_fairseq_dictionary(Path(dictionary))
  except text_tokenizers.DataError as e:
    raise ConversionError(str(e)) from None
  try:
    ckpt = torch_checkpoint.load(source)
  except torch_checkpoint.TorchCheckpointError as e:
    raise ConversionError(str(e)) from None
  with ckpt:
    if not isinstance(ckpt.obj, Mapping) or not isinstance(ckpt.obj.get('model'), Mapping):
      raise ConversionError(f'{source}: no "model" state dict; not a fairseq checkpoint.')
    arch = read_architecture(_arguments(ckpt.obj, str(source)), str(source))
    try:
      params, skipped = convert_state_dict(ckpt, arch, vocab)
    except torch_checkpoint.TorchCheckpointError as e:
      raise ConversionError(str(e)) from None
  target = parameter_shapes(arch, len(vocab.symbols))
  ours = {path: array.shape for path, array in params.items()}
  if ours != target:
    raise ConversionError(
      f'the converted parameters do not fit the luna_jax model: {sorted(set(ours) ^ set(target))}'
    )
  record = {
    'config': {'model': arch.model_config()},
    'vocabulary': vocab.name,
    'converted_from': {
      'checkpoint': str(source.absolute()),
      'checkpoint_sha256': _sha256(source),
      'dictionary': str(Path(dictionary).expanduser().absolute()),
      'architecture': dataclasses.asdict(arch),
      'tensors': len(params),
      'skipped': skipped,
    },
  }
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = out.with_name(f'.{out.name}.converting-{os.getpid()}')
  shutil.rmtree(staging, ignore_errors=True)
  try:
    checkpointer = checkpointing.Checkpointer(str(staging), keep=1)
    try:
      checkpointer.save(0, {'params': traverse_util.unflatten_dict(params, sep='/')}, record)
    finally:
      checkpointer.close()
    _verify(staging, params, vocab.name)
    (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + '\n')
    if out.exists():
      shutil.rmtree(out)
    os.replace(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return record


def _verify(workdir: Path, params: Mapping[str, np.ndarray], vocabulary: str) -> None:
  """Reads the written checkpoint back as `config.init_from` does and compares every array.

  Raises:
    ConversionError: an array that does not read back equal, or a record `init_from` refuses.
  """
  tree, record, _ = checkpointing.read_checkpoint(str(workdir))
  stored = checkpointing.flat_leaves(tree['params'])
  bad = sorted(p for p in params if p not in stored or not np.array_equal(stored[p], params[p]))
  encoder = pretrained.load_encoder(str(workdir))
  if bad or encoder.vocabulary != vocabulary or encoder.encoder_name != 'luna':
    raise ConversionError(f'{workdir}: the written checkpoint does not read back ({bad[:5]}).')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog='python -m luna_jax.training.convert_fairseq',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--checkpoint', required=True, help='fairseq luna_bert model.pt')
  parser.add_argument('--dict', required=True, help='its fairseq dictionary, dict.txt')
  parser.add_argument('--output', required=True, help='folder to write (a luna_jax workdir)')
  parser.add_argument(
    '--overwrite', action='store_true', help='replace the output of an earlier conversion'
  )
  args = parser.parse_args(argv)
  try:
    record = convert(args.checkpoint, args.dict, args.output, args.overwrite)
  except (ConversionError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  arch = record['converted_from']['architecture']
  print(
    f'Converted {args.checkpoint} ({arch["arch"]}, {arch["num_layers"]} layers, width '
    f'{arch["emb_dim"]}, l = {arch["projection_length"]}, '
    f'{"tied" if arch["tie_kv"] else "untied"} K/V; {record["converted_from"]["tensors"]} '
    f'arrays) to {args.output}; vocabulary {record["vocabulary"]}.\nFinetune it with '
    f'{shlex.quote(f"--config.init_from={args.output}")} and '
    '--config.data.options.tokenizer=<a folder with this '
    "dict.txt and GPT-2's encoder.json and vocab.bpe> (configs/glue.py)."
  )


if __name__ == '__main__':
  main()
