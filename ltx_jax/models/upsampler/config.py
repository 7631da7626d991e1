"""Latent upsampler configuration, read from an official file's metadata or a diffusers config.json.

Both references describe the model with the same six fields. Their defaults differ: the official
`LatentUpsampler.from_config` (which reads the `config` metadata of the released
`ltxv-*-upscaler-*.safetensors`) falls back to in_channels 4, mid_channels 128, dims 2, while
diffusers' `LTXLatentUpsamplerModel` (and the official constructor) default to 128, 512, dims 3.
Each parser applies its own reference's defaults to absent keys and ignores keys the reference
ignores (`_class_name`, `_diffusers_version`, ...). LTX-2's `LTX2LatentUpsamplerModel` adds
`use_rational_resampler` / `rational_spatial_scale`: false (the LTX-Video layer) is accepted,
true (its rational resampler) is refused.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ltx_jax.errors import CheckpointFormatError, UsageError

GROUPS = 32  # every GroupNorm of the reference has 32 groups

_OFFICIAL_DEFAULTS = dict(in_channels=4, mid_channels=128, num_blocks_per_stage=4, dims=2,
                          spatial_upsample=True, temporal_upsample=False)
_DIFFUSERS_DEFAULTS = dict(in_channels=128, mid_channels=512, num_blocks_per_stage=4, dims=3,
                           spatial_upsample=True, temporal_upsample=False)


@dataclasses.dataclass(frozen=True)
class UpsamplerConfig:
  """The architecture of a latent upsampler.

  in_channels: latent channels (128 for every released VAE).
  mid_channels: width of the residual stages; a multiple of 32 (GroupNorm(32)).
  num_blocks_per_stage: ResBlocks before and after the upsampling conv (>= 0).
  dims: 2 (every conv per frame) or 3 (3-D convs; a spatial-only upsampling conv stays per frame).
  spatial_upsample: height and width x2 (pixel shuffle).
  temporal_upsample: frames F -> 2F - 1 (time shuffle, first frame dropped); needs dims=3.
  """
  in_channels: int = 128
  mid_channels: int = 512
  num_blocks_per_stage: int = 4
  dims: int = 3
  spatial_upsample: bool = True
  temporal_upsample: bool = False

  def __post_init__(self):
    problem = validate(dataclasses.asdict(self))
    if problem is not None:
      raise UsageError(f"UpsamplerConfig: {problem}")

  @property
  def factors(self) -> tuple[int, int, int]:
    """(time, height, width) factors of the pixel shuffle."""
    s, t = 2 if self.spatial_upsample else 1, 2 if self.temporal_upsample else 1
    return (t, s, s)

  def output_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Latent (frames, height, width) after upsampling."""
    t, s, _ = self.factors
    return (t * frames - (t - 1), s * height, s * width)

  @classmethod
  def from_official(cls, cfg: Mapping[str, Any] | str, *, where: str = 'upsampler config'
                    ) -> 'UpsamplerConfig':
    """From the flat JSON in an official file's `config` metadata (the official defaults fill
    absent keys); CheckpointFormatError naming `where` and the key otherwise."""
    return _parse(cfg, _OFFICIAL_DEFAULTS, where)

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any] | str, *, where: str = 'upsampler config'
                     ) -> 'UpsamplerConfig':
    """From an `LTXLatentUpsamplerModel` config.json (the class defaults fill absent keys)."""
    return _parse(cfg, _DIFFUSERS_DEFAULTS, where)

  def to_official(self) -> dict:
    return {'_class_name': 'LatentUpsampler', **dataclasses.asdict(self)}

  def to_diffusers(self) -> dict:
    return {'_class_name': 'LTXLatentUpsamplerModel', **dataclasses.asdict(self)}


_INTS = {'in_channels': 1, 'mid_channels': GROUPS, 'num_blocks_per_stage': 0}  # name -> minimum


def validate(values: Mapping[str, Any]) -> str | None:
  """The first problem with a full set of field values, as 'key: value (what is allowed)'."""
  for key, lo in _INTS.items():
    v = values[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
      return f"{key}={v!r} (an integer >= {lo})"
  if values['mid_channels'] % GROUPS:
    return (f"mid_channels={values['mid_channels']!r} (a multiple of {GROUPS}: the ResBlocks "
            f"use GroupNorm({GROUPS}))")
  if isinstance(values['dims'], bool) or values['dims'] not in (2, 3):
    return f"dims={values['dims']!r} (2 or 3)"
  for key in ('spatial_upsample', 'temporal_upsample'):
    if not isinstance(values[key], bool):
      return f"{key}={values[key]!r} (true or false)"
  if not (values['spatial_upsample'] or values['temporal_upsample']):
    return "spatial_upsample=false and temporal_upsample=false (at least one must be true)"
  if values['dims'] == 2 and values['temporal_upsample']:
    return ("temporal_upsample=true with dims=2 (temporal upsampling needs dims=3; the "
            "references cannot run it per frame)")
  return None


def _parse(cfg: Mapping[str, Any] | str, defaults: Mapping[str, Any], where: str
           ) -> UpsamplerConfig:
  if isinstance(cfg, str):
    try:
      cfg = json.loads(cfg)
    except json.JSONDecodeError as e:
      raise CheckpointFormatError(f"{where}: unreadable upsampler config JSON ({e})") from None
  if not isinstance(cfg, Mapping):
    raise CheckpointFormatError(f"{where}: the upsampler config is not a JSON object "
                                f"({type(cfg).__name__})")
  values = {k: cfg.get(k, d) for k, d in defaults.items()}
  problem = validate(values)
  if (problem is None and cfg.get('use_rational_resampler', False) is not False
      and not values['temporal_upsample']):
    problem = (f"use_rational_resampler={cfg['use_rational_resampler']!r} (LTX-2's rational "
               "resampler; only the LTX-Video conv + pixel-shuffle upsampler, false, is supported)")
  if problem is not None:
    raise CheckpointFormatError(f"{where}: bad upsampler config value {problem}")
  return UpsamplerConfig(**values)
