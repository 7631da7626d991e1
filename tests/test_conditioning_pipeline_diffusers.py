"""Conditioning items and video-to-video against diffusers' `LTXConditionPipeline`.

Both sides get the same noise: diffusers' `randn_tensor` is replaced by a queue holding the
draws ltx_jax makes, and the encoder returns its mean (ltx_jax encodes to the mean).
"""

import jax
import numpy as np
import pytest

from builders import LATENT, SCHEDULER, TEXT_DIM, tiny_repo
from conftest import rel_l2
from ltx_jax import Condition, load_transformer, load_vae
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.pipeline.conditioning import item_noise
from ltx_jax.sampling import SchedulerConfig
from ltx_jax.sampling.loop import condition_noise

torch = pytest.importorskip('torch')

H, W, FRAMES = 32, 64, 9
GRID = (3, 4, 8)  # VAE compression 4 x 8 x 8
TIMESTEPS = [1000.0, 800.0, 550.0, 250.0]
# Explicit timesteps: LTXConditionPipeline passes no `mu`, so no dynamic shifting.
STATIC = dict(SCHEDULER, use_dynamic_shifting=False, shift_terminal=None)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline
  root = tmp_path_factory.mktemp('ltx-tiny-cond')
  transformer, vae, _, _ = tiny_repo(root)
  scheduler = FlowMatchEulerDiscreteScheduler(**STATIC)
  ref = LTXConditionPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                             transformer=transformer)
  ours = LTXPipeline(load_transformer(root / 'transformer'), load_vae(root / 'vae'),
                     scheduler=SchedulerConfig.from_diffusers(dict(scheduler.config)))
  return ref, ours


def frames_of(n, h, w, seed):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  out = [np.stack([128 + 100 * np.sin(xx / 3 + k), 128 + 90 * np.cos(yy / 4 - k),
                   rng.integers(0, 255, (h, w))], -1) for k in range(n)]
  return np.stack(out).astype(np.uint8)


def texts(seed=0, length=6):
  rng = np.random.default_rng(seed)
  e = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  n = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  return e, np.array([[1, 1, 1, 1, 0, 0]]), n, np.array([[1, 1, 0, 0, 0, 0]])


class NoiseQueue:
  def __init__(self, arrays):
    self.arrays = list(arrays)

  def __call__(self, shape, generator=None, device=None, dtype=None, **_):
    want = self.arrays.pop(0)
    assert tuple(shape) == want.shape, (tuple(shape), want.shape)
    return torch.from_numpy(np.array(want))


