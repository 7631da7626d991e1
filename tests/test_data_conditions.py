"""References computed in preprocessing (ltx_jax.data.conditions): canny edges against
LTX-Video-Trainer's compute_condition formula (torch grayscale + OpenCV Canny), the blurred
reference, and the config refusals."""

import cv2
import numpy as np
import pytest
import torch

from ltx_jax.data import PreprocessConfig, parse_buckets
from ltx_jax.data.conditions import blur, canny, compute_reference
from ltx_jax.errors import UsageError


def frames(seed=0, f=3, h=48, w=64):
  """uint8 frames with edges (shapes on noise), and their [-1, 1] pixels."""
  rng = np.random.default_rng(seed)
  u8 = (rng.integers(0, 60, (f, h, w, 3))).astype(np.uint8)
  for k in range(f):
    u8[k, 10 + k:30 + k, 12:40] = (200, 120 + 20 * k, 30)
    cv2.circle(u8[k], (48, 24 + k), 9, (30, 220, 250), -1)
  return u8, u8.astype(np.float32) / np.float32(127.5) - 1


def official_canny(u8):
  """scripts/compute_condition.py: images [B, C, H, W] / 255, torchvision's rgb_to_grayscale
  (0.2989, 0.587, 0.114), * 255 -> uint8, cv2.Canny(100, 200), stacked to 3 channels."""
  images = torch.from_numpy(u8).permute(0, 3, 1, 2).float()
  images = images / 255.0
  r, g, b = images.unbind(dim=-3)
  gray = (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)
  out = []
  for image in gray:
    image_np = (image.squeeze().numpy() * 255).astype('uint8')
    out.append(torch.from_numpy(cv2.Canny(image_np, threshold1=100, threshold2=200)).float())
  edges = torch.stack(out)
  return torch.stack([edges] * 3, dim=1).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3] 0 / 255


def test_canny_equals_the_official_condition():
  u8, pixels = frames()
  want = official_canny(u8)
  assert want.max() == 255 and 0 < (want > 0).mean() < 0.5  # edges found, not everywhere
  got = canny(pixels)
  np.testing.assert_array_equal(got, want / 127.5 - 1)
  np.testing.assert_array_equal(compute_reference('canny', pixels), got)


def test_blur_keeps_the_coarse_picture_and_drops_detail():
  rng = np.random.default_rng(1)
  checker = np.indices((32, 48)).sum(0) % 2 * 2.0 - 1  # finest detail: +-1 per pixel
  x = np.broadcast_to(checker[None, :, :, None], (2, 32, 48, 3)).astype(np.float32)
  out = blur(x, 4)
  assert out.shape == x.shape and out.dtype == np.float32
  np.testing.assert_allclose(out, 0.0, atol=1e-6)  # area averaging cancels the checker
  flat = np.full((1, 32, 48, 3), 0.25, np.float32)
  np.testing.assert_allclose(blur(flat, 4), flat, atol=1e-6)
  ramp = np.broadcast_to(np.linspace(-1, 1, 48, dtype=np.float32)[None, None, :, None],
                         (1, 32, 48, 3))
  # a smooth picture survives: a ramp exactly, away from the clamped borders
  np.testing.assert_allclose(blur(ramp, 4)[:, :, 2:-2], ramp[:, :, 2:-2], atol=1e-5)
  noise = rng.uniform(-1, 1, (1, 32, 48, 3)).astype(np.float32)
  np.testing.assert_array_equal(blur(noise, 1), noise)


def test_refusals():
  buckets = parse_buckets('64x64x9')
  with pytest.raises(UsageError, match="reference='depth'"):
    PreprocessConfig(buckets, reference='depth')
  with pytest.raises(UsageError, match='reference_blur_factor=0'):
    PreprocessConfig(buckets, reference='blur', reference_blur_factor=0)
  with pytest.raises(UsageError, match="'column' is not computed"):
    compute_reference('column', np.zeros((1, 32, 32, 3), np.float32))
