r"""Offline Pathfinder generator: two markers, joined or not by one dashed curved contour.

Each image holds two long dashed contours A and B and a few short distractor contours, all grown
as smooth random curves that keep a Chebyshev distance of at least 3 pixels from one another. A
positive (label 1) puts the two square markers on both ends of A; a negative puts one marker on an
end of A and one on an end of B. Within a contour dashes are separated by one-pixel gaps, so
consecutive dashes lie within Chebyshev distance 2: treating ink pixels closer than 3 as connected,
the markers are connected exactly in positives (the tests check this with a flood fill). Contour
length grows with difficulty (6 / 9 / 14 dashes, as `curv_baseline` / `curv_contour_length_9` /
`curv_contour_length_14`). It is not the original generator's pixel distribution, but the same task:
deciding the label requires following the path. Labels are balanced 50/50.

Files follow the release layout under `<output_dir>/pathfinder<res>/<difficulty dir>/`:
`imgs/<k>/sample_<j>.png` (1000 per folder) and text `metadata/<k>.npy` lines
`imgs/<k> sample_<j>.png <index> <label>`.

  python -m lra.pathfinder_generator --output_dir DIR --resolution {32,128} --difficulty hard \
      --num_examples N --seed 0 [--num_workers N] [--overwrite]

Every image is drawn from its own RNG, seeded with the seed and its index, and the labels from one
shuffle of the seed's RNG, so `--num_workers N` (N processes, each drawing whole `imgs/<k>` folders)
writes the same files, byte for byte, as one process; the worker count is not part of the recorded
settings. Speed: 1.4 s per 1000 Pathfinder-32 hard images on one core of the 2-core CPU this was
measured on (10,000 images in 15 s, start-up included), so the official size, 200,000 images
(160,000 training examples, the LRA release's count for `curv_contour_length_14`), takes about
4.7 minutes on one core, and about 20 to 30 s with `--num_workers 16` on a 16-core machine (an
estimate: 200 folders of 1000 images over 16 processes, plus their start). They take about 0.8 GB
of disk (4 KB blocks), and their first load (`lra.load_task`, which builds the token cache) about
1.1 s per 10,000 images here.

Existing `metadata/` and `imgs/` folders are never replaced unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import random
import shutil
from pathlib import Path

import numpy as np

from lra import cli
from lra.core import DataError
from lra.files import writing_outputs
from lra.pathfinder import DIFFICULTIES

INK = 255
NUM_DASHES = {'easy': 6, 'intermediate': 9, 'hard': 14}
GAP = 1  # Off pixels between dashes; one keeps consecutive dashes within Chebyshev distance 2.
CONNECT_RADIUS = 2  # Ink pixels this close (Chebyshev) belong to the same contour.
IMAGES_PER_FOLDER = 1000
_NEIGHBOURS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b)
_SUBSTEP = 0.25  # Curve sampling step in pixels; keeps the rasterised chain 8-connected.
_TRIES = 200  # Fresh canvases per image before giving up.
_TRIES_PER_CONTOUR = 5


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Drawing parameters of one resolution.

  Attributes:
    dash: on pixels per dash.
    segment: curve length (pixels) between direction changes.
    max_turn: largest direction change per segment (radians) while the way is free; a blocked
      segment is retried with up to 4.7 times this bound, which steers contours around obstacles.
    marker: half-size of the square markers ((2 * marker + 1) pixels wide).
    num_distractors: distractor contours attempted per image.
    padding: blank border (pixels).
  """

  dash: int
  segment: float
  max_turn: float
  marker: int
  num_distractors: int
  padding: int = 1


GEOMETRY = {
  32: Geometry(dash=2, segment=2.0, max_turn=0.4, marker=1, num_distractors=4),
  128: Geometry(dash=5, segment=3.0, max_turn=0.3, marker=2, num_distractors=12),
}


