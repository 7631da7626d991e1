"""Time to the first transformer forward: from safetensors (diffusers folder) vs from orbax.

  python tools/bench_load.py --workdir /tmp/ltx_bench [--layers 8 --heads 16] [--dtype f32]

Builds (once) a random diffusers transformer of a few hundred MB and its orbax conversion, then
times, each in a fresh process (no warm jit cache) and with the files in the page cache, the
load and the first jitted forward. Prints one row per source; the best of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def build(work: Path, layers: int, heads: int) -> None:
  if (work / 'orbax').exists():
    return
  import torch
  from diffusers import LTXVideoTransformer3DModel
  from ltx_jax.weights.convert import convert
  from ltx_jax.sources import resolve_source
  torch.manual_seed(0)
  model = LTXVideoTransformer3DModel(in_channels=128, out_channels=128, num_attention_heads=heads,
                                     attention_head_dim=64, cross_attention_dim=heads * 64,
                                     num_layers=layers, caption_channels=4096)
  model.save_pretrained(work / 'diffusers' / 'transformer', max_shard_size='100GB')
  source = resolve_source(work / 'diffusers', allow_custom=True)
  convert(source, work / 'orbax', dtype='f32', components=['transformer'])


def time_one(source: str, dtype: str) -> dict:
  """Runs in the child process: load + first forward, wall-clock seconds."""
  start = time.perf_counter()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from ltx_jax import load_transformer
  imported = time.perf_counter()
  model = load_transformer(source, dtype=dtype)
  jax.block_until_ready(nnx.state(model))
  loaded = time.perf_counter()
  x = np.zeros((1, 2 * 8 * 8, 128), np.float32)
  ctx = np.zeros((1, 16, 4096), np.float32)
  fwd = nnx.jit(lambda m, x, c: m(x, c, jnp.array([500.0]), None, num_frames=2, height=8,
                                  width=8))
  jax.block_until_ready(fwd(model, x, ctx))
  done = time.perf_counter()
  return {'load_s': loaded - imported, 'first_forward_s': done - imported,
          'import_s': imported - start}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--workdir', default='/tmp/ltx_bench')
  p.add_argument('--layers', type=int, default=8)
  p.add_argument('--heads', type=int, default=16)
  p.add_argument('--dtype', default='f32', choices=('f32', 'bf16'))
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(time_one(args.child, args.dtype)))
    return
  work = Path(args.workdir)
  build(work, args.layers, args.heads)
  size = sum(f.stat().st_size for f in (work / 'diffusers').rglob('*.safetensors'))
  rows = {}
  for _ in range(args.repeats):
    for name, src in (('safetensors', work / 'diffusers'), ('orbax', work / 'orbax')):
      out = subprocess.run([sys.executable, __file__, '--child', str(src), '--dtype', args.dtype],
                           capture_output=True, text=True, check=True, env=dict(os.environ))
      r = json.loads(out.stdout.strip().splitlines()[-1])
      best = rows.get(name)
      rows[name] = r if best is None or r['first_forward_s'] < best['first_forward_s'] else best
  print(f"{'source':12s} {'MB':>8s} {'load s':>8s} {'to 1st forward s':>17s}")
  for name, r in rows.items():
    print(f"{name:12s} {size / 1e6:8.0f} {r['load_s']:8.2f} {r['first_forward_s']:17.2f}")


if __name__ == '__main__':
  main()
