"""Guides: a reference clip (an IC-LoRA control video: depth, pose or canny maps, or any
video) encoded by the VAE and appended as extra tokens at given frames with a strength.

A guide never replaces the video's own latents: every latent frame of the clip becomes extra
tokens after the video's (ComfyUI's `LTXVAddGuide`, always-append), placed at the pixel
position of the frames it covers, and `GenerationPlan.unpack` drops them before decoding
(ComfyUI's `LTXVCropGuides`). The tokens use the official pipeline's appended-token mechanism
(`conditioning.combine_conditions` for items after frame 0): causal time coordinates shifted by
the guide's first frame, a conditioning mask equal to the strength, and a start of
lerp(noise, guide, strength). README "IC-LoRA control" states the rules.

The pieces, each pure and checked before anything compiles: `Guide` (what the user passes),
`check_guides` (against the video), `load_guides` (read, check, resize), `append_guides`
(the token side) and `describe` (for the CLI's sidecar).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

from ltx_jax.errors import UsageError
from ltx_jax.pipeline.conditioning import (check_item, is_int, lerp, media_name, pixel_coords,
                                           prepare_media, read_media)

__all__ = ['Guide', 'as_guides', 'resolve_frame', 'check_guides', 'load_guides',
           'EncodedGuide', 'append_guides', 'describe']


@dataclasses.dataclass(frozen=True)
class Guide:
  """One guide: a reference clip appended as extra tokens (IC-LoRA control).

  video: a path or uint8 array [F, H, W, 3] with F = 8N+1; image: a path, PIL image or uint8
    [H, W, 3] (a one-frame guide). Exactly one of the two. Resized to the video's size (centre
    crop to its aspect ratio, then bilinear), with no blur or compression.
  frame_index: the video frame the guide's first frame lands on; negative counts from the end
    (-1: the last frame). A clip of more than one frame starts at 0 or on a multiple of the
    VAE's temporal compression (8).
  strength: 1 keeps the guide's tokens as encoded (never stepped, timestep 0); below 1 they
    start noised to 1 - strength and are denoised once the schedule passes that level.
  """
  video: Any = None
  image: Any = None
  frame_index: int = 0
  strength: float = 1.0

  def __post_init__(self):
    check_item(self, 'Guide')  # media and strength, as for a Condition
    if not is_int(self.frame_index):
      raise UsageError(f"Guide frame_index={self.frame_index!r} must be an int (negative: "
                       "from the end)")

  @property
  def source(self) -> str:
    return media_name(self)


def as_guides(guides: Any) -> list[Guide]:
  """`guides` (None, one `Guide` or a sequence of them) -> a list, checked by type."""
  if guides is None:
    return []
  if isinstance(guides, Guide):
    return [guides]
  if isinstance(guides, (str, bytes)) or not isinstance(guides, Sequence):
    raise UsageError(f"guides must be a list of ltx_jax.Guide, got {type(guides).__name__}")
  for i, g in enumerate(guides):
    if not isinstance(g, Guide):
      raise UsageError(f"guides[{i}] is a {type(g).__name__}; expected ltx_jax.Guide")
  return list(guides)


def resolve_frame(frame_index: int, num_frames: int) -> int:
  """A guide's frame_index -> the video frame it starts on (negative: num_frames + index, so
  -1 is the last frame, as ComfyUI's frame_idx). Not range-checked (`check_guides` is)."""
  return frame_index + num_frames if frame_index < 0 else frame_index


