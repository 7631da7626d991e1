"""Conditioning inputs: every bad item refused in one line before anything compiles (library
and CLI), the CLI's item syntax, and a keyframes run through the command line with its sidecar."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltx_jax import Condition, smoke
from ltx_jax.cli import config as config_lib
from ltx_jax.errors import DataError, LTXError, UsageError
from ltx_jax.pipeline.conditioning import parse_condition

ROOT = Path(__file__).resolve().parents[1]
H, W, FRAMES = 64, 96, 17  # the smoke model: compression 8 x 32 x 32


@pytest.fixture(scope='module')
def pipe():
  return smoke.build_pipeline()


@pytest.fixture(scope='module')
def media(tmp_path_factory):
  root = tmp_path_factory.mktemp('media')
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (H, W, 3), np.uint8)).save(root / 'frame.png')
  (root / 'broken.png').write_bytes(b'not a png')
  (root / 'broken.mp4').write_bytes(b'not a video')
  from ltx_jax import video_io
  for n in (9, 10):
    video_io.write_mp4(root / f'clip{n}.mp4', rng.integers(0, 255, (n, H, W, 3), np.uint8),
                       8.0)
  return root


def frames(n, h=H, w=W):
  return np.zeros((n, h, w, 3), np.uint8)


CALL = dict(prompt='a cat', height=H, width=W, num_frames=FRAMES, frame_rate=8.0,
            num_inference_steps=2, max_sequence_length=16, progress=False)

LIBRARY_REFUSALS = {
    'frame outside': ([Condition(image=frames(1)[0], frame_index=17)],
                      UsageError, r'frame_index=17 is outside the video \(frames 0..16\)'),
    'not 8N+1': ([Condition(video=frames(10))], UsageError,
                 r'a segment of 10 frames is not 8N\+1 \(trim it to 9 frames\)'),
    'past the end': ([Condition(video=frames(9), frame_index=16)], UsageError,
                     r'9 frames from frame 16 run past the end of the 17-frame video'),
    'unaligned segment': ([Condition(video=frames(9), frame_index=4)], UsageError,
                          r'must start on a multiple of 8'),
    'placement outside': ([Condition(image=frames(1, 32, 64)[0], media_x=64, media_y=0)],
                          UsageError, r'64x32 at x=64, y=0 is outside the 96x64 frame'),
    'unreadable': ([Condition(image='/nonexistent/a.png')], DataError,
                   r"cannot read image '/nonexistent/a.png'"),
    'not a Condition': (['a.png:0'], UsageError, r'conditions\[0\] is a str'),
}


@pytest.mark.parametrize('name', sorted(LIBRARY_REFUSALS))
def test_library_refuses_before_compiling(pipe, name, monkeypatch):
  conditions, error, match = LIBRARY_REFUSALS[name]
  monkeypatch.setattr(pipe, 'encode_prompt', lambda *a, **k: pytest.fail('T5 ran'))
  with pytest.raises(error, match=match) as e:
    pipe.prepare(**CALL, conditions=conditions)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('kwargs, match', [
    (dict(strength=1.5), r'strength=1.5 must be a number in \[0, 1\]'),
    (dict(strength=-0.1), r'strength=-0.1 must be a number in \[0, 1\]'),
    (dict(frame_index=1.5), r'frame_index=1.5 must be an int \(negative: from the end'),
])
def test_condition_refuses_strength_and_frame(kwargs, match):
  with pytest.raises(UsageError, match=match):
    Condition(image=frames(1)[0], **kwargs)


def test_other_library_refusals(pipe):
  one = [Condition(image=frames(1)[0])]
  with pytest.raises(UsageError, match='pass image= or conditions=, not both'):
    pipe.prepare(**CALL, image=frames(1)[0], conditions=one)
  with pytest.raises(UsageError, match="condition_preprocessing='blur'"):
    pipe.prepare(**CALL, conditions=one, condition_preprocessing='blur')
  with pytest.raises(UsageError, match='image_cond_noise_scale'):
    pipe.prepare(**CALL, conditions=one, image_cond_noise_scale=-1)
  with pytest.raises(UsageError, match='pass denoise_strength < 1'):
    pipe.prepare(**CALL, video=frames(FRAMES))
  with pytest.raises(UsageError, match='has 9 frames; video-to-video with num_frames=17'):
    pipe.prepare(**CALL, video=frames(9), denoise_strength=0.5)
  with pytest.raises(UsageError, match='pass video= .* or latents=, not both'):
    pipe.prepare(**CALL, video=frames(FRAMES), latents=np.zeros((1, 3, 2, 3, 128)),
                 denoise_strength=0.5)


def test_plan_layout(pipe):
  """Items at frame 0 are marked in the grid; later ones are extra tokens after it, with their
  own time coordinates and strength; video-to-video keeps a share of the schedule."""
  plan = pipe.prepare(**CALL, conditions=[
      Condition(image=frames(1)[0]), Condition(image=frames(1)[0], frame_index=16,
                                               strength=0.6)])
  n = 3 * 2 * 3
  assert plan.latents.shape[1] == n + 6 and plan.video_tokens == n
  mask = np.asarray(plan.cond_mask)[0]
  np.testing.assert_allclose(mask[:6], 1.0)
  np.testing.assert_allclose(mask[6:n], 0.0)
  np.testing.assert_allclose(mask[n:], 0.6)
  coords = np.asarray(plan.coords)[0]
  np.testing.assert_allclose(coords[0, n:], 16 / 8.0)  # frame 16 at 8 fps
  assert plan.spec.conditioned and plan.spec.cond_noise_scale == 0.15
  v2v = pipe.prepare(**dict(CALL, num_inference_steps=4), video=frames(FRAMES),
                     denoise_strength=0.5)
  assert v2v.num_steps == 2 and not v2v.spec.conditioned


def test_parse_condition():
  assert parse_condition('a.png:0') == Condition(image='a.png')
  assert parse_condition('c:/x/clip.MP4:16:0.5') == Condition(video='c:/x/clip.MP4',
                                                              frame_index=16, strength=0.5)
  for bad, match in [('a.png', 'must be PATH:FRAME'), ('a.png:x', 'must be PATH:FRAME'),
                     ('a.png:0:2', r'strength=2.0 must be a number in \[0, 1\]')]:
    with pytest.raises(UsageError, match=match):
      parse_condition(bad)


def _config(tmp_path, **values):
  c = config_lib.base_config(preset='')
  c.model.source = config_lib.SMOKE
  c.output_dir = str(tmp_path / 'out')
  c.height, c.width, c.num_frames = H, W, FRAMES
  for k, v in values.items():
    c[k] = v
  return c


def test_cli_refusals(media, tmp_path):
  png, clip9, clip10 = (str(media / n) for n in ('frame.png', 'clip9.mp4', 'clip10.mp4'))
  cases = {
      'frame outside': (dict(conditions=(f'{png}:17',)), 'frame_index=17 is outside'),
      'not 8N+1': (dict(conditions=(f'{clip10}:0',)), 'not 8N+1 (trim it to 9 frames)'),
      'past the end': (dict(conditions=(f'{clip9}:16',)), 'run past the end'),
      'strength': (dict(conditions=(f'{png}:0:1.5',)), 'strength=1.5'),
      'syntax': (dict(conditions=(png,)), 'must be PATH:FRAME'),
      'unreadable image': (dict(conditions=(f"{media / 'broken.png'}:0",)),
                           'cannot read image'),
      'unreadable video': (dict(conditions=(f"{media / 'broken.mp4'}:0",)),
                           'cannot read video'),
      'keyframes need two': (dict(task='keyframes', conditions=(f'{png}:0',)),
                             'keyframes need two or more'),
      'extend needs a video': (dict(task='extend', conditions=(f'{png}:0',)),
                               'extension needs a video'),
      'v2v strength': (dict(input_video=clip9, num_frames=9), 'denoise_strength=1.0'),
      'v2v too short': (dict(input_video=clip9, denoise_strength=0.5), 'has 9 frames'),
      'preprocessing': (dict(conditions=(f'{png}:0',), condition_preprocessing='x'),
                        "condition_preprocessing='x'"),
  }
  for name, (values, match) in cases.items():
    with pytest.raises(UsageError) as e:
      config_lib.check(_config(tmp_path, **values))
    msg = str(e.value)
    assert '\n' not in msg and match in msg and msg.startswith('config.'), (name, msg)
  plan = config_lib.check(_config(tmp_path, task='keyframes',
                                  conditions=(f'{png}:0', f'{png}:16:0.7')))
  assert plan.jobs


def test_cli_keyframes_run_and_sidecar(media, tmp_path):
  png, clip9 = str(media / 'frame.png'), str(media / 'clip9.mp4')
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config',
         str(ROOT / 'configs' / 'smoke.py'), f'--config.output_dir={tmp_path}',
         '--config.task=keyframes', f'--config.num_frames={FRAMES}',
         f'--config.conditions=("{clip9}:0", "{png}:16:0.8")', '--config.num_inference_steps=2']
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr
  (sidecar,) = tmp_path.glob('*.json')
  meta = json.loads(sidecar.read_text())
  cond = meta['conditions']
  assert cond['preprocessing'] == 'official' and cond['image_cond_noise_scale'] == 0.15
  assert [(i['kind'], i['frame_index'], i['strength']) for i in cond['items']] == [
      ('video', 0, 1.0), ('image', 16, 0.8)]
  assert meta['pipeline_kwargs']['condition_preprocessing'] == 'official'
