"""fp8 weights: official-style fp8 files load and stay fp8 on device, match their f32 upcast, take
a quarter of the memory; `--dtype fp8` conversion makes the same from bf16/f32 sources."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import randomize_torch_module, rel_l2
from source_layouts import OFFICIAL_TRANSFORMER, layouts, official_transformer_tensors
from ltx_jax import load_transformer
from ltx_jax.weights.convert import convert
from ltx_jax.sharding import placed_bytes
from ltx_jax.sources import resolve_source
from ltx_jax.weights import precision, write_safetensors

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
SHAPE = dict(num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64, num_layers=2)


@pytest.fixture(scope='module')
def fp8_file(tmp_path_factory):
  """A tiny official single file stored like the official -fp8 releases."""
  from diffusers import LTXVideoTransformer3DModel
  torch.manual_seed(0)
  ref = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, caption_channels=32, **SHAPE)
  randomize_torch_module(ref, seed=4, std=0.1)
  folder = tmp_path_factory.mktemp('fp8')
  tensors = official_transformer_tensors(ref, fp8=True)
  write_safetensors(folder / 'ltxv-tiny-fp8.safetensors', tensors, {'config': json.dumps(
      {'transformer': dict(OFFICIAL_TRANSFORMER, **SHAPE)})})
  return folder / 'ltxv-tiny-fp8.safetensors', tensors


@nnx.jit
def forward(model, x, ctx, t):
  return model(x, ctx, t, None, num_frames=2, height=3, width=2)


def run(model):
  rng = np.random.default_rng(0)
  return np.asarray(forward(model, rng.standard_normal((2, 12, 8)).astype(np.float32),
                            rng.standard_normal((2, 5, 32)).astype(np.float32),
                            np.array([900.0, 30.0], np.float32)))


def test_fp8_file(fp8_file, highest_precision, capsys):
  path, tensors = fp8_file
  fp8 = load_transformer(path, dtype=jnp.float32, param_dtype='fp8')
  full = load_transformer(path, dtype=jnp.float32)  # everything upcast to f32 on load
  assert fp8.blocks.attn1.to_q.kernel.dtype == FP8 and fp8.blocks.ff.proj_out.kernel.dtype == FP8
  assert fp8.blocks.attn1.to_q.bias.dtype == jnp.bfloat16 and fp8.proj_in.kernel.dtype == jnp.bfloat16
  want = tensors['model.diffusion_model.transformer_blocks.1.attn2.to_v.weight']
  assert np.array_equal(np.asarray(fp8.blocks.attn2.to_v.kernel[1]).view(np.uint8),
                        want.T.view(np.uint8))  # the file's bytes, untouched
  assert rel_l2(run(fp8), run(full)) < 1e-5

  pairs = zip(jax.tree.leaves(nnx.state(fp8)), jax.tree.leaves(nnx.state(full)))
  kernels = [(a.nbytes, b.nbytes) for a, b in pairs if a.dtype == FP8]
  kernel_ratio = sum(a for a, _ in kernels) / sum(b for _, b in kernels)
  total_ratio = placed_bytes(fp8) / placed_bytes(full)
  assert kernel_ratio == 0.25
  assert total_ratio < 0.35  # tiny model: the non-block f32->bf16 tensors weigh more than at 2B
  with capsys.disabled():
    print(f"\nfp8 device bytes / f32: block kernels {kernel_ratio:.3f}, all weights "
          f"{total_ratio:.3f} ({placed_bytes(fp8)} / {placed_bytes(full)})")
  ms = resolve_source(path, allow_custom=True)
  assert ms.release.fp8 and ms.release.name == 'custom-dev-fp8'


def test_fp8_file_to_orbax(fp8_file, tmp_path):
  path, _ = fp8_file
  ms = resolve_source(path, allow_custom=True)
  convert(ms, tmp_path / 'ck', dtype='fp8', components=['transformer'], progress=False,
          log=lambda s: None)
  direct = load_transformer(path, dtype=jnp.float32, param_dtype='fp8')
  restored = load_transformer(tmp_path / 'ck', dtype=jnp.float32, param_dtype='fp8')
  for a, b in zip(jax.tree.leaves(nnx.state(direct)), jax.tree.leaves(nnx.state(restored))):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a, np.float32),
                                                 np.asarray(b, np.float32))
  assert np.array_equal(run(direct), run(restored))


def test_convert_to_fp8(tmp_path_factory, tmp_path, highest_precision):
  repo = layouts(tmp_path_factory.getbasetemp() / 'layouts')['diffusers']
  ms = resolve_source(repo, allow_custom=True)
  convert(ms, tmp_path / 'ck', dtype='fp8', components=['transformer'], progress=False,
          log=lambda s: None)
  direct = load_transformer(repo, dtype=jnp.float32, param_dtype='fp8')  # cast on load
  restored = load_transformer(tmp_path / 'ck', dtype=jnp.float32, param_dtype='fp8')
  assert restored.blocks.attn1.to_k.kernel.dtype == FP8
  assert np.array_equal(run(direct), run(restored))
  upcast = load_transformer(tmp_path / 'ck', dtype=jnp.float32)
  assert upcast.blocks.attn1.to_k.kernel.dtype == jnp.float32
  assert rel_l2(run(upcast), run(direct)) < 1e-5  # same values, different XLA programs


def test_fp8_range():
  assert precision.cast(np.array([448.0, -1.5], np.float32), FP8, name='w').dtype == FP8
  with pytest.raises(ValueError, match='do not fit float8_e4m3fn'):
    precision.cast(np.array([500.0], np.float32), FP8, name='w')
  with pytest.raises(ValueError, match='unknown weights dtype'):
    precision.parse('int4')
