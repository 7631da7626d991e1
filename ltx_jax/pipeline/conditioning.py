"""Conditioning items: images or 8N+1-frame segments placed at any frame with a strength.

The pieces the pipeline calls, each pure and checked before anything compiles:

- `Condition` (what the user passes) and `check_conditions` (against the video's size);
- media loading and the references' image handling: `read_media`, `prepare_media` (resize /
  crop by the official or diffusers rules, 3x3 Gaussian blur, H.264 CRF compression);
- the latent side: `combine_conditions` (items at frame 0 replace leading latents, later items
  become extra tokens) and `noise_hard_conditions` (`image_cond_noise_scale`).

docs/conditioning.md describes the references' semantics these follow.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltx_jax.errors import DataError, UsageError
# The loop applies these per step; re-exported here with the rest of the conditioning API.
from ltx_jax.sampling.loop import noise_hard_conditions, token_timesteps, tokens_to_step
from ltx_jax.video_io import quiet_fork

__all__ = ['Condition', 'check_conditions', 'read_media', 'prepare_media', 'resize_media',
           'resize_bilinear', 'gaussian_blur', 'crf_compress', 'EncodedCondition', 'Combined',
           'extra_noise_shape', 'combine_conditions', 'noise_hard_conditions',
           'token_timesteps', 'tokens_to_step', 'PREPROCESSING', 'as_conditions',
           'check_media', 'load_conditions', 'parse_condition', 'load_input_video',
           'item_noise', 'describe']

RESIZE_RULES = ('official', 'official_input', 'diffusers', 'none')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.gif')


def is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class Condition:
  """One conditioning item.

  image: a path, PIL image or uint8 array [H, W, 3]; video: a path or uint8 array
    [F, H, W, 3] with F = 8N+1 (exactly one of the two).
  frame_index: the video frame the item's first frame lands on; negative counts from the end
    (-1: the last frame), as `Guide`'s. Segments after frame 0 start on a multiple of the VAE's
    temporal compression.
  strength: 1 gives the item's tokens as they are (never stepped); below 1 they start noised
    to 1 - strength and are stepped once the schedule passes that level.
  media_x, media_y: top-left pixel of an item smaller than the frame (frame 0 only); with
    either set the media keeps its own size (a multiple of the spatial compression), the
    other coordinate defaulting to centred. Both None: the media is resized to the frame.
  """
  image: Any = None
  video: Any = None
  frame_index: int = 0
  strength: float = 1.0
  media_x: int | None = None
  media_y: int | None = None

  def __post_init__(self):
    check_item(self, 'Condition')
    if not is_int(self.frame_index):
      raise UsageError(f"Condition frame_index={self.frame_index!r} must be an int (negative: "
                       "from the end, -1 the last frame)")
    for name in ('media_x', 'media_y'):
      v = getattr(self, name)
      if v is not None and (not is_int(v) or v < 0):
        raise UsageError(f"Condition {name}={v!r} must be an int >= 0 or None")

  @property
  def placed(self) -> bool:
    return self.media_x is not None or self.media_y is not None

  @property
  def source(self) -> str:
    return media_name(self)


def check_item(item: Any, kind: str) -> None:
  """The checks a `Condition` and a `Guide` share: exactly one of image / video, a uint8 array
  of the right rank, strength in [0, 1]. kind: the class name for messages."""
  if (item.image is None) == (item.video is None):
    raise UsageError(f"{kind} needs exactly one of image= and video=, got "
                     f"{'both' if item.image is not None else 'neither'}")
  try:
    s = float(item.strength)
  except (TypeError, ValueError):
    s = float('nan')
  if isinstance(item.strength, bool) or not 0.0 <= s <= 1.0:
    raise UsageError(f"{kind} strength={item.strength!r} must be a number in [0, 1]")
  for name in ('image', 'video'):
    v = getattr(item, name)
    if isinstance(v, np.ndarray):
      want = 3 if name == 'image' else 4
      if v.dtype != np.uint8 or v.ndim != want or v.shape[-1] != 3:
        shape = '[H, W, 3]' if name == 'image' else '[F, H, W, 3]'
        raise UsageError(f"{kind} {name} array must be uint8 {shape}, got {v.dtype} "
                         f"{list(v.shape)}")


def media_name(item: Any) -> str:
  """An item's media as a short name for messages: its path, or its kind and type."""
  v = item.image if item.image is not None else item.video
  if isinstance(v, (str, os.PathLike)):
    return str(v)
  return f"{'image' if item.image is not None else 'video'} {type(v).__name__}"


