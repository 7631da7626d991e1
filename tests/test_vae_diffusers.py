"""VAE parity with diffusers' AutoencoderKLLTXVideo, one tiny config per generation, saved with
save_pretrained and read with our loader."""

import numpy as np
import pytest
import torch

from conftest import randomize_torch_module, rel_l2
from ltx_jax.models.vae import load_vae

LATENT = 8
# Spatial compression 8 (patch 2 and two halvings), temporal 4.
GENERATIONS = {
    '0.9.0': dict(
        block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_block_out_channels=(4, 8, 16, 16), decoder_layers_per_block=(1, 1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, False, False)),
    '0.9.1': dict(
        block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_block_out_channels=(8, 16), decoder_layers_per_block=(1, 2, 1),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(True, True, False),
        upsample_residual=(True, True), upsample_factor=(2, 2), timestep_conditioning=True),
    '0.9.5': dict(
        block_out_channels=(4, 8, 16, 32), layers_per_block=(1, 1, 1, 1),
        down_block_types=('LTXVideo095DownBlock3D',) * 3,
        downsample_type=('spatial', 'temporal', 'spatiotemporal'),
        spatio_temporal_scaling=(True, True, True),
        decoder_block_out_channels=(8, 16), decoder_layers_per_block=(1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False, False, False),
        upsample_residual=(True, True), upsample_factor=(2, 2), timestep_conditioning=True,
        spatial_compression_ratio=8, temporal_compression_ratio=4),
}


@pytest.fixture(scope='module', params=sorted(GENERATIONS))
def models(request, tmp_path_factory):
  from diffusers import AutoencoderKLLTXVideo
  torch_model = AutoencoderKLLTXVideo(latent_channels=LATENT, patch_size=2, scaling_factor=0.9,
                                      **GENERATIONS[request.param]).eval()
  randomize_torch_module(torch_model, seed=2)
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      if 'per_channel_scale' in name:
        p.zero_()  # noise injection is random; its statistics are tested separately
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
    torch_model.latents_mean.copy_(torch.linspace(-1, 1, LATENT))
    torch_model.latents_std.copy_(torch.linspace(0.5, 2, LATENT))
  repo = tmp_path_factory.mktemp('diffusers')
  torch_model.save_pretrained(repo / 'vae')
  ours = load_vae(repo)  # the repo folder above vae/
  return torch_model, ours, request.param


@pytest.mark.parametrize('frames,batch', [(1, 1), (9, 2), (17, 1)])
def test_diffusers_parity(models, frames, batch, highest_precision):
  torch_model, ours, generation = models
  h, w = 16, 24
  rng = np.random.default_rng(frames)
  video = rng.uniform(-1, 1, (batch, frames, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    x = torch.from_numpy(video).permute(0, 4, 1, 2, 3)
    ref_latent = torch_model.encode(x).latent_dist.mode().permute(0, 2, 3, 4, 1).numpy()
  latent = ours.encode(video, tiling=False)
  assert latent.shape == ref_latent.shape == (batch,) + ours.config.latent_shape(frames, h, w)
  enc_err = rel_l2(latent, ref_latent)
  assert enc_err < 1e-5

  z = rng.normal(size=ref_latent.shape).astype(np.float32)
  t = np.linspace(0.05, 0.3, batch).astype(np.float32) if generation != '0.9.0' else None
  with torch.no_grad():
    ref = torch_model.decode(torch.from_numpy(z).permute(0, 4, 1, 2, 3),
                             None if t is None else torch.from_numpy(t)).sample
  out = ours.decode(z, t, tiling=False)
  ref = ref.permute(0, 2, 3, 4, 1).numpy()
  assert out.shape == ref.shape == video.shape
  dec_err = rel_l2(out, ref)
  print(f'diffusers frames={frames}: encode {enc_err:.1e}, decode {dec_err:.1e}')
  assert dec_err < 1e-5


def test_diffusers_statistics(models):
  torch_model, ours, _ = models
  np.testing.assert_allclose(ours.latents_mean[...], torch_model.latents_mean.numpy())
  np.testing.assert_allclose(ours.latents_std[...], torch_model.latents_std.numpy())
  assert ours.config.scaling_factor == pytest.approx(0.9)
