"""T5 v1.1 encoder hyperparameters, with the XXL preset LTX-Video uses."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from ltx_jax.errors import CheckpointFormatError, DataError
from ltx_jax.weights import values as V


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 v1.1 (gated-GELU) encoder stack."""
  vocab_size: int = 32128
  d_model: int = 4096
  num_heads: int = 64
  head_dim: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  num_buckets: int = 32  # relative position buckets (half per direction)
  max_distance: int = 128  # relative distances beyond this share the last bucket
  eps: float = 1e-6

  def __post_init__(self):
    for key, hi in (('vocab_size', 1 << 20), ('d_model', V.MAX_CHANNELS),
                    ('num_heads', V.MAX_HEADS), ('head_dim', V.MAX_CHANNELS),
                    ('d_ff', 1 << 18), ('num_layers', V.MAX_LAYERS), ('num_buckets', 4096),
                    ('max_distance', 1 << 20)):
      V.check_int(getattr(self, key), key, 1, hi, 'T5')
    V.check_number(self.eps, 'eps', 0.0, 1.0, 'T5', open_low=True)
    if self.num_heads * self.head_dim > V.MAX_CHANNELS:
      raise CheckpointFormatError(f"T5 config: {self.num_heads} heads x {self.head_dim} = "
                                  f"{self.num_heads * self.head_dim} channels; at most "
                                  f"{V.MAX_CHANNELS} are supported")

  @classmethod
  def xxl(cls) -> 'T5Config':
    """google/t5-v1_1-xxl encoder, the text encoder of every LTX-Video release."""
    return cls()

  @classmethod
  def from_hf(cls, cfg: Mapping[str, Any]) -> 'T5Config':
    """From a transformers `config.json` (T5Config / T5EncoderModel)."""
    cfg = V.mapping(cfg, 'T5 config')
    act = cfg.get('feed_forward_proj', 'relu')
    if act != 'gated-gelu':
      raise DataError(f"only gated-GELU T5 (v1.1) encoders are supported, config has "
                      f"feed_forward_proj={act!r}")
    w = 'T5'
    return cls(vocab_size=V.integer(cfg, 'vocab_size', 1, 1 << 20, what=w),
               d_model=V.integer(cfg, 'd_model', 1, V.MAX_CHANNELS, what=w),
               num_heads=V.integer(cfg, 'num_heads', 1, V.MAX_HEADS, what=w),
               head_dim=V.integer(cfg, 'd_kv', 1, V.MAX_CHANNELS, what=w),
               d_ff=V.integer(cfg, 'd_ff', 1, 1 << 18, what=w),
               num_layers=V.integer(cfg, 'num_layers', 1, V.MAX_LAYERS, what=w),
               num_buckets=V.integer(cfg, 'relative_attention_num_buckets', 1, 4096, 32, what=w),
               max_distance=V.integer(cfg, 'relative_attention_max_distance', 1, 1 << 20, 128,
                                      what=w),
               eps=V.number(cfg, 'layer_norm_epsilon', 0.0, 1.0, 1e-6, what=w, open_low=True))

  @classmethod
  def from_gguf(cls, get: Callable[[str], Any], vocab_size: int) -> 'T5Config':
    """From llama.cpp metadata; `get(key)` returns a field's value or None.

    The architecture prefix is `general.architecture` (`t5encoder` or `t5`). llama.cpp does not
    store the maximum relative distance (it hard-codes 128), nor the vocabulary size (taken from
    the embedding table by the caller).
    """
    arch = get('general.architecture')
    if arch not in ('t5encoder', 't5'):
      raise DataError(f"GGUF architecture is {arch!r}, expected 't5encoder' or 't5'")

    def need(key: str, lo: int, hi: int, default=V.REQUIRED):
      value = get(f'{arch}.{key}')
      if value is None and default is V.REQUIRED:
        raise CheckpointFormatError(f"GGUF metadata lacks {arch}.{key}")
      return V.check_int(default if value is None else value, f'{arch}.{key}', lo, hi,
                         'T5 GGUF')

    eps = get(f'{arch}.attention.layer_norm_rms_epsilon')
    if eps is None:
      eps = get(f'{arch}.attention.layer_norm_epsilon')
    if eps is not None:
      eps = V.check_number(eps, f'{arch}.attention.layer_norm_rms_epsilon', 0.0, 1.0,
                           'T5 GGUF', open_low=True)
    num_heads = need('attention.head_count', 1, V.MAX_HEADS)
    d_model = need('embedding_length', 1, V.MAX_CHANNELS)
    head_dim = need('attention.key_length', 1, V.MAX_CHANNELS, max(1, d_model // num_heads))
    return cls(vocab_size=V.check_int(vocab_size, 'token_embd.weight rows', 1, 1 << 20,
                                      'T5 GGUF'),
               d_model=d_model, num_heads=num_heads, head_dim=head_dim,
               d_ff=need('feed_forward_length', 1, 1 << 18),
               num_layers=need('block_count', 1, V.MAX_LAYERS),
               num_buckets=need('attention.relative_buckets_count', 1, 4096, 32),
               max_distance=128, eps=_shortest(eps) if eps is not None else 1e-6)


def _shortest(value: float) -> float:
  """GGUF stores floats as f32: 1e-6 comes back as 9.99999997e-07; recover the decimal."""
  return float(str(np.float32(value)))
