"""T5 encoders from llama.cpp GGUF files: every common tensor type, strictness, peak host memory.

The gguf package quantizes F16/BF16/Q8_0 but not the K-quants (it only dequantizes them), so
Q4_K, Q5_K and Q6_K tensors are built by hand: random packed bytes (any bit pattern is a valid
block) with their f16 super-block scales overwritten by small finite values. References run
transformers on the same weights dequantized by `gguf.quants.dequantize`.
"""

import os
import subprocess
import sys
import textwrap

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from transformers import T5Config as HFConfig
from transformers import T5EncoderModel

from builders import gguf_name, write_gguf
from conftest import randomize_torch_module, rel_l2
from ltx_jax.models.t5 import T5Config, load_text_encoder
from ltx_jax.weights import LoadError
from ltx_jax.weights.gguf_io import GGUFStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_kquant(shape, qtype, rng):
  """Valid K-quant bytes for a tensor of PyTorch `shape` (last dim a multiple of 256)."""
  _, type_size = gguf.GGML_QUANT_SIZES[qtype]
  rows, blocks = int(np.prod(shape[:-1])), shape[-1] // 256
  raw = rng.integers(0, 256, (rows, blocks, type_size), dtype=np.uint8)
  scale = lambda mag: (rng.uniform(0.5, 1.0, (rows, blocks, 1)) * mag).astype('<f2').view(np.uint8)
  if qtype in (Q.Q4_K, Q.Q5_K):  # d, dmin lead the block
    raw[..., 0:2] = scale(2e-4)
    raw[..., 2:4] = scale(2e-4)
  elif qtype == Q.Q6_K:  # d ends the block
    raw[..., -2:] = scale(5e-5)
  else:
    raise ValueError(qtype)
  return raw.reshape(*shape[:-1], blocks * type_size)


def encode(array, qtype, rng):
  """PyTorch-order f32 array -> (bytes or values to write, raw_dtype) for the gguf writer."""
  if qtype == Q.F32:
    return array.astype(np.float32), None
  if qtype == Q.F16:
    return array.astype(np.float16), None
  if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
    return random_kquant(array.shape, qtype, rng), qtype
  return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


SMALL = T5Config(vocab_size=64, d_model=256, num_heads=4, head_dim=64, d_ff=512, num_layers=2,
                 num_buckets=8, max_distance=128)


def hf_model(cfg: T5Config, seed=0):
  model = T5EncoderModel(HFConfig(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, num_heads=cfg.num_heads,
      d_ff=cfg.d_ff, num_layers=cfg.num_layers, feed_forward_proj='gated-gelu', dropout_rate=0.0,
      relative_attention_num_buckets=cfg.num_buckets,
      relative_attention_max_distance=cfg.max_distance, attn_implementation='eager')).eval()
  randomize_torch_module(model, seed=seed, std=0.05)
  return model


def quantized_pair(tmp_path, qtype, seed=0):
  """A GGUF file with 2-D weights in `qtype` and the transformers model holding the same values."""
  model = hf_model(SMALL, seed)
  rng = np.random.default_rng(seed)
  tensors, dequantized = {}, {}
  for key, value in model.state_dict().items():
    if key == 'encoder.embed_tokens.weight':
      continue  # tied to shared.weight
    array = value.numpy()
    kind = qtype if array.ndim == 2 and 'relative_attention_bias' not in key else Q.F32
    data, raw_dtype = encode(array, kind, rng)
    tensors[gguf_name(key)] = (data, raw_dtype)
    dequantized[key] = torch.from_numpy(
        gguf.quants.dequantize(data.view(np.uint8) if raw_dtype else data,
                               raw_dtype or kind).reshape(array.shape).astype(np.float32))
  dequantized['encoder.embed_tokens.weight'] = dequantized['shared.weight']
  model.load_state_dict(dequantized)
  path = tmp_path / f't5-{qtype.name}.gguf'
  write_gguf(path, SMALL, tensors)
  return path, model


@pytest.mark.parametrize('qtype', [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K],
                         ids=lambda q: q.name)
def test_parity(tmp_path, highest_precision, qtype):
  path, model = quantized_pair(tmp_path, qtype)
  rng = np.random.RandomState(0)
  ids = rng.randint(0, SMALL.vocab_size, (2, 19))
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
                ).last_hidden_state.numpy()
  te = load_text_encoder(path, dtype=jnp.float32)
  assert te.config == SMALL
  out = te(jnp.asarray(ids), jnp.asarray(mask))
  assert rel_l2(out, ref) <= 1e-5


def test_store_shapes_and_dtype(tmp_path):
  path, model = quantized_pair(tmp_path, Q.Q8_0)
  store = GGUFStore(path, dtype=jnp.bfloat16)
  # GGUF lists dims fastest-first; the store reports PyTorch order.
  assert store.shape('enc.blk.1.ffn_gate.weight') == (512, 256)
  assert store.shape('enc.blk.0.attn_rel_b.weight') == (8, 4)
  assert store.ggml_type('enc.blk.1.ffn_gate.weight') == Q.Q8_0
  gate = store.read('enc.blk.1.ffn_gate.weight')
  assert gate.dtype == jnp.bfloat16 and gate.shape == (512, 256)
  want = model.state_dict()['encoder.block.1.layer.1.DenseReluDense.wi_0.weight'].numpy()
  assert rel_l2(gate.astype(np.float32), want) < 1e-2  # bf16 rounding only
  assert store.get('general.architecture') == 't5encoder'
  assert store.get('t5encoder.block_count') == 2
  assert store.get('no.such.key', 7) == 7


