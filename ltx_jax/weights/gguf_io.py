"""GGUF files as a lazy tensor store: PyTorch-order shapes, dequantized one tensor at a time.

GGUF lists dimensions fastest-first (ggml's `ne`), the reverse of PyTorch and numpy; `shape()`
returns them in PyTorch order so the same name tables and permutations serve safetensors and GGUF.
`read()` reads a tensor's bytes with ordinary file reads (not the memory map, whose touched pages
would stay in the process's resident set) a few MiB of rows at a time, dequantizes each chunk
with `gguf.quants.dequantize` and casts it (`precision.cast`, refusing values the target dtype
cannot hold) straight into an array of the target dtype, so the host never holds more than one
tensor in that dtype plus one small f32 chunk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import ml_dtypes
import numpy as np
from gguf import GGMLQuantizationType as Q

from ltx_jax.errors import CheckpointFormatError
from ltx_jax.weights import precision

_CHUNK_BYTES = 1 << 20  # raw bytes read and dequantized per step (f32 temp <= ~8 MiB)
_FLOAT_VIEWS = {Q.F32: np.dtype('<f4'), Q.F16: np.dtype('<f2'), Q.F64: np.dtype('<f8')}


class GGUFStore:
  """keys() / shape(name) / read(name) over one GGUF file, plus its metadata via get(key).

  dtype: dtype of the arrays `read` returns unless it names one (f32 when None). Quantized
  tensors need their last (PyTorch) dimension to be a whole number of quantization blocks, as
  ggml itself requires.
  """

  def __init__(self, path: str | os.PathLike, dtype: Any = None):
    self.path = Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"{self.path}: no such GGUF file")
    try:
      reader = gguf.GGUFReader(self.path, 'r')
    except (ValueError, KeyError, IndexError) as e:
      raise CheckpointFormatError(f"{self.path}: not a readable GGUF file ({e})") from None
    if reader.byte_order != 'I':
      raise CheckpointFormatError(f"{self.path}: big-endian GGUF files are not supported")
    self.dtype = np.dtype(np.float32 if dtype is None else dtype)
    self._fields = reader.fields
    # name -> (ggml type, PyTorch-order shape, absolute byte offset, byte count)
    self._tensors = {t.name: (Q(t.tensor_type), tuple(int(d) for d in reversed(t.shape.tolist())),
                              int(t.data_offset), int(t.n_bytes)) for t in reader.tensors}
    size = self.path.stat().st_size
    for name, (qtype, shape, offset, nbytes) in self._tensors.items():
      if offset + nbytes > size:
        raise CheckpointFormatError(f"{self.path}: truncated, tensor {name} ends past the file")
      block = gguf.GGML_QUANT_SIZES[qtype][0]
      if shape and shape[-1] % block:
        raise CheckpointFormatError(f"{self.path}: tensor {name} {shape} is not a whole number "
                                    f"of {qtype.name} blocks per row")

  def get(self, key: str, default: Any = None) -> Any:
    """A metadata value (scalars, strings, lists), or `default` when absent."""
    field = self._fields.get(key)
    return default if field is None else field.contents()

  def keys(self) -> list[str]:
    return list(self._tensors)

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def shape(self, name: str) -> tuple[int, ...]:
    return self._tensors[name][1]

  def ggml_type(self, name: str) -> Q:
    return self._tensors[name][0]

  def read(self, name: str, dtype: Any = None) -> np.ndarray:
    qtype, shape, offset, nbytes = self._tensors[name]
    out = np.empty(shape, self.dtype if dtype is None else np.dtype(dtype))
    if out.size == 0:
      return out
    rows = out.reshape(-1, shape[-1])  # [R, C] view: ggml rows are PyTorch's last axis
    row_bytes = nbytes // rows.shape[0]
    step = max(1, _CHUNK_BYTES // row_bytes)
    with open(self.path, 'rb') as f:
      for r0 in range(0, rows.shape[0], step):
        r1 = min(rows.shape[0], r0 + step)
        f.seek(offset + r0 * row_bytes)
        raw = np.frombuffer(f.read((r1 - r0) * row_bytes), np.uint8).reshape(r1 - r0, row_bytes)
        rows[r0:r1] = precision.cast(_decode(raw, qtype, name), out.dtype, name=name)
    return out


def _decode(raw: np.ndarray, qtype: Q, name: str) -> np.ndarray:
  """uint8 [R, row_bytes] -> values [R, C] (f32, f16, f64 or bf16, as stored)."""
  if qtype in _FLOAT_VIEWS:
    return raw.view(_FLOAT_VIEWS[qtype])
  if qtype == Q.BF16:
    return raw.view(ml_dtypes.bfloat16)
  try:
    return gguf.quants.dequantize(raw, qtype)
  except NotImplementedError:
    raise CheckpointFormatError(
        f"tensor {name}: GGML type {qtype.name} cannot be dequantized by the gguf package") from None
