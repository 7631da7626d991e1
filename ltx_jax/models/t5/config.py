"""T5 v1.1 encoder hyperparameters, with the XXL preset LTX-Video uses."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from ltx_jax.errors import DataError


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

  @classmethod
  def xxl(cls) -> 'T5Config':
    """google/t5-v1_1-xxl encoder, the text encoder of every LTX-Video release."""
    return cls()

  @classmethod
  def from_hf(cls, cfg: Mapping[str, Any]) -> 'T5Config':
    """From a transformers `config.json` (T5Config / T5EncoderModel)."""
    act = cfg.get('feed_forward_proj', 'relu')
    if act != 'gated-gelu':
      raise DataError(f"only gated-GELU T5 (v1.1) encoders are supported, config has "
                      f"feed_forward_proj={act!r}")
    return cls(vocab_size=cfg['vocab_size'], d_model=cfg['d_model'], num_heads=cfg['num_heads'],
               head_dim=cfg['d_kv'], d_ff=cfg['d_ff'], num_layers=cfg['num_layers'],
               num_buckets=cfg.get('relative_attention_num_buckets', 32),
               max_distance=cfg.get('relative_attention_max_distance', 128),
               eps=cfg.get('layer_norm_epsilon', 1e-6))

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

    def need(key: str):
      value = get(f'{arch}.{key}')
      if value is None:
        raise DataError(f"GGUF metadata lacks {arch}.{key}")
      return value

    eps = get(f'{arch}.attention.layer_norm_rms_epsilon')
    if eps is None:
      eps = get(f'{arch}.attention.layer_norm_epsilon')
    num_heads = int(need('attention.head_count'))
    d_model = int(need('embedding_length'))
    head_dim = get(f'{arch}.attention.key_length')
    return cls(vocab_size=int(vocab_size), d_model=d_model, num_heads=num_heads,
               head_dim=int(head_dim) if head_dim is not None else d_model // num_heads,
               d_ff=int(need('feed_forward_length')), num_layers=int(need('block_count')),
               num_buckets=int(get(f'{arch}.attention.relative_buckets_count') or 32),
               max_distance=128, eps=_shortest(eps) if eps is not None else 1e-6)


def _shortest(value: float) -> float:
  """GGUF stores floats as f32: 1e-6 comes back as 9.99999997e-07; recover the decimal."""
  return float(str(np.float32(value)))
