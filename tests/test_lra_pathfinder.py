"""Tests of the Pathfinder loader (release layout) and the Pathfinder generator."""

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lra
from lra import pathfinder_generator


def write_release(root: Path, images: list[np.ndarray], labels: list[int]) -> Path:
  """Writes images in the release layout under root/pathfinder32/curv_contour_length_14."""
  task = root / 'pathfinder32' / 'curv_contour_length_14'
  (task / 'metadata').mkdir(parents=True)
  (task / 'imgs' / '0').mkdir(parents=True)
  lines = []
  for j, (image, label) in enumerate(zip(images, labels)):
    Image.fromarray(image, mode='L').save(task / 'imgs' / '0' / f'sample_{j}.png')
    lines.append(f'imgs/0 sample_{j}.png {j} {label} 14 0.5\n')
  (task / 'metadata' / '0.npy').write_text(''.join(lines))
  return task


def flood_fill(ink: np.ndarray, start: tuple[int, int], radius: int) -> np.ndarray:
  """Ink pixels reachable from `start` through steps of Chebyshev length <= radius."""
  reached = np.zeros_like(ink)
  reached[start] = True
  while True:
    padded = np.pad(reached, radius)
    grown = np.zeros_like(reached)
    for a in range(2 * radius + 1):
      for b in range(2 * radius + 1):
        grown |= padded[a : a + ink.shape[0], b : b + ink.shape[1]]
    grown &= ink
    if (grown == reached).all():
      return reached
    reached = grown


def test_release_layout_pixels_split_and_empty_png(tmp_path):
  images = [np.full((32, 32), 10 * i, np.uint8) for i in range(20)]
  images[3][0, :3] = [0, 7, 255]
  task = write_release(tmp_path, images, [i % 2 for i in range(20)])
  (task / 'imgs' / '0' / 'sample_5.png').write_bytes(b'')
  data = lra.load_task('pathfinder32', tmp_path, cache=False)
  assert data.info['skipped_empty_pngs'] == 1
  sizes = (data.train.num_examples, data.validation.num_examples, data.test.num_examples)
  assert sizes == (15, 1, 3)
  assert (data.vocab_size, data.num_classes, data.max_length, data.name) == (
    256,
    2,
    1024,
    'pathfinder32',
  )
  everything = np.concatenate([data.train.inputs, data.validation.inputs, data.test.inputs])
  targets = np.concatenate([data.train.targets, data.validation.targets, data.test.targets])
  assert everything.shape == (19, 1024) and everything.dtype == np.uint8
  assert np.all(data.train.lengths == 1024)
  level = everything[:, 100] // 10  # Every image is recognisable by its level; 5 was skipped.
  assert sorted(level.tolist()) == [i for i in range(20) if i != 5]
  np.testing.assert_array_equal(targets, level % 2)
  np.testing.assert_array_equal(everything[level == 3][0, :3], [0, 7, 255])
  again = lra.load_task('pathfinder32', tmp_path, cache=False)
  np.testing.assert_array_equal(again.test.inputs, data.test.inputs)
  other = lra.load_task('pathfinder32', tmp_path, cache=False, split_seed=1)
  assert not np.array_equal(other.test.inputs, data.test.inputs)


@pytest.mark.parametrize(
  'line, message',
  [
    ('imgs/0 sample_0.png 0\n', ':2: expected at least 4'),
    ('imgs/0 sample_0.png 0 2\n', ":2: label '2' is out"),
  ],
)
def test_malformed_metadata_names_file_and_line(tmp_path, line, message):
  task = write_release(tmp_path, [np.zeros((32, 32), np.uint8)], [1])
  meta = task / 'metadata' / '0.npy'
  meta.write_text(meta.read_text() + line)
  with pytest.raises(lra.DataError, match=f'0.npy{message}'):
    lra.load_task('pathfinder32', tmp_path, cache=False)


