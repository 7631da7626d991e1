"""The training loader: batches of cached samples, one bucket per batch, deterministic and
resumable, each process reading its own share.

The order of an epoch is a pure function of (seed, epoch, the samples' buckets): all samples
are permuted with `numpy.random.default_rng([seed, epoch])`; each bucket's samples, in that
order, are cut into global batches of `batch_size * process_count` (the last one of a bucket
filled up with that bucket's first samples again, `remainder='wrap'`, or dropped, 'drop');
the batches are then shuffled with the same generator. Every process computes the same plan
and takes its own slice of each global batch (rows `process_index * batch_size` onwards), so
at each step all processes hold batches of one shape, and together one epoch covers every
sample. Step s of the run is batch s % steps_per_epoch of epoch s // steps_per_epoch.

The reading runs on grain (`grain.MapDataset` over steps -> `to_iter_dataset` with reader
threads and a prefetch buffer). The iterator's state is a small JSON-serialisable dict (the
next step, plus what the plan depends on); restoring it continues with exactly the next batch,
and a state from another dataset, seed or global batch size is refused.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from ltx_jax.data import records
from ltx_jax.errors import DataError, UsageError

__all__ = ['BatchIterator', 'BatchLoader', 'CachedSamples', 'epoch_plan', 'REMAINDERS']

REMAINDERS = ('wrap', 'drop')
STATE_FORMAT = 'ltx_jax.data.loader/1'


class CachedSamples:
  """Random access to a data folder's samples: `samples[i]` -> the record's arrays (latents,
  context, context_mask, optional reference_latents), checked against the index. A damaged or
  missing shard or index is a DataError naming the file."""

  def __init__(self, folder: str | Path):
    from array_record.python.array_record_module import ArrayRecordReader
    self.index = records.read_index(folder)
    self.folder = self.index.folder
    if not self.index.samples:
      raise DataError(f"{str(self.index.path)!r} holds no samples")
    self._readers, self._locks = [], []
    for sh in self.index.shards:
      path = self.folder / sh['file']
      try:
        reader = ArrayRecordReader(str(path), 'readahead_buffer_size:0')
        n = reader.num_records()
      except Exception as e:  # noqa: BLE001  -- the C++ reader's errors have no common type
        raise DataError(f"damaged shard {str(path)!r}: {_first_line(e)}") from None
      if n != int(sh['records']):
        raise DataError(f"damaged shard {str(path)!r}: {n} records, the index recorded "
                        f"{sh['records']}")
      self._readers.append(reader)
      self._locks.append(threading.Lock())

  def __len__(self) -> int:
    return len(self.index.samples)

  @property
  def buckets(self) -> list[str]:
    """Each sample's bucket name, in index order."""
    return [s['bucket'] for s in self.index.samples]

  def fingerprint(self) -> str:
    """sha256 of the samples' keys and buckets in order (what a loader state depends on)."""
    h = hashlib.sha256()
    for s in self.index.samples:
      h.update(f"{s['key']}:{s['bucket']};".encode())
    return h.hexdigest()

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    s = self.index.samples[i]
    shard = self.folder / self.index.shards[s['shard']]['file']
    try:
      with self._locks[s['shard']]:
        data = self._readers[s['shard']].read([s['record']])[0]
    except Exception as e:  # noqa: BLE001
      raise DataError(f"damaged shard {str(shard)!r}: record {s['record']}: "
                      f"{_first_line(e)}") from None
    key, arrays = records.decode_record(data, f"{str(shard)!r} record {s['record']}")
    if key != s['key'] or list(arrays['latents'].shape) != list(s['latent_shape']):
      raise DataError(f"damaged shard {str(shard)!r}: record {s['record']} is not the sample "
                      f"the index {str(self.index.path)!r} names there")
    return arrays

  def close(self) -> None:
    for r in self._readers:
      r.close()
    self._readers = []


def epoch_plan(buckets: list[str], global_batch: int, seed: int, epoch: int,
               remainder: str = 'wrap') -> list[np.ndarray]:
  """The global batches of one epoch: sample indices [global_batch] each, one bucket per batch
  (see the module docstring)."""
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(buckets))
  by_bucket: dict[str, list[int]] = {}
  for i in order:
    by_bucket.setdefault(buckets[i], []).append(int(i))
  batches = []
  for name in sorted(by_bucket):
    members = np.asarray(by_bucket[name])
    full, rest = divmod(len(members), global_batch)
    for b in range(full):
      batches.append(members[b * global_batch:(b + 1) * global_batch])
    if rest and remainder == 'wrap':
      fill = np.resize(members, global_batch - rest)  # repeats the bucket's list as needed
      batches.append(np.concatenate([members[full * global_batch:], fill]))
  return [batches[i] for i in rng.permutation(len(batches))]


