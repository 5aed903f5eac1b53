"""The authors' side of `benchmarks/fairseq_equivalence.py`: runs in a Python with PyTorch and
`regex` (not luna_jax's environment; it imports neither jax nor luna_jax).

From a bare git snapshot of XuezheMax/fairseq-apollo it loads, at run time, the authors' own files:
`fairseq/models/luna_bert/model.py` and `hub_interface.py`,
`fairseq/modules/luna_sentence_encoder.py`, `luna_attention.py`, `positional_embedding.py`,
`learned_positional_embedding.py`, `sinusoidal_positional_embedding.py`,
`fairseq/data/dictionary.py`, `fairseq/tokenizer.py` and `fairseq/data/encoders/gpt2_bpe_utils.py`.
The few fairseq helpers they import are replaced by the small stand-ins below (our code: LayerNorm,
dropout, activations, `make_positions`, registries, the `gpt2` BPE wrapper, file helpers).
Then, for one variant (tied or untied K/V), it

  1. builds `LunaBertModel` for `args` (the `luna_bert` architecture at a reduced size) and the
     masked-LM dictionary (`Dictionary.load(dict.txt)` + `<mask>`), and draws every parameter at
     random (biases and LayerNorms too, so that each tensor's mapping matters);
  2. saves it as fairseq does (`args`, `model`, `optimizer_history`, `extra_state`,
     `last_optimizer_state`) with `torch.save`;
  3. runs it in eval mode on the given token batches (right-padded with `<pad>` = 1) and stores
     the masked-LM logits and the final P (`return_packed_features`);
  4. encodes the given texts with the authors' `LunaHubInterface.encode` (GPT-2 BPE + dictionary).

  python benchmarks/fairseq_reference.py --snapshot SNAPSHOT --spec spec.json --out DIR

`spec.json` holds the settings (`args`, `dict`, `encoder_json`, `vocab_bpe`, `batches`, `texts`,
`seed`); DIR receives `model.pt` and `reference.npz` / `reference.json`.
"""

import argparse
import json
import os
import subprocess
import sys
import types

import numpy as np

#: The authors' files, loaded at run time from the snapshot.
AUTHOR_FILES = (
  'fairseq/models/luna_bert/model.py',
  'fairseq/models/luna_bert/hub_interface.py',
  'fairseq/modules/luna_sentence_encoder.py',
  'fairseq/modules/luna_attention.py',
  'fairseq/modules/positional_embedding.py',
  'fairseq/modules/learned_positional_embedding.py',
  'fairseq/modules/sinusoidal_positional_embedding.py',
  'fairseq/data/dictionary.py',
  'fairseq/tokenizer.py',
  'fairseq/data/encoders/gpt2_bpe_utils.py',
)

#: Stand-ins for the fairseq helpers those files import (our own code).
STAND_INS = {
  'fairseq/__init__.py': '',
  'fairseq/utils.py': """
import contextlib
import torch
import torch.nn.functional as F

def softmax(x, dim, onnx_trace=False):
  return F.softmax(x.float(), dim=dim, dtype=torch.float32)

def get_activation_fn(name):
  return {'relu': F.relu, 'gelu': F.gelu, 'tanh': torch.tanh}[name]

def get_available_activation_fns():
  return ['relu', 'gelu', 'tanh']

def make_positions(tensor, padding_idx, onnx_trace=False):
  real = tensor.ne(padding_idx).long()
  return torch.cumsum(real, dim=1) * real + padding_idx

def item(tensor):
  return tensor.item() if hasattr(tensor, 'item') else tensor

@contextlib.contextmanager
def eval(model):
  was_training = model.training
  model.eval()
  yield
  model.train(was_training)
""",
  'fairseq/incremental_decoding_utils.py': """
def with_incremental_state(cls):
  return cls
""",
  'fairseq/binarizer.py': """
def safe_readline(f):
  return f.readline()
""",
  'fairseq/file_io.py': """
import os

class PathManager:
  open = staticmethod(open)

  @staticmethod
  def get_local_path(path):
    return path

  @staticmethod
  def mkdirs(path):
    os.makedirs(path, exist_ok=True)
""",
  'fairseq/data/__init__.py': '',
  'fairseq/data/data_utils.py': """
def post_process(sentence, symbol):
  return sentence
""",
  'fairseq/data/encoders/__init__.py': '''
from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

class _GPT2BPE:
  """fairseq's 'gpt2' BPE: GPT-2 ids written as decimal strings."""

  def __init__(self, encoder_json, vocab_bpe):
    self.bpe = get_encoder(encoder_json, vocab_bpe)

  def encode(self, x):
    return ' '.join(map(str, self.bpe.encode(x)))

def build_bpe(args):
  return _GPT2BPE(args.gpt2_encoder_json, args.gpt2_vocab_bpe)
''',
  'fairseq/modules/__init__.py': """
import torch

def LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, export=False):
  return torch.nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)

class LayerDropModuleList(torch.nn.ModuleList):
  def __init__(self, p, modules=None):
    super().__init__(modules)
    self.p = p

class MultiheadAttention(torch.nn.Module):
  def __init__(self, *args, **kwargs):
    raise RuntimeError('stand-in: the attention classification head is not used here')

from .positional_embedding import PositionalEmbedding
from .luna_attention import LunarMultiheadAttention
from .luna_sentence_encoder import LunaSentenceEncoder
""",
  'fairseq/modules/fairseq_dropout.py': """
import torch.nn as nn
import torch.nn.functional as F

class FairseqDropout(nn.Module):
  def __init__(self, p, module_name=None):
    super().__init__()
    self.p = p

  def forward(self, x, inplace=False):
    return F.dropout(x, self.p, training=self.training, inplace=inplace)
""",
  'fairseq/modules/quant_noise.py': """
def quant_noise(module, p=0, block_size=8):
  return module
""",
  'fairseq/modules/transformer_sentence_encoder.py': """
import torch.nn as nn

def init_bert_params(module):
  if isinstance(module, (nn.Linear, nn.Embedding)):
    module.weight.data.normal_(0.0, 0.02)
  if isinstance(module, nn.Linear) and module.bias is not None:
    module.bias.data.zero_()
""",
  'fairseq/models/__init__.py': """
import torch.nn as nn

class FairseqEncoder(nn.Module):
  def __init__(self, dictionary):
    super().__init__()
    self.dictionary = dictionary

class FairseqEncoderModel(nn.Module):
  def __init__(self, encoder):
    super().__init__()
    self.encoder = encoder

  def max_positions(self):
    return self.encoder.max_positions()

def register_model(name):
  return lambda cls: cls

def register_model_architecture(model, name):
  return lambda fn: fn
""",
  'fairseq/models/luna_bert/__init__.py': '',
}


