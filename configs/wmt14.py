"""WMT'14 English -> German with encoder-decoder Luna (paper §4.2, Tables 4 and 5, appendix A.2).

  python -m corpora.wmt14 --output_dir data/wmt14              # TFDS data prepared elsewhere
  python -m corpora.translation vocabulary --data_dir data/wmt14 --vocab_size 37000
  python train.py --config configs/wmt14.py:luna16_softplus_tied --workdir runs/wmt14/luna16

Variants (one per row of Tables 4 and 5; append ',adam' to train a Luna row with the Adam recipe,
',debug' for a smoke test):
  transformer               Table 4: the softmax Transformer-base (Adam), `transformer_seq2seq`
  transformer_apollo        Table 4: the same model trained with Apollo
  luna16_elu_tied, luna32_elu_tied, luna16_softplus_tied, luna32_softplus_tied    Table 4, tied K/V
  luna16_elu, luna32_elu, luna16_softplus, luna32_softplus                       Table 4, untied
  luna16_noncontextual      Table 5: l = 16, tied, softplus, P a learned table per layer (the
                            contextual row is luna16_softplus_tied)
`VARIANTS` holds each one's settings, optimizer, paper BLEU and parameter count.

The model (the authors' `examples/luna/README.wmt.md` and `fairseq/models/luna.py`
`luna_base_tied`/`luna_base_untied`): Transformer-base sizes, 6 + 6 post-LN layers, d 512, FFN 2048
with ReLU, 8 heads and 8 pack heads, sinusoidal positions, embeddings scaled by sqrt(d), one
embedding table for source, target and output (the shared 37K BPE vocabulary), dropout, attention
dropout and activation dropout 0.1; label-smoothed cross-entropy 0.1; 500k updates of 8192 tokens
per device (`max_tokens`, over eight V100s in the paper: 65,536 tokens an update; here the global
batch is 8192 tokens times the device count, so on fewer than 8 devices raise
`--config.data.options.max_tokens` to keep the paper's batch, and where it does not fit, set
`--config.training.gradient_accumulation_steps`: 65536 tokens with 8 micro-batches on one GPU is
the authors' `--update-freq 8`). Sequences up to 1024 tokens (fairseq's max positions; longer
training pairs are skipped).

The optimizers (§4.2: Apollo for every Luna row, Adam and Apollo for the Transformer):
  Adam (appendix A.2, fairseq-apollo `examples/apollo/recipe.md`): lr 5e-4, betas (0.9, 0.98),
    eps 1e-8 (fairseq's default), linear warmup over 4000 steps from 1e-7, then inverse square
    root; decoupled weight decay 1e-4; gradient clipping at global norm 1.0.
  Apollo (`luna_jax.training.apollo`; the authors' Luna script, `examples/luna/README.wmt.md`):
    lr 0.1, beta 0.9, eps 1e-4, constant rebound, L2 weight decay 1e-8; linear warmup over 1000
    steps from 1e-5, then x0.1 at 300k and 450k updates (`milestone_decay`); each parameter's
    gradient clipped to norm 0.1 (`grad_clip_mode='each'`). Appendix A.2 gives lr 10, clipping
    1.0 and milestones 250k/450k: its Apollo floored the curvature at 1.0, which the released
    `fairseq/optim/apollo.py` lowered to 0.01 (commit cf1964f, "sigma=0.01"), so lr 0.1 there is
    the paper's lr 10; this config takes the script written for the released optimizer.

Evaluation: beam 5, length penalty 0.6, at most source length + 50 tokens (Vaswani et al., 2017,
§6.1), on the whole test set (newstest2014), detokenised and scored twice in results.json:
sacreBLEU (`test.bleu`, 13a) and the tokenised BLEU the paper reports (`test.tokenized_bleu`,
fairseq's `--eval-tokenized-bleu` on Moses `-a` tokenised text, about 0.5-1 above sacreBLEU), the
one to compare with Table 4. The paper averaged the checkpoints of the last 10 epochs
(`keep_checkpoints` 10, one every 2500 updates, about an epoch of WMT'14 at 65K tokens):
  python -m luna_jax.average_checkpoints --workdir runs/wmt14/luna16 --num 10
and `python -m luna_jax.translate` scores the average both ways. The tokenised score approximates
the paper's: its hypotheses are detokenised output tokenised again by Moses (sacremoses), where
fairseq scores the model's own tokenised output.
Parameters: at a 40,550-piece vocabulary every row has its Table 4 count (Transformer-base 64.9M);
the paper's counts imply that vocabulary size rather than the 37K of its text.

Measured on 2 CPU cores, the whole path at small scale (`,cpu`: `python -m
corpora.translation_generator --output_dir data/mt_toy`, a 400-piece vocabulary, 2 + 2 layers of
width 128, 2048 tokens a batch, 3000 steps; benchmarks/results/cpu/wmt14_small/), test BLEU (last 5
checkpoints averaged): luna16_softplus_tied,cpu,adam 79.53 (80.04; 80.35 in an earlier run),
transformer,cpu 79.90 (80.40); with Apollo, luna16_softplus_tied,cpu 75.72 (74.05) and
transformer_apollo,cpu 77.94 (78.45): the authors' Apollo settings, made for 500k updates, learn
more slowly than Adam in 3000. The generator's own rules score 80.96 against its references,
which draw between alternative translations.

Expected run time of the full recipe (not measured on a GPU): one 8192-token batch of
luna16_softplus_tied is 3.22 TFLOP (XLA's count of forward, backward and update, with AdamW or
Apollo alike; transformer 3.16; 61 s on the 2 CPU cores), so 500k updates of 8 such batches are
1.3e19 FLOP: about 95 V100-hours at 30% of its fp16 peak (12 hours on the paper's 8 V100s), or 12
H100-hours at 30% of its bf16 peak (`python -m benchmarks.wmt14_cost`,
benchmarks/results/cpu/wmt14_cost/).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import base


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the paper's Tables 4/5.

  Attributes:
    model: the `config.model` settings of the row.
    optimizer: the row's optimizer, 'apollo' or 'adamw' (§4.2).
    bleu: the paper's test BLEU (Table 4, or Table 5's test column).
    params: the paper's parameter count in millions, or None (Table 5 gives none).
  """

  model: dict
  optimizer: str
  bleu: float
  params: float | None


