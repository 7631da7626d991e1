"""VAE configuration: the official block-list language, and diffusers' configs mapped into it.

The official `CausalVideoAutoencoder` describes its encoder and decoder as lists of blocks
(`["res_x", {"num_layers": 4}]`, `["compress_all_res", {"multiplier": 2}]`, ...). That list is our
ground truth; `from_official` reads the JSON found in a checkpoint's metadata and
`from_diffusers` rebuilds the same list from an `AutoencoderKLLTXVideo` config.json.

Block meanings (encoder / decoder):
  res_x            a mid block of `num_layers` ResNet blocks (decoder: optional noise injection and
                   timestep conditioning)
  res_x_y          one ResNet block changing channels by `multiplier` (x in the encoder, / in the decoder)
  compress_time, compress_space, compress_all
                   encoder: a strided causal conv (channels kept); decoder: a depth-to-space upsampler
                   (compress_all may be `residual` and divide channels by `multiplier`)
  compress_all_x_y encoder only: strided conv multiplying channels
  compress_*_res   encoder only: space-to-depth downsampler with an averaged residual path
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

ENCODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all',
                  'compress_all_x_y', 'compress_time_res', 'compress_space_res', 'compress_all_res')
DECODER_BLOCKS = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all')

# (time, height, width) strides of the compressing blocks.
STRIDES = {
    'compress_time': (2, 1, 1), 'compress_space': (1, 2, 2), 'compress_all': (2, 2, 2),
    'compress_all_x_y': (2, 2, 2), 'compress_time_res': (2, 1, 1),
    'compress_space_res': (1, 2, 2), 'compress_all_res': (2, 2, 2),
}
# Channel multiplier when a block does not name one (None: the block keeps its channels).
_DEFAULT_MULTIPLIER = {
    'encoder': {'res_x_y': 2, 'compress_all_x_y': 2, 'compress_time_res': 2,
                'compress_space_res': 2, 'compress_all_res': 2},
    'decoder': {'res_x_y': 2, 'compress_all': 1},
}
LOG_VAR_CHANNELS = {'per_channel': lambda c: 2 * c, 'uniform': lambda c: c + 1,
                    'constant': lambda c: c + 1}


@dataclasses.dataclass(frozen=True)
class Block:
  """One entry of a block list. `multiplier` is resolved (1 for blocks that keep channels)."""
  name: str
  num_layers: int = 1
  multiplier: int = 1
  residual: bool = False
  inject_noise: bool = False

  @property
  def stride(self) -> tuple[int, int, int]:
    return STRIDES.get(self.name, (1, 1, 1))

  def to_official(self) -> list:
    if self.name == 'res_x':
      return [self.name, {'num_layers': self.num_layers, 'inject_noise': self.inject_noise}]
    return [self.name, {'multiplier': self.multiplier, 'residual': self.residual,
                        'inject_noise': self.inject_noise}]


def parse_blocks(blocks, side: str) -> tuple[Block, ...]:
  """Official JSON block list (`[name, int | dict]` pairs) -> resolved `Block`s."""
  allowed = ENCODER_BLOCKS if side == 'encoder' else DECODER_BLOCKS
  out = []
  for name, params in blocks:
    if name not in allowed:
      raise ValueError(f"{side} block {name!r} is not supported (supported: {allowed})")
    params = {'num_layers': params} if isinstance(params, int) else dict(params)
    mult = params.get('multiplier', _DEFAULT_MULTIPLIER[side].get(name, 1))
    if side == 'decoder' and name in ('compress_time', 'compress_space'):
      mult, params['residual'] = 1, False  # the reference ignores their parameters
    out.append(Block(name, int(params.get('num_layers', 1)), int(mult),
                     bool(params.get('residual', False)),
                     bool(params.get('inject_noise', False)) and side == 'decoder'))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """The causal video VAE, in the official block-list language."""
  encoder_blocks: tuple[Block, ...]
  decoder_blocks: tuple[Block, ...]
  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 128
  encoder_base_channels: int = 128
  decoder_base_channels: int = 128
  patch_size: int = 4
  latent_log_var: str = 'uniform'
  spatial_padding_mode: str = 'zeros'  # 'zeros' | 'replicate' | 'reflect' | 'circular'
  timestep_conditioning: bool = False
  encoder_causal: bool = True
  causal_decoder: bool = False
  scaling_factor: float = 1.0

  def __post_init__(self):
    if self.latent_log_var not in LOG_VAR_CHANNELS:
      raise ValueError(f"latent_log_var {self.latent_log_var!r} is not supported "
                       f"(supported: {sorted(LOG_VAR_CHANNELS)})")
    if self.spatial_padding_mode not in ('zeros', 'replicate', 'reflect', 'circular'):
      raise ValueError(f"spatial_padding_mode {self.spatial_padding_mode!r} is not supported")

  @property
  def spatial_compression(self) -> int:
    """Pixels per latent pixel along height and width."""
    s = self.patch_size
    for b in self.encoder_blocks:
      s *= b.stride[1]
    return s

  @property
  def temporal_compression(self) -> int:
    """Frames per latent frame (after the first): F' = (F - 1) / t + 1."""
    t = 1
    for b in self.encoder_blocks:
      t *= b.stride[0]
    return t

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """[F', H', W', C] of the latents of a [F, H, W, 3] video."""
    t, s = self.temporal_compression, self.spatial_compression
    return ((frames - 1) // t + 1, height // s, width // s, self.latent_channels)

  def decoder_channels(self) -> int:
    """Channels after the decoder's conv_in: base times every multiplier on the way up."""
    c = self.decoder_base_channels
    for b in self.decoder_blocks:
      c *= b.multiplier
    return c

  def to_official(self) -> dict:
    """The official JSON config (as stored under metadata `config` -> `vae`)."""
    return {
        '_class_name': 'CausalVideoAutoencoder', 'dims': 3,
        'in_channels': self.in_channels, 'out_channels': self.out_channels,
        'latent_channels': self.latent_channels,
        'encoder_blocks': [b.to_official() for b in self.encoder_blocks],
        'decoder_blocks': [b.to_official() for b in self.decoder_blocks],
        'encoder_base_channels': self.encoder_base_channels,
        'decoder_base_channels': self.decoder_base_channels,
        'scaling_factor': self.scaling_factor, 'norm_layer': 'pixel_norm',
        'patch_size': self.patch_size, 'latent_log_var': self.latent_log_var,
        'use_quant_conv': False, 'causal_decoder': self.causal_decoder,
        'timestep_conditioning': self.timestep_conditioning,
        'spatial_padding_mode': self.spatial_padding_mode,
    }


def from_official(cfg: Mapping[str, Any] | str) -> VAEConfig:
  """The official `CausalVideoAutoencoder` JSON config (dict or JSON text) -> VAEConfig."""
  cfg = json.loads(cfg) if isinstance(cfg, str) else dict(cfg)
  dims = cfg.get('dims', 3)
  if (tuple(dims) if isinstance(dims, list) else dims) != 3:
    raise ValueError(f"only dims=3 VAEs are supported, got {dims}")
  if cfg.get('norm_layer', 'group_norm') != 'pixel_norm':
    raise ValueError(f"norm_layer {cfg.get('norm_layer', 'group_norm')!r} is not supported "
                     "(every released LTX-Video VAE uses pixel_norm)")
  if cfg.get('use_quant_conv', True):
    raise ValueError("use_quant_conv=True is not supported (released VAEs set it to false)")
  if cfg.get('normalize_latent_channels', False):
    raise ValueError("normalize_latent_channels=True is not supported")
  log_var = cfg.get('latent_log_var', 'per_channel' if cfg.get('double_z', True) else 'none')
  blocks = cfg.get('blocks')
  return VAEConfig(
      encoder_blocks=parse_blocks(cfg.get('encoder_blocks', blocks), 'encoder'),
      decoder_blocks=parse_blocks(cfg.get('decoder_blocks', blocks), 'decoder'),
      in_channels=cfg.get('in_channels', 3), out_channels=cfg.get('out_channels', 3),
      latent_channels=cfg['latent_channels'],
      encoder_base_channels=cfg.get('encoder_base_channels', 128),
      decoder_base_channels=cfg.get('decoder_base_channels', 128),
      patch_size=cfg.get('patch_size', 1), latent_log_var=log_var,
      spatial_padding_mode=cfg.get('spatial_padding_mode', 'zeros'),
      timestep_conditioning=cfg.get('timestep_conditioning', False),
      causal_decoder=cfg.get('causal_decoder', False),
      scaling_factor=float(cfg.get('scaling_factor', 1.0)))


def _res(n: int, noise: bool = False) -> list:
  return ['res_x', {'num_layers': n, 'inject_noise': noise}]


# The VAE of LTX-Video 0.9.5 to 0.9.8 (all 2B and 13B checkpoints of those releases), as stored
# in the checkpoints' metadata: typed space-to-depth encoder to 2048 channels, residual
# timestep-conditioned decoder, 32x spatial and 8x temporal compression.
LTXV_098_OFFICIAL = {
    '_class_name': 'CausalVideoAutoencoder', 'dims': 3, 'in_channels': 3, 'out_channels': 3,
    'latent_channels': 128,
    'encoder_blocks': [
        _res(4), ['compress_space_res', {'multiplier': 2}], _res(6),
        ['compress_time_res', {'multiplier': 2}], _res(6), ['compress_all_res', {'multiplier': 2}],
        _res(2), ['compress_all_res', {'multiplier': 2}], _res(2)],
    'decoder_blocks': [
        _res(5), ['compress_all', {'residual': True, 'multiplier': 2}], _res(5),
        ['compress_all', {'residual': True, 'multiplier': 2}], _res(5),
        ['compress_all', {'residual': True, 'multiplier': 2}], _res(5)],
    'scaling_factor': 1.0, 'norm_layer': 'pixel_norm', 'patch_size': 4,
    'latent_log_var': 'uniform', 'use_quant_conv': False, 'causal_decoder': False,
    'timestep_conditioning': True,
}
# LTX-Video 0.9.0: plain strided down convs, channel-changing ResNets, no timestep conditioning.
LTXV_090_OFFICIAL = {
    '_class_name': 'CausalVideoAutoencoder', 'dims': 3, 'in_channels': 3, 'out_channels': 3,
    'latent_channels': 128,
    'blocks': [_res(4), ['compress_all', 1], ['res_x_y', 1], _res(3), ['compress_all', 1],
               ['res_x_y', 1], _res(3), ['compress_all', 1], _res(3), _res(4)],
    'scaling_factor': 1.0, 'norm_layer': 'pixel_norm', 'patch_size': 4,
    'latent_log_var': 'uniform', 'use_quant_conv': False, 'causal_decoder': False,
}
LTXV_VAE_098 = from_official(LTXV_098_OFFICIAL)
LTXV_VAE_090 = from_official(LTXV_090_OFFICIAL)
