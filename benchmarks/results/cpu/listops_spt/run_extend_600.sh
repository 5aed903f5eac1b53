#!/bin/bash
# Both runs extended to a total of 600 steps (training.num_train_steps may change on resume):
# scratch 300 -> 600 steps; self-pretraining keeps its 150 pretraining steps (finished stage,
# skipped) and finetunes 150 -> 450 steps.
nice -n 5 python /tmp/mlm_evidence_code/train.py \
  --config /tmp/mlm_evidence_code/configs/listops_cpu.py:luna16 \
  --workdir mlm/scratch \
  --config.data.data_dir=data/listops_official \
  --config.training.num_train_steps=600 --config.optimizer.warmup_steps=120 \
  --config.training.eval_every=300 --config.training.checkpoint_every=100 > scratch_600.log 2>&1 &
cd /tmp/mlm_spt_code
nice -n 5 python train.py --config configs/listops_cpu.py:luna16,spt \
  --workdir mlm/spt \
  --config.data.data_dir=data/listops_official \
  --config.self_pretraining.num_train_steps=150 \
  --config.training.num_train_steps=450 --config.optimizer.warmup_steps=60 \
  --config.training.eval_every=300 --config.training.checkpoint_every=100 > mlm/spt_600.log 2>&1 &
wait
