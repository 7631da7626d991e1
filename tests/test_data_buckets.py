"""Buckets, resize, crop and frame selection against the official trainers' rules.

The rules, as the trainers' code states them (Lightricks/LTX-Video-Trainer at 31b1273 and
Lightricks/LTX-2 packages/ltx-trainer):
- parse: scripts/process_videos.py `parse_resolution_buckets` (LTX-Video-Trainer): "WxHxF",
  W, H % 32 == 0, F % 8 == 1.
- bucket: LTX-2 scripts/process_videos.py `_get_resolution_bucket_for_item`: among buckets with
  F <= frames, min of (|log(w/h) - log(W/H)|, -F, -H*W).
- resize: `_resize_and_crop`: if w/h > W/H: size [H, int(w * H / h)] else [int(h * W / w), W],
  torchvision resize BICUBIC (antialias, torchvision 0.21 in the trainer's uv.lock);
  crop top, left = (h' - H) // 2, (w' - W) // 2.
- frames: `frames[:F]` (LTX-Video-Trainer `_preprocess_video`, LTX-2 `frames_resized[:F]`).
The `official_*` functions below restate those lines; the tables run both sides.
"""

import math
import re

import numpy as np
import pytest

from ltx_jax.data import buckets as B
from ltx_jax.data import media
from ltx_jax.errors import DataError, UsageError


def official_bucket(frames, height, width, buckets_fhw):
  """LTX-2 `_get_resolution_bucket_for_item` (buckets as (F, H, W) like the trainer)."""
  def distance(b):
    f, h, w = b
    return (abs(math.log(width / height) - math.log(w / h)), -f, -(h * w))
  relevant = [b for b in buckets_fhw if b[0] <= frames]
  return min(relevant, key=distance) if relevant else None


def official_resize(h, w, target_h, target_w):
  """LTX-2 / LTX-Video-Trainer `_resize_and_crop`: (resized h, w, top, left)."""
  if w / h > target_w / target_h:
    nh, nw = target_h, int(w * target_h / h)
  else:
    nh, nw = int(h * target_w / w), target_w
  return nh, nw, (nh - target_h) // 2, (nw - target_w) // 2


BUCKET_LISTS = ['768x512x49', '512x768x49;768x512x49;512x512x49',
                '768x448x89;512x512x121;1024x576x25;640x640x1',
                '512x512x1;768x512x1;512x768x1', '1280x704x9;704x1280x9;960x960x17;960x544x33']
SOURCES = [  # (width, height, frames)
    (1920, 1080, 300), (1080, 1920, 30), (640, 480, 49), (640, 480, 48), (720, 720, 10),
    (100, 3000, 200), (3000, 100, 17), (1280, 720, 25), (854, 480, 121), (333, 777, 1),
    (1024, 1024, 88), (960, 544, 33), (4096, 2160, 9), (500, 501, 1000)]


@pytest.mark.parametrize('text', BUCKET_LISTS)
def test_bucket_choice_matches_the_official_rule(text):
  buckets = B.parse_buckets(text)
  fhw = [(b.frames, b.height, b.width) for b in buckets]
  for w, h, f in SOURCES:
    got = B.choose_bucket(w, h, f, buckets)
    want = official_bucket(f, h, w, fhw)
    assert (None if got is None else (got.frames, got.height, got.width)) == want, (w, h, f)


def test_resize_and_crop_sizes_match_the_official_rule():
  for text in BUCKET_LISTS:
    for bucket in B.parse_buckets(text):
      for w, h, _ in SOURCES:
        nw, nh = B.resize_size(w, h, bucket)
        top, left = B.crop_box(nw, nh, bucket)
        assert (nh, nw, top, left) == official_resize(h, w, bucket.height, bucket.width), (
            w, h, bucket)


