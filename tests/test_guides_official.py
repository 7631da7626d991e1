"""Guides (IC-LoRA control) against Lightricks' `LTXVideoPipeline(conditioning_items=...)`:
a guide is appended as extra tokens by the same mechanism as the official pipeline's items after
frame 0 (pixel coordinates shifted by the frame, mask = strength, lerp(noise, latents, strength)
start, conditioning noise on hard tokens). Where the official pipeline appends a whole item (a
single image after frame 0, or a 9-frame segment, whose two latent frames are both its
"prefix"), a guide at the same frame gives the same latents.

Both sides get the same noise and the same encoded media, as in test_conditioning_pipeline.py.
"""

import jax
import numpy as np
import pytest

from builders import LATENT
from conftest import rel_l2
from ltx_jax import Condition, Guide
from ltx_jax.pipeline.conditioning import item_noise
from test_conditioning_pipeline import (FRAMES, GRID, H, STEPS, W, NoiseQueue, media,  # noqa: F401
                                        official_media, run_official_items, setup, texts)

torch = pytest.importorskip('torch')

# Per guide: (pixel frames, frame_index, strength); frame_index may count from the end.
CASES = {  # guide tokens take no conditioning noise (ComfyUI): the official side runs without
    'image_hard': [(1, 12, 1.0)],
    'image_soft': [(1, 20, 0.6)],
    'clip_hard': [(9, 8, 1.0)],
    'clip_soft_from_end': [(9, -9, 0.7)],
    'two_guides': [(9, 8, 0.9), (1, 24, 1.0)],
}

def _run(setup, monkeypatch, guides_spec, first_frame=False):
  """ltx_jax's and the official latents, without conditioning noise (guides take none)."""
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
  from ltx_video.pipelines import pipeline_ltx_video as official
  ref, ours = setup
  pixels = [media(f, H, W, seed=30 + i) for i, (f, _, _) in enumerate(guides_spec)]
  guides = [Guide(image=p[0], frame_index=fi, strength=s) if f == 1 else
            Guide(video=p, frame_index=fi, strength=s)
            for p, (f, fi, s) in zip(pixels, guides_spec)]
  first = media(1, H, W, seed=40)
  conditions = [Condition(image=first[0])] if first_frame else None
  e, m, n, nm = texts(3)
  seed = 9
  start = np.asarray(jax.random.normal(jax.random.key(12), (1, *GRID, LATENT)), np.float32)
  guidance = dict(guidance_scale=3.0, stg_scale=1.0, skip_block_list=[1])
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=STEPS)
  plan = ours.prepare(
      prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
      negative_prompt_attention_mask=nm, latents=start, seed=seed, guides=guides,
      conditions=conditions, condition_preprocessing='none', image_cond_noise_scale=0.0,
      stg_rescale=0.7, progress=False, **common, **guidance)
  got = np.asarray(ours.denoise(plan))
  n_video = int(np.prod(GRID))

  # The noise ltx_jax drew, in the official draw order (items in order) and layouts.
  key_noise = jax.random.split(jax.random.key(seed), 3)[0]
  queue = [start.reshape(1, n_video, LATENT)]
  for i, (f, _, _) in enumerate(guides_spec):
    shape = (1, (f - 1) // 8 + 1, GRID[1], GRID[2], LATENT)
    z = np.asarray(item_noise(jax.random.fold_in(key_noise, 2), i, shape))
    queue.append(z.transpose(0, 4, 1, 2, 3))
  draws = NoiseQueue(queue)
  monkeypatch.setattr(official, 'randn_tensor', draws)
  monkeypatch.setattr(DiagonalGaussianDistribution, 'sample',
                      lambda self, generator=None: self.mode())
  items = ([official.ConditioningItem(official_media(first, 'none', H, W), 0, 1.0)]
           if first_frame else [])
  for p, (_, fi, s) in zip(pixels, guides_spec):
    items.append(official.ConditioningItem(official_media(p, 'none', H, W),
                                           fi + FRAMES if fi < 0 else fi, s))
  want = run_official_items(ref, (e, m, n, nm), items, 0.0, **common, **guidance)
  assert not draws.arrays, f"{len(draws.arrays)} noise draws unused"
  return got, want, plan.latents.shape[1] - n_video


@pytest.mark.parametrize('case', list(CASES))
def test_guides_match_official_appended_items(setup, case, monkeypatch, highest_precision):
  spec = CASES[case]
  got, want, extra = _run(setup, monkeypatch, spec)
  err = rel_l2(got, want)
  print(f"{case}: {extra} guide tokens, rel L2 {err:.2e}")
  assert extra == sum(((f - 1) // 8 + 1) * GRID[1] * GRID[2] for f, _, _ in spec)
  assert err < 2e-5  # measured ~2e-6; a guide 4 frames off gives ~1.5e-4


def test_guide_with_first_frame_condition_matches_official(setup, monkeypatch,
                                                           highest_precision):
  """conditions= (a first frame, replacing latent frame 0) and a guide together."""
  got, want, _ = _run(setup, monkeypatch, [(9, 16, 1.0)], first_frame=True)
  err = rel_l2(got, want)
  print(f"first frame + guide: rel L2 {err:.2e}")
  assert err < 2e-5


def test_guide_tokens_take_no_conditioning_noise(setup):
  """With a hard first-frame condition and image_cond_noise_scale 0.15 the condition's tokens
  are re-noised each step but a strength-1 guide's tokens come out exactly as encoded."""
  from ltx_jax.sampling import loop as loop_lib
  _, ours = setup
  e, m, n, nm = texts(3)
  common = dict(height=H, width=W, num_frames=FRAMES, frame_rate=25, num_inference_steps=STEPS)
  first = media(1, H, W, seed=40)
  plan = ours.prepare(
      prompt_embeds=e, prompt_attention_mask=m, negative_prompt_embeds=n,
      negative_prompt_attention_mask=nm, seed=3, guidance_scale=3.0,
      guides=[Guide(video=media(9, H, W, seed=31), frame_index=8)],
      conditions=[Condition(image=first[0])], condition_preprocessing='none',
      image_cond_noise_scale=0.15, progress=False, **common)
  n_video = int(np.prod(GRID))
  assert plan.spec.noised_tokens == n_video and plan.spec.cond_noise_scale == 0.15
  graph, state = ours._transformer_split
  packed, _ = loop_lib.denoise_jit(plan.spec, graph, state, plan.latents, plan.sigmas,
                                   plan.context, plan.context_mask, plan.guidance, plan.coords,
                                   plan.cond_mask, plan.key, plan.cache)
  packed, start = np.asarray(packed), np.asarray(plan.latents)
  np.testing.assert_array_equal(packed[:, n_video:], start[:, n_video:])  # the guide
  per_frame = GRID[1] * GRID[2]
  assert not np.array_equal(packed[:, :per_frame], start[:, :per_frame])  # noised condition
