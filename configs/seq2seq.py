"""Encoder-decoder Luna (paper §3.3, §4.2) on a generated sequence-to-sequence task, or your text.

  python -m corpora.sequence_generator --task sort --output_dir data/sort
  python train.py --config configs/seq2seq.py --workdir runs/sort

Your own parallel text: `--config.data.data_dir=DIR` with `train.tsv`, `validation.tsv`, `test.tsv`
(lines `source<TAB>target`, byte level; see the README's Data section) and longer
`--config.data.options.max_length` / `max_target_length`. Metrics are per-token accuracy and
`sequence_accuracy` (the fraction of targets that greedy decoding reproduces exactly); decode with
`luna_jax.model.generation.greedy_decode` / `beam_search`. Measured on the generated sort task (4-12
digits, 2 CPU cores, 1.5 to 2.5 minutes): validation sequence accuracy about 0.92 to 1.00 after 3000
steps (0.92, token accuracy 0.991, test 0.988 / 0.886, in 90 s on one machine; 0.978 in 146 s on
another; 0.992 on a third; 1.000 in 115 s on a fourth: the figures vary with the CPU's kernels and
load). `:debug` shrinks it.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """A 2+2-layer, 64-wide Luna-16 encoder-decoder; `arg='debug'` for a smoke test."""
  config = base.get_config()
  config.debug = base.debug_arg(arg, 'configs/seq2seq.py')
  config.data.task = 'seq2seq'
  # Written by `python -m corpora.sequence_generator --task sort --output_dir data/sort`.
  config.data.data_dir = 'data/sort'
  # Source and target lengths in bytes (the target includes its EOS).
  config.data.options = ml_collections.ConfigDict({'max_length': 16, 'max_target_length': 16})
  # Decoder layer 1 takes the encoder's final P; every decoder layer re-packs the encoder output.
  config.model.update(
    name='luna_seq2seq',
    num_layers=2,
    emb_dim=64,
    num_heads=4,
    mlp_dim=128,
    projection_length=16,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    chunk_size=16,
  )
  config.optimizer.update(learning_rate=3e-3, warmup_steps=200)
  config.training.update(
    batch_size=32, num_train_steps=3000, eval_every=500, log_every=50, checkpoint_every=1000
  )
  return config