class _Canvas:
  """Tracks where new contours may go: at least CONNECT_RADIUS + 1 away from earlier ones."""

  def __init__(self, resolution: int, geometry: Geometry):
    self.resolution = resolution
    self.geometry = geometry
    self.blocked = np.zeros((resolution, resolution), bool)

  def free(self, y: int, x: int, margin: int = 0) -> bool:
    low, high = self.geometry.padding + margin, self.resolution - 1 - self.geometry.padding - margin
    return low <= y <= high and low <= x <= high and not self.blocked[y, x]

  def block(self, pixels: list[tuple[int, int]]) -> None:
    r = CONNECT_RADIUS
    for y, x in pixels:
      self.blocked[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1] = True

  def grow(self, rng: random.Random, length: int, margin: int) -> list[tuple[int, int]] | None:
    """Grows an 8-connected chain of `length` pixels along a smooth random curve, or None.

    `margin` keeps the chain's ends far enough from the border for a marker.
    """
    g = self.geometry
    y, x = (
      rng.uniform(g.padding + margin, self.resolution - 1 - g.padding - margin) for _ in range(2)
    )
    if not self.free(round(y), round(x), margin):
      return None
    angle = rng.uniform(0, 2 * math.pi)
    chain = [(round(y), round(x))]
    index = {chain[0]: 0}
    while len(chain) < length:
      for attempt in range(12):  # Steer harder after each blocked try, then give up.
        bound = g.max_turn * (1 + attempt / 3)
        turn = angle + rng.uniform(-bound, bound)
        step = self._segment(chain, index, y, x, turn, length)
        if step is not None:
          break
      else:
        return None
      pixels, y, x, angle = *step, turn
      for pixel in pixels:
        index[pixel] = len(chain)
        chain.append(pixel)
    return chain[:length] if self.free(*chain[length - 1], margin) else None

  def _segment(self, chain, index, y, x, angle, length):
    """Rasterises one curve segment; returns (new pixels, end y, end x) or None if blocked."""
    dy, dx = math.sin(angle) * _SUBSTEP, math.cos(angle) * _SUBSTEP
    pixels, last = [], chain[-1]
    for _ in range(round(self.geometry.segment / _SUBSTEP)):
      y, x = y + dy, x + dx
      pixel = (round(y), round(x))
      if pixel == last:
        continue
      if not self.free(*pixel) or pixel in index or pixel in pixels:
        return None
      # Do not run back along the contour itself: no neighbour older than the previous 3 pixels.
      oldest = len(chain) + len(pixels) - 3
      if any(index.get((pixel[0] + a, pixel[1] + b), oldest) < oldest for a, b in _NEIGHBOURS):
        return None
      pixels.append(pixel)
      last = pixel
      if len(chain) + len(pixels) >= length:
        break
    return pixels, y, x


def _square(center: tuple[int, int], half: int) -> list[tuple[int, int]]:
  return [
    (center[0] + a, center[1] + b) for a in range(-half, half + 1) for b in range(-half, half + 1)
  ]


