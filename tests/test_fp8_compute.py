"""fp8 compute: `set_matmul(model, 'fp8')` multiplies fp8 kernels with fp8-quantised
activations (one per-tensor scale); the maths equals a numpy emulation, and a tiny fp8
transformer stays close to its storage-only (upcast) run."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from conftest import rel_l2
from test_fp8 import fp8_file, run  # noqa: F401  (the module fixture and the forward pass)
from ltx_jax import UsageError, load_transformer
from ltx_jax.nn import fp8_matmul, set_matmul

FP8 = ml_dtypes.float8_e4m3fn


def test_fp8_matmul_equals_numpy_emulation():
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((3, 7, 64)) * 3).astype(np.float32)
  w = (rng.standard_normal((64, 32)) * 0.1).astype(FP8)
  with jax.default_matmul_precision('highest'):
    got = np.asarray(fp8_matmul(jnp.asarray(x), jnp.asarray(w), jnp.float32))
  scale = np.float32(np.abs(x).max()) / np.float32(448)
  xq = np.clip(x / scale, -448, 448).astype(FP8).astype(np.float32) * scale
  want = xq.astype(np.float64) @ w.astype(np.float64)
  assert rel_l2(got, want) < 1e-6
  exact = x.astype(np.float64) @ w.astype(np.float64)
  err = rel_l2(got, exact)
  print(f"fp8 activation quantisation error of one GEMM: rel L2 {err:.2e}")
  assert 1e-4 < err < 5e-2  # the activations really are quantised, and stay close


def test_fp8_compute_transformer_close_to_upcast(fp8_file, highest_precision):  # noqa: F811
  path, _ = fp8_file
  model = load_transformer(path, dtype=jnp.bfloat16, param_dtype='fp8')
  upcast = run(model)
  assert set_matmul(model, 'fp8') == 10  # q/k/v/out of both attentions + the FFN's two, stacked
  fp8 = run(model)
  err = rel_l2(fp8, upcast)
  print(f"tiny transformer, bf16 compute: fp8 GEMMs vs upcast fp8 weights: rel L2 {err:.2e}")
  # e4m3 keeps 3 mantissa bits: each quantised GEMM input carries ~3% relative rounding error.
  assert 0 < err < 5e-2
  set_matmul(model, 'default')
  assert np.array_equal(run(model), upcast)


def test_set_matmul_refusals(fp8_file):  # noqa: F811
  path, _ = fp8_file
  model = load_transformer(path, dtype=jnp.float32)
  with pytest.raises(UsageError, match="matmul='fp8' needs fp8 weights"):
    set_matmul(model, 'fp8')
  with pytest.raises(UsageError, match="matmul='int4'; choose one of default, fp8"):
    set_matmul(model, 'int4')


def test_from_pretrained_refuses_fp8_matmul_without_fp8_weights(tmp_path):
  from ltx_jax import LTXPipeline
  with pytest.raises(UsageError, match="pass param_dtype='fp8' too"):
    LTXPipeline.from_pretrained(tmp_path, matmul='fp8')
  with pytest.raises(UsageError, match="matmul='int8'; choose one of default, fp8"):
    LTXPipeline.from_pretrained(tmp_path, matmul='int8')


def test_cli_config_refuses_fp8_matmul_without_fp8_storage(tmp_path):
  from ltx_jax.cli import config as config_lib
  c = config_lib.base_config()
  c.model.source = str(tmp_path)
  c.output_dir = str(tmp_path / 'out')
  c.model.matmul = 'fp8'
  with pytest.raises(UsageError, match="set config.model.param_dtype='fp8'"):
    config_lib.check(c)
  c.model.param_dtype = 'fp4'
  with pytest.raises(UsageError, match="config.model.param_dtype='fp4'"):
    config_lib.check(c)
