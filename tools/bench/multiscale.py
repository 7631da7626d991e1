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


# ------------------------------------------------------------------ against the official pipeline

@dataclasses.dataclass(frozen=True)
class OfficialSize:
  """One size of the two-pass comparison: the DiT, the VAE and the upsampler (our configs; the
  official modules are built from their `to_official` forms), the video and the text tokens."""
  transformer: object   # TransformerConfig
  vae: VAEConfig
  upsampler: UpsamplerConfig
  video: tuple[int, int, int]  # frames, height, width requested
  text: int
  dtype: str                   # 'bfloat16' or 'float32' on both sides


def _official_transformer(cfg) -> dict:
  """An official `Transformer3DModel` config for our `TransformerConfig`."""
  return dict(
      num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
      in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_layers=cfg.num_layers,
      cross_attention_dim=cfg.cross_attention_dim, attention_bias=cfg.attention_bias,
      activation_fn='gelu-approximate', adaptive_norm='single_scale_shift',
      standardization_norm='rms_norm', norm_elementwise_affine=False, norm_eps=cfg.norm_eps,
      caption_channels=cfg.caption_channels, qk_norm='rms_norm', positional_embedding_type='rope',
      positional_embedding_theta=cfg.rope_theta, positional_embedding_max_pos=list(cfg.rope_max_pos),
      timestep_scale_multiplier=1000, use_tpu_flash_attention=False,
      causal_temporal_positioning=True)


def official_args(ours: dict) -> dict:
  """Our pass arguments (timesteps in [0, 1000], stg_rescale) -> the official pipeline's."""
  out = dict(ours)
  for k in ('timesteps', 'guidance_timesteps'):
    if k in out:
      out[k] = [t / 1000 for t in out[k]]
  if 'stg_rescale' in out:
    out['rescaling_scale'] = out.pop('stg_rescale')
  out.setdefault('skip_block_list', [])
  return out


def compare_official(size: OfficialSize, runs: int, device: str) -> dict:
  """The 2B distilled two-pass recipe (presets.multi_scale) in ltx_jax against Lightricks'
  `LTXMultiScalePipeline` with the same pass arguments, random weights at `size` on both
  sides, text embeddings in, frames out. Each side runs once (compiles / warms up), then both
  `runs` times interleaved: medians, first calls, peak memory."""
  import torch
  from flax import nnx
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler as OfficialUp
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline as Official
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  from ltx_video.schedulers.rf import RectifiedFlowScheduler
  from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
  from tools.bench import cases, measure

  f, h, w = size.video
  dt = getattr(jnp, size.dtype)
  kw = presets.multi_scale('ltxv-2b-0.9.8-distilled', height=h, width=w, num_frames=f,
                           progress=False)
  for k in ('negative_prompt', 'max_sequence_length', 'progress'):
    kw.pop(k)
  rng = np.random.default_rng(0)
  embeds = rng.standard_normal((1, size.text, size.transformer.caption_channels)
                               ).astype(np.float32)
  mask = np.ones((1, size.text), np.int64)

  transformer = cases._weights(lambda: LTXVideoTransformer(
      size.transformer, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)))
  vae = cases._weights(lambda: VideoAutoencoder(size.vae, dtype=dt, param_dtype=dt,
                                                rngs=nnx.Rngs(1)))
  up = cases._weights(lambda: LatentUpsampler(size.upsampler, dtype=dt, param_dtype=dt,
                                              rngs=nnx.Rngs(2)))
  ours = LTXMultiScalePipeline(LTXPipeline(transformer, vae), up)
  run_ours = lambda: ours(**kw, prompt_embeds=embeds, prompt_attention_mask=mask, seed=0).frames

  torch_dtype = getattr(torch, size.dtype)
  with torch.device(device):
    ref_transformer = Transformer3DModel.from_config(_official_transformer(size.transformer))
    ref_vae = CausalVideoAutoencoder.from_config(size.vae.to_official())
    channels = size.vae.latent_channels
    ref_vae.register_buffer('std_of_means', torch.ones(channels))  # the file's statistics
    ref_vae.register_buffer('mean_of_means', torch.zeros(channels))
    ref_up = OfficialUp(**{k: v for k, v in size.upsampler.to_official().items()
                           if not k.startswith('_')})
  video_pipe = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=ref_vae.to(torch_dtype).eval(),
      transformer=ref_transformer.to(torch_dtype).eval(),
      scheduler=RectifiedFlowScheduler(sampler='LinearQuadratic', shifting='SD3'),
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  ref = Official(video_pipe, ref_up.to(torch_dtype).eval())
  te = torch.from_numpy(embeds).to(device, torch_dtype)
  tm = torch.from_numpy(mask).to(device)

  def run_ref():
    with torch.no_grad():
      return ref(kw['downscale_factor'], official_args(kw['first_pass']),
                 official_args(kw['second_pass']), prompt_embeds=te, prompt_attention_mask=tm,
                 negative_prompt=None, negative_prompt_embeds=te,  # unused: no CFG
                 negative_prompt_attention_mask=tm, height=h, width=w, num_frames=f,
                 frame_rate=kw['frame_rate'], decode_timestep=kw['decode_timestep'],
                 decode_noise_scale=kw['decode_noise_scale'],
                 generator=torch.Generator(device).manual_seed(0), output_type='pt',
                 is_video=True, vae_per_channel_normalize=True, offload_to_cpu=False,
                 skip_layer_strategy=SkipLayerStrategy.AttentionValues,
                 enhance_prompt=False).images

  row = {'case': f'two-pass 2B distilled {w}x{h}x{f}, {size.dtype}',
         'steps': f"{len(kw['first_pass']['timesteps'])} + {len(kw['second_pass']['timesteps'])}"}
  with measure.PeakMemory() as mem:
    row['ltx_jax_first_s'] = measure.timed(run_ours)
  weights = sum(measure.tree_bytes(nnx.state(m)) for m in (transformer, vae, up))
  row['ltx_jax_peak_gib'] = (weights + mem.peak) / 2**30
  with measure.PeakMemory(device) as mem:
    row['official_first_s'] = measure.timed(run_ref)
  row['official_peak_gib'] = (sum(measure.tree_bytes(m) for m in (ref_transformer, ref_vae,
                                                                  ref_up)) + mem.peak) / 2**30
  times = measure.interleaved({'ltx_jax': run_ours, 'official': run_ref}, runs)
  row.update(ltx_jax_s=measure.median(times['ltx_jax']),
             official_s=measure.median(times['official']), runs=runs)
  row['speedup'] = row['official_s'] / row['ltx_jax_s']
  return row
