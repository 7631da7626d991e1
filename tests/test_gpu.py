"""GPU-only checks (`pytest -m gpu` with JAX_PLATFORMS=cuda on a GPU machine; skipped with the
reason elsewhere): cuDNN attention against XLA's f32 reference, the VAE's tiled and default
decode against the untiled one on the device, and fp8 GEMMs (cuBLASLt fp8 calls and error)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import rel_l2
from ltx_jax.models.vae import VAEConfig, init_vae
from ltx_jax.models.vae import tiling as tiling_lib
from ltx_jax.models.vae.tiling import TilingConfig
from ltx_jax.nn import attention

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize('masked', [False, True])
def test_cudnn_attention_matches_xla_f32(masked):
  rng = np.random.default_rng(0)
  b, t, s, n, h = 2, 1024, 256, 8, 64
  q = rng.standard_normal((b, t, n, h)).astype(np.float32)
  k = rng.standard_normal((b, s, n, h)).astype(np.float32)
  v = rng.standard_normal((b, s, n, h)).astype(np.float32)
  bias = None
  if masked:  # text padding: the last 100 keys of row 1 masked out
    keep = np.ones((b, s), bool)
    keep[1, -100:] = False
    bias = jnp.asarray(np.where(keep, 0.0, -1e9)[:, None, None, :], jnp.float32)
  with jax.default_matmul_precision('highest'):
    want = attention(q, k, v, bias, implementation='xla')
  got = attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)),
                  None if bias is None else bias.astype(jnp.bfloat16), implementation='cudnn')
  err = rel_l2(np.asarray(got, np.float32), want)
  print(f"cuDNN bf16 vs XLA f32 attention (masked={masked}): rel L2 {err:.2e}")
  assert err <= 2e-2


CONFIG = VAEConfig.from_official(dict(
    _class_name='CausalVideoAutoencoder', dims=3, latent_channels=8, norm_layer='pixel_norm',
    latent_log_var='uniform', use_quant_conv=False, patch_size=2, encoder_base_channels=16,
    decoder_base_channels=16, timestep_conditioning=True, spatial_padding_mode='replicate',
    encoder_blocks=[['res_x', 1], ['compress_all_res', {'multiplier': 2}], ['res_x', 1]],
    decoder_blocks=[['res_x', 1], ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['res_x', 1]]))


def test_tiled_and_default_decode_on_gpu():
  vae = init_vae(CONFIG)
  f, h, w = np.meshgrid(np.arange(17), np.arange(40), np.arange(48), indexing='ij')
  z = np.stack([np.sin(0.08 * f + c) * np.cos(0.08 * h - c) + 0.5 * np.sin(0.08 * w + c)
                for c in range(8)], -1)[None].astype(np.float32)
  with jax.default_matmul_precision('highest'):
    full = vae.decode(z, 0.05, tiling=False)
    auto = vae.decode(z, 0.05)  # fits the device: the untiled program
    tiled = tiling_lib.decode(vae, z, 0.05, None, TilingConfig(spatial_tile=24, spatial_overlap=12,
                                                               temporal_tile=12,
                                                               temporal_overlap=6), force=True)
  assert np.array_equal(np.asarray(auto), np.asarray(full))
  err = rel_l2(tiled, full)
  print(f"tiled vs untiled decode on GPU: rel L2 {err:.2e}")
  assert err < 1e-2


def test_fp8_gemm_on_gpu():
  """`fp8_matmul` compiled with `FP8_COMPILER_OPTIONS` is a cuBLASLt fp8 GEMM on GPUs with fp8
  tensor cores (compute capability 8.9+), alone and in every Dense of a 13B-width block (the
  layer scan's body), and equals its emulation (the same quantisation, products in f32)."""
  import dataclasses
  from flax import nnx
  from ltx_jax.models.transformer import LTXVideoTransformer
  from ltx_jax.models.transformer.config import LTXV_13B
  from ltx_jax.nn import FP8_COMPILER_OPTIONS, Dense, compiler_options, fp8_matmul, set_matmul
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 512, 1024)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((1024, 2048)) * 0.03, jnp.float8_e4m3fn)
  fn = jax.jit(lambda a, b: fp8_matmul(a, b, jnp.bfloat16), compiler_options=FP8_COMPILER_OPTIONS)
  got = np.asarray(fn(x, w), np.float32)
  xf = np.asarray(x, np.float32)
  scale = np.float32(np.abs(xf).max()) / np.float32(448)
  xq = np.asarray(jnp.asarray(np.clip(xf / scale, -448, 448)).astype(jnp.float8_e4m3fn),
                  np.float32)
  # the GEMM applies the scale rounded to the compute dtype, to f32 sums of exact products
  want = (xq.astype(np.float64) @ np.asarray(w, np.float64)) * float(jnp.bfloat16(scale))
  err = rel_l2(got, want)
  exact = rel_l2(got, xf @ np.asarray(w, np.float32))
  cc = getattr(jax.devices()[0], 'compute_capability', '0')
  dense_calls = fn.lower(x, w).compile().as_text().count('cublas$lt$matmul$f8')
  default_calls = jax.jit(lambda a, b: fp8_matmul(a, b, jnp.bfloat16)).lower(
      x, w).compile().as_text().count('cublas$lt$matmul$f8')

  # A 13B-width block, 1 layer, 2 x 256 tokens: compiled only (abstract weights).
  config = dataclasses.replace(LTXV_13B, num_layers=1)
  model = nnx.eval_shape(lambda: LTXVideoTransformer(config, dtype=jnp.bfloat16,
                                                     param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  for _, m in nnx.iter_graph(model.blocks):
    if isinstance(m, Dense):
      m.kernel.set_value(jax.ShapeDtypeStruct(m.kernel.shape, jnp.float8_e4m3fn))
  assert set_matmul(model, 'fp8') == 10
  graph, state = nnx.split(model)
  step = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a, num_frames=4, height=8, width=8),
                 compiler_options=compiler_options(model))
  spec = jax.ShapeDtypeStruct
  block_calls = step.lower(state, spec((2, 256, 128), jnp.bfloat16),
                           spec((2, 128, 4096), jnp.bfloat16), spec((2,), jnp.float32),
                           spec((2, 128), jnp.float32)).compile().as_text().count(
                               'cublas$lt$matmul$f8')
  print(f"fp8 GEMM on {jax.devices()[0].device_kind} (cc {cc}): vs emulation {err:.2e}, "
        f"vs unquantised {exact:.2e}; cuBLASLt fp8 calls: Dense {dense_calls} "
        f"(XLA's default options: {default_calls}), 13B block {block_calls}")
  assert err < 5e-3 and exact < 5e-2  # bf16 output rounding; fp8 quantisation
  if float(cc) >= 8.9:
    assert dense_calls == 1
    # ten Dense layers; XLA may merge the cross-attention k and v GEMMs (same context input)
    assert block_calls >= 9
