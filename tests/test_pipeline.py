"""End-to-end generation against diffusers' LTXPipeline and LTXImageToVideoPipeline."""

import numpy as np
import pytest
import torch

from builders import LATENT, TEXT_DIM, tiny_repo
from conftest import rel_l2
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import loop as loop_lib

H, W, FRAMES = 32, 64, 9  # diffusers insists on multiples of 32
GRID = (3, 4, 8)  # latent frames, height, width (VAE compression 4 x 8 x 8)
STEPS = 4


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
  root = tmp_path_factory.mktemp('ltx-tiny')
  torch_parts = tiny_repo(root)
  return root, torch_parts


@pytest.fixture(scope='module')
def pipe(repo):
  return LTXPipeline.from_pretrained(repo[0], allow_custom=True)


def text_inputs(batch, seed=0, length=6):
  rng = np.random.default_rng(seed)
  embeds = rng.standard_normal((batch, length, TEXT_DIM)).astype(np.float32)
  mask = np.ones((batch, length), np.int64)
  mask[0, 4:] = 0
  neg = rng.standard_normal((batch, length, TEXT_DIM)).astype(np.float32)
  neg_mask = np.ones((batch, length), np.int64)
  neg_mask[:, 2:] = 0
  return embeds, mask, neg, neg_mask


def pack(latents_bcfhw):
  """[B, C, F, H, W] torch -> ours [B, F, H, W, C] numpy."""
  return latents_bcfhw.permute(0, 2, 3, 4, 1).numpy()


def diffusers_kwargs(embeds, mask, neg, neg_mask):
  t = torch.from_numpy
  return dict(prompt_embeds=t(embeds), prompt_attention_mask=t(mask),
              negative_prompt_embeds=t(neg), negative_prompt_attention_mask=t(neg_mask),
              height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=STEPS,
              guidance_scale=3.0, guidance_rescale=0.7, decode_timestep=0.05,
              decode_noise_scale=0.0)


def ours_kwargs(embeds, mask, neg, neg_mask):
  return dict(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=neg,
              negative_prompt_attention_mask=neg_mask, height=H, width=W, num_frames=FRAMES,
              frame_rate=25, num_inference_steps=STEPS, guidance_scale=3.0,
              guidance_rescale=0.7, decode_timestep=0.05, decode_noise_scale=0.0,
              progress=False)


def check_frames(ours_u8, theirs_float):
  theirs = np.asarray(theirs_float, np.float64) * 255.0
  off = np.abs(ours_u8.astype(np.float64) - theirs) > 1.0 + 1e-6
  print(f"frames off by more than 1/255: {off.mean():.2%}")
  assert off.mean() <= 0.01, off.mean()


def test_text_to_video_parity(repo, pipe, highest_precision):
  from diffusers import LTXPipeline as Reference
  _, (transformer, vae, _, scheduler) = repo
  ref = Reference(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                  transformer=transformer)
  batch = 2
  texts = text_inputs(batch)
  noise = torch.randn((batch, LATENT, *GRID), generator=torch.Generator().manual_seed(0))
  packed = noise.permute(0, 2, 3, 4, 1).reshape(batch, -1, LATENT)
  with torch.no_grad():
    want_latents = ref(latents=packed, output_type='latent',
                       **diffusers_kwargs(*texts)).frames.numpy()
    want_frames = ref(latents=packed, output_type='np', **diffusers_kwargs(*texts)).frames
  out = pipe(latents=pack(noise), **ours_kwargs(*texts))
  assert out.latents.shape == (batch, *GRID, LATENT)
  err = rel_l2(out.latents.reshape(batch, -1, LATENT), want_latents)
  print(f"t2v latents rel L2 {err:.2e}")
  assert err < 1e-4
  assert out.frames.dtype == np.uint8 and out.frames.shape == (batch, FRAMES, H, W, 3)
  check_frames(out.frames, want_frames)


