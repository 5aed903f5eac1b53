"""Shared base of every config (the LRA tasks, and the LM, seq2seq, WMT'14, masked-LM and GLUE
recipes): all fields, their defaults and what they mean.

Task files (`configs/<task>.py`) start from `get_config()` and override a few fields; the returned
config is locked, so a misspelt field in a task file or on the command line (`--config.x=y`) fails
with its name. `luna_model` and `transformer_model` set the two model recipes the tasks share.

A task config takes an argument `variant[,debug][,spt]` (default luna256), e.g.
`configs/listops.py:luna256` or `configs/text.py:transformer,debug`, and so do
`configs/quickstart.py`, `configs/listops_cpu.py` and `configs/pathfinder32_short.py` (default
luna16); `configs/lm.py` and `configs/seq2seq.py` take only `debug`.
The variants are the table in configs/variants.py (`CONFIG_VARIANTS`):
  luna16, luna128, luna256   Luna with projection length 16/128/256 (the paper's Table 1 rows)
  luna16_noncontextual       Luna-16 with a learned P per layer, not carried on (Table 5)
  luna16_pmean               Luna-16 classifying the mean of the last layer's P instead of the CLS
                             vector (Table 3's "Luna-16, P"; the pooling 'p')
  transformer                the official LRA Transformer (Tay et al., 2021)
  linformer, linear_transformer, performer
                             the LRA Transformer with Linformer / elu+1 linear / FAVOR+ attention
  debug                      shrink to a smoke test (same as `--config.debug=True`)
  spt                        self-pretraining: masked-LM pretraining on the task's own training
                             inputs (as many steps as the finetuning), then finetuning from it
                             (Amos, Berant and Gupta, "Never Train from Scratch", ICLR 2024)
e.g. `configs/listops.py:luna16,spt,debug`.
"""

from __future__ import annotations

import ml_collections

from configs import variants
from luna_jax.config_utils import ConfigError

#: Transformer-family task-config variants and their `config.model.attention_implementation`.
TRANSFORMER_VARIANTS = {
  name: variants.VARIANTS[name].model['attention_implementation']
  for name in variants.CONFIG_VARIANTS
  if variants.VARIANTS[name].model['name'] == 'transformer'
}