def test_bf16_load(tmp_path):
  path, model = quantized_pair(tmp_path, Q.Q6_K)
  ids = np.arange(12)[None] % SMALL.vocab_size
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
  te = load_text_encoder(path, dtype=jnp.bfloat16)
  assert te.layers.ffn.wo.kernel.get_value().dtype == jnp.bfloat16
  out = te(jnp.asarray(ids), jnp.ones((1, 12), jnp.int32))
  assert rel_l2(out.astype(jnp.float32), ref) <= 3e-2


def _small_tensors():
  rng = np.random.default_rng(0)
  return {gguf_name(k): encode(v.numpy(), Q.F32, rng)
          for k, v in hf_model(SMALL).state_dict().items() if k != 'encoder.embed_tokens.weight'}


@pytest.mark.parametrize('edit,message', [
    (lambda t: t.pop('enc.blk.1.attn_v.weight'), r'missing: enc\.blk\.1\.attn_v\.weight'),
    (lambda t: t.update({'enc.blk.0.attn_extra.weight': (np.ones(4, np.float32), None)}),
     r'unexpected: enc\.blk\.0\.attn_extra\.weight'),
    (lambda t: t.update({'enc.blk.0.ffn_up.weight': (np.ones((256, 512), np.float32), None)}),
     r'wrong shape: enc\.blk\.0\.ffn_up\.weight'),
])
def test_strict(tmp_path, edit, message):
  tensors = _small_tensors()
  edit(tensors)
  write_gguf(tmp_path / 'bad.gguf', SMALL, tensors)
  with pytest.raises(LoadError, match=message):
    load_text_encoder(tmp_path / 'bad.gguf', dtype=jnp.float32)


def test_not_a_gguf(tmp_path):
  (tmp_path / 'junk.gguf').write_bytes(b'GGUF' + b'\0' * 10)
  with pytest.raises(ValueError, match='junk.gguf'):
    load_text_encoder(tmp_path / 'junk.gguf')
  with pytest.raises(FileNotFoundError, match='missing.gguf'):
    load_text_encoder(tmp_path / 'missing.gguf')


def test_wrong_architecture(tmp_path):
  write_gguf(tmp_path / 'llama.gguf', SMALL, _small_tensors(), arch='llama')
  with pytest.raises(ValueError, match="'llama'"):
    load_text_encoder(tmp_path / 'llama.gguf')


_MEASURE = textwrap.dedent('''
    import sys
    import jax, jax.numpy as jnp
    from flax import nnx
    from ltx_jax.models.t5 import load_text_encoder
    jnp.zeros(8).block_until_ready()  # start the backend before the baseline
    def status_kib(field):  # this process image only (ru_maxrss would include the fork's parent)
      with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ':'))
    base = status_kib('VmRSS')
    te = load_text_encoder(sys.argv[1], dtype=jnp.bfloat16)
    jax.block_until_ready(nnx.state(te))
    print(status_kib('VmHWM') - base)
''')


@pytest.mark.slow
def test_peak_host_memory(tmp_path):
  """Loading holds at most 1.25x the bf16 weights: one tensor at a time, no f32 model copy.

  Tensors are XXL-sized (4096 x 4096): with many small tensors glibc's heap keeps freed
  temporaries resident, which measures the allocator rather than the loader.
  """
  cfg = T5Config(vocab_size=8192, d_model=4096, num_heads=32, head_dim=128, d_ff=4096,
                 num_layers=2)
  rng = np.random.default_rng(0)
  square = rng.standard_normal((4096, 4096), np.float32)
  attn = square.astype(np.float16)
  ffn = gguf.quants.quantize(square, Q.Q8_0)
  norm = np.ones(cfg.d_model, np.float32)
  tensors = {'token_embd.weight': (rng.standard_normal((cfg.vocab_size, cfg.d_model), np.float32)
                                   .astype(np.float16), None),
             'enc.blk.0.attn_rel_b.weight': (np.zeros((32, cfg.num_heads), np.float32), None),
             'enc.output_norm.weight': (norm, None)}
  for i in range(cfg.num_layers):  # the same arrays everywhere keep generation fast
    for name in ('attn_q', 'attn_k', 'attn_v', 'attn_o'):
      tensors[f'enc.blk.{i}.{name}.weight'] = (attn, None)  # F16
    for name in ('ffn_gate', 'ffn_up', 'ffn_down'):
      tensors[f'enc.blk.{i}.{name}.weight'] = (ffn, Q.Q8_0)
    tensors[f'enc.blk.{i}.attn_norm.weight'] = (norm, None)
    tensors[f'enc.blk.{i}.ffn_norm.weight'] = (norm, None)
  path = tmp_path / 'big.gguf'
  write_gguf(path, cfg, tensors)
  del tensors, square, attn, ffn
  params = (cfg.vocab_size * cfg.d_model + cfg.num_buckets * cfg.num_heads + cfg.d_model
            + cfg.num_layers * (4 * cfg.d_model * cfg.num_heads * cfg.head_dim
                                + 3 * cfg.d_model * cfg.d_ff + 2 * cfg.d_model))
  bf16_kib = params * 2 / 1024
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT}
  run = subprocess.run([sys.executable, '-c', _MEASURE, str(path)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  growth_kib = int(run.stdout.split()[-1])
  print(f"file {path.stat().st_size / 2**20:.0f} MiB, bf16 weights {bf16_kib / 1024:.0f} MiB, "
        f"peak growth {growth_kib / 1024:.0f} MiB = {growth_kib / bf16_kib:.3f}x")
  assert growth_kib <= 1.25 * bf16_kib
