#!/bin/bash
# Luna-16 on ListOps with self-pretraining: 150 masked-LM steps on the training inputs, then 150
# finetuning steps (each stage: warmup 60). Started as 300 + 300 and cut to 150 + 150 at the
# step-100 checkpoint of the pretrain stage (the machine was too loaded for 600 steps).
cd /tmp/mlm_spt_code
exec nice -n 5 python train.py --config configs/listops_cpu.py:luna16,spt \
  --workdir mlm/spt \
  --config.data.data_dir=data/listops_official \
  --config.self_pretraining.num_train_steps=150 \
  --config.training.num_train_steps=150 --config.optimizer.warmup_steps=60 \
  --config.training.eval_every=300 --config.training.checkpoint_every=100
