r"""Small SYNTHETIC stand-ins for Text, Retrieval and Image in the official file formats.

For tests and demos only: the contents are made up, and the label is a simple function of the
content so that a tiny model can learn it in a few steps.
  text:      `aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`; reviews mix filler words with
             class words (pos: *great*, *superb*, ...; neg: ~awful~, ~boring~, ...).
  retrieval: `new_aan_pairs.{train,eval,test}.tsv`; linked pairs (label 1) draw both documents from
             one topic vocabulary, unlinked pairs (label 0) from another.
  image:     `cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`; a class-c image is a
             noisy gray image of mean intensity 12 + 24 c.
`--num_examples N` sets the training set size; evaluation splits get max(N // 4, 2) examples.
Existing outputs (`aclImdb/`, the three TSV files, `cifar-10-batches-py/`) are never replaced
unless `--overwrite` is given.

  python -m lra.synthetic --task {text,retrieval,image} --output_dir DIR --num_examples N --seed 0 \
      [--overwrite]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from lra import cli, image, retrieval, text
from lra.core import DataError
from lra.files import writing_outputs

TASKS = ('text', 'retrieval', 'image')
MARKER = 'SYNTHETIC'
_FILLER = ('the', 'a', 'film', 'plot', 'actor', 'scene', 'story', 'and', 'of', 'was', 'it', 'this')
_CLASS_WORDS = (
  ('~awful~', '~boring~', '~terrible~', '~hated~', '~dull~'),
  ('*great*', '*superb*', '*wonderful*', '*loved*', '*brilliant*'),
)
_TOPICS = (
  ('noise', 'random', 'cooking', 'weather', 'garden', 'music'),
  ('parsing', 'grammar', 'treebank', 'semantic', 'corpus', 'lexicon'),
)


def _words(
  rng: np.random.Generator, vocab: tuple[str, ...], class_vocab: tuple[str, ...], count: int
) -> str:
  """Returns `count` words, about a third drawn from `class_vocab`, after the synthetic marker."""
  words = [
    rng.choice(class_vocab) if rng.random() < 0.35 else rng.choice(vocab) for _ in range(count)
  ]
  return f'{MARKER} ' + ' '.join(words)


def _eval_size(num_examples: int) -> int:
  return max(num_examples // 4, 2)


def write_text(output_dir: Path, num_examples: int, seed: int, overwrite: bool = False) -> None:
  """Writes a synthetic `aclImdb/` folder (kept if written with the same settings; DataError if
  it exists otherwise, unless `overwrite`, which replaces it: `lra.files.writing_outputs`)."""
  rng = np.random.default_rng(seed)
  root = output_dir / 'aclImdb'
  paths, settings = [root], dict(num_examples=num_examples, seed=seed)
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return
    for split, size in (('train', num_examples), ('test', _eval_size(num_examples))):
      for i in range(size):
        label = i % 2
        folder = root / split / text.CLASS_FOLDERS[label]
        folder.mkdir(parents=True, exist_ok=True)
        rating = rng.integers(7, 11) if label else rng.integers(1, 5)
        review = _words(rng, _FILLER, _CLASS_WORDS[label], int(rng.integers(20, 60)))
        (folder / f'{i}_{rating}.txt').write_text(review + '.', encoding='utf-8')
    (root / 'README').write_text(
      f'{MARKER} stand-in for IMDb written by lra.synthetic; not real reviews.\n'
    )


def write_retrieval(
  output_dir: Path, num_examples: int, seed: int, overwrite: bool = False
) -> None:
  """Writes synthetic `new_aan_pairs.{train,eval,test}.tsv` (kept if written with the same
  settings; DataError if one exists otherwise, unless `overwrite`, which replaces them)."""
  rng = np.random.default_rng(seed)
  paths = [output_dir / name for name in retrieval.FILES.values()]
  settings = dict(num_examples=num_examples, seed=seed)
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, name in retrieval.FILES.items():
      size = num_examples if split == 'train' else _eval_size(num_examples)
      rows = []
      for i in range(size):
        label = i % 2
        docs = [_words(rng, _FILLER, _TOPICS[label], int(rng.integers(30, 120))) for _ in range(2)]
        rows.append(f'{label}\tsyn-{split}-{i}a\tsyn-{split}-{i}b\t{docs[0]}\t{docs[1]}\n')
      (output_dir / name).write_text(''.join(rows), encoding='utf-8')


def write_image(output_dir: Path, num_examples: int, seed: int, overwrite: bool = False) -> None:
  """Writes synthetic CIFAR-10 python batches in `cifar-10-batches-py/` (kept if written
  with the same settings; DataError if it exists otherwise, unless `overwrite`, which replaces
  it)."""
  rng = np.random.default_rng(seed)
  root = output_dir / image.PICKLE_DIR
  paths, settings = [root], dict(num_examples=num_examples, seed=seed)
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return
    root.mkdir(parents=True, exist_ok=True)

    def batch(size: int, label_name: str) -> dict[bytes, object]:
      labels = rng.integers(0, image.NUM_CLASSES, size)
      level = 12 + 24 * labels[:, None, None]
      pixels = level + rng.integers(-10, 11, (size, 3, image.SIDE * image.SIDE))
      data = np.clip(pixels, 0, 255).astype(np.uint8).reshape(size, -1)
      return {
        b'batch_label': label_name.encode(),
        b'labels': labels.tolist(),
        b'data': data,
        b'filenames': [f'{MARKER.lower()}_{i}.png'.encode() for i in range(size)],
      }

    sizes = np.diff(np.linspace(0, num_examples, len(image.TRAIN_BATCHES) + 1).astype(int))
    for name, size in zip(image.TRAIN_BATCHES, sizes):
      with open(root / name, 'wb') as f:
        pickle.dump(batch(int(size), f'{MARKER} training batch'), f)
    with open(root / image.TEST_BATCH, 'wb') as f:
      pickle.dump(batch(_eval_size(num_examples), f'{MARKER} testing batch'), f)
    with open(root / 'batches.meta', 'wb') as f:
      pickle.dump({b'label_names': [f'level{c}'.encode() for c in range(image.NUM_CLASSES)]}, f)


WRITERS = {'text': write_text, 'retrieval': write_retrieval, 'image': write_image}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--task', required=True, choices=TASKS)
  parser.add_argument('--output_dir', required=True, type=cli.folder)
  cli.add_integer_flags(
    parser,
    [
      ('num_examples', 1000, 10, 'training examples, >= 10 (the loaders hold 10%% out)'),
      ('seed', 0, 0, 'random seed'),
    ],
  )
  parser.add_argument(
    '--overwrite', action='store_true', help='replace existing outputs (default: refuse)'
  )
  args = parser.parse_args(argv)
  try:
    WRITERS[args.task](args.output_dir, args.num_examples, args.seed, args.overwrite)
  except DataError as e:
    cli.refuse(e)
  print(f'{args.output_dir}: a synthetic {args.task} stand-in')


if __name__ == '__main__':
  main()
