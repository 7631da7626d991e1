"""`LTXMultiScalePipeline` against Lightricks' own `LTXMultiScalePipeline`: a tiny random
transformer + VAE written as an official single file, a tiny spatial upsampler written as an
official upscaler file, each read back by the official loaders and by ours. The dev recipe
(per-interval CFG / STG, skip-final then skip-initial steps, CFG-star) and the distilled one
(timestep lists, re-noising at 0.9094, tone mapping), at a size the passes do not divide so the
final resize does work."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from builders import LATENT, official_single_file
from conftest import randomize_torch_module, rel_l2
from ltx_jax import LTXMultiScalePipeline, load_latent_upsampler, load_transformer, load_vae
from ltx_jax.errors import UsageError
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import SchedulerConfig
from ltx_jax.sampling import loop as loop_lib

SCHEDULER = dict(_class_name='RectifiedFlowScheduler', num_train_timesteps=1000,
                 shifting='SD3', sampler='Uniform', target_shift_terminal=0.1)
UPSAMPLER = dict(in_channels=LATENT, mid_channels=32, num_blocks_per_stage=1, dims=3,
                 spatial_upsample=True, temporal_upsample=False)
# 56 x 80 at 2/3: first pass 32 x 48 (multiples of the VAE's 8), second 64 x 96, then resized.
H, W, FRAMES, FACTOR = 56, 80, 9, 0.6666666
GRID1, GRID2 = (3, 4, 6), (3, 8, 12)

DEV = dict(
    first_pass=dict(guidance_scale=[1.0, 4.0, 2.0], stg_scale=[0.0, 1.5, 1.0],
                    rescaling_scale=[1.0, 0.5, 1.0], guidance_timesteps=[1.0, 0.97, 0.8],
                    skip_block_list=[[], [0, 1], [1]], num_inference_steps=6,
                    skip_final_inference_steps=2, cfg_star_rescale=True),
    second_pass=dict(guidance_scale=[2.0], stg_scale=[1.0], rescaling_scale=[0.7],
                     guidance_timesteps=[1.0], skip_block_list=[1], num_inference_steps=6,
                     skip_initial_inference_steps=3, cfg_star_rescale=True),
    common=dict(tone_map_compression_ratio=0.0))
DISTILLED = dict(
    first_pass=dict(timesteps=[1.0, 0.9875, 0.9094, 0.725], guidance_scale=1.0, stg_scale=0.0,
                    rescaling_scale=1.0, skip_block_list=[1]),
    second_pass=dict(timesteps=[0.9094, 0.725, 0.4219], guidance_scale=1.0, stg_scale=0.0,
                     rescaling_scale=1.0, skip_block_list=[1]),
    common=dict(tone_map_compression_ratio=0.6))


def official_upsampler(folder):
  """A tiny random official spatial upsampler written as an upscaler file in `folder` and
  read back by the official loader -> (the official module, the file's path)."""
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  up = LatentUpsampler(**UPSAMPLER).eval()
  randomize_torch_module(up, seed=5)
  path = folder / 'ltxv-spatial-upscaler-tiny.safetensors'
  save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(path),
            metadata={'config': json.dumps(UPSAMPLER)})
  return LatentUpsampler.from_pretrained(str(path)).float().eval(), path


@pytest.fixture(scope='module')
def pipelines(tmp_path_factory):
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline as Official
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  tmp = tmp_path_factory.mktemp('multiscale')
  path = tmp / 'ltxv-tiny.safetensors'
  transformer, vae, scheduler = official_single_file(path, dict(SCHEDULER))
  ref_up, up_path = official_upsampler(tmp)
  ref_video = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler,
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  ref = Official(ref_video, ref_up)
  pipe = LTXPipeline(load_transformer(path), load_vae(path),
                     scheduler=SchedulerConfig.from_official(dict(SCHEDULER)))
  return ref, LTXMultiScalePipeline(pipe, load_latent_upsampler(up_path))


def _ours(pass_args: dict) -> dict:
  """Official pass arguments -> ours: timesteps x1000, rescaling_scale -> stg_rescale."""
  out = dict(pass_args)
  for k in ('timesteps', 'guidance_timesteps'):
    if k in out:
      out[k] = [1000 * t for t in out[k]]
  if 'rescaling_scale' in out:
    out['stg_rescale'] = out.pop('rescaling_scale')
  return out


@pytest.mark.parametrize('recipe', [DEV, DISTILLED], ids=['dev', 'distilled'])
def test_multiscale_against_official(pipelines, recipe, highest_precision):
  from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
  ref, ours = pipelines
  rng = np.random.default_rng(0)
  e = rng.standard_normal((1, 6, 32)).astype(np.float32)
  n = rng.standard_normal((1, 6, 32)).astype(np.float32)
  m = np.array([[1, 1, 1, 1, 0, 0]])
  # The official pipeline draws each pass's noise as randn((B, F'H'W', C)) from one generator.
  gen = torch.Generator().manual_seed(11)
  noise1 = torch.randn((1, int(np.prod(GRID1)), LATENT), generator=gen)
  noise2 = torch.randn((1, int(np.prod(GRID2)), LATENT), generator=gen)
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, decode_timestep=0.05,
                decode_noise_scale=0.0, **recipe['common'])
  t = torch.from_numpy
  seen = []  # the final latents, as the official decode step gets them (no decode noise here)
  video_pipe = ref.video_pipeline
  tone_map = video_pipe.tone_map_latents
  video_pipe.tone_map_latents = lambda x, ratio: (seen.append(x.clone()), tone_map(x, ratio))[1]
  with torch.no_grad():
    want = ref(FACTOR, dict(recipe['first_pass']), dict(recipe['second_pass']),
               prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
               negative_prompt_attention_mask=t(m), negative_prompt=None,
               generator=torch.Generator().manual_seed(11), output_type='pt', is_video=True,
               vae_per_channel_normalize=True,
               skip_layer_strategy=SkipLayerStrategy.AttentionValues, **common).images
  del video_pipe.tone_map_latents
  want = want.permute(0, 2, 3, 4, 1).numpy()  # [B, F, H, W, 3] in [0, 1]
  first = dict(_ours(recipe['first_pass']), noise=noise1.numpy().reshape(1, *GRID1, LATENT))
  second = dict(_ours(recipe['second_pass']), noise=noise2.numpy().reshape(1, *GRID2, LATENT))
  kw = dict(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
            negative_prompt_attention_mask=m, progress=False, **common)
  out = ours(FACTOR, first, second, **kw)
  assert out.frames.shape == (1, FRAMES, H, W, 3) and out.latents.shape == (1, *GRID2, LATENT)
  diff = np.abs(out.frames.astype(np.float64) - want * 255)
  close = float(np.mean(diff <= 1.0))
  print(f"frames within 1/255: {close:.4f}, max {diff.max():.2f}/255")
  assert close >= 0.99
  # Latents: ours after the second pass against the official second pass's.
  err = rel_l2(out.latents, seen[0].permute(0, 2, 3, 4, 1).numpy())
  print(f"final latents rel L2 {err:.2e}")
  assert err < 1e-4
  # Two calls at the same sizes compile nothing new.
  size = loop_lib.denoise_jit._cache_size()
  ours(FACTOR, first, second, **dict(kw, output_type='latent'))
  assert loop_lib.denoise_jit._cache_size() == size
