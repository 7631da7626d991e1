"""The command line's multi-scale mode: configs/smoke.py:multi end to end (random upsampler), the
sidecar's record of the passes, and the refusals of the multi-scale keys."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_jax import presets, video_io
from ltx_jax.cli import config as config_lib
from ltx_jax.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / 'configs' / 'smoke.py')


def _generate(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'ltx_jax.generate', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  return proc.stderr, proc.returncode


def test_multi_scale_end_to_end(tmp_path):
  """With a first frame of another aspect than the output's (128 x 160) and the passes' (square):
  its media cropped for the output and resized to each pass (test_multiscale_conditioning.py)."""
  import numpy as np
  from PIL import Image
  image = tmp_path / 'first.png'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 200, 3), np.uint8)).save(image)
  out = tmp_path / 'out'
  err, rc = _generate('--config', SMOKE + ':multi', f'--config.output_dir={out}',
                      '--config.second_pass.timesteps=(800.0,400.0)', '--config.width=160',
                      f'--config.image={image}')
  assert rc == 0, err
  (video,) = out.glob('*.mp4')
  info = video_io.read_mp4_info(video)
  assert (info['frames'], info['width'], info['height']) == (9, 160, 128)  # resized to the size
  meta = json.loads(video.with_suffix('.json').read_text())
  passes = meta['passes']
  assert passes['mode'] == 'multi-scale' and passes['output_size'] == [128, 160]
  assert passes['first_pass'] == dict(num_inference_steps=4, guidance_scale=3.0, size=[64, 64])
  assert passes['second_pass'] == dict(timesteps=[800.0, 400.0], guidance_scale=1.0,
                                       size=[128, 128])
  assert 'upsample' in meta['timings']['run']['seconds']
  assert meta['conditions']['items'][0]['media'] == str(image)


def _check(c):
  return config_lib.check(c)


def test_refusals(tmp_path):
  smoke = config_lib.base_config(preset='')
  smoke.model.source = config_lib.SMOKE
  smoke.output_dir = str(tmp_path)
  c = config_lib.base_config(preset='')
  c.update(smoke)
  c.multi_scale = True
  with pytest.raises(UsageError, match=r"config.multi_scale=True needs config.first_pass and "
                                       r"config.second_pass .*--config.multi_scale=False"):
    _check(c)
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.output_dir = config_lib.SMOKE, str(tmp_path)
  _check(c)  # the preset as it is
  assert c.multi_scale and config_lib.check(c)
  c.second_pass.timesteps = (909.4, 950.0)
  with pytest.raises(UsageError, match=r'config.second_pass.timesteps=\[909.4, 950.0\] must be '
                                       'a non-empty, strictly decreasing'):
    _check(c)
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.output_dir = config_lib.SMOKE, str(tmp_path)
  c.first_pass.heigth = 3
  with pytest.raises(UsageError, match='config.first_pass: heigth are no per-pass keys'):
    _check(c)
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.output_dir = config_lib.SMOKE, str(tmp_path)
  c.downscale_factor = 0.01
  with pytest.raises(UsageError, match='config.height 704 x downscale_factor 0.01 is below 32'):
    _check(c)
  # Single-pass mode keeps the size checks of one pass.
  c = config_lib.base_config('ltxv-2b-0.9.8-distilled')
  c.model.source, c.output_dir = config_lib.SMOKE, str(tmp_path)
  c.width = 1000
  _check(c)  # multi-scale: any size (the frames are resized)
  c.multi_scale = False
  with pytest.raises(UsageError, match='width=1000 is not valid'):
    _check(c)
