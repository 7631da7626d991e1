"""VAE building blocks, channels-last: activations are [B, F, H, W, C].

Logical axis names of the VAE parameters:
  conv kernels   (None, None, None, 'conv_in', 'conv_out')   DHWIO, the layout XLA convolves natively
  conv biases    ('conv_out',)
  per-channel vectors and tables over a block's input channels: 'conv_in'
  timestep MLP   ('timestep_freq', 'embed') then ('embed', 'conv_in')
The VAE is small next to the transformer; the default rules leave all of these replicated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.nn.embeddings import timestep_sinusoid
from ltx_jax.nn.layers import Dense, param
from ltx_jax.nn.norms import layer_norm, rms_norm

# torch Conv3d weight [O, I, kt, kh, kw] -> ours [kt, kh, kw, I, O]
_CONV_PERM = (2, 3, 4, 1, 0)
_PAD_MODES = {'zeros': 'constant', 'replicate': 'edge', 'reflect': 'reflect', 'circular': 'wrap'}
PIXEL_NORM_EPS = 1e-8
TIMESTEP_FREQ_DIM = 256


def pixel_norm(x: jax.Array) -> jax.Array:
  """RMS over channels, no affine; statistics in f32 (see `rms_norm`)."""
  return rms_norm(x, PIXEL_NORM_EPS)


class CausalConv3d(nnx.Module):
  """3-D convolution padded in time by replicating edge frames.

  causal: the first frame k-1 times in front (frame t sees frames <= t);
  non-causal: (k-1)/2 copies of the first and of the last frame on either side.
  Height and width are padded by k//2 per `spatial_padding_mode`.
  """

  torch_names = {'kernel': ('conv.weight', _CONV_PERM), 'bias': ('conv.bias', None)}

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
               stride: tuple[int, int, int] = (1, 1, 1), *, spatial_padding_mode: str = 'zeros',
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.kernel_size = kernel_size
    self.stride = tuple(stride)
    self.padding_mode = spatial_padding_mode
    self.dtype = dtype
    k = kernel_size
    fan_in = in_channels * k ** 3
    self.kernel = param(nnx.initializers.lecun_normal(), rngs.params(),
                        (k, k, k, in_channels, out_channels), param_dtype,
                        (None, None, None, 'conv_in', 'conv_out'))
    self.bias = param(nnx.initializers.uniform(1 / math.sqrt(fan_in)), rngs.params(),
                      (out_channels,), param_dtype, ('conv_out',))

  def __call__(self, x: jax.Array, causal: bool = True) -> jax.Array:
    # x: [B, F, H, W, Cin] -> [B, F', H', W', Cout]
    k = self.kernel_size
    t_pad = (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)
    s_pad = (k // 2, k // 2)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), t_pad, (0, 0), (0, 0), (0, 0)), mode='edge')
    if self.padding_mode == 'zeros':
      conv_pad = ((0, 0), s_pad, s_pad)  # let the convolution pad with zeros, no copy
    else:
      x = jnp.pad(x, ((0, 0), (0, 0), s_pad, s_pad, (0, 0)), mode=_PAD_MODES[self.padding_mode])
      conv_pad = ((0, 0), (0, 0), (0, 0))
    kernel = self.kernel[...].astype(self.dtype)
    if k > 1 and self.stride == (1, 1, 1) and jax.default_backend() == 'cpu':
      y = conv3d_cpu(x, kernel, conv_pad[1:])
    else:
      y = jax.lax.conv_general_dilated(x, kernel, window_strides=self.stride, padding=conv_pad,
                                       dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    return y + self.bias[...].astype(self.dtype)


# Largest im2col buffer (bytes) for which a CPU convolution runs as one matmul.
IM2COL_BYTES = 32 * 2**20


def conv3d_cpu(x: jax.Array, kernel: jax.Array, spatial_pad) -> jax.Array:
  """The CPU form of a stride-1 3-D convolution unpadded in time (XLA's CPU convolutions are slow
  on the decoder's shapes): one matmul over an im2col buffer when that buffer is small (few
  positions, many channels: XLA's CPU convolution of 1024 channels on a 2x3 latent runs at
  0.2 GFLOP/s, the matmul at 60), else a sum of 2-D convolutions over the time taps."""
  b, f, h, w, c = x.shape
  kt, kh, kw = kernel.shape[:3]
  (h0, h1), (w0, w1) = spatial_pad
  positions = b * (f - kt + 1) * (h + h0 + h1 - kh + 1) * (w + w0 + w1 - kw + 1)
  if positions * kt * kh * kw * c * x.dtype.itemsize <= IM2COL_BYTES:
    return conv3d_im2col(x, kernel, spatial_pad)
  return conv3d_as_2d(x, kernel, spatial_pad)


def conv3d_im2col(x: jax.Array, kernel: jax.Array, spatial_pad) -> jax.Array:
  """A stride-1 3-D convolution, unpadded in time, as one matmul: the kt*kh*kw shifted views
  of x side by side in channels [B, F', H', W', kt*kh*kw*Cin] @ kernel [kt*kh*kw*Cin, Cout]."""
  (h0, h1), (w0, w1) = spatial_pad
  x = jnp.pad(x, ((0, 0), (0, 0), (h0, h1), (w0, w1), (0, 0)))
  kt, kh, kw, _, cout = kernel.shape
  _, f, h, w, _ = x.shape
  fo, ho, wo = f - kt + 1, h - kh + 1, w - kw + 1
  cols = jnp.concatenate([x[:, a:a + fo, i:i + ho, j:j + wo]
                          for a in range(kt) for i in range(kh) for j in range(kw)], axis=-1)
  acc = jnp.float32 if x.dtype.itemsize == 2 else None  # XLA's CPU 16-bit GEMM: f32 out
  y = jnp.einsum('bfhwk,ko->bfhwo', cols, kernel.reshape(-1, cout), preferred_element_type=acc)
  return y.astype(x.dtype)


def conv3d_as_2d(x: jax.Array, kernel: jax.Array, spatial_pad) -> jax.Array:
  """A stride-1 3-D convolution, unpadded in time, as a sum over the kt time taps of 2-D
  convolutions with frames folded into the batch.

  x [B, F, H, W, Cin], kernel [kt, kh, kw, Cin, Cout] -> [B, F - kt + 1, H', W', Cout].
  XLA's CPU 3-D convolution runs at about half the speed of its 2-D one on the decoder's
  shapes (tools/bench.py, VAE case); GPUs keep the native 3-D convolution.
  """
  b, f, h, w, c = x.shape
  kt = kernel.shape[0]
  frames = f - kt + 1
  y = None
  for t in range(kt):
    xs = x[:, t:t + frames].reshape(b * frames, h, w, c)
    yt = jax.lax.conv_general_dilated(xs, kernel[t], window_strides=(1, 1), padding=spatial_pad,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = yt if y is None else y + yt
  return y.reshape(b, frames, *y.shape[1:])


class LayerNorm(nnx.Module):
  """Affine layer norm over channels, f32 statistics."""

  torch_names = {'scale': ('weight', None), 'bias': ('bias', None)}

  def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32, rngs: nnx.Rngs):
    del rngs
    self.eps = eps
    self.scale = param(nnx.initializers.ones, None, (dim,), param_dtype, ('conv_in',))
    self.bias = param(nnx.initializers.zeros, None, (dim,), param_dtype, ('conv_in',))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = layer_norm(x.astype(jnp.float32), self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


class TimestepEmbedder(nnx.Module):
  """Sinusoid(256) -> Linear -> SiLU -> Linear (PixArt's combined embedder without size terms)."""

  def __init__(self, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    self.linear_1 = Dense(TIMESTEP_FREQ_DIM, dim, axes=('timestep_freq', 'embed'), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    self.linear_2 = Dense(dim, dim, axes=('embed', 'conv_in'), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

  def __call__(self, t: jax.Array) -> jax.Array:
    # t: [B] (already times the timestep scale multiplier) -> [B, dim]
    h = timestep_sinusoid(t, TIMESTEP_FREQ_DIM).astype(self.dtype)  # [B, 256]
    return self.linear_2(jax.nn.silu(self.linear_1(h)))


def spatial_noise(key: jax.Array, x: jax.Array, scale: jax.Array) -> jax.Array:
  """StyleGAN-style noise: one [H, W] field shared by batch, frames and channels, scaled per channel."""
  noise = jax.random.normal(key, x.shape[2:4], jnp.float32)  # [H, W]
  return x + (noise[:, :, None] * scale.astype(jnp.float32)).astype(x.dtype)


class ResnetBlock(nnx.Module):
  """pixel norm -> (scale/shift) -> SiLU -> conv -> (noise) -> twice, plus a shortcut.

  When channels change the shortcut is an affine LayerNorm then a 1x1x1 conv.
  """

  def __init__(self, in_channels: int, out_channels: int, *, inject_noise: bool = False,
               timestep_conditioning: bool = False, spatial_padding_mode: str = 'zeros',
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    conv = dict(spatial_padding_mode=spatial_padding_mode, dtype=dtype, param_dtype=param_dtype,
                rngs=rngs)
    self.conv1 = CausalConv3d(in_channels, out_channels, **conv)
    self.conv2 = CausalConv3d(out_channels, out_channels, **conv)
    if in_channels != out_channels:
      self.norm3 = LayerNorm(in_channels, eps=1e-6, param_dtype=param_dtype, rngs=rngs)
      self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1, **conv)
    else:
      self.norm3 = self.conv_shortcut = None
    if inject_noise:
      # The reference sizes both scales by the input channels (only res_x blocks inject noise).
      self.per_channel_scale1 = param(nnx.initializers.zeros, None, (in_channels,), param_dtype,
                                      ('conv_in',))
      self.per_channel_scale2 = param(nnx.initializers.zeros, None, (in_channels,), param_dtype,
                                      ('conv_in',))
    else:
      self.per_channel_scale1 = self.per_channel_scale2 = None
    self.scale_shift_table = (
        param(nnx.initializers.normal(in_channels ** -0.5), rngs.params(), (4, in_channels),
              param_dtype, (None, 'conv_in')) if timestep_conditioning else None)

  def __call__(self, x: jax.Array, causal: bool, temb: jax.Array | None = None,
               key: jax.Array | None = None) -> jax.Array:
    # x: [B, F, H, W, Cin]; temb: [B, 4 * Cin] (per-block timestep embedding) or None
    h = pixel_norm(x)
    if self.scale_shift_table is not None:
      ada = self.scale_shift_table[...][None] + temb.reshape(temb.shape[0], 4, -1)  # [B, 4, C]
      ada = ada[:, :, None, None, None, :].astype(h.dtype)  # [B, 4, 1, 1, 1, C]
      shift1, scale1, shift2, scale2 = (ada[:, i] for i in range(4))
      h = h * (1 + scale1) + shift1
    h = self.conv1(jax.nn.silu(h), causal)
    if self.per_channel_scale1 is not None and key is not None:
      key, sub = jax.random.split(key)
      h = spatial_noise(sub, h, self.per_channel_scale1[...])
    h = pixel_norm(h)
    if self.scale_shift_table is not None:
      h = h * (1 + scale2) + shift2
    h = self.conv2(jax.nn.silu(h), causal)
    if self.per_channel_scale2 is not None and key is not None:
      h = spatial_noise(key, h, self.per_channel_scale2[...])
    if self.conv_shortcut is not None:
      x = self.conv_shortcut(self.norm3(x), causal)
    return h + x.astype(h.dtype)


class MidBlock(nnx.Module):
  """`res_x`: a stack of same-width ResNet blocks sharing one timestep embedding."""

  def __init__(self, channels: int, num_layers: int, *, inject_noise: bool = False,
               timestep_conditioning: bool = False, spatial_padding_mode: str = 'zeros',
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.time_embedder = (TimestepEmbedder(4 * channels, dtype=dtype, param_dtype=param_dtype,
                                           rngs=rngs) if timestep_conditioning else None)
    self.res_blocks = nnx.List([
        ResnetBlock(channels, channels, inject_noise=inject_noise,
                    timestep_conditioning=timestep_conditioning,
                    spatial_padding_mode=spatial_padding_mode, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs) for _ in range(num_layers)])

  def __call__(self, x: jax.Array, causal: bool, timestep: jax.Array | None = None,
               key: jax.Array | None = None) -> jax.Array:
    # timestep: [B], already scaled by the decoder's timestep_scale_multiplier
    temb = self.time_embedder(timestep) if self.time_embedder is not None else None
    keys = jax.random.split(key, len(self.res_blocks)) if key is not None else None
    for i, block in enumerate(self.res_blocks):
      x = block(x, causal, temb, None if keys is None else keys[i])
    return x


def space_to_depth(x: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
  """[B, F*st, H*sh, W*sw, C] -> [B, F, H, W, C*st*sh*sw], channels ordered (c, st, sh, sw)."""
  b, f, h, w, c = x.shape
  st, sh, sw = stride
  x = x.reshape(b, f // st, st, h // sh, sh, w // sw, sw, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # [B, F, H, W, C, st, sh, sw]
  return x.reshape(b, f // st, h // sh, w // sw, c * st * sh * sw)


def depth_to_space(x: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
  """The inverse of `space_to_depth`."""
  b, f, h, w, c = x.shape
  st, sh, sw = stride
  c //= st * sh * sw
  x = x.reshape(b, f, h, w, c, st, sh, sw).transpose(0, 1, 5, 2, 6, 3, 7, 4)
  return x.reshape(b, f * st, h * sh, w * sw, c)


class SpaceToDepthDownsample(nnx.Module):
  """`compress_*_res`: conv to C_out/prod(stride), space-to-depth, plus channel-group means."""

  def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], *,
               spatial_padding_mode: str = 'zeros', dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.stride = tuple(stride)
    volume = math.prod(stride)
    self.group_size = in_channels * volume // out_channels
    self.conv = CausalConv3d(in_channels, out_channels // volume,
                             spatial_padding_mode=spatial_padding_mode, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
    # x: [B, F, H, W, Cin] -> [B, F', H/sh, W/sw, Cout] with F' = (F + st - 1) / st
    if self.stride[0] == 2:
      x = jnp.concatenate([x[:, :1], x], axis=1)  # the first frame pads time to even
    res = space_to_depth(x, self.stride)  # [B, F', H', W', Cin * V]
    res = res.reshape(*res.shape[:-1], -1, self.group_size).mean(-1)  # [B, F', H', W', Cout]
    y = space_to_depth(self.conv(x, causal), self.stride)
    return y + res.astype(y.dtype)


class DepthToSpaceUpsample(nnx.Module):
  """`compress_*` in the decoder: conv, depth-to-space, drop the first (padding) frame when time
  doubles; `residual` adds the input shuffled the same way and tiled over channels."""

  def __init__(self, in_channels: int, stride: tuple[int, int, int], *, residual: bool = False,
               reduction: int = 1, spatial_padding_mode: str = 'zeros', dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.stride = tuple(stride)
    self.residual = residual
    self.reduction = reduction
    self.conv = CausalConv3d(in_channels, math.prod(stride) * in_channels // reduction,
                             spatial_padding_mode=spatial_padding_mode, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
    # x: [B, F, H, W, Cin] -> [B, F*st - (st-1), H*sh, W*sw, Cin/reduction]
    drop = self.stride[0] - 1
    y = depth_to_space(self.conv(x, causal), self.stride)[:, drop:]
    if self.residual:
      res = depth_to_space(x, self.stride)[:, drop:]  # [..., Cin / V]
      res = jnp.tile(res, (1, 1, 1, 1, math.prod(self.stride) // self.reduction))
      y = y + res.astype(y.dtype)
    return y


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B, F, H*p, W*p, C] -> [B, F, H, W, C*p*p] with channels ordered (c, p_w, p_h).

  Width offset before height offset, as the reference packs them.
  """
  if p == 1:
    return x
  b, f, h, w, c = x.shape
  x = x.reshape(b, f, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
  return x.reshape(b, f, h // p, w // p, c * p * p)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
  """The inverse of `patchify`."""
  if p == 1:
    return x
  b, f, h, w, c = x.shape
  x = x.reshape(b, f, h, w, c // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
  return x.reshape(b, f, h * p, w * p, c // (p * p))