def draw_example(
  resolution: int, difficulty: str, label: int, rng: random.Random
) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int]]]:
  """Draws one image.

  Args:
    resolution: 32 or 128.
    difficulty: 'easy', 'intermediate' or 'hard'.
    label: 1 to join the markers by one contour, 0 to put them on two different contours.
    rng: random source.

  Returns:
    [res, res] uint8 image (0 background, 255 ink) and the two marker centres (y, x).

  Raises:
    DataError: two contours do not fit in the image.
  """
  g = GEOMETRY[resolution]
  length = NUM_DASHES[difficulty] * (g.dash + GAP) - GAP
  for _ in range(_TRIES):
    canvas = _Canvas(resolution, g)
    contours = []
    for _ in range(2 * _TRIES_PER_CONTOUR):
      chain = canvas.grow(rng, length, g.marker)
      ends = [] if chain is None else _square(chain[0], g.marker) + _square(chain[-1], g.marker)
      if chain is not None and all(canvas.free(*p) for p in ends):
        canvas.block(chain + ends)
        contours.append(chain)
        if len(contours) == 2:
          break
    if len(contours) == 2:
      break
  else:
    raise DataError(f'could not place two contours in a {resolution}x{resolution} image')
  for _ in range(g.num_distractors):
    for _ in range(_TRIES_PER_CONTOUR):
      chain = canvas.grow(rng, max(length // 3, g.dash), 0)
      if chain is not None:
        canvas.block(chain)
        contours.append(chain)
        break
  image = np.zeros((resolution, resolution), np.uint8)
  for chain in contours:
    for i, (y, x) in enumerate(chain):
      if i % (g.dash + GAP) < g.dash:
        image[y, x] = INK
  first, second = contours[0], contours[1]
  ends = (
    (first[0], first[-1])
    if label
    else (rng.choice((first[0], first[-1])), rng.choice((second[0], second[-1])))
  )
  for end in ends:
    for y, x in _square(end, g.marker):
      image[y, x] = INK
  return image, ends


def _draw_folder(
  root: Path,
  resolution: int,
  difficulty: str,
  seed: int,
  first: int,
  labels: list[int],
  per_folder: int,
) -> list[str]:
  """Draws and writes the images `first`, `first + 1`, ... with `labels` (one `imgs/<k>` folder);
  returns their metadata lines."""
  from PIL import Image  # Imported here: ListOps never needs PIL.

  lines = []
  for index, label in enumerate(labels, start=first):
    folder, j = divmod(index, per_folder)
    image, _ = draw_example(resolution, difficulty, label, random.Random(seed * 1_000_003 + index))
    (root / 'imgs' / str(folder)).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode='L').save(root / 'imgs' / str(folder) / f'sample_{j}.png')
    lines.append(f'imgs/{folder} sample_{j}.png {index} {label}\n')
  return lines


def generate(
  output_dir: str | Path,
  *,
  resolution: int = 32,
  difficulty: str = 'hard',
  num_examples: int = 1000,
  seed: int = 0,
  overwrite: bool = False,
  num_workers: int = 1,
) -> Path:
  """Writes `num_examples` images in the release layout and returns the difficulty folder.

  Args:
    output_dir: the release root (`<output_dir>/pathfinder<res>/<difficulty dir>/`).
    resolution: 32 or 128.
    difficulty: 'easy', 'intermediate' or 'hard'.
    num_examples: images (labels 50/50).
    seed: seed of the labels' shuffle and of every image's RNG (seed * 1000003 + index).
    overwrite: replace existing outputs (kept until the new ones are written,
      `lra.files.writing_outputs`).
    num_workers: processes drawing `imgs/<k>` folders in parallel; the files are the same for
      every count (module docstring).

  Raises:
    DataError: bad resolution or difficulty; `num_workers` < 1; `metadata/` or `imgs/` exists, was
      not written with these settings, and `overwrite` is False (with `overwrite` both are
      replaced).
  """
  if resolution not in GEOMETRY or difficulty not in DIFFICULTIES:
    raise DataError(
      f'resolution must be one of {sorted(GEOMETRY)} and difficulty one of {sorted(DIFFICULTIES)}'
    )
  if num_workers < 1:
    raise DataError(f'num_workers must be at least 1, got {num_workers}')
  root = Path(output_dir) / f'pathfinder{resolution}' / DIFFICULTIES[difficulty]
  paths = [root / 'metadata', root / 'imgs']
  settings = dict(
    resolution=resolution, difficulty=difficulty, num_examples=num_examples, seed=seed
  )
  with writing_outputs(paths, overwrite, settings) as todo:
    if not todo:
      return root
    labels = [i % 2 for i in range(num_examples)]
    random.Random(seed).shuffle(labels)
    root.mkdir(parents=True, exist_ok=True)
    per_folder = IMAGES_PER_FOLDER
    firsts = range(0, num_examples, per_folder)
    jobs = [
      (root, resolution, difficulty, seed, first, labels[first : first + per_folder], per_folder)
      for first in firsts
    ]
    if num_workers == 1:
      folders = [_draw_folder(*job) for job in jobs]
    else:
      context = multiprocessing.get_context('spawn')
      with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
        folders = list(pool.map(_draw_folder, *zip(*jobs)))
    # The metadata lists the images; written to a temporary folder renamed when complete, so that a
    # killed run leaves no metadata rather than some of it (a short split that would load).
    written = root / '.metadata.tmp'
    shutil.rmtree(written, ignore_errors=True)
    written.mkdir()
    for folder, folder_lines in enumerate(folders):
      (written / f'{folder}.npy').write_text(''.join(folder_lines))
    os.replace(written, root / 'metadata')
  return root


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--output_dir', required=True, type=cli.folder, help='the release root of the images'
  )
  parser.add_argument(
    '--resolution',
    type=int,
    choices=sorted(GEOMETRY),
    default=32,
    help='image side in pixels (default %(default)s)',
  )
  parser.add_argument(
    '--difficulty',
    choices=list(DIFFICULTIES),
    default='hard',
    help='contour length: curv_baseline, curv_contour_length_9 or _14 (default %(default)s)',
  )
  cli.add_integer_flags(
    parser,
    [('num_examples', 1000, 10, 'images, >= 10 (80/10/10 split)'), ('seed', 0, 0, 'random seed')],
  )
  parser.add_argument(
    '--num_workers',
    type=cli.integer(1),
    default=1,
    help='processes drawing in parallel (the same files for every count)',
  )
  parser.add_argument(
    '--overwrite',
    action='store_true',
    help='replace existing metadata/ and imgs/ folders (default: refuse)',
  )
  args = parser.parse_args(argv)
  try:
    root = generate(
      args.output_dir,
      resolution=args.resolution,
      difficulty=args.difficulty,
      num_examples=args.num_examples,
      seed=args.seed,
      overwrite=args.overwrite,
      num_workers=args.num_workers,
    )
  except DataError as e:
    cli.refuse(e)
  print(f'{root}: {args.num_examples} images (imgs/ and metadata/)')


if __name__ == '__main__':
  main()
