"""The models, from the paper's equations up:

attention     the paper's math as pure functions on head-split tensors (eqs. 1-7)
kernels       the XLA speed kernels under it (dropout masks, bias adds, GELU, LayerNorm, fused
              Dense), each equal to the formula it replaces
layers        thin Flax modules: Luna attention and layer (eq. 6), causal Luna, the Transformer
              block
baselines     Linformer, Linear Transformer and Performer attention
registry      attention name -> module, on the Transformer side and on the Luna side
config        `ModelConfig` and `HeadConfig`: every model setting with its default and rule
encoders      the Luna encoder and the official LRA Transformer encoder
classifiers   pooling, the classifier head, the Retrieval two-tower model
decoders      the decoder-only `LunaLM`, the encoder-decoder `LunaSeq2Seq` and its softmax baseline
              `TransformerSeq2Seq`
generation    sampling, greedy decoding and beam search with the O(l*d) caches
mlm           the masked LM and its masking
objectives    what each model family is trained and evaluated with (losses, weights, metrics)
build         `build_model`: `config.model` -> any of the above
"""