def build_tree(snapshot: str, root: str, rev: str = 'HEAD') -> str:
  """Writes the authors' files (from the snapshot) and the stand-ins under `root`; returns the
  snapshot commit."""
  git = ['git', f'--git-dir={snapshot}']
  commit = subprocess.run(
    [*git, 'rev-parse', rev], check=True, capture_output=True, text=True
  ).stdout.strip()
  files = dict(STAND_INS)
  for path in AUTHOR_FILES:
    files[path] = subprocess.run(
      [*git, 'show', f'{commit}:{path}'], check=True, capture_output=True, text=True
    ).stdout
  for path, text in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, 'w') as f:
      f.write(text)
  return commit


def randomize(model, torch, seed: int) -> None:
  """Draws every parameter: weights N(0, 1/fan_in), biases N(0, 0.1), LayerNorm scales
  1 + N(0, 0.2), embeddings, positions and P N(0, 1), the LM bias N(0, 0.5)."""
  generator = torch.Generator().manual_seed(seed)
  for name, p in model.named_parameters():
    noise = torch.randn(p.shape, generator=generator)
    if 'layer_norm' in name or 'emb_layer_norm' in name:
      value = (1.0 + 0.2 * noise) if name.endswith('weight') else 0.1 * noise
    elif name.endswith('lm_head.bias'):
      value = 0.5 * noise
    elif name.endswith('bias'):
      value = 0.1 * noise
    elif p.dim() == 2 and ('embed' in name or 'projected' in name):
      value = noise
    else:
      value = noise / p.shape[-1] ** 0.5
    p.data.copy_(value)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--snapshot', required=True)
  parser.add_argument('--spec', required=True)
  parser.add_argument('--out', required=True)
  options = parser.parse_args()
  with open(options.spec) as f:
    spec = json.load(f)
  root = os.path.join(options.out, 'fairseq_tree')
  commit = build_tree(options.snapshot, root)
  sys.path.insert(0, root)
  import torch
  from fairseq.data.dictionary import Dictionary
  from fairseq.models.luna_bert.hub_interface import LunaHubInterface
  from fairseq.models.luna_bert.model import LunaBertModel

  torch.manual_seed(spec['seed'])
  dictionary = Dictionary.load(spec['dict'])
  dictionary.add_symbol('<mask>')
  args = argparse.Namespace(**spec['args'])
  task = types.SimpleNamespace(source_dictionary=dictionary)
  model = LunaBertModel.build_model(args, task)
  randomize(model, torch, spec['seed'])
  model.eval()
  state = model.state_dict()
  torch.save(
    {
      'args': args,
      'model': state,
      'optimizer_history': [{'criterion_name': 'MaskedLmLoss', 'num_updates': 0}],
      'extra_state': {'epoch': 1, 'val_loss': None},
      'last_optimizer_state': {
        'state': {i: {'exp_avg': torch.zeros_like(p)} for i, p in enumerate(model.parameters())}
      },
    },
    os.path.join(options.out, 'model.pt'),
  )
  outputs = {}
  with torch.no_grad():
    for k, batch in enumerate(spec['batches']):
      tokens = torch.tensor(batch, dtype=torch.long)
      logits, extra = model(tokens, return_packed_features=True)
      outputs[f'tokens_{k}'] = tokens.numpy()
      outputs[f'logits_{k}'] = logits.float().numpy()
      outputs[f'p_{k}'] = extra['packed_features'].float().numpy()
  np.savez(os.path.join(options.out, 'reference.npz'), **outputs)
  args.gpt2_encoder_json, args.gpt2_vocab_bpe = spec['encoder_json'], spec['vocab_bpe']
  hub = LunaHubInterface(args, task, model)
  encoded = [hub.encode(*texts).tolist() for texts in spec['texts']]
  with open(os.path.join(options.out, 'reference.json'), 'w') as f:
    json.dump(
      {
        'snapshot_commit': commit,
        'torch': torch.__version__,
        'parameters': sum(p.numel() for p in model.parameters()),
        'state_dict_keys': sorted(state),
        'encoded': encoded,
      },
      f,
      indent=1,
    )


if __name__ == '__main__':
  main()
