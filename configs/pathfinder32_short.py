r"""Pathfinder-32 in one 15-minute GPU session: the recipes of configs/pathfinder32.py, shortened.

  python -m lra.pathfinder_generator --output_dir data/lra_release/lra_release --resolution 32 \
      --difficulty hard --num_examples 200000 --seed 0 --num_workers 16
  python train.py --config configs/pathfinder32_short.py:luna16 --workdir runs/pf32_short_luna16 \
      --config.data.data_dir=data/lra_release/lra_release

Everything but the schedule's length is configs/pathfinder32.py: the data (200,000 generated images
split 80/10/10, the release's size), the model, batch 512, the optimiser and its peak learning rate,
evaluation every 312 steps (one epoch of 160,000 examples). The steps are what one GPU call holds
with Luna-16 and the Transformer sharing one GPU (benchmarks/results/gpu/README.md), each model
family its own budget, since their steps differ tenfold in cost:
- Luna: `LUNA_STEPS` of its 62500 steps, the warmup shrunk in proportion (4000 -> 384), then the
  same inverse square root decay;
- the Transformer family: `TRANSFORMER_STEPS` of its 62400, the warmup kept at 312 steps (one epoch;
  in proportion it would be 8) and the cosine cycle compressed to the run, so that it ends at a
  learning rate of 0.
Expected test accuracy: below the paper's (Table 1: Luna-16 78.36%, Transformer 71.40%, after 62500
steps); these runs show whether and how soon each model learns (chance 50%).
Expected run time on one H200 (an estimate, not a measurement: the ratio of XLA's cost analysis of
the train steps, bytes accessed, to that of the ListOps steps measured on the H200 in
benchmarks/results/gpu/): about 19 ms a step for Luna-16 (1.9 minutes for 6000 steps alone) and
about 180 ms for the Transformer (4.5 minutes for 1500 steps alone), 6.5 minutes together on one
GPU, evaluations included.
"""

from __future__ import annotations

import ml_collections

from configs import base, pathfinder32

#: Steps of the Luna recipe (the full one: 62500) and of the Transformer family's (62400).
LUNA_STEPS = 6000
TRANSFORMER_STEPS = 1500


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Shortened Pathfinder-32 config for `arg` = 'variant[,debug][,spt]' (default luna16)."""
  config = pathfinder32.get_config(base.with_default(arg, 'luna16'))
  full = config.training.num_train_steps
  if config.model.name == 'transformer':
    steps = TRANSFORMER_STEPS
    config.optimizer.steps_per_cycle = steps
  else:
    steps = LUNA_STEPS
    config.optimizer.warmup_steps = round(config.optimizer.warmup_steps * steps / full)
  config.training.num_train_steps = steps
  return config
