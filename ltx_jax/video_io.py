"""Video files: H.264 mp4 (yuv420p), GIF, PNG frames and JSON sidecars.

  from ltx_jax import video_io
  video_io.write_mp4('fox.mp4', out.frames[0], fps=30)

Every file is written under a hidden temporary name in its final folder and renamed when
complete, so an interrupted run leaves no half-written output under a real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from ltx_jax.errors import UsageError

__all__ = ['read_mp4_info', 'write_gif', 'write_json', 'write_mp4', 'write_pngs']

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _quiet_fork():
  """imageio starts ffmpeg with subprocess; JAX's warning about forking a threaded process does
  not apply to a child that execs at once."""
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    yield


@contextlib.contextmanager
def _atomic(path: Path, overwrite: bool, directory: bool = False) -> Iterator[Path]:
  """Yields a temporary path next to `path`; renames it to `path` when the block succeeds."""
  path = Path(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite to replace it")
  if directory:
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.'))
  else:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
  try:
    yield tmp
    os.chmod(tmp, 0o777 & ~_UMASK if directory else 0o666 & ~_UMASK)  # mkstemp makes 0600
    if directory and path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
    raise


def _check(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise UsageError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def write_mp4(path: Path, frames: np.ndarray, fps: float, *, crf: int = 17,
              overwrite: bool = False) -> Path:
  """uint8 [F, H, W, 3] -> H.264 mp4, yuv420p (plays everywhere), at `fps`."""
  import imageio.v2 as imageio
  frames = _check(frames)
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise UsageError(f"H.264 yuv420p needs even sizes, got {frames.shape[2]}x{frames.shape[1]}")
  with _atomic(path, overwrite) as tmp, _quiet_fork():
    writer = imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=fps, codec='libx264',
                                pixelformat='yuv420p', quality=None, macro_block_size=1,
                                output_params=['-crf', str(int(crf))], ffmpeg_log_level='error')
    try:
      for frame in frames:
        writer.append_data(frame)
    finally:
      writer.close()
  return path


def write_gif(path: Path, frames: np.ndarray, fps: float, *, overwrite: bool = False) -> Path:
  from PIL import Image
  frames = _check(frames)
  with _atomic(path, overwrite) as tmp:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format='GIF', save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
  return path


def write_pngs(folder: Path, frames: np.ndarray, *, overwrite: bool = False) -> Path:
  """Frames as folder/00000.png ..."""
  from PIL import Image
  frames = _check(frames)
  with _atomic(folder, overwrite, directory=True) as tmp:
    for i, f in enumerate(frames):
      Image.fromarray(f).save(tmp / f'{i:05d}.png')
  return folder


def write_json(path: Path, data: dict, *, overwrite: bool = False) -> Path:
  with _atomic(path, overwrite) as tmp:
    tmp.write_text(json.dumps(data, indent=2, default=str) + '\n')
  return path


def read_mp4_info(path: Path) -> dict:
  """{'frames', 'width', 'height', 'fps', 'codec', 'pix_fmt'} of a video, decoded by ffmpeg."""
  import imageio_ffmpeg
  with _quiet_fork():
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    count = sum(1 for _ in gen)
  w, h = meta['size']
  return dict(frames=count, width=w, height=h, fps=meta['fps'], codec=meta['codec'],
              pix_fmt=meta['pix_fmt'])
