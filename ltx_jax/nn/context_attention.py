"""Context-parallel self-attention: queries, keys and values split over the mesh's 'context'
axis along the token dimension.

'allgather': each device gathers every key and value (all_gather over 'context') and attends
  its own query tokens with the local kernel. Simple; keys and values of all tokens are held
  at once per device (2 x [B, N, heads/tensor, H]), the N x N logits are not.
'ring': keys and values travel around the ring of context devices (ppermute), one block at a
  time, and an online softmax (running max and sum, in f32) accumulates the output: a device
  never holds more than two key/value blocks.

Both run under `jax.shard_map` over the whole mesh: rows split over the batch axes and heads
over the tensor axis as the rules say, tokens over 'context'. Self-attention only (no bias).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from ltx_jax import sharding as sharding_lib

AXIS = 'context'


def _ring(q, k, v, scale: float, size: int) -> jax.Array:
  """Per-device body. q [B, T, N, H], k/v [B, S, N, H] (local blocks) -> [B, T, N, H]."""
  b, t, n, _ = q.shape
  qf = q.astype(jnp.float32) * scale
  perm = [(i, (i + 1) % size) for i in range(size)]

  def step(_, carry):
    k, v, m, l, o = carry
    s = jnp.einsum('btnh,bsnh->bnts', qf, k.astype(jnp.float32))  # [B, N, T, S] f32
    m_new = jnp.maximum(m, s.max(axis=-1))  # [B, N, T]
    p = jnp.exp(s - m_new[..., None])
    corr = jnp.exp(m - m_new)
    l = l * corr + p.sum(axis=-1)
    o = (o * jnp.transpose(corr, (0, 2, 1))[..., None]
         + jnp.einsum('bnts,bsnh->btnh', p, v.astype(jnp.float32)))
    k = jax.lax.ppermute(k, AXIS, perm)
    v = jax.lax.ppermute(v, AXIS, perm)
    return k, v, m_new, l, o

  init = (k, v, jnp.full((b, n, t), -jnp.inf, jnp.float32), jnp.zeros((b, n, t), jnp.float32),
          jnp.zeros(q.shape, jnp.float32))
  _, _, _, l, o = jax.lax.fori_loop(0, size, step, init)
  return (o / jnp.transpose(l, (0, 2, 1))[..., None]).astype(q.dtype)


def context_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float,
                      local: Callable, partitioning: sharding_lib.Partitioning) -> jax.Array | None:
  """q/k/v [B, N, heads, H] -> [B, N, heads, H], or None when the tokens cannot be split over
  'context' (axis of size 1, or N not divisible): the caller then attends normally.

  local: the single-device kernel (q, k, v, bias, scale) -> out, used by 'allgather'.
  """
  spec = partitioning.spec(q.shape, ('batch', 'tokens', 'act_heads', None))
  size = dict(partitioning.mesh.shape).get(AXIS, 1)
  if spec[1] not in (AXIS, (AXIS,)) or size == 1:
    return None
  mode = partitioning.context_attention

  def body(q, k, v):
    if mode == 'ring':
      return _ring(q, k, v, scale, size)
    k = jax.lax.all_gather(k, AXIS, axis=1, tiled=True)  # [B, N, heads, H]
    v = jax.lax.all_gather(v, AXIS, axis=1, tiled=True)
    return local(q, k, v, None, scale)

  spec = PartitionSpec(*spec)
  return jax.shard_map(body, mesh=partitioning.mesh, in_specs=(spec, spec, spec),
                       out_specs=spec, check_vma=False)(q, k, v)
