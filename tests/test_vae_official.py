"""VAE parity with the official CausalVideoAutoencoder, through official single files that the
official loader reads back. Tiny block-list configs cover every block type, both padding modes,
timestep conditioning on and off, causal and non-causal decoders."""

import json

import jax
import numpy as np
import pytest
import torch

from conftest import randomize_torch_module, rel_l2
from ltx_jax.models.vae import load_vae
from ltx_jax.weights import write_safetensors

LATENT = 8
CONFIGS = {
    # zeros padding, timestep conditioning, noise injection, non-causal decoder;
    # every space-to-depth downsampler, compress_time / compress_space upsamplers.
    'res_blocks': dict(
        encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_space_res', {'multiplier': 2}],
                        ['compress_time_res', {'multiplier': 2}],
                        ['compress_all_res', {'multiplier': 2}], ['res_x_y', 1]],
        decoder_blocks=[['res_x', {'num_layers': 1, 'inject_noise': True}],
                        ['compress_all', {'residual': True, 'multiplier': 2}],
                        ['res_x_y', {'multiplier': 2}], ['compress_time', {}],
                        ['compress_space', {}], ['res_x', {'num_layers': 2, 'inject_noise': True}]],
        patch_size=2, encoder_base_channels=4, decoder_base_channels=4,
        spatial_padding_mode='zeros', timestep_conditioning=True, causal_decoder=False),
    # replicate padding, no timestep conditioning, causal decoder; strided-conv encoder blocks,
    # plain and residual compress_all upsamplers.
    'strided': dict(
        encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_space', 1], ['compress_time', 1],
                        ['compress_all', 1], ['compress_all_x_y', {'multiplier': 2}],
                        ['res_x', {'num_layers': 1}]],
        decoder_blocks=[['res_x', {'num_layers': 1}], ['compress_all', {'multiplier': 1}],
                        ['compress_space', {}], ['compress_time', {}],
                        ['compress_all', {'residual': True, 'multiplier': 2}],
                        ['res_x_y', {'multiplier': 2}], ['res_x', {'num_layers': 1}]],
        patch_size=1, encoder_base_channels=4, decoder_base_channels=4,
        spatial_padding_mode='replicate', timestep_conditioning=False, causal_decoder=True),
}


def official_config(name):
  return dict(_class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
              latent_channels=LATENT, norm_layer='pixel_norm', latent_log_var='uniform',
              use_quant_conv=False, scaling_factor=0.7, **CONFIGS[name])


def write_official_file(path, model, config):
  """Official single-file layout: `vae.` keys, statistics, and the `config` metadata JSON."""
  tensors = {f'vae.{k}': v.numpy() for k, v in model.state_dict().items()}
  rng = np.random.default_rng(0)
  stats = {'mean-of-means': rng.normal(size=LATENT), 'std-of-means': rng.uniform(0.5, 2, LATENT),
           'mean-of-stds': rng.uniform(size=LATENT), 'channel': np.arange(LATENT)}
  for k, v in stats.items():
    tensors[f'vae.per_channel_statistics.{k}'] = np.asarray(v, np.float32)
  write_safetensors(path, tensors, {'config': json.dumps({'vae': config})})
  return stats


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def models(request, tmp_path_factory):
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  config = official_config(request.param)
  torch_model = CausalVideoAutoencoder.from_config(json.loads(json.dumps(config)))
  randomize_torch_module(torch_model, seed=1)
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      if 'per_channel_scale' in name:
        p.zero_()  # noise injection is random; its statistics are tested separately
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  path = tmp_path_factory.mktemp('official') / 'ltxv.safetensors'
  stats = write_official_file(path, torch_model, config)
  reread = CausalVideoAutoencoder.from_pretrained(path).eval()  # the file is what it claims
  with jax.default_matmul_precision('highest'):
    ours = load_vae(path)
  return reread, ours, stats, config


@pytest.mark.parametrize('frames,batch', [(1, 1), (9, 2), (17, 1)])
def test_official_parity(models, frames, batch, highest_precision):
  torch_model, ours, _, config = models
  h, w = 16, 24  # non-square
  rng = np.random.default_rng(frames)
  video = rng.uniform(-1, 1, (batch, frames, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    x = torch.from_numpy(video).permute(0, 4, 1, 2, 3)
    ref_latent = torch_model.encoder(x)[:, :LATENT]
  latent = ours.encode(video, tiling=False)
  ref_latent_cl = ref_latent.permute(0, 2, 3, 4, 1).numpy()
  assert latent.shape == ref_latent_cl.shape == (batch,) + ours.config.latent_shape(frames, h, w)
  enc_err = rel_l2(latent, ref_latent_cl)
  assert enc_err < 1e-5

  z = rng.normal(size=ref_latent_cl.shape).astype(np.float32)
  t = np.linspace(0.05, 0.3, batch).astype(np.float32) if config['timestep_conditioning'] else None
  with torch.no_grad():
    ref = torch_model.decoder(torch.from_numpy(z).permute(0, 4, 1, 2, 3), target_shape=x.shape,
                              timestep=None if t is None else torch.from_numpy(t))
  out = ours.decode(z, t, tiling=False)
  ref = ref.permute(0, 2, 3, 4, 1).numpy()
  assert out.shape == ref.shape == video.shape
  dec_err = rel_l2(out, ref)
  print(f'official frames={frames}: encode {enc_err:.1e}, decode {dec_err:.1e}')
  assert dec_err < 1e-5


def test_official_statistics(models):
  _, ours, stats, config = models
  np.testing.assert_allclose(ours.latents_mean[...], stats['mean-of-means'], rtol=1e-6)
  np.testing.assert_allclose(ours.latents_std[...], stats['std-of-means'], rtol=1e-6)
  z = np.random.default_rng(0).normal(size=(1, 2, 2, 3, LATENT)).astype(np.float32)
  expect = (z - stats['mean-of-means']) * config['scaling_factor'] / stats['std-of-means']
  np.testing.assert_allclose(ours.normalize(z), expect, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours.denormalize(ours.normalize(z)), z, rtol=1e-5, atol=1e-5)
