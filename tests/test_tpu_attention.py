"""The splash (Pallas TPU flash) attention kernel, run in Pallas interpret mode on the CPU.

Parity with XLA's reference attention (f32 relative L2 <= 1e-5, bf16 <= 2e-2) for self- and
cross-attention with text padding masks, head dims 64 and 128 (and padded small ones), lengths
that are not multiples of the block size; the whole transformer; context parallelism and the
tensor axis on 8 simulated devices (tests/tpu_attention_worker.py); the logits never in memory.
On a TPU (JAX_PLATFORMS=tpu) one more test compiles the kernel for real; never run so far.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import rel_l2
from ltx_jax import sharding
from ltx_jax.errors import UsageError
from ltx_jax.nn import tpu_attention

attention_lib = sys.modules['ltx_jax.nn.attention']


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
  monkeypatch.setenv(tpu_attention.INTERPRET_ENV, '1')


def qkv(seed, b, t, s, n, h, dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(k, (b, length, n, h), dtype)
               for k, length in zip(ks, (t, s, s)))


def text_bias(lengths, s):
  """The models' key-padding bias [B, 1, 1, S]: 0 keeps, -10000 drops."""
  keep = np.arange(s)[None] < np.asarray(lengths)[:, None]
  return jnp.asarray((1.0 - keep) * -10000.0, jnp.float32)[:, None, None]


def attend(name, q, k, v, bias=None, scale=None):
  """attention(...) with kernel `name`, jitted (eager interpret mode is much slower)."""
  fn = lambda q, k, v, bias: attention_lib.attention(q, k, v, bias, scale=scale,
                                                     implementation=name)
  with jax.default_matmul_precision('highest'):
    return jax.jit(fn)(q, k, v, bias)


@pytest.mark.parametrize('h', [64, 128])
@pytest.mark.parametrize('cross', [False, True])
def test_parity_f32(h, cross):
  """T = 300 and S = 77 / 300: 3 query blocks of 128 (the default for 300), the last padded."""
  t, s = 300, (77 if cross else 300)
  q, k, v = qkv(h + cross, 2, t, s, 2, h)
  bias = text_bias([50, 77], s) if cross else None
  got, want = attend('splash', q, k, v, bias), attend('xla', q, k, v, bias)
  assert got.shape == want.shape == (2, t, 2, h) and got.dtype == jnp.float32
  assert rel_l2(got, want) <= 1e-5


def test_parity_bf16_padded_head_dim_blocks_and_scale(monkeypatch):
  """bf16; head dim 24 (zero-padded to 64); 128 blocks registered as another kernel (3 x 2
  tiles; by default the 150 keys would take one 256 block); a scale."""
  q, k, v = qkv(3, 1, 300, 150, 3, 24, jnp.bfloat16)
  bias = text_bias([120], 150)
  monkeypatch.setitem(attention_lib._IMPLEMENTATIONS, 'splash_128', None)  # removed afterwards
  attention_lib.register_attention(
      'splash_128', *tpu_attention.make_splash(block_q=128, block_kv=128), per_device=True,
      key_bias_only=True)
  got = attend('splash_128', q, k, v, bias, scale=0.3)
  want = attend('xla', *(x.astype(jnp.float32) for x in (q, k, v)), bias, scale=0.3)
  assert got.dtype == jnp.bfloat16 and rel_l2(got, want) <= 2e-2


def test_logsumexp_and_fully_masked_row():
  """The log-sum-exp ring attention merges with; a row with every key dropped attends to all
  of them, as the additive -10000 bias makes XLA do (up to the f32 rounding of logits shifted
  by -10000: that row is compared with XLA without the bias)."""
  q, k, v = qkv(4, 2, 40, 30, 2, 64)
  bias = text_bias([0, 13], 30)
  with jax.default_matmul_precision('highest'):
    out, lse = jax.jit(tpu_attention.splash_attention, static_argnums=4)(q, k, v, bias, 0.125)
    xla = jax.jit(attention_lib.xla_with_lse, static_argnums=4)
    want_out, want_lse = xla(q, k, v, bias, 0.125)
    free_out, free_lse = xla(q, k, v, jnp.zeros_like(bias), 0.125)
  assert rel_l2(out[1], want_out[1]) <= 1e-5 and rel_l2(lse[1], want_lse[1]) <= 1e-6
  assert rel_l2(out[0], free_out[0]) <= 1e-5 and rel_l2(lse[0], free_lse[0]) <= 1e-6
  assert rel_l2(out[0], want_out[0]) <= 1e-3


def test_refusals(monkeypatch):
  q, k, v = qkv(5, 1, 8, 8, 1, 64)
  with pytest.raises(UsageError, match=r"bias \[B\|1, 1, 1, S\], got bias \(1, 1, 8, 8\)"):
    tpu_attention.splash_attention(q, k, v, jnp.zeros((1, 1, 8, 8)), 0.1)
  with pytest.raises(UsageError, match='block_q=100: must be a positive multiple of 128'):
    tpu_attention.make_splash(block_q=100)
  with pytest.raises(UsageError, match="unknown attention implementation 'flash'"):
    attention_lib.attention(q, k, v, implementation='flash')
  monkeypatch.setenv(tpu_attention.INTERPRET_ENV, '0')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  with pytest.raises(UsageError, match=f"TPU only .*{tpu_attention.INTERPRET_ENV}=1"):
    attention_lib.attention(q, k, v, implementation='splash')


