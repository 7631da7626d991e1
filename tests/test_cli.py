"""The command line end to end with the smoke model, and its refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ltx_jax import video_io

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / 'configs' / 'smoke.py')


def generate(*args, cwd=None, wait=True):
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config', SMOKE, *args]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  return proc.communicate(timeout=300) + (proc.returncode,) if wait else proc


def test_smoke_config_as_written(tmp_path):
  """The documented command, run in a fresh folder with no weights anywhere."""
  _, err, rc = generate(cwd=tmp_path)
  assert rc == 0, err
  (video,) = (tmp_path / 'outputs' / 'smoke').glob('*.mp4')
  assert video_io.read_mp4_info(video)['frames'] == 9


def test_end_to_end(tmp_path):
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('a cat on a mat\n\n# skipped\na dog in the park\n')
  out_dir = tmp_path / 'out'
  args = [f'--config.prompt_file={prompts}', '--config.seeds=(0,1)',
          f'--config.output_dir={out_dir}',
          '--config.save_gif=True', '--config.save_png=True', '--config.num_frames=17',
          '--config.frame_rate=12', '--config.overwrite=False']
  _, err, rc = generate(*args)
  assert rc == 0, err
  videos = sorted(out_dir.glob('*.mp4'))
  assert [v.name for v in videos] == [
      '000-a-cat-on-a-mat-seed0.mp4', '000-a-cat-on-a-mat-seed1.mp4',
      '001-a-dog-in-the-park-seed0.mp4', '001-a-dog-in-the-park-seed1.mp4']
  info = video_io.read_mp4_info(videos[0])
  assert info == dict(frames=17, width=96, height=64, fps=12.0, codec=info['codec'],
                      pix_fmt=info['pix_fmt'])
  assert info['codec'].startswith('h264') and info['pix_fmt'].startswith('yuv420p'), info
  assert len(list((out_dir / '000-a-cat-on-a-mat-seed0_frames').glob('*.png'))) == 17
  assert (out_dir / '000-a-cat-on-a-mat-seed0.gif').stat().st_size > 0
  assert not [p for p in out_dir.iterdir() if p.name.startswith('.')]  # no temporaries

  meta = json.loads(videos[3].with_suffix('.json').read_text())
  assert meta['prompt'] == 'a dog in the park' and meta['seed'] == 1
  assert meta['release'] == {'detected': 'smoke', 'preset': 'smoke'}
  assert meta['config']['num_frames'] == 17 and meta['config']['model']['source'] == 'smoke'
  assert meta['source']['kind'] == 'smoke' and meta['devices']
  run = meta['timings']['run']['seconds']
  assert {'load', 'text_encoding', 'denoise', 'decode', 'write'} <= run.keys(), run
  assert meta['timings']['run']['compile_seconds']['denoise'] > 0
  # The later videos reuse the compiled functions: no compile time of their own.
  assert meta['timings']['this_video']['compile_seconds'].get('denoise', 0) < 0.5, meta['timings']
  assert {'outputs', 'pipeline_kwargs', 'versions', 'command'} <= meta.keys()
  # Stage timings and devices are logged.
  assert 'devices: cpu' in err and 'stages: load' in err

  # Never overwrite unless asked; refused before any work, nothing changed.
  before = {p: p.stat().st_mtime_ns for p in out_dir.iterdir()}
  _, err, rc = generate(*args)
  assert rc == 2 and 'exists' in err and 'overwrite' in err
  assert {p: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before


def _refusals(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  bad_image = tmp_path / 'broken.png'
  bad_image.write_bytes(b'not a png')
  return {
      'unknown key': (['--config.frams=9'], "unknown config key 'config.frams'"),
      'frames': (['--config.num_frames=10'], 'num_frames=10 is not valid: it must be 8N+1'),
      'size': (['--config.width=100'], 'width=100 is not valid: it must be a multiple of 32'),
      'model path': ([f'--config.model.source={tmp_path}/no/such/model'], 'no such file'),
      'image': ([f'--config.image={bad_image}'], 'cannot read image'),
      'i2v without image': (['--config.task=i2v'], 'config.image is empty'),
      'output dir': ([f'--config.output_dir={blocker}/sub'], 'cannot write to config.output_dir'),
      'bad type': (['--config.num_frames=many'], 'num_frames'),
      'unknown preset': (None, "unknown preset 'nope'"),
  }


def test_refusals_are_one_line(tmp_path):
  out_dir = tmp_path / 'out'
  cases = _refusals(tmp_path)
  procs = {}
  for name, (args, _) in cases.items():
    if args is None:
      cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config',
             str(ROOT / 'configs' / 't2v.py') + ':nope', f'--config.output_dir={out_dir}']
      procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, JAX_PLATFORMS='cpu'))
    else:
      procs[name] = generate(f'--config.output_dir={out_dir}', *args, wait=False)
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith('error: '), (name, err)
    assert cases[name][1] in lines[0], (name, lines[0])
    assert 'Traceback' not in err + out, name
  assert not out_dir.exists()  # refused runs create no output folder


def test_failed_write_leaves_nothing(tmp_path):
  frames = np.zeros((9, 64, 96, 3), np.uint8)
  target = tmp_path / 'v.mp4'
  with pytest.raises(ValueError):
    video_io.write_mp4(target, frames[..., :2], 8.0)
  with pytest.raises(RuntimeError):
    with video_io._atomic(target, overwrite=False) as tmp:
      tmp.write_bytes(b'half')
      raise RuntimeError('crash mid-write')
  assert list(tmp_path.iterdir()) == []
  video_io.write_mp4(target, frames, 8.0)
  with pytest.raises(FileExistsError):
    video_io.write_mp4(target, frames, 8.0)
  video_io.write_mp4(target, frames + 1, 8.0, overwrite=True)
  assert video_io.read_mp4_info(target)['frames'] == 9


def test_damaged_checkpoint_is_one_line_exit_1(tmp_path):
  """A truncated and a header-corrupted official file: the error is one line naming the file,
  exit status 1, no traceback, no output folder. (The other stderr lines are the INFO log.)"""
  from builders import official_single_file
  good = tmp_path / 'good.safetensors'
  official_single_file(good, {'_class_name': 'RectifiedFlowScheduler'})
  data = good.read_bytes()
  n = int.from_bytes(data[:8], 'little')
  damaged = {'truncated': (data[:len(data) // 2], 'truncated'),
             'header': (data[:8] + b'{"oops' + data[14:8 + n] + data[8 + n:],
                        'corrupt safetensors header')}
  procs = {}
  for name, (content, _) in damaged.items():
    (tmp_path / name).mkdir()
    (tmp_path / name / 'ltxv-2b-0.9.8-distilled.safetensors').write_bytes(content)
    procs[name] = generate(f'--config.model.source={tmp_path / name}',
                           f'--config.output_dir={tmp_path / name / "out"}', wait=False)
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=120)
    errors = [ln for ln in err.splitlines() if ln.startswith('error: ')]
    log = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith('error: ')]
    assert proc.returncode == 1, (name, err)
    assert len(errors) == 1 and damaged[name][1] in errors[0], (name, err)
    assert 'ltxv-2b-0.9.8-distilled.safetensors' in errors[0], errors
    assert err.rstrip().splitlines()[-1] == errors[0]
    assert all(ln[:1] == 'I' and ln[1:5].isdigit() for ln in log), (name, log)
    assert 'Traceback' not in out + err, name
    assert not (tmp_path / name / 'out').exists(), name