def check_conditions(conditions: Sequence[Condition], sizes: Sequence[tuple[int, int, int]],
                     num_frames: int, height: int, width: int, *, temporal: int = 8,
                     spatial: int = 32) -> None:
  """Refuses, one line each, items that do not fit a video of num_frames x height x width.

  sizes: per item, (frames, height, width) of its media as it will be encoded (after
  `prepare_media`; only placed items keep a size other than the frame's).
  """
  if len(sizes) != len(conditions):
    raise UsageError(f"{len(sizes)} media sizes for {len(conditions)} conditions")
  for i, (c, (f, h, w)) in enumerate(zip(conditions, sizes)):
    name = f"condition {i} ({c.source})"
    if c.frame_index >= num_frames:
      raise UsageError(f"{name}: frame_index={c.frame_index} is outside the video "
                       f"(frames 0..{num_frames - 1})")
    if f % temporal != 1:
      below = max(1, (f - 1) // temporal * temporal + 1)
      raise UsageError(f"{name}: a segment of {f} frames is not {temporal}N+1 "
                       f"(trim it to {below} frames)")
    if c.frame_index + f > num_frames:
      raise UsageError(f"{name}: {f} frames from frame {c.frame_index} run past the end of the "
                       f"{num_frames}-frame video (last start: {num_frames - f})")
    if f > 1 and c.frame_index > 0 and c.frame_index % temporal:
      raise UsageError(f"{name}: a segment after frame 0 must start on a multiple of "
                       f"{temporal}, got frame_index={c.frame_index}")
    if c.placed and c.frame_index != 0:
      raise UsageError(f"{name}: media_x/media_y place items at frame 0 only, got "
                       f"frame_index={c.frame_index}")
    if not c.placed:
      if (h, w) != (height, width):
        raise UsageError(f"{name}: media is {w}x{h}, the video {width}x{height}; resize it "
                         "or place it with media_x/media_y")
      continue
    if h % spatial or w % spatial:
      raise UsageError(f"{name}: a placed item must be a multiple of {spatial} pixels on each "
                       f"side, got {w}x{h}")
    x = (width - w) // 2 if c.media_x is None else c.media_x
    y = (height - h) // 2 if c.media_y is None else c.media_y
    if x + w > width or y + h > height:
      raise UsageError(f"{name}: {w}x{h} at x={x}, y={y} is outside the {width}x{height} frame")
    lh, lw = _stripped_size(h // spatial, w // spatial, x, y, w, h, width, height)
    if lh <= 0 or lw <= 0:
      raise UsageError(f"{name}: {w}x{h} at x={x}, y={y} keeps no latent once the borders "
                       f"inside the frame are dropped; use a larger item")


# -- media -------------------------------------------------------------------------------------

def _read_image(image: Any) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError
  if isinstance(image, (str, os.PathLike)):
    try:
      with Image.open(image) as im:
        return np.asarray(im.convert('RGB'), np.uint8)
    except UnidentifiedImageError:
      raise DataError(f"cannot read image {str(image)!r}: not an image file") from None
    except OSError as e:
      raise DataError(f"cannot read image {str(image)!r}: {e.strerror or e}") from None
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'), np.uint8)
  a = np.asarray(image)
  if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
    raise UsageError(f"an image must be a path, PIL image or uint8 [H, W, 3]; got "
                     f"{a.dtype} {list(a.shape)}")
  return a


def _read_video(video: Any) -> np.ndarray:
  if not isinstance(video, (str, os.PathLike)):
    a = np.asarray(video)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
      raise UsageError(f"a video must be a path or uint8 [F, H, W, 3]; got {a.dtype} "
                       f"{list(a.shape)}")
    return a
  import imageio_ffmpeg
  path = str(video)
  if not os.path.isfile(path):
    raise DataError(f"cannot read video {path!r}: no such file")
  try:
    with quiet_fork():
      gen = imageio_ffmpeg.read_frames(path, pix_fmt='rgb24')
      meta = next(gen)
      w, h = meta['size']
      frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
  except (OSError, RuntimeError, StopIteration) as e:
    raise DataError(f"cannot read video {path!r}: {str(e).splitlines()[0] if str(e) else e}"
                    ) from None
  if not frames:
    raise DataError(f"cannot read video {path!r}: no frames")
  return np.stack(frames)


def read_media(condition: Condition) -> np.ndarray:
  """The item's frames as uint8 [F, H, W, 3] (F = 1 for an image; a video path by ffmpeg)."""
  if condition.image is not None:
    return _read_image(condition.image)[None]
  return _read_video(condition.video)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """[F, h, w, 3] float -> [F, height, width, 3]: bilinear with half-pixel centres and source
  positions clamped at 0, no antialiasing (PyTorch's interpolate(align_corners=False))."""
  def axis(n_in, n_out):
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5,
                     0).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam
  f, h, w, _ = x.shape
  if (h, w) == (height, width):
    return x
  y0, y1, ly = axis(h, height)
  x0, x1, lx = axis(w, width)
  rows = x[:, y0] * (1 - ly)[None, :, None, None] + x[:, y1] * ly[None, :, None, None]
  return (rows[:, :, x0] * (1 - lx)[None, None, :, None]
          + rows[:, :, x1] * lx[None, None, :, None]).astype(np.float32)


def _official_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Centre crop to the target aspect ratio, with the official pipeline's int() rounding."""
  h, w = frames.shape[1:3]
  target = width / height
  if w / h > target:
    nw, nh = int(h * target), h
    x, y = (w - nw) // 2, 0
  else:
    nw, nh = w, int(w / target)
    x, y = 0, (h - nh) // 2
  return frames[:, y:y + nh, x:x + nw]


def _pil_resize(frames: np.ndarray, height: int, width: int, resample) -> np.ndarray:
  from PIL import Image
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample))
                   for f in frames])


