"""A lazy safetensors reader that needs no framework.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range, then the raw data. We memory-map the data and hand out one
numpy array at a time, so bf16 and float8 tensors (which `safetensors.numpy` cannot read) load
without torch and nothing is copied until it is used.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from ltx_jax.errors import CheckpointFormatError
from ltx_jax.weights import precision

DTYPES = {
    'F64': np.dtype(np.float64), 'F32': np.dtype(np.float32), 'F16': np.dtype(np.float16),
    'BF16': np.dtype(ml_dtypes.bfloat16), 'F8_E4M3': np.dtype(ml_dtypes.float8_e4m3fn),
    'F8_E5M2': np.dtype(ml_dtypes.float8_e5m2), 'I64': np.dtype(np.int64),
    'I32': np.dtype(np.int32), 'I16': np.dtype(np.int16), 'I8': np.dtype(np.int8),
    'U8': np.dtype(np.uint8), 'BOOL': np.dtype(np.bool_),
}
_CODES = {v: k for k, v in DTYPES.items()}


def _check_entry(path: Path, name: str, e) -> None:
  """A header entry must name a known dtype, a shape and a byte range that fits them."""
  try:
    lo, hi = e['data_offsets']
    count = int(np.prod(e['shape'], dtype=np.int64))
    ok = 0 <= lo <= hi and hi - lo == count * DTYPES[e['dtype']].itemsize
  except (TypeError, KeyError, ValueError):
    ok = False
  if not ok:
    raise CheckpointFormatError(f"{path}: corrupt safetensors header (bad entry for {name!r})")


class _File:
  """One safetensors file: parsed header plus a lazily created memory map."""

  def __init__(self, path: Path):
    self.path = path
    size = path.stat().st_size
    with open(path, 'rb') as f:
      head = f.read(8)
      if len(head) < 8:
        raise CheckpointFormatError(f"{path}: not a safetensors file ({size} bytes, no header)")
      (n,) = struct.unpack('<Q', head)
      if n > size - 8:
        raise CheckpointFormatError(
            f"{path}: corrupt or truncated safetensors header (claims {n} bytes, file has {size})")
      try:
        header = json.loads(f.read(n))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointFormatError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
      raise CheckpointFormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    self.metadata: dict[str, str] = header.pop('__metadata__', None) or {}
    self.data_start = 8 + n
    self.entries: dict[str, dict] = header
    for name, e in header.items():
      _check_entry(path, name, e)
    end = max((e['data_offsets'][1] for e in header.values()), default=0)
    if self.data_start + end > size:
      raise CheckpointFormatError(
          f"{path}: truncated: tensors need {self.data_start + end} bytes, file has {size}")
    self._mmap = None

  def read(self, name: str) -> np.ndarray:
    e = self.entries[name]
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode='r')
    lo, hi = e['data_offsets']
    raw = self._mmap[self.data_start + lo:self.data_start + hi]
    return raw.view(DTYPES[e['dtype']]).reshape(e['shape'])


class SafetensorsReader:
  """Tensors from one or several safetensors files, optionally under a key prefix.

  `keys()` lists names with the prefix removed; `shape`, `dtype` come from headers;
  `read(name)` returns a read-only memory-mapped array, `read(name, dtype)` a copy in `dtype`
  (cast by `precision.cast`, which refuses values the dtype cannot hold).
  """

  def __init__(self, paths: Iterable[str | os.PathLike], prefix: str = ''):
    self.paths = [Path(p) for p in paths]
    self.prefix = prefix
    self._where: dict[str, _File] = {}
    self.metadata: dict[str, str] = {}
    for p in self.paths:
      f = _File(p)
      self.metadata.update(f.metadata)
      for k in f.entries:
        if k.startswith(prefix):
          self._where[k[len(prefix):]] = f

  def keys(self) -> list[str]:
    return list(self._where)

  def __contains__(self, name: str) -> bool:
    return name in self._where

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._where[name].entries[self.prefix + name]['shape'])

  def dtype(self, name: str) -> np.dtype:
    return DTYPES[self._where[name].entries[self.prefix + name]['dtype']]

  def read(self, name: str, dtype=None) -> np.ndarray:
    a = self._where[name].read(self.prefix + name)
    return a if dtype is None else precision.cast(a, dtype, name=self.prefix + name)

  def with_prefix(self, prefix: str) -> 'SafetensorsReader':
    return SafetensorsReader(self.paths, self.prefix + prefix)


def official_config(store: SafetensorsReader, component: str | None = None) -> dict:
  """The JSON in an official single file's `config` metadata, or its `component` entry
  ('transformer', 'vae', 'scheduler'); a CheckpointFormatError naming the file otherwise."""
  where = store.paths[0] if store.paths else 'checkpoint'
  if 'config' not in store.metadata:
    raise CheckpointFormatError(f"{where}: no 'config' metadata; not an official LTX-Video "
                                "single file")
  try:
    cfg = json.loads(store.metadata['config'])
  except json.JSONDecodeError as e:
    raise CheckpointFormatError(f"{where}: unreadable 'config' metadata ({e})") from None
  if component is None:
    return cfg
  if not isinstance(cfg, dict) or component not in cfg:
    raise CheckpointFormatError(f"{where}: the 'config' metadata has no {component!r} entry")
  return cfg[component]


def open_safetensors(path: str | os.PathLike, prefix: str = '') -> SafetensorsReader:
  """A file, a sharded `*.safetensors.index.json`, or a folder holding either."""
  path = Path(path)
  if path.is_dir():
    indexes = sorted(path.glob('*.safetensors.index.json'))
    files = sorted(path.glob('*.safetensors'))
    if indexes:
      path = indexes[0]
    elif len(files) == 1:
      path = files[0]
    else:
      raise FileNotFoundError(
          f"{path}: expected one *.safetensors file or a *.safetensors.index.json, found "
          f"{[f.name for f in files] or 'none'}")
  if path.name.endswith('.index.json'):
    weight_map = json.loads(path.read_text())['weight_map']
    shards = sorted({path.parent / s for s in weight_map.values()})
    missing = [str(s) for s in shards if not s.exists()]
    if missing:
      raise FileNotFoundError(f"{path}: shards listed in the index are missing: {missing}")
    return SafetensorsReader(shards, prefix)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such file")
  return SafetensorsReader([path], prefix)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes numpy arrays (any dtype in DTYPES, bf16/fp8 included) as one safetensors file."""
  header: dict = {'__metadata__': dict(metadata)} if metadata else {}
  offset = 0
  arrays = {}
  for k, a in tensors.items():
    a = np.require(np.asarray(a), requirements='C')  # keeps 0-d tensors 0-d
    header[k] = {'dtype': _CODES[a.dtype], 'shape': list(a.shape),
                 'data_offsets': [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays[k] = a
  blob = json.dumps(header).encode()
  blob += b' ' * (-len(blob) % 8)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(blob)))
    f.write(blob)
    for a in arrays.values():
      f.write(a.tobytes())
