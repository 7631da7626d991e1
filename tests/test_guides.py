"""Guides (IC-LoRA control): the rules (frames -> token positions, strength -> mask, guide tokens
after the video's and dropped before decoding), every refusal (before any compile), the
multi-scale pass-through and the command line end to end. Parity with the official pipeline's
appended tokens: test_guides_official.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from ltx_jax import (Condition, DataError, Guide, LTXMultiScalePipeline, LTXError, UsageError,
                     smoke, video_io)
from ltx_jax.cli import config as config_lib
from ltx_jax.models.transformer.rope import token_coords
from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx_jax.pipeline import guides as guides_lib
from ltx_jax.pipeline.conditioning import prepare_media

ROOT = Path(__file__).resolve().parents[1]
H, W, FRAMES = 64, 96, 25
CALL = dict(prompt='a cat', height=H, width=W, num_frames=FRAMES, frame_rate=8.0,
            timesteps=[1000.0, 500.0], guidance_scale=1.0, max_sequence_length=16, seed=3,
            progress=False)


def clip(frames, h=H, w=W, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def pipe():
  return smoke.build_pipeline()


# -- the rules ---------------------------------------------------------------------------------

def test_resolve_frame_counts_negative_indices_from_the_end():
  assert [guides_lib.resolve_frame(i, 25) for i in (0, 7, -1, -9, -25)] == [0, 7, 24, 16, 0]


@pytest.mark.parametrize('causal', [True, False])
def test_positions_mask_and_start_of_guide_tokens(causal):
  rate, grid, c = 25.0, (4, 2, 3), 4
  n = int(np.prod(grid))
  rng = np.random.default_rng(0)
  video = rng.standard_normal((1, n, c)).astype(np.float32)
  grid_coords = token_coords(grid, 8, 32, rate, causal)  # [1, 3, n]
  zs = [rng.standard_normal((1, f, 2, 3, c)).astype(np.float32) for f in (3, 2, 1)]
  items = [guides_lib.EncodedGuide(zs[0], 0, 1.0),    # 17 frames at frame 0
           guides_lib.EncodedGuide(zs[1], 8, 0.5),    # 9 frames at frame 8
           guides_lib.EncodedGuide(zs[2], 13, 0.25)]  # an image at frame 13
  noise = [rng.standard_normal(z.shape).astype(np.float32) for z in zs]
  lat, coords, mask = guides_lib.append_guides(video, grid_coords, None, items, noise,
                                               frame_rate=rate, temporal=8, spatial=32,
                                               causal=causal)
  sizes = [18, 12, 6]
  assert lat.shape == (1, n + 36, c) and coords.shape == (1, 3, n + 36)
  assert mask.shape == (1, n + 36)
  # The video's tokens come first, unchanged and free.
  np.testing.assert_array_equal(lat[:, :n], video)
  np.testing.assert_array_equal(coords[:, :, :n], grid_coords)
  np.testing.assert_array_equal(mask[:, :n], 0)
  a, b, i = n, n + sizes[0], n + sizes[0] + sizes[1]
  # At frame 0 a guide's latent frame k sits exactly where the video's latent frame k does.
  np.testing.assert_array_equal(coords[:, :, a:b], grid_coords[:, :, :18])
  # At frame 8: latent 0 (one pixel frame) at frame 8; latent 1 at frame 8 + (8 + 1 - 8) causal
  # (the video's latent frame 2), at 8 + 8 otherwise.
  second = 8 + (1 if causal else 8)
  np.testing.assert_array_equal(coords[0, 0, b:b + 6], np.float32(8) * np.float32(1 / rate))
  np.testing.assert_array_equal(coords[0, 0, b + 6:i],
                                np.float32(second) * np.float32(1 / rate))
  if causal:
    np.testing.assert_array_equal(coords[:, :, b + 6:i], grid_coords[:, :, 12:18])
  np.testing.assert_array_equal(coords[0, 0, i:], np.float32(13) * np.float32(1 / rate))
  for lo, hi in ((a, b), (b, i), (i, n + 36)):  # rows and columns: the grid's
    np.testing.assert_array_equal(coords[:, 1:, lo:hi], grid_coords[:, 1:, :hi - lo])
  # Mask = strength; start = lerp(noise, guide, strength), exactly the guide at 1.
  np.testing.assert_array_equal(mask[0, a:b], 1.0)
  np.testing.assert_array_equal(mask[0, b:i], 0.5)
  np.testing.assert_array_equal(mask[0, i:], 0.25)
  np.testing.assert_array_equal(lat[:, a:b], zs[0].reshape(1, -1, c))
  for (lo, hi), z, e, s in (((b, i), zs[1], noise[1], 0.5), ((i, n + 36), zs[2], noise[2], 0.25)):
    np.testing.assert_allclose(lat[:, lo:hi], (e + s * (z - e)).reshape(1, -1, c), atol=1e-6)
  # An existing conditioning mask is kept.
  prior = np.full((1, n), 0.3, np.float32)
  _, _, mask2 = guides_lib.append_guides(video, grid_coords, prior, items[:1], noise[:1],
                                         frame_rate=rate, causal=causal)
  np.testing.assert_array_equal(mask2[:, :n], prior)


def test_guides_are_appended_never_replacing_and_dropped_before_decode(pipe):
  control = clip(17, 50, 70, seed=1)  # another size and aspect: crop + resize
  last = clip(1, seed=2)[0]
  guides = [Guide(video=control), Guide(image=last, frame_index=-1, strength=0.5)]
  plain = pipe.prepare(**CALL)
  plan = pipe.prepare(**CALL, guides=guides)
  n = plan.video_tokens
  per_frame = plan.grid[1] * plan.grid[2]
  assert plan.latents.shape[1] == n + 3 * per_frame + per_frame
  # The video's own tokens are untouched: same start, coordinates, free.
  np.testing.assert_array_equal(np.asarray(plan.latents[:, :n]), np.asarray(plain.latents))
  np.testing.assert_array_equal(np.asarray(plan.coords[:, :, :n]), np.asarray(plain.coords))
  assert plain.cond_mask is None and not plain.spec.conditioned
  mask = np.asarray(plan.cond_mask)
  np.testing.assert_array_equal(mask[:, :n], 0)
  np.testing.assert_array_equal(mask[:, n:n + 3 * per_frame], 1.0)
  np.testing.assert_array_equal(mask[:, n + 3 * per_frame:], 0.5)
  assert plan.spec.cond_noise_scale == 0.0  # guide tokens take no conditioning noise
  # The guide's tokens at strength 1 are its VAE latents after the crop + resize to H x W.
  pixels = prepare_media(control, H, W, rule='official', blur=False, crf=None)
  assert pixels.shape == (17, H, W, 3)
  z = pipe.vae.normalize(pipe.vae.encode(jax.numpy.asarray(pixels)[None]))
  np.testing.assert_allclose(np.asarray(plan.latents[:, n:n + 3 * per_frame]),
                             np.asarray(z).reshape(1, -1, z.shape[-1]), atol=1e-5)
  # Frame-sized media are used as they are.
  same = guides_lib.load_guides([Guide(image=last)], FRAMES, H, W)[0][2]
  np.testing.assert_allclose(same[0], last / np.float32(127.5) - 1, atol=1e-6)
  # Shared by every video of a batch.
  two = pipe.prepare(**CALL, guides=guides[:1], num_videos_per_prompt=2)
  assert two.latents.shape == (2, n + 3 * per_frame, plan.latents.shape[-1])
  np.testing.assert_array_equal(np.asarray(two.latents[0, n:]), np.asarray(two.latents[1, n:]))
  # unpack (what denoise returns and decode reads) is the video's grid only.
  assert plan.unpack(plan.latents).shape == (1, *plan.grid, plan.latents.shape[-1])
  one = dict(CALL, timesteps=[1000.0], output_type='latent')  # decoding: the CLI test
  out = pipe(**one, guides=guides)
  assert out.latents.shape == (1, *plan.grid, plan.latents.shape[-1])
  assert not np.allclose(out.latents, pipe(**one).latents)  # the guides take part


def test_multi_scale_passes_guides_to_both_passes(pipe, monkeypatch):
  up = LatentUpsampler(UpsamplerConfig(in_channels=smoke.LATENT, mid_channels=32,
                                       num_blocks_per_stage=1), rngs=nnx.Rngs(0))
  multi = LTXMultiScalePipeline(pipe, up)
  guides = [Guide(video=clip(9, 40, 40, seed=3))]
  plans = []

  def denoise(plan):  # records the plans; the loop itself is tested elsewhere
    plans.append(plan)
    return plan.unpack(plan.latents), np.ones(plan.num_steps, bool)
  monkeypatch.setattr(pipe, '_denoise', denoise)
  call = dict(prompt='a cat', height=64, width=64, num_frames=9, max_sequence_length=16,
              progress=False)
  out = multi(0.5, dict(timesteps=[1000.0]), dict(timesteps=[700.0]), **call, guides=guides,
              output_type='latent')
  assert out.latents.shape == (1, 2, 2, 2, smoke.LATENT)
  first, second = plans
  for plan, (h, w) in ((first, (1, 1)), (second, (2, 2))):
    assert plan.grid == (2, h, w)
    assert plan.latents.shape[1] == 2 * 2 * h * w  # the video, then a 2-latent-frame guide
    np.testing.assert_array_equal(np.asarray(plan.cond_mask[:, plan.video_tokens:]), 1.0)
  # The second pass's guide: encoded at its own size, kept through the re-noising.
  alone = pipe.prepare(**dict(call, timesteps=[700.0]), guides=guides)
  n = second.video_tokens
  np.testing.assert_allclose(np.asarray(second.latents[:, n:]), np.asarray(alone.latents[:, n:]),
                             atol=1e-6)


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'Guide needs exactly one of image= and video=, got neither'),
    (dict(video=clip(9), image=clip(1)[0]), 'got both'),
    (dict(video=clip(9), strength=1.5), r'strength=1.5 must be a number in \[0, 1\]'),
    (dict(video=clip(9), strength=-0.1), 'strength=-0.1'),
    (dict(video=clip(9), strength=True), 'strength=True'),
    (dict(video=clip(9), strength='high'), 'strength=\'high\''),
    (dict(video=clip(9), frame_index=1.0), 'frame_index=1.0 must be an int'),
    (dict(video=clip(9), frame_index=True), 'frame_index=True'),
    (dict(video=clip(9).astype(np.float32)), r'video array must be uint8 \[F, H, W, 3\]'),
    (dict(image=clip(2)), r'image array must be uint8 \[H, W, 3\]'),
])
def test_guide_refuses_bad_values(kwargs, match):
  with pytest.raises(UsageError, match=match) as e:
    Guide(**kwargs)
  assert '\n' not in str(e.value)


def test_prepare_refuses_guides_that_do_not_fit_before_any_work(pipe, tmp_path):
  stages = []

  class Record:
    def __init__(self, stage):
      stages.append(stage)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

  cases = [
      (dict(guides=[Guide(video=clip(9), frame_index=25)]),
       r'frame_index=25 is outside the 25-frame video \(allowed: -25..24\)'),
      (dict(guides=[Guide(image=clip(1)[0], frame_index=-26)]), 'frame_index=-26 is outside'),
      (dict(guides=[Guide(video=clip(10))]), 'a guide of 10 frames is not 8N\\+1 \\(trim it to 9'),
      (dict(guides=[Guide(video=clip(9), frame_index=4)]),
       'starts at frame 0 or on a multiple of 8, got frame 4'),
      (dict(guides=[Guide(video=clip(9), frame_index=-10)]), r'got frame 15 \(frame_index=-10\)'),
      (dict(guides=[Guide(video=clip(17), frame_index=16)]),
       r'17 frames from frame 16 run past the end of the 25-frame video \(last start: 8\)'),
      (dict(guides=[Guide(video=clip(9)), Guide(video=clip(9), frame_index=24)]),
       r'guide 1 \(video ndarray\): 9 frames from frame 24'),
      (dict(guides='depth.mp4'), 'guides must be a list of ltx_jax.Guide, got str'),
      (dict(guides=[Condition(video=clip(9))]), r'guides\[0\] is a Condition'),
      (dict(guides=[Guide(video=clip(9))], image=clip(1)[0]), 'pass image= or guides='),
      (dict(guides=[Guide(video=clip(9))], image_cond_noise_scale=-1.0),
       'image_cond_noise_scale=-1.0'),
      (dict(guides=[Guide(video=str(tmp_path / 'none.mp4'))]), 'no such file'),
  ]
  before, pipe.timer = pipe.timer, Record
  try:
    for kwargs, match in cases:
      stages.clear()
      with pytest.raises(LTXError, match=match) as e:
        pipe.prepare(**CALL, **kwargs)
      assert '\n' not in str(e.value), str(e.value)
      assert isinstance(e.value, (UsageError, DataError))
      assert stages == ['prepare'], (match, stages)  # no text encoding, no VAE, no compile
  finally:
    pipe.timer = before


# -- the command line --------------------------------------------------------------------------

def _config(tmp_path, **kw):
  c = config_lib.base_config(preset='')
  c.model.source, c.output_dir = config_lib.SMOKE, str(tmp_path / 'out')
  c.height, c.width, c.num_frames = H, W, 17
  for k, v in kw.items():
    c[k] = v
  return c


def test_config_refusals(tmp_path):
  ok = tmp_path / 'control.mp4'
  video_io.write_mp4(ok, clip(9), 8.0)
  ten = tmp_path / 'ten.mp4'
  video_io.write_mp4(ten, clip(10), 8.0)
  config_lib.check(_config(tmp_path, control_video=str(ok), control_frame=8))
  cases = [
      (dict(task='control'), 'config.control_video is empty; IC-LoRA control needs'),
      (dict(control_video=str(ok), control_strength=1.5),
       r'config.control_strength=1.5 must be a finite number in \[0.0, 1.0\]'),
      (dict(control_video=str(ten)), 'config.control_video: guide 0 .* 10 frames is not 8N\\+1'),
      (dict(control_video=str(ok), control_frame=12), 'got frame 12'),
      (dict(control_video=str(ok), control_frame=-8), 'got frame 9'),
      (dict(control_video=str(tmp_path / 'missing.mp4')), 'config.control_video: .*no such file'),
  ]
  for kw, match in cases:
    with pytest.raises(UsageError, match=match):
      config_lib.check(_config(tmp_path, **kw))
  # configs/control.py as documented: a 13B preset, task 'control', the video required.
  from test_cli_units import load_config
  c = load_config('control', 'ltxv-13b-0.9.7-distilled')
  c.output_dir, c.num_frames = str(tmp_path / 'out'), 17
  with pytest.raises(UsageError, match='config.control_video is empty'):
    config_lib.check(c)
  c.control_video = str(ok)
  config_lib.check(c)
  c = _config(tmp_path, control_video=str(ok))
  c.long_video.enabled = True
  with pytest.raises(UsageError, match='takes no config.control_video'):
    config_lib.check(c)


def test_cli_control_video_end_to_end(tmp_path):
  """An IC-LoRA run on the smoke model: a (random) control LoRA and a control video."""
  from builders import random_lora
  lora = random_lora(tmp_path / 'ic-lora.safetensors', smoke.TRANSFORMER, rank=2, seed=2)
  control = tmp_path / 'depth.mp4'
  video_io.write_mp4(control, clip(9, 48, 80, seed=4), 8.0)
  out_dir = tmp_path / 'out'
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config',
         str(ROOT / 'configs' / 'smoke.py') + ':control', f'--config.control_video={control}',
         '--config.control_strength=0.9', '--config.control_frame=0',
         f"--config.loras=(('{lora}', 1.0),)", f'--config.output_dir={out_dir}']
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  (video,) = out_dir.glob('*.mp4')
  info = video_io.read_mp4_info(video)
  assert (info['frames'], info['width'], info['height']) == (9, 96, 64)
  meta = json.loads(video.with_suffix('.json').read_text())
  assert meta['control'] == {'guides': [{'media': str(control), 'kind': 'video',
                                         'frame_index': 0, 'strength': 0.9}]}
  assert [a['path'] for a in meta['loras']] == [str(lora)]
  assert meta['config']['control_video'] == str(control)
  assert meta['config']['task'] == 'control'
