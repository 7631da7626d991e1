"""The one attention entry point of ltx_jax, and the one switch between backend kernels.

Every attention in the package calls `attention(q, k, v, bias)`; the kernel is picked here:

  'xla'     XLA's reference implementation (logits and softmax in f32); every backend, any bias.
  'cudnn'   cuDNN's fused flash attention (NVIDIA GPUs, bf16/fp16 inputs).
  'splash'  JAX's Pallas splash (flash) attention kernel for TPU (ltx_jax/nn/tpu_attention.py):
            no bias or a key-padding bias [B|1, 1, 1, S]; the logits are never materialised.
            Attentions with other biases (T5's relative positions) run on 'xla' instead, so
            one choice serves the whole pipeline.
            LTX_JAX_PALLAS_INTERPRET=1 runs it in Pallas interpret mode on any backend (tests).
  'auto'    'splash' on TPU, 'cudnn' on GPU for bf16/fp16 inputs, 'xla' elsewhere.

Other kernels plug in with `register_attention`. A kernel marked `per_device` (a custom call
that XLA cannot partition, such as a Pallas kernel) runs under `jax.shard_map` over the active
mesh: rows split over the batch axes, heads over 'tensor', query tokens over 'context'.

Self-attention over video tokens passes `sequence_sharded=True`: under an active
`ltx_jax.sharding.Partitioning` whose 'context' mesh axis splits the tokens, it runs context
parallel ('allgather' or 'ring', see context_attention.py) around the chosen kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.nn import tpu_attention
from ltx_jax.nn.context_attention import context_attention

# An implementation maps (q [B, T, N, H], k [B, S, N, H], v [B, S, N, H], bias broadcastable to
# [B, N, T, S] or None, scale) -> [B, T, N, H].
AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, float], jax.Array]
# The same with the log-sum-exp of each query row's (scaled, biased) logits:
# -> (out [B, T, N, H] in q's dtype or f32, logsumexp [B, N, T] f32). Ring attention merges
# blocks with it.
AttentionLseFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, float],
                          tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Kernel:
  """One registered attention implementation and what the entry point must know about it."""
  fn: AttentionFn
  with_lse: AttentionLseFn | None = None  # None: ring attention uses XLA's blocks
  per_device: bool = False      # runs under shard_map over the active mesh
  key_bias_only: bool = False   # takes bias None or [B|1, 1, 1, S] only


def _xla(q, k, v, bias, scale):
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation='xla')


def xla_with_lse(q, k, v, bias, scale):
  """XLA attention in f32 that also returns the log-sum-exp: -> (out [B, T, N, H] f32,
  logsumexp [B, N, T] f32); the f32 output keeps ring attention's merge in f32."""
  s = jnp.einsum('btnh,bsnh->bnts', q.astype(jnp.float32) * scale, k.astype(jnp.float32))
  if bias is not None:
    s = s + bias.astype(jnp.float32)  # [B, N, T, S] f32
  lse = jax.nn.logsumexp(s, axis=-1)  # [B, N, T]
  out = jnp.einsum('bnts,bsnh->btnh', jnp.exp(s - lse[..., None]), v.astype(jnp.float32))
  return out, lse


def _cudnn(q, k, v, bias, scale):
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise UsageError(f"cuDNN attention needs bf16 or fp16 inputs, got {q.dtype}; use "
                     "attention='xla' or a half-precision compute dtype")
  if bias is not None:  # cuDNN wants the query length spelled out: [B|1, N|1, T, S]
    bias = jnp.broadcast_to(bias, (*bias.shape[:2], q.shape[1], k.shape[1])).astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation='cudnn')


_IMPLEMENTATIONS: dict[str, Kernel] = {
    'xla': Kernel(_xla, with_lse=xla_with_lse),
    'cudnn': Kernel(_cudnn),
    'splash': Kernel(*tpu_attention.make_splash(), per_device=True, key_bias_only=True),
}


def register_attention(name: str, fn: AttentionFn, with_lse: AttentionLseFn | None = None, *,
                       per_device: bool = False, key_bias_only: bool = False) -> None:
  """Makes `fn` selectable as `attention=name` on every model (see Kernel for the flags).

  E.g. splash with other block sizes:
    register_attention('splash', *tpu_attention.make_splash(block_q=1024, block_kv=512),
                       per_device=True, key_bias_only=True)
  """
  _IMPLEMENTATIONS[name] = Kernel(fn, with_lse, per_device, key_bias_only)


def attention_implementations() -> tuple[str, ...]:
  return ('auto', *_IMPLEMENTATIONS)


def resolve_implementation(name: str, dtype, bias: jax.Array | None = None) -> str:
  """'auto' -> a concrete kernel name for the default backend, this compute dtype and bias."""
  if name != 'auto':
    if name not in _IMPLEMENTATIONS:
      raise UsageError(f"unknown attention implementation {name!r}; choose one of "
                       f"{attention_implementations()}")
    return name
  backend = jax.default_backend()
  if backend == 'tpu':
    return 'splash' if tpu_attention.is_key_bias(bias) else 'xla'
  half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  return 'cudnn' if backend == 'gpu' and half else 'xla'


def _per_device(fn: AttentionFn, q, k, v, bias, scale,
                partitioning: sharding_lib.Partitioning) -> jax.Array:
  """fn on each device's rows, heads and query tokens (keys and values whole per device)."""
  q_spec = partitioning.spec(q.shape, ('batch', 'tokens', 'act_heads', None))
  kv_spec = partitioning.spec(k.shape, ('batch', None, 'act_heads', None))
  if bias is None:
    return jax.shard_map(lambda q, k, v: fn(q, k, v, None, scale), mesh=partitioning.mesh,
                         in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v)
  names = tuple(n if d > 1 else None for n, d in
                zip(('batch', 'act_heads', 'tokens', None), bias.shape))
  b_spec = partitioning.spec(bias.shape, names)
  return jax.shard_map(lambda q, k, v, b: fn(q, k, v, b, scale), mesh=partitioning.mesh,
                       in_specs=(q_spec, kv_spec, kv_spec, b_spec), out_specs=q_spec,
                       check_vma=False)(q, k, v, bias)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *,
              scale: float | None = None, implementation: str = 'auto',
              sequence_sharded: bool = False) -> jax.Array:
  """Multi-head attention. q [B, T, N, H], k/v [B, S, N, H], bias [B, 1|N, 1|T, S] -> [B, T, N, H].

  sequence_sharded: q, k and v are the same token sequence, which the active partitioning may
  split over its 'context' axis (self-attention without bias only).
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  name = resolve_implementation(implementation, q.dtype, bias)
  kernel = _IMPLEMENTATIONS[name]
  if kernel.key_bias_only and not tpu_attention.is_key_bias(bias):
    kernel = _IMPLEMENTATIONS['xla']  # e.g. T5's relative positions under attention='splash'
  partitioning = sharding_lib.active()
  if sequence_sharded and bias is None and partitioning is not None:
    with_lse = kernel.with_lse or xla_with_lse
    out = context_attention(q, k, v, scale, kernel.fn, with_lse, partitioning)
    if out is not None:
      return out
  if kernel.per_device and partitioning is not None:
    return _per_device(kernel.fn, q, k, v, bias, scale, partitioning)
  return kernel.fn(q, k, v, bias, scale)
