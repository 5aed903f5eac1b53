"""Masked-LM pretraining of a Luna encoder on your text: the paper's Table 8 recipe (Luna-128).

  python -m corpora.text_tokenizers --input_dir corpus/ --vocab_size 32000 --model_prefix corpus/spm
  python train.py --config configs/pretrain_mlm.py --workdir runs/pretrain_mlm \\
      --config.data.data_dir=corpus/ --config.data.options.tokenizer=corpus/spm.model

`corpus/` holds `*.txt` files, one document per line (`corpora/corpus.py`); the byte vocabulary
(`tokenizer='bytes'`, the default) needs no tokenizer training. The paper pretrains RoBERTa-base
sized Luna-128 (12 layers, 768, FFN 3072, 12 heads, tied K/V as in the 16GB row of Table 6) for 250k
steps of batch 2048 on 64 V100s (blocks of 512 tokens here: RoBERTa's length, which the table does
not give); metrics are the masked-token accuracy and
perplexity (`validation_accuracy`, `validation_perplexity`); the paper reports no pretraining
figures, only the finetuned ones (Table 6, see configs/glue.py). Finetune the result with
`--config.init_from=runs/pretrain_mlm` (configs/glue.py, or any LRA task config on the same
vocabulary).

Arguments: none (the full recipe), `debug` (a smoke test), `cpu` (a small model that trains on two
CPU cores: 2 layers of width 128, l = 16, blocks of 128 tokens, batch 16, 2000 steps), `cpu,debug`.

Expected, `:cpu` on the README's own text (its commands under "Pretraining on your text", a
1,000-piece SentencePiece vocabulary): measured 14.1% masked-token accuracy and perplexity 196 on
the 4 held-out blocks at step 2000, in 4 minutes 20 seconds on 2 CPU cores, against 5.9% for the
most frequent piece and a unigram perplexity of 280 (the README grows, so the figures drift: 18.8%
and perplexity 83 on a later README; the held-out blocks hold 64 masked tokens, 1.6 points each).
"""

from __future__ import annotations

import ml_collections

from configs import base

VARIANTS = ('full', 'cpu')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The pretraining config for `arg` = '[cpu][,debug]'."""
  parts = [part.strip() for part in (arg or '').split(',') if part.strip()]
  variant = 'cpu' if 'cpu' in parts else 'full'
  if set(parts) - {'cpu', 'debug'}:
    raise base.ConfigError(
      f'configs/pretrain_mlm.py takes "", "cpu", "debug" or "cpu,debug"; got {arg!r}.'
    )
  config = base.get_config()
  config.debug = 'debug' in parts
  config.data.task = 'corpus'
  # Blocks of 512 tokens (RoBERTa), byte tokenizer unless a SentencePiece model is given; 1% of
  # the blocks held out for validation.
  config.data.options = ml_collections.ConfigDict(
    {'max_length': 512, 'tokenizer': 'bytes', 'heldout_fraction': 0.01, 'split_seed': 0}
  )
  # The Luna-BERT encoder with the tied LM head; post-LN, exact GELU, learned positions,
  # LayerNorm on the embeddings and the first P (fairseq-apollo `luna_bert/model.py`).
  base.luna_model(config, 'luna128')
  config.model.update(
    name='luna_mlm',
    pooling='cls',
    num_layers=12,
    emb_dim=768,
    mlp_dim=3072,
    num_heads=12,
    tie_kv=True,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
  )
  # Adam(0.9, 0.98), eps 1e-6, weight decay 0.01, clip 1.0, peak 6e-4 after 15k warmup steps,
  # linear decay to 0 at step 250k.
  config.optimizer.update(
    schedule='constant * linear_warmup * linear_decay',
    learning_rate=6e-4,
    warmup_steps=15000,
    steps_per_cycle=235000,
    weight_decay=0.01,
    b1=0.9,
    b2=0.98,
    eps=1e-6,
    grad_clip_norm=1.0,
  )
  config.training.update(
    batch_size=2048,
    num_train_steps=250000,
    eval_every=5000,
    num_eval_batches=50,
    log_every=100,
    checkpoint_every=5000,
  )
  if variant == 'cpu':
    config.data.options.max_length = 128
    config.model.update(num_layers=2, emb_dim=128, mlp_dim=256, num_heads=4, projection_length=16)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=200, steps_per_cycle=1800)
    config.training.update(
      batch_size=16,
      num_train_steps=2000,
      eval_every=500,
      num_eval_batches=20,
      log_every=50,
      checkpoint_every=500,
    )
  return config
