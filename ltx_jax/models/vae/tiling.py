"""Jitted, tiled encode and decode.

Large inputs are cut into a grid of overlapping tiles (latent frames x latent rows x latent
columns), all of one shape, so the per-tile function compiles once and device memory is bounded
by one tile. Tiles are blended with linear ramps over the middle of their overlaps (the quarter next to a
tile's edge, where padding stands in for missing neighbours, is dropped) and the weighted sum is
normalised by the summed weights (weights are separable, so the normaliser is a product of three
1-D sums). A temporal chunk that does not start the video begins with a "first frame" that the
causal model sees without its past; that frame (decode) or latent (encode) gets weight 0 and is
taken from the previous chunk. Accumulation happens on the host, in f32.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class TilingConfig:
  """Tile sizes and overlaps in latent units; tiling starts above a tile's size on any axis.

  The defaults tile 32x VAEs at 512 px with 192 px overlaps and 121-frame (8x) chunks that
  overlap by 4 latent frames. Blending drops a quarter of each overlap next to a tile's edge.
  """
  spatial_tile: int = 16
  spatial_overlap: int = 6
  temporal_tile: int = 16
  temporal_overlap: int = 4

  def __post_init__(self):
    if not 0 <= self.spatial_overlap < self.spatial_tile:
      raise ValueError(f"need 0 <= spatial_overlap < spatial_tile, got {self}")
    if not 1 <= self.temporal_overlap < self.temporal_tile:
      raise ValueError(f"need 1 <= temporal_overlap < temporal_tile, got {self}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Starts of equal tiles covering [0, length): stride tile - overlap, the last one flush
  with the end. One tile of the whole length when it fits."""
  if length <= tile:
    return [0]
  starts = list(range(0, length - tile, tile - overlap))
  return starts + [length - tile]


def _ramp(n: int) -> np.ndarray:
  """Rising weights over an overlap of n: 0 on the first quarter (the tile edge, where padding
  replaces the missing neighbours), linear over the middle half, 1 on the last quarter.
  The mirrored ramp of the other tile sums with it to 1 everywhere."""
  m = n // 4
  r = n - 2 * m
  return np.concatenate([np.zeros(m), np.arange(1, r + 1) / (r + 1), np.ones(m)])


def axis_weights(starts: list[int], size: int, scale: int, first_frame: int = 0
                 ) -> list[np.ndarray]:
  """Per-tile blend weights along one axis, in output units.

  starts/size are latent units; output tile i covers [starts[i] * scale, + out_size) with
  out_size = size * scale (spatial) or (size - 1) * scale + 1 (temporal, first_frame=1).
  Weights ramp over the overlap with each neighbour; with first_frame=1, the leading output of
  every tile but the first gets weight 0.
  """
  out = (size - 1) * scale + 1 if first_frame else size * scale
  spans = [(s * scale, s * scale + out) for s in starts]
  weights = []
  for i, (lo, hi) in enumerate(spans):
    w = np.ones(out, np.float32)
    skip = first_frame if i > 0 else 0
    w[:skip] = 0
    if i > 0:
      n = spans[i - 1][1] - lo - skip
      if n > 0:
        w[skip:skip + n] *= _ramp(n)
    if i + 1 < len(spans):
      n = hi - spans[i + 1][0] - first_frame
      if n > 0:
        w[out - n:] *= _ramp(n)[::-1]
    weights.append(w)
  return weights


@functools.partial(jax.jit, static_argnums=(0,))
def _decode_fn(graphdef, state, latents, timestep, key):
  return nnx.merge(graphdef, state).decoder(latents, timestep, key)


@functools.partial(jax.jit, static_argnums=(0,))
def _decode_tiles_fn(graphdef, state, tiles, timestep, keys):
  """tiles [R, B, f, h, w, C] (R tiles, one per device of a mesh), keys [R] or None."""
  decoder = nnx.merge(graphdef, state).decoder
  if keys is None:
    return jax.vmap(lambda z: decoder(z, timestep, None))(tiles)
  return jax.vmap(lambda z, k: decoder(z, timestep, k))(tiles, keys)


@functools.partial(jax.jit, static_argnums=(0,))
def _encode_fn(graphdef, state, video):
  return nnx.merge(graphdef, state).latent_mean(video)


def _resolve(tiling) -> TilingConfig | None:
  if tiling is False:
    return None
  return TilingConfig() if tiling is None or tiling is True else tiling


def _needs_tiles(t: TilingConfig | None, frames: int, height: int, width: int) -> bool:
  return t is not None and (frames > t.temporal_tile or height > t.spatial_tile
                            or width > t.spatial_tile)


def _grid(t: TilingConfig, frames: int, height: int, width: int):
  return (tile_starts(frames, t.temporal_tile, t.temporal_overlap),
          tile_starts(height, t.spatial_tile, t.spatial_overlap),
          tile_starts(width, t.spatial_tile, t.spatial_overlap))