def resize_media(frames: np.ndarray, height: int, width: int, rule: str) -> np.ndarray:
  """uint8 [F, h, w, 3] -> uint8 frames before the blur / compression, by `rule`:

  'official': centre crop to the target aspect only (inference.py's `just_crop` for
    conditioning media; `prepare_media` resizes to the frame after the blur and compression,
    as LTXVideoPipeline resizes conditioning items);
  'official_input': centre crop, then PIL's default (bicubic) resize to the target
    (inference.py's video-to-video input);
  'diffusers': PIL Lanczos resize to the target, no crop (LTXConditionPipeline's processor);
  'none': unchanged (placed items).
  """
  from PIL import Image
  if rule == 'official':
    return _official_crop(frames, height, width)
  if rule == 'official_input':
    return _pil_resize(_official_crop(frames, height, width), height, width,
                       Image.Resampling.BICUBIC)
  if rule == 'diffusers':
    return _pil_resize(frames, height, width, Image.Resampling.LANCZOS)
  if rule == 'none':
    return frames
  raise UsageError(f"resize rule {rule!r} is unknown; choose one of {', '.join(RESIZE_RULES)}")


def gaussian_blur(x: np.ndarray) -> np.ndarray:
  """[..., H, W, 3] float32 in [0, 1]: 3x3 Gaussian, sigma 1, mirrored borders (reflect,
  edge not repeated), as torchvision's gaussian_blur(kernel_size=3, sigma=1.0)."""
  k = np.exp(-0.5 * np.array([-1.0, 0.0, 1.0], np.float32) ** 2)
  k = (k / k.sum()).astype(np.float32)
  k2 = (k[:, None] * k[None, :]).astype(np.float32)  # [3, 3]
  x = np.asarray(x, np.float32)
  pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
  p = np.pad(x, pad, mode='reflect')
  h, w = x.shape[-3:-1]
  out = np.zeros_like(x)
  for dy in range(3):
    for dx in range(3):
      out += k2[dy, dx] * p[..., dy:dy + h, dx:dx + w, :]
  return out


