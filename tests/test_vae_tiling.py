"""Tiled encode / decode: one tile equals the untiled model, overlapping tiles stay close on
smooth inputs, tiles compile once, and the per-tile program's memory is bounded by the tile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import rel_l2
from ltx_jax.models.vae import VAEConfig, init_vae
from ltx_jax.models.vae import tiling as tiling_lib
from ltx_jax.models.vae.tiling import TilingConfig, axis_weights, tile_starts

CONFIG = VAEConfig.from_official(dict(
    _class_name='CausalVideoAutoencoder', dims=3, latent_channels=8, norm_layer='pixel_norm',
    latent_log_var='uniform', use_quant_conv=False, patch_size=2, encoder_base_channels=8,
    decoder_base_channels=8, timestep_conditioning=True, spatial_padding_mode='replicate',
    encoder_blocks=[['res_x', 1], ['compress_all_res', {'multiplier': 2}], ['res_x', 1]],
    decoder_blocks=[['res_x', 1], ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['res_x', 1]]))  # 4x spatial, 2x temporal


@pytest.fixture(scope='module')
def vae():
  return init_vae(CONFIG)


def smooth_latents(frames, height, width, channels=8, k=0.08):
  f, h, w, c = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width),
                           np.arange(channels), indexing='ij')
  z = np.sin(k * f + 0.9 * c) * np.cos(k * h - 0.5 * c) + 0.5 * np.sin(k * w + c)
  return z[None].astype(np.float32)


def test_tile_starts_and_weights():
  assert tile_starts(10, 16, 4) == [0]
  assert tile_starts(20, 8, 2) == [0, 6, 12]
  assert tile_starts(21, 8, 2) == [0, 6, 12, 13]
  # Weights of overlapping tiles sum to 1 wherever they overlap evenly.
  ws = axis_weights([0, 6], 8, 1)
  total = np.zeros(14)
  total[0:8] += ws[0]
  total[6:14] += ws[1]
  np.testing.assert_allclose(total, 1.0)
  # Temporal: the leading frame of a later chunk gets no weight.
  wt = axis_weights([0, 2], 4, 2, first_frame=1)
  assert wt[1][0] == 0 and wt[0][-1] > 0


def test_single_tile_equals_untiled(vae, highest_precision):
  z = np.random.default_rng(0).normal(size=(1, 3, 5, 6, 8)).astype(np.float32)
  big = TilingConfig(spatial_tile=8, spatial_overlap=2, temporal_tile=4, temporal_overlap=1)
  full = vae.decode(z, 0.05, tiling=False)
  tiled = tiling_lib.decode(vae, z, 0.05, None, big, force=True)
  assert rel_l2(tiled, full) < 1e-5
  video = np.random.default_rng(1).uniform(-1, 1, (1, 5, 20, 24, 3)).astype(np.float32)
  full = vae.encode(video, tiling=False)
  tiled = tiling_lib.encode(vae, video, big, force=True)
  assert rel_l2(tiled, full) < 1e-5


def test_overlapping_tiles_close_on_smooth_input(vae, highest_precision):
  # 3 temporal chunks x 2 x 3 spatial tiles; overlaps wider than the decoder's edge effects.
  z = smooth_latents(11, 16, 20)
  small = TilingConfig(spatial_tile=12, spatial_overlap=8, temporal_tile=8, temporal_overlap=6)
  full = vae.decode(z, 0.05, tiling=False)
  tiled = vae.decode(z, 0.05, tiling=small)
  assert tiled.shape == full.shape == (1, 21, 64, 80, 3)
  err = rel_l2(tiled, full)
  assert err < 1e-2, err


def test_tiles_compile_once(vae):
  # All tiles of a video run in one program: it compiles once and is reused by a second call.
  z = smooth_latents(9, 12, 16)
  small = TilingConfig(spatial_tile=6, spatial_overlap=2, temporal_tile=4, temporal_overlap=1)
  tiling_lib._tiled_fn.clear_cache()
  tiling_lib._decode_fn.clear_cache()
  vae.decode(z, 0.05, tiling=small)
  vae.decode(z + 1, 0.05, tiling=small)
  assert tiling_lib._tiled_fn._cache_size() == 1
  assert tiling_lib._decode_fn._cache_size() == 0


def test_tile_memory_bounded_by_tile(vae):
  """Compiled temp + output memory of a one-tile decode vs the full decode (XLA's own
  accounting); the tiled program's temporaries beyond its output and accumulator do not grow
  with the video."""
  graphdef, state = nnx.split(vae)

  def program_bytes(shape):
    z = jax.ShapeDtypeStruct(shape, jnp.float32)
    compiled = tiling_lib._decode_fn.lower(graphdef, state, z, 0.05, None).compile()
    m = compiled.memory_analysis()
    return m.temp_size_in_bytes + m.output_size_in_bytes

  tile = program_bytes((1, 4, 6, 6, 8))
  full = program_bytes((1, 9, 24, 32, 8))
  bigger = program_bytes((1, 17, 48, 64, 8))
  print(f"decode program memory: tile {tile / 2**20:.1f} MiB, full {full / 2**20:.1f} MiB, "
        f"4x full {bigger / 2**20:.1f} MiB")
  assert tile * 8 < full < bigger


def test_tiled_program_memory_bounded(vae):
  """The one-program tiled decode holds the f32 output accumulator and one tile's work."""
  graphdef, state = nnx.split(vae)
  small = TilingConfig(spatial_tile=6, spatial_overlap=2, temporal_tile=4, temporal_overlap=1)

  def tiled_bytes(shape):
    b, f, h, w, _ = shape
    grid = tiling_lib._grid(small, f, h, w)
    sizes = (4, 6, 6)
    out_shape = (b, (f - 1) * 2 + 1, h * 4, w * 4, 3)
    plan = tiling_lib._tile_plan(grid, sizes, (1, 1), (2, 4), out_shape, 1)
    z = jax.ShapeDtypeStruct(shape, jnp.float32)
    compiled = tiling_lib._tiled_fn.lower(
        graphdef, state, z, 0.05, None, plan.in_starts, plan.out_starts, plan.wf, plan.wh,
        plan.ww, plan.norms, kind='decode', in_sizes=plan.in_sizes, out_shape=out_shape,
        per_round=1, mesh=None, as_uint8=False).compile()
    m = compiled.memory_analysis()
    return m.temp_size_in_bytes, 4 * np.prod(out_shape)

  tile_temp, _ = tiled_bytes((1, 4, 6, 6, 8))
  big_temp, big_out = tiled_bytes((1, 17, 48, 64, 8))
  print(f"tiled program temp: one tile {tile_temp / 2**20:.1f} MiB, "
        f"17x48x64 latents {big_temp / 2**20:.1f} MiB (output {big_out / 2**20:.1f} MiB)")
  assert big_temp < 2 * big_out + 2 * tile_temp


def test_auto_tiles_only_beyond_budget(vae, highest_precision):
  z = smooth_latents(11, 16, 20)
  full = vae.decode(z, 0.05, tiling=False)
  auto = vae.decode(z, 0.05)  # fits the host's budget: the untiled program
  assert np.array_equal(np.asarray(auto), np.asarray(full))
  tiny_budget = vae.decode(z, 0.05, memory_budget_bytes=1)  # TilingConfig()'s tiles
  forced = tiling_lib.decode(vae, z, 0.05, None, TilingConfig(), force=True)
  assert rel_l2(tiny_budget, forced) < 1e-6
  frames = vae.decode(z, 0.05, as_uint8=True)
  assert frames.dtype == jnp.uint8
  want = np.round(np.clip(np.asarray(full) / 2 + 0.5, 0, 1) * 255)
  assert np.abs(np.asarray(frames, np.int32) - want).max() <= 1
