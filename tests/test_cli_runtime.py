"""The command line's runtime as a user meets it (issue 30): the denoising loop taken from the
persistent compilation cache on a terminal, with a bar whose rate excludes compilation;
interrupts at each stage; the sidecar's facts; long videos of exactly num_frames; no noise.
Each test runs `python -m ltx_jax.generate` in subprocesses on the smoke model."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ltx_jax import smoke, video_io
from ltx_jax.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / 'configs' / 'smoke.py')
NOISE = ('Resetting cache', "Unable to initialize backend", 'os.fork()', 'Traceback')


def _env(cache: Path, **extra) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu', LTX_JAX_COMPILATION_CACHE=str(cache),
              PYTHONPATH=str(ROOT), **extra)


def _cli(*args, cache: Path, config=SMOKE, **extra):
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config', config, *args]
  proc = subprocess.run(cmd, env=_env(cache, **extra), capture_output=True, text=True,
                        timeout=600, cwd=ROOT)
  return proc.stderr, proc.returncode


def _sidecar(folder: Path) -> tuple[Path, dict]:
  (video,) = folder.glob('*.mp4')
  return video, json.loads(video.with_suffix('.json').read_text())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('script') is None, reason="needs util-linux's script (a pty)")
def test_terminal_runs_take_the_loop_from_the_persistent_cache(tmp_path):
  """Item 3: two runs on a pseudo-terminal; the second reads the denoising step from the
  persistent cache (its compile time < 25% of the first's: tracing and lowering remain); the
  bar starts after compilation, so its rate is that of the steps."""
  steps = 12
  runs = []
  for k in range(2):
    out = tmp_path / f'out{k}'
    cmd = (f'stty cols 120 rows 40; {sys.executable} -m ltx_jax.generate --config {SMOKE} '
           f'--config.output_dir={out} --config.num_inference_steps={steps}')
    proc = subprocess.run(['script', '-qec', cmd, '/dev/null'], env=_env(tmp_path / 'xla'),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    runs.append((proc.stdout, _sidecar(out)[1]))
  (tty1, meta1), (tty2, meta2) = runs
  first = meta1['timings']['run']['compile_seconds']['denoise']
  second = meta2['timings']['run']['compile_seconds']['denoise']
  assert second < 0.25 * first, (first, second)
  assert 'denoise: compiled in' in tty1 and 'read from the persistent compilation cache' in tty2
  renders = re.findall(r'denoising:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[[^,\]]*,\s*([\d.]+)(s/step|step/s)',
                       tty1)
  assert renders and all(int(total) == steps for _, total, _, _ in renders), tty1[-2000:]
  n, _, rate, unit = [r for r in renders if int(r[0]) > 0][-1]
  per_step = float(rate) if unit == 's/step' else 1 / float(rate)
  assert per_step * int(n) < 0.5 * first, (renders[-3:], first)  # no compile in the rate
  for noise in NOISE:
    assert noise not in tty1 and noise not in tty2, noise


@pytest.mark.slow
def test_interrupts_leave_nothing_and_print_one_line(tmp_path):
  """Item 5: SIGINT and SIGTERM while loading, denoising and writing the mp4 (its temporary
  file open): exit 130 / 143, one line after the pause, no file or folder left."""
  for stage in ('load', 'denoise', 'write_mp4'):  # one at a time: later ones reuse the cache
    for sig in (signal.SIGINT, signal.SIGTERM):
      out = tmp_path / f'{stage}-{sig.name}' / 'videos'
      cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config', SMOKE,
             f'--config.output_dir={out}']
      proc = subprocess.Popen(cmd, env=_env(tmp_path / 'xla', LTX_JAX_TEST_PAUSE=stage),
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              cwd=ROOT)
      for line in proc.stderr:
        if line.startswith('paused at'):
          break
      else:
        pytest.fail(f"{stage}: never paused (exit {proc.wait()})")
      if stage == 'write_mp4':  # the hidden temporary mp4 exists while paused
        assert any(p.name.startswith('.') for p in out.iterdir()), list(out.iterdir())
      proc.send_signal(sig)
      rest = [ln for ln in proc.stderr.read().splitlines() if ln.strip()]
      assert proc.wait(timeout=120) == 128 + sig, (stage, sig, rest)
      assert rest == [f'error: interrupted by {sig.name}; nothing was left half-written'], rest
      assert not out.parent.exists() or not any(out.parent.rglob('*')), \
          list(out.parent.rglob('*'))


@pytest.mark.slow
def test_sidecar_facts_and_quiet_run(tmp_path):
  """Items 7 and 15 and the sidecar features, off a terminal: a LoRA whose tensors were all
  skipped (lora_strict=False) is recorded as not applied; the command holds no absolute path to
  the module; the schedule, the written video, versions and the run's log lines (video k/N,
  compile notice, steps with rate and ETA); reading a video (v2v) prints no fork warning."""
  from builders import random_lora
  other = dataclasses.replace(smoke.TRANSFORMER, head_dim=8)  # another model size
  lora = random_lora(tmp_path / 'other.safetensors', other, rank=2)
  clip = video_io.write_mp4(tmp_path / 'in.mp4', np.full((9, 64, 96, 3), 90, np.uint8), 8.0)
  out = tmp_path / 'out'
  err, rc = _cli(f'--config.output_dir={out}', f"--config.loras=(('{lora}', 1.0),)",
                 '--config.lora_strict=False', f'--config.input_video={clip}',
                 '--config.denoise_strength=0.5', cache=tmp_path / 'xla')
  assert rc == 0, err
  video, meta = _sidecar(out)
  (adapter,) = meta['loras']
  assert adapter['modules_applied'] == 0 and not adapter['applied'] and not adapter['baked_in']
  assert meta['command'][:3] == ['python', '-m', 'ltx_jax.generate'], meta['command']
  (sigmas,) = meta['schedule']['sigmas']
  assert sigmas[-1] == 0.0 and len(sigmas) == 3  # half of the 4 steps (denoise_strength)
  info = video_io.read_mp4_info(video)
  assert meta['video']['frames'] == info['frames'] == 9
  assert (meta['video']['width'], meta['video']['height']) == (info['width'], info['height'])
  assert meta['video']['bytes'] == video.stat().st_size
  assert {'jax', 'jaxlib', 'flax', 'cuda', 'python'} <= set(meta['versions'])
  assert 'peak_device_bytes' in meta and meta['passes']['mode'] == 'single-pass'
  for line in ('video 1/1: prompt 0, seed 0', 'denoise: compiling (first run of this shape',
               'denoising: step 1/2, ', 'denoising: step 2/2, ', 'loading smoke'):
    assert line in err, (line, err)
  assert re.search(r'step 2/2, [\d.]+ s/step, ETA \d+ s', err), err
  for noise in NOISE:
    assert noise not in err, (noise, err)


@pytest.mark.slow
def test_long_video_has_num_frames(tmp_path):
  """Item 4: configs/long.py with num_frames=65, windows of 32 frames overlapping by 16 (two
  latent frames: the case diffusers writes 89 frames for) writes 65 frames; the sidecar
  records the windows."""
  out = tmp_path / 'out'
  err, rc = _cli(f'--config.output_dir={out}', '--config.model.source=smoke',
                 '--config.model.file=', '--config.model.dtype=float32',
                 '--config.height=64', '--config.width=96', '--config.num_frames=65',
                 '--config.frame_rate=8.0', '--config.long_video.temporal_tile_size=32',
                 '--config.long_video.temporal_overlap=16', '--config.num_inference_steps=2',
                 '--config.timesteps=()', '--config.max_sequence_length=16',
                 config=str(ROOT / 'configs' / 'long.py') + ':', cache=tmp_path / 'xla')
  assert rc == 0, err
  video, meta = _sidecar(out)
  assert video_io.read_mp4_info(video)['frames'] == 65 == meta['video']['frames']
  passes = meta['passes']
  assert passes['mode'] == 'long-video'
  assert passes['windows_latent_frames'] == [[0, 4], [2, 6], [4, 8], [6, 9]]


def test_timer_none_restores_the_default():
  """Item 8: `pipe.timer = None` (as the constructor accepts) leaves a working pipeline."""
  pipe = smoke.build_pipeline()
  pipe.timer = None
  with pipe.timer('denoise'):
    pass
  with pytest.raises(UsageError, match='timer=3'):
    pipe.timer = 3