def _blend(tiles, grid, sizes, scales, out_shape):
  """Weighted sum of `tiles(i, j, k) -> np.ndarray` over the grid, normalised."""
  (fs, hs, ws), (fn, hn, wn), (ft, st) = grid, sizes, scales
  wf = axis_weights(fs, fn, ft, first_frame=1)
  wh, ww = axis_weights(hs, hn, st), axis_weights(ws, wn, st)
  acc = np.zeros(out_shape, np.float32)
  norm = [np.zeros(n, np.float32) for n in out_shape[1:4]]
  for axis, (starts, weights, scale) in enumerate(((fs, wf, ft), (hs, wh, st), (ws, ww, st))):
    for s, w in zip(starts, weights):
      norm[axis][s * scale:s * scale + len(w)] += w
  for i, f0 in enumerate(fs):
    for j, h0 in enumerate(hs):
      for k, w0 in enumerate(ws):
        tile = tiles(i, j, k)
        w = wf[i][:, None, None] * wh[j][None, :, None] * ww[k][None, None, :]
        of, oh, ow = f0 * ft, h0 * st, w0 * st
        acc[:, of:of + tile.shape[1], oh:oh + tile.shape[2], ow:ow + tile.shape[3]] += (
            tile * w[None, :, :, :, None])
  denom = norm[0][:, None, None] * norm[1][None, :, None] * norm[2][None, None, :]
  return acc / denom[None, :, :, :, None]


def decode(model, latents, timestep=None, key=None, tiling=None, *, force: bool = False,
           mesh: jax.sharding.Mesh | None = None):
  """[B, F', H', W', C] -> [B, F, H, W, 3]; tiled when larger than `tiling` (or `force`).

  mesh: spread the tiles over its devices, one tile per device per round (single process);
  the result equals the sequential tiled decode.
  """
  t = _resolve(tiling)
  graphdef, state = nnx.split(model)
  b, f, h, w, _ = latents.shape
  if not (force or _needs_tiles(t, f, h, w)):
    return _decode_fn(graphdef, state, latents, timestep, key)
  cfg = model.config
  ft, st = cfg.temporal_compression, cfg.spatial_compression
  grid = _grid(t, f, h, w)
  sizes = (min(f, t.temporal_tile), min(h, t.spatial_tile), min(w, t.spatial_tile))

  def crop(i, j, k):
    f0, h0, w0 = grid[0][i], grid[1][j], grid[2][k]
    z = latents[:, f0:f0 + sizes[0], h0:h0 + sizes[1], w0:w0 + sizes[2]]
    sub = None if key is None else jax.random.fold_in(key, (i * 1000 + j) * 1000 + k)
    return z, sub

  def tile(i, j, k):
    z, sub = crop(i, j, k)
    return np.asarray(jax.device_get(_decode_fn(graphdef, state, z, timestep, sub)), np.float32)

  if mesh is not None and mesh.size > 1 and jax.process_count() == 1:
    tile = _parallel_tiles(crop, [len(g) for g in grid], mesh, graphdef, state, timestep)
  out_shape = (b, (f - 1) * ft + 1, h * st, w * st, cfg.out_channels)
  out = _blend(tile, grid, sizes, (ft, st), out_shape)
  return jnp.asarray(out, latents.dtype if hasattr(latents, 'dtype') else jnp.float32)


def _parallel_tiles(crop, counts, mesh, graphdef, state, timestep):
  """Decodes every tile up front, `mesh.size` at a time (one per device), and returns a lookup
  (i, j, k) -> tile in place of the sequential `tile` function."""
  from jax.sharding import NamedSharding, PartitionSpec
  index = [(i, j, k) for i in range(counts[0]) for j in range(counts[1]) for k in range(counts[2])]
  n = mesh.size
  done = {}
  for lo in range(0, len(index), n):
    chunk = index[lo:lo + n]
    chunk = chunk + [chunk[-1]] * (n - len(chunk))  # one compiled shape: pad the last round
    zs, keys = zip(*(crop(*ijk) for ijk in chunk))
    tiles = jnp.stack(zs)  # [n, B, f, h, w, C]
    tiles = jax.device_put(tiles, NamedSharding(
        mesh, PartitionSpec(mesh.axis_names, *(None,) * (tiles.ndim - 1))))
    keys = None if keys[0] is None else jnp.stack(keys)
    out = np.asarray(jax.device_get(_decode_tiles_fn(graphdef, state, tiles, timestep, keys)),
                     np.float32)
    for r, ijk in enumerate(index[lo:lo + n]):
      done[ijk] = out[r]
  return lambda i, j, k: done[(i, j, k)]


def encode(model, video, tiling=None, *, force: bool = False):
  """[B, F, H, W, 3] -> latent mean [B, F', H', W', C]; tiled in latent units like `decode`."""
  t = _resolve(tiling)
  graphdef, state = nnx.split(model)
  cfg = model.config
  ft, st = cfg.temporal_compression, cfg.spatial_compression
  b, frames, height, width, _ = video.shape
  f, h, w = (frames - 1) // ft + 1, height // st, width // st
  if not (force or _needs_tiles(t, f, h, w)):
    return _encode_fn(graphdef, state, video)
  grid = _grid(t, f, h, w)
  sizes = (min(f, t.temporal_tile), min(h, t.spatial_tile), min(w, t.spatial_tile))

  def tile(i, j, k):
    f0, h0, w0 = grid[0][i] * ft, grid[1][j] * st, grid[2][k] * st
    x = video[:, f0:f0 + (sizes[0] - 1) * ft + 1, h0:h0 + sizes[1] * st, w0:w0 + sizes[2] * st]
    return np.asarray(jax.device_get(_encode_fn(graphdef, state, x)), np.float32)

  out = _blend(tile, grid, sizes, (1, 1), (b, f, h, w, cfg.latent_channels))
  return jnp.asarray(out, video.dtype if hasattr(video, 'dtype') else jnp.float32)