def crf_compress(image: np.ndarray, crf: int = 29) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [H', W', 3] (sizes cropped down to even): one frame through
  H.264 (libx264, yuv420p, preset veryfast, `crf`) and back, by the ffmpeg the project writes
  mp4 with (imageio-ffmpeg), as the official `crf_compressor.compress` does through PyAV."""
  import imageio_ffmpeg
  h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
  image = np.ascontiguousarray(image[:h, :w])
  exe = imageio_ffmpeg.get_ffmpeg_exe()
  with tempfile.TemporaryDirectory(prefix='ltx_crf_') as tmp:
    path = os.path.join(tmp, 'frame.mp4')
    enc = [exe, '-v', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}',
           '-r', '1', '-i', '-', '-sws_flags', 'bilinear', '-c:v', 'libx264',
           '-thread_type', 'slice', '-preset', 'veryfast',
           '-crf', str(int(crf)), '-pix_fmt', 'yuv420p', '-f', 'mp4', path]
    dec = [exe, '-v', 'error', '-i', path, '-frames:v', '1', '-sws_flags', 'bilinear',
           '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-']
    try:
      with quiet_fork():
        subprocess.run(enc, input=image.tobytes(), check=True, capture_output=True)
        out = subprocess.run(dec, check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
      msg = e.stderr.decode(errors='replace').strip().splitlines()
      raise DataError(f"ffmpeg ({exe}) could not compress a {w}x{h} frame: "
                      f"{msg[-1] if msg else e}") from None
  return np.frombuffer(out, np.uint8)[:h * w * 3].reshape(h, w, 3)


def prepare_media(frames: np.ndarray, height: int, width: int, *, rule: str = 'official',
                  blur: bool = True, crf: int | None = 29,
                  crop_to: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 [F, h, w, 3] -> float32 pixels [F, H, W, 3] in [-1, 1] for the VAE.

  The official chain per frame: `resize_media(rule)`, Gaussian blur on [0, 1] floats,
  truncation to uint8 and CRF compression (crf None or 0: none), then [-1, 1]; with rule
  'official' the result is finally resized bilinearly to height x width (as LTXVideoPipeline
  resizes conditioning items). Diffusers does neither blur nor compression (blur=False,
  crf=None). Rule 'none' keeps the media's own size (placed items).
  crop_to: (height, width) whose aspect ratio rule 'official' crops to (default: height x
    width): inference.py crops to the output's, and a multi-scale pass then resizes the crop to
    its own size.
  """
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise UsageError(f"media frames must be uint8 [F, H, W, 3], got {frames.dtype} "
                     f"{list(frames.shape)}")
  if rule == 'official' and crop_to is not None:
    x = _official_crop(frames, *crop_to)
  else:
    x = resize_media(frames, height, width, rule)
  if blur or crf:
    x = x.astype(np.float32) / np.float32(255.0)
    if blur:
      x = gaussian_blur(x)
    if crf:
      q = np.floor(x * np.float32(255.0)).astype(np.uint8)  # torch's .byte() truncates
      x = np.stack([crf_compress(f, crf) for f in q]).astype(np.float32) / np.float32(255.0)
    x = x * np.float32(255.0) / np.float32(127.5) - 1
  else:  # diffusers' arithmetic
    x = x.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
  if rule == 'official':
    x = resize_bilinear(x, height, width)
  return x.astype(np.float32)


