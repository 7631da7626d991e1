"""Transformer (DiT) hyperparameters, one preset per released size, and parsers for the two
checkpoint config dialects (diffusers' `config.json` and the official file's metadata)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ltx_jax.errors import DataError


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

  @property
  def dim(self) -> int:
    return self.num_heads * self.head_dim

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> 'TransformerConfig':
    """From diffusers' `LTXVideoTransformer3DModel` config.json."""
    if cfg.get('patch_size', 1) != 1 or cfg.get('patch_size_t', 1) != 1:
      _refuse('patch_size', (cfg.get('patch_size'), cfg.get('patch_size_t')), (1, 1))
    if cfg.get('qk_norm', 'rms_norm_across_heads') != 'rms_norm_across_heads':
      _refuse('qk_norm', cfg['qk_norm'], 'rms_norm_across_heads')
    if cfg.get('activation_fn', 'gelu-approximate') != 'gelu-approximate':
      _refuse('activation_fn', cfg['activation_fn'], 'gelu-approximate')
    if cfg.get('norm_elementwise_affine', False):
      _refuse('norm_elementwise_affine', True, False)
    out = cfg.get('out_channels') or cfg.get('in_channels', 128)
    return cls(
        num_layers=cfg['num_layers'], num_heads=cfg['num_attention_heads'],
        head_dim=cfg['attention_head_dim'], in_channels=cfg.get('in_channels', 128),
        out_channels=out, cross_attention_dim=cfg['cross_attention_dim'],
        caption_channels=cfg['caption_channels'], norm_eps=cfg.get('norm_eps', 1e-6),
        attention_bias=cfg.get('attention_bias', True),
        attention_out_bias=cfg.get('attention_out_bias', True))

  @classmethod
  def from_official(cls, cfg: Mapping[str, Any]) -> 'TransformerConfig':
    """From the `transformer` entry of an official single file's `config` metadata."""
    expect = {'adaptive_norm': 'single_scale_shift', 'standardization_norm': 'rms_norm',
              'qk_norm': 'rms_norm', 'positional_embedding_type': 'rope',
              'activation_fn': 'gelu-approximate', 'norm_elementwise_affine': False,
              'double_self_attention': False, 'only_cross_attention': False}
    for k, v in expect.items():
      if k in cfg and cfg[k] != v:
        _refuse(k, cfg[k], v)
    if cfg.get('timestep_scale_multiplier', 1000) != 1000:
      _refuse('timestep_scale_multiplier', cfg['timestep_scale_multiplier'], 1000)
    in_ch = cfg.get('in_channels', 128)
    return cls(
        num_layers=cfg['num_layers'], num_heads=cfg['num_attention_heads'],
        head_dim=cfg['attention_head_dim'], in_channels=in_ch,
        out_channels=cfg.get('out_channels') or in_ch,
        cross_attention_dim=cfg['cross_attention_dim'], caption_channels=cfg['caption_channels'],
        norm_eps=cfg.get('norm_eps', 1e-6), attention_bias=cfg.get('attention_bias', True),
        attention_out_bias=True, rope_theta=float(cfg.get('positional_embedding_theta', 10000.0)),
        rope_max_pos=tuple(cfg.get('positional_embedding_max_pos', (20, 2048, 2048))),
        causal_temporal_positioning=bool(cfg.get('causal_temporal_positioning', False)))


LTXV_2B = TransformerConfig()
LTXV_13B = TransformerConfig(num_layers=48, head_dim=128, cross_attention_dim=4096)
PRESETS = {'ltxv-2b': LTXV_2B, 'ltxv-13b': LTXV_13B}


def _refuse(key: str, value: Any, allowed: Any) -> None:
  raise DataError(f"unsupported transformer config: {key}={value!r} (ltx_jax supports "
                  f"{allowed!r})")
