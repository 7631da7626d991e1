"""Throughput of the training-data path: preprocessing and the loader.

  python tools/bench_data.py [--items 16] [--out /tmp/bench_data]

1. Preprocessing with the tiny random models of tests/test_data_preprocess.py (VAE and T5 at toy
   width: this times the host side -- decoding, resizing, hashing, serialising, shards -- plus a
   little model work), on clips written here by ffmpeg (320x192, 24 fps, 40 frames) into the
   bucket 256x160x33, after one warm-up item compiles the programs: items/s.
2. The loader over that cache, and over synthetic records of the released model's sizes
   (768x512x49 latents, T5-XXL context): batches/s and samples/s (grain, 2 reader threads).
3. The released VAE's encoder (LTXV_VAE_098) at real bucket sizes: XLA's FLOP count of one clip
   (`jax.jit(...).lower(...).cost_analysis()` on abstract weights, nothing allocated), to state
   what a device needs per item.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))


def preprocess_rate(n: int, out: Path) -> dict:
  from test_data_preprocess import tiny_pipeline, write_clip
  from ltx_jax import data
  media_dir = out / 'media'
  media_dir.mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(n + 1):
    write_clip(media_dir / f"c{i}.mp4", 40, 320, 192, 24, seed=i)
    rows.append({'caption': f"clip number {i}", 'media_path': f"c{i}.mp4"})
  (media_dir / 'list.json').write_text(json.dumps(rows))
  items, _ = data.list_items(media_dir / 'list.json')
  pipe = tiny_pipeline()
  enc = data.Encoders(pipe, latents='sample', max_sequence_length=128, batch_size=1)
  config = data.PreprocessConfig(data.parse_buckets('256x160x33'), batch_size=1, shard_size=8)
  data.preprocess(items[:1], enc, out / 'warm', config, progress=False)  # compiles
  t = time.perf_counter()
  s = data.preprocess(items[1:], enc, out / 'cache', config, progress=False)
  dt = time.perf_counter() - t
  return {'items': s.written, 'seconds': round(dt, 2), 'items_per_s': round(s.written / dt, 2)}


def loader_rate(folder: Path, steps: int = 200) -> dict:
  from ltx_jax import data
  loader = data.BatchLoader(folder, 4, seed=0, process_index=0, process_count=1)
  it = loader.iterator()
  next(it)
  t = time.perf_counter()
  for _ in range(steps):
    b = next(it)
  dt = time.perf_counter() - t
  return {'batch': list(b['latents'].shape), 'batches_per_s': round(steps / dt, 1),
          'samples_per_s': round(4 * steps / dt, 1)}


def loader_rate_real_size(out: Path, n: int = 48, steps: int = 60) -> dict:
  """The loader over synthetic records of the released model's sizes: a 768x512x49 bucket
  (latents [7, 16, 24, 128]) and T5-XXL context [256, 4096], bf16 values as bf16 models make."""
  import ml_dtypes
  from ltx_jax.data import records
  folder = out / 'real_size'
  folder.mkdir(parents=True, exist_ok=True)
  index = records.Index(folder, {}, {}, [], [])
  rng = np.random.default_rng(0)
  with records.ShardWriter(folder, 0) as w:
    for i in range(n):
      lat = rng.standard_normal((7, 16, 24, 128)).astype(ml_dtypes.bfloat16).astype(np.float32)
      ctx = rng.standard_normal((256, 4096)).astype(ml_dtypes.bfloat16).astype(np.float32)
      rec = w.write(records.encode_record(f"k{i}", {'latents': lat, 'context': ctx,
                                                   'context_mask': np.ones(256, np.uint8)}))
      index.samples.append({'key': f"k{i}", 'bucket': '768x512x49', 'fps': 24.0, 'shard': 0,
                            'record': rec, 'latent_shape': list(lat.shape)})
    index.shards.append(w.commit())
  records.write_index(index)
  res = loader_rate(folder, steps)
  res['bytes_per_sample'] = index.shards[0]['bytes'] // n
  return res


def vae_flops(buckets=('768x512x49', '768x768x121', '1024x576x97', '512x512x1')) -> dict:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from ltx_jax.data import encode as encode_lib
  from ltx_jax.data import parse_buckets
  from ltx_jax.models.vae import VideoAutoencoder
  from ltx_jax.models.vae.config import LTXV_VAE_098
  abstract = nnx.eval_shape(lambda: VideoAutoencoder(LTXV_VAE_098, dtype=jnp.bfloat16,
                                                     param_dtype=jnp.bfloat16,
                                                     rngs=nnx.Rngs(0)))
  graph, state = nnx.split(abstract)
  out = {}
  for b in parse_buckets(list(buckets)):
    video = jax.ShapeDtypeStruct((1, b.frames, b.height, b.width, 3), jnp.bfloat16)
    cost = encode_lib._moments.lower(graph, state, video).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out[str(b)] = {'tflop': round(float(cost['flops']) / 1e12, 2)}
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--items', type=int, default=16)
  p.add_argument('--out', default='/tmp/bench_data')
  args = p.parse_args()
  out = Path(args.out)
  shutil.rmtree(out, ignore_errors=True)
  res = {'preprocess_tiny': preprocess_rate(args.items, out)}
  res['loader'] = loader_rate(out / 'cache')
  res['loader_real_size'] = loader_rate_real_size(out)
  res['vae_encoder_flops_per_clip'] = vae_flops()
  print(json.dumps(res, indent=1))


if __name__ == '__main__':
  main()
