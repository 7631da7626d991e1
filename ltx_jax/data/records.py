"""The cache on disk: ArrayRecord shards of samples and the index JSON that describes them.

A data folder holds `index.json` and `shard-NNNNN.array_record` files. Each shard record is one
sample, serialised as an uncompressed numpy `.npz` archive (a zip of `.npy` arrays, read with
`allow_pickle=False`; ArrayRecord's chunk hashes and the zip's CRC-32 catch damaged bytes):

  latents            float32 [F', H', W', C]  normalised VAE latents (the transformer's space)
  context            float32 [L, D]           T5 encoder output
  context_mask       uint8   [L]              1 on real tokens
  reference_latents  float32 [F', H', W', C]  IC-LoRA reference (optional)
  key                str                      the sample's key (its entry in the index)

A float32 array whose values are all bfloat16 numbers (what bf16 models compute) is stored as its
bfloat16 bits (uint16, named NAME__bf16), half the bytes, and read back as the same float32.

`index.json` (written atomically: a temporary file renamed over the old one):

  format    'ltx_jax.data/1'
  params    the preprocessing parameters (buckets, frame rate, latent kind, sequence length...)
  models    {'vae': identity, 'text_encoder': identity}: release name and weights_sha256
  shards    [{'file', 'records', 'bytes'}] in order
  samples   [{'key', 'shard', 'record', 'bucket', 'latent_shape', 'frames', 'fps', 'caption',
              'source', 'sha256', 'reference', 'reference_sha256', 'kind'}]

A model's identity is its release name and the sha256 of its weights rounded to bfloat16 (the
variables in path order: path, shape and bytes), so the same weights give the same identity
whichever file format or compute dtype loaded them; `check_models` refuses a cache made by
other weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ltx_jax.errors import DataError, UsageError

__all__ = ['FORMAT', 'INDEX_NAME', 'Identity', 'Index', 'ShardWriter', 'check_models',
           'decode_record', 'encode_record', 'model_identity', 'read_index', 'shard_name',
           'write_index']

FORMAT = 'ltx_jax.data/1'
INDEX_NAME = 'index.json'
ARRAYS = ('latents', 'context', 'context_mask', 'reference_latents')
_BF16 = '__bf16'
_UMASK = os.umask(0)
os.umask(_UMASK)


def _publish(tmp: str | Path, path: Path) -> None:
  """Renames a finished temporary file (mkstemp's mode 0600) to `path` with the usual mode."""
  os.chmod(tmp, 0o666 & ~_UMASK)
  os.replace(tmp, path)


def shard_name(i: int) -> str:
  return f"shard-{i:05d}.array_record"


# ------------------------------------------------------------------------------- records


def _compact(a: np.ndarray) -> tuple[str, np.ndarray]:
  """float32 values that are all bfloat16 numbers (what a bf16 model computed) -> their bf16
  bits as uint16 under a '__bf16' name; anything else as is."""
  import ml_dtypes
  if a.dtype == np.float32:
    b = a.astype(ml_dtypes.bfloat16)
    if np.array_equal(b.astype(np.float32), a, equal_nan=True):
      return _BF16, b.view(np.uint16)
  return '', a


def encode_record(key: str, arrays: Mapping[str, np.ndarray]) -> bytes:
  """A sample's arrays -> npz bytes (see the module docstring); unknown names refused."""
  unknown = set(arrays) - set(ARRAYS)
  if unknown:
    raise ValueError(f"unknown record arrays {sorted(unknown)}; known: {ARRAYS}")
  stored = {}
  for k, v in arrays.items():
    suffix, v = _compact(np.ascontiguousarray(v))
    stored[k + suffix] = v
  buf = io.BytesIO()
  np.savez(buf, key=np.array(key), **stored)
  return buf.getvalue()


def decode_record(data: bytes, where: str) -> tuple[str, dict[str, np.ndarray]]:
  """npz bytes -> (key, arrays); a DataError naming `where` when they are damaged."""
  try:
    import ml_dtypes
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      arrays = {}
      for k in z.files:
        if k.endswith(_BF16):
          arrays[k[:-len(_BF16)]] = z[k].view(ml_dtypes.bfloat16).astype(np.float32)
        else:
          arrays[k] = z[k]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise DataError(f"damaged record in {where}: {e}") from None
  if 'key' not in arrays or 'latents' not in arrays:
    raise DataError(f"damaged record in {where}: no key or latents array")
  return str(arrays.pop('key')), arrays


# -------------------------------------------------------------------------------- shards


class ShardWriter:
  """Writes one shard under a temporary name in its folder; `commit()` closes it and renames
  it to its final name; leaving the `with` block without committing removes it."""

  def __init__(self, folder: Path, index: int):
    from array_record.python.array_record_module import ArrayRecordWriter
    self.path = Path(folder) / shard_name(index)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{self.path.name}.', suffix='.tmp')
    os.close(fd)
    self.tmp = Path(tmp)
    self.count = 0
    # One record per chunk (random access reads one record), stored as is: latents and
    # embeddings are floats that general-purpose compression barely shrinks.
    self._writer = ArrayRecordWriter(str(self.tmp), 'group_size:1,uncompressed')

  def write(self, record: bytes) -> int:
    """Appends a record; returns its position in the shard."""
    self._writer.write(record)
    self.count += 1
    return self.count - 1

  def commit(self) -> dict:
    """Closes and publishes the shard -> its index entry."""
    self._writer.close()
    self._writer = None
    _publish(self.tmp, self.path)
    return {'file': self.path.name, 'records': self.count, 'bytes': self.path.stat().st_size}

  def __enter__(self) -> 'ShardWriter':
    return self

  def __exit__(self, *exc) -> None:
    if self._writer is not None:
      try:
        self._writer.close()
      finally:
        self._writer = None
        self.tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------- index


@dataclasses.dataclass
class Index:
  """The parsed index.json of a data folder (see the module docstring)."""
  folder: Path
  params: dict
  models: dict
  shards: list[dict]
  samples: list[dict]

  def to_json(self) -> dict:
    return {'format': FORMAT, 'params': self.params, 'models': self.models,
            'shards': self.shards, 'samples': self.samples}

  @property
  def path(self) -> Path:
    return self.folder / INDEX_NAME


def write_index(index: Index) -> None:
  """Writes index.json atomically (temporary file, fsync, rename)."""
  fd, tmp = tempfile.mkstemp(dir=index.folder, prefix='.index.', suffix='.json.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(index.to_json(), f, indent=1)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    _publish(tmp, index.path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def read_index(folder: str | os.PathLike, *, check_shards: bool = True) -> Index:
  """A data folder's index, checked: its format, and (check_shards) that every shard it names
  exists with the size it had when written. Errors name the file."""
  folder = Path(folder).expanduser()
  path = folder / INDEX_NAME
  if not path.is_file():
    raise DataError(f"{str(folder)!r} is not a preprocessed data folder: no {INDEX_NAME} "
                    "(make one with python -m ltx_jax.preprocess)")
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"damaged index {str(path)!r}: {e}") from None
  try:
    if raw.get('format') != FORMAT:
      raise DataError(f"index {str(path)!r} has format {raw.get('format')!r}; this version "
                      f"reads {FORMAT!r}")
    index = Index(folder, dict(raw['params']), dict(raw['models']), list(raw['shards']),
                  list(raw['samples']))
    for s in index.samples:
      s['shard'], s['record'] = int(s['shard']), int(s['record'])
      if not (0 <= s['shard'] < len(index.shards)) or not (
          0 <= s['record'] < int(index.shards[s['shard']]['records'])):
        raise DataError(f"damaged index {str(path)!r}: sample {s.get('key')!r} points at "
                        f"shard {s['shard']} record {s['record']}, which does not exist")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"damaged index {str(path)!r}: {type(e).__name__}: {e}") from None
  if check_shards:
    for sh in index.shards:
      f = folder / sh['file']
      if not f.is_file():
        raise DataError(f"missing shard {str(f)!r} named by {str(path)!r}")
      if f.stat().st_size != int(sh['bytes']):
        raise DataError(f"damaged shard {str(f)!r}: {f.stat().st_size} bytes, the index "
                        f"recorded {sh['bytes']}")
  return index


