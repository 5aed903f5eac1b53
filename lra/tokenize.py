"""Byte-level encoding, padding and grayscale conversion shared by the LRA tasks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BYTE_VOCAB_SIZE = 257  # id 0 = padding, byte b -> id b + 1.
PIXEL_VOCAB_SIZE = 256  # pixel intensity v -> id v; no padding id.
GRAYSCALE_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def encode_bytes(data: bytes | str, max_length: int) -> np.ndarray:
  """Encodes text as byte ids (UTF-8 byte + 1), truncated to `max_length`.

  Args:
    data: raw bytes, or a string that is UTF-8 encoded first.
    max_length: number of leading bytes kept.

  Returns:
    [min(len(data), max_length)] uint16 ids in 1..256.
  """
  if isinstance(data, str):
    data = data.encode('utf-8')
  return np.frombuffer(data[:max_length], np.uint8).astype(np.uint16) + 1


def id_dtype(vocab_size: int) -> type[np.unsignedinteger]:
  """The compact dtype of token ids in [0, vocab_size): uint16 up to 65536 ids, else uint32."""
  return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def pad(
  sequences: Sequence[np.ndarray], max_length: int, dtype: np.dtype | type = np.uint16
) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token sequences with 0 into one array, truncating longer ones.

  Args:
    sequences: N 1-D token arrays.
    max_length: L, the padded length.
    dtype: dtype of the result.

  Returns:
    inputs: [N, L] tokens; lengths: [N] int32 number of valid positions.
  """
  inputs = np.zeros((len(sequences), max_length), dtype)
  lengths = np.zeros(len(sequences), np.int32)
  for i, seq in enumerate(sequences):
    n = min(len(seq), max_length)
    inputs[i, :n] = seq[:n]
    lengths[i] = n
  return inputs, lengths


def rgb_to_grayscale(images: np.ndarray) -> np.ndarray:
  """Converts uint8 RGB to uint8 grayscale exactly as `tf.image.rgb_to_grayscale` does.

  TensorFlow scales to [0, 1] by multiplying with float32(1 / 255), takes the 0.2989/0.5870/0.1140
  weighted sum in float32 and converts back by multiplying with 255.5 and truncating.

  Args:
    images: [..., 3] uint8.

  Returns:
    [...] uint8 intensities.
  """
  gray = (images.astype(np.float32) * np.float32(1.0 / 255.0)) @ GRAYSCALE_WEIGHTS
  return (gray * np.float32(255.5)).astype(np.uint8)