def get_config() -> ml_collections.ConfigDict:
  """The defaults every task config starts from (a Luna-16 ListOps-like setup)."""
  config = ml_collections.ConfigDict()
  # Seed of the parameter initialisation, the dropout keys and the training-data order.
  config.seed = 0
  # Shrink the run to a smoke test: 1 small layer, batch 8, 5 steps, 2 evaluation batches.
  config.debug = False
  # Start from the encoder of this run (its workdir, or <workdir>/checkpoints/<step>); '' = none.
  config.init_from = ''

  config.self_pretraining = ml_collections.ConfigDict()
  # Masked-LM steps on the task's own training inputs before training (0: none; -1: as many as
  # training.num_train_steps). The run then has two stages, <workdir>/pretrain and
  # <workdir>/finetune (initialised from it).
  config.self_pretraining.num_train_steps = 0

  config.data = ml_collections.ConfigDict()
  # Task: an LRA task of lra.TASKS (listops, text, retrieval, image, pathfinder32, pathx; loaded by
  # lra.load_task) or a task of corpora.TASKS (loaded by corpora.load_task): for the token models
  # one of corpora.TOKEN_TASKS (seq2seq, lm, translation), for masked-LM pretraining and finetuning
  # one of corpora.TEXT_TASKS (corpus, glue).
  config.data.task = 'listops'
  # Folder with the task's files (see the README's Data section); set it on the command line.
  config.data.data_dir = ''
  # Keyword options of the task's load_task that the task file sets (max_length, ...); the command
  # line overrides those only, a config file may add others (cache_dir, split_seed).
  config.data.options = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  # Model (luna_jax.MODEL_NAMES): classifiers 'luna', 'transformer'; token models 'luna_lm',
  # 'luna_seq2seq', 'transformer_seq2seq'; masked LMs 'luna_mlm', 'transformer_mlm' (all but the
  # classifiers ignore pooling, classifier_hidden_dim and interaction).
  config.model.name = 'luna'
  # Sequence representation: 'cls' (prepended CLS vector), 'first' (the input's own first token,
  # e.g. RoBERTa's <s>; no CLS vector), 'mean' (real tokens) or 'p' (Luna P).
  config.model.pooling = 'cls'
  # Hidden width of the classifier head (None: mlp_dim); typed placeholder.
  config.model.classifier_hidden_dim = ml_collections.config_dict.placeholder(int)
  # Hidden layers of the head: 1, or 2 (widths h, h // 2: LRA's Retrieval classifier_head_dual).
  config.model.classifier_hidden_layers = 1
  # The classifier head's hidden activation: 'relu' (LRA) or 'tanh' (RoBERTa's GLUE head).
  config.model.classifier_activation = 'relu'
  # A bias on the head's logits layer (LRA, RoBERTa; luna_model turns it off as the authors' code).
  config.model.classifier_logits_bias = True
  # Retrieval features of the two documents: 'concat' [u, v] or 'nli' [u, v, u*v, u-v].
  config.model.interaction = 'concat'
  # Layers of the encoder, and of the decoder of encoder-decoders (luna_lm: its whole depth).
  config.model.num_layers = 4
  # Model width d (embeddings, residual stream).
  config.model.emb_dim = 256
  # Attention heads (Luna: heads of the unpack attention).
  config.model.num_heads = 4
  # Feed-forward hidden width.
  config.model.mlp_dim = 1024
  # Transformer attention width (None: emb_dim); typed placeholder: --config.model.qkv_dim=64 works.
  config.model.qkv_dim = ml_collections.config_dict.placeholder(int)
  # Luna pack-attention heads (None: num_heads, as in the authors' LRA code).
  config.model.num_pack_heads = ml_collections.config_dict.placeholder(int)
  # Luna projection length l (the length of P): 16, 128 or 256 in the paper.
  config.model.projection_length = 16
  # Luna: tie keys and values inside pack and unpack (all released LRA models are untied).
  config.model.tie_kv = False
  # Luna encoders ('luna', 'luna_mlm'): pre-LayerNorm layers instead of the paper's post-LN.
  config.model.normalize_before = False
  # FFN activation: 'gelu' (exact; Luna), 'gelu_tanh' (jax default; official LRA), 'relu'.
  config.model.activation = 'gelu'
  # Dropout on embeddings and residual branches.
  config.model.dropout_rate = 0.1
  # Dropout on attention probabilities.
  config.model.attention_dropout_rate = 0.1
  # Luna and the seq2seq Transformer: dropout after the FFN activation (0 in every LRA recipe).
  config.model.activation_dropout_rate = 0.0
  # Token positions: 'learned' or 'sinusoidal'.
  config.model.positional = 'learned'
  # Luna: LayerNorm on the token embeddings and on the first P (LRA/BERT recipe).
  config.model.embedding_layernorm = True
  # Scale token embeddings (Luna: and the first P) by sqrt(d) (MT recipe, off for LRA).
  config.model.embed_scale = False
  # Transformer attention (luna_jax/model/registry.py TRANSFORMER_ATTENTIONS): 'softmax'
  # (reference), 'fused' (jax.nn.dot_product_attention), or the baselines 'linformer',
  # 'linear' (elu + 1 features) and 'performer' (FAVOR+).
  config.model.attention_implementation = 'softmax'
  # Luna attention (luna_jax/model/registry.py LUNA_ATTENTIONS): 'luna' (pack and unpack, eqs. 3-5).
  config.model.luna_attention_implementation = 'luna'
  # Linformer: length r the keys and values are projected to (LRA default 16).
  config.model.low_rank_features = 16
  # Performer: number of positive orthogonal random features (LRA default 256).
  config.model.nb_features = 256
  # Performer: draw a new random projection at every training step (else one fixed per layer).
  config.model.redraw_features = False
  # Luna: P flows from layer to layer (the paper); False: a learned P per layer (the ablation).
  config.model.contextual_p = True
  # Encoders (not the decoders): one layer num_layers times (fairseq tie_layer_weights, LRA).
  config.model.shared_layers = False
  # Luna classifier init: 'default' (each module's own) or 'bert' (fairseq init_bert_params).
  config.model.param_init = 'default'
  # Transformer attention mask: 'lengths' (past the length) or 'nonzero' (LRA's inputs > 0).
  config.model.padding_mask = 'lengths'
  # Token models: one embedding for source, target and output projection (the WMT recipe).
  config.model.share_embeddings = False
  # Causal Luna (token models): pack activation 'softplus' (beta = ln 2) or 'elu' (elu + 1).
  config.model.omega = 'softplus'
  # Causal Luna: 'chunked' (exact chunked-parallel form) or 'scan' (one step per position).
  config.model.causal_implementation = 'chunked'
  # Causal Luna: positions per chunk of the chunked form.
  config.model.chunk_size = 64
  # Precision policy: 'float32', 'bfloat16' (matmul inputs only) or 'bfloat16_all' (PRECISIONS).
  config.model.precision = 'float32'
  # Backward memory: 'none', 'layer' (recompute each layer) or 'dots' (keep only matmul outputs).
  config.model.remat = 'none'

  config.optimizer = ml_collections.ConfigDict()
  # 'adamw' (both official codebases) or 'apollo' (the paper's WMT'14 Luna rows, Ma 2020).
  config.optimizer.name = 'adamw'
  # Base learning rate: the `constant` factor of the schedule.
  config.optimizer.learning_rate = 1e-4
  # Learning-rate factors multiplied together (luna_jax/training/optim.py): 'constant *
  # linear_warmup * rsqrt_normalized_decay' = fairseq inverse_sqrt with peak learning_rate (Luna);
  # '... * rsqrt_decay' (official LRA text tasks, peak learning_rate / sqrt(warmup_steps));
  # '... * cosine_decay' (official LRA image tasks); '... * linear_decay' (masked-LM pretraining and
  # finetuning, BERT/RoBERTa); '... * milestone_decay' (fairseq-apollo's milestone scheduler).
  config.optimizer.schedule = 'constant * linear_warmup * rsqrt_normalized_decay'
  # Linear warmup length in steps.
  config.optimizer.warmup_steps = 1000
  # Learning rate the warmup starts from (fairseq --warmup-init-lr; 0 in the official LRA).
  config.optimizer.warmup_init_learning_rate = 0.0
  # milestone_decay: the steps where the learning rate is multiplied by decay_rate (increasing,
  # after linear_warmup's warmup; empty for a schedule without milestone_decay).
  config.optimizer.milestones = ()
  # milestone_decay: the factor applied at each milestone.
  config.optimizer.decay_rate = 0.1
  # Cosine period, or linear-decay length, in steps after the warmup (cosine_decay, linear_decay).
  config.optimizer.steps_per_cycle = 100000
  # Weight decay (AdamW: param -= lr * weight_decay * param, on every parameter).
  config.optimizer.weight_decay = 1e-4
  # None: the optimizer's own (AdamW 'decoupled'; Apollo as its authors', 'L2' with the constant
  # rebound, 'decoupled' with belief); Apollo also takes 'L2' (added to the gradient) or 'stable'.
  config.optimizer.weight_decay_type = ml_collections.config_dict.placeholder(str)
  # Adam beta1; Apollo's beta (the gradient's moving average).
  config.optimizer.b1 = 0.9
  # Adam beta2 (0.98 in both official codebases); unused by Apollo.
  config.optimizer.b2 = 0.98
  # Adam epsilon; Apollo's epsilon (1e-4 in its recipes).
  config.optimizer.eps = 1e-9
  # Apollo: the floor on the curvature, 'constant' (0.01) or 'belief' (max |g - m|); 'constant'
  # with AdamW.
  config.optimizer.rebound = 'constant'
  # Clip gradients to this norm (0: no clipping, as in every recipe except Path-X and WMT'14).
  config.optimizer.grad_clip_norm = 0.0
  # 'global': one norm over all gradients (fairseq --clip-mode total); 'each': every parameter
  # tensor to the norm on its own (fairseq-apollo --clip-mode each).
  config.optimizer.grad_clip_mode = 'global'

  config.training = ml_collections.ConfigDict()
  # Global batch size (over all devices and hosts; must divide by the number of devices).
  config.training.batch_size = 32
  # Global evaluation batch size (0: batch_size).
  config.training.eval_batch_size = 0
  # Number of optimisation steps.
  config.training.num_train_steps = 5000
  # Evaluate on the validation split every this many steps (and after the last step).
  config.training.eval_every = 500
  # Evaluate at most this many batches per split, of a fixed seeded sample of it (lra.eval_sample:
  # splits may be stored sorted by class; translation's BLEU: its first decoding batches), or -1:
  # the whole split.
  config.training.num_eval_batches = -1
  # Write training metrics every this many steps.
  config.training.log_every = 50
  # Save a resumable checkpoint every this many steps (and after the last step).
  config.training.checkpoint_every = 1000
  # Number of periodic checkpoints to keep (the best-by-validation one is kept separately).
  config.training.keep_checkpoints = 2
  # Local devices to use: -1 for all of them, or the first N (single-host runs only).
  config.training.num_devices = -1
  # Connect to the other processes first (multi-host runs): JAX_COORDINATOR_ADDRESS,
  # JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a cluster jax detects (SLURM, Open MPI, Cloud TPU).
  config.training.distributed = False
  # Label smoothing of the training loss (0 in every LRA recipe; 0.1 for translation in the paper).
  config.training.label_smoothing = 0.0
  # Batches sent to the devices ahead of the step that takes them (0: each when its step starts).
  config.training.prefetch_batches = 2
  # Micro-batches each device's batch is cut into and run one after the other, gradients summed
  # into one update: the same step in less memory (fairseq --update-freq at a fixed batch size).
  config.training.gradient_accumulation_steps = 1

  config.decoding = ml_collections.ConfigDict()
  # Beam search of the tasks scored by BLEU (translation; luna_jax/training/translation.py), after
  # training, on validation and test. Beams per sentence (the paper: 5).
  config.decoding.beam_size = 5
  # GNMT length penalty alpha: hypotheses ranked by log-probability / ((5 + length) / 6) ** alpha.
  config.decoding.length_penalty = 0.6
  # At most max_len_a * source length + max_len_b tokens before the EOS (fairseq's --max-len-a/b;
  # Vaswani et al., 2017: source length + 50).
  config.decoding.max_len_a = 1.0
  # The constant term of that cap: at most max_len_a * source length + max_len_b tokens.
  config.decoding.max_len_b = 50
  config.lock()
  return config


