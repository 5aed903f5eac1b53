"""Pathfinder-32 and Path-X (Pathfinder-128): is there a dashed path between the two markers?

Layout of the LRA release (`lra_release/lra_release/` is `data_dir`, which holds `pathfinder32/`
and `pathfinder128/`): `pathfinder<res>/<difficulty dir>/metadata/<k>.npy` -- text files despite
the extension, one line per image `<folder> <file> <index> <label> ...` -- and
`pathfinder<res>/<difficulty dir>/<folder>/<file>` 8-bit grayscale PNGs. Empty PNGs (the release
has one) are skipped and counted in `TaskData.info['skipped_empty_pngs']`. The images are split
80/10/10 by a permutation seeded with `split_seed`. Pixels 0..255 are the tokens and every position
is valid (`lengths == res * res`); the official model's mask `inputs > 0`, which treats black
pixels as padding, is the model's setting (`ModelConfig.padding_mask='nonzero'`).
"""

from __future__ import annotations

import io
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lra import tokenize
from lra.cache import Cache
from lra.core import (
  DataError,
  TaskData,
  arrays_to_splits,
  parse_label,
  require_files,
  splits_to_arrays,
  task_data,
)
from lra.image import image_split

DIFFICULTIES = {
  'easy': 'curv_baseline',
  'intermediate': 'curv_contour_length_9',
  'hard': 'curv_contour_length_14',
}
NUM_CLASSES = 2
SPLIT_FRACTIONS = (0.8, 0.1)  # train, validation; test gets the rest.
SKIPPED_KEY = 'skipped_empty_pngs'
_METADATA_FORMAT = (
  'the metadata files of the LRA release are text lines '
  '`imgs/<k> sample_<j>.png <index> <label> ...` despite their .npy extension'
)


def _metadata_key(path: Path) -> tuple[int, str]:
  return (int(path.stem), '') if path.stem.isdigit() else (-1, path.stem)


def read_metadata(root: Path) -> list[tuple[Path, int]]:
  """Returns (image path, label) for every line of `root/metadata/*.npy`, files in numeric order.

  Raises:
    DataError: a metadata file that is binary (a NumPy array saved with `np.save`, or not UTF-8
      text), or a malformed metadata line, naming the file (and the line).
  """
  entries = []
  for meta in sorted((root / 'metadata').glob('*.npy'), key=_metadata_key):
    raw = meta.read_bytes()
    if raw.startswith(b'\x93NUMPY'):
      raise DataError(f'{meta}: a binary NumPy array (np.save); {_METADATA_FORMAT}')
    try:
      text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      line = raw.count(b'\n', 0, e.start) + 1
      raise DataError(
        f'{meta}:{line}: not UTF-8 text (a binary file); {_METADATA_FORMAT}'
      ) from None
    # Universal newlines, as a file opened in text mode reads them.
    with io.StringIO(text, newline=None) as f:
      for line_no, line in enumerate(f, start=1):
        fields = line.split()
        if not fields:
          continue
        where = f'{meta}:{line_no}'
        if len(fields) < 4:
          raise DataError(
            f'{where}: expected at least 4 space-separated fields (folder, file, '
            f'index, label), got {len(fields)}'
          )
        entries.append((root / fields[0] / fields[1], parse_label(fields[3], NUM_CLASSES, where)))
  return entries


def _decode(path: Path, resolution: int) -> np.ndarray | None:
  """Returns the [res, res] uint8 pixels of a PNG, or None for an empty file."""
  from PIL import Image, UnidentifiedImageError  # Imported here: ListOps never needs PIL.

  try:
    if path.stat().st_size == 0:
      return None
    with Image.open(path) as image:
      mode = image.mode
      pixels = np.asarray(image)
  except FileNotFoundError:
    raise DataError(f'{path}: listed in the metadata but missing') from None
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f'{path}: cannot decode the PNG ({e})') from None
  # A palette image ('P') also decodes to [res, res] uint8, but of palette indices, not greys.
  if pixels.shape != (resolution, resolution) or pixels.dtype != np.uint8 or mode != 'L':
    raise DataError(
      f'{path}: expected an 8-bit grayscale (mode L) {resolution}x{resolution} image, '
      f'got mode {mode}, shape {pixels.shape} and dtype {pixels.dtype}'
    )
  return pixels


