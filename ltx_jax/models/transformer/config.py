"""Transformer (DiT) hyperparameters, one preset per released size, and parsers for the two
checkpoint config dialects (diffusers' `config.json` and the official file's metadata)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ltx_jax.errors import CheckpointFormatError, DataError
from ltx_jax.weights import values as V


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  num_layers: int = 28
  num_heads: int = 32
  head_dim: int = 64
  in_channels: int = 128
  out_channels: int = 128
  cross_attention_dim: int = 2048
  caption_channels: int = 4096
  norm_eps: float = 1e-6           # block RMSNorms and the output LayerNorm
  qk_norm_eps: float = 1e-5        # q/k RMSNorm across heads
  attention_bias: bool = True      # biases of to_q / to_k / to_v
  attention_out_bias: bool = True  # bias of to_out
  rope_theta: float = 10000.0
  rope_max_pos: tuple[int, int, int] = (20, 2048, 2048)  # (frames, height, width) divisors
  # Official checkpoints only; recorded for the pipeline: whether frame coordinates are
  # shifted so the first (single-frame) latent sits at time 0.
  causal_temporal_positioning: bool = False

  def __post_init__(self):
    what = 'transformer'
    for key, lo, hi in (('num_layers', 1, V.MAX_LAYERS), ('num_heads', 1, V.MAX_HEADS),
                        ('head_dim', 1, V.MAX_CHANNELS), ('in_channels', 1, V.MAX_CHANNELS),
                        ('out_channels', 1, V.MAX_CHANNELS),
                        ('cross_attention_dim', 1, V.MAX_CHANNELS),
                        ('caption_channels', 1, V.MAX_CHANNELS)):
      V.check_int(getattr(self, key), key, lo, hi, what)
    for key in ('norm_eps', 'qk_norm_eps'):
      V.check_number(getattr(self, key), key, 0.0, 1.0, what, open_low=True)
    for key in ('attention_bias', 'attention_out_bias', 'causal_temporal_positioning'):
      V.check_bool(getattr(self, key), key, what)
    V.check_number(self.rope_theta, 'rope_theta', 1.0, 1e12, what)
    for i, v in enumerate(V.check_list(self.rope_max_pos, 'rope_max_pos', what, length=3)):
      V.check_number(v, f'rope_max_pos[{i}]', 0.0, 1e9, what, open_low=True)
    if self.dim > V.MAX_CHANNELS:
      raise DataError(f"transformer config: {self.num_heads} heads x {self.head_dim} = {self.dim}"
                      f" channels; at most {V.MAX_CHANNELS} are supported")

  @property
  def dim(self) -> int:
    return self.num_heads * self.head_dim

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> 'TransformerConfig':
    """From diffusers' `LTXVideoTransformer3DModel` config.json."""
    w = 'transformer'
    cfg = V.mapping(cfg, 'transformer config')
    if (V.integer(cfg, 'patch_size', 1, 64, 1, what=w), V.integer(
        cfg, 'patch_size_t', 1, 64, 1, what=w)) != (1, 1):
      _refuse('patch_size', (cfg.get('patch_size'), cfg.get('patch_size_t')), (1, 1))
    V.choice(cfg, 'qk_norm', ['rms_norm_across_heads'], 'rms_norm_across_heads', what=w)
    V.choice(cfg, 'activation_fn', ['gelu-approximate'], 'gelu-approximate', what=w)
    V.choice(cfg, 'norm_elementwise_affine', [False], False, what=w)
    return cls(
        **_sizes(cfg, w),
        attention_out_bias=V.boolean(cfg, 'attention_out_bias', True, what=w))

  @classmethod
  def from_official(cls, cfg: Mapping[str, Any]) -> 'TransformerConfig':
    """From the `transformer` entry of an official single file's `config` metadata.

    Read as the official `Transformer3DModel.from_config` reads it: a key the entry does not
    name takes the official class's default (`_OFFICIAL_DEFAULTS`), so an entry without
    `standardization_norm` is a layer-norm model (refused), not ours. Keys the official model
    ignores (the PixArt leftovers `num_embeds_ada_norm`, `norm_num_groups`, `dropout`,
    `attention_type`, `num_vector_embeds`, `use_linear_projection`, `_name_or_path`, ..., and
    0.9.0's `project_to_2d_pos`, which the current official code drops with a warning) are
    ignored; `causal_temporal_positioning` absent (0.9.0 / 0.9.1) is false.
    """
    w = 'transformer'
    cfg = V.mapping(cfg, "the 'transformer' entry of the 'config' metadata")
    expect = {'adaptive_norm': 'single_scale_shift', 'standardization_norm': 'rms_norm',
              'qk_norm': 'rms_norm', 'positional_embedding_type': 'rope',
              'activation_fn': 'gelu-approximate', 'norm_elementwise_affine': False,
              'double_self_attention': False, 'only_cross_attention': False,
              'upcast_attention': False, 'timestep_scale_multiplier': 1000}
    for k, v in expect.items():
      if k not in cfg:
        if _OFFICIAL_DEFAULTS.get(k, v) != v:
          raise CheckpointFormatError(
              f"unsupported transformer config: no {k!r}, i.e. the official default "
              f"{_OFFICIAL_DEFAULTS[k]!r} (ltx_jax supports {v!r})")
      elif isinstance(cfg[k], bool) != isinstance(v, bool) or cfg[k] != v:
        _refuse(k, cfg[k], v)
    for k in ('positional_embedding_theta', 'positional_embedding_max_pos'):
      if cfg.get(k) is None:  # the official RoPE cannot run without them
        raise CheckpointFormatError(f"transformer config {k}={cfg.get(k)!r}: expected "
                                    + ('a number' if k.endswith('theta') else
                                       'a list of 3 numbers'))
    max_pos = V.check_list(cfg['positional_embedding_max_pos'], 'positional_embedding_max_pos',
                           w, length=3)
    return cls(
        **_sizes(cfg, w, _OFFICIAL_DEFAULTS),
        attention_out_bias=True,
        rope_theta=V.number(cfg, 'positional_embedding_theta', 1.0, 1e12, what=w),
        rope_max_pos=tuple(V.check_number(v, f'positional_embedding_max_pos[{i}]', 0.0, 1e9, w,
                                          open_low=True) for i, v in enumerate(max_pos)),
        causal_temporal_positioning=V.boolean(cfg, 'causal_temporal_positioning', False,
                                              what=w))


