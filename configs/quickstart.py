r"""Quick start: a small Luna on generated short ListOps, a few minutes on 2 CPU cores.

  python -m lra.listops_generator --output_dir data/listops_quickstart --num_train 20000 \
      --num_val 2000 --num_test 2000 --min_length 10 --max_length 60 --max_depth 4 --max_args 5
  python train.py --config configs/quickstart.py --workdir runs/quickstart

The generated expressions are 11-59 tokens long with at most 3 nested operators, so a 2-layer,
64-wide Luna-16 learns them quickly: 2500 steps (0.5 to 3 minutes on 2 CPU cores) reach about 43%
validation and test accuracy (42.00-43.90% validation, 42.85-44.20% test on five machines: the last
digits depend on the CPU's kernels and on the order of the float operations), against 10% for chance
and 12.25% for the majority class of this validation set. The full task is `configs/listops.py`.

The argument is `variant[,debug][,spt]` as for the task configs (default luna16): any variant they
take (configs/variants.py's `CONFIG_VARIANTS`) at the same size and with the same optimiser, so
`configs/quickstart.py:transformer` is the softmax Transformer of the same width and depth, and
`,spt` adds 2500 masked-LM steps of self-pretraining on the training inputs before the 2500
classification steps. Measured over three seeds, with and without self-pretraining:
benchmarks/results/cpu/quickstart_spt/.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Quick-start config for `arg` = 'variant[,debug][,spt]' (default luna16), on
  `data/listops_quickstart`."""
  config, variant = base.task_config('listops', base.with_default(arg, 'luna16'))
  if variant in base.TRANSFORMER_VARIANTS:
    base.transformer_model(config, variant)
    config.model.qkv_dim = 64  # The Transformer's attention width: the model width below.
  else:
    base.luna_model(config, variant)
  # Written by the generator command in the docstring (the README's quick-start line).
  config.data.data_dir = 'data/listops_quickstart'
  # The generated expressions have fewer than 60 tokens.
  config.data.options = ml_collections.ConfigDict({'max_length': 60})
  # Every variant at one size: 2 layers of width 64, 4 heads, FFN 128, head 64 -> 128 -> 10 with a
  # bias on the logits (as when the figures above were measured; luna_model: none), no dropout.
  config.model.update(
    num_layers=2,
    emb_dim=64,
    num_heads=4,
    mlp_dim=128,
    classifier_hidden_dim=128,
    classifier_logits_bias=True,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
  )
  # One optimiser for every variant: Luna's schedule (linear warmup, then inverse square root
  # from the peak 3e-3), Adam eps 1e-9 as when the run above was measured (luna_model: 1e-8).
  config.optimizer.update(
    schedule='constant * linear_warmup * rsqrt_normalized_decay',
    learning_rate=3e-3,
    warmup_steps=200,
    weight_decay=1e-4,
    b1=0.9,
    b2=0.98,
    eps=1e-9,
    grad_clip_norm=0.0,
  )
  config.training.update(
    batch_size=32, num_train_steps=2500, eval_every=500, log_every=50, checkpoint_every=500
  )
  return config
