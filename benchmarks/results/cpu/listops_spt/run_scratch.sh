#!/bin/bash
# Luna-16 on ListOps from scratch, 600 steps (the self-pretraining run's total budget).
cd /tmp/mlm_evidence_code
exec nice -n 5 python train.py --config configs/listops_cpu.py:luna16 \
  --workdir mlm/scratch \
  --config.data.data_dir=data/listops_official \
  --config.training.num_train_steps=600 --config.optimizer.warmup_steps=120 \
  --config.training.eval_every=300 --config.training.checkpoint_every=100
