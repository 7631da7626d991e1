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

from ltx_jax.errors import CheckpointFormatError, DataError
from ltx_jax.models.vae.blocks import Block
from ltx_jax.weights import values as V

_DOWNSAMPLERS = {'spatial': 'compress_space_res', 'temporal': 'compress_time_res',
                 'spatiotemporal': 'compress_all_res'}


def _ratio(big: int, small: int, what: str) -> int:
  if big % small:
    raise DataError(f"unsupported diffusers VAE config: {what} goes {big} <-> {small} channels")
  return big // small


_W = 'VAE'


def _strings(cfg: Mapping[str, Any], key: str, allowed: tuple[str, ...], default
             ) -> list[str]:
  values = V.check_list(cfg.get(key, default), key, _W)
  return [V.check_choice(v, f'{key}[{i}]', allowed, _W) for i, v in enumerate(values)]


def _lengths(n: int, **lists) -> None:
  """Every per-stage list needs an entry for each of the n stages."""
  for key, (values, need) in lists.items():
    if len(values) < n + need:
      raise CheckpointFormatError(f"VAE config {key} has {len(values)} entries; {n} stages need "
                                  f"{n + need}")


def _encoder(cfg: Mapping[str, Any]) -> tuple[list[Block], list[str]]:
  channels = V.int_list(cfg, 'block_out_channels', 1, V.MAX_CHANNELS, (128, 256, 512, 512),
                        what=_W)
  types = _strings(cfg, 'down_block_types', ('LTXVideoDownBlock3D', 'LTXVideo095DownBlock3D'),
                   ['LTXVideoDownBlock3D'] * 4)
  layers = V.int_list(cfg, 'layers_per_block', 0, V.MAX_LAYERS, (4, 3, 3, 3, 4), what=_W)
  scaling = V.bool_list(cfg, 'spatio_temporal_scaling', (True, True, True, False), what=_W)
  down_types = _strings(cfg, 'downsample_type', ('conv', *_DOWNSAMPLERS), ['conv'] * len(types))
  if not channels or not types:
    raise CheckpointFormatError("VAE config: block_out_channels and down_block_types need at "
                                "least one entry")
  is_095 = types[-1] == 'LTXVideo095DownBlock3D'
  n = len(channels) - (1 if is_095 else 0)
  _lengths(n, down_block_types=(types, 0), layers_per_block=(layers, 1),
           spatio_temporal_scaling=(scaling, 0), downsample_type=(down_types, 0))
  if not layers[-1]:
    raise CheckpointFormatError("VAE config layers_per_block[-1]=0: the mid block needs at least "
                                "one layer")
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
      if out < cin:
        raise DataError(f"unsupported diffusers VAE config: {stage} goes from {cin} down to "
                        f"{out} channels")
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
  channels = V.int_list(cfg, 'decoder_block_out_channels', 1, V.MAX_CHANNELS,
                        (128, 256, 512, 512), what=_W)[::-1]
  n = len(channels)
  layers = V.int_list(cfg, 'decoder_layers_per_block', 0, V.MAX_LAYERS, (4, 3, 3, 3, 4),
                      what=_W)[::-1]
  scaling = V.bool_list(cfg, 'decoder_spatio_temporal_scaling', (True, True, True, False),
                        what=_W)[::-1]
  noise = V.bool_list(cfg, 'decoder_inject_noise', (False,) * (n + 1), what=_W)[::-1]
  residual = V.bool_list(cfg, 'upsample_residual', (False,) * n, what=_W)[::-1]
  factor = V.int_list(cfg, 'upsample_factor', 1, 64, (1,) * n, what=_W)[::-1]
  timestep = V.boolean(cfg, 'timestep_conditioning', False, what=_W)
  if not n:
    raise CheckpointFormatError("VAE config decoder_block_out_channels needs at least one entry")
  _lengths(n, decoder_layers_per_block=(layers, 1), decoder_spatio_temporal_scaling=(scaling, 0),
           decoder_inject_noise=(noise, 1), upsample_residual=(residual, 0),
           upsample_factor=(factor, 0))
  if not layers[0]:
    raise CheckpointFormatError("VAE config decoder_layers_per_block[-1]=0: the mid block needs "
                                "at least one layer")
  blocks = [Block('res_x', layers[0], inject_noise=noise[0])]
  prefixes = ['mid_block']
  prev = channels[0]
  for i in range(len(channels)):
    stage = f'up_blocks.{i}'
    cin, out = prev // factor[i], channels[i] // factor[i]
    if prev % factor[i] or channels[i] % factor[i] or cin < out:
      raise DataError(f"unsupported diffusers VAE config: {stage} goes {prev} -> {channels[i]} "
                      f"channels with upsample factor {factor[i]}")
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
  cfg = V.mapping(cfg, 'VAE config')
  V.choice(cfg, 'patch_size_t', [1], 1, what=_W)
  enc_blocks, enc_prefixes = _encoder(cfg)
  dec_blocks, dec_prefixes, dec_base = _decoder(cfg)
  fields = dict(
      encoder_blocks=tuple(enc_blocks), decoder_blocks=tuple(reversed(dec_blocks)),
      in_channels=V.integer(cfg, 'in_channels', 1, 64, 3, what=_W),
      out_channels=V.integer(cfg, 'out_channels', 1, 64, 3, what=_W),
      latent_channels=V.integer(cfg, 'latent_channels', 1, 4096, 128, what=_W),
      encoder_base_channels=V.int_list(cfg, 'block_out_channels', 1, V.MAX_CHANNELS, (128,),
                                       what=_W)[0],
      decoder_base_channels=dec_base, patch_size=V.integer(cfg, 'patch_size', 1, 64, 4, what=_W),
      latent_log_var='uniform', spatial_padding_mode='zeros',
      timestep_conditioning=V.boolean(cfg, 'timestep_conditioning', False, what=_W),
      encoder_causal=V.boolean(cfg, 'encoder_causal', True, what=_W),
      causal_decoder=V.boolean(cfg, 'decoder_causal', False, what=_W),
      scaling_factor=V.number(cfg, 'scaling_factor', 0.0, 1e6, 1.0, what=_W, open_low=True))
  return fields, enc_prefixes, dec_prefixes