class BatchLoader:
  """Batches of a data folder for one process (see the module docstring).

  batch_size: rows per process; the global batch is batch_size * process_count.
  process_index / process_count: this process's share (default jax.process_index() /
    jax.process_count(); tests pass them).
  remainder: 'wrap' (default; every sample every epoch) or 'drop' each bucket's last
    incomplete batch.
  num_threads / prefetch: grain's reader threads and prefetch buffer (batches).
  vae / text_encoder: `ltx_jax.data.records.Identity` of the models training uses; a cache
    made by other weights is refused (`records.check_models`).
  """

  def __init__(self, folder: str | Path | CachedSamples, batch_size: int, *, seed: int = 0,
               process_index: int | None = None, process_count: int | None = None,
               remainder: str = 'wrap', num_threads: int = 2, prefetch: int = 2,
               vae: records.Identity | None = None,
               text_encoder: records.Identity | None = None):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
      raise UsageError(f"batch_size={batch_size!r} must be a positive integer")
    if remainder not in REMAINDERS:
      raise UsageError(f"remainder={remainder!r}; choose one of {', '.join(REMAINDERS)}")
    if process_index is None or process_count is None:
      import jax
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
      raise UsageError(f"process_index={process_index} must be in [0, {process_count})")
    self.samples = folder if isinstance(folder, CachedSamples) else CachedSamples(folder)
    records.check_models(self.samples.index, vae=vae, text_encoder=text_encoder)
    self.batch_size = batch_size
    self.seed = int(seed)
    self.process_index, self.process_count = process_index, process_count
    self.global_batch_size = batch_size * process_count
    self.remainder = remainder
    self.num_threads, self.prefetch = int(num_threads), int(prefetch)
    self._buckets = self.samples.buckets
    self.steps_per_epoch = len(epoch_plan(self._buckets, self.global_batch_size, 0, 0,
                                          remainder))
    if self.steps_per_epoch == 0:
      raise DataError(f"{str(self.samples.index.path)!r}: no bucket holds a full global batch "
                      f"of {self.global_batch_size} samples; use remainder='wrap' or a smaller "
                      "batch")
    self._fingerprint = self.samples.fingerprint()
    self._plan = functools.lru_cache(maxsize=4)(
        lambda epoch: epoch_plan(self._buckets, self.global_batch_size, self.seed, epoch,
                                 remainder))

  @property
  def index(self) -> records.Index:
    return self.samples.index

  def global_indices(self, step: int) -> np.ndarray:
    """The samples of step `step` over all processes, [global_batch_size]."""
    epoch, j = divmod(int(step), self.steps_per_epoch)
    return self._plan(epoch)[j]

  def indices(self, step: int) -> np.ndarray:
    """This process's samples of step `step`, [batch_size]."""
    rows = self.global_indices(step)
    return rows[self.process_index * self.batch_size:(self.process_index + 1) * self.batch_size]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's batch of step `step` (the dict of TRAINING_INTERFACE.md):
    latents f32 [B, F', H', W', C], context f32 [B, L, D], context_mask int32 [B, L],
    frame_rate f32 [B], and reference_latents f32 [B, F', H', W', C] when the cache has them."""
    ids = self.indices(step)
    rows = [self.samples[int(i)] for i in ids]
    out = {'latents': np.stack([r['latents'] for r in rows]).astype(np.float32),
           'context': np.stack([r['context'] for r in rows]).astype(np.float32),
           'context_mask': np.stack([r['context_mask'] for r in rows]).astype(np.int32),
           'frame_rate': np.asarray([self.index.samples[int(i)]['fps'] for i in ids],
                                    np.float32)}
    if 'reference_latents' in rows[0]:
      out['reference_latents'] = np.stack([r['reference_latents'] for r in rows]
                                          ).astype(np.float32)
    return out

  def _state(self, next_step: int) -> dict:
    return {'format': STATE_FORMAT, 'next_step': int(next_step), 'seed': self.seed,
            'global_batch_size': self.global_batch_size, 'remainder': self.remainder,
            'dataset': self._fingerprint}

  def step_of(self, state: Mapping[str, Any]) -> int:
    """The next step a saved state names, after checking it belongs to this loader."""
    want = self._state(0)
    if not isinstance(state, Mapping) or state.get('format') != STATE_FORMAT:
      raise UsageError(f"not a loader state ({STATE_FORMAT}): {str(state)[:80]}")
    for k in ('seed', 'global_batch_size', 'remainder', 'dataset'):
      if state.get(k) != want[k]:
        raise UsageError(f"the loader state was saved with {k}={state.get(k)!r}, this "
                         f"loader has {k}={want[k]!r}; restore with the same data folder, "
                         "seed, remainder and global batch size")
    return int(state['next_step'])

  def iterator(self, state: Mapping[str, Any] | None = None) -> 'BatchIterator':
    """An endless iterator of this process's batches from step 0, or from a saved state."""
    return BatchIterator(self, 0 if state is None else self.step_of(state))

  def __iter__(self) -> 'BatchIterator':
    return self.iterator()


class BatchIterator:
  """Endless batches on grain's reader threads; `get_state()` / `set_state()` (JSON-safe)."""

  def __init__(self, loader: BatchLoader, start: int):
    self.loader = loader
    self._start(start)

  def _start(self, step: int) -> None:
    self._next = step
    ds = _Steps(self.loader, step).to_iter_dataset(
        grain.ReadOptions(num_threads=self.loader.num_threads,
                          prefetch_buffer_size=self.loader.prefetch))
    self._it = iter(ds)

  @property
  def step(self) -> int:
    """The step of the next batch."""
    return self._next

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict:
    return self.loader._state(self._next)

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._start(self.loader.step_of(state))


class _Steps(grain.MapDataset):
  """grain MapDataset: element k is the loader's batch of step `start + k`."""

  def __init__(self, loader: BatchLoader, start: int):
    super().__init__()
    self._loader, self._start_step = loader, start

  def __len__(self) -> int:
    return sys.maxsize - self._start_step

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    return self._loader.batch(self._start_step + k)

  def __str__(self) -> str:
    return f"LatentBatches(start={self._start_step})"


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
