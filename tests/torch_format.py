"""Writes PyTorch's `torch.save` zip format without PyTorch, for tests of the readers.

The layout and pickle are those `luna_jax.training.torch_checkpoint` documents (PyTorch's
`torch/serialization.py`, `_save`): `<name>/data.pkl` (protocol 2; every numpy array becomes a
`torch._utils._rebuild_tensor_v2` call on a persistent-id storage), `<name>/data/<key>` (the raw
bytes, little-endian, or big-endian as a big-endian machine writes them), `<name>/byteorder` and
`<name>/version`. The same numpy array object given twice is one storage, as a tied weight is in a
PyTorch state dict.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

_STORAGE_TYPES = {
  np.dtype(np.float32): 'FloatStorage',
  np.dtype(np.float64): 'DoubleStorage',
  np.dtype(np.float16): 'HalfStorage',
  np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
  np.dtype(np.int64): 'LongStorage',
}


class Global:
  """A reference to `module.name`, pickled as the GLOBAL opcode (the module need not exist)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args: Any) -> None:
    """Never called: pickle only requires a reduce function to be callable."""
    raise TypeError(f'{self.module}.{self.name} is a stand-in for pickling.')


_GLOBALS: dict[tuple[str, str], Global] = {}


def global_ref(module: str, name: str) -> Global:
  """The one `Global` of `module.name` (one object per name, so the pickle memoises it)."""
  return _GLOBALS.setdefault((module, name), Global(module, name))


class View:
  """A tensor that is a strided view of a 1-D storage `base` (as `x.t()` or `x[1:]` saves)."""

  def __init__(self, base: np.ndarray, offset: int, shape: tuple, stride: tuple):
    self.base, self.offset, self.shape, self.stride = base, offset, shape, stride


class Call:
  """`module.name(*args)` in the pickle (REDUCE): what a malicious checkpoint would hold."""

  def __init__(self, module: str, name: str, args: tuple):
    self.module, self.name, self.args = module, name, args

  def __reduce__(self):
    return global_ref(self.module, self.name), self.args


class Parameter:
  """A `torch.nn.Parameter` with Python attributes (`state`), which PyTorch pickles as
  `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`."""

  def __init__(self, data: np.ndarray, state: dict):
    self.data, self.state = data, state


class _Storage:
  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array


class _Tensor:
  def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
    self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

  def __reduce__(self):
    args = (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())
    return global_ref('torch._utils', '_rebuild_tensor_v2'), args


class _Pickler(pickle._Pickler):
  """Pickles `Global`s as GLOBAL opcodes and `_Storage`s as persistent ids."""

  dispatch = dict(pickle._Pickler.dispatch)

  def save_global_ref(self, obj: Global) -> None:
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
    self.memoize(obj)

  dispatch[Global] = save_global_ref

  def persistent_id(self, obj: Any) -> Any:
    if isinstance(obj, _Storage):
      storage_type = global_ref('torch', _STORAGE_TYPES[obj.array.dtype])
      return ('storage', storage_type, obj.key, 'cpu', obj.array.size)
    return None


def _storage(array: np.ndarray, storages: dict[int, _Storage]) -> _Storage:
  if id(array) not in storages:
    storages[id(array)] = _Storage(str(len(storages)), np.ascontiguousarray(array))
  return storages[id(array)]


def _replace_arrays(obj: Any, storages: dict[int, _Storage]) -> Any:
  if isinstance(obj, np.ndarray):
    contiguous = tuple(int(np.prod(obj.shape[i + 1 :], dtype=np.int64)) for i in range(obj.ndim))
    return _Tensor(_storage(obj, storages), 0, obj.shape, contiguous)
  if isinstance(obj, View):
    return _Tensor(_storage(obj.base.reshape(-1), storages), obj.offset, obj.shape, obj.stride)
  if isinstance(obj, Parameter):
    args = (_replace_arrays(obj.data, storages), False, collections.OrderedDict(), obj.state)
    return Call('torch._utils', '_rebuild_parameter_with_state', args)
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _replace_arrays(v, storages)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _replace_arrays(v, storages) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_replace_arrays(v, storages) for v in obj)
  return obj


def _bytes(array: np.ndarray, byteorder: str) -> bytes:
  """The elements' bytes in `byteorder` (this host is little-endian)."""
  if byteorder == 'little':
    return array.tobytes()
  return array.view(np.uint8).reshape(-1, array.itemsize)[:, ::-1].tobytes()


def save(obj: Any, path: Path, name: str = 'archive', byteorder: str = 'little') -> None:
  """Writes `obj` (dicts, lists, argparse Namespaces, numbers, strings, numpy arrays, `View`s,
  `Parameter`s, `Call`s) to `path` as `torch.save` would on a machine of `byteorder` ('little' or
  'big'), numpy arrays as tensors."""
  storages: dict[int, _Storage] = {}
  converted = _replace_arrays(obj, storages)
  buffer = io.BytesIO()
  _Pickler(buffer, protocol=2).dump(converted)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr(f'{name}/data.pkl', buffer.getvalue())
    archive.writestr(f'{name}/byteorder', byteorder)
    for storage in storages.values():
      archive.writestr(f'{name}/data/{storage.key}', _bytes(storage.array, byteorder))
    archive.writestr(f'{name}/version', '3\n')


def edit_entry(path: Path, entry: str, edit: Callable[[bytes], bytes]) -> None:
  """Rewrites the archive at `path` with the bytes of `entry` replaced by `edit(bytes)` (a damaged
  file)."""
  with zipfile.ZipFile(path) as archive:
    entries = {n: archive.read(n) for n in archive.namelist()}
  entries[entry] = edit(entries[entry])
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    for n, data in entries.items():
      archive.writestr(n, data)
