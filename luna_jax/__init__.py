"""luna_jax: Luna (Linear Unified Nested Attention, Ma et al., NeurIPS 2021) in JAX/Flax.

Two sub-packages:

  luna_jax.model      the models: the paper's attention math (`attention`, eqs. 1-7), the XLA speed
                      kernels under it (`kernels`), Flax layers (`layers`), the efficient-attention
                      baselines (`baselines`), the attention registries (`registry`), the model
                      settings (`config`), encoders, classifiers, decoders, the masked LM, what each
                      model is trained with (`objectives`), generation, and `build_model`
  luna_jax.training   the training machinery: the run configuration (`run_config`), the jitted steps
                      (`steps`), the trainer (`trainer.train_and_evaluate`), checkpoints, optimizer,
                      metric logs, the workdir lock, distributed and XLA settings, and the
                      pretraining glue (`pretrained`, `self_pretraining`)

The model API is re-exported here (`luna_jax.build_model`, `luna_jax.LunaAttention`, ...); the
trainer is `luna_jax.training.train_and_evaluate` (`import luna_jax.training`: importing `luna_jax`
alone loads only the models). `luna_jax.config_utils` holds the typed, checked config sections
both sub-packages use. Three commands besides `train.py`: `python -m luna_jax.translate` (a file,
with a translation checkpoint), `python -m luna_jax.average_checkpoints` (a run's last
checkpoints, averaged) and `python -m luna_jax.training.convert_fairseq` (the authors' released
Luna-BERT weights, as a workdir for `init_from`). LRA data is in the `lra` package, the other
data (language modelling, seq2seq, translation, masked-LM corpora, GLUE, tokenizers) in `corpora`.
"""

from luna_jax.model.attention import (
  SOFTPLUS_BETA,
  CausalLunaState,
  LunaAttentionOutput,
  attention_weights,
  causal_luna_attention,
  causal_luna_attention_chunked,
  causal_luna_step,
  causal_pack_activation,
  dot_product_attention,
  fused_dot_product_attention,
  init_causal_state,
  luna_attention,
  merge_heads,
  split_heads,
)
from luna_jax.model.baselines import (
  LinearSelfAttention,
  LinformerSelfAttention,
  PerformerSelfAttention,
  favor_features,
  linear_attention,
  linformer_attention,
  orthogonal_random_matrix,
  performer_attention,
)
from luna_jax.model.build import build_model
from luna_jax.model.classifiers import ClassifierHead, SequenceClassifier, combine_pair, pool
from luna_jax.model.config import (
  MLM_MODELS,
  MODEL_NAMES,
  HeadConfig,
  ModelConfig,
  check_model_config,
)
from luna_jax.model.decoders import LunaLM, LunaSeq2Seq, TransformerSeq2Seq, shift_right
from luna_jax.model.encoders import ENCODERS, EncoderOutput, LunaEncoder, TransformerEncoder
from luna_jax.model.layers import (
  FeedForward,
  LunaAttention,
  LunaCausalAttention,
  LunaEncoderLayer,
  SelfAttention,
  TransformerEncoderLayer,
  sinusoidal_positions,
)
from luna_jax.model.mlm import MaskedLanguageModel, MaskedLM, mask_tokens
from luna_jax.model.registry import LUNA_ATTENTIONS, TRANSFORMER_ATTENTIONS
