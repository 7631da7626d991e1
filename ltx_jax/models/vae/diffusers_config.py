"""Diffusers' `AutoencoderKLLTXVideo` config.json -> our block list, with each block's key prefix.

`VAEConfig.from_diffusers` (config.py) is the parser; this module holds its stage-by-stage replay,
which the loader also uses for the name map.

Diffusers nests blocks in stages (`down_blocks.i` holding resnets, `downsamplers.0` and a channel
changing `conv_out`; `up_blocks.i` holding `conv_in`, `upsamplers.0` and resnets). Replaying its
constructor stage by stage gives the flat official block list and, for every block, where its
tensors live in a diffusers state dict. This covers the three generations: 0.9.0 (plain strided
down convs, channel-changing ResNets), 0.9.1 (timestep-conditioned decoder, noise injection,
residual upsamplers) and 0.9.5+ (typed space-to-depth downsamplers, 2048-channel encoder).
"""

from __future__ import annotations

from typing import Any, Mapping

from ltx_jax.errors import DataError
from ltx_jax.models.vae.blocks import Block

_DOWNSAMPLERS = {'spatial': 'compress_space_res', 'temporal': 'compress_time_res',
                 'spatiotemporal': 'compress_all_res'}


def _ratio(big: int, small: int, what: str) -> int:
  if big % small:
    raise DataError(f"unsupported diffusers VAE config: {what} goes {big} <-> {small} channels")
  return big // small


def _encoder(cfg: Mapping[str, Any]) -> tuple[list[Block], list[str]]:
  channels = list(cfg.get('block_out_channels', (128, 256, 512, 512)))
  types = list(cfg.get('down_block_types', ['LTXVideoDownBlock3D'] * 4))
  layers = list(cfg.get('layers_per_block', (4, 3, 3, 3, 4)))
  scaling = list(cfg.get('spatio_temporal_scaling', (True, True, True, False)))
  down_types = list(cfg.get('downsample_type', ['conv'] * len(types)))
  is_095 = types[-1] == 'LTXVideo095DownBlock3D'
  n = len(channels) - (1 if is_095 else 0)
  blocks, prefixes = [], []
  out = channels[0]
  for i in range(n):
    cin = out
    out = channels[i + 1] if (is_095 or i + 1 < n) else channels[i]
    stage = f'down_blocks.{i}'
    if layers[i]:
      blocks.append(Block('res_x', layers[i]))
      prefixes.append(stage)
    if types[i] == 'LTXVideoDownBlock3D':
      if scaling[i]:
        blocks.append(Block('compress_all'))
        prefixes.append(f'{stage}.downsamplers.0')
      if cin != out:
        blocks.append(Block('res_x_y', multiplier=_ratio(out, cin, stage)))
        prefixes.append(f'{stage}.conv_out')
    elif types[i] == 'LTXVideo095DownBlock3D':
      if not scaling[i] or down_types[i] == 'conv':
        if cin != out:
          raise DataError(f"unsupported diffusers VAE config: {stage} changes channels "
                           "without a space-to-depth downsampler")
        if scaling[i]:
          blocks.append(Block('compress_all'))
          prefixes.append(f'{stage}.downsamplers.0')
      else:
        blocks.append(Block(_DOWNSAMPLERS[down_types[i]], multiplier=_ratio(out, cin, stage)))
        prefixes.append(f'{stage}.downsamplers.0')
    else:
      raise DataError(f"unknown diffusers down block type {types[i]!r}")
  blocks.append(Block('res_x', layers[-1]))
  prefixes.append('mid_block')
  return blocks, prefixes


def _decoder(cfg: Mapping[str, Any]) -> tuple[list[Block], list[str], int]:
  """Blocks and prefixes in execution order, and the channels left at the end."""
  channels = list(reversed(cfg.get('decoder_block_out_channels', (128, 256, 512, 512))))
  layers = list(reversed(cfg.get('decoder_layers_per_block', (4, 3, 3, 3, 4))))
  scaling = list(reversed(cfg.get('decoder_spatio_temporal_scaling', (True, True, True, False))))
  noise = list(reversed(cfg.get('decoder_inject_noise', (False,) * (len(channels) + 1))))
  residual = list(reversed(cfg.get('upsample_residual', (False,) * len(channels))))
  factor = list(reversed(cfg.get('upsample_factor', (1,) * len(channels))))
  timestep = cfg.get('timestep_conditioning', False)
  blocks = [Block('res_x', layers[0], inject_noise=noise[0])]
  prefixes = ['mid_block']
  prev = channels[0]
  for i in range(len(channels)):
    stage = f'up_blocks.{i}'
    cin, out = prev // factor[i], channels[i] // factor[i]
    if cin != out:
      if factor[i] != 1 or timestep or noise[i + 1]:
        raise DataError(f"unsupported diffusers VAE config: {stage}.conv_in with upsample factor "
                         "!= 1, timestep conditioning or noise injection does not run in diffusers")
      blocks.append(Block('res_x_y', multiplier=_ratio(cin, out, stage)))
      prefixes.append(f'{stage}.conv_in')
    if scaling[i]:
      blocks.append(Block('compress_all', multiplier=factor[i], residual=residual[i]))
      prefixes.append(f'{stage}.upsamplers.0')
    elif factor[i] != 1:
      raise DataError(f"unsupported diffusers VAE config: {stage} has an upsample factor but "
                       "no upsampler")
    if layers[i + 1]:
      blocks.append(Block('res_x', layers[i + 1], inject_noise=noise[i + 1]))
      prefixes.append(stage)
    elif timestep:
      raise DataError(f"unsupported diffusers VAE config: {stage} has no resnets")
    prev = out
  return blocks, prefixes, prev


def diffusers_layout(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
  """config.json -> (VAEConfig fields, diffusers prefix per encoder block, per decoder block).

  Decoder prefixes are listed in execution order (the reverse of the config's block list).
  `VAEConfig.from_diffusers` builds the config from the fields; the loader also needs the
  prefixes.
  """
  if cfg.get('patch_size_t', 1) != 1:
    raise DataError(f"unsupported diffusers VAE config: patch_size_t={cfg['patch_size_t']}")
  enc_blocks, enc_prefixes = _encoder(cfg)
  dec_blocks, dec_prefixes, dec_base = _decoder(cfg)
  fields = dict(
      encoder_blocks=tuple(enc_blocks), decoder_blocks=tuple(reversed(dec_blocks)),
      in_channels=cfg.get('in_channels', 3), out_channels=cfg.get('out_channels', 3),
      latent_channels=cfg.get('latent_channels', 128),
      encoder_base_channels=list(cfg.get('block_out_channels', (128,)))[0],
      decoder_base_channels=dec_base, patch_size=cfg.get('patch_size', 4),
      latent_log_var='uniform', spatial_padding_mode='zeros',
      timestep_conditioning=cfg.get('timestep_conditioning', False),
      encoder_causal=cfg.get('encoder_causal', True),
      causal_decoder=cfg.get('decoder_causal', False),
      scaling_factor=float(cfg.get('scaling_factor', 1.0)))
  return fields, enc_prefixes, dec_prefixes
