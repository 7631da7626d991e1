"""Starting part-way down a schedule from given latents, on the single-pass call: the official
`skip_initial_inference_steps` / `skip_final_inference_steps` (LTXVideoPipeline) and diffusers'
`denoise_strength` (LTXConditionPipeline), with the given latents re-noised to the first
timestep, t0 * noise + (1 - t0) * latents."""

import numpy as np
import pytest
import torch

from builders import LATENT, official_single_file
from conftest import rel_l2
from ltx_jax import load_transformer, load_vae, smoke
from ltx_jax.errors import UsageError
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.pipeline.plan import trim_schedule
from ltx_jax.sampling import SchedulerConfig

H, W, FRAMES = 32, 48, 9
GRID = (3, 4, 6)
SCHEDULER = dict(_class_name='RectifiedFlowScheduler', num_train_timesteps=1000,
                 shifting='SD3', sampler='Uniform', target_shift_terminal=0.1)


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  path = tmp_path_factory.mktemp('official') / 'ltxv-tiny.safetensors'
  transformer, vae, scheduler = official_single_file(path, dict(SCHEDULER))
  ref = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler,
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  ours = LTXPipeline(load_transformer(path), load_vae(path),
                     scheduler=SchedulerConfig.from_official(dict(SCHEDULER)))
  return ref, ours


def _texts():
  rng = np.random.default_rng(1)
  e = rng.standard_normal((1, 6, 32)).astype(np.float32)
  return e, np.array([[1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize('skips', [dict(skip_initial_inference_steps=3),
                                   dict(skip_initial_inference_steps=2,
                                        skip_final_inference_steps=2),
                                   dict(skip_final_inference_steps=1, latents=None)],
                         ids=['initial', 'initial-final', 'final-from-noise'])
def test_skip_steps_against_official(official, skips, highest_precision):
  """The official pipeline draws its noise as randn((B, F'H'W', C)) from the generator, the
  same draw whether it is the start or re-noises given latents: ours gets it as `noise`."""
  from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
  ref, ours = official
  skips = dict(skips)
  e, m = _texts()
  clean = np.random.default_rng(2).standard_normal((1, LATENT, *GRID)).astype(np.float32)
  latents = skips.pop('latents', clean)
  noise = torch.randn((1, int(np.prod(GRID)), LATENT), generator=torch.Generator().manual_seed(7))
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=6,
                guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=[1],
                **skips)
  with torch.no_grad():
    want = ref(prompt_embeds=torch.from_numpy(e), prompt_attention_mask=torch.from_numpy(m),
               negative_prompt_embeds=torch.zeros_like(torch.from_numpy(e)),
               negative_prompt_attention_mask=torch.from_numpy(m), negative_prompt=None,
               latents=None if latents is None else torch.from_numpy(latents),
               generator=torch.Generator().manual_seed(7), output_type='latent', is_video=True,
               vae_per_channel_normalize=True, decode_timestep=0.05,
               skip_layer_strategy=SkipLayerStrategy.AttentionValues,
               decode_noise_scale=0.0, **common).images
  want = want.permute(0, 2, 3, 4, 1).numpy()
  stg_rescale = common.pop('rescaling_scale')
  got = ours(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=np.zeros_like(e),
             negative_prompt_attention_mask=m, output_type='latent', progress=False,
             latents=None if latents is None else latents.transpose(0, 2, 3, 4, 1),
             noise=noise.numpy().reshape(1, *GRID, LATENT), stg_rescale=stg_rescale, **common)
  err = rel_l2(got.latents, want)
  print(f"{skips}: official latents rel L2 {err:.2e}")
  assert err < 1e-4


def test_trim_schedule_and_plan_helpers():
  sig = np.array([1.0, 0.9, 0.7, 0.4, 0.2, 0.0], np.float32)
  np.testing.assert_allclose(trim_schedule(sig, 2, 1), [0.7, 0.4, 0.0])
  np.testing.assert_array_equal(trim_schedule(sig, 0, 0), sig)
  pipe = smoke.build_pipeline()
  call = dict(prompt='a cat', height=64, width=64, num_frames=9, frame_rate=8.0,
              timesteps=[1000.0, 800.0, 500.0, 200.0], guidance_scale=1.0,
              max_sequence_length=16, seed=3, progress=False)
  plan = pipe.prepare(**call)
  short = plan.skip_final_steps(2)
  np.testing.assert_allclose(short.sigmas, [1.0, 0.8, 0.0])
  assert short.guidance.scale.shape == (2,) and short.guidance.keep_layers.shape[0] == 2
  start = plan.unpack(plan.latents)
  # Given latents at a first timestep < 1: re-noised with the plan's own noise.
  at = pipe.prepare(**dict(call, timesteps=[500.0, 200.0], latents=start * 0 + 1))
  want = 0.5 * start + 0.5
  np.testing.assert_allclose(np.asarray(at.latents), np.asarray(want).reshape(at.latents.shape),
                             atol=1e-6)


def test_denoise_strength_and_skip_checks():
  pipe = smoke.build_pipeline()
  call = dict(prompt='a cat', height=64, width=64, num_frames=9, frame_rate=8.0,
              num_inference_steps=8, guidance_scale=1.0, max_sequence_length=16, seed=3,
              progress=False)
  base = pipe.prepare(**call)
  clean = np.ones((1, 2, 2, 2, smoke.LATENT), np.float32)
  half = pipe.prepare(**dict(call, latents=clean, denoise_strength=0.55))
  # diffusers' get_timesteps: keep int(8 * 0.55) = 4 steps.
  np.testing.assert_array_equal(np.asarray(half.sigmas), np.asarray(base.sigmas[4:]))
  skip = pipe.prepare(**dict(call, latents=clean, skip_initial_inference_steps=4))
  np.testing.assert_array_equal(np.asarray(skip.latents), np.asarray(half.latents))
  t0 = float(base.sigmas[4])
  np.testing.assert_allclose(np.asarray(skip.latents),
                             t0 * np.asarray(base.latents) + (1 - t0), atol=1e-6)
  bad = [
      (dict(skip_initial_inference_steps=2), 'pass latents='),
      (dict(latents=clean, skip_initial_inference_steps=5, skip_final_inference_steps=3),
       r'5 \+ skip_final_inference_steps=3 must be less than the 8'),
      (dict(latents=clean, skip_initial_inference_steps=-1), 'must be an integer >= 0'),
      (dict(latents=clean, denoise_strength=0.1), r'keeps int\(8 \* 0.1\) = 0'),
      (dict(latents=clean, denoise_strength=1.5), 'denoise_strength=1.5'),
      (dict(latents=clean, denoise_strength=0.5, skip_initial_inference_steps=1),
       'pass one of'),
      (dict(timesteps=[900.0, 500.0], skip_final_inference_steps=1), 'trimmed timesteps'),
      (dict(noise=np.zeros((1, 2, 2, 3, smoke.LATENT))), r'noise have shape'),
  ]
  for kwargs, match in bad:
    with pytest.raises(UsageError, match=match):
      pipe.prepare(**dict(call, **kwargs))
