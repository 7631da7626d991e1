"""Resolution buckets: parsing "WxHxF;WxHxF", choosing an item's bucket, and the resize-and-crop
and frame-selection rules of the official trainers.

The rules (learned from Lightricks' trainers, cited where they apply):
- A bucket is W x H x F with W, H multiples of the VAE's spatial compression (32) and
  F = 8N + 1 (its temporal compression); an image is F = 1 (LTX-Video-Trainer
  `scripts/process_videos.py:parse_resolution_buckets`).
- An item goes to the bucket with the nearest aspect ratio (|log(w/h) - log(W/H)|), then the
  most frames, then the largest area, among the buckets with no more frames than the item
  has; an item shorter than every bucket is skipped (LTX-2 trainer
  `packages/ltx-trainer/scripts/process_videos.py:_get_resolution_bucket_for_item`;
  LTX-Video-Trainer takes one bucket, where both rules agree).
- Resize keeping the aspect ratio until one side equals the bucket's (the other side
  int-truncated), bicubic, then centre crop with top = (h - H) // 2, left = (w - W) // 2
  (`_resize_and_crop`, reshape_mode 'center'); frames are the first F (`frames[:F]`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from ltx_jax.errors import UsageError

__all__ = ['Bucket', 'parse_buckets', 'choose_bucket', 'resize_size', 'crop_box',
           'frame_indices', 'available_frames']


@dataclasses.dataclass(frozen=True, order=True)
class Bucket:
  """A training shape in pixels: width x height x frames."""
  width: int
  height: int
  frames: int

  def __str__(self) -> str:
    return f"{self.width}x{self.height}x{self.frames}"

  @property
  def is_image(self) -> bool:
    return self.frames == 1

  def latent_shape(self, temporal: int, spatial: int) -> tuple[int, int, int]:
    """(F', H', W') of this bucket's latents."""
    return (self.frames - 1) // temporal + 1, self.height // spatial, self.width // spatial


def parse_buckets(text: str | Sequence, *, spatial: int = 32, temporal: int = 8,
                  name: str = 'buckets') -> tuple[Bucket, ...]:
  """"WxHxF;WxHxF" (or a sequence of such strings / (W, H, F) triples) -> buckets, in the
  order given. W, H multiples of `spatial`; F = `temporal`*N + 1 (1 for images)."""
  parts = ([p for p in text.split(';') if p.strip()] if isinstance(text, str) else list(text))
  if not parts or (isinstance(text, str) and not text.strip()):
    raise UsageError(f"{name} is empty; give 'WxHxF;WxHxF', e.g. '768x512x49;512x512x1'")
  out = []
  for part in parts:
    try:
      w, h, f = ((int(v) for v in part.strip().lower().split('x')) if isinstance(part, str)
                 else (int(v) for v in part))
    except (TypeError, ValueError):
      raise UsageError(f"{name}: {part!r} is not WxHxF (three integers, e.g. 768x512x49)"
                       ) from None
    if w < spatial or h < spatial or w % spatial or h % spatial:
      raise UsageError(f"{name}: {part!r}: width and height must be positive multiples of "
                       f"{spatial}, got {w}x{h}")
    if f < 1 or (f - 1) % temporal:
      raise UsageError(f"{name}: {part!r}: frames must be {temporal}N+1 (1 for images), "
                       f"got {f}")
    b = Bucket(w, h, f)
    if b in out:
      raise UsageError(f"{name}: bucket {b} is given twice")
    out.append(b)
  return tuple(out)


def choose_bucket(width: int, height: int, frames: int,
                  buckets: Sequence[Bucket]) -> Bucket | None:
  """The bucket of an item of `frames` frames (after any frame-rate resampling) at width x
  height: nearest aspect ratio in log scale, then most frames, then largest area, among the
  buckets with at most `frames` frames (ties: the first listed). None when every bucket
  needs more frames than the item has."""
  fits = [b for b in buckets if b.frames <= frames]
  if not fits:
    return None
  ratio = math.log(width / height)
  return min(fits, key=lambda b: (abs(ratio - math.log(b.width / b.height)), -b.frames,
                                  -(b.width * b.height)))


def resize_size(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
  """(width, height) to resize a width x height frame to before the centre crop: the side
  that is relatively shorter becomes the bucket's, the other keeps the aspect ratio
  (int-truncated, never below the bucket's)."""
  if width / height > bucket.width / bucket.height:  # wider than the bucket: match heights
    return max(bucket.width, int(width * bucket.height / height)), bucket.height
  return bucket.width, max(bucket.height, int(height * bucket.width / width))


def crop_box(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
  """(top, left) of the centre crop of a resized width x height frame to the bucket."""
  return (height - bucket.height) // 2, (width - bucket.width) // 2


def frame_indices(count: int, source_fps: float, target_fps: float | None) -> list[int]:
  """Source frame indices of the first `count` frames: 0..count-1 at the source rate
  (target_fps None), else the source frame shown at each time k / target_fps,
  floor(k * source_fps / target_fps) (frames repeat when target_fps > source_fps)."""
  if target_fps is None:
    return list(range(count))
  step = source_fps / target_fps
  # A small tolerance so that exact ratios (30 -> 15 fps: 0, 2, 4, ...) survive rounding.
  return [int(math.floor(k * step + 1e-9)) for k in range(count)]


def available_frames(source_frames: int, source_fps: float, target_fps: float | None) -> int:
  """How many frames a clip of `source_frames` frames gives at target_fps (all at the source
  rate): the k with floor(k * source_fps / target_fps) < source_frames."""
  if target_fps is None or source_frames <= 0:
    return max(source_frames, 0)
  step = source_fps / target_fps
  n = int(math.ceil(source_frames / step)) + 1  # k < source_frames / step, give or take rounding
  while n > 0 and int(math.floor((n - 1) * step + 1e-9)) >= source_frames:
    n -= 1
  return n
