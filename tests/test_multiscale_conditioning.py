"""Multi-scale generation with conditioning items against Lightricks' `LTXMultiScalePipeline`:
soft items in the second pass (a first frame of strength < 1, a soft keyframe after frame 0, soft
video segments at frame 0 and later) and media whose aspect ratio differs from the passes'.

The official second pass calls `LTXVideoPipeline` with the upsampled latents: they are noised to
its first timestep t0 (`t0 * noise + (1 - t0) * upsampled`) and the conditioning items are then
lerped into them (`prepare_conditioning`), so a soft token starts at
`lerp(t0 * noise + (1 - t0) * upsampled, item, strength)`. `inference.py` crops each item once to
the output's aspect ratio (blur, CRF) and the pipeline resizes it bilinearly to each pass's size.

Output 56 x 80 (aspect 1.43) at 2/3: passes of 32 x 48 and 64 x 96 (aspect 1.5); every item's
media is 50 x 90 (aspect 1.8). Both sides get the same noise (the official `randn_tensor` is
replaced by a queue of ltx_jax's draws) and the official encoder returns its mean, as in
test_conditioning_pipeline.py.
"""

import jax
import numpy as np
import pytest

from builders import LATENT, official_single_file
from conftest import rel_l2
from ltx_jax import Condition, LTXMultiScalePipeline, load_latent_upsampler, load_transformer, \
    load_vae
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.pipeline.conditioning import item_noise
from ltx_jax.sampling import SchedulerConfig
from ltx_jax.sampling.loop import condition_noise
from test_conditioning_pipeline import (SCHEDULER, VAE_T8, NoiseQueue, media, official_media,
                                        texts)
from test_multiscale_official import _ours, official_upsampler

torch = pytest.importorskip('torch')

H, W, FRAMES, FACTOR = 56, 80, 25, 0.6666666
GRID1, GRID2 = (4, 4, 6), (4, 8, 12)  # temporal 8, spatial 8: passes 32 x 48 and 64 x 96
MEDIA = (50, 90)  # every item's media before the crop
SEED = 5
RECIPE = dict(  # dev-like: the second pass runs down to where soft tokens are stepped
    first_pass=dict(num_inference_steps=6, skip_final_inference_steps=2),
    second_pass=dict(num_inference_steps=6, skip_initial_inference_steps=3),
    common=dict(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=[1]))
STEPS = (4, 3)  # steps each pass runs

# Per item: (pixel frames, frame_index, strength), and image_cond_noise_scale. Cases with the
# same number of extra tokens share their compiled passes.
LAYOUTS = {
    'first_frame_0.6': ([(1, 0, 0.6)], 0.15),
    'first_frame_0.85': ([(1, 0, 0.85)], 0.15),
    'soft_keyframes': ([(1, 0, 1.0), (1, 16, 0.7), (1, 24, 0.5)], 0.15),
    # at frame 0 (three latent frames lerped), and later (one written, two appended)
    'soft_segments': ([(17, 0, 0.6), (17, 8, 0.8)], 0.15),
    'hard_image_aspect': ([(1, 0, 1.0)], 0.15),
}


@pytest.fixture(scope='module')
def pipelines(tmp_path_factory):
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline as Official
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  tmp = tmp_path_factory.mktemp('multiscale_conditioning')
  path = tmp / 'ltxv-tiny-t8.safetensors'
  transformer, vae, scheduler = official_single_file(path, SCHEDULER, vae_config=VAE_T8)
  ref_up, up_path = official_upsampler(tmp)
  ref = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler,
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  pipe = LTXPipeline(load_transformer(path), load_vae(path),
                     scheduler=SchedulerConfig.from_official(dict(SCHEDULER)))
  return Official(ref, ref_up), LTXMultiScalePipeline(pipe, load_latent_upsampler(up_path))


