"""Preprocessing of user inputs (prompts, images, frames); the argument checks are in
ltx_jax.checks."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ltx_jax.errors import DataError, UsageError

__all__ = ['as_prompts', 'load_image', 'resize_and_crop']


def as_prompts(prompt: str | Sequence[str] | None, name: str = 'prompt') -> list[str] | None:
  if prompt is None:
    return None
  if isinstance(prompt, str):
    return [prompt]
  prompts = list(prompt)
  if not prompts or not all(isinstance(p, str) for p in prompts):
    raise UsageError(f"{name} must be a string or a non-empty list of strings, got {prompt!r}")
  return prompts


def load_image(image: Any) -> np.ndarray:
  """A path, PIL image or array -> float32 [H, W, 3] in [0, 1]."""
  from PIL import Image, UnidentifiedImageError
  if isinstance(image, (str, os.PathLike)):
    try:
      with Image.open(image) as im:
        image = im.convert('RGB')
        image.load()
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError) as e:
      raise DataError(f"cannot read image {str(image)!r}: {e.__class__.__name__}: {e}") from None
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'), np.float32) / 255.0
  a = np.asarray(image)
  if a.ndim != 3 or a.shape[-1] != 3:
    raise UsageError(f"image array must be [H, W, 3], got shape {a.shape}")
  if a.dtype == np.uint8:
    return a.astype(np.float32) / 255.0
  a = a.astype(np.float32)
  if a.min() < 0 or a.max() > 1:
    raise UsageError("a float image array must hold values in [0, 1]")
  return a


def resize_and_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[h, w, 3] in [0, 1] -> [height, width, 3]: scale to cover the target, crop the centre
  (as the official pipeline does); an image already at the target size is untouched."""
  h, w = image.shape[:2]
  if (h, w) == (height, width):
    return image
  from PIL import Image
  scale = max(height / h, width / w)
  nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
  pil = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
  pil = pil.resize((nw, nh), Image.Resampling.BILINEAR)
  top, left = (nh - height) // 2, (nw - width) // 2
  return np.asarray(pil, np.float32)[top:top + height, left:left + width] / 255.0
