"""Finetuning a pretrained Luna encoder on a GLUE-format task: the paper's recipe (§4.3).

  python train.py --config configs/glue.py:sst2 --workdir runs/glue_sst2 \\
      --config.data.data_dir=glue/SST-2 --config.init_from=runs/pretrain_mlm \\
      --config.data.options.tokenizer=corpus/spm.model

`data_dir` holds GLUE's `train.tsv` and `dev.tsv` (`corpora/glue.py`); the tokenizer must be the
pretraining one (a different vocabulary is refused). The model settings are those of
configs/pretrain_mlm.py (same argument `cpu` for its small model): the encoder is loaded from
`init_from`, the classifier head (CLS -> Dense(d) -> ReLU -> Dense(classes); ReLU is this
project's choice, the authors' head and the released models' variants below use tanh) is new.
Recipe (following RoBERTa): batch 32 (of {16, 32}), peak learning rate 1e-5 (of {5e-6, 1e-5,
2e-5}), linear warmup over the first 6% of the steps then linear decay to 0, 10 epochs of GLUE's
training set (`TRAIN_EXAMPLES`, whatever `train.tsv` holds: set the steps for a file of your own),
with the best development-set checkpoint kept (the paper's early stopping). Expected development
accuracy of the paper's Luna-128 (16GB, tied K/V; Table 6): SST-2 93.1, QNLI 91.2, QQP 90.8.

The authors' released Luna-base models (`luna.base.tied`, `luna.base.untied`; convert them first
with `python -m luna_jax.training.convert_fairseq`, see the README) are finetuned with
`,luna_base_tied` or `,luna_base_untied`:

  python train.py --config configs/glue.py:qnli,luna_base_untied --workdir runs/glue_qnli_untied \\
      --config.data.data_dir=glue/QNLI --config.init_from=converted/luna.base.untied \\
      --config.data.options.tokenizer=luna.base.untied

(the tokenizer folder holds the release's `dict.txt` and GPT-2's `encoder.json` and `vocab.bpe`).
Their model: 12 layers, 768, FFN 3072, 12 heads, l = 128, tied or untied K/V, 512 positions, no
CLS vector (pooling 'first': the tokenizer's `<s>`), and the authors' GLUE head (fairseq-apollo
`LunaCLSClassificationHead`: Dense(768) -> tanh -> Dense(classes)); inputs up to 512 tokens, no
gradient clipping, activation dropout 0.1 for QNLI and QQP and 0 for SST-2, as in the authors'
commands (`examples/luna/README.glue.md`); the schedule is the paper's above. Released development
accuracy (README.glue.md): QNLI / QQP / SST-2 91.5 / 91.2 / 94.3 tied, 92.2 / 91.3 / 94.6 untied.

Arguments: `sst2` | `qnli` | `qqp`, optionally followed by `,cpu` or `,luna_base_tied` or
`,luna_base_untied`, and/or `,debug`.
"""

from __future__ import annotations

import ml_collections

from configs import base, pretrain_mlm

#: GLUE task -> training examples (train.tsv rows); 10 epochs of batch 32 set the step count.
TRAIN_EXAMPLES = {'sst2': 67349, 'qnli': 104743, 'qqp': 363846}
EPOCHS = 10
WARMUP_FRACTION = 0.06
#: The authors' released models -> tied K/V.
RELEASED = {'luna_base_tied': True, 'luna_base_untied': False}
#: The authors' finetuning activation dropout (fairseq-apollo `examples/luna/README.glue.md`).
RELEASED_ACTIVATION_DROPOUT = {'sst2': 0.0, 'qnli': 0.1, 'qqp': 0.1}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The finetuning config for `arg` = 'glue_task[,cpu | ,luna_base_tied | ,luna_base_untied]
  [,debug]'."""
  parts = [part.strip() for part in (arg or 'sst2').split(',') if part.strip()]
  tasks = [part for part in parts if part in TRAIN_EXAMPLES]
  models = [part for part in parts if part in ('cpu', *RELEASED)]
  if len(tasks) != 1 or len(models) > 1 or set(parts) - {*TRAIN_EXAMPLES, *models, 'debug'}:
    choices = ', '.join(f'",{model}"' for model in ('cpu', *RELEASED))
    raise base.ConfigError(
      f'configs/glue.py takes one of {sorted(TRAIN_EXAMPLES)}, optionally followed by one of '
      f'{choices} and/or ",debug"; got {arg!r}.'
    )
  config = pretrain_mlm.get_config(','.join(p for p in parts if p in ('cpu', 'debug')))
  config.data.task = 'glue'
  # The GLUE task; sequences (pairs joined by the separator) cut to 128 tokens (the cpu
  # variant: its pretraining block length).
  config.data.options = ml_collections.ConfigDict(
    {
      'glue_task': tasks[0],
      'tokenizer': 'bytes',
      'max_length': min(128, config.data.options.max_length),
    }
  )
  # The pretrained encoder with a new head: CLS -> Dense(emb_dim) -> ReLU -> Dense(classes), with
  # a bias on the logits, as fairseq-apollo fairseq/models/luna_bert/model.py's
  # LunaCLSClassificationHead but for its activation (tanh there; the released variants use it).
  config.model.update(
    name='luna',
    pooling='cls',
    classifier_hidden_dim=config.model.emb_dim,
    classifier_logits_bias=True,
  )
  steps = EPOCHS * TRAIN_EXAMPLES[tasks[0]] // 32
  warmup = int(WARMUP_FRACTION * steps)
  # Peak 1e-5, 6% linear warmup, linear decay to 0 at the last step; weight decay 0.1 (RoBERTa).
  config.optimizer.update(
    learning_rate=1e-5, warmup_steps=warmup, steps_per_cycle=steps - warmup, weight_decay=0.1
  )
  # Batch 32 for 10 epochs; the development set every epoch, whole.
  config.training.update(
    batch_size=32,
    num_train_steps=steps,
    eval_every=steps // EPOCHS,
    num_eval_batches=-1,
    log_every=100,
    checkpoint_every=steps // EPOCHS,
  )
  if models and models[0] in RELEASED:
    # The converted release: no CLS vector (the tokenizer's <s> is pooled), the authors' tanh
    # head, up to 512 tokens (their positions), no clipping, their activation dropout; the
    # tokenizer folder (dict.txt, encoder.json, vocab.bpe) must be given.
    config.data.options.update(tokenizer='', max_length=512)
    config.model.update(
      pooling='first',
      classifier_activation='tanh',
      tie_kv=RELEASED[models[0]],
      activation_dropout_rate=RELEASED_ACTIVATION_DROPOUT[tasks[0]],
    )
    config.optimizer.grad_clip_norm = 0.0
  return config
