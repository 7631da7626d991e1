"""Fractional 3-D rotary position embedding of LTX-Video, all in f32.

Each token has a position (t, y, x) as a fraction of `max_pos`. Per axis, `dim // 6` frequencies
theta^linspace(0, 1) * pi/2 multiply (2 * pos - 1). The table is laid out frequency-major,
axis-minor, each angle repeated for a (real, imaginary) pair; the first `dim % 6` channels are
left unrotated (cos 1, sin 0). It rotates q and k across the full model width, before the head
split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def grid_positions(batch: int, num_frames: int, height: int, width: int,
                   scale: jax.Array | None, max_pos: tuple[int, int, int]) -> jax.Array:
  """Fractional positions of a latent grid in (f, h, w) token order -> [B, F*H*W, 3].

  With `scale` (per-axis latent-to-pixel factors, e.g. (8 / frame_rate, 32, 32)) positions are
  index * scale / max_pos; without it they are raw indices (diffusers' behaviour).
  """
  f, h, w = jnp.meshgrid(jnp.arange(num_frames, dtype=jnp.float32),
                         jnp.arange(height, dtype=jnp.float32),
                         jnp.arange(width, dtype=jnp.float32), indexing='ij')
  pos = jnp.stack([f, h, w], axis=-1).reshape(-1, 3)  # [N, 3]
  if scale is not None:
    pos = pos * jnp.asarray(scale, jnp.float32) / jnp.asarray(max_pos, jnp.float32)
  return jnp.broadcast_to(pos, (batch, *pos.shape))


def token_coords(grid: tuple[int, int, int], temporal: int, spatial: int,
                 frame_rate: float | jax.Array, causal: bool) -> np.ndarray | jax.Array:
  """Per-token (time in seconds, y, x in pixels) of a latent grid in (f, h, w) token order:
  the `video_coords` that `coord_positions` turns into fractions. A number `frame_rate` gives
  numpy f32 [1, 3, N]; an array of per-sample rates [B] (traced ones too: training) gives a
  jax f32 [B, 3, N].

  grid: latent (frames, height, width); temporal, spatial: the VAE's pixels per latent. With
  `causal` (official checkpoints' causal_temporal_positioning) latent frame f covers pixel
  frame max(f * t + 1 - t, 0), as the first latent holds a single frame; the arithmetic follows
  each reference (diffusers: f * (t / fps); official: f * t * (1 / fps)).
  """
  f, h, w = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in grid), indexing='ij')
  f, h, w = (a.reshape(1, -1) for a in (f, h, w))  # [1, N]
  if isinstance(frame_rate, (int, float, np.number)):
    xp, rate = np, np.float32(frame_rate)
    inverse, ratio = np.float32(1.0 / frame_rate), np.float32(temporal / frame_rate)
  else:
    xp, rate = jnp, jnp.asarray(frame_rate, jnp.float32).reshape(-1, 1)  # [B, 1]
    inverse, ratio = 1 / rate, temporal / rate
  if causal:
    t = np.maximum(f * temporal + 1 - temporal, 0) * inverse
  else:
    t = f * ratio
  t = xp.broadcast_to(t, (max(t.shape[0], 1), f.shape[1]))
  space = [xp.broadcast_to(a * np.float32(spatial), t.shape) for a in (h, w)]
  return xp.stack([t] + space, axis=1).astype(np.float32)  # [1 | B, 3, N]


def coord_positions(video_coords: jax.Array, max_pos: tuple[int, int, int]) -> jax.Array:
  """video_coords [B, 3, N] (frame time and pixel coordinates) -> fractions [B, N, 3]."""
  coords = jnp.swapaxes(video_coords.astype(jnp.float32), 1, 2)
  return coords / jnp.asarray(max_pos, jnp.float32)


def rope_tables(pos: jax.Array, dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """pos [B, N, 3] -> (cos, sin), each [B, N, dim] in f32."""
  n = dim // 6
  freqs = theta ** jnp.linspace(0.0, 1.0, n, dtype=jnp.float32) * jnp.pi / 2  # [n]
  angles = freqs * (pos[..., None] * 2 - 1)  # [B, N, 3, n]
  angles = jnp.swapaxes(angles, -1, -2).reshape(*pos.shape[:-1], 3 * n)  # frequency-major
  cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)  # [B, N, 6n]
  sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)
  pad = dim % 6
  if pad:
    cos = jnp.concatenate([jnp.ones((*cos.shape[:-1], pad), jnp.float32), cos], axis=-1)
    sin = jnp.concatenate([jnp.zeros((*sin.shape[:-1], pad), jnp.float32), sin], axis=-1)
  return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates channel pairs (x_2i, x_2i+1) of x [B, N, D] by the table angles; f32 inside."""
  xf = x.astype(jnp.float32)
  pairs = xf.reshape(*x.shape[:-1], -1, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  return (xf * cos + rotated * sin).astype(x.dtype)