#: Flags a config argument may add after the variant.
FLAGS = ('debug', 'spt')


def parse_arg(arg: str | None, default: str = 'luna256') -> tuple[str, set[str]]:
  """Splits a config argument 'variant[,debug][,spt]' into (variant, set of flags).

  Raises:
    ConfigError: an unknown variant or an extra part, listing the variants.
  """
  parts = [part.strip() for part in (arg or default).split(',') if part.strip()]
  variant = parts[0] if parts and parts[0] not in FLAGS else default
  extra = [part for part in parts if part not in (variant, *FLAGS)]
  if variant not in variants.CONFIG_VARIANTS or extra:
    raise ConfigError(
      f'config argument {arg!r}: expected one of {variants.CONFIG_VARIANTS} '
      'optionally followed by ",debug" and/or ",spt".'
    )
  return variant, set(parts) & set(FLAGS)


def with_default(arg: str | None, default: str) -> str:
  """The config argument `arg` with `default` as its variant when it names none: what a config
  file of another default (luna16) passes on to a task file (default luna256), so that
  `:debug` and `:spt` keep its default.

  Raises:
    ConfigError: an unknown variant or an extra part (`parse_arg`).
  """
  variant, flags = parse_arg(arg, default)
  return ','.join([variant, *sorted(flags)])


