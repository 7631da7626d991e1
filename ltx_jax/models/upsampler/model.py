"""The LTX-Video latent upsampler, channels-last: latents [B, F, H, W, C] -> [B, F', 2H, 2W, C].

initial conv -> GroupNorm -> SiLU -> ResBlocks -> upsampling conv + pixel shuffle -> ResBlocks ->
final conv. It works on un-normalised latents (the VAE's per-channel statistics undone).

Upsampling conv by config (the reference's choices):
  spatial only       a 2-D conv to 4 x mid per frame, then (h, w) pixel shuffle
  temporal only      a 3-D conv to 2 x mid, then a time shuffle; the first output frame is dropped
  spatial + temporal a 3-D conv to 8 x mid, then (t, h, w) shuffle; the first output frame is dropped
With dims=2 every other conv and every GroupNorm also works per frame (frames folded into the
batch); with dims=3 they are 3-D (zero padded in time, statistics over all frames).

Logical axis names: conv kernels (None, ..., 'conv_in', 'conv_out') in HWIO / DHWIO, conv biases
('conv_out',), norm vectors ('conv_in',); the default rules replicate them all.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.errors import UsageError
from ltx_jax.models.upsampler.config import GROUPS, UpsamplerConfig
from ltx_jax.nn.layers import param

GROUP_NORM_EPS = 1e-5  # torch.nn.GroupNorm's default


def group_norm(x: jax.Array, groups: int, scale: jax.Array, bias: jax.Array,
               eps: float = GROUP_NORM_EPS) -> jax.Array:
  """torch GroupNorm on channels-last x [N, ..., C]: statistics per row and group over every
  other axis, in f32 (a bf16 variance over this many values loses most of its bits)."""
  xf = x.astype(jnp.float32)
  shape = xf.shape
  g = xf.reshape(shape[0], -1, groups, shape[-1] // groups)  # [N, T*H*W, G, C/G]
  mean = jnp.mean(g, axis=(1, 3), keepdims=True)
  var = jnp.mean(jnp.square(g - mean), axis=(1, 3), keepdims=True)
  y = ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(shape)
  y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y.astype(x.dtype)


def pixel_shuffle(x: jax.Array, factors: tuple[int, int, int]) -> jax.Array:
  """[N, T, H, W, C*pt*ph*pw] -> [N, T*pt, H*ph, W*pw, C], channel c*pt*ph*pw + i*ph*pw + j*pw + k
  going to offset (i, j, k): the reference's `(c p1 p2 p3)` order."""
  n, t, h, w, c = x.shape
  pt, ph, pw = factors
  x = x.reshape(n, t, h, w, c // (pt * ph * pw), pt, ph, pw)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)  # [N, T, pt, H, ph, W, pw, C]
  return x.reshape(n, t * pt, h * ph, w * pw, c // (pt * ph * pw))


class GroupNorm(nnx.Module):
  """Affine GroupNorm(32) over channels-last activations; see `group_norm`."""

  torch_names = {'scale': ('weight', None), 'bias': ('bias', None)}

  def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
    del rngs  # ones and zeros, as torch initialises them
    self.scale = param(nnx.initializers.ones, None, (channels,), param_dtype, ('conv_in',))
    self.bias = param(nnx.initializers.zeros, None, (channels,), param_dtype, ('conv_in',))

  def __call__(self, x: jax.Array) -> jax.Array:
    return group_norm(x, GROUPS, self.scale[...], self.bias[...])


class Conv(nnx.Module):
  """A 3x3 (dims=2, per frame) or 3x3x3 (dims=3) convolution, stride 1, zero padding 1, on
  [N, T, H, W, Cin] -> [N, T, H, W, Cout]."""

  def __init__(self, in_channels: int, out_channels: int, dims: int, *, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.dims = dims
    self.dtype = dtype
    fan_in = in_channels * 3 ** dims
    self.kernel = param(nnx.initializers.lecun_normal(), rngs.params(),
                        (3,) * dims + (in_channels, out_channels), param_dtype,
                        (None,) * dims + ('conv_in', 'conv_out'))
    self.bias = param(nnx.initializers.uniform(1 / math.sqrt(fan_in)), rngs.params(),
                      (out_channels,), param_dtype, ('conv_out',))

  @property
  def torch_names(self):
    # torch weight [O, I, (kt,) kh, kw] -> ours [(kt,) kh, kw, I, O]
    perm = (2, 3, 1, 0) if self.dims == 2 else (2, 3, 4, 1, 0)
    return {'kernel': ('weight', perm), 'bias': ('bias', None)}

  def __call__(self, x: jax.Array) -> jax.Array:
    n, t = x.shape[:2]
    x = x.astype(self.dtype)
    kernel = self.kernel[...].astype(self.dtype)
    if self.dims == 2:
      y = jax.lax.conv_general_dilated(x.reshape(n * t, *x.shape[2:]), kernel, (1, 1),
                                       ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      y = y.reshape(n, t, *y.shape[1:])
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), ((1, 1), (1, 1), (1, 1)),
                                       dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    return y + self.bias[...].astype(self.dtype)


class ResBlock(nnx.Module):
  """conv -> norm -> SiLU -> conv -> norm, plus the input, then SiLU."""

  def __init__(self, channels: int, dims: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    conv = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = Conv(channels, channels, dims, **conv)
    self.norm1 = GroupNorm(channels, param_dtype=param_dtype, rngs=rngs)
    self.conv2 = Conv(channels, channels, dims, **conv)
    self.norm2 = GroupNorm(channels, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.silu(self.norm1(self.conv1(x)))
    h = self.norm2(self.conv2(h))
    return jax.nn.silu(h + x.astype(h.dtype))


class LatentUpsampler(nnx.Module):
  """Upsamples un-normalised latents x2 in space and/or time (see the module docstring).

  Parameter names follow the reference state dicts: initial_conv, initial_norm, res_blocks.i,
  upsampler (the torch `upsampler.0`), post_upsample_res_blocks.i, final_conv.
  """

  def __init__(self, config: UpsamplerConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = config
    self.dtype = dtype
    c, mid, dims = config.in_channels, config.mid_channels, config.dims
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.initial_conv = Conv(c, mid, dims, **kw)
    self.initial_norm = GroupNorm(mid, param_dtype=param_dtype, rngs=rngs)
    self.res_blocks = nnx.List([ResBlock(mid, dims, **kw)
                                for _ in range(config.num_blocks_per_stage)])
    pt, ph, pw = config.factors
    # The upsampling conv is 3-D exactly when it shuffles time.
    self.upsampler = Conv(mid, mid * pt * ph * pw, 3 if config.temporal_upsample else 2, **kw)
    self.post_upsample_res_blocks = nnx.List([ResBlock(mid, dims, **kw)
                                              for _ in range(config.num_blocks_per_stage)])
    self.final_conv = Conv(mid, c, dims, **kw)

  def __call__(self, latents: jax.Array) -> jax.Array:
    # latents: [B, F, H, W, C] un-normalised -> [B, F', H', W', C] (F' = 2F - 1 when temporal)
    b, f, h, w, c = latents.shape
    if c != self.config.in_channels:
      raise UsageError(f"latents of shape {latents.shape} have {c} channels; this upsampler "
                       f"takes [B, F, H, W, {self.config.in_channels}] (channels last)")
    x = latents.astype(self.dtype)
    if self.config.dims == 2:
      x = x.reshape(b * f, 1, h, w, c)  # every frame on its own, norms included
    x = jax.nn.silu(self.initial_norm(self.initial_conv(x)))
    for block in self.res_blocks:
      x = block(x)
    x = pixel_shuffle(self.upsampler(x), self.config.factors)  # [N, T*pt, 2H, 2W, mid]
    if self.config.temporal_upsample:
      x = x[:, 1:]  # F -> 2F - 1: the causal first frame is not doubled
    for block in self.post_upsample_res_blocks:
      x = block(x)
    x = self.final_conv(x)
    return x.reshape(b, -1, *x.shape[2:])