# -- latents -----------------------------------------------------------------------------------

class EncodedCondition(NamedTuple):
  """A conditioning item after the VAE: normalised latents [B, f, h, w, C] and its placement."""
  latents: Any
  frame_index: int
  strength: float
  media_x: int | None = None
  media_y: int | None = None


class Combined(NamedTuple):
  latents: np.ndarray    # [B, E + N, C]: E extra tokens first, then the video's N tokens
  coords: np.ndarray     # [B, 3, E + N] pixel (frame, y, x) of each token's corner, f32
  mask: np.ndarray       # [B, E + N] conditioning strength per token (0: free), f32
  num_extra: int         # E: drop latents[:, :E] before decoding
  # The video's N tokens split by what they take from the `latents` passed in:
  # latents[:, E:] = video_weight * latents_in + cond_latents (up to rounding), so that other
  # starting latents (a re-noised second pass) take the items as the references put them.
  video_weight: np.ndarray  # [B, N] f32: 1 free, 0 hard, prod(1 - s) under items of strength s
  cond_latents: np.ndarray  # [B, N, C] f32: the items' part (0 on free tokens)


def lerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
  """a + w (b - a), evaluated as torch.lerp does (from b for w >= 0.5: exact at w = 1)."""
  w = np.float32(w)
  d = b - a
  return (a + w * d) if w < 0.5 else (b - d * (np.float32(1) - w))


def pixel_coords(frames: int, h: int, w: int, batch: int, temporal: int, spatial: int,
                 causal: bool, frame_offset: int = 0) -> np.ndarray:
  """[B, 3, f*h*w] pixel corners in (f, h, w) token order; with `causal` latent frame f starts
  at pixel frame max(f t + 1 - t, 0)."""
  f, y, x = np.meshgrid(np.arange(frames), np.arange(h), np.arange(w), indexing='ij')
  t = f * temporal
  if causal:
    t = np.maximum(t + 1 - temporal, 0)
  c = np.stack([t + frame_offset, y * spatial, x * spatial]).reshape(1, 3, -1)
  return np.repeat(c, batch, axis=0).astype(np.float32)


def _place(cond: np.ndarray, item: EncodedCondition, nh: int, nw: int, spatial: int):
  """A placed frame-0 item -> (its latents less the borders inside the frame, latent x, y).

  Latents on an item's border inside the frame saw the encoder's padding, not the picture
  around it: the official pipeline drops one latent on each such side.
  """
  ph, pw = cond.shape[2] * spatial, cond.shape[3] * spatial
  width, height = nw * spatial, nh * spatial
  x = (width - pw) // 2 if item.media_x is None else item.media_x
  y = (height - ph) // 2 if item.media_y is None else item.media_y
  right, bottom = x + pw < width, y + ph < height
  if x > 0:
    x, cond = x + spatial, cond[:, :, :, 1:]
  if y > 0:
    y, cond = y + spatial, cond[:, :, 1:]
  if right:
    cond = cond[:, :, :, :-1]
  if bottom:
    cond = cond[:, :, :-1]
  return cond, x // spatial, y // spatial


def _stripped_size(lh, lw, x, y, w, h, width, height):
  """Latent size of a placed item once the borders inside the frame are dropped."""
  return (lh - (y > 0) - (y + h < height), lw - (x > 0) - (x + w < width))


def extra_noise_shape(item: EncodedCondition, num_prefix: int = 2) -> tuple[int, ...] | None:
  """Shape of the noise `combine_conditions` needs for an item (None for frame-0 items):
  a later single image needs its own latent shape, a later segment its prefix's."""
  if item.frame_index == 0:
    return None
  b, f, h, w, c = np.shape(item.latents)
  return (b, min(f, num_prefix), h, w, c)


