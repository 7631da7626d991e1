"""Diffusers' documented two-call multi-scale recipe: LTXConditionPipeline at a small size,
LTXLatentUpsamplePipeline (`adain_factor`, `tone_map_compression_ratio`), LTXConditionPipeline
again on the upsampled latents with `denoise_strength` - against `LTXPipeline` and
`LTXMultiScalePipeline.upsample_latents`. Tiny random diffusers components."""

import numpy as np
import pytest
import torch

from builders import LATENT, TEXT_DIM, tiny_repo
from conftest import randomize_torch_module, rel_l2
from ltx_jax import LTXMultiScalePipeline, load_latent_upsampler, load_transformer, load_vae
from ltx_jax.pipeline import LTXPipeline

UPSAMPLER = dict(in_channels=LATENT, mid_channels=32, num_blocks_per_stage=1, dims=3,
                 spatial_upsample=True, temporal_upsample=False)
H, W, FRAMES = 32, 64, 9
GRID1, GRID2 = (3, 4, 8), (3, 8, 16)


@pytest.fixture(scope='module')
def pipelines(tmp_path_factory):
  from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline
  from diffusers import LTXLatentUpsamplePipeline
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  root = tmp_path_factory.mktemp('ltx-tiny-diffusers')
  transformer, vae, _, _ = tiny_repo(root)
  up = LTXLatentUpsamplerModel(**UPSAMPLER).eval()
  randomize_torch_module(up, seed=4)
  up.save_pretrained(root / 'latent_upsampler')
  # LTXConditionPipeline passes no `mu`: a scheduler without dynamic shifting (explicit
  # timesteps then are the sigmas, x 1/1000).
  scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0,
                                              use_dynamic_shifting=False)
  cond = LTXConditionPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                              transformer=transformer)
  upsample = LTXLatentUpsamplePipeline(vae=vae, latent_upsampler=up)
  pipe = LTXPipeline(load_transformer(root / 'transformer'), load_vae(root / 'vae'))
  return cond, upsample, LTXMultiScalePipeline(pipe, load_latent_upsampler(root))


def test_two_call_recipe(pipelines, highest_precision):
  cond, upsample, multi = pipelines
  rng = np.random.default_rng(0)
  e = rng.standard_normal((1, 6, TEXT_DIM)).astype(np.float32)
  n = rng.standard_normal((1, 6, TEXT_DIM)).astype(np.float32)
  m = np.array([[1, 1, 1, 1, 0, 0]])
  t = torch.from_numpy
  text = dict(prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
              negative_prompt_attention_mask=t(m))
  first_t, second_t = [1000.0, 900.0, 700.0, 400.0], [1000.0, 800.0, 600.0, 300.0, 100.0]
  with torch.no_grad():
    lat1 = cond(height=H, width=W, num_frames=FRAMES, timesteps=first_t, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(1), output_type='latent',
                **text).frames
    up = upsample(latents=lat1, adain_factor=0.5, tone_map_compression_ratio=0.3,
                  output_type='latent').frames
    lat2 = cond(height=2 * H, width=2 * W, num_frames=FRAMES, timesteps=second_t,
                guidance_scale=3.0, latents=up, denoise_strength=0.6,
                generator=torch.Generator().manual_seed(2), output_type='latent',
                **text).frames
  # diffusers draws [B, C, F, H, W] noise from each call's generator
  noise1 = torch.randn((1, LATENT, *GRID1), generator=torch.Generator().manual_seed(1))
  noise2 = torch.randn((1, LATENT, *GRID2), generator=torch.Generator().manual_seed(2))
  ours_text = dict(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
                   negative_prompt_attention_mask=m, progress=False, output_type='latent',
                   guidance_scale=3.0, num_frames=FRAMES, frame_rate=25)
  pipe = multi.pipe
  got1 = pipe(height=H, width=W, timesteps=first_t,
              noise=noise1.permute(0, 2, 3, 4, 1).numpy(), **ours_text).latents
  want1 = lat1.permute(0, 2, 3, 4, 1).numpy()
  err1 = rel_l2(got1, want1)
  got_up = multi.upsample_latents(want1, adain_factor=0.5, tone_map_compression_ratio=0.3)
  err_up = rel_l2(got_up, up.permute(0, 2, 3, 4, 1).numpy())
  got2 = pipe(height=2 * H, width=2 * W, timesteps=second_t, latents=np.asarray(got_up),
              denoise_strength=0.6, noise=noise2.permute(0, 2, 3, 4, 1).numpy(),
              **ours_text).latents
  err2 = rel_l2(got2, lat2.permute(0, 2, 3, 4, 1).numpy())
  print(f"first call {err1:.2e}, upsample {err_up:.2e}, second call {err2:.2e}")
  assert err1 < 1e-4 and err_up < 1e-5 and err2 < 1e-4
