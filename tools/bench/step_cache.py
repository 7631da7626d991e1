"""Step caches on the 13B dev recipe: skipped steps, speed-up and error against the uncached loop.

  python -m tools.bench.step_cache                     # CPU: a narrow 13B-shaped model, small video
  python -m tools.bench.step_cache --preset gpu        # 13B width, 8 layers, 704x1216x121, bf16

Random weights (the caches' savings on a trained model differ: its residual stream changes
differently from step to step); the sampling is the ltxv-13b-0.9.8-dev preset's (30 steps,
per-interval CFG / STG schedules, CFG-star), with the STG layers scaled to the layer count. Each
run is the public `prepare` -> `denoise` of `LTXPipeline`; the error is the relative L2 distance
of the final latents to the uncached run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import FirstBlockCache, TeaCache, presets
from ltx_jax.models.random import random_weights
from ltx_jax.models.transformer import LTXV_13B, LTXVideoTransformer
from ltx_jax.models.vae import VAEConfig, VideoAutoencoder
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import SchedulerConfig
from tools.bench.cases import VAE_TINY_DECODER, VAE_TINY_ENCODER

PRESET = 'ltxv-13b-0.9.8-dev'
SIZES = {  # transformer, dtype, (frames, height, width)
    'cpu': (dataclasses.replace(LTXV_13B, num_layers=8, num_heads=4, head_dim=32,
                                cross_attention_dim=128, caption_channels=64),
            jnp.float32, (17, 128, 192)),
    'gpu': (dataclasses.replace(LTXV_13B, num_layers=8), jnp.bfloat16, (121, 704, 1216)),
}
CACHES = 'first_block:0.05,first_block:0.1,first_block:0.2,teacache:0.03,teacache:0.05'
KINDS = {'first_block': FirstBlockCache, 'teacache': TeaCache}
TEXT_TOKENS = 32


def _pipeline(config, dtype) -> LTXPipeline:
  vae_config = VAEConfig.from_diffusers({**VAE_TINY_ENCODER, **VAE_TINY_DECODER})
  transformer = random_weights(lambda: LTXVideoTransformer(
      config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)), seed=0)
  vae = random_weights(lambda: VideoAutoencoder(vae_config, rngs=nnx.Rngs(0)), seed=1)
  return LTXPipeline(transformer, vae, None, None, SchedulerConfig())


def _sampling(layers: int) -> dict:
  """The preset's sampling arguments, its STG layers mapped onto `layers` layers."""
  s = dict(presets.get(PRESET).sampling)
  s['skip_block_list'] = [sorted({i * layers // 48 for i in blocks})
                          for blocks in s['skip_block_list']]
  for key in ('height', 'width', 'num_frames', 'negative_prompt', 'max_sequence_length',
              'decode_timestep', 'decode_noise_scale'):
    del s[key]
  return s


def compare(config, dtype, size, caches, runs: int) -> dict:
  """The preset's denoising loop uncached, then with each cache: skipped steps, median seconds
  (after a compiling first call), speed-up and relative L2 error of the latents against the
  uncached loop."""
  f, h, w = size
  pipe = _pipeline(config, dtype)
  rng = np.random.default_rng(0)
  text = rng.standard_normal((1, TEXT_TOKENS, config.caption_channels)).astype(np.float32)
  neg = rng.standard_normal((1, TEXT_TOKENS, config.caption_channels)).astype(np.float32)
  mask = np.ones((1, TEXT_TOKENS), np.float32)
  kw = dict(_sampling(config.num_layers), prompt_embeds=text, prompt_attention_mask=mask,
            negative_prompt_embeds=neg, negative_prompt_attention_mask=mask, height=h, width=w,
            num_frames=f, seed=0, progress=False)

  def run(cache):
    plan = pipe.prepare(**kw, cache=cache)
    t0 = time.perf_counter()
    latents, ran = jax.block_until_ready(pipe._denoise(plan))  # the first call compiles
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
      t0 = time.perf_counter()
      latents, ran = jax.block_until_ready(pipe._denoise(plan))
      times.append(time.perf_counter() - t0)
    return np.asarray(latents, np.float64), np.asarray(ran), first, float(np.median(times))

  base, ran, first, base_s = run(None)
  rows = [{'cache': 'none', 'skipped': 0, 'steps': int(ran.size), 'first_s': first,
           'denoise_s': base_s, 'speedup': 1.0, 'rel_l2': 0.0}]
  for cache in caches:
    latents, ran, first, seconds = run(cache)
    rows.append({'cache': f"{type(cache).__name__}({cache.threshold})",
                 'skipped': int(np.sum(~ran)), 'steps': int(ran.size), 'first_s': first,
                 'denoise_s': seconds, 'speedup': base_s / seconds,
                 'rel_l2': float(np.linalg.norm(latents - base) / np.linalg.norm(base))})
  return {'preset': PRESET, 'layers': config.num_layers, 'width': config.dim,
          'tokens': ((f - 1) // 8 + 1) * (h // 32) * (w // 32), 'video': f'{f}x{h}x{w}',
          'dtype': jnp.dtype(dtype).name, 'runs': runs, 'rows': rows}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', choices=sorted(SIZES), default='cpu')
  parser.add_argument('--runs', type=int, default=2, help='timed runs per setting (median)')
  parser.add_argument('--caches', default=CACHES, help='kind:threshold,... (first_block, teacache)')
  args = parser.parse_args(argv)
  caches = [KINDS[k](float(t)) for k, t in (c.split(':') for c in args.caches.split(','))]
  config, dtype, size = SIZES[args.preset]
  result = compare(config, dtype, size, caches, args.runs)
  print(f"{PRESET} sampling, {result['layers']} layers of width {result['width']}, "
        f"{result['tokens']} tokens ({result['video']}), {result['dtype']}, "
        f"{jax.devices()[0].device_kind}, median of {args.runs}")
  print('| cache | skipped steps | denoise s | speed-up | rel. L2 error vs uncached |')
  print('|---|---|---|---|---|')
  for r in result['rows']:
    print(f"| {r['cache']} | {r['skipped']}/{r['steps']} | {r['denoise_s']:.3f} | "
          f"{r['speedup']:.2f} | {r['rel_l2']:.2e} |")


if __name__ == '__main__':
  main()