def combine_conditions(latents: np.ndarray, items: Sequence[EncodedCondition],
                       noise: Sequence[np.ndarray | None], *, temporal: int = 8,
                       spatial: int = 32, causal: bool = True, num_prefix: int = 2) -> Combined:
  """Puts conditioning items into the starting latents, as LTXVideoPipeline.prepare_conditioning.

  latents: [B, F', H', W', C] starting latents (noise, or noised video for video-to-video).
  items: in order; later items overwrite earlier ones where they meet.
  noise: per item, an array of `extra_noise_shape(item)` (None for frame-0 items): the extra
    tokens start at lerp(noise, item, strength).
  Items at frame 0 replace the leading latent frames (a placed item: its rectangle, minus one
    latent on each side that lies inside the frame) by lerp(latents, item, strength) and mark
    them with the strength. Later single images are appended as extra tokens at their pixel
    position. Later segments write their latents after the first `num_prefix` into the video
    (lerp, strength) and append those first `num_prefix` latents as extra tokens.
  causal: the transformer's causal_temporal_positioning (coords of latent frame f).
  The result also splits the video's tokens into `video_weight * latents + cond_latents`: the
  same items put into other starting latents (`GenerationPlan.with_video_latents`).
  """
  base = np.array(latents, np.float32, copy=True)
  b, nf, nh, nw, c = base.shape
  mask = np.zeros((b, nf, nh, nw), np.float32)
  weight = np.ones((b, nf, nh, nw), np.float32)  # of `latents` in base (see Combined)
  given = np.zeros_like(base)                     # base - weight * latents

  def put(region, cond, s):
    """lerp(base, cond, s) on a region of the video, its affine parts alike."""
    base[region] = lerp(base[region], cond, s)
    given[region] = lerp(given[region], cond, s)
    weight[region] *= np.float32(1) - np.float32(s)
    mask[region] = s
  if len(noise) != len(items):
    raise UsageError(f"{len(noise)} noise arrays for {len(items)} conditioning items")
  extra_latents, extra_coords, extra_mask = [], [], []
  for item, eps in zip(items, noise):
    cond = np.asarray(item.latents, np.float32)
    cond = np.broadcast_to(cond, (b,) + cond.shape[1:])  # [B, f, h, w, C]
    s = float(item.strength)
    fl, lh, lw = cond.shape[1:4]
    if item.frame_index == 0:
      x0, y0 = 0, 0
      if item.media_x is not None or item.media_y is not None:
        cond, x0, y0 = _place(cond, item, nh, nw, spatial)
      fl, lh, lw = cond.shape[1:4]
      put((slice(None), slice(0, fl), slice(y0, y0 + lh), slice(x0, x0 + lw)), cond, s)
      continue
    if fl > 1:
      if fl < num_prefix:
        raise UsageError(f"a segment at frame {item.frame_index} encodes to {fl} latent frames; "
                         f"at least {num_prefix} are needed")
      if fl > num_prefix:
        start = item.frame_index // temporal + num_prefix
        stop = start + fl - num_prefix
        put((slice(None), slice(start, stop)), cond[:, num_prefix:], s)
      cond = cond[:, :num_prefix]
    if eps is None:
      raise UsageError(f"the item at frame {item.frame_index} needs noise of shape "
                       f"{list(cond.shape)} (extra_noise_shape)")
    eps = np.asarray(eps, np.float32)
    if eps.shape[1:] != cond.shape[1:] or eps.shape[0] not in (1, b):
      raise UsageError(f"noise for the item at frame {item.frame_index} has shape "
                       f"{list(eps.shape)}; expected {list(cond.shape)}")
    cond = lerp(eps, cond, s)
    f, h, w = cond.shape[1:4]
    extra_latents.append(cond.reshape(b, f * h * w, c))
    extra_coords.append(pixel_coords(f, h, w, b, temporal, spatial, causal, item.frame_index))
    extra_mask.append(np.full((b, f * h * w), s, np.float32))
  n = nf * nh * nw
  out_latents = np.concatenate([*extra_latents, base.reshape(b, n, c)], axis=1)
  out_coords = np.concatenate(
      [*extra_coords, pixel_coords(nf, nh, nw, b, temporal, spatial, causal)], axis=2)
  out_mask = np.concatenate([*extra_mask, mask.reshape(b, n)], axis=1)
  return Combined(out_latents, out_coords, out_mask, sum(e.shape[1] for e in extra_latents),
                  weight.reshape(b, n), given.reshape(b, n, c))


