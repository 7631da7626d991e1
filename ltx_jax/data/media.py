"""Reading training media and shaping it to a bucket.

Videos are decoded by ffmpeg (imageio-ffmpeg, RGB 8 bits), only as far as the longest bucket
needs; images by Pillow, turned upright by their EXIF orientation and converted to sRGB by
their ICC profile (as LTX-Video-Trainer's `open_image_as_srgb`). `to_bucket` resizes with a
bicubic, antialiased filter on [0, 1] floats (torchvision's tensor `resize(BICUBIC)`, which the
official trainers call, is PyTorch's `interpolate(mode='bicubic', antialias=True)`; Pillow's
'F'-mode bicubic is the same filter), centre-crops, clamps to [0, 1] and maps to [-1, 1].
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from pathlib import Path

import numpy as np
from absl import logging

from ltx_jax.data.buckets import Bucket, crop_box, frame_indices, resize_size
from ltx_jax.errors import DataError

__all__ = ['IMAGE_SUFFIXES', 'VIDEO_SUFFIXES', 'Clip', 'media_kind', 'read_clip', 'read_image',
           'read_video', 'to_bucket']

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')
VIDEO_SUFFIXES = ('.mp4', '.mov', '.avi', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.gif')


@dataclasses.dataclass
class Clip:
  """Decoded frames: uint8 [n, H, W, 3] at `fps` (the target rate when resampled; None for an
  image), and how many frames the source offered at that rate (more than n when the read
  stopped at the longest bucket)."""
  frames: np.ndarray
  fps: float | None
  available: int

  @property
  def size(self) -> tuple[int, int]:
    """(width, height)."""
    return self.frames.shape[2], self.frames.shape[1]


def media_kind(path: str | os.PathLike) -> str:
  """'image' or 'video' by the file's suffix; a DataError for any other suffix."""
  suffix = Path(path).suffix.lower()
  if suffix in IMAGE_SUFFIXES:
    return 'image'
  if suffix in VIDEO_SUFFIXES:
    return 'video'
  raise DataError(f"unknown extension {suffix or '(none)'!r}: images "
                  f"{' '.join(IMAGE_SUFFIXES)}; videos {' '.join(VIDEO_SUFFIXES)}")


def read_image(path: str | os.PathLike) -> Clip:
  """An image file -> a one-frame Clip, upright (EXIF) and in sRGB (ICC profile)."""
  from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
  try:
    with Image.open(path) as raw:
      im = ImageOps.exif_transpose(raw)
      im.load()
  except UnidentifiedImageError:
    raise DataError("not an image Pillow can read") from None
  except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
    raise DataError(f"unreadable image: {e}") from None
  if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16-bit greyscale: keep the top 8 bits
    im = Image.fromarray((np.asarray(im, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
  icc = im.info.get('icc_profile')
  if icc:
    try:
      src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
      im = ImageCms.profileToProfile(
          im if im.mode in ('RGB', 'CMYK', 'L') else im.convert('RGB'), src,
          ImageCms.createProfile('sRGB'), outputMode='RGB')
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
      # A profile littlecms cannot apply: the pixels as they are (a warning, not a skip).
      logging.warning("%s: ICC profile not applied (%s); pixels taken as sRGB", path, e)
  a = np.asarray(im.convert('RGB'), np.uint8)
  if a.shape[0] < 1 or a.shape[1] < 1:
    raise DataError("empty image")
  return Clip(a[None], None, 1)


def read_video(path: str | os.PathLike, max_frames: int, target_fps: float | None = None) -> Clip:
  """The first `max_frames` frames of a video at its own rate, or resampled to target_fps
  (`ltx_jax.data.buckets.frame_indices`); decoding stops once they are read."""
  import imageio_ffmpeg
  with warnings.catch_warnings():  # ffmpeg runs in a child process that execs at once
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    try:
      gen = imageio_ffmpeg.read_frames(str(path), pix_fmt='rgb24')
      meta = next(gen)
    except (OSError, RuntimeError, StopIteration) as e:
      raise DataError(f"unreadable video: {_first_line(e)}") from None
    try:
      w, h = meta['size']
      fps = float(meta.get('fps') or 0)
      if not fps > 0:
        raise DataError("unreadable video: no frame rate in its stream")
      wanted = frame_indices(max_frames, fps, target_fps)
      last = wanted[-1]
      frames = []
      try:
        for i, buf in enumerate(gen):
          frames.append(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
          if i >= last:
            break
      except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"corrupt video: {_first_line(e)}") from None
    finally:
      gen.close()
  if not frames:
    raise DataError("zero-length video: no frames decoded")
  read = len(frames)
  keep = [i for i in wanted if i < read]
  return Clip(np.stack([frames[i] for i in keep]), target_fps or fps, len(keep))


def read_clip(path: str | os.PathLike, max_frames: int, target_fps: float | None = None) -> Clip:
  """An image or a video by the file's suffix (see read_image / read_video)."""
  if not os.path.isfile(path):
    raise DataError("no such file")
  if media_kind(path) == 'image':
    return read_image(path)
  return read_video(path, max_frames, target_fps)


def to_bucket(frames: np.ndarray, bucket: Bucket) -> np.ndarray:
  """uint8 [n, h, w, 3] (n >= bucket.frames) -> float32 [F, H, W, 3] in [-1, 1]: the first
  F frames resized (bicubic, antialiased, on [0, 1] floats) to cover the bucket, centre-cropped,
  clamped to [0, 1], then (x - 0.5) / 0.5."""
  from PIL import Image
  n, h, w, _ = frames.shape
  if n < bucket.frames:
    raise ValueError(f"{n} frames for bucket {bucket}")
  nw, nh = resize_size(w, h, bucket)
  top, left = crop_box(nw, nh, bucket)
  out = np.empty((bucket.frames, bucket.height, bucket.width, 3), np.float32)
  for f in range(bucket.frames):
    x = frames[f].astype(np.float32) / np.float32(255.0)  # [h, w, 3] in [0, 1]
    for c in range(3):
      if (nw, nh) == (w, h):
        plane = x[..., c]
      else:
        plane = np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c]), mode='F').resize(
            (nw, nh), Image.Resampling.BICUBIC), np.float32)
      out[f, :, :, c] = plane[top:top + bucket.height, left:left + bucket.width]
  np.clip(out, 0.0, 1.0, out=out)
  return (out - np.float32(0.5)) / np.float32(0.5)


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