def check_guides(guides: Sequence[Guide], lengths: Sequence[int], num_frames: int, *,
                 temporal: int = 8) -> None:
  """Refuses, one line each, guides that do not fit a video of num_frames frames.

  lengths: per guide, its number of frames (1 for an image).
  """
  if len(lengths) != len(guides):
    raise UsageError(f"{len(lengths)} media lengths for {len(guides)} guides")
  for i, (g, f) in enumerate(zip(guides, lengths)):
    name = f"guide {i} ({g.source})"
    if not -num_frames <= g.frame_index < num_frames:
      raise UsageError(f"{name}: frame_index={g.frame_index} is outside the "
                       f"{num_frames}-frame video (allowed: {-num_frames}..{num_frames - 1})")
    start = resolve_frame(g.frame_index, num_frames)
    if f % temporal != 1:
      below = max(1, (f - 1) // temporal * temporal + 1)
      raise UsageError(f"{name}: a guide of {f} frames is not {temporal}N+1 (trim it to "
                       f"{below} frames)")
    if f > 1 and start % temporal:
      raise UsageError(f"{name}: a guide of {f} frames starts at frame 0 or on a multiple of "
                       f"{temporal}, got frame {start} (frame_index={g.frame_index})")
    if start + f > num_frames:
      raise UsageError(f"{name}: {f} frames from frame {start} run past the end of the "
                       f"{num_frames}-frame video (last start: {num_frames - f})")


def load_guides(guides: Sequence[Guide], num_frames: int, height: int, width: int, *,
                temporal: int = 8) -> list[tuple[int, float, np.ndarray]]:
  """Reads and checks every guide, then resizes it to height x width (centre crop to the
  aspect ratio, bilinear; no blur or compression) -> per guide (start frame, strength, f32
  pixels [F, height, width, 3] in [-1, 1]). All refusals come before any resize."""
  media = [read_media(g) for g in guides]  # uint8 [F, h, w, 3] each
  check_guides(guides, [m.shape[0] for m in media], num_frames, temporal=temporal)
  return [(resolve_frame(g.frame_index, num_frames), float(g.strength),
           prepare_media(m, height, width, rule='official', blur=False, crf=None))
          for g, m in zip(guides, media)]


class EncodedGuide(NamedTuple):
  """A guide after the VAE: normalised latents [B, f, h, w, C], its start frame (resolved,
  >= 0) and strength."""
  latents: Any
  frame: int
  strength: float


def append_guides(latents: np.ndarray, coords: np.ndarray, mask: np.ndarray | None,
                  guides: Sequence[EncodedGuide], noise: Sequence[np.ndarray], *,
                  frame_rate: float, temporal: int = 8, spatial: int = 32, causal: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Appends each guide's tokens after the plan's: (latents [B, N, C], coords [1, 3, N] in
  (seconds, y px, x px), mask [B, N] or None for none) -> the same with N + sum of f*h*w.

  A guide's latent frame k is placed at pixel frame frame + max(k t + 1 - t, 0) with
  `causal` (else frame + k t), row y and column x at y s, x s; its tokens start at
  lerp(noise, guide, strength) (torch.lerp's arithmetic: exactly the guide at 1) with mask =
  strength. noise: per guide, N(0, 1) of the guide's latent shape [B, f, h, w, C].
  """
  latents = np.asarray(latents, np.float32)
  b, n, c = latents.shape
  mask = np.zeros((b, n), np.float32) if mask is None else np.asarray(mask, np.float32)
  if len(noise) != len(guides):
    raise UsageError(f"{len(noise)} noise arrays for {len(guides)} guides")
  out_latents, out_coords, out_mask = [latents], [np.asarray(coords, np.float32)], [mask]
  for g, eps in zip(guides, noise):
    z = np.asarray(g.latents, np.float32)
    z = np.broadcast_to(z, (b,) + z.shape[1:])  # [B, f, h, w, C]
    eps = np.asarray(eps, np.float32)
    if eps.shape[1:] != z.shape[1:] or eps.shape[0] not in (1, b):
      raise UsageError(f"noise for the guide at frame {g.frame} has shape {list(eps.shape)}; "
                       f"expected {list(z.shape)}")
    f, h, w = z.shape[1:4]
    out_latents.append(lerp(eps, z, float(g.strength)).reshape(b, f * h * w, c))
    pixel = pixel_coords(f, h, w, 1, temporal, spatial, causal, g.frame)  # [1, 3, f*h*w]
    pixel[:, 0] *= np.float32(1.0 / frame_rate)  # frames -> seconds, as the grid's coords
    out_coords.append(pixel)
    out_mask.append(np.full((b, f * h * w), g.strength, np.float32))
  return (np.concatenate(out_latents, axis=1), np.concatenate(out_coords, axis=2),
          np.concatenate(out_mask, axis=1))


def describe(guides: Sequence[Guide]) -> list[dict]:
  """The guides of a run as plain data (for the CLI's sidecar)."""
  return [{'media': g.source, 'kind': 'image' if g.image is not None else 'video',
           'frame_index': int(g.frame_index), 'strength': float(g.strength)} for g in guides]