def _pass_draws(spec, grid, steps, noise, noise_scale):
  """ltx_jax's draws of one pass in the official order and layouts: the starting noise, each
  later item's extra-token noise, each step's conditioning noise (extra tokens first)."""
  key_noise, key_loop, _ = jax.random.split(jax.random.key(SEED), 3)
  n_video = int(np.prod(grid))
  queue, n_extra = [noise.reshape(1, n_video, LATENT)], 0
  for i, (f, fi, _) in enumerate(spec):
    if fi > 0:
      shape = (1, min((f - 1) // 8 + 1, 2), grid[1], grid[2], LATENT)
      z = np.asarray(item_noise(jax.random.fold_in(key_noise, 1), i, shape))
      queue.append(z.transpose(0, 4, 1, 2, 3))
      n_extra += int(np.prod(shape[1:4]))
  if noise_scale > 0:
    for k in jax.random.split(key_loop, steps):
      z = np.asarray(condition_noise(k, (1, n_video + n_extra, LATENT)))
      queue.append(np.concatenate([z[:, n_video:], z[:, :n_video]], axis=1))
  return queue


def run_both(pipelines, monkeypatch, spec, *, image=False, noise_scale):
  """ltx_jax's multi-scale output (conditions=, or image= for one hard first frame) and the
  official one's final latents [1, F', H', W', C] and frames [1, F, H, W, 3] in [0, 1]."""
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from ltx_video.pipelines import pipeline_ltx_video as official
  ref, ours = pipelines
  pixels = [media(f, *MEDIA, seed=50 + i) for i, (f, _, _) in enumerate(spec)]
  e, m, n, nm = texts(4)
  rng = np.random.default_rng(3)
  noise1 = rng.standard_normal((1, *GRID1, LATENT)).astype(np.float32)
  noise2 = rng.standard_normal((1, *GRID2, LATENT)).astype(np.float32)
  if image:
    conditioning = dict(image=pixels[0][0])
  else:
    conditioning = dict(conditions=[
        Condition(image=p[0], frame_index=fi, strength=s) if f == 1 else
        Condition(video=p, frame_index=fi, strength=s) for p, (f, fi, s) in zip(pixels, spec)])
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, decode_timestep=0.05,
                decode_noise_scale=0.0)
  out = ours(FACTOR, dict(_ours(RECIPE['first_pass']), noise=noise1),
             dict(_ours(RECIPE['second_pass']), noise=noise2), prompt_embeds=e,
             prompt_attention_mask=m, negative_prompt_embeds=n, negative_prompt_attention_mask=nm,
             seed=SEED, image_cond_noise_scale=noise_scale, progress=False,
             **_ours(RECIPE['common']), **common, **conditioning)

  draws = NoiseQueue(_pass_draws(spec, GRID1, STEPS[0], noise1, noise_scale)
                     + _pass_draws(spec, GRID2, STEPS[1], noise2, noise_scale))
  monkeypatch.setattr(official, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  if image:  # image= is diffusers' handling: cover + crop to the output, no blur or CRF
    from ltx_jax.pipeline.inputs import resize_and_crop
    x = resize_and_crop(pixels[0][0].astype(np.float32) / 255, H, W) * 2 - 1
    items = [official.ConditioningItem(torch.from_numpy(x).permute(2, 0, 1)[None, :, None],
                                       0, 1.0)]
  else:
    items = [official.ConditioningItem(official_media(p, 'official', H, W), fi, s)
             for p, (_, fi, s) in zip(pixels, spec)]
  seen = []  # the final latents, as the official decode gets them
  video_pipe = ref.video_pipeline
  tone_map = video_pipe.tone_map_latents
  monkeypatch.setattr(video_pipe, 'tone_map_latents',
                      lambda x, ratio: (seen.append(x.clone()), tone_map(x, ratio))[1])
  t = torch.from_numpy
  with torch.no_grad():
    want = ref(FACTOR, dict(RECIPE['first_pass']), dict(RECIPE['second_pass']),
               prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
               negative_prompt_attention_mask=t(nm), negative_prompt=None,
               generator=torch.Generator().manual_seed(0), output_type='pt', is_video=True,
               vae_per_channel_normalize=True, conditioning_items=items,
               image_cond_noise_scale=noise_scale,
               skip_layer_strategy=official.SkipLayerStrategy.AttentionValues,
               **RECIPE['common'], **common).images
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  return out, seen[0].permute(0, 2, 3, 4, 1).numpy(), want.permute(0, 2, 3, 4, 1).numpy()


def check(name, out, latents, frames):
  err = rel_l2(out.latents, latents)
  diff = np.abs(out.frames.astype(np.float64) - frames * 255)
  close = float(np.mean(diff <= 2.0))
  print(f"{name}: final latents rel L2 {err:.2e}, frames within 2/255 {close:.4f}")
  assert out.frames.shape == (1, FRAMES, H, W, 3)
  assert err < 1e-4
  assert close >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_conditions_match_official_multiscale(pipelines, layout, monkeypatch,
                                              highest_precision):
  spec, noise_scale = LAYOUTS[layout]
  check(layout, *run_both(pipelines, monkeypatch, spec, noise_scale=noise_scale))


@pytest.mark.slow
def test_image_matches_official_multiscale(pipelines, monkeypatch, highest_precision):
  """image= (no conditioning noise) cropped to the output once, then resized per pass."""
  check('image=', *run_both(pipelines, monkeypatch, [(1, 0, 1.0)], image=True, noise_scale=0.0))


@pytest.mark.slow
def test_second_pass_plan_takes_items_as_prepare_does():
  """A plan prepared on placeholder latents and `renoised` with other latents equals the plan
  prepared with those latents, whatever the layout: soft and hard items at frame 0 overlapping
  (an image over a segment), a later keyframe, a later segment; `image=` alike."""
  import jax.numpy as jnp
  from ltx_jax import smoke
  from ltx_jax.errors import UsageError
  pipe = smoke.build_pipeline()
  h, w, frames = 64, 96, 25  # compression 8 x 32: grid (4, 2, 3)
  rng = np.random.default_rng(0)
  pic = lambda n: rng.integers(0, 255, (n, h, w, 3), np.uint8)  # noqa: E731
  call = dict(prompt='a cat', height=h, width=w, num_frames=frames, frame_rate=8.0,
              timesteps=[700.0, 300.0], max_sequence_length=16, progress=False, seed=2,
              condition_preprocessing='none')
  shape = (1, 4, 2, 3, smoke.LATENT)
  clean = rng.standard_normal(shape).astype(np.float32)
  noise = rng.standard_normal(shape).astype(np.float32)
  layouts = {
      'overlap': [Condition(video=pic(17), strength=0.5), Condition(image=pic(1)[0], strength=0.7),
                  Condition(image=pic(1)[0], frame_index=24, strength=0.6),
                  Condition(video=pic(17), frame_index=8, strength=0.8)],
      'hard': [Condition(image=pic(1)[0])],
  }
  for name, conditions in layouts.items():
    want = pipe.prepare(**call, conditions=conditions, latents=clean, noise=noise)
    placeholder = pipe.prepare(**call, conditions=conditions, latents=np.zeros(shape, np.float32),
                               noise=noise)
    got = placeholder.renoised(jnp.asarray(clean), jnp.asarray(noise))
    err = float(jnp.max(jnp.abs(got.latents - want.latents)))
    print(f"{name}: max |renoised - prepared| {err:.1e}")
    assert err < 1e-5, name
    np.testing.assert_array_equal(np.asarray(got.cond_mask), np.asarray(want.cond_mask))
  image = dict(call, condition_preprocessing='official', image=pic(1)[0])
  want = pipe.prepare(**image, latents=clean, noise=noise)
  got = pipe.prepare(**image, latents=np.zeros(shape, np.float32), noise=noise).renoised(
      jnp.asarray(clean), jnp.asarray(noise))
  np.testing.assert_allclose(np.asarray(got.latents), np.asarray(want.latents), atol=1e-6)
  with pytest.raises(UsageError, match=r'media_size=\(64,\) must be \(height, width\)'):
    pipe.prepare(**call, media_size=(64,))


@pytest.mark.slow
def test_media_cropped_for_the_output_then_resized():
  """prepare_media(crop_to=output): inference.py's crop to the output's aspect, then the
  pipeline's bilinear resize to the pass (not a crop to the pass's own aspect)."""
  from test_conditioning_media import _official_loader  # inference.py's, without torchvision
  from ltx_video.pipelines import crf_compressor
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  from PIL import Image
  from ltx_jax.pipeline.conditioning import prepare_media
  img = media(1, *MEDIA, seed=7)
  want = _official_loader(crf_compressor.compress)(Image.fromarray(img[0]), H, W,
                                                   just_crop=True)
  want = LTXVideoPipeline.resize_tensor(want, 32, 48)[0, :, 0].permute(1, 2, 0).numpy()
  got = prepare_media(img, 32, 48, crop_to=(H, W))[0]
  assert rel_l2(got, want) < 1e-5
  assert rel_l2(prepare_media(img, 32, 48)[0], want) > 1e-2  # a crop to the pass's aspect

