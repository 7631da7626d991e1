"""Case 5, the whole tiny pipeline: what the scanned loop costs over its steps, against diffusers;
and a cold against a warm start in fresh processes (the persistent compilation cache).

The loop is timed through the pipeline's public stages: `prepare` builds the plan of the same
call, `denoise` runs it (whole, or one step at a time).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ltx_jax.models.random import random_weights
from tools.bench import measure
from tools.bench.cases import TRANSFORMER_TINY, VAE_TINY_DECODER, VAE_TINY_ENCODER

VIDEO = (9, 64, 96)  # frames, height, width: a 3 x 8 x 12 latent grid
TEXT_TOKENS = 16
GUIDANCE = 3.0
DECODE_T = 0.05
SEED = 0


def _text(seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  e = lambda: rng.standard_normal((1, TEXT_TOKENS, TRANSFORMER_TINY.caption_channels), np.float32)
  m = np.ones((1, TEXT_TOKENS), np.float32)
  return dict(prompt_embeds=e(), prompt_attention_mask=m, negative_prompt_embeds=e(),
              negative_prompt_attention_mask=m.copy())


def jax_pipeline():
  from ltx_jax.models.transformer import LTXVideoTransformer
  from ltx_jax.models.vae import VAEConfig, VideoAutoencoder
  from ltx_jax.pipeline import LTXPipeline
  from ltx_jax.sampling import SchedulerConfig
  vae_cfg = VAEConfig.from_diffusers({**VAE_TINY_ENCODER, **VAE_TINY_DECODER})
  transformer = random_weights(lambda: LTXVideoTransformer(TRANSFORMER_TINY, rngs=nnx.Rngs(0)),
                               seed=0)
  vae = random_weights(lambda: VideoAutoencoder(vae_cfg, rngs=nnx.Rngs(0)), seed=1)
  return LTXPipeline(transformer, vae, None, None, SchedulerConfig())


def run_jax_pipeline(pipe, steps: int, output_type: str = 'np'):
  f, h, w = VIDEO
  out = pipe(**_text(), height=h, width=w, num_frames=f, num_inference_steps=steps,
             guidance_scale=GUIDANCE, decode_timestep=DECODE_T, progress=False,
             output_type=output_type, seed=SEED)
  return out.frames if output_type == 'np' else out.latents


def torch_pipeline(device: str = 'cpu'):
  """The same pipeline in diffusers (random weights, same shapes); returns a run(steps) function."""
  import torch
  from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                         LTXVideoTransformer3DModel)
  cfg = TRANSFORMER_TINY
  transformer = LTXVideoTransformer3DModel(
      in_channels=cfg.in_channels, out_channels=cfg.out_channels,
      num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
      cross_attention_dim=cfg.cross_attention_dim, num_layers=cfg.num_layers,
      caption_channels=cfg.caption_channels).eval()
  vae = AutoencoderKLLTXVideo(**VAE_TINY_ENCODER, **VAE_TINY_DECODER, scaling_factor=1.0).eval()
  with torch.no_grad():
    vae.decoder.timestep_scale_multiplier.fill_(1000.0)
  scheduler = FlowMatchEulerDiscreteScheduler(
      base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05,
      num_train_timesteps=1000, shift=1.0, shift_terminal=0.1, use_dynamic_shifting=True,
      time_shift_type='exponential')
  pipe = LTXPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                     transformer=transformer).to(device)
  pipe.set_progress_bar_config(disable=True)
  text = {k: torch.from_numpy(v).to(device) for k, v in _text().items()}
  f, h, w = VIDEO

  def run(steps: int):
    with torch.inference_mode():
      return pipe(**text, height=h, width=w, num_frames=f, num_inference_steps=steps,
                  guidance_scale=GUIDANCE, decode_timestep=DECODE_T, decode_noise_scale=DECODE_T,
                  output_type='np', generator=torch.Generator().manual_seed(0)).frames
  return run


def plan(pipe, steps: int):
  """The `GenerationPlan` of `run_jax_pipeline(pipe, steps)`, from the pipeline's public
  `prepare` stage (text-to-video, CFG on: two row groups per transformer call)."""
  f, h, w = VIDEO
  return pipe.prepare(**_text(), height=h, width=w, num_frames=f, num_inference_steps=steps,
                      guidance_scale=GUIDANCE, progress=False, seed=SEED)


def loop_functions(pipe, steps: int) -> dict:
  """The scanned loop over `steps`, a Python loop of `steps` one-step runs, and one step, all
  through the public `denoise` stage on the plan of the pipeline's own call.

  A one-step plan is the full plan with its sigmas and per-step guidance values ([S] or
  [S, L]) sliced to that step.
  """
  full = plan(pipe, steps)

  def one(i: int):
    return dataclasses.replace(full, sigmas=full.sigmas[i:i + 2],
                               guidance=jax.tree.map(lambda g: g[i:i + 1], full.guidance),
                               key=jax.random.fold_in(full.key, i))

  singles = [one(i) for i in range(steps)]

  def scanned():
    return pipe.denoise(full)

  def python_loop():
    x = None
    for p in singles:
      x = pipe.denoise(p if x is None else p.with_video_latents(x))
    return x

  def one_step():
    return pipe.denoise(singles[0])

  return {'scanned': scanned, 'python_loop': python_loop, 'one_step': one_step}


def pipeline_bench(steps: int = 8, runs: int = 5, with_torch: bool = True) -> dict:
  """Times the tiny pipeline end to end (ours and diffusers') and our loop three ways."""
  out = {'steps': steps, 'video': VIDEO}
  with measure.PeakMemory() as mem:
    pipe = jax_pipeline()
    t0 = time.perf_counter()
    run_jax_pipeline(pipe, steps)
    out['jax_first_s'] = time.perf_counter() - t0
  out['jax_mem'] = mem.peak
  fns = {'jax': lambda: run_jax_pipeline(pipe, steps)}
  loops = loop_functions(pipe, steps)
  for fn in loops.values():
    measure.block(fn())  # compile
  fns.update(loops)
  if with_torch:
    with measure.PeakMemory() as mem:
      run_torch = torch_pipeline()
      out['torch_first_s'] = measure.timed(lambda: run_torch(steps))
    out['torch_mem'] = mem.peak
  times = measure.interleaved(fns, runs)
  if with_torch:
    # Timed after ours, not interleaved: calls this short would measure the other runtime's
    # worker threads still spinning after its last call.
    times.update(measure.interleaved({'torch': lambda: run_torch(steps)}, runs))
  out['median_s'] = {k: measure.median(v) for k, v in times.items()}
  out['runs'] = runs
  return out


def _default_child() -> list[str]:
  """The smoke config through the CLI (configs/ sits beside tools/ in the repository)."""
  smoke = Path(__file__).resolve().parents[2] / 'configs' / 'smoke.py'
  out = tempfile.mkdtemp(prefix='ltx_bench_smoke_')
  code = ("from ltx_jax.compilation_cache import configure_compilation_cache as c; c(); "
          "import runpy, sys; sys.argv = ['generate', '--config', %r, "
          "'--config.output_dir=%s']; runpy.run_module('ltx_jax.generate', "
          "run_name='__main__')" % (str(smoke), out))
  return [sys.executable, '-c', code]


def cold_warm(command: list[str] | None = None, cache_dir: str | None = None) -> dict:
  """Runs `command` twice in fresh processes sharing an empty compilation cache folder."""
  command = command or _default_child()
  with tempfile.TemporaryDirectory(prefix='ltx_xla_cache_') as tmp:
    env = dict(os.environ, LTX_JAX_COMPILATION_CACHE=cache_dir or tmp)
    times = []
    for _ in range(2):
      t0 = time.perf_counter()
      proc = subprocess.run(command, env=env, capture_output=True, text=True)
      times.append(time.perf_counter() - t0)
      if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    from ltx_jax.compilation_cache import cache_entries
    entries = cache_entries(cache_dir or tmp)
  return {'command': ' '.join(command), 'cold_s': times[0], 'warm_s': times[1],
          'cache_entries': entries}
