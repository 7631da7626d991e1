"""Video files: H.264 mp4 (yuv420p), GIF, PNG frames and JSON sidecars.

  from ltx_jax import video_io
  video_io.write_mp4('fox.mp4', out.frames[0], fps=30)

Every file is written under a hidden, unique temporary name in its final folder and published
under its real name only when complete, so an interrupted run (an error, Ctrl-C) leaves no
half-written output and no temporary file. Without `overwrite`, publishing never replaces
anything, even a file another run published a moment ago: files are published with a hard link
(which fails when the name exists) and folders with a rename (which fails onto a non-empty
folder); the loser gets a FileExistsError.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from ltx_jax.errors import UsageError
from ltx_jax.pause_point import pause_point

__all__ = ['make_folder', 'quiet_fork', 'read_mp4_info', 'remove', 'remove_empty', 'write_gif',
           'write_json', 'write_mp4', 'write_pngs']

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def quiet_fork():
  """imageio starts ffmpeg with subprocess; JAX's warning about forking a threaded process does
  not apply to a child that execs at once."""
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    yield


@contextlib.contextmanager
def _atomic(path: Path, overwrite: bool, directory: bool = False) -> Iterator[Path]:
  """Yields a unique temporary path next to `path`; publishes it as `path` when the block
  succeeds (see the module docstring); removes it when the block or the publishing fails."""
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
    _publish(tmp, path, overwrite, directory)
  finally:
    if directory:
      shutil.rmtree(tmp, ignore_errors=True)
    else:
      tmp.unlink(missing_ok=True)


def _publish(tmp: Path, path: Path, overwrite: bool, directory: bool) -> None:
  taken = FileExistsError(f"{path} exists (written meanwhile by another run?); pass overwrite "
                          "to replace it")
  if directory:
    if overwrite and path.exists():
      shutil.rmtree(path)
    try:
      os.rename(tmp, path)  # onto a non-empty folder: fails
    except OSError as e:
      if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
        raise taken from None
      raise
  elif overwrite:
    os.replace(tmp, path)
  else:
    try:
      os.link(tmp, path)  # fails when the name exists: the no-overwrite check at publish time
    except FileExistsError:
      raise taken from None
    except OSError:  # a filesystem without hard links: claim the name exclusively, then replace
      try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_UMASK))
      except FileExistsError:
        raise taken from None
      os.replace(tmp, path)


def make_folder(path: Path) -> list[Path]:
  """Creates `path` and its missing parents; returns the folders created (outermost first), for
  `remove_empty` to take back after a failed run."""
  path = Path(path)
  missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
  path.mkdir(parents=True, exist_ok=True)
  return missing


def remove(paths: list[Path]) -> None:
  """Removes published files and frame folders (a video whose other files could not be
  written)."""
  for path in paths:
    if path.is_dir() and not path.is_symlink():
      shutil.rmtree(path, ignore_errors=True)
    else:
      path.unlink(missing_ok=True)


def remove_empty(folders: list[Path]) -> None:
  """Removes the folders `make_folder` created, innermost first, where nothing was written."""
  for folder in reversed(folders):
    try:
      folder.rmdir()
    except OSError:  # not empty (another run's files, or ours), or gone
      return


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
  with _atomic(path, overwrite) as tmp, quiet_fork():
    writer = imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=fps, codec='libx264',
                                pixelformat='yuv420p', quality=None, macro_block_size=1,
                                output_params=['-crf', str(int(crf))], ffmpeg_log_level='error')
    try:
      for i, frame in enumerate(frames):
        writer.append_data(frame)
        if i == 0:
          pause_point('write_mp4')  # test-only (ltx_jax/pause_point.py)
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
  with quiet_fork():
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    count = sum(1 for _ in gen)
  w, h = meta['size']
  return dict(frames=count, width=w, height=h, fps=meta['fps'], codec=meta['codec'],
              pix_fmt=meta['pix_fmt'])
