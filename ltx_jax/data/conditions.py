"""References computed from the target clip itself, for control adapters (IC-LoRA) trained
from plain clips: no model, no reference column.

- 'canny': Canny edges as LTX-Video-Trainer's scripts/compute_condition.py computes them:
  the 8-bit frame / 255, luma 0.2989 R + 0.587 G + 0.114 B, truncated to uint8, OpenCV's Canny
  with thresholds 100 / 200, the binary map repeated on three channels (white edges on black).
- 'blur': the clip downscaled by `blur_factor` (area average) and scaled back up (bilinear):
  a low-detail reference (upscaler / detailer adapters).
- 'column': the listing's reference column (nothing computed here).

Both work on the clip already fitted to its bucket (pixels [F, H, W, 3] in [-1, 1]), so the
reference is on the target's grid, and return pixels of the same shape and range.
"""

from __future__ import annotations

import numpy as np

from ltx_jax.errors import UsageError

__all__ = ['REFERENCES', 'COMPUTED', 'canny', 'blur', 'compute_reference', 'check_reference']

REFERENCES = ('column', 'canny', 'blur')
COMPUTED = ('canny', 'blur')
CANNY_THRESHOLDS = (100, 200)


def check_reference(kind: str, blur_factor: int = 4) -> None:
  """Refuses an unknown reference kind or a bad blur factor."""
  if kind not in REFERENCES:
    raise UsageError(f"reference={kind!r}; choose one of {', '.join(map(repr, REFERENCES))}")
  if isinstance(blur_factor, bool) or not isinstance(blur_factor, int) or blur_factor < 1:
    raise UsageError(f"reference_blur_factor={blur_factor!r}; expected an integer >= 1")


def _to_unit(pixels: np.ndarray) -> np.ndarray:
  """[-1, 1] -> [0, 1] through the uint8 frame a saved video holds (the official script reads
  its clips as 8-bit frames / 255)."""
  u8 = np.clip(np.rint((np.asarray(pixels, np.float32) + 1) * np.float32(127.5)), 0, 255)
  return u8.astype(np.float32) / np.float32(255.0)


def canny(pixels: np.ndarray, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> np.ndarray:
  """[F, H, W, 3] in [-1, 1] -> Canny edge maps [F, H, W, 3] in {-1, 1} (1: edge)."""
  import cv2
  unit = _to_unit(pixels)
  luma = (np.float32(0.2989) * unit[..., 0] + np.float32(0.587) * unit[..., 1]
          + np.float32(0.114) * unit[..., 2])  # [F, H, W]
  gray = (luma * np.float32(255.0)).astype(np.uint8)  # truncates, as .astype('uint8')
  edges = np.stack([cv2.Canny(g, *thresholds) for g in gray])  # uint8 0 / 255
  out = edges.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
  return np.repeat(out[..., None], 3, axis=-1)


def blur(pixels: np.ndarray, factor: int = 4) -> np.ndarray:
  """[F, H, W, 3] in [-1, 1] -> the same downscaled by `factor` (area) and back (bilinear)."""
  import cv2
  x = np.asarray(pixels, np.float32)
  f, h, w, _ = x.shape
  small = (max(1, w // factor), max(1, h // factor))
  out = [cv2.resize(cv2.resize(frame, small, interpolation=cv2.INTER_AREA), (w, h),
                    interpolation=cv2.INTER_LINEAR) for frame in x]
  return np.clip(np.stack(out), -1.0, 1.0).astype(np.float32)


def compute_reference(kind: str, pixels: np.ndarray, blur_factor: int = 4) -> np.ndarray:
  """The computed reference of a bucket-fitted clip ('canny' or 'blur')."""
  if kind == 'canny':
    return canny(pixels)
  if kind == 'blur':
    return blur(pixels, blur_factor)
  raise UsageError(f"reference={kind!r} is not computed; choose one of "
                   f"{', '.join(map(repr, COMPUTED))}")
