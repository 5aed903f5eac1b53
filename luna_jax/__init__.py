"""luna_jax: Luna (Linear Unified Nested Attention, Ma et al., NeurIPS 2021) in JAX/Flax.

Pure attention functions live in `luna_jax.attention`, Flax modules in `luna_jax.layers`, the
Linformer / Linear Transformer / Performer baselines in `luna_jax.baselines` (chosen by name through
`luna_jax.attention_registry`), encoders in `luna_jax.encoders`, LRA classifiers in
`luna_jax.classifiers`, the causal LM and encoder-decoder in `luna_jax.decoders` (generation in
`luna_jax.generation`), the masked LM for pretraining in `luna_jax.mlm` (finetuning from it:
`luna_jax.pretrained`), and `luna_jax.models.build_model` builds any of them from a config. What
each model family is trained and evaluated with is in `luna_jax.objectives`, the trainer in
`luna_jax.train_lib`.
"""

from luna_jax.attention import (
  SOFTPLUS_BETA,
  CausalLunaState,
  attention_weights,
  causal_luna_attention,
  causal_luna_attention_chunked,
  causal_luna_step,
  causal_pack_activation,
  dot_product_attention,
  fused_dot_product_attention,
  init_causal_state,
  merge_heads,
  split_heads,
)
from luna_jax.attention_registry import ATTENTIONS
from luna_jax.baselines import (
  LinearSelfAttention,
  LinformerSelfAttention,
  PerformerSelfAttention,
  favor_features,
  linear_attention,
  linformer_attention,
  orthogonal_random_matrix,
  performer_attention,
)
from luna_jax.classifiers import ClassifierHead, SequenceClassifier, combine_pair, pool
from luna_jax.decoders import LunaLM, LunaSeq2Seq, shift_right
from luna_jax.encoders import ENCODERS, EncoderOutput, LunaEncoder, ModelConfig, TransformerEncoder
from luna_jax.layers import (
  FeedForward,
  LunaAttention,
  LunaCausalAttention,
  LunaEncoderLayer,
  SelfAttention,
  TransformerEncoderLayer,
  sinusoidal_positions,
)
from luna_jax.mlm import MaskedLanguageModel, MaskedLM, mask_tokens
from luna_jax.models import MLM_MODELS, MODEL_NAMES, build_model, check_model_config