# ------------------------------------------------------------------------------ identity


@dataclasses.dataclass(frozen=True)
class Identity:
  """Which weights made a cache: the release name and the sha256 of the weights (bf16)."""
  release: str
  weights_sha256: str

  def to_json(self) -> dict:
    return {'release': self.release, 'weights_sha256': self.weights_sha256}


def model_identity(module, release: str, *extra: bytes) -> Identity:
  """A module's identity: sha256 over its variables in path order (path, shape, values rounded
  to bfloat16, one array on the host at a time) and any `extra` bytes (a tokenizer's model)."""
  import jax
  import ml_dtypes
  from flax import nnx
  h = hashlib.sha256()
  leaves = []
  for path, var in nnx.iter_graph(module):
    if isinstance(var, nnx.Variable):
      leaves.append(('.'.join(map(str, path)), var))
  for name, var in sorted(leaves, key=lambda kv: kv[0]):
    value = var.get_value()
    a = np.asarray(jax.device_get(value)).astype(ml_dtypes.bfloat16)  # round to nearest even
    h.update(f"{name}:{list(a.shape)};".encode())
    h.update(a.view(np.uint16).tobytes())
  for b in extra:
    h.update(b)
  return Identity(release or 'unknown', h.hexdigest())


def check_models(index: Index, *, vae: Identity | None = None,
                 text_encoder: Identity | None = None) -> None:
  """Refuses (DataError) a cache whose latents or embeddings were made by other weights than
  the given identities (`model_identity` of the models training uses)."""
  for name, want in (('vae', vae), ('text_encoder', text_encoder)):
    if want is None:
      continue
    have = index.models.get(name) or {}
    if have.get('weights_sha256') != want.weights_sha256:
      raise DataError(
          f"{str(index.path)!r} was made by the {name} of release {have.get('release')!r} "
          f"(weights sha256 {str(have.get('weights_sha256'))[:12]}...), not by this "
          f"{want.release!r} {name} ({want.weights_sha256[:12]}...): preprocess the data "
          "again with this model")


def same_params(old: Mapping[str, Any], new: Mapping[str, Any], where: Path) -> None:
  """A rerun into an existing folder must use the same parameters (else UsageError)."""
  diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  if diff:
    k = diff[0]
    raise UsageError(f"{str(where)!r} holds data made with {k}={old.get(k)!r}, this run has "
                     f"{k}={new.get(k)!r}; use another output_dir, or overwrite=True to "
                     "replace it")
