"""The converter against the authors' code: a random `luna_bert` saved by fairseq-apollo and
converted by `luna_jax.training.convert_fairseq` gives the same masked-LM logits and final P in
luna_jax; and the GPT-2 BPE tokenizer gives the ids of the authors' `LunaHubInterface.encode`.

  python -m benchmarks.fairseq_equivalence --torch_python /path/to/torch-venv/bin/python \\
      --snapshot /path/to/fairseq-apollo.git --out benchmarks/results/cpu/fairseq_equivalence

For tied and untied K/V: writes small GPT-2 BPE files (trained with Hugging Face `tokenizers` on
the texts below) and a fairseq `dict.txt` of their ids; runs `benchmarks/fairseq_reference.py` in
`--torch_python` (a Python with PyTorch and `regex`), which builds the authors' `LunaBertModel`
(2 layers, width 64, 4 heads, FFN 128, l = 16, 64 positions) with random parameters, saves it with
`torch.save` as a fairseq checkpoint and records its logits and final P on two right-padded token
batches (one longer than l, one shorter: the dynamic projection length) and the ids of the texts;
then converts the checkpoint, runs the luna_jax `MaskedLM` in float32 on the same batches, and
reports the largest absolute differences (logits at real tokens, every row of the P the authors
return). `--fixtures DIR` also writes a tiny version (width 16, l = 4) of both models with their
reference outputs for `tests/test_convert_fairseq.py`, which checks them without PyTorch.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from corpora import text_tokenizers
from luna_jax.model.build import build_model
from luna_jax.training import checkpointing, convert_fairseq

#: GLUE-like texts: the BPE training corpus, and what both tokenizers encode (pairs too).
TEXTS = (
  "it 's a charming and often affecting journey .",
  "The movie was not good, but the acting wasn't bad either!",
  'How do I learn Python in 30 days?',
  'What is the best way to learn Python quickly?',
  'Who founded the city of Rome in 753 BC?',
  'Rome was founded, according to legend, by Romulus and Remus.',
  '  Spaces   around, tabs\there and a newline-free line  ',
  'Unicode: café, naïve, Zürich, 東京, emoji 🙂 and digits 1234567.',
  "I'm sure they'll say we've done what you'd expect.",
)
TEXT_CASES = (
  (TEXTS[0],),
  (TEXTS[1],),
  (TEXTS[6],),
  (TEXTS[7],),
  (TEXTS[8],),
  (TEXTS[2], TEXTS[3]),
  (TEXTS[4], TEXTS[5]),
  ('', TEXTS[0]),
)
#: Model sizes: the reported comparison, and the tiny fixtures of the tests.
SIZES = {
  'small': dict(
    layers=2, dim=64, ffn=128, heads=4, plen=16, positions=64, lengths=((40, 37, 9, 2), (12, 5, 3))
  ),
  'tiny': dict(
    layers=2, dim=16, ffn=32, heads=2, plen=4, positions=16, lengths=((12, 7, 2), (3, 2))
  ),
  # The released models' size, with a dict.txt of RoBERTa's 50260 lines (filler symbols after
  # the BPE ids).
  'base': dict(
    layers=12,
    dim=768,
    ffn=3072,
    heads=12,
    plen=128,
    positions=512,
    lengths=((300, 200, 7), (60, 9)),
    dict_lines=50260,
  ),
}


def write_bpe(folder: Path, vocab_size: int, dict_size: int) -> None:
  """GPT-2-format `encoder.json`/`vocab.bpe` trained on TEXTS, and a `dict.txt` of the
  `dict_size` most frequent BPE ids (fairseq-preprocess order: count, then first seen)."""
  from tokenizers import ByteLevelBPETokenizer

  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(
    list(TEXTS) * 3, vocab_size=vocab_size, min_frequency=1, show_progress=False
  )
  bpe.save_model(str(folder))
  os.replace(folder / 'vocab.json', folder / 'encoder.json')
  os.replace(folder / 'merges.txt', folder / 'vocab.bpe')
  counts = collections.Counter()
  for text in TEXTS:
    counts.update(bpe.encode(text).ids)
  lines = [f'{i} {n}' for i, n in counts.most_common(dict_size)]
  (folder / 'dict.txt').write_text('\n'.join(lines) + '\n')


def batches(lengths: tuple, vocab: int, seed: int) -> list[list[list[int]]]:
  """Right-padded fairseq token batches: `<s>` random regular ids `</s>`, `<pad>` = 1 after."""
  rng = np.random.default_rng(seed)
  out = []
  for group in lengths:
    width = max(group)
    rows = []
    for n in group:
      row = [0, *rng.integers(4, vocab, n - 2).tolist(), 2][:n] if n >= 2 else [0]
      rows.append(row + [1] * (width - n))
    out.append(rows)
  return out


def run_variant(
  name: str, tie: bool, size: str, work: Path, torch_python: str, snapshot: str
) -> dict:
  """Builds, saves and runs the authors' model, converts it, runs luna_jax; returns the figures."""
  cfg = SIZES[size]
  folder = work / f'{size}_{name}'
  folder.mkdir(parents=True)
  write_bpe(
    folder, vocab_size=300 if size == 'tiny' else 400, dict_size=40 if size == 'tiny' else 200
  )
  if 'dict_lines' in cfg:
    lines = (folder / 'dict.txt').read_text().splitlines()
    lines += [f'filler{i} 1' for i in range(cfg['dict_lines'] - len(lines))]
    (folder / 'dict.txt').write_text('\n'.join(lines) + '\n')
  dictionary = text_tokenizers.read_fairseq_dictionary(folder / 'dict.txt')
  vocab = dictionary.mask_id + 1
  args = {
    'arch': 'luna_base_tied_512' if tie else 'luna_base_untied_512',
    'encoder_layers': cfg['layers'],
    'encoder_embed_dim': cfg['dim'],
    'encoder_ffn_embed_dim': cfg['ffn'],
    'encoder_attention_heads': cfg['heads'],
    'projection_length': cfg['plen'],
    'max_positions': cfg['positions'],
    'untie_luna_kv': not tie,
    'encoder_layers_to_keep': None,
    'encoder_layerdrop': 0.0,
    'quant_noise_pq': 0,
    'quant_noise_pq_block_size': 8,
  }
  spec = {
    'seed': 1 if tie else 2,
    'args': args,
    'dict': str(folder / 'dict.txt'),
    'encoder_json': str(folder / 'encoder.json'),
    'vocab_bpe': str(folder / 'vocab.bpe'),
    'batches': batches(cfg['lengths'], vocab - 1, seed=3),
    'texts': [list(case) for case in TEXT_CASES],
  }
  (folder / 'spec.json').write_text(json.dumps(spec))
  script = Path(__file__).with_name('fairseq_reference.py')
  subprocess.run(
    [
      torch_python,
      str(script),
      '--snapshot',
      snapshot,
      '--spec',
      str(folder / 'spec.json'),
      '--out',
      str(folder),
    ],
    check=True,
  )
  reference = np.load(folder / 'reference.npz')
  info = json.loads((folder / 'reference.json').read_text())
  output = folder / 'converted'
  start = time.perf_counter()
  record = convert_fairseq.convert(str(folder / 'model.pt'), str(folder / 'dict.txt'), str(output))
  convert_seconds = time.perf_counter() - start
  tree, _, _ = checkpointing.read_checkpoint(str(output))
  model = build_model(
    record['config']['model'],
    vocab_size=dictionary.mask_id,
    num_classes=dictionary.mask_id,
    max_length=cfg['positions'],
    special_ids=(0, 1, 2, 3),
  )
  variables = {'params': tree['params']}
  figures = {'batches': []}
  for k in range(len(spec['batches'])):
    tokens = reference[f'tokens_{k}']
    lengths = (tokens != 1).sum(1).astype(np.int32)
    logits = np.asarray(model.apply(variables, jnp.asarray(tokens), jnp.asarray(lengths)))
    out = model.apply(
      variables,
      jnp.asarray(tokens),
      jnp.asarray(lengths),
      method=lambda m, t, n: m.sequence_encoder(t, n),
    )
    real = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    p_ref = reference[f'p_{k}']
    p = np.asarray(out.p)[:, : p_ref.shape[1]]
    figures['batches'].append(
      {
        'shape': list(tokens.shape),
        'lengths': lengths.tolist(),
        'p_rows_compared': int(p_ref.shape[1]),
        'logits_max_abs_diff': float(np.abs(logits - reference[f'logits_{k}'])[real].max()),
        'logits_max_abs': float(np.abs(reference[f'logits_{k}'])[real].max()),
        'p_max_abs_diff': float(np.abs(p - p_ref).max()),
        'p_max_abs': float(np.abs(p_ref).max()),
      }
    )
  tok = text_tokenizers.load_tokenizer(str(folder))
  ours = [tok.join([tok.encode(t) for t in case]).tolist() for case in TEXT_CASES]
  figures.update(
    variant=name,
    size=size,
    args=args,
    vocab_size_with_mask=vocab,
    parameters=info['parameters'],
    checkpoint_bytes=(folder / 'model.pt').stat().st_size,
    convert_seconds=round(convert_seconds, 1),
    snapshot_commit=info['snapshot_commit'],
    torch=info['torch'],
    tokenizer_cases=len(TEXT_CASES),
    tokenizer_mismatches=[i for i, (a, b) in enumerate(zip(ours, info['encoded'])) if a != b],
    logits_max_abs_diff=max(b['logits_max_abs_diff'] for b in figures['batches']),
    p_max_abs_diff=max(b['p_max_abs_diff'] for b in figures['batches']),
  )
  figures['folder'] = folder
  return figures


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--torch_python', required=True, help='a Python with torch, numpy, regex')
  parser.add_argument('--snapshot', required=True, help='bare git snapshot of fairseq-apollo')
  parser.add_argument('--out', required=True, help='results folder')
  parser.add_argument('--fixtures', default='', help='also write the tiny test fixtures here')
  parser.add_argument(
    '--sizes', default='small', help="comma-separated sizes of SIZES to compare ('small', 'base')"
  )
  args = parser.parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    sizes = [*args.sizes.split(','), *(['tiny'] if args.fixtures else [])]
    for size in sizes:
      for name, tie in (('tied', True), ('untied', False)):
        figures = run_variant(name, tie, size, Path(tmp), args.torch_python, args.snapshot)
        folder = figures.pop('folder')
        results.append(figures)
        if size == 'tiny':
          fixtures = Path(args.fixtures) / name
          shutil.rmtree(fixtures, ignore_errors=True)
          fixtures.mkdir(parents=True)
          for file in ('model.pt', 'dict.txt', 'encoder.json', 'vocab.bpe', 'reference.npz'):
            shutil.copy(folder / file, fixtures / file)
          encoded = json.loads((folder / 'reference.json').read_text())['encoded']
          (fixtures / 'reference.json').write_text(
            json.dumps({'texts': [list(c) for c in TEXT_CASES], 'encoded': encoded}) + '\n'
          )
  summary = {
    'command': ' '.join(['python -m benchmarks.fairseq_equivalence', *(argv or sys.argv[1:])]),
    'machine': platform.platform(),
    'jax': jax.__version__,
    'results': results,
  }
  (out / 'results.json').write_text(json.dumps(summary, indent=1) + '\n')
  for r in results:
    print(
      f'{r["size"]:5s} {r["variant"]:6s}: logits max |diff| {r["logits_max_abs_diff"]:.2e}, '
      f'P max |diff| {r["p_max_abs_diff"]:.2e}, tokenizer mismatches {r["tokenizer_mismatches"]}'
    )


if __name__ == '__main__':
  main()
