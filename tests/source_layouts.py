"""Tiny whole-model sources in every layout users keep, built once per test session."""

import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

from builders import SCHEDULER, gguf_name, tiny_repo, write_gguf
from conftest import randomize_torch_module
from release_metadata import SCHEDULER_LTX2, TRANSFORMER_090, shrink
from ltx_jax.models.t5 import T5Config
from ltx_jax.weights import write_safetensors

# The recorded 0.9.0 transformer entry (release_metadata.py), shrunk.
OFFICIAL_TRANSFORMER = shrink(TRANSFORMER_090, 'transformer')
OFFICIAL_VAE = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3, latent_channels=8,
    norm_layer='pixel_norm', latent_log_var='uniform', use_quant_conv=False, scaling_factor=1.0,
    encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_all_res', {'multiplier': 2}],
                    ['res_x', {'num_layers': 1}]],
    decoder_blocks=[['res_x', {'num_layers': 1, 'inject_noise': False}],
                    ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['res_x', {'num_layers': 1}]],
    patch_size=2, encoder_base_channels=4, decoder_base_channels=4,
    spatial_padding_mode='zeros', timestep_conditioning=True, causal_decoder=False)
RENAMES = {'proj_in.': 'patchify_proj.', 'time_embed.': 'adaln_single.', '.norm_q.': '.q_norm.',
           '.norm_k.': '.k_norm.'}
_CACHE: dict = {}


def official_transformer_tensors(torch_transformer, fp8: bool = False) -> dict:
  """diffusers state dict -> official `model.diffusion_model.*` names; fp8: as the official -fp8
  files, block linear weights float8_e4m3fn and everything else bf16."""
  out = {}
  for k, v in torch_transformer.state_dict().items():
    for a, b in RENAMES.items():
      k = k.replace(a, b) if (a.startswith('.') or k.startswith(a)) else k
    a = v.float().numpy()
    if fp8:
      linear = k.startswith('transformer_blocks.') and k.endswith('.weight') and a.ndim == 2
      a = a.astype(ml_dtypes.float8_e4m3fn if linear else ml_dtypes.bfloat16)
    out['model.diffusion_model.' + k] = a
  return out


def official_vae_tensors(seed: int = 3) -> dict:
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(OFFICIAL_VAE)))
  randomize_torch_module(vae, seed=seed)
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  out = {f'vae.{k}': v.numpy() for k, v in vae.state_dict().items()}
  rng = np.random.default_rng(seed)
  out['vae.per_channel_statistics.mean-of-means'] = rng.normal(size=8).astype(np.float32)
  out['vae.per_channel_statistics.std-of-means'] = rng.uniform(0.5, 2, 8).astype(np.float32)
  return out


def write_t5_gguf(path: Path, text_encoder) -> None:
  """A transformers T5EncoderModel as a llama.cpp `t5encoder` GGUF file (f32)."""
  cfg = T5Config.from_hf(text_encoder.config.to_dict())
  write_gguf(path, cfg, {gguf_name(k): (v.float().numpy(), None)
                         for k, v in text_encoder.state_dict().items()
                         if k != 'encoder.embed_tokens.weight'})  # tied to shared.weight


def layouts(base: Path) -> dict[str, Path]:
  """{'diffusers', 'single', 'single_override'} folders (plus 'torch': the reference models)."""
  if base in _CACHE:
    return _CACHE[base]
  repo = base / 'diffusers'
  transformer, _, text_encoder, _ = tiny_repo(repo)
  single = base / 'single'
  single.mkdir()
  tensors = official_transformer_tensors(transformer)
  tensors.update(official_vae_tensors())
  meta = {'transformer': OFFICIAL_TRANSFORMER, 'vae': OFFICIAL_VAE,
          'scheduler': dict(SCHEDULER_LTX2)}
  write_safetensors(single / 'ltxv-tiny.safetensors', tensors, {'config': json.dumps(meta)})
  write_t5_gguf(single / 't5-encoder-f32.gguf', text_encoder)
  shutil.copyfile(repo / 'tokenizer' / 'spiece.model', single / 'spiece.model')
  override = base / 'single_override'
  override.mkdir()
  (override / 'ltxv-tiny.safetensors').symlink_to(single / 'ltxv-tiny.safetensors')
  for c in ('vae', 'text_encoder', 'tokenizer'):
    shutil.copytree(repo / c, override / c)
  _CACHE[base] = dict(diffusers=repo, single=single, single_override=override)
  return _CACHE[base]


def fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
  """Lays out `folder` as a huggingface_hub cache entry of `repo_id` (revision main)."""
  entry = cache / ('models--' + repo_id.replace('/', '--'))
  snapshot = entry / 'snapshots' / ('0' * 40)
  shutil.copytree(folder, snapshot, symlinks=True)
  (entry / 'refs').mkdir(parents=True)
  (entry / 'refs' / 'main').write_text('0' * 40)


__all__ = ['SCHEDULER', 'layouts', 'fake_hub_cache', 'official_transformer_tensors']
