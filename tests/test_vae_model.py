"""VAE: full-size shapes and parameter counts, config mapping, strict loading, noise injection."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from ltx_jax.models.vae import (LTXV_VAE_090, LTXV_VAE_098, abstract_vae, init_vae,
                                VAEConfig, load_vae)
from ltx_jax.models.vae.config import LTXV_090_OFFICIAL, LTXV_098_OFFICIAL
from ltx_jax.models.vae.layers import patchify, unpatchify
from ltx_jax.weights import LoadError, write_safetensors

# Released 0.9.5-0.9.8 VAE, counted by instantiating both references on the meta device.
LTXV_098_PARAMS = 1_246_913_522
LTXV_090_PARAMS = 419_193_649
DIFFUSERS_095 = dict(
    block_out_channels=(128, 256, 512, 1024, 2048), down_block_types=('LTXVideo095DownBlock3D',) * 4,
    decoder_block_out_channels=(256, 512, 1024), layers_per_block=(4, 6, 6, 2, 2),
    decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True,) * 4,
    decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
    downsample_type=('spatial', 'temporal', 'spatiotemporal', 'spatiotemporal'),
    upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2), timestep_conditioning=True,
    spatial_compression_ratio=32, temporal_compression_ratio=8)


def n_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize('config,official,count', [
    (LTXV_VAE_098, LTXV_098_OFFICIAL, LTXV_098_PARAMS),
    (LTXV_VAE_090, LTXV_090_OFFICIAL, LTXV_090_PARAMS)])
def test_real_config_parameter_count(config, official, count):
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  assert n_params(abstract_vae(config)) == count
  with torch.device('meta'):
    ref = CausalVideoAutoencoder.from_config(json.loads(json.dumps(official)))
  assert sum(p.numel() for p in ref.parameters()) == count


def test_real_config_shapes():
  vae = abstract_vae(LTXV_VAE_098, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  assert (LTXV_VAE_098.spatial_compression, LTXV_VAE_098.temporal_compression) == (32, 8)
  video = jax.ShapeDtypeStruct((1, 17, 64, 96, 3), jnp.bfloat16)
  latents = nnx.eval_shape(lambda m, v: m.latent_mean(v), vae, video)
  assert latents.shape == (1, 3, 2, 3, 128) == (1,) + LTXV_VAE_098.latent_shape(17, 64, 96)
  out = nnx.eval_shape(lambda m, z: m.decoder(z, jnp.full((1,), 0.05)), vae, latents)
  assert out.shape == video.shape and out.dtype == jnp.bfloat16
  kernel = vae.decoder.conv_in.kernel
  assert kernel.get_value().dtype == jnp.bfloat16
  assert kernel.out_sharding == (None, None, None, 'conv_in', 'conv_out')


def test_diffusers_configs_map_to_official_presets():
  from diffusers import AutoencoderKLLTXVideo
  with torch.device('meta'):
    d095 = AutoencoderKLLTXVideo(**DIFFUSERS_095)
    d090 = AutoencoderKLLTXVideo()
  assert VAEConfig.from_diffusers(dict(d095.config)) == LTXV_VAE_098
  assert sum(p.numel() for p in d095.parameters()) == LTXV_098_PARAMS
  assert VAEConfig.from_diffusers(dict(d090.config)).encoder_blocks == LTXV_VAE_090.encoder_blocks
  assert VAEConfig.from_diffusers(dict(d090.config)).decoder_blocks == LTXV_VAE_090.decoder_blocks
  assert VAEConfig.from_official(LTXV_VAE_098.to_official()) == LTXV_VAE_098


def test_patchify_orders_width_before_height():
  x = jnp.arange(4 * 6 * 3, dtype=jnp.float32).reshape(1, 1, 4, 6, 3)  # [B, F, H, W, C]
  p = patchify(x, 2)
  assert p.shape == (1, 1, 2, 3, 12)
  # channel index = c * 4 + p_w * 2 + p_h
  assert p[0, 0, 0, 0, 1] == x[0, 0, 1, 0, 0]  # p_h = 1
  assert p[0, 0, 0, 0, 2] == x[0, 0, 0, 1, 0]  # p_w = 1
  assert p[0, 0, 0, 0, 4] == x[0, 0, 0, 0, 1]  # c = 1
  np.testing.assert_array_equal(unpatchify(p, 2), x)


TINY = dict(_class_name='CausalVideoAutoencoder', dims=3, latent_channels=4, norm_layer='pixel_norm',
            latent_log_var='uniform', use_quant_conv=False, patch_size=1, encoder_base_channels=4,
            decoder_base_channels=4, timestep_conditioning=False,
            encoder_blocks=[['res_x', 1], ['compress_all', 1]],
            decoder_blocks=[['res_x', {'num_layers': 2, 'inject_noise': True}],
                            ['compress_all', {}]])


@pytest.fixture
def tiny_file(tmp_path):
  """An official single file of TINY written from our own randomly initialised model."""
  model = init_vae(VAEConfig.from_official(TINY))
  tensors = {}
  from ltx_jax.models.vae.loading import OFFICIAL_RENAMES, make_plan, official_table
  plan = make_plan(model, official_table(model.config), OFFICIAL_RENAMES)
  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  for path, src in plan.items():
    value = np.asarray(variables[path].get_value())
    if src.perm:
      value = np.transpose(value, np.argsort(src.perm))
    if src.reshape:
      value = value.reshape(value.shape + (1, 1))
    tensors['vae.' + src.keys[0]] = value
  tensors['vae.per_channel_statistics.channel'] = np.arange(4, dtype=np.float32)

  def write(name, edit=lambda t: t):
    path = tmp_path / name
    write_safetensors(path, edit(dict(tensors)), {'config': json.dumps({'vae': TINY})})
    return path
  return write


def test_load_roundtrip(tiny_file):
  vae = load_vae(tiny_file('ok.safetensors'))
  assert vae.config == VAEConfig.from_official(TINY)


@pytest.mark.parametrize('edit,needle', [
    (lambda t: {k: v for k, v in t.items() if 'conv_out.conv.bias' not in k},
     'missing: decoder.conv_out.conv.bias'),
    (lambda t: {**t, 'vae.decoder.extra.weight': np.zeros(3, np.float32)},
     'unexpected: decoder.extra.weight'),
    (lambda t: {**t, 'vae.encoder.conv_in.conv.weight': np.zeros((4, 3, 3, 3, 2), np.float32)},
     'wrong shape: encoder.conv_in.conv.weight'),
    (lambda t: {k: v for k, v in t.items() if 'std-of-means' not in k},
     'missing: per_channel_statistics.std-of-means'),
])
def test_load_errors_name_the_tensor(tiny_file, edit, needle):
  with pytest.raises(LoadError, match=needle.replace('.', r'\.')):
    load_vae(tiny_file('bad.safetensors', edit))


def test_noise_injection_statistics():
  """With a key, each noisy ResNet adds one N(0, 1) [H, W] field times the per-channel scale."""
  vae = init_vae(VAEConfig.from_official(TINY))
  block = vae.decoder.up_blocks[1].res_blocks[0]  # the res_x block with noise injection
  scale = np.array([0.5, 1.0, 2.0, 0.0], np.float32)
  block.per_channel_scale1.set_value(jnp.asarray(scale))
  block.conv2.kernel.set_value(jnp.zeros_like(block.conv2.kernel.get_value()))
  block.conv2.bias.set_value(jnp.zeros_like(block.conv2.bias.get_value()))
  x = jnp.zeros((2, 3, 64, 48, 4))
  key = jax.random.key(0)
  delta = block(x, causal=False, key=key) - block(x, causal=False)  # only the second noise
  assert np.allclose(delta, 0)  # conv2 zeroed: the first noise is washed out by pixel norm
  block.per_channel_scale2.set_value(jnp.asarray(scale))
  delta = np.asarray(block(x, causal=False, key=key) - block(x, causal=False))  # [B, F, H, W, C]
  field = delta[0, 0, :, :, 1]  # scale 1
  assert abs(field.mean()) < 0.05 and abs(field.std() - 1) < 0.05
  np.testing.assert_allclose(delta[..., 0], 0.5 * delta[..., 1], atol=1e-6)
  np.testing.assert_allclose(delta[..., 2], 2.0 * delta[..., 1], atol=1e-6)
  assert np.all(delta[..., 3] == 0)
  np.testing.assert_allclose(delta[1, 2], delta[0, 0], atol=1e-6)  # shared over batch, frames
  other = np.asarray(block(x, causal=False, key=jax.random.key(1)) - block(x, causal=False))
  assert not np.allclose(other, delta)
  z = jnp.ones((1, 2, 4, 4, 4))
  out_a = vae.decode(z, key=jax.random.key(3), tiling=False)
  out_b = vae.decode(z, key=jax.random.key(3), tiling=False)
  np.testing.assert_array_equal(out_a, out_b)  # explicit keys: reproducible
  assert not np.allclose(out_a, vae.decode(z, tiling=False))