# The official Transformer3DModel's defaults for the keys whose absence changes the model.
_OFFICIAL_DEFAULTS = {'activation_fn': 'geglu', 'standardization_norm': 'layer_norm',
                      'qk_norm': None, 'norm_elementwise_affine': True,
                      'timestep_scale_multiplier': None, 'attention_bias': False,
                      'norm_eps': 1e-5, 'upcast_attention': False}
_DIFFUSERS_DEFAULTS = {'attention_bias': True, 'norm_eps': 1e-6}


LTXV_2B = TransformerConfig()
LTXV_13B = TransformerConfig(num_layers=48, head_dim=128, cross_attention_dim=4096)
PRESETS = {'ltxv-2b': LTXV_2B, 'ltxv-13b': LTXV_13B}


def _sizes(cfg: Mapping[str, Any], w: str, defaults: Mapping[str, Any] = _DIFFUSERS_DEFAULTS
           ) -> dict[str, Any]:
  """The fields both config dialects name alike, read and bounded (absent norm_eps /
  attention_bias: the dialect's class defaults)."""
  in_ch = V.integer(cfg, 'in_channels', 1, V.MAX_CHANNELS, 128, what=w)
  return dict(
      num_layers=V.integer(cfg, 'num_layers', 1, V.MAX_LAYERS, what=w),
      num_heads=V.integer(cfg, 'num_attention_heads', 1, V.MAX_HEADS, what=w),
      head_dim=V.integer(cfg, 'attention_head_dim', 1, V.MAX_CHANNELS, what=w),
      in_channels=in_ch,
      out_channels=V.integer(cfg, 'out_channels', 1, V.MAX_CHANNELS, in_ch, what=w),
      cross_attention_dim=V.integer(cfg, 'cross_attention_dim', 1, V.MAX_CHANNELS, what=w),
      caption_channels=V.integer(cfg, 'caption_channels', 1, V.MAX_CHANNELS, what=w),
      norm_eps=V.number(cfg, 'norm_eps', 0.0, 1.0, defaults['norm_eps'], what=w, open_low=True),
      attention_bias=V.boolean(cfg, 'attention_bias', defaults['attention_bias'], what=w))


def _refuse(key: str, value: Any, allowed: Any) -> None:
  raise CheckpointFormatError(f"unsupported transformer config: {key}={value!r} (ltx_jax supports "
                  f"{allowed!r})")
