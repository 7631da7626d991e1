"""The one attention entry point of ltx_jax.

Every attention in the package calls `attention(q, k, v, bias)`; the kernel is picked here.
`'auto'` takes cuDNN's fused flash attention on NVIDIA GPUs when the inputs are bf16/fp16 and XLA's
reference implementation elsewhere (it computes logits and softmax in f32). Other kernels (for
example a Pallas TPU flash kernel) plug in with `register_attention`.

Self-attention over video tokens passes `sequence_sharded=True`: under an active
`ltx_jax.sharding.Partitioning` whose 'context' mesh axis splits the tokens, it runs context
parallel ('allgather' or 'ring', see context_attention.py) around the chosen local kernel.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ltx_jax import sharding as sharding_lib

# An implementation maps (q [B, T, N, H], k [B, S, N, H], v [B, S, N, H], bias broadcastable to
# [B, N, T, S] or None, scale) -> [B, T, N, H].
AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, float], jax.Array]


def _xla(q, k, v, bias, scale):
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation='xla')


def _cudnn(q, k, v, bias, scale):
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(f"cuDNN attention needs bf16 or fp16 inputs, got {q.dtype}; use "
                     "attention='xla' or a half-precision compute dtype")
  if bias is not None:  # cuDNN wants the query length spelled out: [B|1, N|1, T, S]
    bias = jnp.broadcast_to(bias, (*bias.shape[:2], q.shape[1], k.shape[1])).astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation='cudnn')


_IMPLEMENTATIONS: dict[str, AttentionFn] = {'xla': _xla, 'cudnn': _cudnn}


def register_attention(name: str, fn: AttentionFn) -> None:
  """Makes `fn` selectable as `attention=name` on every model."""
  _IMPLEMENTATIONS[name] = fn


def attention_implementations() -> tuple[str, ...]:
  return ('auto', *_IMPLEMENTATIONS)


def resolve_implementation(name: str, dtype) -> str:
  """'auto' -> a concrete kernel name for the default backend and this compute dtype."""
  if name != 'auto':
    if name not in _IMPLEMENTATIONS:
      raise ValueError(f"unknown attention implementation {name!r}; choose one of "
                       f"{attention_implementations()}")
    return name
  on_gpu = jax.default_backend() == 'gpu'
  return 'cudnn' if on_gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else 'xla'


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *,
              scale: float | None = None, implementation: str = 'auto',
              sequence_sharded: bool = False) -> jax.Array:
  """Multi-head attention. q [B, T, N, H], k/v [B, S, N, H], bias [B, 1|N, 1|T, S] -> [B, T, N, H].

  sequence_sharded: q, k and v are the same token sequence, which the active partitioning may
  split over its 'context' axis (self-attention without bias only).
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  name = resolve_implementation(implementation, q.dtype)
  partitioning = sharding_lib.active()
  if sequence_sharded and bias is None and partitioning is not None:
    from ltx_jax.nn.context_attention import context_attention
    out = context_attention(q, k, v, scale, _IMPLEMENTATIONS[name], partitioning)
    if out is not None:
      return out
  return _IMPLEMENTATIONS[name](q, k, v, bias, scale)