def test_binary_metadata_is_named_as_such(tmp_path):
  task = write_release(tmp_path, [np.zeros((32, 32), np.uint8)], [1])
  meta = task / 'metadata' / '0.npy'
  np.save(meta, np.array([['imgs/0', 'sample_0.png', '0', '1']]))
  with pytest.raises(lra.DataError, match=f'{meta}: a binary NumPy array .np.save.; the metadata'):
    lra.load_task('pathfinder32', tmp_path, cache=False)
  meta.write_bytes((task / 'imgs' / '0' / 'sample_0.png').read_bytes())  # A PNG: not UTF-8.
  with pytest.raises(
    lra.DataError, match=f'{meta}:1: not UTF-8 text .a binary file.; the metadata'
  ):
    lra.load_task('pathfinder32', tmp_path, cache=False)
  meta.write_bytes(b'imgs/0 sample_0.png 0 1\r\n\r\nimgs/0 sample_\xff.png 1 0\n')
  with pytest.raises(lra.DataError, match=f'{meta}:3: not UTF-8 text'):
    lra.load_task('pathfinder32', tmp_path, cache=False)


def test_wrong_image_size_and_missing_data(tmp_path):
  write_release(tmp_path, [np.zeros((16, 32), np.uint8)], [1])
  with pytest.raises(
    lra.DataError, match='sample_0.png: expected an 8-bit grayscale .mode L. 32x32'
  ):
    lra.load_task('pathfinder32', tmp_path, cache=False)
  # A palette image decodes to [32, 32] uint8 too, but its values are palette indices.
  palette = Image.fromarray(np.full((32, 32), 200, np.uint8), mode='L').convert('P')
  palette.save(tmp_path / 'pathfinder32' / 'curv_contour_length_14' / 'imgs' / '0' / 'sample_0.png')
  with pytest.raises(lra.DataError, match='sample_0.png: .* got mode P, shape \\(32, 32\\)'):
    lra.load_task('pathfinder32', tmp_path, cache=False)
  with pytest.raises(lra.DataError) as info:
    lra.load_task('pathx', tmp_path / 'none', difficulty='easy')
  message = str(info.value)
  assert 'pathfinder128/curv_baseline/metadata' in message and 'sample_<j>.png' in message
  assert 'python -m lra.pathfinder_generator --output_dir' in message
  assert '--resolution 128' in message
  with pytest.raises(lra.DataError, match="Unknown difficulty 'medium'"):
    lra.load_task('pathfinder32', tmp_path, difficulty='medium')


def test_metadata_files_are_read_in_numeric_order(tmp_path):
  (tmp_path / 'metadata').mkdir()
  for k in range(12):  # String order would read 0, 1, 10, 11, 2, ...
    (tmp_path / 'metadata' / f'{k}.npy').write_text(f'imgs/{k} sample_0.png 0 {k % 2}\n')
  entries = lra.pathfinder.read_metadata(tmp_path)
  assert entries == [(tmp_path / 'imgs' / str(k) / 'sample_0.png', k % 2) for k in range(12)]


def test_the_cache_rereads_a_regenerated_png(tmp_path):
  images = [np.full((32, 32), 10 * i, np.uint8) for i in range(20)]
  task = write_release(tmp_path, images, [i % 2 for i in range(20)])

  def levels():
    data = lra.load_task('pathfinder32', tmp_path)
    splits = (data.train, data.validation, data.test)
    return isinstance(data.train.inputs, np.memmap), sorted(
      np.concatenate([s.inputs[:, 100] for s in splits]).tolist()
    )

  assert levels() == (False, [10 * i for i in range(20)])
  assert levels() == (True, [10 * i for i in range(20)])  # Served from the cache.
  png = task / 'imgs' / '0' / 'sample_3.png'
  before = png.stat().st_mtime_ns
  Image.fromarray(np.full((32, 32), 255, np.uint8), mode='L').save(png)
  os.utime(png, ns=(before + 10**9, before + 10**9))  # Even where mtimes are coarse.
  assert levels() == (False, sorted([10 * i for i in range(20) if i != 3] + [255]))


@pytest.mark.parametrize('resolution, count', [(32, 40), (128, 6)])
def test_generator_positives_connect_markers_and_negatives_do_not(resolution, count):
  rng = random.Random(resolution)
  for i in range(count):
    label = i % 2
    image, (first, second) = pathfinder_generator.draw_example(resolution, 'hard', label, rng)
    assert image.shape == (resolution, resolution) and image.dtype == np.uint8
    assert image[first] == image[second] == pathfinder_generator.INK
    reached = flood_fill(image > 0, first, pathfinder_generator.CONNECT_RADIUS)
    assert bool(reached[second]) == bool(label), (resolution, i)
    # The marked contour is long (the task needs tracing), and there is more than one contour.
    assert reached.sum() > 20 and (image > 0).sum() > reached.sum()


