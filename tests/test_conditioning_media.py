"""Conditioning media: reading, the references' resize / crop rules, the official blur and
CRF compression, each against the reference code."""

import ast
import importlib.util
import types
from pathlib import Path
from typing import Union

import numpy as np
import pytest

from ltx_jax.errors import DataError, UsageError
from ltx_jax.pipeline.conditioning import (Condition, crf_compress, gaussian_blur,
                                           prepare_media, read_media, resize_media)

torch = pytest.importorskip('torch')
from PIL import Image  # noqa: E402

# (height, width) of source images: wider, taller, equal to the target's aspect, odd sizes.
SOURCES = [(64, 160), (200, 90), (96, 128), (77, 131), (130, 130)]


def _image(h, w, seed):
  """A smooth picture with edges and a little grain (what photos look like to a codec)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  img = np.stack([np.sin(6 * x + seed), np.cos(5 * y * x + 1), np.sin(9 * (x - y))], -1) * 0.4
  img += 0.5
  for _ in range(4):
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, h / 3)
    img[(y * max(h, w) - cy) ** 2 + (x * max(h, w) - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
  img += rng.normal(0, 0.03, img.shape)
  return np.clip(img * 255, 0, 255).astype(np.uint8)


def _torch_blur(x):
  """torchvision's gaussian_blur(kernel_size=3, sigma=1) as its source defines it: a
  normalised exp(-x^2 / 2) kernel on linspace(-1, 1, 3), reflect padding, conv2d. [C, H, W]."""
  k = torch.exp(-0.5 * torch.linspace(-1.0, 1.0, 3) ** 2)
  k = k / k.sum()
  k2 = torch.mm(k[:, None], k[None, :]).expand(3, 1, 3, 3)
  p = torch.nn.functional.pad(x[None], [1, 1, 1, 1], mode='reflect')
  return torch.nn.functional.conv2d(p, k2, groups=3)[0]


def _official_loader(compress=lambda x: x, name='load_image_to_tensor_with_resize_and_crop'):
  """inference.py's `load_image_to_tensor_with_resize_and_crop` (and `load_media_file`), their
  source run as it is.

  inference.py itself needs torchvision (not a dependency here) for to_tensor and
  gaussian_blur, given by their definitions; `compress` stands for crf_compressor.compress.
  """
  path = Path(importlib.util.find_spec('ltx_video').submodule_search_locations[0])
  tree = ast.parse((path / 'inference.py').read_text())
  fns = [n for n in tree.body if isinstance(n, ast.FunctionDef)
         and n.name in ('load_image_to_tensor_with_resize_and_crop', 'load_media_file')]
  tvf = types.SimpleNamespace(
      to_tensor=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255,
      gaussian_blur=lambda x, kernel_size, sigma: (
          _torch_blur(x) if (kernel_size, sigma) == (3, 1.0) else None))
  import imageio
  scope = dict(Image=Image, torch=torch, Union=Union, TVF=tvf, imageio=imageio,
               crf_compressor=types.SimpleNamespace(compress=compress))
  exec(compile(ast.Module(fns, []), str(path / 'inference.py'), 'exec'), scope)
  return scope[name]


def test_blur_matches_torchvision_definition():
  img = _image(37, 53, 0).astype(np.float32) / np.float32(255)
  ref = _torch_blur(torch.from_numpy(img).permute(2, 0, 1)).permute(1, 2, 0).numpy()
  ours = gaussian_blur(img)
  # Summation order differs from conv2d's; measured against torchvision 0.29 itself: 1.8e-7.
  np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-7)
  assert np.abs(ours - img).max() > 0.05  # it did blur


@pytest.mark.parametrize('h, w', SOURCES)
def test_official_input_rule(h, w):
  """Video-to-video input: crop to the aspect, bicubic resize, blur (no CRF here)."""
  img = _image(h, w, h)
  ref = _official_loader()(Image.fromarray(img), 64, 96, just_crop=False)  # [1, 3, 1, H, W]
  ours = prepare_media(img[None], 64, 96, rule='official_input', crf=None)
  np.testing.assert_allclose(ours, ref[0].permute(1, 2, 3, 0).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize('h, w', SOURCES)
def test_official_conditioning_rule(h, w):
  """Conditioning items: crop only and preprocess at their own size (inference.py's
  just_crop), then LTXVideoPipeline resizes them bilinearly to the frame."""
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  img = _image(h, w, w)
  cropped = _official_loader()(Image.fromarray(img), 64, 96, just_crop=True)
  ref = LTXVideoPipeline.resize_tensor(cropped, 64, 96)
  assert tuple(resize_media(img[None], 64, 96, 'official').shape[1:3]) == cropped.shape[-2:]
  ours = prepare_media(img[None], 64, 96, rule='official', crf=None)
  np.testing.assert_allclose(ours, ref[0].permute(1, 2, 3, 0).numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize('h, w', SOURCES)
def test_diffusers_rule(h, w):
  from diffusers.video_processor import VideoProcessor
  proc = VideoProcessor(vae_scale_factor=32)
  img = _image(h, w, 3)
  ref = proc.preprocess(Image.fromarray(img), 64, 96)  # [1, 3, H, W]
  ours = prepare_media(img[None], 64, 96, rule='diffusers', blur=False, crf=None)
  np.testing.assert_allclose(ours[0], ref[0].permute(1, 2, 0).numpy(), rtol=0, atol=1e-6)
  frames = np.stack([img, img[::-1].copy(), 255 - img])
  ref = proc.preprocess_video([Image.fromarray(f) for f in frames], 64, 96)  # [1, 3, F, H, W]
  ours = prepare_media(frames, 64, 96, rule='diffusers', blur=False, crf=None)
  np.testing.assert_allclose(ours, ref[0].permute(1, 2, 3, 0).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize('h, w', [(64, 96), (97, 131), (256, 384)])
def test_crf_matches_official(h, w):
  """Equal to crf_compressor.compress (PyAV) on the same machine: same libx264 settings,
  sliced threads and bilinear colour conversion. Measured 0 levels apart (max and mean) on
  64x96 .. 512x768 with PyAV 18.1 and imageio-ffmpeg 0.8.1 (ffmpeg 9.0.2)."""
  pytest.importorskip('av', reason='the official crf_compressor needs PyAV (av)')
  from ltx_video.pipelines.crf_compressor import compress
  img = _image(h, w, 5)
  ref = np.round(compress(torch.from_numpy(img.astype(np.float32) / 255)).numpy() * 255)
  ours = crf_compress(img, 29).astype(np.float64)
  assert ours.shape == ref.shape == (h // 2 * 2, w // 2 * 2, 3)
  assert np.abs(ours - ref).max() <= 2 and np.abs(ours - ref).mean() < 0.05


def test_crf_compress_properties():
  img = _image(97, 131, 1)
  out = crf_compress(img, 29)
  assert out.shape == (96, 130, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, crf_compress(img, 29))  # deterministic
  err = np.abs(out.astype(np.int32) - img[:96, :130]).mean()
  assert 1.0 < err < 15.0  # lossy, but the picture survives
  finer = np.abs(crf_compress(img, 10).astype(np.int32) - img[:96, :130]).mean()
  assert finer < err


def test_official_chain_with_compression():
  """The whole official image path (crop, resize, blur, truncation, CRF, [-1, 1]) with our
  compression on both sides: the arithmetic around the codec matches."""
  img = _image(90, 150, 2)
  ref = _official_loader(lambda x: torch.from_numpy(
      crf_compress((x * 255.0).byte().numpy(), 29).astype(np.float32)) / 255.0)(
          Image.fromarray(img), 64, 96, just_crop=False)
  ours = prepare_media(img[None], 64, 96, rule='official_input')
  np.testing.assert_allclose(ours, ref[0].permute(1, 2, 3, 0).numpy(), rtol=0, atol=1e-6)


# -- reading -----------------------------------------------------------------------------------

def test_read_media(tmp_path):
  from ltx_jax.video_io import write_mp4
  img = _image(64, 96, 0)
  Image.fromarray(img).save(tmp_path / 'a.png')
  for source in (str(tmp_path / 'a.png'), tmp_path / 'a.png', Image.fromarray(img), img):
    np.testing.assert_array_equal(read_media(Condition(image=source)), img[None])
  video = np.stack([_image(64, 96, i) for i in range(9)])
  write_mp4(tmp_path / 'v.mp4', video, 25, crf=0)
  frames = read_media(Condition(video=tmp_path / 'v.mp4'))
  assert frames.shape == (9, 64, 96, 3) and frames.dtype == np.uint8
  # yuv420p halves the colour resolution; each frame is still nearest its own source.
  err = np.abs(frames[:, None].astype(np.int32) - video[None]).mean(axis=(2, 3, 4))  # [9, 9]
  np.testing.assert_array_equal(err.argmin(axis=1), np.arange(9))
  assert err.diagonal().max() < 10
  np.testing.assert_array_equal(read_media(Condition(video=video)), video)


def test_official_video_chain(tmp_path):
  """A conditioning video as inference.py's load_media_file reads it (imageio, every frame
  cropped and blurred) and LTXVideoPipeline resizes it."""
  from ltx_jax.video_io import write_mp4
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  video = np.stack([_image(80, 100, i) for i in range(9)])
  write_mp4(tmp_path / 'v.mp4', video, 25, crf=20)
  load = _official_loader(name='load_media_file')
  ref = load(str(tmp_path / 'v.mp4'), 64, 96, 9, (0, 0, 0, 0), just_crop=True)
  ref = LTXVideoPipeline.resize_tensor(ref, 64, 96)[0].permute(1, 2, 3, 0).numpy()
  ours = prepare_media(read_media(Condition(video=str(tmp_path / 'v.mp4'))), 64, 96, crf=None)
  assert ours.shape == ref.shape == (9, 64, 96, 3)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


def test_read_media_refuses(tmp_path):
  (tmp_path / 'bad.png').write_bytes(b'not an image')
  (tmp_path / 'bad.mp4').write_bytes(b'not a video')
  cases = [(Condition(image=tmp_path / 'missing.png'), 'missing.png'),
           (Condition(image=tmp_path / 'bad.png'), 'bad.png.*not an image'),
           (Condition(video=tmp_path / 'missing.mp4'), 'missing.mp4.*no such file'),
           (Condition(video=tmp_path / 'bad.mp4'), 'bad.mp4')]
  for cond, match in cases:
    with pytest.raises(DataError, match=match) as e:
      read_media(cond)
    assert '\n' not in str(e.value)
  with pytest.raises(UsageError, match="resize rule 'crop' is unknown"):
    prepare_media(np.zeros((1, 8, 8, 3), np.uint8), 8, 8, rule='crop')
