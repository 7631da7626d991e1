"""Conditioning items end to end against Lightricks' `LTXVideoPipeline(conditioning_items=...)`:
frame-0 images and segments (hard and soft), keyframes, extension both ways, several items,
placement, with the official media handling (blur + CRF) and conditioning noise on and off.

Both sides get the same noise: the official `randn_tensor` is replaced by a queue holding the
draws ltx_jax makes (starting noise, the extra tokens' noise, each step's conditioning noise),
and the official encoder returns its mean (ltx_jax encodes to the mean; the references sample).
"""

import json

import jax
import numpy as np
import pytest

from builders import LATENT, TEXT_DIM, official_single_file
from conftest import rel_l2
from ltx_jax import Condition, load_transformer, load_vae
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.pipeline.conditioning import item_noise
from ltx_jax.sampling import SchedulerConfig
from ltx_jax.sampling.loop import condition_noise

torch = pytest.importorskip('torch')

H, W, FRAMES = 32, 48, 25
GRID = (4, 4, 6)  # temporal 8, spatial 8
SCHEDULER = dict(_class_name='RectifiedFlowScheduler', num_train_timesteps=1000,
                 shifting='SD3', sampler='Uniform', target_shift_terminal=0.1)
# Temporal compression 8 (the official segment handling hard-codes it), spatial 8.
VAE_T8 = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
    latent_channels=LATENT, norm_layer='pixel_norm', latent_log_var='uniform',
    use_quant_conv=False, scaling_factor=1.0, patch_size=2, encoder_base_channels=4,
    decoder_base_channels=4, spatial_padding_mode='zeros', timestep_conditioning=False,
    causal_decoder=False,
    encoder_blocks=[['compress_all_res', {'multiplier': 2}],
                    ['compress_all_res', {'multiplier': 2}],
                    ['compress_time_res', {'multiplier': 2}]],
    decoder_blocks=[['compress_time', {}], ['compress_all', {}], ['compress_all', {}]])
STEPS = 3


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  path = tmp_path_factory.mktemp('official') / 'ltxv-tiny-t8.safetensors'
  transformer, vae, scheduler = official_single_file(path, SCHEDULER, vae_config=VAE_T8)
  ref = LTXVideoPipeline(
      tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler,
      patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
      prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
      prompt_enhancer_llm_tokenizer=None)
  ours = LTXPipeline(load_transformer(path), load_vae(path),
                     scheduler=SchedulerConfig.from_official(dict(SCHEDULER)))
  assert ours.compression == (8, 8)
  return ref, ours


def media(frames, h, w, seed):
  """Smooth random uint8 frames [F, h, w, 3] (upsampled noise: what a codec expects)."""
  rng = np.random.default_rng(seed)
  small = rng.uniform(0, 255, (frames, h // 4 + 1, w // 4 + 1, 3))
  big = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)[:, :h, :w]
  return np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)


def official_media(frames, preprocessing, height, width):
  """What inference.py hands the official pipeline: [1, 3, F, h, w] in [-1, 1]."""
  from PIL import Image
  from ltx_video.pipelines import crf_compressor
  from test_conditioning_media import _official_loader  # inference.py's, without torchvision
  if preprocessing == 'none':
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None]
    return x / 127.5 - 1.0
  load = _official_loader(crf_compressor.compress)
  return torch.cat([load(Image.fromarray(f), height, width, just_crop=True) for f in frames],
                   dim=2)


# Per item: (pixel frames, frame_index, strength, media_x, media_y); media is frame-sized
# (or 40 x 60 before the official crop + resize), placed items 24 x 32.
LAYOUTS = {
    'first_hard': [(1, 0, 1.0, None, None)],
    'first_soft': [(1, 0, 0.6, None, None)],
    'last_keyframe': [(1, 24, 1.0, None, None)],
    'middle_keyframe': [(1, 12, 0.8, None, None)],
    'extend_forward': [(9, 0, 1.0, None, None)],
    'extend_backward': [(17, 8, 0.9, None, None)],
    'first_last': [(1, 0, 1.0, None, None), (1, 24, 0.7, None, None)],
    'placed': [(1, 0, 1.0, 8, 0)],
}
CASES = ([(k, 'official', 0.15) for k in LAYOUTS] +
         [('first_hard', 'none', 0.0), ('first_last', 'none', 0.15),
          ('first_soft', 'none', 0.0)])


