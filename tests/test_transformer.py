"""Transformer parity with diffusers' LTXVideoTransformer3DModel and the official
Transformer3DModel, loaded from files each reference wrote or reads."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import randomize_torch_module, rel_l2
from ltx_jax import load_transformer
from ltx_jax.models.transformer import LTXV_13B, LTXV_2B, LTXVideoTransformer, TransformerConfig
from ltx_jax.weights import LoadError, write_safetensors

# (heads, head_dim): inner dims 16 (16 % 6 = 4), 36, 20 (20 % 6 = 2).
SHAPES = [(2, 8), (3, 12), (4, 5)]
GRID = (3, 4, 5)  # latent frames, height, width: non-square
SCALE = (8 / 25, 32.0, 32.0)


def diffusers_config(heads, head_dim, layers=2):
  return dict(in_channels=8, out_channels=8, num_attention_heads=heads,
              attention_head_dim=head_dim, cross_attention_dim=heads * head_dim,
              num_layers=layers, caption_channels=24)


def official_config(heads, head_dim, layers=2):
  return dict(
      num_attention_heads=heads, attention_head_dim=head_dim, in_channels=8, out_channels=8,
      num_layers=layers, cross_attention_dim=heads * head_dim, attention_bias=True,
      activation_fn='gelu-approximate', adaptive_norm='single_scale_shift',
      standardization_norm='rms_norm', norm_elementwise_affine=False, norm_eps=1e-6,
      caption_channels=24, qk_norm='rms_norm', positional_embedding_type='rope',
      positional_embedding_theta=10000.0, positional_embedding_max_pos=[20, 2048, 2048],
      timestep_scale_multiplier=1000, use_tpu_flash_attention=False)


@pytest.fixture(scope='module', params=SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def checkpoints(request, tmp_path_factory):
  """A random diffusers model saved with save_pretrained, and the same weights as an official
  single file that the official loader reads back."""
  from diffusers import LTXVideoTransformer3DModel
  heads, head_dim = request.param
  tmp = tmp_path_factory.mktemp('transformer')
  torch.manual_seed(0)
  ref = LTXVideoTransformer3DModel(**diffusers_config(heads, head_dim)).eval()
  randomize_torch_module(ref, seed=heads, std=0.1)
  ref.save_pretrained(tmp / 'diffusers' / 'transformer')

  renames = {'proj_in.': 'patchify_proj.', 'time_embed.': 'adaln_single.',
             '.norm_q.': '.q_norm.', '.norm_k.': '.k_norm.'}
  tensors = {}
  for k, v in ref.state_dict().items():
    for a, b in renames.items():
      k = k.replace(a, b) if (a.startswith('.') or k.startswith(a)) else k
    tensors['model.diffusion_model.' + k] = v.numpy()
  tensors['vae.unrelated'] = np.zeros(3, np.float32)  # other components share the file
  single = tmp / 'ltxv-tiny.safetensors'
  write_safetensors(single, tensors, {'config': json.dumps(
      {'transformer': official_config(heads, head_dim)})})
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  official = Transformer3DModel.from_pretrained(str(single)).float().eval()
  loaded = official.state_dict()
  assert len(loaded) == len(tensors) - 1
  for k, v in loaded.items():
    assert np.array_equal(v.numpy(), tensors['model.diffusion_model.' + k]), k
  return dict(ref=ref, official=official, folder=tmp / 'diffusers', single=single,
              heads=heads, head_dim=head_dim)


def inputs(seed, dim_text=24, batch=2, text_len=7, channels=8):
  rng = np.random.default_rng(seed)
  n = int(np.prod(GRID))
  x = rng.standard_normal((batch, n, channels)).astype(np.float32)
  ctx = rng.standard_normal((batch, text_len, dim_text)).astype(np.float32)
  mask = np.ones((batch, text_len), np.float32)
  mask[0, 4:] = 0  # padded prompt
  t = np.array([900.0, 37.5], np.float32)[:batch]
  t_tok = rng.uniform(0, 1000, (batch, n)).astype(np.float32)
  f, h, w = np.meshgrid(*(np.arange(g, dtype=np.float32) for g in GRID), indexing='ij')
  coords = np.stack([f.ravel() * SCALE[0], h.ravel() * SCALE[1], w.ravel() * SCALE[2]])
  coords = np.broadcast_to(coords, (batch, 3, n)).copy()
  coords[1, 0] += 3.5  # rows differ
  return dict(x=x, ctx=ctx, mask=mask, t=t, t_tok=t_tok, coords=coords)


@nnx.jit(static_argnames=('num_frames', 'height', 'width', 'skip_layer_strategy'))
def forward(model, x, ctx, t, mask, **kw):
  return model(x, ctx, t, mask, **kw)


def run_diffusers(ref, d, t, **kw):
  with torch.no_grad():
    return ref(hidden_states=torch.from_numpy(d['x']),
               encoder_hidden_states=torch.from_numpy(d['ctx']), timestep=torch.from_numpy(t),
               encoder_attention_mask=torch.from_numpy(d['mask']), return_dict=False,
               **kw)[0].numpy()


def test_parity_diffusers(checkpoints, highest_precision):
  model = load_transformer(checkpoints['folder'])
  d = inputs(1)
  for t in (d['t'], d['t_tok']):
    want = run_diffusers(checkpoints['ref'], d, t, num_frames=GRID[0], height=GRID[1],
                         width=GRID[2], rope_interpolation_scale=SCALE)
    got = forward(model, d['x'], d['ctx'], t, d['mask'], num_frames=GRID[0], height=GRID[1],
                  width=GRID[2], rope_interpolation_scale=jnp.array(SCALE))
    assert rel_l2(got, want) < 1e-5
    want = run_diffusers(checkpoints['ref'], d, t, video_coords=torch.from_numpy(d['coords']))
    got = forward(model, d['x'], d['ctx'], t, d['mask'], video_coords=d['coords'])
    assert rel_l2(got, want) < 1e-5
  # Without an interpolation scale diffusers uses raw grid indices as positions.
  want = run_diffusers(checkpoints['ref'], d, d['t'], num_frames=GRID[0], height=GRID[1],
                       width=GRID[2])
  got = forward(model, d['x'], d['ctx'], d['t'], d['mask'], num_frames=GRID[0],
                height=GRID[1], width=GRID[2])
  assert rel_l2(got, want) < 1e-5


def run_official(official, d, t, **kw):
  with torch.no_grad():
    return official(torch.from_numpy(d['x']), indices_grid=torch.from_numpy(d['coords']),
                    encoder_hidden_states=torch.from_numpy(d['ctx']),
                    timestep=torch.from_numpy(t / 1000.0),
                    encoder_attention_mask=torch.from_numpy(d['mask']), return_dict=False,
                    **kw)[0].numpy()


def test_parity_official(checkpoints, highest_precision):
  from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
  model = load_transformer(checkpoints['single'])
  d = inputs(2)
  for t in (d['t'], d['t_tok']):
    want = run_official(checkpoints['official'], d, t)
    got = forward(model, d['x'], d['ctx'], t, d['mask'], video_coords=d['coords'])
    assert rel_l2(got, want) < 1e-5
  # Spatio-temporal guidance: layer 1 perturbed for batch row 1 only.
  keep = np.array([[1, 1], [1, 0]], np.float32)
  strategies = {'attention_values': SkipLayerStrategy.AttentionValues,
                'attention_skip': SkipLayerStrategy.AttentionSkip,
                'transformer_block': SkipLayerStrategy.TransformerBlock}
  plain = forward(model, d['x'], d['ctx'], d['t'], d['mask'], video_coords=d['coords'])
  for ours, theirs in strategies.items():
    want = run_official(checkpoints['official'], d, d['t'],
                        skip_layer_mask=torch.from_numpy(keep), skip_layer_strategy=theirs)
    got = forward(model, d['x'], d['ctx'], d['t'], d['mask'], video_coords=d['coords'],
                  skip_layer_mask=keep, skip_layer_strategy=ours)
    assert rel_l2(got, want) < 1e-5
    assert rel_l2(got[1], plain[1]) > 1e-3  # the perturbation did something
    np.testing.assert_allclose(got[0], plain[0], rtol=1e-5, atol=1e-5)


def test_parity_bf16(checkpoints):
  model = load_transformer(checkpoints['folder'], dtype=jnp.bfloat16)
  assert model.proj_in.kernel.dtype == jnp.bfloat16
  d = inputs(3)
  want = run_diffusers(checkpoints['ref'], d, d['t'], video_coords=torch.from_numpy(d['coords']))
  got = forward(model, d['x'], d['ctx'], d['t'], d['mask'], video_coords=d['coords'])
  assert got.dtype == jnp.bfloat16
  assert rel_l2(np.asarray(got, np.float32), want) < 3e-2


@pytest.mark.parametrize('cfg, count', [(LTXV_2B, 1_923_385_472), (LTXV_13B, 13_042_569_344)])
def test_full_size_parameter_count(cfg, count):
  model = nnx.eval_shape(lambda: LTXVideoTransformer(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(model)
  assert sum(x.size for x in jax.tree.leaves(state)) == count
  assert model.blocks.attn1.to_q.kernel.shape == (cfg.num_layers, cfg.dim, cfg.dim)
  specs = jax.tree.leaves(nnx.get_partition_spec(state), is_leaf=lambda x: x is not None)
  assert all(s is not None for s in specs)  # every parameter has logical axis names
  assert model.blocks.ff.proj_in.kernel.get_metadata()['out_sharding'] == (
      'layers', 'embed', 'mlp')


def test_scan_compile_time():
  """Stacked, scanned blocks: 48 layers compile in well under 3x the time of one."""
  import time

  def compile_seconds(layers):
    cfg = TransformerConfig(num_layers=layers, num_heads=2, head_dim=8, in_channels=8,
                            out_channels=8, cross_attention_dim=16, caption_channels=24)
    model = LTXVideoTransformer(cfg, rngs=nnx.Rngs(0))
    graph, state = nnx.split(model)
    d = inputs(0)

    def f(state, x, ctx, t, mask):
      return nnx.merge(graph, state)(x, ctx, t, mask, num_frames=GRID[0], height=GRID[1],
                                     width=GRID[2])

    start = time.perf_counter()
    jax.jit(f).lower(state, d['x'], d['ctx'], d['t'], d['mask']).compile()
    return time.perf_counter() - start

  compile_seconds(1)  # warm up tracing caches
  one = min(compile_seconds(1) for _ in range(2))
  many = compile_seconds(48)
  assert many < 3 * one, (one, many)


def test_load_errors_name_the_tensor(checkpoints, tmp_path):
  from safetensors.numpy import load_file
  src = checkpoints['folder'] / 'transformer'
  tensors = load_file(src / 'diffusion_pytorch_model.safetensors')
  cfg = (src / 'config.json').read_text()
  cases = {
      'missing': lambda t: t.pop('transformer_blocks.1.attn2.to_k.bias'),
      'unexpected': lambda t: t.__setitem__('transformer_blocks.0.extra.weight',
                                            np.zeros(2, np.float32)),
      'wrong shape': lambda t: t.__setitem__('proj_out.weight', np.zeros((8, 3), np.float32)),
  }
  names = {'missing': 'transformer_blocks.1.attn2.to_k.bias',
           'unexpected': 'transformer_blocks.0.extra.weight', 'wrong shape': 'proj_out.weight'}
  for case, edit in cases.items():
    folder = tmp_path / case.replace(' ', '_') / 'transformer'
    folder.mkdir(parents=True)
    broken = dict(tensors)
    edit(broken)
    write_safetensors(folder / 'diffusion_pytorch_model.safetensors', broken)
    (folder / 'config.json').write_text(cfg)
    with pytest.raises(LoadError, match=rf"{case}: {names[case]}"):
      load_transformer(folder.parent)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    load_transformer(tmp_path / 'nowhere')
