"""Data beyond the Long Range Arena, in the same containers and cache as the LRA tasks (`lra`):

  seq2seq, lm   byte-level sequence tasks of the causal Luna models (`corpora.sequences`); toy
                corpora from `python -m corpora.sequence_generator`;
  translation   parallel text with a joint SentencePiece vocabulary, batched by tokens
                (`corpora.translation`, `corpora.token_batches`); WMT'14 En-De from TFDS with
                `python -m corpora.wmt14`, a rule-based corpus from
                `python -m corpora.translation_generator`;
  corpus        a plain-text corpus for masked-LM pretraining (`corpora.corpus`);
  glue          GLUE-format sentence(-pair) classification for finetuning (`corpora.glue`);
text tokenised with `corpora.text_tokenizers` (bytes, or a SentencePiece model trained with
`python -m corpora.text_tokenizers`).

    data = corpora.load_task('lm', 'data/lm', max_length=512)  # -> lra.TaskData
    for batch in lra.train_batches(data.train, 32, seed=0):
      ...

This package builds on `lra` (its Cache, types, tokenisation and batching); `lra` never imports it.
"""

from corpora.registry import TASKS, TEXT_TASKS, TOKEN_TASKS, data_source, load_task

__all__ = ['TASKS', 'TEXT_TASKS', 'TOKEN_TASKS', 'data_source', 'load_task']
