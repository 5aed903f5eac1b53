#!/bin/bash
# The from-scratch run stopped after its step-300 checkpoint (same total budget as the 150 + 150
# self-pretraining run); resuming it with 300 steps evaluates those parameters on the whole
# validation and test splits (training.num_train_steps may change on resume).
cd /tmp/mlm_evidence_code
exec nice -n 5 python train.py --config configs/listops_cpu.py:luna16 \
  --workdir mlm/scratch \
  --config.data.data_dir=data/listops_official \
  --config.training.num_train_steps=300 --config.optimizer.warmup_steps=120 \
  --config.training.eval_every=300 --config.training.checkpoint_every=100