def _build(
  entries: list[tuple[Path, int]], resolution: int, split_seed: int
) -> dict[str, np.ndarray]:
  with ThreadPoolExecutor(max_workers=8) as pool:
    decoded = list(pool.map(lambda entry: _decode(entry[0], resolution), entries, chunksize=256))
  kept = [i for i, pixels in enumerate(decoded) if pixels is not None]
  images = (
    np.stack([decoded[i] for i in kept])
    if kept
    else np.zeros((0, resolution, resolution), np.uint8)
  )
  labels = np.array([entries[i][1] for i in kept], np.int32)
  order = np.random.default_rng(split_seed).permutation(len(kept))
  num_train = int(SPLIT_FRACTIONS[0] * len(kept))
  num_val = int(SPLIT_FRACTIONS[1] * len(kept))
  parts = np.split(order, [num_train, num_train + num_val])
  arrays = splits_to_arrays(
    {
      name: image_split(images[np.sort(part)], labels[np.sort(part)])
      for name, part in zip(('train', 'validation', 'test'), parts)
    }
  )
  arrays[SKIPPED_KEY] = np.array(len(entries) - len(kept))
  return arrays


def load(
  data_dir: Path,
  *,
  resolution: int,
  max_length: int,
  difficulty: str,
  split_seed: int,
  cache: Cache,
) -> TaskData:
  """Loads `data_dir/pathfinder<resolution>/<difficulty dir>/` (see the module docstring).

  Raises:
    DataError: an unknown difficulty, a `max_length` other than resolution^2, or no
      metadata lines.
  """
  if difficulty not in DIFFICULTIES:
    raise DataError(f'Unknown difficulty {difficulty!r}; known: {", ".join(DIFFICULTIES)}')
  if max_length != resolution * resolution:
    raise DataError(
      f'pathfinder{resolution}: max_length must be {resolution * resolution}, got {max_length}'
    )
  root = data_dir / f'pathfinder{resolution}' / DIFFICULTIES[difficulty]
  require_files(
    [root / 'metadata' / '<k>.npy', root / 'imgs' / '<k>' / 'sample_<j>.png']
    if not root.is_dir()
    else [root / 'metadata', root / 'imgs'],
    f'Generate them with: python -m lra.pathfinder_generator --output_dir '
    f'{shlex.quote(str(data_dir))} '
    f'--resolution {resolution} --difficulty {difficulty} --num_examples 20000\n'
    f'or point data_dir at lra_release/lra_release from the official LRA release.',
    generated=True,
    folders=root.is_dir(),
  )
  entries = read_metadata(root)
  if not entries:
    raise DataError(f'{root / "metadata"}: no metadata lines found')
  metadata_files = sorted((root / 'metadata').glob('*.npy'), key=_metadata_key)
  arrays = dict(
    cache.load_or_build(
      f'pathfinder{resolution}-{difficulty}-{split_seed}',
      lambda: _build(entries, resolution, split_seed),
      params={'split_seed': split_seed},
      content_files=metadata_files,
      stat_files=[p for p, _ in entries if p.exists()],
    )
  )
  skipped = int(arrays.pop(SKIPPED_KEY))
  splits = arrays_to_splits(arrays)
  name = 'pathfinder32' if resolution == 32 else 'pathx'
  listed = f'the images listed in {root / "metadata"}'
  sources = {
    'train': f'{SPLIT_FRACTIONS[0]:.0%} of {listed}',
    'validation': f'{SPLIT_FRACTIONS[1]:.0%} of {listed}',
    'test': f'the rest of {listed}',
  }
  return task_data(
    name,
    splits,
    sources,
    f'max_length {max_length}',
    vocab_size=tokenize.PIXEL_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    max_length=max_length,
    info={SKIPPED_KEY: skipped, 'difficulty': difficulty},
  )
