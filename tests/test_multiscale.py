"""`LTXMultiScalePipeline` pieces: the final bilinear resize against torch, building it from a
source with an upsampler beside the model, a distilled file's `allowed_inference_steps`, and
argument errors before anything compiles. (Parity of whole runs: test_multiscale_official.py.)"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from source_layouts import layouts
from test_upsampler import CONFIGS, official_model, write_official
from ltx_jax import LTXMultiScalePipeline, UsageError, smoke
from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_jax.pipeline.multiscale import resize_frames
from ltx_jax.weights import write_safetensors
from flax import nnx

ALLOWED = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]


@pytest.mark.parametrize('size', [(48, 72), (64, 96), (10, 130), (5, 7)])
def test_resize_is_torch_bilinear(size):
  import torch.nn.functional as F
  frames = np.random.default_rng(0).uniform(size=(2, 3, 32, 48, 3)).astype(np.float32)
  want = F.interpolate(torch.from_numpy(frames).permute(0, 1, 4, 2, 3).reshape(6, 3, 32, 48),
                       size=size, mode='bilinear', align_corners=False)
  want = want.reshape(2, 3, 3, *size).permute(0, 1, 3, 4, 2).numpy()
  got = np.asarray(resize_frames(jnp.asarray(frames), *size))
  np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """The tiny official single-file layout with a spatial upscaler beside it, and a copy of the
  checkpoint whose metadata lists allowed_inference_steps (as the distilled files do)."""
  base = layouts(tmp_path_factory.getbasetemp() / 'layouts')['single']
  folder = tmp_path_factory.mktemp('single_upsampler')
  for p in base.iterdir():
    (folder / p.name).symlink_to(p)
  write_official(folder / 'ltxv-spatial-upscaler-0.9.8.safetensors',
                 official_model(CONFIGS['spatial_3d']), CONFIGS['spatial_3d'])
  from safetensors import safe_open
  with safe_open(str(base / 'ltxv-tiny.safetensors'), 'np') as f:
    meta = json.loads(f.metadata()['config'])
  distilled = tmp_path_factory.mktemp('distilled')
  for p in folder.iterdir():
    if p.name != 'ltxv-tiny.safetensors':
      (distilled / p.name).symlink_to(p.resolve())
  write_safetensors(distilled / 'ltxv-tiny.safetensors', load_file(base / 'ltxv-tiny.safetensors'),
                    {'config': json.dumps(dict(meta, allowed_inference_steps=ALLOWED))})
  return folder, distilled


def test_from_pretrained_finds_the_upsampler(single, tmp_path):
  folder, _ = single
  multi = LTXMultiScalePipeline.from_pretrained(folder, allow_custom=True)
  assert multi.upsampler.config.mid_channels == CONFIGS['spatial_3d']['mid_channels']
  assert multi.pipe.allowed_inference_steps is None
  bare = tmp_path / 'bare'
  bare.mkdir()
  for p in folder.iterdir():
    if 'upscaler' not in p.name:
      (bare / p.name).symlink_to(p.resolve())
  with pytest.raises(UsageError, match='no latent upsampler found beside the model; pass '
                                       'upsampler=PATH'):
    LTXMultiScalePipeline.from_pretrained(bare, allow_custom=True)
  given = LTXMultiScalePipeline.from_pretrained(
      bare, allow_custom=True, upsampler=folder / 'ltxv-spatial-upscaler-0.9.8.safetensors')
  assert given.upsampler.config == multi.upsampler.config


def test_allowed_inference_steps(single):
  _, distilled = single
  multi = LTXMultiScalePipeline.from_pretrained(distilled, allow_custom=True)
  pipe = multi.pipe
  assert pipe.allowed_inference_steps == tuple(ALLOWED)
  call = dict(prompt='a cat', height=64, width=64, num_frames=9, max_sequence_length=16,
              guidance_scale=1.0, progress=False)
  plan = pipe.prepare(**call, timesteps=[1000.0, 993.7, 909.4, 725.0])
  assert plan.num_steps == 4
  # 8 linear-quadratic steps are the distilled schedule.
  assert pipe.prepare(**call, num_inference_steps=8).num_steps == 8
  seen = []
  pipe.timer = lambda stage: (seen.append(stage), __import__('contextlib').nullcontext())[1]
  with pytest.raises(UsageError, match=r"timesteps \[950\.0\] are not among this distilled "
                                       r"checkpoint's allowed inference steps .*\[1000\.0, 993\.7"):
    pipe.prepare(**call, timesteps=[1000.0, 950.0, 725.0])
  seen.clear()
  with pytest.raises(UsageError, match='allowed inference steps'):
    pipe.prepare(**call, num_inference_steps=6)
  assert 'text_encoding' not in seen  # refused before T5 (and before any compile)
  seen.clear()
  with pytest.raises(UsageError, match=r'\[900\.0\] are not among'):  # the second pass's too
    multi(0.5, dict(timesteps=[1000.0, 725.0]), dict(timesteps=[900.0]), **call)
  assert seen == []


def test_argument_errors():
  pipe = smoke.build_pipeline()
  up = LatentUpsampler(UpsamplerConfig(in_channels=smoke.LATENT, mid_channels=32,
                                       num_blocks_per_stage=1), rngs=nnx.Rngs(0))
  multi = LTXMultiScalePipeline(pipe, up)
  call = dict(prompt='a cat', height=128, width=128, num_frames=9, max_sequence_length=16,
              progress=False)
  steps = dict(timesteps=[1000.0, 500.0])
  bad = [
      ((0.5, dict(steps, height=64), steps), 'first_pass sets height; the multi-scale recipe'),
      ((0.5, steps, dict(steps, heigth=64)), 'second_pass: heigth are no LTXPipeline'),
      ((1.5, steps, steps), r'downscale_factor=1.5 must be a number in \(0, 1\]'),
      ((0.1, steps, steps), 'height 128 x downscale_factor 0.1 is below 32'),
      ((0.5, steps, [1]), 'second_pass must be a dict'),
      ((0.5, dict(steps, media_size=(64, 64)), steps), 'first_pass sets media_size'),
  ]
  for args, match in bad:
    with pytest.raises(UsageError, match=match):
      multi(*args, **call)
  with pytest.raises(UsageError, match='media_size is set by the multi-scale recipe'):
    multi(0.5, steps, steps, **call, media_size=(128, 128))
  with pytest.raises(UsageError, match='tone_map_compression_ratio=2'):
    multi(0.5, steps, dict(steps, tone_map_compression_ratio=2), **call)
  with pytest.raises(UsageError, match='spatial-only latent upsampler'):
    LTXMultiScalePipeline(pipe, LatentUpsampler(
        UpsamplerConfig(in_channels=smoke.LATENT, mid_channels=32, num_blocks_per_stage=1,
                        temporal_upsample=True), rngs=nnx.Rngs(0)))
  # A small run: the second pass is at twice the first's size, frames at the requested size.
  out = multi(0.5, steps, dict(timesteps=[700.0, 300.0]), **call, output_type='np')
  assert out.latents.shape == (1, 2, 4, 4, smoke.LATENT)
  assert out.frames.shape == (1, 9, 128, 128, 3) and out.frames.dtype == np.uint8
