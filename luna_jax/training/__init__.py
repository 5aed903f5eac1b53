"""The training machinery: one trainer for every task and model.

run_config        the experiment config's sections as checked dataclasses (`parse_config`)
steps             the train state and the jitted train and evaluation steps, device selection
trainer           `train_and_evaluate(config, workdir)`: setup, the loop, evaluation, results
command_line      `train.py`'s flag parsing and run: errors as one line, signals, a full disk
checkpointing     verified, atomic checkpoints and the best parameters
optim             learning-rate schedules and the optimizer
metric_log        metrics.jsonl and TensorBoard events; the per-step metric buffer
workdir           the workdir lock
distributed       multi-process set-up (`jax.distributed`)
xla_settings      the XLA flags `train.py` and the benchmarks set
accelerators      the JAX backend and devices logged at start; a warning when JAX runs on the CPU
                  beside an unused GPU or TPU, naming the JAX build to install
pretrained        initialising an encoder from another run (`config.init_from`)
loading           `load_run(workdir)`: a trained run's model and parameters, for generation or
                  evaluation
convert_fairseq   the authors' pretrained Luna-BERT (fairseq-apollo `luna_bert`) as such a run
torch_checkpoint  `torch.save` files read without PyTorch (for convert_fairseq)
self_pretraining  the pretrain-then-finetune stages of one run
translation       beam search, detokenisation and sacreBLEU for translation data
"""

from luna_jax.training.loading import LoadedRun, load_run
from luna_jax.training.run_config import RunConfig, parse_config, resolve_config
from luna_jax.training.steps import TrainState, create_train_state, eval_step, train_step
from luna_jax.training.trainer import train_and_evaluate
