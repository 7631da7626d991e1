"""T5 encoder: parity with transformers' T5EncoderModel, full-size shapes, strict loading."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import T5Config as HFConfig
from transformers import T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

from conftest import randomize_torch_module, rel_l2
from ltx_jax.models.t5 import T5Config, T5Encoder, load_text_encoder
from ltx_jax.models.t5.model import relative_position_buckets
from ltx_jax.weights import LoadError
from ltx_jax.weights.safetensors_io import open_safetensors, write_safetensors


def hf_encoder(num_layers=2, num_heads=4, d_kv=8, d_model=32, d_ff=48, vocab=64, buckets=8,
               max_distance=20, seed=0):
  cfg = HFConfig(vocab_size=vocab, d_model=d_model, d_kv=d_kv, num_heads=num_heads, d_ff=d_ff,
                 num_layers=num_layers, feed_forward_proj='gated-gelu', dropout_rate=0.0,
                 relative_attention_num_buckets=buckets,
                 relative_attention_max_distance=max_distance, attn_implementation='eager')
  model = T5EncoderModel(cfg).eval()
  randomize_torch_module(model, seed=seed)
  return model


def inputs(batch, length, vocab, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(0, vocab, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[0, length * 2 // 3:] = 0  # padded tail
  if batch > 1:
    mask[-1, 1:] = 0  # every position padded but the first
  return ids, mask


def reference(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
                 ).last_hidden_state.float().numpy()


@pytest.mark.parametrize('num_layers,num_heads,d_kv,length', [
    (1, 1, 16, 7), (2, 4, 8, 40), (3, 6, 4, 130), (4, 2, 16, 23)])
def test_f32_parity(tmp_path, highest_precision, num_layers, num_heads, d_kv, length):
  model = hf_encoder(num_layers, num_heads, d_kv, seed=num_layers)
  model.save_pretrained(tmp_path)
  ids, mask = inputs(3, length, 64, seed=num_layers)
  te = load_text_encoder(tmp_path, dtype=jnp.float32)
  out = te(jnp.asarray(ids), jnp.asarray(mask))
  assert out.shape == (3, length, 32) and out.dtype == jnp.float32
  assert rel_l2(out, reference(model, ids, mask)) <= 1e-5


def test_no_mask_means_all_tokens(tmp_path, highest_precision):
  model = hf_encoder()
  model.save_pretrained(tmp_path)
  ids = np.random.RandomState(1).randint(0, 64, (2, 9))
  te = load_text_encoder(tmp_path, dtype=jnp.float32)
  assert rel_l2(te(jnp.asarray(ids)), reference(model, ids, np.ones_like(ids))) <= 1e-5


def test_bf16(tmp_path):
  model = hf_encoder(num_layers=3)
  model.save_pretrained(tmp_path)
  ids, mask = inputs(2, 30, 64)
  te = load_text_encoder(tmp_path, dtype=jnp.bfloat16)
  assert te.layers.attn.q.kernel.get_value().dtype == jnp.bfloat16
  out = te(jnp.asarray(ids), jnp.asarray(mask))
  assert out.dtype == jnp.bfloat16
  assert rel_l2(out.astype(jnp.float32), reference(model, ids, mask)) <= 3e-2


def test_bf16_compute_f32_params(tmp_path):
  model = hf_encoder()
  model.save_pretrained(tmp_path)
  ids, mask = inputs(2, 12, 64)
  te = load_text_encoder(tmp_path, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  assert te.embed.embedding.get_value().dtype == jnp.float32
  out = te(jnp.asarray(ids), jnp.asarray(mask)).astype(jnp.float32)
  assert rel_l2(out, reference(model, ids, mask)) <= 3e-2


def test_buckets_match_transformers():
  length = 300
  pos = torch.arange(length)
  want = T5Attention._relative_position_bucket(pos[None, :] - pos[:, None], bidirectional=True,
                                               num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(relative_position_buckets(length, 32, 128), want.numpy())


def test_xxl_shapes_and_axes():
  cfg = T5Config.xxl()
  te = nnx.eval_shape(lambda: T5Encoder(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  assert te.embed.embedding.shape == (32128, 4096)
  assert te.rel_bias.table.shape == (32, 64)
  assert te.layers.attn.q.kernel.shape == (24, 4096, 4096)
  assert te.layers.ffn.wi_0.kernel.shape == (24, 4096, 10240)
  assert te.layers.ffn.wo.kernel.shape == (24, 10240, 4096)
  for path, var in nnx.iter_graph(te):
    if isinstance(var, nnx.Param):
      axes = var.get_metadata()['out_sharding']
      assert len(axes) == len(var.shape), (path, axes)
      if path[0] == 'layers':
        assert axes[0] == 'layers', path
  n = sum(v.size for _, v in nnx.iter_graph(te) if isinstance(v, nnx.Param))
  assert n == 4_762_310_656  # T5 v1.1 XXL encoder (shared embedding counted once)
  out = nnx.eval_shape(lambda m, i: m(i, jnp.ones_like(i)), te,
                       jax.ShapeDtypeStruct((2, 256), jnp.int32))
  assert out.shape == (2, 256, 4096) and out.dtype == jnp.bfloat16


def test_config_from_hf():
  hf = {'vocab_size': 32128, 'd_model': 4096, 'd_kv': 64, 'num_heads': 64, 'd_ff': 10240,
        'num_layers': 24, 'relative_attention_num_buckets': 32,
        'relative_attention_max_distance': 128, 'layer_norm_epsilon': 1e-6,
        'feed_forward_proj': 'gated-gelu'}
  assert T5Config.from_hf(hf) == T5Config.xxl()
  with pytest.raises(ValueError, match='gated-GELU'):
    T5Config.from_hf({**hf, 'feed_forward_proj': 'relu'})


def test_sharded_repo_layout(tmp_path, highest_precision):
  """diffusers layout: repo/text_encoder/{config.json, model-0000x-of-0000y.safetensors, index}."""
  model = hf_encoder(num_layers=2)
  folder = tmp_path / 'text_encoder'
  folder.mkdir()
  model.config.to_json_file(folder / 'config.json')
  state = {k: v.numpy() for k, v in model.state_dict().items()}  # shared + embed_tokens
  names = sorted(state)
  weight_map = {}
  for shard, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
    fname = f'model-{shard + 1:05d}-of-00002.safetensors'
    write_safetensors(folder / fname, {k: state[k] for k in part})
    weight_map.update({k: fname for k in part})
  (folder / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  ids, mask = inputs(2, 10, 64)
  te = load_text_encoder(tmp_path, dtype=jnp.float32)
  assert rel_l2(te(jnp.asarray(ids), jnp.asarray(mask)), reference(model, ids, mask)) <= 1e-5


def _folder_with(tmp_path, edit):
  model = hf_encoder()
  model.save_pretrained(tmp_path / 'src')
  reader = open_safetensors(tmp_path / 'src')
  state = {k: np.array(reader.read(k)) for k in reader.keys()}
  edit(state)
  out = tmp_path / 'bad'
  out.mkdir()
  (out / 'config.json').write_text((tmp_path / 'src' / 'config.json').read_text())
  write_safetensors(out / 'model.safetensors', state)
  return out


@pytest.mark.parametrize('edit,message', [
    (lambda s: s.pop('encoder.block.1.layer.1.DenseReluDense.wo.weight'),
     r'missing: encoder\.block\.1\.layer\.1\.DenseReluDense\.wo\.weight'),
    (lambda s: s.update({'encoder.block.0.layer.0.SelfAttention.extra.weight': np.ones(3)}),
     r'unexpected: encoder\.block\.0\.layer\.0\.SelfAttention\.extra\.weight'),
    (lambda s: s.update({'encoder.final_layer_norm.weight': np.ones(31, np.float32)}),
     r'wrong shape: encoder\.final_layer_norm\.weight'),
])
def test_strict_loading(tmp_path, edit, message):
  with pytest.raises(LoadError, match=message):
    load_text_encoder(_folder_with(tmp_path, edit), dtype=jnp.float32)


def test_bad_source(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a T5 text encoder'):
    load_text_encoder(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='not a T5 text encoder'):
    load_text_encoder(tmp_path)  # an empty folder