def debug_arg(arg: str | None, config_file: str) -> bool:
  """The argument of a config file without variants: absent, or 'debug' (returns whether it is).

  Raises:
    ValueError: any other argument, naming the file and what it takes.
  """
  if arg not in (None, 'debug'):
    raise ConfigError(
      f'{config_file} does not take the argument {arg!r}; its only argument is '
      f'"debug" (e.g. {config_file}:debug).'
    )
  return arg == 'debug'


def task_config(task: str, arg: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """The base config for LRA task `task` and the config argument 'variant[,debug][,spt]'
  (luna256 when it names no variant; `with_default` for another default).

  Returns:
    (config with data.task, debug and, with `spt`, self-pretraining set, variant name).
  """
  variant, flags = parse_arg(arg)
  config = get_config()
  config.debug = 'debug' in flags
  config.data.task = task
  if 'spt' in flags:
    config.self_pretraining.num_train_steps = -1
  return config, variant


def luna_model(config: ml_collections.ConfigDict, variant: str) -> None:
  """Sets the Luna LRA recipe of the authors' code with the variant's projection (fairseq-apollo:
  `fairseq/models/luna_lra/model.py`, `examples/long_range_arena/train_luna_*.sh`).

  Post-LN Luna layers, exact GELU, learned positions, LayerNorm on the embeddings and the first P,
  no embedding scaling, pack heads = unpack heads, no activation dropout, no bias on the head's
  logits layer; the projection length, K/V tying (untied in every released model) and contextual
  P of `variant` (configs/variants.py).
  Adam eps 1e-8: fairseq's default, which no released Luna script overrides. The task files add the
  BERT initialisation where the authors' architecture applies it (ListOps, Text).
  """
  config.model.update(
    **variants.VARIANTS[variant].model,
    normalize_before=False,
    activation='gelu',
    positional='learned',
    embedding_layernorm=True,
    embed_scale=False,
    activation_dropout_rate=0.0,
    num_pack_heads=None,
    qkv_dim=None,
    # fairseq/models/luna_lra/model.py: sentence_projection_layer = Linear(..., bias=False).
    classifier_logits_bias=False,
  )
  config.optimizer.update(
    schedule='constant * linear_warmup * rsqrt_normalized_decay',
    b1=0.9,
    b2=0.98,
    # fairseq-apollo fairseq/optim/adam.py: --adam-eps defaults to 1e-8 (LRA's Adam uses 1e-9).
    eps=1e-8,
    grad_clip_norm=0.0,
  )


def transformer_model(config: ml_collections.ConfigDict, variant: str = 'transformer') -> None:
  """Sets the official LRA Transformer (long-range-arena `models/transformer/transformer.py`):
  pre-LN blocks, tanh-GELU, sinusoidal positions, with the attention of `variant` (a key of
  `TRANSFORMER_VARIANTS`, configs/variants.py).

  Task files override positions (learned for CIFAR/Path-X), sizes, pooling and the schedule; the
  baselines share the Transformer's task settings unless a task file says otherwise (LRA's
  `lra_benchmarks/*/configs/*_base.py`).
  """
  config.model.update(
    **variants.VARIANTS[variant].model, activation='gelu_tanh', positional='sinusoidal'
  )
  config.optimizer.update(
    schedule='constant * linear_warmup * rsqrt_decay', b1=0.9, b2=0.98, eps=1e-9
  )
