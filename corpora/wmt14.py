"""WMT'14 English-German from TFDS (`wmt14_translate/de-en`) into the `corpora.translation` layout.

  python -m corpora.wmt14 --tfds_dir ~/tensorflow_datasets --output_dir data/wmt14

reads the TFDS dataset prepared on disk (array_record or tfrecord shards, without TensorFlow:
`lra.tfds_source`) and writes `train.en`/`train.de` (4.5M pairs: Europarl v7, Common Crawl, News
Commentary v9), `validation.en`/`.de` (newstest2013, 3000 pairs) and `test.en`/`.de` (newstest2014,
3003 pairs), one sentence a line, aligned: the paper's data (§4.2, appendix A.2). A sentence's own
line breaks and tabs become spaces (counted and reported). Running it again with the same shards
does nothing; other files in the way are refused unless `--overwrite`.

Nothing is downloaded. Without the prepared dataset it stops at once and prints the command that
prepares it on a machine with network access (TFDS downloads the corpora from statmt.org):
  python -c "import tensorflow_datasets as tfds; tfds.builder('wmt14_translate/de-en',
      data_dir='DIR').download_and_prepare(file_format='array_record')"
then copy `DIR/wmt14_translate` here. The tokenised arrays are built once, on the first load, into
the token cache (`<output_dir>/lra_cache`), after the vocabulary:
  python -m corpora.translation vocabulary --data_dir data/wmt14 --vocab_size 37000
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from lra import cli, tfds_source
from lra.core import DataError
from lra.errors import MissingDataError
from lra.files import writing_outputs

NAME = 'wmt14_translate'
CONFIG = 'de-en'
#: Our split -> the TFDS split.
SPLITS = {'train': 'train', 'validation': 'validation', 'test': 'test'}
LANGUAGES = ('en', 'de')
_BREAKS = re.compile(r'[\r\n\t]+')


def no_data_error(tfds_dir: Path) -> MissingDataError:
  """The error for a missing dataset: where it was looked for and how to prepare it elsewhere."""
  return MissingDataError(
    f'No prepared TFDS dataset {NAME}/{CONFIG} in {tfds_dir} (expected '
    f'{tfds_dir}/{NAME}/{CONFIG}/<version>/{NAME}-<split>.array_record-* or .tfrecord-*). '
    'Nothing is downloaded here. Prepare it on a machine with network access with:\n'
    f'  {tfds_source.prepare_command(f"{NAME}/{CONFIG}", "DIR")}\n'
    f'and copy DIR/{NAME} into {tfds_dir}.'
  )


def write(tfds_dir: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> dict:
  """Writes the three splits' aligned text files from the prepared TFDS shards.

  Args:
    tfds_dir: the TFDS data dir holding `wmt14_translate/de-en/<version>/`.
    output_dir: where `<split>.en` and `<split>.de` go.
    overwrite: replace files this command did not write with these shards.

  Returns:
    {split: {'pairs': count, 'joined_lines': sentences whose line breaks or tabs became spaces}};
    {} when the same shards were already written.

  Raises:
    DataError: the dataset is not prepared (with the command that prepares it), a damaged shard or
      record, or an example without both languages (naming the shard and record,
      `lra.tfds_source.located_examples`), or files in the way (without `overwrite`).
  """
  tfds_dir, out = Path(tfds_dir).expanduser(), Path(output_dir)
  shards = {
    split: tfds_source.find_shards(tfds_dir, NAME, name, CONFIG) for split, name in SPLITS.items()
  }
  if not all(shards.values()):
    raise no_data_error(tfds_dir)
  paths = [out / f'{split}.{lang}' for split in SPLITS for lang in LANGUAGES]
  settings = {
    'source': f'{NAME}/{CONFIG}',
    'shards': {
      split: [f'{p.parent.name}/{p.name}:{p.stat().st_size}' for p in s]
      for split, s in shards.items()
    },
  }
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return {}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, split_shards in shards.items():
      pairs = joined = 0
      files = {lang: open(out / f'{split}.{lang}.tmp', 'w', encoding='utf-8') for lang in LANGUAGES}
      try:
        required = {lang: 'bytes_list' for lang in LANGUAGES}
        for _, example in tfds_source.located_examples(split_shards, required):
          for lang in LANGUAGES:
            text = example[lang][0].decode('utf-8')
            flat = _BREAKS.sub(' ', text)
            joined += flat != text
            files[lang].write(flat + '\n')
          pairs += 1
      finally:
        for f in files.values():
          f.close()
      for lang in LANGUAGES:
        (out / f'{split}.{lang}.tmp').replace(out / f'{split}.{lang}')
      counts[split] = {'pairs': pairs, 'joined_lines': joined}
  return counts


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--tfds_dir', default='~/tensorflow_datasets', help='TFDS data dir')
  parser.add_argument('--output_dir', required=True, type=cli.folder)
  parser.add_argument('--overwrite', action='store_true', help='replace files in the way')
  args = parser.parse_args(argv)
  try:
    counts = write(args.tfds_dir, args.output_dir, overwrite=args.overwrite)
  except DataError as e:
    parser.exit(1, f'Error: {e}\n')
  if not counts:
    print(f'{args.output_dir} already holds these shards; nothing to do.')
  for split, count in counts.items():
    note = (
      f' ({count["joined_lines"]} sentences with line breaks or tabs made spaces)'
      if count['joined_lines']
      else ''
    )
    print(f'{split}: {count["pairs"]} pairs{note}')
  print(
    'Next: python -m corpora.translation vocabulary '
    f'--data_dir {shlex.quote(str(args.output_dir))} --vocab_size 37000'
  )


if __name__ == '__main__':
  main()
