"""ListOps on a CPU: the paper's ListOps recipe, shrunk in size and steps to fit 2 CPU cores.

  python -m lra.listops_generator --output_dir data/listops_official   # 96000/2000/2000, 500-2000
  python train.py --config configs/listops_cpu.py:luna16 --workdir runs/listops_cpu/luna16/seed0 \
      --config.data.data_dir=data/listops_official

Everything but size and steps is `configs/listops.py`: the official data distribution (lengths
500-2000, depth <= 10, up to 10 arguments), length 2000, the same tokenisation, CLS pooling, dropout
0.1/0.1, each model's own optimiser and schedule shape (Luna: inverse square root after a linear
warmup, peak 1e-4; Transformer: Tay et al.'s linear warmup then rsqrt decay, at the full recipe's
peak 1.58e-3) with the warmup shrunk in proportion to the steps, and evaluation of the final
parameters on the whole test split. Luna-16 and the Transformer get the same width, depth, heads,
FFN, batch (16) and steps (1500): they differ only in the attention and their recipe's optimiser.
Measured (benchmarks/results/cpu/listops_small/, 2 CPU cores): Luna-16 test accuracy 17.25%, the
majority class's share, at about 1 step/s on a quiet machine; the Transformer takes about 4 s/step.
"""

from __future__ import annotations

import ml_collections

from configs import listops

#: Steps and warmup of the CPU protocol (the full recipe: 5000 and 1000).
NUM_TRAIN_STEPS = 1500
WARMUP_STEPS = 300


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """ListOps CPU-protocol config for `arg` = 'variant[,debug]' (default luna16)."""
  config = listops.get_config(arg or 'luna16')
  # Same size for every variant: 1 layer (Luna's released ListOps depth) of width 128, 4 heads,
  # FFN 256, head 128 -> 256 -> 10.
  config.model.update(num_layers=1, emb_dim=128, mlp_dim=256, num_heads=4,
                      classifier_hidden_dim=256)
  if config.model.name == 'transformer':
    # The Transformer's attention width follows the model width, as in the full recipe (512/512).
    config.model.qkv_dim = 128
    # rsqrt_decay peaks at learning_rate / sqrt(warmup_steps): keep the full recipe's peak (1.58e-3).
    config.optimizer.learning_rate *= (WARMUP_STEPS / config.optimizer.warmup_steps) ** 0.5
  config.optimizer.warmup_steps = WARMUP_STEPS
  # Batch 16 (the recipe: 32); validation on the whole split every 500 steps, test at the end.
  config.training.update(batch_size=16, num_train_steps=NUM_TRAIN_STEPS, eval_every=500,
                         log_every=50, checkpoint_every=250)
  return config
