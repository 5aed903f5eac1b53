r"""Translates a file with a translation checkpoint, and scores it with sacreBLEU against a
reference.

  python -m luna_jax.translate --checkpoint runs/wmt14/luna16/averaged/500000 \
      --input data/wmt14/test.en --output runs/wmt14/luna16/test.de --reference data/wmt14/test.de

`--checkpoint` is a run's workdir (its newest checkpoint), `<workdir>/checkpoints/<step>` or
`<workdir>/averaged/<step>` (`python -m luna_jax.average_checkpoints`). The SentencePiece model is
the run's own (`data.options.tokenizer`), or `--tokenizer`; one that is not the vocabulary the
checkpoint was trained on is refused. Beam search follows the run's `config.decoding` unless
overridden (`--beam_size`, `--length_penalty`, `--max_len_a`, `--max_len_b`). One translation per
input line (lines end at newlines only; an empty line gives an empty translation), detokenised;
with `--reference`, the sacreBLEU score and signature ('bleu', 'signature') and the paper's
tokenised BLEU in the run's target language ('tokenized_bleu', 'tokenized_signature':
`translation.tokenized_bleu`) are printed as one JSON line (and written to `--scores` if given).
Bad input (files, checkpoint, tokenizer) is one `Error:` line, before any decoding. The library is
`luna_jax.training.translation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import lra
from corpora import text_tokenizers
from lra.files import write_atomically
from luna_jax import config_utils
from luna_jax.training import translation
from luna_jax.training.run_config import DecodingConfig


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--checkpoint', required=True, help='workdir or checkpoint folder')
  parser.add_argument('--input', required=True, help='source sentences, one a line (UTF-8)')
  parser.add_argument('--output', required=True, help='written: one translation a line')
  parser.add_argument('--reference', help='reference translations, one a line: prints BLEU')
  parser.add_argument('--scores', help='with --reference: also write the BLEU JSON here')
  parser.add_argument('--tokenizer', help="SentencePiece model (default: the run's own)")
  for name, kind in (('beam_size', int), ('length_penalty', float), ('max_len_a', float)):
    parser.add_argument(f'--{name}', type=kind, help='default: the run config.decoding')
  parser.add_argument('--max_len_b', type=int, help='default: the run config.decoding')
  args = parser.parse_args(argv)
  if args.scores and not args.reference:
    parser.error('--scores needs --reference (the scores are BLEU against it).')
  try:
    # Everything the decoding needs is read and checked first, so that no error comes after it.
    for path in filter(None, (args.output, args.scores)):
      folder = os.path.dirname(os.path.abspath(path))
      if os.path.isdir(path):
        raise lra.DataError(f'{path} is a folder: name the file to write.')
      if not os.path.isdir(folder):
        raise lra.DataError(f'{path}: there is no folder {folder} to write it in.')
    lines = _read_lines(args.input)
    if not lines:
      raise lra.DataError(f'{args.input} is empty: there is nothing to translate.')
    references = None
    if args.reference:
      references = _read_lines(args.reference)
      if len(references) != len(lines):
        raise lra.DataError(
          f'{args.reference} has {len(references)} lines, {args.input} {len(lines)}: a reference '
          'line is needed for each input line.'
        )
    model, params, vocabulary, config = translation.load_translator(args.checkpoint, args.tokenizer)
    settings = {**config['decoding']}
    settings.update({k: getattr(args, k) for k in settings if getattr(args, k) is not None})
    decoding = config_utils.parse_section(DecodingConfig, settings, 'decoding')
    options = config['data']['options']
    translations, cut = translation.translate_lines(
      model,
      params,
      vocabulary,
      lines,
      decoding,
      max_length=options['max_length'],
      max_tokens=options['max_tokens'],
    )
  except (OSError, config_utils.ConfigError, lra.DataError) as e:
    sys.exit(f'Error: {e}')
  if cut:
    logging.warning(
      '%d source lines are longer than %d tokens and were cut.', cut, options['max_length']
    )
  write_atomically(args.output, ''.join(f'{line}\n' for line in translations))
  print(f'wrote {len(translations)} translations to {args.output}', file=sys.stderr)
  if references is not None:
    tokenized = translation.tokenized_bleu(translations, references, options['target_lang'])
    scores = {
      **translation.bleu(translations, references),
      'tokenized_bleu': tokenized['bleu'],
      'tokenized_signature': tokenized['signature'],
      'checkpoint': args.checkpoint,
      'decoding': dataclasses.asdict(decoding),
    }
    print(json.dumps(scores))
    if args.scores:
      write_atomically(args.scores, json.dumps(scores, indent=2))


def _read_lines(path: str) -> list[str]:
  """Every line of a UTF-8 file (lines end at newlines only, as `corpora.translation` reads).

  Raises:
    lra.DataError: a line that is not UTF-8 (naming file and line); OSError: no such file.
  """
  return [text for _, text in text_tokenizers.read_lines(Path(path), keep_empty=True)]


if __name__ == '__main__':
  main()
