"""The LTX-Video diffusion transformer (DiT) as Flax NNX modules.

Module and attribute names follow diffusers' `LTXVideoTransformer3DModel`, so the checkpoint
name tables in `loading.py` stay short. Blocks are stacked (one parameter tree with a leading
'layers' axis) and run under `jax.lax.scan`; per-layer inputs (the spatio-temporal guidance
mask) ride along the scan.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.models.transformer import rope as rope_lib
from ltx_jax.models.transformer.config import TransformerConfig
from ltx_jax.nn import (Dense, RMSNorm, attention, layer_norm, param, rms_norm, stacked,
                        timestep_sinusoid)

# Ways to perturb a layer for spatio-temporal guidance (STG), as in the official pipeline.
# attention_values: self-attention returns V; attention_skip: it returns its input;
# transformer_block: the whole block is the identity.
STG_STRATEGIES = ('attention_values', 'attention_skip', 'transformer_block')

# Gradient checkpointing of each scanned block (`LTXVideoTransformer.remat`): 'none' keeps every
# activation for the backward pass, 'full' recomputes the block, 'dots' keeps only the matmul
# outputs (jax.checkpoint_policies.checkpoint_dots).
REMAT_POLICIES = {'none': None, 'full': jax.checkpoint_policies.nothing_saveable,
                  'dots': jax.checkpoint_policies.checkpoint_dots}


def gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)


class AdaLNSingle(nnx.Module):
  """Timestep -> (6 modulation vectors per block [.., 6D], embedded timestep [.., D])."""

  def __init__(self, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.linear_1 = Dense(256, dim, axes=(None, 'embed'), **kw)
    self.linear_2 = Dense(dim, dim, axes=('embed', 'embed_out'), **kw)
    self.linear = Dense(dim, 6 * dim, axes=('embed', 'adaln'), **kw)

  def __call__(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    emb = self.linear_2(jax.nn.silu(self.linear_1(timestep_sinusoid(t, 256))))
    return self.linear(jax.nn.silu(emb)), emb


class CaptionProjection(nnx.Module):
  def __init__(self, in_dim: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.linear_1 = Dense(in_dim, dim, axes=('caption', 'embed'), **kw)
    self.linear_2 = Dense(dim, dim, axes=('embed', 'embed_out'), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(gelu_tanh(self.linear_1(x)))


class Attention(nnx.Module):
  """Multi-head attention with RMSNorm on q and k across all heads, optional RoPE."""

  def __init__(self, dim: int, kv_dim: int, num_heads: int, head_dim: int, *, qk_eps: float,
               bias: bool, out_bias: bool, attention: str, dtype, param_dtype,
               rngs: nnx.Rngs, sequence_parallel: bool = False):
    inner = num_heads * head_dim
    self.sequence_parallel = sequence_parallel  # self-attention: context-parallel capable
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.num_heads = num_heads
    self.attention = attention  # the kernel choice: 'auto', 'xla', 'cudnn' or registered
    self.to_q = Dense(dim, inner, axes=('embed', 'heads'), use_bias=bias, **kw)
    self.to_k = Dense(kv_dim, inner, axes=('embed', 'heads'), use_bias=bias, **kw)
    self.to_v = Dense(kv_dim, inner, axes=('embed', 'heads'), use_bias=bias, **kw)
    self.to_out = Dense(inner, dim, axes=('heads', 'embed'), use_bias=out_bias, **kw)
    self.norm_q = RMSNorm(inner, eps=qk_eps, axis_name='heads', param_dtype=param_dtype, rngs=rngs)
    self.norm_k = RMSNorm(inner, eps=qk_eps, axis_name='heads', param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, context: jax.Array, bias: jax.Array | None = None,
               rope: tuple[jax.Array, jax.Array] | None = None,
               keep: jax.Array | None = None, strategy: str | None = None) -> jax.Array:
    """x [B, T, D], context [B, S, Dk], bias [B, 1, 1, S] -> [B, T, D].

    keep [B] (1 = normal, 0 = perturbed) applies an STG `strategy` to some batch rows.
    """
    q = self.norm_q(self.to_q(x))  # [B, T, NH]
    k = self.norm_k(self.to_k(context))  # [B, S, NH]
    v = self.to_v(context)  # [B, S, NH]
    if rope is not None:
      q = rope_lib.apply_rope(q, *rope)
      k = rope_lib.apply_rope(k, *rope)
    heads = lambda a: a.reshape(*a.shape[:2], self.num_heads, -1)  # [B, T, N, H]
    out = attention(heads(q), heads(k), heads(v), bias, implementation=self.attention,
                    sequence_sharded=self.sequence_parallel)
    out = out.reshape(q.shape)  # [B, T, NH]
    if keep is not None and strategy in ('attention_values', 'attention_skip'):
      alt = v if strategy == 'attention_values' else x
      m = keep.astype(out.dtype)[:, None, None]
      out = out * m + alt.astype(out.dtype) * (1 - m)
    return self.to_out(out)


class FeedForward(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.proj_in = Dense(dim, hidden, axes=('embed', 'mlp'), **kw)
    self.proj_out = Dense(hidden, dim, axes=('mlp', 'embed'), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj_out(gelu_tanh(self.proj_in(x)))


def _modulate(x: jax.Array, eps: float, shift: jax.Array, scale: jax.Array,
              norm=rms_norm) -> jax.Array:
  """norm(x) * (1 + scale) + shift, in f32, cast back to x's dtype."""
  y = norm(x.astype(jnp.float32), eps)
  return (y * (1 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)).astype(x.dtype)