# -- the pipeline's host side ------------------------------------------------------------------

PREPROCESSING = ('official', 'diffusers', 'none')


def as_conditions(conditions: Any) -> list[Condition]:
  """`conditions` (None, one `Condition` or a sequence of them) -> a list, checked by type."""
  if conditions is None:
    return []
  if isinstance(conditions, Condition):
    return [conditions]
  if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence):
    raise UsageError(f"conditions must be a list of ltx_jax.Condition, got "
                     f"{type(conditions).__name__}")
  for i, c in enumerate(conditions):
    if not isinstance(c, Condition):
      raise UsageError(f"conditions[{i}] is a {type(c).__name__}; expected ltx_jax.Condition")
  return list(conditions)


def resolve_frames(conditions: Sequence[Condition], num_frames: int) -> list[Condition]:
  """The items with negative frame indices counted from the end (-1: the last frame of a
  num_frames video); a negative index before the first frame is refused (indices past the end
  by `check_conditions`)."""
  out = []
  for i, c in enumerate(conditions):
    if c.frame_index < -num_frames:
      raise UsageError(f"condition {i} ({c.source}): frame_index={c.frame_index} is outside the "
                       f"{num_frames}-frame video (allowed: {-num_frames}..{num_frames - 1})")
    out.append(dataclasses.replace(c, frame_index=c.frame_index + num_frames)
               if c.frame_index < 0 else c)
  return out


def check_media(conditions: Sequence[Condition], num_frames: int, height: int, width: int,
                preprocessing: str = 'official', *, temporal: int = 8, spatial: int = 32
                ) -> list[np.ndarray]:
  """Reads every item and refuses, one line each, what does not fit the video (the cheap part
  of `load_conditions`: no blur or compression). Returns the uint8 media [F, h, w, 3]."""
  conditions = resolve_frames(conditions, num_frames)
  if preprocessing not in PREPROCESSING:
    raise UsageError(f"condition_preprocessing={preprocessing!r}; choose one of "
                     f"{', '.join(map(repr, PREPROCESSING))}")
  media = [read_media(c) for c in conditions]  # uint8 [F, h, w, 3] each
  sizes = [(m.shape[0], *((m.shape[1:3]) if c.placed or preprocessing == 'none'
                          else (height, width))) for c, m in zip(conditions, media)]
  check_conditions(conditions, sizes, num_frames, height, width, temporal=temporal,
                   spatial=spatial)
  return media


def load_conditions(conditions: Sequence[Condition], num_frames: int, height: int, width: int,
                    preprocessing: str = 'official', *, temporal: int = 8, spatial: int = 32,
                    crf: int = 29, crop_to: tuple[int, int] | None = None
                    ) -> list[np.ndarray]:
  """Reads and checks every item (`check_media`), then prepares its pixels for the VAE: f32
  [F, H, W, 3] in [-1, 1] per item (frame-sized unless placed). All refusals come before the
  (slow) blur and compression, and long before anything compiles.

  preprocessing: 'official' (inference.py's crop, 3x3 blur, CRF-`crf` H.264 round trip, then
    the pipeline's bilinear resize), 'diffusers' (Lanczos stretch to the frame, nothing else),
    'none' (media used as given: it must already be the frame's size, or placed).
  crop_to: (height, width) of the output whose aspect ratio the 'official' crop takes (default
    the frame's); the crop is then resized to the frame (a multi-scale pass's size).
  """
  media = check_media(conditions, num_frames, height, width, preprocessing, temporal=temporal,
                      spatial=spatial)
  official = preprocessing == 'official'
  out = []
  for c, m in zip(conditions, media):
    rule = 'none' if (c.placed or preprocessing == 'none') else preprocessing
    out.append(prepare_media(m, height, width, rule=rule, blur=official,
                             crf=crf if official else None, crop_to=crop_to))
  return out


