"""Context-parallel self-attention: queries, keys and values split over the mesh's 'context'
axis along the token dimension.

'allgather': each device gathers every key and value (all_gather over 'context') and attends
  its own query tokens with the local kernel. Simple; keys and values of all tokens are held
  at once per device (2 x [B, N, heads/tensor, H]), the N x N logits are not (with a flash
  kernel such as 'splash'; XLA's reference kernel holds [B, heads, N/context, N]).
'ring': keys and values travel around the ring of context devices (ppermute), one block at a
  time; each step attends the local queries to the block in hand with the kernel's
  log-sum-exp variant (XLA's f32 blocks, or splash's on TPU) and merges the normalised block
  outputs by their log-sum-exps (in f32): a device never holds more than two key/value blocks.

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


def _ring(q, k, v, scale: float, size: int, with_lse: Callable) -> jax.Array:
  """Per-device body. q [B, T, N, H], k/v [B, S, N, H] (local blocks) -> [B, T, N, H].

  with_lse: (q, k, v, bias, scale) -> (out [B, T, N, H], logsumexp [B, N, T] f32).
  """
  b, t, n, _ = q.shape
  perm = [(i, (i + 1) % size) for i in range(size)]

  def step(_, carry):
    k, v, lse, o = carry
    o_blk, lse_blk = with_lse(q, k, v, None, scale)
    new = jnp.logaddexp(lse, lse_blk)  # [B, N, T] f32
    w_old = jnp.transpose(jnp.exp(lse - new), (0, 2, 1))[..., None]  # [B, T, N, 1]
    w_blk = jnp.transpose(jnp.exp(lse_blk - new), (0, 2, 1))[..., None]
    o = o * w_old + o_blk.astype(jnp.float32) * w_blk
    k = jax.lax.ppermute(k, AXIS, perm)
    v = jax.lax.ppermute(v, AXIS, perm)
    return k, v, new, o

  init = (k, v, jnp.full((b, n, t), -jnp.inf, jnp.float32), jnp.zeros(q.shape, jnp.float32))
  _, _, _, o = jax.lax.fori_loop(0, size, step, init)
  return o.astype(q.dtype)


def context_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float,
                      local: Callable, with_lse: Callable,
                      partitioning: sharding_lib.Partitioning) -> jax.Array | None:
  """q/k/v [B, N, heads, H] -> [B, N, heads, H], or None when the tokens cannot be split over
  'context' (axis of size 1, or N not divisible): the caller then attends normally.

  local: the single-device kernel (q, k, v, bias, scale) -> out, used by 'allgather';
  with_lse: its log-sum-exp variant (-> out, logsumexp [B, heads, T] f32), used by 'ring'.
  """
  spec = partitioning.spec(q.shape, ('batch', 'tokens', 'act_heads', None))
  size = dict(partitioning.mesh.shape).get(AXIS, 1)
  if spec[1] not in (AXIS, (AXIS,)) or size == 1:
    return None
  mode = partitioning.context_attention

  def body(q, k, v):
    if mode == 'ring':
      return _ring(q, k, v, scale, size, with_lse)
    k = jax.lax.all_gather(k, AXIS, axis=1, tiled=True)  # [B, N, heads, H]
    v = jax.lax.all_gather(v, AXIS, axis=1, tiled=True)
    return local(q, k, v, None, scale)

  spec = PartitionSpec(*spec)
  return jax.shard_map(body, mesh=partitioning.mesh, in_specs=(spec, spec, spec),
                       out_specs=spec, check_vma=False)(q, k, v)