# Per item: (pixel frames, frame_index, strength); media 40 x 80, Lanczos-resized to 32 x 64.
LAYOUTS = {
    'image': [(1, 0, 1.0)],
    'image_keyframe': [(1, 0, 1.0), (1, 8, 0.8)],
    'video_strength': [(5, 0, 0.7)],
    'video_later': [(5, 4, 0.9)],
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_matches_diffusers_conditions(setup, layout, monkeypatch, highest_precision):
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from diffusers.pipelines.ltx import pipeline_ltx_condition as ref_module
  from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
  from PIL import Image
  ref, ours = setup
  spec = LAYOUTS[layout]
  pixels = [frames_of(f, 40, 80, seed=i) for i, (f, _, _) in enumerate(spec)]
  conditions = [Condition(image=p[0], frame_index=fi, strength=s) if f == 1 else
                Condition(video=p, frame_index=fi, strength=s)
                for p, (f, fi, s) in zip(pixels, spec)]
  e, m, n, nm = texts()
  seed = 3
  start = np.asarray(jax.random.normal(jax.random.key(2), (1, *GRID, LATENT)), np.float32)
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, timesteps=TIMESTEPS,
                guidance_scale=3.0, guidance_rescale=0.5)
  plan = ours.prepare(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
                      negative_prompt_attention_mask=nm, latents=start, seed=seed,
                      conditions=conditions, condition_preprocessing='diffusers',
                      image_cond_noise_scale=0.15, progress=False, **common)
  got = np.asarray(ours.denoise(plan))
  n_video = int(np.prod(GRID))

  key_noise = jax.random.split(jax.random.key(seed), 3)[0]
  queue = [start.transpose(0, 4, 1, 2, 3)]
  for i, (f, fi, _) in enumerate(spec):
    if fi > 0:
      lf = min((f - 1) // 4 + 1, 2)
      z = item_noise(jax.random.fold_in(key_noise, 1), i, (1, lf, GRID[1], GRID[2], LATENT))
      queue.append(np.asarray(z).transpose(0, 4, 1, 2, 3))
  for k in jax.random.split(plan.key, len(TIMESTEPS)):
    z = np.asarray(condition_noise(k, plan.latents.shape))
    queue.append(np.concatenate([z[:, n_video:], z[:, :n_video]], axis=1))
  draws = NoiseQueue(queue)
  monkeypatch.setattr(ref_module, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  ref_conditions = [
      LTXVideoCondition(image=Image.fromarray(p[0]), frame_index=fi, strength=s) if f == 1
      else LTXVideoCondition(video=[Image.fromarray(x) for x in p], frame_index=fi,
                             strength=s)
      for p, (f, fi, s) in zip(pixels, spec)]
  t = torch.from_numpy
  with torch.no_grad():
    want = ref(conditions=ref_conditions, prompt_embeds=t(e), prompt_attention_mask=t(m),
               negative_prompt_embeds=t(n), negative_prompt_attention_mask=t(nm),
               image_cond_noise_scale=0.15, output_type='latent', **common).frames
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  want = want[:, :n_video].numpy().reshape(1, *GRID, LATENT) if want.ndim == 3 else \
      want.permute(0, 2, 3, 4, 1).numpy()
  err = rel_l2(got, want)
  print(f"{layout}: rel L2 {err:.2e}")
  assert err < 1e-4


@pytest.mark.parametrize('with_image', [False, True], ids=['video', 'video+first_frame'])
def test_video_to_video_matches_diffusers(setup, with_image, monkeypatch, highest_precision):
  """ltx_jax's video= with denoise_strength against diffusers given the video's latents."""
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from diffusers.pipelines.ltx import pipeline_ltx_condition as ref_module
  from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
  from PIL import Image
  ref, ours = setup
  video = frames_of(FRAMES + 2, 40, 80, seed=7)  # longer than needed: the first FRAMES count
  image = frames_of(1, 40, 80, seed=8)[0]
  e, m, n, nm = texts(1)
  noise = np.asarray(jax.random.normal(jax.random.key(4), (1, *GRID, LATENT)), np.float32)
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, timesteps=TIMESTEPS,
                guidance_scale=3.0)
  conditions = [Condition(image=image)] if with_image else None
  plan = ours.prepare(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
                      negative_prompt_attention_mask=nm, video=video, noise=noise,
                      denoise_strength=0.5, conditions=conditions,
                      condition_preprocessing='diffusers', image_cond_noise_scale=0.15,
                      progress=False, **common)
  assert plan.num_steps == 2
  got = np.asarray(ours.denoise(plan))

  queue = [noise.transpose(0, 4, 1, 2, 3)]
  if with_image:
    for k in jax.random.split(plan.key, plan.num_steps):
      queue.append(np.asarray(condition_noise(k, plan.latents.shape)))
  draws = NoiseQueue(queue)
  monkeypatch.setattr(ref_module, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  with torch.no_grad():
    pixels = ref.video_processor.preprocess_video(
        [Image.fromarray(f) for f in video[:FRAMES]], H, W)
    z = ref.vae.encode(pixels).latent_dist.mode()
    z = ref._normalize_latents(z, ref.vae.latents_mean, ref.vae.latents_std)
    kw = dict(conditions=[LTXVideoCondition(image=Image.fromarray(image))]) if with_image \
        else {}
    t = torch.from_numpy
    want = ref(prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
               negative_prompt_attention_mask=t(nm), latents=z, denoise_strength=0.5,
               image_cond_noise_scale=0.15, output_type='latent', **kw, **common).frames
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  want = want.permute(0, 2, 3, 4, 1).numpy() if want.ndim == 5 else \
      want.numpy().reshape(1, *GRID, LATENT)
  err = rel_l2(got, want)
  print(f"video-to-video (image {with_image}): rel L2 {err:.2e}")
  assert err < 1e-4