def test_other_biases_run_on_xla():
  """attention='splash' with a bias the kernel does not take (T5's [1, N, T, S] relative
  positions) is XLA's attention, so one choice serves the whole pipeline."""
  q, k, v = qkv(6, 1, 8, 8, 2, 64)
  bias = jax.random.normal(jax.random.key(7), (1, 2, 8, 8))
  assert rel_l2(attend('splash', q, k, v, bias), attend('xla', q, k, v, bias)) == 0.0
  fn = lambda q: attention_lib.attention(q, q, q, bias, implementation='splash')
  assert 'pallas_call' not in str(jax.make_jaxpr(fn)(q))


def test_auto_picks_splash_on_tpu_only(monkeypatch):
  resolve = attention_lib.resolve_implementation
  key_bias, full_bias = jnp.zeros((2, 1, 1, 7)), jnp.zeros((1, 4, 7, 7))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert resolve('auto', jnp.float32, key_bias) == 'xla'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert resolve('auto', jnp.bfloat16, None) == 'cudnn'
  assert resolve('auto', jnp.float32, None) == 'xla'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'tpu')
  assert [resolve('auto', jnp.bfloat16, b) for b in (None, key_bias, full_bias)] == [
      'splash', 'splash', 'xla']  # T5's relative-position bias stays on XLA
  assert resolve('xla', jnp.float32, None) == 'xla'


def test_logits_never_materialised():
  """Compiled at 16384 tokens, splash's working memory stays far below the [N, T, S] f32
  logits (1 GiB), which XLA's reference attention does allocate."""
  q = jax.ShapeDtypeStruct((1, 16384, 1, 64), jnp.float32)
  logits = 16384 * 16384 * 4

  def temp_bytes(name):
    f = jax.jit(lambda q, k, v: attention_lib.attention(q, k, v, implementation=name))
    return f.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes('xla') >= logits
  assert temp_bytes('splash') < logits / 16


def test_context_parallel_and_tensor_axis_on_8_devices(tmp_path):
  """tests/tpu_attention_worker.py: splash under allgather / ring context parallelism, heads
  over 'tensor', rows over data or fsdp, against one-device XLA attention (f32)."""
  out = tmp_path / 'out.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                      'tpu_attention_worker.py'), str(out)],
                        env=env, capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  results = json.loads(out.read_text())
  assert results.pop('kernel_in_shard_map') is True
  # every size 1 on 8 devices: the TPU-slice default for a 27,588-token video
  assert results.pop('config_mesh') == {'data': 1, 'fsdp': 2, 'tensor': 1, 'context': 4}
  assert len(results) == 9, results  # 3 meshes x self / cross, 3 transformers
  bad = {case: err for case, err in results.items() if not err <= 1e-5}
  assert not bad, bad


@pytest.mark.parametrize('devices, tokens, rows, want', [
    (8, None, 2, (1, 8, 1, 1)),        # no video length: fsdp over every chip
    (8, 6080, 2, (1, 8, 1, 1)),        # 768x512x121: short, fsdp only
    (8, 27588, 2, (1, 2, 1, 4)),       # 1216x704x257: rows on fsdp, the rest on context
    (8, 27588, 3, (1, 2, 1, 4)),       # 3 rows (STG): context takes the 4 that divide the tokens
    (4, 27588, 2, (1, 2, 1, 2)),
    (16, 8192 * 3, 2, (1, 2, 1, 8)),
    (1, 27588, 2, (1, 1, 1, 1)),
])
def test_default_mesh_sizes(devices, tokens, rows, want):
  sizes = sharding.default_mesh_sizes(devices, tokens, rows)
  assert tuple(sizes[a] for a in sharding.MESH_AXES) == want


def test_default_mesh_and_config():
  mesh = sharding.default_mesh(27588)  # this process: one CPU device
  assert dict(mesh.shape) == {'data': 1, 'fsdp': 1, 'tensor': 1, 'context': 1}
  assert sharding.mesh_from_config({'data': 1, 'fsdp': 1, 'tensor': 1, 'context': 1}) is None


def test_default_block_sizes():
  """Block sizes from the lengths: large tiles unless they would pad much more than 128 does."""
  assert [tpu_attention.default_block(n) for n in (1, 77, 128, 200, 1000, 1100, 6897, 27588)] == [
      128, 128, 128, 256, 512, 128, 512, 512]


@pytest.mark.skipif(jax.default_backend() != 'tpu',
                    reason='needs a TPU: JAX_PLATFORMS=tpu pytest tests/test_tpu_attention.py')
@pytest.mark.parametrize('h', [64, 128])
def test_compiled_kernel_on_tpu(monkeypatch, h):
  """The kernel compiled by Mosaic (not interpreted) on a real TPU: 2B-like (h 64) and 13B-like
  (h 128) heads, self- and cross-attention, bf16 and f32. Not run so far: no TPU here (the
  f32 bound assumes Mosaic's f32 dots are full precision)."""
  monkeypatch.setenv(tpu_attention.INTERPRET_ENV, '0')
  q, k, v = qkv(8, 2, 4000, 4000, 4, h)
  _, kt, vt = qkv(9, 2, 4000, 128, 4, h)
  bias = text_bias([40, 128], 128)
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    cast = lambda *xs: [x.astype(dtype) for x in xs]
    want = attend('xla', q, k, v)
    assert rel_l2(attend('splash', *cast(q, k, v)), want) <= tol
    want = attend('xla', q, kt, vt, bias)
    assert rel_l2(attend('splash', *cast(q, kt, vt), bias), want) <= tol