def texts(seed=0, length=6):
  rng = np.random.default_rng(seed)
  e = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  n = rng.standard_normal((1, length, TEXT_DIM)).astype(np.float32)
  return e, np.array([[1, 1, 1, 1, 0, 0]]), n, np.array([[1, 1, 0, 0, 0, 0]])


class NoiseQueue:
  """Replaces the official randn_tensor: hands out the given arrays in order, checking shapes."""

  def __init__(self, arrays):
    self.arrays = list(arrays)

  def __call__(self, shape, generator=None, device=None, dtype=None, **_):
    want = self.arrays.pop(0)
    assert tuple(shape) == want.shape, (tuple(shape), want.shape)
    return torch.from_numpy(np.array(want))


@pytest.mark.parametrize('layout, preprocessing, noise_scale', CASES,
                         ids=[f'{a}-{b}-{c}' for a, b, c in CASES])
def test_matches_official_conditioning_items(setup, layout, preprocessing, noise_scale,
                                             monkeypatch, highest_precision):
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from ltx_video.pipelines import pipeline_ltx_video as official
  ref, ours = setup
  spec = LAYOUTS[layout]
  pixels = []
  for i, (f, _, _, x, y) in enumerate(spec):
    if x is not None or y is not None:
      pixels.append(media(f, 24, 32, seed=i))
    else:
      pixels.append(media(f, H, W, seed=i) if preprocessing == 'none' else
                    media(f, 40, 60, seed=i))
  conditions = [Condition(image=p[0]) if f == 1 else Condition(video=p)
                for p, (f, *_) in zip(pixels, spec)]
  conditions = [Condition(image=c.image, video=c.video, frame_index=fi, strength=s, media_x=x,
                          media_y=y) for c, (_, fi, s, x, y) in zip(conditions, spec)]
  e, m, n, nm = texts()
  seed = 5
  start = np.asarray(jax.random.normal(jax.random.key(11), (1, *GRID, LATENT)), np.float32)
  guidance = dict(guidance_scale=3.0, stg_scale=1.0, skip_block_list=[1])
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25,
                num_inference_steps=STEPS)
  plan = ours.prepare(
      prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
      negative_prompt_attention_mask=nm, latents=start, seed=seed, conditions=conditions,
      condition_preprocessing=preprocessing, image_cond_noise_scale=noise_scale,
      stg_rescale=0.7, progress=False, **common, **guidance)
  got = np.asarray(ours.denoise(plan))
  n_video = int(np.prod(GRID))
  n_extra = plan.latents.shape[1] - n_video

  # The noise ltx_jax drew, in the official draw order and layouts.
  key_noise = jax.random.split(jax.random.key(seed), 3)[0]
  queue = [start.reshape(1, n_video, LATENT)]
  for i, (f, fi, *_) in enumerate(spec):
    if fi > 0:
      lf = min((f - 1) // 8 + 1, 2)
      z = np.asarray(item_noise(jax.random.fold_in(key_noise, 1), i,
                                (1, lf, GRID[1], GRID[2], LATENT)))
      queue.append(z.transpose(0, 4, 1, 2, 3))
  if noise_scale > 0:
    for k in jax.random.split(plan.key, STEPS):
      z = np.asarray(condition_noise(k, plan.latents.shape))
      queue.append(np.concatenate([z[:, n_video:], z[:, :n_video]], axis=1))  # extras first
  draws = NoiseQueue(queue)
  monkeypatch.setattr(official, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  items = []
  for p, (_, fi, s, x, y) in zip(pixels, spec):
    h, w = p.shape[1:3] if x is not None or y is not None else (H, W)
    items.append(official.ConditioningItem(official_media(p, preprocessing, h, w), fi, s, x, y))
  if any(x is not None or y is not None for *_, x, y in spec):
    # __call__ resizes every item to the frame and refuses media_x / media_y there:
    # placement is reachable only past that step.
    monkeypatch.setattr(official.LTXVideoPipeline, '_resize_conditioning_item',
                        staticmethod(lambda item, h, w: item))
  want = run_official_items(ref, (e, m, n, nm), items, noise_scale, **common, **guidance)
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  err = rel_l2(got, want)
  print(f"{layout} {preprocessing} noise {noise_scale}: {n_extra} extra tokens, "
        f"rel L2 {err:.2e}")
  assert err < 1e-4


def run_official_items(ref, texts4, items, noise_scale, **kw) -> np.ndarray:
  """The official pipeline with conditioning items (STG on attention values, rescaling 0.7,
  no decode noise) -> its final latents [B, F', H', W', C]."""
  from ltx_video.pipelines import pipeline_ltx_video as official
  e, m, n, nm = (torch.from_numpy(a) for a in texts4)
  with torch.no_grad():
    out = ref(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
              negative_prompt_attention_mask=nm, negative_prompt=None,
              generator=torch.Generator().manual_seed(0), output_type='latent', is_video=True,
              vae_per_channel_normalize=True, conditioning_items=items,
              image_cond_noise_scale=noise_scale, rescaling_scale=0.7,
              skip_layer_strategy=official.SkipLayerStrategy.AttentionValues,
              decode_timestep=0.05, decode_noise_scale=0.0, **kw).images
  return out.permute(0, 2, 3, 4, 1).numpy()


def test_video_to_video_matches_official(setup, monkeypatch, highest_precision):
  """video= with skip_initial_inference_steps and a first-frame item against media_items."""
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from PIL import Image
  from ltx_video.pipelines import crf_compressor
  from ltx_video.pipelines import pipeline_ltx_video as official
  from test_conditioning_media import _official_loader
  ref, ours = setup
  video = media(FRAMES, 40, 60, seed=21)
  image = media(1, 40, 60, seed=22)
  e, m, n, nm = texts(2)
  noise = np.asarray(jax.random.normal(jax.random.key(6), (1, *GRID, LATENT)), np.float32)
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=4,
                guidance_scale=3.0, stg_scale=0.0,  # the official default is 1.0
                skip_initial_inference_steps=2)
  plan = ours.prepare(prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
                      negative_prompt_attention_mask=nm, video=video, noise=noise,
                      conditions=[Condition(image=image[0])], progress=False, **common)
  assert plan.num_steps == 2
  got = np.asarray(ours.denoise(plan))

  queue = [noise.reshape(1, -1, LATENT)]
  queue += [np.asarray(condition_noise(k, plan.latents.shape))
            for k in jax.random.split(plan.key, plan.num_steps)]
  draws = NoiseQueue(queue)
  monkeypatch.setattr(official, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  load = _official_loader(crf_compressor.compress)
  media_items = torch.cat([load(Image.fromarray(f), H, W, just_crop=False) for f in video], 2)
  t = torch.from_numpy
  with torch.no_grad():
    out = ref(prompt_embeds=t(e), prompt_attention_mask=t(m), negative_prompt_embeds=t(n),
              negative_prompt_attention_mask=t(nm), negative_prompt=None,
              generator=torch.Generator().manual_seed(0), output_type='latent', is_video=True,
              vae_per_channel_normalize=True, media_items=media_items,
              conditioning_items=[official.ConditioningItem(
                  official_media(image, 'official', H, W), 0, 1.0)],
              image_cond_noise_scale=0.15, decode_timestep=0.05, decode_noise_scale=0.0,
              **common).images
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  err = rel_l2(got, out.permute(0, 2, 3, 4, 1).numpy())
  print(f"official video-to-video: rel L2 {err:.2e}")
  assert err < 1e-4
