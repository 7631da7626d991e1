"""A lazy safetensors reader that needs no framework.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range, then the raw data. We memory-map the data and hand out one
numpy array at a time, so bf16 and float8 tensors (which `safetensors.numpy` cannot read) load
without torch and nothing is copied until it is used.
"""

from __future__ import annotations

import json
import math
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


MAX_HEADER = 100 << 20  # bytes of JSON header we read at most (the safetensors library's cap)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(path: Path, name: str, e) -> None:
  """A header entry must name a known dtype, a shape and a byte range that fits them."""
  why = None
  if not isinstance(e, dict):
    why = f"a {type(e).__name__}, not a JSON object"
  elif not isinstance(e.get('dtype'), str) or e['dtype'] not in DTYPES:
    why = f"dtype {e.get('dtype')!r} is none of {sorted(DTYPES)}"
  elif (not isinstance(e.get('shape'), list) or len(e['shape']) > 16
        or not all(_is_int(d) and 0 <= d < 1 << 48 for d in e['shape'])):
    why = f"shape {e.get('shape')!r} is not a list of non-negative integers"
  elif (not isinstance(e.get('data_offsets'), list) or len(e['data_offsets']) != 2
        or not all(_is_int(o) for o in e['data_offsets'])
        or not 0 <= e['data_offsets'][0] <= e['data_offsets'][1]):
    why = f"data_offsets {e.get('data_offsets')!r} are not two integers 0 <= begin <= end"
  else:
    lo, hi = e['data_offsets']
    need = math.prod(e['shape']) * DTYPES[e['dtype']].itemsize
    if hi - lo != need:
      why = f"{e['dtype']} {e['shape']} needs {need} bytes, its data_offsets span {hi - lo}"
  if why is not None:
    raise CheckpointFormatError(f"{path}: corrupt safetensors header: tensor {name[:80]!r}: {why}")


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
      if n > size - 8 or n > MAX_HEADER or n < 2:
        raise CheckpointFormatError(
            f"{path}: corrupt or truncated safetensors header (claims {n} bytes, file has {size},"
            f" headers hold 2 to {MAX_HEADER})")
      try:
        header = json.loads(f.read(n).decode('utf-8'))
      except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointFormatError(f"{path}: corrupt safetensors header, not UTF-8 JSON ({e})"
                                    ) from None
    if not isinstance(header, dict):
      raise CheckpointFormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = header.pop('__metadata__', None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
      raise CheckpointFormatError(f"{path}: corrupt safetensors header: __metadata__ must map "
                                  "names to strings")
    self.metadata: dict[str, str] = meta
    self.data_start = 8 + n
    self.entries: dict[str, dict] = header
    for name, e in header.items():
      _check_entry(path, name, e)
    spans = sorted(tuple(e['data_offsets']) for e in header.values()
                   if e['data_offsets'][1] > e['data_offsets'][0])
    for (_, end0), (begin1, _) in zip(spans, spans[1:]):
      if begin1 < end0:
        raise CheckpointFormatError(f"{path}: corrupt safetensors header: tensor data overlap "
                                    f"(bytes {begin1} to {end0})")
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
  except (json.JSONDecodeError, RecursionError) as e:
    raise CheckpointFormatError(f"{where}: unreadable 'config' metadata ({e})") from None
  if not isinstance(cfg, dict):
    raise CheckpointFormatError(f"{where}: the 'config' metadata is a {type(cfg).__name__}, not "
                                "a JSON object")
  if component is None:
    return cfg
  if component not in cfg:
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
    try:
      weight_map = json.loads(path.read_text(encoding='utf-8'))['weight_map']
      shards = sorted({path.parent / s for s in weight_map.values()})
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError,
            AttributeError) as e:
      raise CheckpointFormatError(f"{path}: not a safetensors index (a JSON object whose "
                                  f"'weight_map' maps tensor names to shard files): {e!r}"
                                  ) from None
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
