"""VAE configuration: the official block-list language, and diffusers' configs mapped into it.

The official `CausalVideoAutoencoder` describes its encoder and decoder as lists of blocks
(`["res_x", {"num_layers": 4}]`, `["compress_all_res", {"multiplier": 2}]`, ...). That list is our
ground truth (blocks.py); `VAEConfig.from_official` reads the JSON found in a checkpoint's
metadata and `VAEConfig.from_diffusers` rebuilds the same list from an `AutoencoderKLLTXVideo`
config.json (diffusers_config.py).

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
import math
from typing import Any, Mapping

from ltx_jax.errors import CheckpointFormatError, DataError, UsageError
from ltx_jax.models.vae import diffusers_config
from ltx_jax.models.vae.blocks import Block, parse_blocks
from ltx_jax.weights import values as V

LOG_VAR_CHANNELS = {'per_channel': lambda c: 2 * c, 'uniform': lambda c: c + 1,
                    'constant': lambda c: c + 1}


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
    w = 'VAE'
    for key, hi in (('in_channels', 64), ('out_channels', 64), ('latent_channels', 4096),
                    ('encoder_base_channels', V.MAX_CHANNELS),
                    ('decoder_base_channels', V.MAX_CHANNELS), ('patch_size', 64)):
      V.check_int(getattr(self, key), key, 1, hi, w)
    for key in ('timestep_conditioning', 'encoder_causal', 'causal_decoder'):
      V.check_bool(getattr(self, key), key, w)
    V.check_number(self.scaling_factor, 'scaling_factor', 0.0, 1e6, w, open_low=True)
    for key in ('encoder_blocks', 'decoder_blocks'):
      blocks = V.check_list(getattr(self, key), key, w)
      if not all(isinstance(b, Block) for b in blocks):
        raise DataError(f"VAE config {key}: expected Blocks (parse official lists with "
                        "VAEConfig.from_official)")
    if isinstance(self.latent_log_var, str) and self.latent_log_var in LOG_VAR_CHANNELS:
      self._check_channels()
    if not isinstance(self.latent_log_var, str) or self.latent_log_var not in LOG_VAR_CHANNELS:
      raise UsageError(f"latent_log_var {self.latent_log_var!r} is not supported "
                       f"(supported: {sorted(LOG_VAR_CHANNELS)})")
    if not isinstance(self.spatial_padding_mode, str) or self.spatial_padding_mode not in (
        'zeros', 'replicate', 'reflect', 'circular'):
      raise UsageError(f"spatial_padding_mode {self.spatial_padding_mode!r} is not supported "
                       "(supported: 'zeros', 'replicate', 'reflect', 'circular')")

  def _check_channels(self) -> None:
    """Channel counts every block can build: bounded, and divisible where a block splits them."""
    def refuse(side, i, b, channels, why):
      raise DataError(f"VAE config {side}_blocks[{i}] {b.name} (multiplier {b.multiplier}) at "
                      f"{channels} channels: {why}")
    c = self.encoder_base_channels
    for i, b in enumerate(self.encoder_blocks):
      cin, c = c, c * b.multiplier
      if c > V.MAX_CHANNELS:
        refuse('encoder', i, b, cin, f"more than {V.MAX_CHANNELS} channels")
      if b.name.endswith('_res') and (c % math.prod(b.stride) or cin * math.prod(b.stride) % c):
        refuse('encoder', i, b, cin, f"its space-to-depth needs output channels divisible by "
               f"{math.prod(b.stride)} and dividing {math.prod(b.stride)} x its input")
    steps = list(enumerate(self.decoder_blocks))
    c = self.decoder_base_channels
    for i, b in steps:
      c *= b.multiplier
      if c > V.MAX_CHANNELS:
        refuse('decoder', i, b, c, f"more than {V.MAX_CHANNELS} channels after conv_in")
    for i, b in reversed(steps):
      if b.residual and math.prod(b.stride) % b.divisor:
        refuse('decoder', i, b, c, f"a residual upsampler's multiplier must divide "
               f"{math.prod(b.stride)}")
      if c % b.divisor:
        refuse('decoder', i, b, c, f"channels not divisible by {b.divisor}")
      c //= b.divisor

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

  @classmethod
  def from_official(cls, cfg: Mapping[str, Any] | str) -> 'VAEConfig':
    """The official `CausalVideoAutoencoder` JSON config (dict or JSON text) -> VAEConfig."""
    w = 'VAE'
    if isinstance(cfg, str):
      try:
        cfg = json.loads(cfg)
      except json.JSONDecodeError as e:
        raise CheckpointFormatError(f"VAE config is not JSON ({e})") from None
    cfg = V.mapping(cfg, "the 'vae' entry of the 'config' metadata")
    if cfg.get('_class_name', 'CausalVideoAutoencoder') != 'CausalVideoAutoencoder':
      raise CheckpointFormatError(f"VAE config _class_name={cfg['_class_name']!r}: expected "
                                  "'CausalVideoAutoencoder' in an official file")
    dims = cfg.get('dims', 3)
    if isinstance(dims, bool) or dims != 3:
      raise DataError(f"VAE config dims={dims!r}: only dims=3 VAEs are supported")
    V.choice(cfg, 'norm_layer', ['pixel_norm'], 'group_norm', what=w)
    V.choice(cfg, 'use_quant_conv', [False], True, what=w)
    V.choice(cfg, 'normalize_latent_channels', [False], False, what=w)
    double_z = V.boolean(cfg, 'double_z', True, what=w)
    log_var = V.choice(cfg, 'latent_log_var', sorted(LOG_VAR_CHANNELS),
                       'per_channel' if double_z else 'none', what=w)
    blocks = cfg.get('blocks')
    return cls(
        encoder_blocks=parse_blocks(cfg.get('encoder_blocks', blocks), 'encoder'),
        decoder_blocks=parse_blocks(cfg.get('decoder_blocks', blocks), 'decoder'),
        in_channels=V.integer(cfg, 'in_channels', 1, 64, 3, what=w),
        out_channels=V.integer(cfg, 'out_channels', 1, 64, 3, what=w),
        latent_channels=V.integer(cfg, 'latent_channels', 1, 4096, what=w),
        encoder_base_channels=V.integer(cfg, 'encoder_base_channels', 1, V.MAX_CHANNELS, 128,
                                        what=w),
        decoder_base_channels=V.integer(cfg, 'decoder_base_channels', 1, V.MAX_CHANNELS, 128,
                                        what=w),
        patch_size=V.integer(cfg, 'patch_size', 1, 64, 1, what=w), latent_log_var=log_var,
        spatial_padding_mode=V.choice(cfg, 'spatial_padding_mode',
                                      ['zeros', 'replicate', 'reflect', 'circular'], 'zeros',
                                      what=w),
        timestep_conditioning=V.boolean(cfg, 'timestep_conditioning', False, what=w),
        causal_decoder=V.boolean(cfg, 'causal_decoder', False, what=w),
        scaling_factor=V.number(cfg, 'scaling_factor', 0.0, 1e6, 1.0, what=w, open_low=True))

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> 'VAEConfig':
    """An `AutoencoderKLLTXVideo` config.json (as a dict) -> VAEConfig (diffusers_config.py)."""
    return cls(**diffusers_config.diffusers_layout(cfg)[0])


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
LTXV_VAE_098 = VAEConfig.from_official(LTXV_098_OFFICIAL)
LTXV_VAE_090 = VAEConfig.from_official(LTXV_090_OFFICIAL)
