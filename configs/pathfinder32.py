r"""Pathfinder-32 (LRA): are two dots joined by a dashed path? 32x32 = 1024 pixel tokens (binary).

  python train.py --config configs/pathfinder32.py:luna256 --workdir runs/pathfinder32_luna256 \
      --config.data.data_dir=data/lra_release/lra_release

Variants: luna16 | luna128 | luna256 | luna16_noncontextual | luna16_pmean | transformer |
linformer | linear_transformer | performer (append ',debug' for a smoke test).
Expected test accuracy: the variant's row of the paper's Table 1 in configs/variants.py, which
the leaderboard of `benchmarks.report` prints next to each model. Chance 50%. The expected
results refer to the faithful recipe: the Transformer masks black pixels out of attention
as LRA's `inputs > 0` mask does (`--config.model.padding_mask=lengths` attends to every pixel, as
before), and Luna has no bias on the logits layer and uses Adam eps 1e-8
(`--config.model.classifier_logits_bias=True --config.optimizer.eps=1e-9`: the earlier recipe).
Expected run time on one A100/H100-class GPU (an estimate, not a measurement): about 3 hours for
Luna and about 4 hours for the Transformer (about 62500 steps of batch 512).
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Pathfinder-32 config for `arg` = 'variant[,debug][,spt]' (default luna256)."""
  config, variant = base.task_config('pathfinder32', arg)
  # The hardest official difficulty (curv_contour_length_14), 1024 pixels.
  config.data.options = ml_collections.ConfigDict({'max_length': 1024, 'difficulty': 'hard'})
  # Both recipes: mean pooling, batch 512, no weight decay, attention dropout 0.1, dropout 0.2,
  # evaluation once per epoch of 160000 examples (312 steps).
  config.model.update(pooling='mean', dropout_rate=0.2, attention_dropout_rate=0.1)
  config.optimizer.weight_decay = 0.0
  config.training.update(batch_size=512, eval_every=312, log_every=104, checkpoint_every=3120)
  if variant in base.TRANSFORMER_VARIANTS:
    # Tay et al. image/configs/pathfinder32/transformer_base.py: 4 layers, 32/16/32, 4 heads,
    # sinusoidal positions; lr 1e-3, warmup 312, one cosine cycle over 62400 steps.
    base.transformer_model(config, variant)
    config.model.update(
      num_layers=4, emb_dim=32, qkv_dim=16, mlp_dim=32, num_heads=4, classifier_hidden_dim=32
    )
    if variant == 'transformer':
      # LRA models/transformer/transformer.py: the padding mask is inputs > 0, so black pixels
      # (most of the background) get no attention ('lengths': every pixel attended, as LRA's
      # baselines do: they ignore it). Path-X inherits it.
      config.model.padding_mask = 'nonzero'
    config.optimizer.update(
      schedule='constant * linear_warmup * cosine_decay',
      learning_rate=1e-3,
      warmup_steps=312,
      steps_per_cycle=62400,
    )
    config.training.num_train_steps = 62400
    # The baselines' own sizes (LRA `image/configs/pathfinder32/*_base.py`; Tay et al.'s issue #37
    # suggests 1 layer, 8 heads, 128/64/128 to reproduce the Performer number), the rest as the
    # Transformer.
    sizes = {
      'linformer': (1, 2, 32, 16, 32),
      'linear_transformer': (1, 2, 128, 64, 128),
      'performer': (4, 8, 32, 16, 32),
    }
    if variant in sizes:
      layers, heads, emb, qkv, mlp = sizes[variant]
      config.model.update(
        num_layers=layers,
        num_heads=heads,
        emb_dim=emb,
        qkv_dim=qkv,
        mlp_dim=mlp,
        classifier_hidden_dim=mlp,
      )
  else:
    # Luna (released script luna_lra_pf32; Table 7 agrees on lr and dropouts): 1 layer, width 128,
    # FFN 128, 4 heads, head 128 -> 256 -> 2; lr 1e-3 inverse_sqrt peak, warmup 4000, 62500 steps.
    base.luna_model(config, variant)
    config.model.update(
      num_layers=1, emb_dim=128, mlp_dim=128, num_heads=4, classifier_hidden_dim=256
    )
    config.optimizer.update(learning_rate=1e-3, warmup_steps=4000)
    config.training.num_train_steps = 62500
  return config