def test_frames_from_the_start_and_resampled():
  assert B.frame_indices(5, 30.0, None) == [0, 1, 2, 3, 4]
  assert B.frame_indices(5, 30.0, 15.0) == [0, 2, 4, 6, 8]
  assert B.frame_indices(4, 24.0, 30.0) == [0, 0, 1, 2]  # floor(k * 0.8)
  assert B.frame_indices(4, 29.97, 29.97) == [0, 1, 2, 3]
  assert B.available_frames(49, 30.0, None) == 49
  assert B.available_frames(49, 30.0, 15.0) == 25  # indices 0, 2, ..., 48
  assert B.available_frames(50, 30.0, 15.0) == 25
  assert B.available_frames(10, 24.0, 30.0) == 13  # floor(12 * 0.8) = 9 < 10 = floor(13 * 0.8)
  for n, src, dst in ((97, 25.0, 8.0), (10, 24.0, 30.0), (1, 30.0, 7.0), (300, 29.97, 24.0)):
    k = B.available_frames(n, src, dst)
    idx = B.frame_indices(k + 1, src, dst)
    assert idx[k - 1] < n <= idx[k], (n, src, dst)


@pytest.mark.parametrize('text, message', [
    ('', 'empty'), ('768x512', 'not WxHxF'), ('770x512x49', 'multiples of 32'),
    ('768x512x48', '8N+1'), ('768x512x0', '8N+1'), ('axbxc', 'not WxHxF'),
    ('768x512x49;768x512x49', 'twice'), ('0x512x1', 'multiples of 32')])
def test_bad_buckets_are_one_line_usage_errors(text, message):
  with pytest.raises(UsageError, match=re.escape(message)) as e:
    B.parse_buckets(text)
  assert '\n' not in str(e.value)


def test_bucket_text_forms():
  assert B.parse_buckets(' 768X512x49 ; 512x512x1;') == (B.Bucket(768, 512, 49),
                                                          B.Bucket(512, 512, 1))
  assert B.parse_buckets([(64, 32, 9), '32x32x1']) == (B.Bucket(64, 32, 9), B.Bucket(32, 32, 1))
  assert str(B.Bucket(768, 512, 49)) == '768x512x49'
  assert B.Bucket(768, 512, 49).latent_shape(8, 32) == (7, 16, 24)


def test_images_need_a_one_frame_bucket():
  buckets = B.parse_buckets('512x512x9;768x512x1')
  assert B.choose_bucket(512, 512, 1, buckets) == B.Bucket(768, 512, 1)
  assert B.choose_bucket(512, 512, 1, B.parse_buckets('512x512x9')) is None
  assert B.choose_bucket(512, 512, 8, B.parse_buckets('512x512x9;512x512x17')) is None


@pytest.mark.parametrize('h, w, bucket', [
    (100, 160, '96x64x1'), (64, 64, '96x96x1'), (37, 53, '64x32x1'), (120, 90, '64x96x1'),
    (64, 96, '96x64x1')])
def test_pixels_match_torchvision_bicubic_resize(h, w, bucket):
  """to_bucket equals the trainer's pipeline: frames / 255 -> torchvision resize(BICUBIC) on
  float tensors, which is interpolate(mode='bicubic', antialias=True) (skipped when the size
  is unchanged) -> crop -> clamp(0, 1) -> Normalize(0.5, 0.5)."""
  torch = pytest.importorskip('torch')
  b = B.parse_buckets(bucket)[0]
  frames = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), np.uint8)
  got = media.to_bucket(frames, b)
  x = torch.from_numpy(frames[:b.frames]).permute(0, 3, 1, 2).float() / 255.0  # [F, C, H, W]
  nh, nw, top, left = official_resize(h, w, b.height, b.width)
  if (nh, nw) != (h, w):
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode='bicubic', antialias=True,
                                        align_corners=False)
  x = x[:, :, top:top + b.height, left:left + b.width].clamp(0, 1)
  want = ((x - 0.5) / 0.5).permute(0, 2, 3, 1).numpy()
  assert got.shape == want.shape == (b.frames, b.height, b.width, 3)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_media_kinds_and_unknown_extension():
  assert media.media_kind('a/b.MP4') == 'video' and media.media_kind('x.jpeg') == 'image'
  with pytest.raises(DataError, match="unknown extension '.doc'"):
    media.media_kind('notes.doc')