def parse_condition(text: str, *, video_suffixes: Sequence[str] = VIDEO_SUFFIXES
                    ) -> Condition:
  """'PATH:FRAME[:STRENGTH]' -> a Condition (a video by the path's suffix, else an image)."""
  parts = str(text).rsplit(':', 2)
  def number(v, kind):
    try:
      return kind(v)
    except ValueError:
      return None
  if (len(parts) == 3 and number(parts[1], int) is not None
      and number(parts[2], float) is not None):
    path, frame, strength = parts[0], int(parts[1]), float(parts[2])
  else:
    parts = str(text).rsplit(':', 1)
    if len(parts) != 2 or number(parts[1], int) is None or not parts[0]:
      raise UsageError(f"condition {text!r} must be PATH:FRAME or PATH:FRAME:STRENGTH, e.g. "
                       "'first.png:0' or 'clip.mp4:0:0.8'")
    path, frame, strength = parts[0], int(parts[1]), 1.0
  path = os.path.expanduser(path)
  kind = 'video' if Path(path).suffix.lower() in video_suffixes else 'image'
  return Condition(**{kind: path}, frame_index=frame, strength=strength)


def item_noise(key, index: int, shape: tuple[int, ...]):
  """N(0, 1) f32 noise of `shape` for the extra tokens of item `index` (from `key`)."""
  return jax.random.normal(jax.random.fold_in(key, index), shape, jnp.float32)


def describe(conditions: Sequence[Condition], preprocessing: str, noise_scale: float) -> dict:
  """The conditioning of a run as plain data (for the CLI's sidecar)."""
  return {'preprocessing': preprocessing, 'image_cond_noise_scale': float(noise_scale),
          'items': [{'media': c.source, 'kind': 'image' if c.image is not None else 'video',
                     'frame_index': int(c.frame_index), 'strength': float(c.strength),
                     'media_x': c.media_x, 'media_y': c.media_y} for c in conditions]}


def load_input_video(video: Any, num_frames: int, height: int, width: int,
                     preprocessing: str = 'official', *, crf: int = 29) -> np.ndarray:
  """The video of video-to-video (a path or uint8 [F, H, W, 3]) -> f32 pixels
  [num_frames, height, width, 3] in [-1, 1]: its first num_frames frames, prepared as
  inference.py's `--input_media_path` ('official': crop to the aspect, bicubic resize, blur,
  CRF), diffusers' processor ('diffusers': Lanczos stretch) or as given ('none')."""
  if preprocessing not in PREPROCESSING:
    raise UsageError(f"condition_preprocessing={preprocessing!r}; choose one of "
                     f"{', '.join(map(repr, PREPROCESSING))}")
  name = str(video) if isinstance(video, (str, os.PathLike)) else 'the input video'
  frames = _read_video(video)
  if frames.shape[0] < num_frames:
    raise UsageError(f"video {name!r} has {frames.shape[0]} frames; video-to-video with "
                     f"num_frames={num_frames} needs at least that many")
  frames = frames[:num_frames]
  if preprocessing == 'none' and frames.shape[1:3] != (height, width):
    raise UsageError(f"video {name!r} is {frames.shape[2]}x{frames.shape[1]}, the output "
                     f"{width}x{height}; resize it or use condition_preprocessing='official'")
  official = preprocessing == 'official'
  rule = {'official': 'official_input', 'diffusers': 'diffusers', 'none': 'none'}[preprocessing]
  return prepare_media(frames, height, width, rule=rule, blur=official,
                       crf=crf if official else None)