def test_image_to_video_parity(repo, pipe, highest_precision):
  from diffusers import LTXImageToVideoPipeline as Reference
  from PIL import Image
  _, (transformer, vae, _, scheduler) = repo
  ref = Reference(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                  transformer=transformer)
  rng = np.random.default_rng(5)
  yy, xx = np.mgrid[0:H, 0:W]
  pixels = np.stack([128 + 100 * np.sin(xx / 3), 128 + 90 * np.cos(yy / 4),
                     rng.integers(0, 255, (H, W))], -1).astype(np.uint8)
  image = Image.fromarray(pixels)
  texts = text_inputs(1, seed=3)
  noise = torch.randn((1, LATENT, *GRID), generator=torch.Generator().manual_seed(1))
  # diffusers uses given latents as they are: put the encoded image in frame 0 ourselves,
  # with diffusers' own VAE (mode of the posterior) and normalisation.
  with torch.no_grad():
    x = torch.from_numpy(pixels).float().div(127.5).sub(1).permute(2, 0, 1)[None, :, None]
    init = vae.encode(x).latent_dist.mode()
    init = (init - vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.latents_std.view(1, -1, 1, 1, 1)
    start = noise.clone()
    start[:, :, :1] = init
    packed = start.permute(0, 2, 3, 4, 1).reshape(1, -1, LATENT)
    want = ref(image=image, latents=packed, output_type='latent',
               **diffusers_kwargs(*texts)).frames.numpy()
    want_frames = ref(image=image, latents=packed, output_type='np',
                      **diffusers_kwargs(*texts)).frames
  out = pipe(image=image, latents=pack(noise), **ours_kwargs(*texts))
  err = rel_l2(out.latents.reshape(1, -1, LATENT), want)
  print(f"i2v latents rel L2 {err:.2e}")
  assert err < 1e-4
  check_frames(out.frames, want_frames)


def test_prompt_path_matches_t5(repo, pipe, highest_precision):
  import sentencepiece as spm
  root, (_, _, text_encoder, _) = repo
  sp = spm.SentencePieceProcessor(model_file=str(root / 'tokenizer' / 'spiece.model'))
  prompts = ['a cat sits on the mat', 'waves at sunset']
  ids = np.zeros((2, 16), np.int64)
  mask = np.zeros((2, 16), np.int64)
  for i, p in enumerate(prompts):
    pieces = sp.encode(p) + [1]
    ids[i, :len(pieces)] = pieces
    mask[i, :len(pieces)] = 1
  with torch.no_grad():
    want = text_encoder(input_ids=torch.from_numpy(ids),
                        attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  embeds, got_mask = pipe.encode_prompt(prompts, max_sequence_length=16)
  np.testing.assert_array_equal(np.asarray(got_mask), mask)
  assert rel_l2(embeds, want) < 1e-5
  out = pipe(prompt=prompts, negative_prompt='dog', height=H, width=W, num_frames=FRAMES,
             num_inference_steps=2, max_sequence_length=16, output_type='latent',
             progress=False)
  assert out.frames is None and np.all(np.isfinite(out.latents))


def test_one_compile_and_determinism(pipe):
  kw = dict(height=H, width=W, num_frames=FRAMES, output_type='latent', progress=False,
            max_sequence_length=16)
  before = loop_lib.denoise_jit._cache_size()
  a = pipe(prompt='a cat', seed=1, guidance_scale=3.0, num_inference_steps=3, **kw)
  b = pipe(prompt='the dog runs', seed=2, guidance_scale=4.5, guidance_rescale=0.3,
           timesteps=[1000.0, 700.0, 300.0], **kw)
  assert loop_lib.denoise_jit._cache_size() == before + 1
  c = pipe(prompt='a cat', seed=1, guidance_scale=3.0, num_inference_steps=3, **kw)
  np.testing.assert_array_equal(a.latents, c.latents)
  assert not np.allclose(a.latents, b.latents)
  d = pipe(prompt='a cat', seed=7, guidance_scale=3.0, num_inference_steps=3, **kw)
  assert not np.allclose(a.latents, d.latents)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_frames=10), r'num_frames=10 .*4N\+1 .*nearest valid: 9 or 13'),
    (dict(height=20), r'height=20 .*multiple of 8 .*nearest valid: 16 or 24'),
    (dict(width=0), r'width=0 .*nearest valid: 8'),
    (dict(guidance_scale=float('nan')), r'guidance_scale=nan'),
    (dict(guidance_scale=-1.0), r'guidance_scale=-1.0'),
    (dict(image='/nonexistent/cat.png'), r"cannot read image '/nonexistent/cat.png'"),
    (dict(prompt=None, prompt_embeds=np.zeros((1, 4, TEXT_DIM + 1), np.float32),
          prompt_attention_mask=np.ones((1, 4))), r'prompt_embeds have 33 channels'),
    (dict(output_type='pil'), r"output_type='pil'"),
])
def test_bad_inputs(pipe, kwargs, message):
  base = dict(prompt='a cat', height=H, width=W, num_frames=FRAMES, num_inference_steps=2,
              progress=False)
  base.update(kwargs)
  with pytest.raises(ValueError, match=message):
    pipe(**base)
