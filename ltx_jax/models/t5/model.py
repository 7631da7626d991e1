"""The T5 v1.1 encoder: embedding, shared relative position bias, scanned pre-norm blocks.

Precision: parameters are stored in `param_dtype` and matmuls run in `dtype`. The residual stream
is kept in f32 throughout (every sublayer output is upcast before it is added). T5 v1.1's FFN
outputs grow large: they overflow an fp16 residual stream (transformers clamps it to the fp16
range) and lose most of their low bits in a bf16 one; we avoid both by never holding the stream
in 16 bits, so no clamping is needed. Use bf16 or f32 compute: fp16 matmuls inside the FFN can
still overflow. Norms, the position bias and the softmax are f32 islands as well.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.models.t5.config import T5Config
from ltx_jax.nn.attention import attention
from ltx_jax.nn.layers import Dense, RMSNorm, param, stacked

# Additive bias on padded keys: finite (so a row with every key masked stays finite) and still
# representable after a cast to bf16 by fused kernels.
_MASKED = -1e30


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> jax.Array:
  """Bidirectional T5 buckets of (key - query) distances -> int32 [T, S] in [0, num_buckets)."""
  pos = jnp.arange(length)
  rel = pos[None, :] - pos[:, None]  # [T, S], key minus query
  half = num_buckets // 2  # one half of the buckets per direction
  base = jnp.where(rel > 0, half, 0)
  dist = jnp.abs(rel)
  exact = half // 2  # distances below this get a bucket each, the rest are log-spaced
  safe = jnp.maximum(dist, 1).astype(jnp.float32)
  log_bucket = exact + (jnp.log(safe / exact) / math.log(max_distance / exact)
                        * (half - exact)).astype(jnp.int32)
  log_bucket = jnp.minimum(log_bucket, half - 1)
  return (base + jnp.where(dist < exact, dist, log_bucket)).astype(jnp.int32)


class Embed(nnx.Module):
  """Token embedding table [V, D]; T5 does not rescale it."""

  torch_names = {'embedding': ('weight', None)}

  def __init__(self, vocab_size: int, dim: int, *, param_dtype, rngs: nnx.Rngs):
    self.embedding = param(nnx.initializers.normal(1.0), rngs.params(), (vocab_size, dim),
                           param_dtype, ('vocab', 'embed'))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return self.embedding[...][ids]  # [B, S, D]


class RelativePositionBias(nnx.Module):
  """Learned bias per (distance bucket, head), shared by every layer (HF keeps it in layer 0)."""

  torch_names = {'table': ('weight', None)}

  def __init__(self, num_buckets: int, max_distance: int, num_heads: int, *, param_dtype,
               rngs: nnx.Rngs):
    self.num_buckets, self.max_distance = num_buckets, max_distance
    self.table = param(nnx.initializers.normal(0.02), rngs.params(), (num_buckets, num_heads),
                       param_dtype, (None, 'heads'))

  def __call__(self, length: int) -> jax.Array:
    """f32 [1, N, S, S]: an f32 island, it is added to f32 logits."""
    buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)  # [T, S]
    table = self.table[...].astype(jnp.float32)  # [K, N]
    return jnp.transpose(table[buckets], (2, 0, 1))[None]  # [1, N, T, S]


class SelfAttention(nnx.Module):
  """Multi-head self-attention with T5's conventions: no biases, no 1/sqrt(d) logit scale."""

  def __init__(self, d_model: int, num_heads: int, head_dim: int, *, attention: str, dtype,
               param_dtype, rngs: nnx.Rngs):
    self.num_heads, self.head_dim = num_heads, head_dim
    self.attention = attention  # the kernel choice: 'auto', 'xla', 'cudnn' or registered
    inner = num_heads * head_dim
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q = Dense(d_model, inner, axes=('embed', 'heads'), **kw)
    self.k = Dense(d_model, inner, axes=('embed', 'heads'), **kw)
    self.v = Dense(d_model, inner, axes=('embed', 'heads'), **kw)
    self.o = Dense(inner, d_model, axes=('heads', 'embed'), **kw)

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    b, s, _ = x.shape
    split = lambda t: t.reshape(b, s, self.num_heads, self.head_dim)  # [B, S, N, H]
    out = attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), bias, scale=1.0,
                    implementation=self.attention)  # [B, S, N, H]
    return self.o(out.reshape(b, s, -1))  # [B, S, D]


class GatedGeluFFN(nnx.Module):
  """wo(gelu_tanh(wi_0 x) * wi_1 x)."""

  def __init__(self, d_model: int, d_ff: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.wi_0 = Dense(d_model, d_ff, axes=('embed', 'mlp'), **kw)
    self.wi_1 = Dense(d_model, d_ff, axes=('embed', 'mlp'), **kw)
    self.wo = Dense(d_ff, d_model, axes=('mlp', 'embed'), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.gelu(self.wi_0(x), approximate=True) * self.wi_1(x)  # [B, S, F]
    return self.wo(h)  # [B, S, D]


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x)). x is f32."""

  def __init__(self, d_model: int, num_heads: int, head_dim: int, d_ff: int, *, eps: float,
               attention: str, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.attn_norm = RMSNorm(d_model, eps=eps, param_dtype=param_dtype, rngs=rngs)
    self.attn = SelfAttention(d_model, num_heads, head_dim, attention=attention, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
    self.ffn_norm = RMSNorm(d_model, eps=eps, param_dtype=param_dtype, rngs=rngs)
    self.ffn = GatedGeluFFN(d_model, d_ff, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    # x: [B, S, D] f32 residual stream; sublayers see (and return) the compute dtype.
    x = x + self.attn(self.attn_norm(x).astype(self.dtype), bias).astype(jnp.float32)
    return x + self.ffn(self.ffn_norm(x).astype(self.dtype)).astype(jnp.float32)


class T5Encoder(nnx.Module):
  """input_ids [B, S] int, attention_mask [B, S] (1 = token) -> hidden states [B, S, D]."""

  def __init__(self, config: T5Config, *, dtype=jnp.float32, param_dtype=None,
               attention: str = 'auto', rngs: nnx.Rngs):
    c = config
    param_dtype = dtype if param_dtype is None else param_dtype
    self.config, self.dtype = config, dtype
    self.embed = Embed(c.vocab_size, c.d_model, param_dtype=param_dtype, rngs=rngs)
    self.rel_bias = RelativePositionBias(c.num_buckets, c.max_distance, c.num_heads,
                                         param_dtype=param_dtype, rngs=rngs)
    self.layers = stacked(
        lambda r: Block(c.d_model, c.num_heads, c.head_dim, c.d_ff, eps=c.eps,
                        attention=attention, dtype=dtype, param_dtype=param_dtype, rngs=r),
        c.num_layers, rngs)
    self.final_norm = RMSNorm(c.d_model, eps=c.eps, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    s = input_ids.shape[1]
    x = self.embed(input_ids).astype(jnp.float32)  # [B, S, D] f32 residual stream
    bias = self.rel_bias(s)  # [1, N, S, S], computed once for all layers
    if attention_mask is not None:
      keep = attention_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
      bias = bias + jnp.where(keep, 0.0, _MASKED).astype(jnp.float32)  # [B, N, S, S]
    graph, params = nnx.split(self.layers)
    x, _ = jax.lax.scan(lambda h, p: (nnx.merge(graph, p)(h, bias), None), x, params)
    return self.final_norm(x).astype(self.dtype)  # [B, S, D]
