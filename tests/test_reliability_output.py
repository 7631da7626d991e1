"""Output safety: refused, failed or interrupted runs leave nothing behind; runs sharing an output
folder never overwrite each other's files; prompt files that are not UTF-8 text, or empty, get
one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ltx_jax import video_io
from ltx_jax.cli import config as config_lib
from ltx_jax.cli import run as run_lib
from ltx_jax.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / 'configs' / 'smoke.py')
FRAMES = np.zeros((3, 16, 16, 3), np.uint8)


def leftovers(folder: Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------- publishing


def test_publish_never_replaces_a_file_written_meanwhile(tmp_path):
  path = tmp_path / 'a.json'
  with pytest.raises(FileExistsError, match='a.json exists'):
    with video_io._atomic(path, overwrite=False) as tmp:
      tmp.write_text('mine')
      path.write_text('theirs')  # another run publishes the same name meanwhile
  assert path.read_text() == 'theirs' and leftovers(tmp_path) == ['a.json']


def test_publish_never_replaces_a_folder_written_meanwhile(tmp_path):
  path = tmp_path / 'frames'
  with pytest.raises(FileExistsError, match='frames exists'):
    with video_io._atomic(path, overwrite=False, directory=True) as tmp:
      (tmp / '0.png').write_text('mine')
      path.mkdir()
      (path / '0.png').write_text('theirs')
  assert (path / '0.png').read_text() == 'theirs' and leftovers(tmp_path) == ['frames']


def test_interrupted_writes_leave_nothing(tmp_path, monkeypatch):
  import imageio.v2 as imageio
  real = imageio.get_writer

  class Interrupted:
    def __init__(self, *a, **k):
      self.writer = real(*a, **k)

    def append_data(self, frame):
      self.writer.append_data(frame)
      raise KeyboardInterrupt

    def close(self):
      self.writer.close()

  monkeypatch.setattr(imageio, 'get_writer', Interrupted)
  with pytest.raises(KeyboardInterrupt):
    video_io.write_mp4(tmp_path / 'v.mp4', FRAMES, 8)
  with pytest.raises(KeyboardInterrupt):
    with video_io._atomic(tmp_path / 'frames', False, directory=True) as tmp:
      (tmp / '0.png').write_bytes(b'x')
      raise KeyboardInterrupt
  assert leftovers(tmp_path) == []


def test_failed_video_takes_back_its_files_and_folder(tmp_path, monkeypatch):
  """Ctrl-C after the mp4 was published but before the GIF and sidecar: the mp4 goes too, and
  the output folder the run created."""
  c = config_lib_smoke(tmp_path / 'new' / 'out', save_gif=True)

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(video_io, 'write_gif', interrupted)
  with pytest.raises(KeyboardInterrupt):
    run_lib.run(c)
  assert leftovers(tmp_path) == []


def config_lib_smoke(out: Path, **values):
  import importlib.util
  spec = importlib.util.spec_from_file_location('smoke_config', SMOKE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.output_dir, c.overwrite, c.num_inference_steps = str(out), False, 2
  for k, v in values.items():
    setattr(c, k, v)
  return c


# ---------------------------------------------------------------------------- the CLI


def generate(*args, **kw):
  cmd = [sys.executable, '-m', 'ltx_jax.generate', '--config', SMOKE, *args]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def test_refused_run_leaves_nothing(tmp_path):
  out = tmp_path / 'out'
  proc = generate(f'--config.output_dir={out}', '--config.model.source=no/such-repo',
                  '--config.model.offline=True')
  _, err = proc.communicate(timeout=300)
  assert proc.returncode != 0 and not out.exists(), err[-2000:]


def test_two_runs_into_one_folder(tmp_path):
  out = tmp_path / 'out'
  args = (f'--config.output_dir={out}', '--config.overwrite=False',
          '--config.num_inference_steps=2')
  procs = [generate(*args), generate(*args)]
  results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
  codes = sorted(r[2] for r in results)
  assert codes[0] == 0 and codes[1] != 0, [r[1][-1500:] for r in results]
  loser = next(r for r in results if r[2])
  assert 'exists' in loser[1].strip().splitlines()[-1], loser[1][-1500:]
  names = leftovers(out)
  assert len(names) == 2 and {Path(n).suffix for n in names} == {'.mp4', '.json'}, names


def test_sigint_during_denoising_leaves_nothing(tmp_path):
  out = tmp_path / 'out'
  proc = generate(f'--config.output_dir={out}', '--config.overwrite=False',
                  '--config.num_inference_steps=200', '--config.num_frames=33',
                  '--config.save_gif=True', '--config.save_png=True')
  deadline = time.time() + 300
  seen = ''
  while time.time() < deadline:  # wait for the model to be loaded: generation starts next
    line = proc.stderr.readline()
    seen += line
    if 'prompt(s) x' in line or not line:
      break
  time.sleep(3)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode != 0, seen + err
  assert not out.exists() or leftovers(out) == [], leftovers(out)


# ---------------------------------------------------------------------------- prompt files


@pytest.mark.parametrize('raw,message', [(b'\xff\xfe a cat', 'UnicodeDecodeError'),
                                          (b'', 'holds no prompts'),
                                          (b'\n# only a comment\n\n', 'holds no prompts')])
def test_prompt_file_refused_in_one_line(tmp_path, raw, message):
  prompts = tmp_path / 'prompts.txt'
  prompts.write_bytes(raw)
  c = config_lib_smoke(tmp_path / 'out', prompt_file=str(prompts))
  with pytest.raises(UsageError, match=message) as e:
    config_lib.check(c)
  assert '\n' not in str(e.value) and 'prompts.txt' in str(e.value)
  assert not (tmp_path / 'out').exists()
