"""Reads a PyTorch checkpoint (`torch.save`, zip format) into numpy arrays, without PyTorch.

Since PyTorch 1.6 `torch.save` writes a zip archive (PyTorch's `torch/serialization.py`, `_save`):

  <name>/data.pkl      the pickled object (protocol 2); every tensor storage is a persistent id
                       ('storage', torch.<Type>Storage, key, location, number of elements) and
                       every tensor `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                       requires_grad, backward_hooks[, metadata])`
  <name>/data/<key>    the raw bytes of one storage
  <name>/byteorder     'little' or 'big' (absent: little)
  <name>/version, ...  format records, not read

`load` unpickles `data.pkl` with a restricted unpickler: it builds dicts, lists, tuples,
`collections.OrderedDict` and `argparse.Namespace`, turns tensors into `TensorRef`s (read from the
archive only when asked for, so an optimizer state that is never used is never read), and imports
and calls nothing else: any other class the pickle names becomes an inert `Opaque` record. Loading
an untrusted checkpoint therefore runs no code from it.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

#: `torch.<Name>Storage` -> the numpy dtype of its elements.
STORAGE_DTYPES = {
  'FloatStorage': np.dtype(np.float32),
  'DoubleStorage': np.dtype(np.float64),
  'HalfStorage': np.dtype(np.float16),
  'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
  'LongStorage': np.dtype(np.int64),
  'IntStorage': np.dtype(np.int32),
  'ShortStorage': np.dtype(np.int16),
  'CharStorage': np.dtype(np.int8),
  'ByteStorage': np.dtype(np.uint8),
  'BoolStorage': np.dtype(np.bool_),
}
#: The first bytes of a checkpoint in the pre-1.6 format (a pickle, protocol 2, of a long magic).
_LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.'


class TorchCheckpointError(ValueError):
  """The file is not a complete PyTorch zip checkpoint, or holds something this reader refuses."""


@dataclasses.dataclass(frozen=True)
class StorageRef:
  """A storage of the archive, not read yet.

  Attributes:
    key: its entry `<name>/data/<key>`.
    dtype: element type.
    numel: number of elements.
  """

  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """A tensor of the archive, not read yet (`TorchCheckpoint.array` reads it).

  Attributes:
    storage: where its elements are.
    offset: first element, in elements of the storage.
    shape: its size.
    stride: its strides, in elements.
  """

  storage: StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  @property
  def dtype(self) -> np.dtype:
    return self.storage.dtype


class Opaque:
  """An object of a class the reader does not build (e.g. an optimizer's or a library's): its
  qualified name and what the pickle gave it, inert."""

  qualified_name = 'unknown'

  def __init__(self, *args: Any, **kwargs: Any):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def __repr__(self) -> str:
    return f'<{self.qualified_name}>'


def _rebuild_tensor(storage: Any, offset: int, shape: Any, stride: Any, *_: Any) -> TensorRef:
  if not isinstance(storage, StorageRef):
    raise TorchCheckpointError(f'a tensor whose storage is {storage!r}, not one of the archive.')
  shape, stride = tuple(int(n) for n in shape), tuple(int(s) for s in stride)
  return TensorRef(storage, int(offset), shape, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
  return data


_BUILDERS = {
  ('collections', 'OrderedDict'): collections.OrderedDict,
  ('argparse', 'Namespace'): argparse.Namespace,
  ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
  ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Builds only `_BUILDERS`' objects; storages become `StorageRef`s, other classes `Opaque`."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _BUILDERS:
      return _BUILDERS[(module, name)]
    return type(name, (Opaque,), {'qualified_name': f'{module}.{name}'})

  def persistent_load(self, pid: Any) -> StorageRef:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise TorchCheckpointError(f'unknown persistent id {pid!r} in data.pkl.')
    _, storage_type, key, _, numel = pid
    type_name = getattr(storage_type, 'qualified_name', '').removeprefix('torch.')
    if type_name not in STORAGE_DTYPES:
      raise TorchCheckpointError(
        f'storage {key} has type {type_name or storage_type!r}; readable: {sorted(STORAGE_DTYPES)}.'
      )
    return StorageRef(str(key), STORAGE_DTYPES[type_name], int(numel))


class TorchCheckpoint:
  """An open PyTorch zip checkpoint: the unpickled object (`obj`) and the arrays behind its tensors.

  Use `load(path)`; close it (or use it as a context manager) when done.

  Attributes:
    path: the file.
    obj: the unpickled object; its tensors are `TensorRef`s.
  """

  def __init__(self, path: Path, archive: zipfile.ZipFile, prefix: str, obj: Any, byteorder: str):
    self.path, self.obj = path, obj
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages: dict[str, np.ndarray] = {}

  def __enter__(self) -> TorchCheckpoint:
    return self

  def __exit__(self, *_: Any) -> None:
    self.close()

  def close(self) -> None:
    self._archive.close()

  def _storage(self, ref: StorageRef) -> np.ndarray:
    if ref.key not in self._storages:
      name = f'{self._prefix}data/{ref.key}'
      try:
        raw = self._archive.read(name)
      except KeyError:
        raise TorchCheckpointError(f'{self.path}: storage entry {name} is missing.') from None
      except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise TorchCheckpointError(f'{self.path}: storage {name} is damaged ({e}).') from None
      expected = ref.numel * ref.dtype.itemsize
      if len(raw) != expected:
        raise TorchCheckpointError(
          f'{self.path}: storage {name} has {len(raw)} bytes, expected {expected} '
          f'({ref.numel} x {ref.dtype}).'
        )
      dtype = ref.dtype.newbyteorder('<' if self._byteorder == 'little' else '>')
      self._storages[ref.key] = np.frombuffer(raw, dtype).astype(ref.dtype, copy=False)
    return self._storages[ref.key]

  def array(self, tensor: TensorRef) -> np.ndarray:
    """The elements of `tensor` as a new C-contiguous numpy array of its dtype and shape.

    Raises:
      TorchCheckpointError: its storage is missing, damaged or too short for its shape and strides.
    """
    storage = self._storage(tensor.storage)
    if len(tensor.shape) != len(tensor.stride) or min(tensor.stride, default=0) < 0:
      raise TorchCheckpointError(
        f'{self.path}: tensor of shape {tensor.shape} has strides {tensor.stride}.'
      )
    if math.prod(tensor.shape) == 0:
      return np.zeros(tensor.shape, tensor.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride))
    if tensor.offset < 0 or last >= storage.size:
      raise TorchCheckpointError(
        f'{self.path}: tensor of shape {tensor.shape} (offset {tensor.offset}, strides '
        f'{tensor.stride}) reaches past its storage of {storage.size} elements.'
      )
    view = np.lib.stride_tricks.as_strided(
      storage[tensor.offset :],
      tensor.shape,
      tuple(s * storage.itemsize for s in tensor.stride),
      writeable=False,
    )
    return np.array(view, order='C')


def load(path: str | Path) -> TorchCheckpoint:
  """Opens the PyTorch checkpoint at `path` and unpickles its object (tensors stay unread).

  Args:
    path: a file written by `torch.save` (zip format, PyTorch >= 1.6).

  Returns:
    The open checkpoint (`.obj` is the saved object; `.array(tensor)` reads a tensor).

  Raises:
    FileNotFoundError: no such file.
    TorchCheckpointError: a truncated or damaged file, the pre-1.6 format, a file that is not a
      PyTorch checkpoint, or a pickle this reader refuses (naming what).
  """
  path = Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such checkpoint file.')
  with open(path, 'rb') as f:
    head = f.read(len(_LEGACY_MAGIC))
  if head == _LEGACY_MAGIC:
    raise TorchCheckpointError(
      f'{path}: saved in the legacy format of PyTorch < 1.6; load and save it again with a recent '
      'PyTorch (torch.save(torch.load(path), path)).'
    )
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise TorchCheckpointError(
      f'{path}: not a complete PyTorch checkpoint (truncated, or not the zip format of '
      f'torch.save: {e}).'
    ) from None
  try:
    pickles = [n for n in archive.namelist() if n.count('/') == 1 and n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise TorchCheckpointError(
        f'{path}: a zip archive but not a PyTorch checkpoint (no single <name>/data.pkl entry).'
      )
    prefix = pickles[0].removesuffix('data.pkl')
    try:
      data = archive.read(pickles[0])
      names = set(archive.namelist())
      byteorder = (
        archive.read(prefix + 'byteorder').decode().strip()
        if prefix + 'byteorder' in names
        else 'little'
      )
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise TorchCheckpointError(f'{path}: damaged archive ({e}).') from None
    if byteorder not in ('little', 'big'):
      raise TorchCheckpointError(f'{path}: unknown byte order {byteorder!r}.')
    try:
      obj = _Unpickler(io.BytesIO(data)).load()
    except TorchCheckpointError as e:
      raise TorchCheckpointError(f'{path}: {e}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
      raise TorchCheckpointError(f'{path}: data.pkl does not unpickle ({e}).') from None
  except BaseException:
    archive.close()
    raise
  return TorchCheckpoint(path, archive, prefix, obj, byteorder)