def _luna(length: int, omega: str, tied: bool, contextual: bool = True) -> dict:
  return {
    'name': 'luna_seq2seq',
    'projection_length': length,
    'omega': omega,
    'tie_kv': tied,
    'contextual_p': contextual,
  }


VARIANTS = {
  'transformer': Variant({'name': 'transformer_seq2seq'}, 'adamw', 27.8, 64.9),
  'transformer_apollo': Variant({'name': 'transformer_seq2seq'}, 'apollo', 28.3, 64.9),
  'luna16_elu_tied': Variant(_luna(16, 'elu', True), 'apollo', 27.1, 69.6),
  'luna32_elu_tied': Variant(_luna(32, 'elu', True), 'apollo', 27.3, 69.7),
  'luna16_softplus_tied': Variant(_luna(16, 'softplus', True), 'apollo', 27.3, 69.6),
  'luna32_softplus_tied': Variant(_luna(32, 'softplus', True), 'apollo', 27.5, 69.7),
  'luna16_elu': Variant(_luna(16, 'elu', False), 'apollo', 27.4, 77.5),
  'luna32_elu': Variant(_luna(32, 'elu', False), 'apollo', 27.6, 77.6),
  'luna16_softplus': Variant(_luna(16, 'softplus', False), 'apollo', 27.6, 77.5),
  'luna32_softplus': Variant(_luna(32, 'softplus', False), 'apollo', 27.8, 77.6),
  'luna16_noncontextual': Variant(
    _luna(16, 'softplus', True, contextual=False), 'apollo', 25.2, None
  ),
}
DEFAULT_VARIANT = 'luna16_softplus_tied'
#: Flags the argument may add after the variant: 'adam' (the Adam recipe whatever the row's
#: optimizer), 'cpu' (the small run on the generated corpus) and 'debug' (a smoke test).
FLAGS = ('adam', 'cpu', 'debug')
#: The Adam recipe (appendix A.2; fairseq-apollo `examples/apollo/recipe.md`, "Adam").
ADAM = {
  'name': 'adamw',
  'learning_rate': 5e-4,
  'schedule': 'constant * linear_warmup * rsqrt_normalized_decay',
  'warmup_steps': 4000,
  'warmup_init_learning_rate': 1e-7,
  'b1': 0.9,
  'b2': 0.98,
  'eps': 1e-8,
  'weight_decay': 1e-4,
  'weight_decay_type': 'decoupled',
  'grad_clip_norm': 1.0,
  'grad_clip_mode': 'global',
}
#: The Apollo recipe of the authors' Luna script (fairseq-apollo `examples/luna/README.wmt.md`).
APOLLO = {
  'name': 'apollo',
  'learning_rate': 0.1,
  'schedule': 'constant * linear_warmup * milestone_decay',
  'warmup_steps': 1000,
  'warmup_init_learning_rate': 1e-5,
  'milestones': (300000, 450000),
  'decay_rate': 0.1,
  'b1': 0.9,
  'eps': 1e-4,
  'rebound': 'constant',
  'weight_decay': 1e-8,
  'weight_decay_type': 'L2',
  'grad_clip_norm': 0.1,
  'grad_clip_mode': 'each',
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The WMT'14 En-De recipe for `arg` = 'variant[,adam][,cpu][,debug]' (default
  luna16_softplus_tied).

  Raises:
    ConfigError: an unknown variant or flag, listing the variants.
  """
  parts = [part.strip() for part in (arg or DEFAULT_VARIANT).split(',') if part.strip()]
  variant = parts[0] if parts and parts[0] not in FLAGS else DEFAULT_VARIANT
  if variant not in VARIANTS or set(parts) - {variant, *FLAGS}:
    raise base.ConfigError(
      f'configs/wmt14.py argument {arg!r}: expected one of {list(VARIANTS)}, optionally '
      'followed by ",adam", ",cpu" and/or ",debug".'
    )
  config = base.get_config()
  config.debug = 'debug' in parts
  config.data.task = 'translation'
  # Written by `python -m corpora.wmt14` and `python -m corpora.translation vocabulary`.
  config.data.data_dir = 'data/wmt14'
  config.data.options = ml_collections.ConfigDict(
    {
      'max_length': 1024,
      'max_target_length': 1024,
      'source_lang': 'en',
      'target_lang': 'de',
      'tokenizer': 'spm.model',
      'max_tokens': 8192,
    }
  )
  config.model.update(
    **VARIANTS[variant].model,
    num_layers=6,
    emb_dim=512,
    mlp_dim=2048,
    num_heads=8,
    num_pack_heads=8,
    activation='relu',
    normalize_before=False,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
    activation_dropout_rate=0.1,
    positional='sinusoidal',
    embed_scale=True,
    embedding_layernorm=False,
    share_embeddings=True,
  )
  apollo = VARIANTS[variant].optimizer == 'apollo' and 'adam' not in parts
  config.optimizer.update(**(APOLLO if apollo else ADAM))
  config.training.update(
    label_smoothing=0.1,
    num_train_steps=500000,
    eval_every=5000,
    log_every=100,
    checkpoint_every=2500,
    keep_checkpoints=10,
  )
  if 'cpu' in parts:
    _cpu(config, apollo)
  return config


def _cpu(config: ml_collections.ConfigDict, apollo: bool) -> None:
  """The same path at CPU scale: the generated corpus, a 2 + 2-layer, 128-wide model, 2048 tokens
  a batch, 3000 steps, the last 5 checkpoints to average; Adam warms up for 500 steps to twice
  its peak, Apollo keeps its peak and decays at 60% and 90% of the steps, as at full scale."""
  config.data.data_dir = 'data/mt_toy'
  config.data.options.update(max_length=48, max_target_length=48, max_tokens=2048)
  config.model.update(num_layers=2, emb_dim=128, mlp_dim=512, num_heads=4, num_pack_heads=4)
  if apollo:
    config.optimizer.update(warmup_steps=500, milestones=(1800, 2700))
  else:
    config.optimizer.update(learning_rate=1e-3, warmup_steps=500)
  config.training.update(
    num_train_steps=3000, eval_every=1000, checkpoint_every=250, keep_checkpoints=5, log_every=50
  )
