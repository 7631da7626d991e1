"""Tiny model sources as the command line meets them: the released compression (8x temporal, 32x
spatial) and layer count (48, so every preset's STG layers exist), at toy width, in the
diffusers layout (with latent_upsampler/) and as an official single file beside a T5
text_encoder/ folder, a tokenizer/ and a spatial upscaler. Built once per test session."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from builders import LATENT, TEXT_DIM, tiny_repo
from conftest import randomize_torch_module
from source_layouts import OFFICIAL_TRANSFORMER, official_transformer_tensors
from test_upsampler import CONFIGS, official_model, write_official
from ltx_jax.weights import write_safetensors

LAYERS = 48  # the 13B releases' depth: every preset's skip_block_list fits
UPSAMPLER = CONFIGS['spatial_3d']


def _res(n: int, noise: bool = False) -> list:
  return ['res_x', {'num_layers': n, 'inject_noise': noise}]


# The 0.9.5+ official VAE layout at toy width (as ltx_jax.smoke's): 8x temporal, 32x spatial.
OFFICIAL_VAE = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
    latent_channels=LATENT, norm_layer='pixel_norm', latent_log_var='uniform',
    use_quant_conv=False, scaling_factor=1.0, patch_size=4, encoder_base_channels=8,
    decoder_base_channels=8, spatial_padding_mode='zeros', timestep_conditioning=True,
    causal_decoder=False,
    encoder_blocks=[_res(1), ['compress_all_res', {'multiplier': 2}],
                    ['compress_all_res', {'multiplier': 2}],
                    ['compress_all_res', {'multiplier': 1}], _res(1)],
    decoder_blocks=[_res(1), ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['compress_all', {'residual': True, 'multiplier': 1}], _res(1)])
# The same compression in diffusers' AutoencoderKLLTXVideo (patch 4, three 2x2x2 stages).
DIFFUSERS_VAE = dict(
    block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, False),
    decoder_block_out_channels=(8, 16, 32), decoder_layers_per_block=(1, 1, 1, 1),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False), upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2), timestep_conditioning=True, patch_size=4)
_CACHE: dict = {}


def _official_vae_tensors(seed: int = 3) -> dict:
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(OFFICIAL_VAE)))
  randomize_torch_module(vae, seed=seed)
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  out = {f'vae.{k}': v.numpy() for k, v in vae.state_dict().items()}
  rng = np.random.default_rng(seed)
  out['vae.per_channel_statistics.mean-of-means'] = rng.normal(size=LATENT).astype(np.float32)
  out['vae.per_channel_statistics.std-of-means'] = rng.uniform(0.5, 2, LATENT).astype(np.float32)
  return out


def cli_sources(base: Path) -> dict[str, Path]:
  """{'diffusers': folder, 'single': folder, 'upsampler': an official upscaler file}."""
  if base in _CACHE:
    return _CACHE[base]
  from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  repo = base / 'diffusers'
  tiny_repo(repo)  # T5, tokenizer, scheduler; the transformer and VAE are replaced below
  torch.manual_seed(0)
  transformer = LTXVideoTransformer3DModel(
      in_channels=LATENT, out_channels=LATENT, num_attention_heads=2, attention_head_dim=8,
      cross_attention_dim=16, num_layers=LAYERS, caption_channels=TEXT_DIM).eval()
  randomize_torch_module(transformer, seed=0, std=0.1)
  shutil.rmtree(repo / 'transformer')
  transformer.save_pretrained(repo / 'transformer')
  vae = AutoencoderKLLTXVideo(latent_channels=LATENT, scaling_factor=1.0, **DIFFUSERS_VAE).eval()
  randomize_torch_module(vae, seed=1)
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  shutil.rmtree(repo / 'vae')
  vae.save_pretrained(repo / 'vae')
  LTXLatentUpsamplerModel(**UPSAMPLER).save_pretrained(repo / 'latent_upsampler')

  single = base / 'single'
  single.mkdir()
  tensors = official_transformer_tensors(transformer)
  tensors.update(_official_vae_tensors())
  meta = {'transformer': dict(OFFICIAL_TRANSFORMER, num_layers=LAYERS), 'vae': OFFICIAL_VAE,
          'scheduler': {'_class_name': 'RectifiedFlowScheduler', 'sampler': 'LinearQuadratic'}}
  write_safetensors(single / 'ltxv-tiny.safetensors', tensors, {'config': json.dumps(meta)})
  for c in ('text_encoder', 'tokenizer'):
    shutil.copytree(repo / c, single / c)
  upsampler = single / 'ltxv-spatial-upscaler-0.9.8.safetensors'
  write_official(upsampler, official_model(UPSAMPLER), UPSAMPLER)
  _CACHE[base] = dict(diffusers=repo, single=single, upsampler=upsampler)
  return _CACHE[base]
