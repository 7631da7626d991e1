"""Times the 2B distilled multi-scale recipe (presets.multi_scale) end to end on random weights.

  python -m tools.bench.multiscale [--layers 2] [--size 256x384x9] [--dtype float32]

The transformer is the 2B one with `--layers` layers (28: the real depth), the VAE decoder the
0.9.8 one, the latent upsampler the released spatial one (`UpsamplerConfig()`); random
128-token text embeddings stand in for T5. Prints the stage times of a cold call (compiles
included) and a warm one, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltx_jax import LTXMultiScalePipeline, LTXPipeline, presets
from ltx_jax.models.random import random_weights
from ltx_jax.models.transformer import LTXVideoTransformer
from ltx_jax.models.transformer.config import LTXV_2B
from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_jax.models.vae import VideoAutoencoder
from ltx_jax.models.vae.config import VAEConfig
from tools.bench.cases import VAE_098_DECODER


class Stages:
  def __init__(self):
    self.seconds = collections.defaultdict(float)

  def __call__(self, stage):
    @contextlib.contextmanager
    def timed():
      t = time.perf_counter()
      yield
      self.seconds[stage] += time.perf_counter() - t
    return timed()


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--layers', type=int, default=2)
  p.add_argument('--size', default='256x384x9', help='HxWxF requested')
  p.add_argument('--dtype', default='float32')
  a = p.parse_args()
  h, w, f = (int(x) for x in a.size.split('x'))
  dt = getattr(jnp, a.dtype)
  from flax import nnx
  cfg = dataclasses.replace(LTXV_2B, num_layers=a.layers)
  transformer = random_weights(lambda: LTXVideoTransformer(cfg, dtype=dt, param_dtype=dt,
                                                           rngs=nnx.Rngs(0)))
  vae = random_weights(lambda: VideoAutoencoder(VAEConfig.from_diffusers(VAE_098_DECODER),
                                                dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)))
  up = random_weights(lambda: LatentUpsampler(UpsamplerConfig(), dtype=dt, param_dtype=dt,
                                              rngs=nnx.Rngs(0)))
  stages = Stages()
  multi = LTXMultiScalePipeline(LTXPipeline(transformer, vae, timer=stages), up)
  rng = np.random.default_rng(0)
  embeds = rng.standard_normal((1, 128, cfg.caption_channels)).astype(np.float32)
  kw = presets.multi_scale('ltxv-2b-0.9.8-distilled', height=h, width=w, num_frames=f,
                           progress=False)
  for k in ('negative_prompt', 'max_sequence_length'):
    kw.pop(k)
  for run in ('cold', 'warm'):
    stages.seconds.clear()
    t = time.perf_counter()
    out = multi(**kw, prompt_embeds=embeds, prompt_attention_mask=np.ones((1, 128)), seed=0)
    total = time.perf_counter() - t
    parts = ', '.join(f"{k} {v:.2f}" for k, v in stages.seconds.items())
    print(f"{run}: {total:.2f} s ({parts}); frames {out.frames.shape}, latents "
          f"{out.latents.shape}")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"peak resident memory {peak:.2f} GiB; devices {jax.devices()}")


if __name__ == '__main__':
  main()