class Block(nnx.Module):
  """Self-attention (modulated, RoPE), cross-attention to text, FFN (modulated)."""

  def __init__(self, num_heads: int, head_dim: int, cross_attention_dim: int, *, norm_eps: float,
               qk_norm_eps: float, attention_bias: bool, attention_out_bias: bool,
               attention: str, dtype, param_dtype, rngs: nnx.Rngs):
    d = num_heads * head_dim
    kw = dict(qk_eps=qk_norm_eps, bias=attention_bias, out_bias=attention_out_bias,
              attention=attention, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.eps = norm_eps
    self.attn1 = Attention(d, d, num_heads, head_dim, sequence_parallel=True, **kw)
    self.attn2 = Attention(d, cross_attention_dim, num_heads, head_dim, **kw)
    self.ff = FeedForward(d, 4 * d, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.scale_shift_table = param(lambda k, s, t: jax.random.normal(k, s, t) / d ** 0.5,
                                   rngs.params(), (6, d), param_dtype, (None, 'embed'))

  def modulated_input(self, x: jax.Array, temb: jax.Array
                      ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """x [B, N, D], temb [B, 1|N, 6D] -> (the self-attention's input, norm(x) * (1 + scale)
    + shift, [B, N, D]; the other modulation vectors (gate_msa, shift_mlp, scale_mlp,
    gate_mlp), each f32 [B, 1|N, D]). TeaCache measures the first block's input here."""
    b, t, _ = temb.shape
    ada = (self.scale_shift_table[...].astype(jnp.float32)
           + temb.astype(jnp.float32).reshape(b, t, 6, -1))  # [B, 1|N, 6, D]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        ada[:, :, i] for i in range(6))
    return _modulate(x, self.eps, shift_msa, scale_msa), (gate_msa, shift_mlp, scale_mlp,
                                                          gate_mlp)

  def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array, context_bias: jax.Array,
               rope: tuple[jax.Array, jax.Array], keep: jax.Array | None = None,
               strategy: str | None = None) -> jax.Array:
    """x [B, N, D]; temb [B, 1|N, 6D]; context [B, S, D]; keep [B] or None -> [B, N, D]."""
    h, (gate_msa, shift_mlp, scale_mlp, gate_mlp) = self.modulated_input(x, temb)
    x_in = x
    x = x + self.attn1(h, h, None, rope, keep, strategy) * gate_msa.astype(x.dtype)
    x = x + self.attn2(x, context, context_bias)
    h = _modulate(x, self.eps, shift_mlp, scale_mlp)
    x = x + self.ff(h) * gate_mlp.astype(x.dtype)
    if keep is not None and strategy == 'transformer_block':
      m = keep.astype(x.dtype)[:, None, None]
      x = x * m + x_in * (1 - m)
    return x


class Stream(NamedTuple):
  """The residual stream before the first block and what every block reads (`embed`)."""
  x: jax.Array                         # [B, N, D] projected latent tokens
  temb: jax.Array                      # [B, 1|N, 6D] block modulation
  embedded_t: jax.Array                # [B, 1|N, D] the final norm's modulation
  context: jax.Array                   # [B, S, D] projected text
  context_bias: jax.Array | None       # [B, 1, 1, S] additive text mask
  rope: tuple[jax.Array, jax.Array]    # 2 x [B, N, D] f32 cos / sin
  skip_layer_mask: jax.Array | None    # [L, B] STG keep mask
  skip_layer_strategy: str | None


class LTXVideoTransformer(nnx.Module):
  """The LTX-Video DiT. See `__call__` for the inputs (diffusers' names and meaning)."""

  def __init__(self, config: TransformerConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               attention: str = 'auto', rngs: nnx.Rngs):
    c = config
    d = c.dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.config = config
    self.dtype = dtype
    self.remat = 'none'  # one of REMAT_POLICIES: gradient checkpointing of each block (training)
    self.proj_in = Dense(c.in_channels, d, axes=('latent', 'embed'), **kw)
    self.time_embed = AdaLNSingle(d, **kw)
    self.caption_projection = CaptionProjection(c.caption_channels, d, **kw)
    self.blocks = stacked(
        lambda r: Block(c.num_heads, c.head_dim, c.cross_attention_dim, norm_eps=c.norm_eps,
                        qk_norm_eps=c.qk_norm_eps, attention_bias=c.attention_bias,
                        attention_out_bias=c.attention_out_bias, attention=attention,
                        dtype=dtype, param_dtype=param_dtype, rngs=r), c.num_layers, rngs)
    self.scale_shift_table = param(lambda k, s, t: jax.random.normal(k, s, t) / d ** 0.5,
                                   rngs.params(), (2, d), param_dtype, (None, 'embed'))
    self.proj_out = Dense(d, c.out_channels, axes=('embed', 'latent'), **kw)

  def __call__(self, hidden_states: jax.Array, encoder_hidden_states: jax.Array,
               timestep: jax.Array, encoder_attention_mask: jax.Array | None = None,
               num_frames: int | None = None, height: int | None = None,
               width: int | None = None,
               rope_interpolation_scale: Sequence[float] | jax.Array | None = None,
               video_coords: jax.Array | None = None, skip_layer_mask: jax.Array | None = None,
               skip_layer_strategy: str | None = None) -> jax.Array:
    """Predicts the flow velocity of packed latent tokens.

    hidden_states: [B, N, C_in] latent tokens in (f, h, w) order.
    encoder_hidden_states: [B, S, caption_channels] text embeddings.
    timestep: [B] or [B, N] (per token) on the 0..1000 scale.
    encoder_attention_mask: [B, S] of 0/1 (1 = real token); None attends to every token.
    num_frames, height, width: the latent grid (N = F * H * W), or
    video_coords: [B, 3, N] per-token (time, y, x) coordinates, instead of the grid.
    rope_interpolation_scale: (t, h, w) latent-to-pixel factors applied to grid indices.
    skip_layer_mask: [num_layers, B] (1 = normal, 0 = perturbed) with skip_layer_strategy one of
      STG_STRATEGIES: spatio-temporal guidance.
    Returns [B, N, C_out].
    """
    stream = self.embed(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask,
                        num_frames, height, width, rope_interpolation_scale, video_coords,
                        skip_layer_mask, skip_layer_strategy)
    x = self.blocks_range(stream.x, stream, 0, self.config.num_layers)
    return self.velocity(self.norm_out(x, stream))

  # The forward pass in parts, for step caches (ltx_jax/sampling/cache.py), which run the first
  # block and the rest apart: embed -> blocks_range(0, k) -> blocks_range(k, L) -> norm_out ->
  # velocity is `__call__`.

  def embed(self, hidden_states: jax.Array, encoder_hidden_states: jax.Array,
            timestep: jax.Array, encoder_attention_mask: jax.Array | None = None,
            num_frames: int | None = None, height: int | None = None, width: int | None = None,
            rope_interpolation_scale: Sequence[float] | jax.Array | None = None,
            video_coords: jax.Array | None = None, skip_layer_mask: jax.Array | None = None,
            skip_layer_strategy: str | None = None) -> Stream:
    """`__call__`'s inputs -> the residual stream before the first block and what every block
    reads (`Stream`)."""
    config = self.config
    b, n, _ = hidden_states.shape
    if video_coords is not None:
      pos = rope_lib.coord_positions(video_coords, config.rope_max_pos)
    else:
      if None in (num_frames, height, width) or num_frames * height * width != n:
        raise ValueError(f"num_frames x height x width = {num_frames} x {height} x {width} must "
                         f"equal the {n} tokens of hidden_states, or pass video_coords")
      pos = rope_lib.grid_positions(b, num_frames, height, width, rope_interpolation_scale,
                                    config.rope_max_pos)
    rope = rope_lib.rope_tables(pos, config.dim, config.rope_theta)  # 2 x [B, N, D] f32
    if skip_layer_mask is not None and skip_layer_strategy not in STG_STRATEGIES:
      raise ValueError(f"skip_layer_strategy={skip_layer_strategy!r}; choose one of "
                       f"{STG_STRATEGIES}")

    if encoder_attention_mask is None:
      context_bias = None
    else:  # additive bias as in both references: 0 keeps, -10000 drops
      context_bias = ((1 - encoder_attention_mask.astype(jnp.float32)) * -10000.0)[:, None, None]

    # Activation layout at block boundaries (ltx_jax/sharding.py; no-ops on one device).
    tokens = _token_layout(n)
    rope = tuple(tokens(r) for r in rope)
    x = tokens(self.proj_in(hidden_states))  # [B, N, D]
    t = jnp.asarray(timestep).reshape(b, -1)  # [B, 1|N]
    temb, embedded_t = self.time_embed(t)  # [B, 1|N, 6D], [B, 1|N, D]
    temb = tokens(temb)
    context = sharding_lib.constrain(self.caption_projection(encoder_hidden_states),
                                     ('batch', 'text', 'act_embed'))  # [B, S, D]

    return Stream(x, temb, embedded_t, context, context_bias, rope, skip_layer_mask,
                  skip_layer_strategy)

  def blocks_range(self, x: jax.Array, stream: Stream, start: int, stop: int) -> jax.Array:
    """x [B, N, D] through blocks start..stop-1 (one scan over that slice of the stacked
    parameters) -> [B, N, D]."""
    graph, layers = nnx.split(self.blocks)
    tokens = _token_layout(x.shape[1])
    take = lambda a: a[start:stop]
    layers = jax.tree.map(take, layers)
    keep = None if stream.skip_layer_mask is None else take(stream.skip_layer_mask)

    def body(x, xs):
      params, keep = xs
      x = nnx.merge(graph, params)(x, stream.temb, stream.context, stream.context_bias,
                                   stream.rope, keep, stream.skip_layer_strategy)
      return tokens(x), None

    if self.remat != 'none':  # only changes what the backward pass keeps
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    x, _ = jax.lax.scan(body, x, (layers, keep))
    return x

  def first_block_input(self, x: jax.Array, stream: Stream) -> jax.Array:
    """The first block's modulated self-attention input [B, N, D] for the stream x."""
    graph, layers = nnx.split(self.blocks)
    first = nnx.merge(graph, jax.tree.map(lambda a: a[0], layers))
    return first.modulated_input(x, stream.temb)[0]

  def norm_out(self, x: jax.Array, stream: Stream) -> jax.Array:
    """The final norm, modulated by the embedded timestep: [B, N, D] -> [B, N, D]."""
    mod = (self.scale_shift_table[...].astype(jnp.float32)[None, None]
           + stream.embedded_t.astype(jnp.float32)[:, :, None])  # [B, 1|N, 2, D]
    return _modulate(x, self.config.norm_eps, mod[:, :, 0], mod[:, :, 1], norm=layer_norm)

  def velocity(self, x: jax.Array) -> jax.Array:
    """The normed stream [B, N, D] -> the velocity [B, N, C_out]."""
    return _token_layout(x.shape[1])(self.proj_out(x))


def _token_layout(n: int):
  """Constrains an activation to the block-boundary layout (ltx_jax/sharding.py; a no-op on one
  device): [B, N | other, D] with N the video tokens."""
  return lambda a: sharding_lib.constrain(
      a, ('batch', 'tokens' if a.shape[1] == n else None, 'act_embed'))