def test_generator_files_load_balanced_and_seeded(tmp_path):
  pathfinder_generator.main(
    [
      '--output_dir',
      str(tmp_path),
      '--resolution',
      '32',
      '--difficulty',
      'easy',
      '--num_examples',
      '60',
      '--seed',
      '3',
    ]
  )
  data = lra.load_task('pathfinder32', tmp_path, difficulty='easy')
  targets = np.concatenate([data.train.targets, data.validation.targets, data.test.targets])
  assert len(targets) == 60 and targets.sum() == 30
  assert (data.train.num_examples, data.validation.num_examples) == (48, 6)
  first = (tmp_path / 'pathfinder32/curv_baseline/imgs/0/sample_7.png').read_bytes()
  pathfinder_generator.generate(
    tmp_path / 'again', resolution=32, difficulty='easy', num_examples=60, seed=3
  )
  assert (tmp_path / 'again/pathfinder32/curv_baseline/imgs/0/sample_7.png').read_bytes() == first
  line = (tmp_path / 'pathfinder32/curv_baseline/metadata/0.npy').read_text().splitlines()[7]
  assert line.split()[:3] == ['imgs/0', 'sample_7.png', '7']


def test_generator_workers_write_the_same_files_as_one_process(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(pathfinder_generator, 'IMAGES_PER_FOLDER', 10)  # 35 images: 4 folders.
  settings = dict(resolution=32, difficulty='hard', num_examples=35, seed=5)
  one = pathfinder_generator.generate(tmp_path / 'one', **settings)
  three = pathfinder_generator.generate(tmp_path / 'three', **settings, num_workers=3)
  files = lambda root: sorted(p.relative_to(root) for p in root.rglob('*') if p.is_file())
  assert files(one) == files(three)
  assert [len(list((one / 'imgs' / str(k)).iterdir())) for k in range(4)] == [10, 10, 10, 5]
  for path in files(one):
    assert (one / path).read_bytes() == (three / path).read_bytes(), path
  lines = ''.join((one / 'metadata' / f'{k}.npy').read_text() for k in range(4)).splitlines()
  assert [line.split()[2] for line in lines] == [str(i) for i in range(35)]
  assert sum(int(line.split()[3]) for line in lines) == 17  # 35 labels i % 2, shuffled.
  # The record holds no worker count: the same command with another count is a no-op.
  record = (one / '.generated-metadata.json').read_text()
  assert 'num_workers' not in record
  before = (one / 'imgs' / '3' / 'sample_4.png').stat().st_mtime_ns
  pathfinder_generator.generate(tmp_path / 'one', **settings, num_workers=2)
  assert (one / 'imgs' / '3' / 'sample_4.png').stat().st_mtime_ns == before
  with pytest.raises(SystemExit):
    pathfinder_generator.main(['--output_dir', str(tmp_path / 'x'), '--num_workers', '0'])
  assert '--num_workers: must be an integer >= 1' in capsys.readouterr().err
  with pytest.raises(lra.DataError, match='num_workers must be at least 1'):
    pathfinder_generator.generate(tmp_path / 'y', num_workers=0)


def ink_components(ink: np.ndarray, radius: int) -> list[np.ndarray]:
  """The groups of ink pixels linked by steps of Chebyshev length <= radius."""
  left, groups = ink.copy(), []
  while left.any():
    group = flood_fill(left, tuple(np.argwhere(left)[0]), radius)
    groups.append(group)
    left &= ~group
  return groups


def draw_images(resolution, difficulty, count, seed=0):
  """`count` images from draw_example, labels alternating, with their marker centres."""
  rng = random.Random(seed)
  return [
    pathfinder_generator.draw_example(resolution, difficulty, i % 2, rng) for i in range(count)
  ]


def contour_length(resolution, difficulty):
  """Pixels along a main contour: NUM_DASHES dashes with a GAP between consecutive ones."""
  dash = pathfinder_generator.GEOMETRY[resolution].dash
  num_dashes = pathfinder_generator.NUM_DASHES[difficulty]
  return num_dashes * dash + (num_dashes - 1) * pathfinder_generator.GAP


@pytest.mark.parametrize(
  'resolution, difficulty, count', [(32, 'easy', 10), (32, 'hard', 10), (128, 'intermediate', 4)]
)
def test_generator_marked_contours_hold_num_dashes_dashes(
  monkeypatch, resolution, difficulty, count
):
  # Single-pixel markers (they sit on contour ends, which are lit) leave only the contours' ink:
  # NUM_DASHES dashes of `dash` pixels each, no more (gaps unlit) and no less (all dashes drawn).
  geometry = pathfinder_generator.GEOMETRY[resolution]
  monkeypatch.setitem(
    pathfinder_generator.GEOMETRY, resolution, dataclasses.replace(geometry, marker=0)
  )
  expected = pathfinder_generator.NUM_DASHES[difficulty] * geometry.dash
  for image, ends in draw_images(resolution, difficulty, count):
    for end in ends:
      contour = flood_fill(image > 0, end, pathfinder_generator.CONNECT_RADIUS)
      assert contour.sum() == expected, (end, contour.sum())


@pytest.mark.parametrize('resolution, count', [(32, 10), (128, 4)])
def test_generator_marks_contour_ends_with_full_squares(resolution, count):
  half = pathfinder_generator.GEOMETRY[resolution].marker
  for image, ends in draw_images(resolution, 'hard', count):
    for y, x in ends:
      square = image[y - half : y + half + 1, x - half : x + half + 1]
      assert square.shape == (2 * half + 1,) * 2 and (square == pathfinder_generator.INK).all()


@pytest.mark.parametrize('resolution, count', [(32, 40), (128, 6)])
def test_generator_leaves_the_padding_blank(resolution, count):
  padding = pathfinder_generator.GEOMETRY[resolution].padding
  ink = np.array([image > 0 for image, _ in draw_images(resolution, 'hard', count)]).any(0)
  inside = ink[padding : resolution - padding, padding : resolution - padding]
  assert ink.sum() == inside.sum() and inside.any()


@pytest.mark.parametrize('resolution, count', [(32, 20), (128, 4)])
def test_generator_distractors_are_short(resolution, count):
  # A distractor is a third of a main contour (at least one dash); the two main contours are the
  # marked ones in negatives, so every other contour there is a distractor.
  geometry = pathfinder_generator.GEOMETRY[resolution]
  longest = max(contour_length(resolution, 'hard') // 3, geometry.dash)
  num_distractors = 0
  for image, ends in draw_images(resolution, 'hard', count)[0::2]:
    for contour in ink_components(image > 0, pathfinder_generator.CONNECT_RADIUS):
      if not any(contour[end] for end in ends):
        assert contour.sum() <= longest
        num_distractors += 1
  assert num_distractors > 0


def test_generator_labels_are_shuffled_and_balanced(tmp_path):
  root = pathfinder_generator.generate(tmp_path, difficulty='easy', num_examples=20, seed=1)
  lines = (root / 'metadata' / '0.npy').read_text().splitlines()
  labels = [int(line.split()[3]) for line in lines]
  assert sum(labels) == 10 and labels != [i % 2 for i in range(20)]


def test_generator_draws_each_image_from_its_own_seeded_rng(tmp_path, monkeypatch):
  monkeypatch.setattr(pathfinder_generator, 'IMAGES_PER_FOLDER', 5)  # 20 images: 4 folders.
  seed = 2
  root = pathfinder_generator.generate(tmp_path, num_examples=20, seed=seed)
  lines = ''.join((root / 'metadata' / f'{k}.npy').read_text() for k in range(4)).splitlines()
  pixels = []
  for line in lines:
    folder, name, index, label = line.split()
    pixels.append(np.asarray(Image.open(root / folder / name)))
    # The documented seed of image `index` (generate's docstring), across folders too.
    rng = random.Random(seed * 1_000_003 + int(index))
    expected, _ = pathfinder_generator.draw_example(32, 'hard', int(label), rng)
    np.testing.assert_array_equal(pixels[-1], expected, err_msg=line)
  assert len({p.tobytes() for p in pixels}) == len(pixels)  # No folder repeats another's images.
