"""Media and captions -> a data folder of ArrayRecord shards and an index (ltx_jax.data.records).

`preprocess(items, encoders, folder, config)` reads each item, picks its bucket, shapes its
frames (ltx_jax.data.buckets / media), encodes batches of one bucket with the VAE and T5
(ltx_jax.data.encode) and appends one record per sample to the current shard. A shard is
written under a temporary name and renamed when complete; the index, rewritten atomically,
names complete shards only (updated at most every INDEX_INTERVAL_S seconds, and when the run
ends, fails or is interrupted). So no partial record is ever named by the index, an error or
Ctrl-C keeps every complete shard, a killed process loses at most the last seconds of work
(a shard the index does not name is overwritten by the rerun), and a rerun skips the samples
the index holds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from absl import logging

from ltx_jax.data import buckets as buckets_lib
from ltx_jax.data import conditions
from ltx_jax.data import media as media_lib
from ltx_jax.data import records
from ltx_jax.data.items import Item, Problem
from ltx_jax.errors import DataError, UsageError

__all__ = ['PreprocessConfig', 'Summary', 'preprocess', 'sample_key', 'file_sha256']

_TEMP = re.compile(r'^\.(shard-\d{5}\.array_record|index)\..*\.tmp$')
_OURS = re.compile(r'^shard-\d{5}\.array_record$')
INDEX_INTERVAL_S = 10.0  # at most this long between index updates while shards complete


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """How items become samples.

  buckets: the training shapes (`ltx_jax.data.buckets.parse_buckets`).
  frame_rate: resample videos to this rate (frames at k / frame_rate); None keeps the source
    rate and its first frames (the official trainers).
  batch_size: samples encoded together (rounded up to a multiple of the local devices).
  shard_size: samples per ArrayRecord shard (also how much work a crash can lose).
  strict: refuse the first bad input (DataError) instead of skipping it.
  workers: threads that hash, decode and resize items ahead of the encoders.
  reference: where IC-LoRA references come from: 'column' (the listing's reference column,
    if any), 'canny' or 'blur' (computed from each clip, `ltx_jax.data.conditions`).
  reference_blur_factor: the downscale factor of reference='blur'.
  """
  buckets: tuple[buckets_lib.Bucket, ...]
  frame_rate: float | None = None
  batch_size: int = 1
  shard_size: int = 64
  strict: bool = False
  workers: int = 4
  reference: str = 'column'
  reference_blur_factor: int = 4

  def __post_init__(self):
    conditions.check_reference(self.reference, self.reference_blur_factor)
    if not self.buckets:
      raise UsageError("buckets is empty; give 'WxHxF;WxHxF'")
    if self.frame_rate is not None and not self.frame_rate > 0:
      raise UsageError(f"frame_rate={self.frame_rate!r} must be > 0 (or 0 / None: the "
                       "source rate)")
    for name in ('batch_size', 'shard_size', 'workers'):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UsageError(f"{name}={v!r} must be a positive integer")


@dataclasses.dataclass
class Summary:
  """What a run did: samples written now, samples already there, inputs skipped (one line
  each), samples in the folder, seconds spent."""
  written: int
  already_done: int
  problems: list[Problem]
  total: int
  seconds: float

  def lines(self) -> list[str]:
    out = [f"{self.written} samples written, {self.already_done} already there, "
           f"{len(self.problems)} skipped; {self.total} in the folder "
           f"({self.written / max(self.seconds, 1e-9):.2f} samples/s)"]
    out += [f"skipped {p}" for p in self.problems]
    return out


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def sample_key(media_sha: str, reference_sha: str | None, caption: str, occurrence: int) -> str:
  """A sample's identity: what it was made from (file contents, caption) and which repeat of
  the same inputs it is, so a rerun recognises finished samples wherever the files now lie."""
  text = f"{media_sha}|{reference_sha or ''}|{caption}|{occurrence}"
  return hashlib.sha256(text.encode()).hexdigest()[:32]


def _params(config: PreprocessConfig, encoders) -> dict:
  return {'buckets': [str(b) for b in config.buckets], 'frame_rate': config.frame_rate,
          'latents': encoders.latents, 'seed': encoders.seed,
          'max_sequence_length': encoders.max_sequence_length,
          'vae_dtype': str(np.dtype(encoders.pipe.vae.dtype)),
          'text_encoder_dtype': str(np.dtype(encoders.pipe.text_encoder.dtype)),
          'pixels': 'bicubic antialiased resize to cover, centre crop, [-1, 1]',
          'latent_space': 'normalised (z - mean) * scaling_factor / std per channel',
          **({} if config.reference == 'column' else {'reference': (
              config.reference if config.reference == 'canny'
              else f'blur x{config.reference_blur_factor}')})}


def _open_folder(folder: Path, params: dict, models: dict, overwrite: bool) -> records.Index:
  """The folder's index to extend (checked against this run's parameters and models), or a new
  empty one; stale temporary files of an interrupted run are removed (the caller holds the
  folder's lock)."""
  for f in folder.iterdir():
    if _TEMP.match(f.name):
      f.unlink(missing_ok=True)
  index_path = folder / records.INDEX_NAME
  if overwrite:
    for f in folder.iterdir():  # only our own files: shards and the index
      if _OURS.match(f.name) or f.name == records.INDEX_NAME:
        f.unlink()
  elif index_path.exists():
    index = records.read_index(folder)
    records.same_params(index.params, params, index_path)
    for name, ident in models.items():
      old = index.models.get(name, {})
      if old.get('weights_sha256') != ident['weights_sha256']:
        raise UsageError(f"{str(index_path)!r} holds data made by another {name} (release "
                         f"{old.get('release')!r}); use another output_dir, or overwrite=True "
                         "to replace it")
    return index
  elif any(_OURS.match(f.name) for f in folder.iterdir()):
    raise UsageError(f"{str(folder)!r} holds shards but no {records.INDEX_NAME}; use another "
                     "output_dir, or overwrite=True to replace them")
  index = records.Index(folder, params, models, [], [])
  records.write_index(index)
  return index


@dataclasses.dataclass
class _Prepared:
  key: str
  item: Item
  bucket: buckets_lib.Bucket
  pixels: np.ndarray            # [F, H, W, 3] in [-1, 1]
  reference: np.ndarray | None  # [F, H, W, 3] in [-1, 1]
  fps: float
  entry: dict


def _prepare(item: Item, key: str, media_sha: str, ref_sha: str | None,
             config: PreprocessConfig) -> _Prepared:
  """Reads and shapes one item; a DataError (one line) when it cannot be used."""
  longest = max(b.frames for b in config.buckets)
  clip = media_lib.read_clip(item.media, longest, config.frame_rate)
  w, h = clip.size
  bucket = buckets_lib.choose_bucket(w, h, clip.available, config.buckets)
  if bucket is None:
    shortest = min(b.frames for b in config.buckets)
    if clip.fps is None:
      raise DataError(f"an image needs a 1-frame bucket (e.g. {config.buckets[0].width}x"
                      f"{config.buckets[0].height}x1); buckets are "
                      f"{';'.join(map(str, config.buckets))}")
    raise DataError(f"too short: {clip.available} frames at {clip.fps:g} fps, every bucket "
                    f"needs at least {shortest}")
  reference = None
  if item.reference is not None:
    try:
      ref = media_lib.read_clip(item.reference, longest, config.frame_rate)
    except DataError as e:
      raise DataError(f"reference {item.reference.name}: {e}") from None
    if ref.size != clip.size or ref.available < bucket.frames:
      raise DataError(f"reference {item.reference.name} is {ref.size[0]}x{ref.size[1]} with "
                      f"{ref.available} frames; the target is {w}x{h} and needs "
                      f"{bucket.frames} frames")
    reference = media_lib.to_bucket(ref.frames, bucket)
  pixels = media_lib.to_bucket(clip.frames, bucket)
  if config.reference in conditions.COMPUTED:
    reference = conditions.compute_reference(config.reference, pixels,
                                             config.reference_blur_factor)
  fps = float(clip.fps) if clip.fps is not None else 1.0  # images: 1, as the official trainer
  entry = {'key': key, 'bucket': str(bucket), 'frames': bucket.frames, 'fps': fps,
           'caption': item.caption, 'source': str(item.media), 'sha256': media_sha,
           'source_size': [w, h], 'kind': 'image' if clip.fps is None else 'video',
           'reference': (str(item.reference) if item.reference is not None else
                         f"computed:{config.reference}" if reference is not None else None),
           'reference_sha256': ref_sha}
  return _Prepared(key, item, bucket, pixels, reference, fps, entry)


def _hashes(item: Item) -> tuple[str, str | None] | Exception:
  """(media sha256, reference sha256 or None), or the DataError / OSError saying why not."""
  try:
    if not item.media.is_file():
      raise DataError("no such file")
    ref_sha = None
    if item.reference is not None:
      if not item.reference.is_file():
        raise DataError(f"reference {item.reference.name}: no such file")
      ref_sha = file_sha256(item.reference)
    return file_sha256(item.media), ref_sha
  except (DataError, OSError) as e:
    return e


def _prepare_or_error(job: tuple, config: PreprocessConfig) -> '_Prepared | Exception':
  item, key, media_sha, ref_sha = job
  try:
    return _prepare(item, key, media_sha, ref_sha, config)
  except (DataError, OSError) as e:
    return e


def _ahead(pool, fn, jobs: Sequence, config, depth: int) -> Iterator:
  """fn(job, config) for each job on the pool, at most `depth` running ahead, in order."""
  queue = collections.deque()
  it = iter(jobs)
  for job in itertools.islice(it, depth):
    queue.append(pool.submit(fn, job, config))
  while queue:
    result = queue.popleft().result()
    for job in itertools.islice(it, 1):
      queue.append(pool.submit(fn, job, config))
    yield result


def preprocess(items: Sequence[Item], encoders, folder: str | Path, config: PreprocessConfig,
               *, problems: Sequence[Problem] = (), overwrite: bool = False,
               progress: bool = True) -> Summary:
  """Makes (or completes) the data folder from `items` (see the module docstring).

  encoders: an `ltx_jax.data.encode.Encoders`. problems: inputs already found unusable (the
  listing's), reported in the summary. Bad items are skipped and reported (config.strict:
  refused with a DataError). Returns the Summary; the caller decides what an empty result
  means. One run at a time writes a folder (a second is refused).
  """
  start = time.perf_counter()
  folder = Path(folder).expanduser()
  problems = list(problems)
  if config.strict and problems:
    raise DataError(str(problems[0]))
  temporal, spatial = encoders.pipe.compression
  for b in config.buckets:  # the model's own compression (32 x 32 x 8 for the releases)
    if b.width % spatial or b.height % spatial or (b.frames - 1) % temporal:
      raise UsageError(f"bucket {b} does not fit this VAE: width and height must be multiples "
                       f"of {spatial}, frames {temporal}N+1")
  models = {k: v.to_json() for k, v in encoders.identities().items()}
  folder.mkdir(parents=True, exist_ok=True)
  with _locked(folder):
    return _run(items, encoders, folder, config, problems, models, overwrite, progress, start)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
  """One writer per data folder: an exclusive flock on folder/.lock (released by the system
  if the process dies, so a crash leaves no stale lock)."""
  import fcntl
  with open(folder / '.lock', 'w') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      raise UsageError(f"{str(folder)!r} is being written by another preprocess run") from None
    yield


def _run(items, encoders, folder: Path, config: PreprocessConfig, problems: list, models: dict,
         overwrite: bool, progress: bool, start: float) -> Summary:
  from tqdm import tqdm
  index = _open_folder(folder, _params(config, encoders), models, overwrite)
  done = {s['key'] for s in index.samples}
  already = 0
  written = 0
  pending: dict[buckets_lib.Bucket, list[_Prepared]] = collections.defaultdict(list)
  seen: collections.Counter = collections.Counter()
  writer: records.ShardWriter | None = None
  new_samples: list[dict] = []

  saved = {'at': time.monotonic(), 'shards': len(index.shards)}

  def save_index():
    if len(index.shards) != saved['shards']:
      records.write_index(index)
      saved.update(at=time.monotonic(), shards=len(index.shards))

  def flush_shard():
    nonlocal writer
    if writer is not None and writer.count:
      index.shards.append(writer.commit())
      index.samples.extend(new_samples)
      new_samples.clear()
      # The index names the new shard: now, or within INDEX_INTERVAL_S (a big index is not
      # rewritten after every small shard); a killed run loses at most that much work.
      if time.monotonic() - saved['at'] >= INDEX_INTERVAL_S:
        save_index()
    writer = None

  def encode(batch: list[_Prepared]):
    nonlocal writer, written
    keys = [p.key for p in batch]
    latents = encoders.encode_video(np.stack([p.pixels for p in batch]), keys)
    refs = None
    if batch[0].reference is not None:
      refs = encoders.encode_video(np.stack([p.reference for p in batch]),
                                   [f"{k}:reference" for k in keys])
    context, mask = encoders.encode_text([p.item.caption for p in batch])
    for i, p in enumerate(batch):
      if writer is None:
        writer = records.ShardWriter(folder, len(index.shards))
      arrays = {'latents': latents[i], 'context': context[i],
                'context_mask': mask[i].astype(np.uint8)}
      if refs is not None:
        arrays['reference_latents'] = refs[i]
      rec = writer.write(records.encode_record(p.key, arrays))
      new_samples.append(dict(p.entry, shard=len(index.shards), record=rec,
                              latent_shape=list(latents[i].shape)))
      written += 1
      if writer.count >= config.shard_size:
        flush_shard()

  def problem(item: Item, e: Exception) -> None:
    p = Problem(item.row or str(item.media),
                str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}")
    if config.strict:
      raise DataError(str(p)) from None
    problems.append(p)

  bar = tqdm(total=len(items), unit='item', desc='preprocess', disable=not progress,
             file=sys.stderr, dynamic_ncols=True)
  pool = concurrent.futures.ThreadPoolExecutor(config.workers)
  try:
    # Keys first (file hashes, in parallel): finished samples are skipped before any decoding.
    todo = []
    for item, hashed in zip(items, pool.map(_hashes, items)):
      if isinstance(hashed, Exception):
        bar.update(1)
        problem(item, hashed)
        continue
      base = hashed + (item.caption,)
      key = sample_key(*base, seen[base])
      seen[base] += 1
      if key in done:
        bar.update(1)
        already += 1
        continue
      done.add(key)
      todo.append((item, key) + hashed)
    # Decoding and resizing run ahead on the worker threads; results are used in item order.
    for (item, *_), prepared in zip(todo, _ahead(pool, _prepare_or_error, todo, config,
                                                 2 * config.workers)):
      bar.update(1)
      if isinstance(prepared, Exception):
        problem(item, prepared)
        continue
      pending[prepared.bucket].append(prepared)
      if len(pending[prepared.bucket]) >= encoders.batch_size:
        encode(pending.pop(prepared.bucket))
    for bucket in list(pending):
      encode(pending.pop(bucket))
    flush_shard()
  finally:
    bar.close()
    pool.shutdown(wait=True, cancel_futures=True)
    if writer is not None:  # an error or Ctrl-C: the unfinished shard is dropped ...
      writer.__exit__(None, None, None)
    save_index()  # ... and the complete ones are kept
  summary = Summary(written, already, problems, len(index.samples),
                    time.perf_counter() - start)
  for line in summary.lines():
    logging.info("%s", line)
  return summary
