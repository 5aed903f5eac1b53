r"""Path-X (LRA): Pathfinder at 128x128 = 16384 pixel tokens (binary).

  python train.py --config configs/pathx.py:luna256 --workdir runs/pathx_luna256 \
      --config.data.data_dir=data/lra_release/lra_release

Variants: luna16 | luna128 | luna256 | luna16_noncontextual | luna16_pmean | transformer |
linformer | linear_transformer | performer (append ',debug' for a smoke test).
Expected test accuracy: no model of the Luna paper or of Tay et al. learns it ("FAIL", i.e. chance,
50%); the Luna paper reports no Path-X number. The Luna variants reuse the Pathfinder-32 recipe at
16384 tokens, as the authors' `luna_lra_pf128` architecture does. The recipe is the faithful one
of configs/pathfinder32.py: the Transformer masks black pixels out of attention (LRA's
`inputs > 0`; `--config.model.padding_mask=lengths` attends to every pixel) and Luna has no bias
on the logits layer and uses Adam eps 1e-8 (`--config.model.classifier_logits_bias=True
--config.optimizer.eps=1e-9`: the earlier recipe).
Expected run time on one A100/H100-class GPU (an estimate, not a measurement): about 1 day for Luna
(62500 steps) and several days for the Transformer (500000 steps, quadratic in 16384).
"""

from __future__ import annotations

import ml_collections

from configs import base, pathfinder32


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Path-X config for `arg` = 'variant[,debug][,spt]' (default luna256)."""
  variant, _ = base.parse_arg(arg)
  config = pathfinder32.get_config(arg)
  config.data.task = 'pathx'
  config.data.options = ml_collections.ConfigDict({'max_length': 16384, 'difficulty': 'hard'})
  if variant in base.TRANSFORMER_VARIANTS:
    # Tay et al. image/configs/pathfinder128/transformer_base.py: 1 layer, 32/16/32, 2 heads, mean
    # pooling, learned positions, dropout 0.1 / 0.1; batch 64, 500000 steps, lr 1e-3 with warmup
    # 2500 and one cosine cycle, gradient clipping at 1.0, no weight decay. The baselines share it.
    config.model.update(
      num_layers=1,
      num_heads=2,
      emb_dim=32,
      qkv_dim=16,
      mlp_dim=32,
      classifier_hidden_dim=32,
      positional='learned',
      dropout_rate=0.1,
    )
    config.optimizer.update(warmup_steps=2500, steps_per_cycle=500000, grad_clip_norm=1.0)
    config.training.update(
      batch_size=64, num_train_steps=500000, eval_every=2500, log_every=500, checkpoint_every=25000
    )
  return config
