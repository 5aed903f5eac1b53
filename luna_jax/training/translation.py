"""Translation with a trained encoder-decoder: beam search over token pairs, detokenisation with the
joint SentencePiece vocabulary, and corpus BLEU with sacreBLEU (paper §4.2, Table 4: beam 5).

The trainer calls `score_splits` after training for data that carries BLEU references
(`corpora.translation`: `info['references']`); `python -m luna_jax.translate` translates a file
with a checkpoint (`load_translator`). Decoding follows `config.decoding` (`DecodingConfig`): beam
size, the GNMT length penalty, and at most `max_len_a * source length + max_len_b` tokens before
the EOS (source length with its EOS, each source its own; fairseq takes one for a whole batch,
its padded width, so that its outputs depend on the batching). Sources are decoded bucket by bucket
(`corpora.token_batches.TokenBatching.plan` on one device), so beam search compiles once per length
bucket.

Two BLEU scores are recorded, each with its signature. `bleu`: sacreBLEU's default corpus BLEU (13a
tokenisation, mixed case, exponential smoothing) of the detokenised output against the raw
reference lines. `tokenized_bleu`: the paper's Table 4 metric, tokenised BLEU (fairseq's
`--eval-tokenized-bleu --eval-bleu-detok space` in the authors' fairseq-apollo
`examples/luna/README.wmt.md`): both sides get the test-set preprocessing of fairseq's
`examples/translation/prepare-wmt14en2de.sh` (`’` -> `'`, then Moses `tokenizer.perl -a -l <target
language>`: hyphens split as ` @-@ `, XML characters escaped) and sacreBLEU scores them with
`tokenize='none'`. It is the number to compare with Table 4 (usually higher than sacreBLEU's), but
an approximation of it: the hypotheses here are detokenised output tokenised again by Moses, not a
model's own output in the tokenised space as in fairseq.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
import sacremoses

import luna_jax
from corpora import text_tokenizers
from corpora import translation as translation_data
from corpora.token_batches import TokenBatching, TokenPairs, length_buckets
from lra.core import DataError, TaskData
from lra.files import write_atomically
from luna_jax import config_utils
from luna_jax.model import generation
from luna_jax.training import checkpointing
from luna_jax.training.run_config import DecodingConfig

PyTree = Any


class VocabularyMismatchError(config_utils.ConfigError):
  """A checkpoint is used with another vocabulary than the one it was trained on."""


#: Output tokens before the EOS, at least: fairseq's `generate.py --min-len` default (the authors
#: scored their translations with fairseq), so that no translation is empty (unless its cap is 1,
#: floor(max_len_a * n + max_len_b) = 0, possible only with max_len_b 0: a cap forces the EOS).
MIN_OUTPUT_TOKENS = 1


def output_caps(source_lengths: np.ndarray, decoding: DecodingConfig) -> np.ndarray:
  """`[N]` int32 (`[]` for a scalar length): most output ids per source, EOS included:
  floor(a * n + b) + 1."""
  caps = np.floor(decoding.max_len_a * np.asarray(source_lengths) + decoding.max_len_b) + 1
  return np.asarray(caps, np.int32)


def translate_pairs(
  model: flax.linen.Module,
  params: PyTree,
  pairs: TokenPairs,
  batching: TokenBatching,
  decoding: DecodingConfig,
  eos_id: int,
  check_stop: Callable[[], None] = lambda: None,
  max_batches: int = -1,
) -> list[list[int] | None]:
  """Beam-search output ids of every source of `pairs`, in order (the targets only choose the
  length bucket, as in training: the output does not depend on them).

  Args:
    model: the encoder-decoder (`decode_step`, `init_cache`, `encode`; `config.max_length`).
    params: its parameters (host or device arrays, unreplicated).
    pairs: the sources.
    batching: cuts the sources into length buckets (one device's batches).
    decoding: beam size, length penalty, output caps.
    eos_id: end-of-sequence id.
    check_stop: called before each batch; raises to stop (the trainer's Ctrl-C/SIGTERM check).
    max_batches: translate only the first this many batches (-1: all, as `steps.evaluate`).

  Returns:
    One list of ids per source, up to (not including) its EOS; None for a source left out by
    `max_batches`.
  """
  params = jax.tree.map(jnp.asarray, params)
  outputs: list[list[int] | None] = [None] * pairs.num_examples
  plan = batching.plan(pairs, 1, None)
  for bucket, rows in itertools.islice(plan, None if max_batches == -1 else max_batches):
    check_stop()
    length = batching.buckets[bucket]
    real = rows[rows >= 0]
    batch = pairs.sequences(np.where(rows >= 0, rows, rows[0]), length)
    max_length = min(model.config.max_length, int(output_caps(np.asarray(length), decoding)))
    best, _ = generation.beam_search(
      model,
      params,
      jnp.asarray(batch['inputs']),
      jnp.asarray(batch['lengths']),
      beam_size=decoding.beam_size,
      max_length=max_length,
      eos_id=eos_id,
      length_penalty=decoding.length_penalty,
      # Every output ends by the model's last position too (fairseq's max_len is at most the
      # decoder's positions), with a forced EOS, never cut off without one.
      max_output_lengths=jnp.asarray(
        np.minimum(output_caps(batch['lengths'], decoding), max_length)
      ),
      min_length=MIN_OUTPUT_TOKENS,
    )
    for row, ids in zip(real, np.asarray(best)[: len(real)]):
      ids = ids.tolist()
      outputs[row] = ids[: ids.index(eos_id)] if eos_id in ids else [i for i in ids if i]
  return outputs


def bleu(
  hypotheses: Sequence[str], references: Sequence[str], tokenize: str = '13a'
) -> dict[str, Any]:
  """sacreBLEU corpus BLEU of `hypotheses` against one reference each.

  Args:
    hypotheses: one translation a line (detokenised for the default tokenisation).
    references: one reference a line, aligned with `hypotheses`.
    tokenize: sacreBLEU's tokenisation: '13a' (its default, for detokenised text) or 'none' (text
      tokenised already: `tokenized_bleu`).

  Returns:
    {'bleu': the score (0-100), 'signature': sacreBLEU's signature of the settings}.

  Raises:
    ValueError: different numbers of hypotheses and references, or none.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses for {len(references)} references')
  if not hypotheses:
    raise ValueError('no hypotheses to score: BLEU of an empty corpus is undefined')
  # force: no warning that text tokenised on purpose ends in ' .' (it changes no score).
  metric = sacrebleu.metrics.BLEU(tokenize=tokenize, force=tokenize == 'none')
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return {'bleu': float(score.score), 'signature': str(metric.get_signature())}


def moses_tokenize(lines: Sequence[str], language: str) -> list[str]:
  """The test-set preprocessing of fairseq's `examples/translation/prepare-wmt14en2de.sh`: `’`
  replaced by `'`, then Moses `tokenizer.perl -a -l <language>` (sacremoses): aggressive hyphen
  splitting (`E-Mail` -> `E @-@ Mail`) and the perl tokenizer's default escaping of XML special
  characters (`&apos;`, `&quot;`, `&amp;`, `&lt;`, `&gt;`)."""
  tokenizer = sacremoses.MosesTokenizer(lang=language)
  return [
    tokenizer.tokenize(
      line.replace('\u2019', "'"), aggressive_dash_splits=True, return_str=True, escape=True
    )
    for line in lines
  ]


def tokenized_bleu(
  hypotheses: Sequence[str], references: Sequence[str], language: str
) -> dict[str, Any]:
  """Tokenised BLEU, the paper's Table 4 metric, of detokenised `hypotheses` against raw references.

  The authors (fairseq-apollo, `examples/luna/README.wmt.md`) score with fairseq's
  `--eval-tokenized-bleu --eval-bleu-detok space`: sacreBLEU with no tokenisation of its own on the
  Moses-tokenised text of fairseq's `examples/translation/prepare-wmt14en2de.sh`. Here both sides
  get that preprocessing (`moses_tokenize`) and `bleu(..., tokenize='none')` scores them. The
  hypotheses are detokenised output tokenised again, not a model's own tokenised output, so the
  score approximates fairseq's.

  Args:
    hypotheses: detokenised translations, one a line.
    references: raw reference lines, aligned with `hypotheses`.
    language: the target language, Moses's `-l` (e.g. 'de').

  Returns:
    {'bleu': the score (0-100), 'signature': the preprocessing followed by sacreBLEU's signature}.

  Raises:
    ValueError: different numbers of hypotheses and references, or none.
  """
  score = bleu(
    moses_tokenize(hypotheses, language), moses_tokenize(references, language), tokenize='none'
  )
  preprocessing = f"\u2019->' + moses -a -l {language} (sacremoses {sacremoses.__version__})"
  return {'bleu': score['bleu'], 'signature': f'{preprocessing} + {score["signature"]}'}


def score_splits(
  model: flax.linen.Module,
  params: PyTree,
  data: TaskData,
  decoding: DecodingConfig,
  output_dir: str | None,
  check_stop: Callable[[], None] = lambda: None,
  max_batches: int = -1,
) -> dict[str, Any]:
  """Translates the validation and test splits and scores them against `data.info['references']`.

  Args:
    model: the encoder-decoder.
    params: its (unreplicated) parameters.
    data: translation data (`corpora.translation.load`).
    decoding: the `config.decoding` section.
    output_dir: where `<split>.<target language>` (one detokenised translation a line) is written;
      None writes nothing.
    check_stop: called before each decoding batch; raises to stop (`translate_pairs`).
    max_batches: translate and score only the first this many decoding batches of each split
      (`training.num_eval_batches`, e.g. a debug run's 2); -1: the whole split. The written files
      then hold the translated sentences only, in order.

  Returns:
    {'validation': {'bleu', 'tokenized_bleu', 'num_sentences'}, 'test': {the same}, 'signature'
    (sacreBLEU's, of 'bleu'), 'tokenized_signature' (`tokenized_bleu`'s, in the target language of
    `data.info['languages']`), 'decoding' (the settings), 'files' (split -> written file)}.
  """
  vocabulary = translation_data.Vocabulary(data.info['tokenizer'])
  language = data.info['languages'][1]
  result: dict[str, Any] = {'decoding': dataclasses.asdict(decoding), 'files': {}}
  for name in ('validation', 'test'):
    ids = translate_pairs(
      model,
      params,
      getattr(data, name),
      data.batching,
      decoding,
      data.info['eos_id'],
      check_stop,
      max_batches,
    )
    rows = [i for i, sequence in enumerate(ids) if sequence is not None]
    hypotheses = vocabulary.decode([ids[i] for i in rows])
    references = [data.info['references'][name][i] for i in rows]
    score = bleu(hypotheses, references)
    tokenized = tokenized_bleu(hypotheses, references, language)
    result[name] = {
      'bleu': score['bleu'],
      'tokenized_bleu': tokenized['bleu'],
      'num_sentences': len(rows),
    }
    result['signature'] = score['signature']
    result['tokenized_signature'] = tokenized['signature']
    if output_dir is not None:
      os.makedirs(output_dir, exist_ok=True)
      path = os.path.join(output_dir, f'{name}.{language}')
      write_atomically(path, ''.join(f'{line}\n' for line in hypotheses))
      result['files'][name] = path
  return result


def check_vocabulary(record: dict[str, Any], vocabulary: str, checkpoint: str) -> None:
  """Refuses a checkpoint trained on another vocabulary than `vocabulary`.

  Raises:
    VocabularyMismatchError: naming both vocabularies and the checkpoint.
  """
  trained = record.get('vocabulary')
  if trained != vocabulary:
    raise VocabularyMismatchError(
      f'{checkpoint} was trained with vocabulary {trained!r}, but the tokenizer given is '
      f'{vocabulary!r}: its ids would mean other pieces. Use the SentencePiece model the run was '
      'trained with (its data.options.tokenizer).'
    )


def load_translator(
  checkpoint: str, tokenizer: str | None = None
) -> tuple[flax.linen.Module, PyTree, translation_data.Vocabulary, dict[str, Any]]:
  """The model, parameters and vocabulary of a translation checkpoint.

  Args:
    checkpoint: a run's workdir (its newest checkpoint), `<workdir>/checkpoints/<step>` or
      `<workdir>/averaged/<step>` (`luna_jax.training.checkpointing.read_checkpoint`).
    tokenizer: the SentencePiece model; None: the run's `data.options.tokenizer` (a bare name is in
      its `data.data_dir`).

  Returns:
    (model, parameters, vocabulary, the run's config as stored).

  Raises:
    FileNotFoundError: no intact checkpoint at `checkpoint`.
    config_utils.ConfigError: the checkpoint is not a translation run's.
    VocabularyMismatchError: the tokenizer is not the vocabulary the checkpoint was trained on.
    lra.DataError: no such tokenizer file, or not a SentencePiece model.
  """
  tree, record, folder = checkpointing.read_checkpoint(checkpoint)
  config = record.get('config', {})
  task = config.get('data', {}).get('task')
  if task != 'translation':
    kind = f'a {task!r} run' if task else 'no training run'
    if 'converted_from' in record:
      kind = "the authors' released weights (converted, for init_from)"
    raise config_utils.ConfigError(
      f'{folder} is a checkpoint of {kind}, not of a translation run (data.task '
      "'translation', e.g. configs/wmt14.py)."
    )
  options = config['data']['options']
  if tokenizer is None:
    # A bare file name is in the data folder: where training found it (a relative data_dir was
    # relative to training's working directory), else as the config spells it from here (the
    # data moved, or the run was copied).
    data_dirs = [record.get('real_paths', {}).get('data_dir'), config['data']['data_dir']]
    name = options.get('tokenizer', translation_data.DEFAULT_TOKENIZER)
    paths = [
      translation_data.resolve_tokenizer(Path(data_dir).expanduser(), name)
      for data_dir in dict.fromkeys(filter(None, data_dirs))
    ]
    found = [path for path in paths if path.is_file()]
    if not found:
      raise DataError(
        f"No SentencePiece model at {' or '.join(map(str, paths))}, the one {folder}'s run was "
        'trained with (its data.options.tokenizer); give its path as `tokenizer` (--tokenizer).'
      )
    # The first that is the run's vocabulary (else the first, which check_vocabulary refuses).
    names = {path: text_tokenizers.load_tokenizer(str(path)).name for path in found}
    tokenizer = str(next((p for p in found if names[p] == record.get('vocabulary')), found[0]))
  vocabulary = translation_data.Vocabulary(tokenizer)
  check_vocabulary(record, vocabulary.name, folder)
  model = luna_jax.build_model(
    config['model'],
    vocab_size=vocabulary.size,
    num_classes=vocabulary.size,
    max_length=max(options['max_length'], options['max_target_length']),
    bos_id=text_tokenizers.SP_BOS_ID,
  )
  return model, tree['params'], vocabulary, config


def translate_lines(
  model: flax.linen.Module,
  params: PyTree,
  vocabulary: translation_data.Vocabulary,
  lines: Sequence[str],
  decoding: DecodingConfig,
  *,
  max_length: int,
  max_tokens: int,
) -> tuple[list[str], int]:
  """Translates text lines (an empty line gives an empty translation).

  Args:
    model: the encoder-decoder.
    params: its parameters.
    vocabulary: the run's vocabulary.
    lines: source sentences.
    decoding: beam search settings.
    max_length: most source tokens (EOS included); longer sources are cut.
    max_tokens: source tokens per decoding batch (padding included).

  Returns:
    (the translations, the number of sources cut to `max_length`).
  """
  eos = text_tokenizers.SP_EOS_ID
  kept = [i for i, line in enumerate(lines) if line.strip()]
  sources = vocabulary.encode([lines[i] for i in kept])
  cut = sum(len(s) > max_length for s in sources)
  sources = [translation_data.cut_keeping_eos(s, max_length) for s in sources]
  translations = [''] * len(lines)
  if not kept:
    return translations, cut
  pairs = TokenPairs(
    source=np.concatenate(sources).astype(np.int32),
    source_lengths=np.array([len(s) for s in sources], np.int32),
    target=np.full(len(sources), eos, np.int32),
    target_lengths=np.ones(len(sources), np.int32),
    line_numbers=np.array(kept, np.int32) + 1,
  )
  batching = TokenBatching(max(max_tokens, max_length), length_buckets(max_length))
  ids = translate_pairs(model, params, pairs, batching, decoding, eos)
  for i, text in zip(kept, vocabulary.decode(ids)):
    translations[i] = text
  return translations, cut
