"""Jitted, tiled encode and decode.

Large inputs are cut into a grid of overlapping tiles (latent frames x latent rows x latent
columns), all of one shape, so the per-tile function compiles once and device memory is bounded
by one tile. Tiles are blended with linear ramps over the middle of their overlaps (the quarter next to a
tile's edge, where padding stands in for missing neighbours, is dropped) and the weighted sum is
normalised by the summed weights (weights are separable, so the normaliser is a product of three
1-D sums). A temporal chunk that does not start the video begins with a "first frame" that the
causal model sees without its past; that frame (decode) or latent (encode) gets weight 0 and is
taken from the previous chunk. All tiles of an input run in one jitted program (a scan over
tiles, vmapped over a mesh's devices) that accumulates the blend in f32 on device, so a decode
is one dispatch and one transfer; by default tiling happens only when the untiled program does
not fit the memory budget (XLA's own memory accounting against the device's free memory).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ltx_jax.errors import UsageError


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
      raise UsageError(f"need 0 <= spatial_overlap < spatial_tile, got {self}")
    if not 1 <= self.temporal_overlap < self.temporal_tile:
      raise UsageError(f"need 1 <= temporal_overlap < temporal_tile, got {self}")


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


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=('as_uint8',))
def _decode_fn(graphdef, state, latents, timestep, key, *, as_uint8: bool = False):
  video = nnx.merge(graphdef, state).decoder(latents, timestep, key)
  return to_uint8(video) if as_uint8 else video


@functools.partial(jax.jit, static_argnums=(0,))
def _encode_fn(graphdef, state, video):
  return nnx.merge(graphdef, state).latent_mean(video)


def to_uint8(video: jax.Array) -> jax.Array:
  """[-1, 1] floats -> uint8 (on device), rounding half to even like diffusers' postprocessing
  through numpy."""
  return jnp.round(jnp.clip(video.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)


# ------------------------------------------------------------------------ when to tile

_BUDGET_ENV = 'LTX_JAX_VAE_MEMORY_GIB'


def memory_budget(device: jax.Device | None = None) -> int:
  """Bytes an untiled encode / decode may use on `device` (default: this process's first device).

  `LTX_JAX_VAE_MEMORY_GIB` sets it; otherwise 90% of the device's free memory (accelerators
  report it), or 50% of the host's available memory on CPU.
  """
  env = os.environ.get(_BUDGET_ENV)
  if env:
    try:
      gib = float(env)
    except ValueError:
      gib = -1.0
    if not gib > 0:
      raise UsageError(f"{_BUDGET_ENV}={env!r} must be a positive number of GiB")
    return int(gib * 2**30)
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and 'bytes_limit' in stats:
    return int(0.9 * (stats['bytes_limit'] - stats.get('bytes_in_use', 0)))
  try:
    available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    available = 8 * 2**30
  return int(0.5 * available)


_COMPILED: dict = {}  # (kind, graphdef, argument shapes/dtypes/shardings) -> (executable, bytes)


def _signature(tree) -> tuple:
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((jnp.shape(l), str(jnp.result_type(l)),
                         l.sharding if isinstance(l, jax.Array) else None) for l in leaves)


def _untiled_if_fits(kind: str, graphdef, state, x, timestep, key, budget: int | None,
                     as_uint8: bool = False):
  """The untiled program, compiled ahead of time for these arguments (their shapes and
  placements), when XLA's own accounting of it (arguments + temporaries + output) fits the
  budget; else None. The executable is kept and reused by the call."""
  args = (state, x) if kind == 'encode' else (state, x, timestep, key)
  if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args)):
    # Inside someone else's trace: no ahead-of-time compile; the caller's program decides.
    return (lambda: _decode_fn(graphdef, *args, as_uint8=as_uint8)) if kind == 'decode' else (
        lambda: _encode_fn(graphdef, *args))
  sig = (kind, graphdef, as_uint8, _signature(args))
  if sig not in _COMPILED:
    if kind == 'decode':
      lowered = _decode_fn.lower(graphdef, *args, as_uint8=as_uint8)
    else:
      lowered = _encode_fn.lower(graphdef, *args)
    compiled = lowered.compile()
    m = compiled.memory_analysis()
    need = 0 if m is None else (  # None: a backend without the analysis; assume it fits
        m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes)
    if len(_COMPILED) >= 16:
      _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[sig] = (compiled, int(need))
  compiled, need = _COMPILED[sig]
  budget = memory_budget() if budget is None else budget
  return (lambda: compiled(*args)) if need <= budget else None


def _resolve(tiling) -> TilingConfig | str | None:
  """None / 'auto' -> 'auto' (tile only when the untiled program does not fit the memory
  budget, with `TilingConfig()`'s tiles); True -> `TilingConfig()` above its sizes; a
  TilingConfig -> tile above its sizes; False -> never."""
  if tiling is None or tiling == 'auto':
    return 'auto'
  if tiling is False:
    return None
  if tiling is True:
    return TilingConfig()
  if isinstance(tiling, TilingConfig):
    return tiling
  raise UsageError(f"tiling={tiling!r}; pass None or 'auto' (tile when the untiled program does "
                   "not fit the memory budget), True, False or a TilingConfig")


def _needs_tiles(t: TilingConfig | None, frames: int, height: int, width: int) -> bool:
  return t is not None and (frames > t.temporal_tile or height > t.spatial_tile
                            or width > t.spatial_tile)


def _grid(t: TilingConfig, frames: int, height: int, width: int):
  return (tile_starts(frames, t.temporal_tile, t.temporal_overlap),
          tile_starts(height, t.spatial_tile, t.spatial_overlap),
          tile_starts(width, t.spatial_tile, t.spatial_overlap))


# ------------------------------------------------------------------ the tiled program


@dataclasses.dataclass(frozen=True)
class _TilePlan:
  """Where each tile reads and writes, and its blend weights, as arrays for one program.

  R tiles padded to a multiple of `per_round` (padding repeats tile 0 with weight 0).
  """
  in_starts: np.ndarray   # [R, 3] int32: (frame, row, column) of the tile in the input
  out_starts: np.ndarray  # [R, 3] int32: the same in the output
  wf: np.ndarray          # [R, tile_out_frames] f32
  wh: np.ndarray          # [R, tile_out_rows]
  ww: np.ndarray          # [R, tile_out_columns]
  norms: tuple            # three 1-D f32 normalisers over the whole output
  index: tuple            # (i, j, k) grid index of every real tile (for per-tile keys)
  in_sizes: tuple         # (frames, rows, columns) of an input tile
  out_shape: tuple        # (B, F, H, W, C) of the whole output


def _tile_plan(grid, sizes, in_scales, out_scales, out_shape, per_round) -> _TilePlan:
  """in_scales / out_scales: (temporal, spatial) input / output units per latent unit (the
  temporal axis of a tile covers (n - 1) * t + 1 units)."""
  (fs, hs, ws), (fn, hn, wn) = grid, sizes
  wf = axis_weights(fs, fn, out_scales[0], first_frame=1)
  wh, ww = axis_weights(hs, hn, out_scales[1]), axis_weights(ws, wn, out_scales[1])
  norms = []
  for axis, (starts, weights) in enumerate(((fs, wf), (hs, wh), (ws, ww))):
    scale = out_scales[0] if axis == 0 else out_scales[1]
    n = np.zeros(out_shape[1 + axis], np.float32)
    for s, w in zip(starts, weights):
      n[s * scale:s * scale + len(w)] += w
    norms.append(n)
  index = [(i, j, k) for i in range(len(fs)) for j in range(len(hs)) for k in range(len(ws))]
  pad = (-len(index)) % per_round
  rows = index + [index[0]] * pad
  live = np.array([1.0] * len(index) + [0.0] * pad, np.float32)[:, None]

  def starts(scales):
    return np.array([(fs[i] * scales[0], hs[j] * scales[1], ws[k] * scales[1])
                     for i, j, k in rows], np.int32)

  in_sizes = ((fn - 1) * in_scales[0] + 1, hn * in_scales[1], wn * in_scales[1])
  return _TilePlan(
      starts(in_scales), starts(out_scales),
      np.stack([wf[i] for i, _, _ in rows]) * live,
      np.stack([wh[j] for _, j, _ in rows]), np.stack([ww[k] for _, _, k in rows]),
      tuple(norms), tuple(index), in_sizes, tuple(out_shape))


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=('kind', 'in_sizes', 'out_shape', 'per_round', 'mesh',
                                    'as_uint8'))
def _tiled_fn(graphdef, state, x, timestep, keys, in_starts, out_starts, wf, wh, ww, norms, *,
              kind: str, in_sizes: tuple, out_shape: tuple, per_round: int, mesh,
              as_uint8: bool):
  """All tiles of one input in one program: a scan over rounds of `per_round` tiles (one per
  device of `mesh`, else one), each decoded (or encoded), weighted and added into an f32
  accumulator on device; then normalised (and converted to uint8)."""
  model = nnx.merge(graphdef, state)
  b, c = x.shape[0], x.shape[-1]
  tf, th, tw = wf.shape[1], wh.shape[1], ww.shape[1]

  def apply(z, key):  # one tile [B, f, h, w, C]
    if kind == 'decode':
      return model.decoder(z, timestep, key).astype(jnp.float32)
    return model.latent_mean(z).astype(jnp.float32)

  def crop(start):
    return jax.lax.dynamic_slice(x, (0, start[0], start[1], start[2], 0), (b, *in_sizes, c))

  def round_(acc, r):
    rows = r * per_round + jnp.arange(per_round)
    tiles = jax.vmap(crop)(in_starts[rows])  # [n, B, f, h, w, C]
    if mesh is not None:
      spec = PartitionSpec(tuple(mesh.axis_names), *(None,) * (tiles.ndim - 1))
      tiles = jax.lax.with_sharding_constraint(tiles, NamedSharding(mesh, spec))
    if keys is None:
      outs = jax.vmap(lambda z: apply(z, None))(tiles)
    else:
      outs = jax.vmap(apply)(tiles, keys[rows])
    for n in range(per_round):  # [B, tf, th, tw, C_out] each
      row = rows[n]
      w = wf[row][:, None, None] * wh[row][None, :, None] * ww[row][None, None, :]
      start = (0, out_starts[row, 0], out_starts[row, 1], out_starts[row, 2], 0)
      size = (b, tf, th, tw, out_shape[-1])
      here = jax.lax.dynamic_slice(acc, start, size)
      acc = jax.lax.dynamic_update_slice(acc, here + outs[n] * w[None, ..., None], start)
    return acc, None

  acc = jnp.zeros(out_shape, jnp.float32)
  acc, _ = jax.lax.scan(round_, acc, jnp.arange(in_starts.shape[0] // per_round))
  nf, nh, nw = norms
  out = acc / (nf[:, None, None] * nh[None, :, None] * nw[None, None, :])[None, ..., None]
  return to_uint8(out) if as_uint8 else out


def _per_round(mesh) -> int:
  return mesh.size if mesh is not None and mesh.size > 1 and jax.process_count() == 1 else 1


def _run_tiled(kind, model, x, timestep, key, t: TilingConfig, latent_shape, mesh, as_uint8):
  cfg = model.config
  ft, st = cfg.temporal_compression, cfg.spatial_compression
  b, f, h, w = latent_shape
  grid = _grid(t, f, h, w)
  sizes = (min(f, t.temporal_tile), min(h, t.spatial_tile), min(w, t.spatial_tile))
  per_round = _per_round(mesh)
  if kind == 'decode':
    out_shape = (b, (f - 1) * ft + 1, h * st, w * st, cfg.out_channels)
    plan = _tile_plan(grid, sizes, (1, 1), (ft, st), out_shape, per_round)
  else:
    out_shape = (b, f, h, w, cfg.latent_channels)
    plan = _tile_plan(grid, sizes, (ft, st), (1, 1), out_shape, per_round)
  keys = None
  if key is not None:
    real = [jax.random.fold_in(key, (i * 1000 + j) * 1000 + k) for i, j, k in plan.index]
    keys = jnp.stack(real + [real[0]] * (len(plan.in_starts) - len(real)))
  graphdef, state = nnx.split(model)
  return _tiled_fn(graphdef, state, x, timestep, keys, plan.in_starts, plan.out_starts,
                   plan.wf, plan.wh, plan.ww, plan.norms, kind=kind, in_sizes=plan.in_sizes,
                   out_shape=plan.out_shape, per_round=per_round,
                   mesh=mesh if per_round > 1 else None, as_uint8=as_uint8)


def decode(model, latents, timestep=None, key=None, tiling=None, *, force: bool = False,
           mesh: jax.sharding.Mesh | None = None, memory_budget_bytes: int | None = None,
           as_uint8: bool = False):
  """[B, F', H', W', C] -> [B, F, H, W, 3] on device, in one jitted program.

  tiling: None / 'auto' tiles (with `TilingConfig()`) only when the untiled program does not
    fit `memory_budget_bytes` (default `memory_budget()`); a TilingConfig (or True) tiles above
    its sizes; False never tiles; `force` tiles whatever the size.
  mesh: spread the tiles over its devices, one tile per device per round (single process);
    the result equals the sequential tiled decode.
  as_uint8: return uint8 frames (converted on device) instead of floats in [-1, 1].
  """
  t = _resolve(tiling)
  graphdef, state = nnx.split(model)
  b, f, h, w, _ = latents.shape
  if t == 'auto':
    run = None if force else _untiled_if_fits('decode', graphdef, state, latents, timestep,
                                              key, memory_budget_bytes, as_uint8)
    if run is not None:
      return run()
    t, force = TilingConfig(), True
  if not (force or _needs_tiles(t, f, h, w)):
    return _decode_fn(graphdef, state, latents, timestep, key, as_uint8=as_uint8)
  return _run_tiled('decode', model, latents, timestep, key, t or TilingConfig(),
                    (b, f, h, w), mesh, as_uint8)


def encode(model, video, tiling=None, *, force: bool = False,
           memory_budget_bytes: int | None = None):
  """[B, F, H, W, 3] -> latent mean [B, F', H', W', C]; tiled in latent units like `decode`
  (same `tiling` meaning), in one jitted program."""
  t = _resolve(tiling)
  graphdef, state = nnx.split(model)
  cfg = model.config
  ft, st = cfg.temporal_compression, cfg.spatial_compression
  b, frames, height, width, _ = video.shape
  f, h, w = (frames - 1) // ft + 1, height // st, width // st
  if t == 'auto':
    run = None if force else _untiled_if_fits('encode', graphdef, state, video, None, None,
                                              memory_budget_bytes)
    if run is not None:
      return run()
    t, force = TilingConfig(), True
  if not (force or _needs_tiles(t, f, h, w)):
    return _encode_fn(graphdef, state, video)
  return _run_tiled('encode', model, video, None, None, t or TilingConfig(), (b, f, h, w),
                    None, False)
