"""Causal video VAE: encoder, decoder and the autoencoder with its latent statistics.

Video is [B, F, H, W, 3] in [-1, 1]; latents are [B, F', H', W', C] with
F' = (F - 1) / t + 1, H' = H / s, W' = W / s for the config's temporal and spatial compression.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.models.random import random_weights
from ltx_jax.models.vae.config import LOG_VAR_CHANNELS, Block, VAEConfig
from ltx_jax.models.vae.layers import (CausalConv3d, DepthToSpaceUpsample, MidBlock, ResnetBlock,
                                       SpaceToDepthDownsample, TimestepEmbedder, patchify,
                                       pixel_norm, unpatchify)
from ltx_jax.nn.layers import param


class Statistic(nnx.Variable):
  """A loaded constant that is not a trainable parameter (the per-channel latent statistics)."""


class Encoder(nnx.Module):
  """Patchify, conv_in, the block list, pixel norm, SiLU, conv_out -> latent moments."""

  def __init__(self, in_channels: int, out_channels: int, blocks: Sequence[Block], *,
               base_channels: int, patch_size: int, causal: bool,
               spatial_padding_mode: str = 'zeros', dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    """blocks: the encoder block list (`VAEConfig.encoder_blocks`); out_channels: the moment
    channels (latent mean, then the log-variance channels)."""
    kw = dict(spatial_padding_mode=spatial_padding_mode, dtype=dtype, param_dtype=param_dtype,
              rngs=rngs)
    self.patch_size = patch_size
    self.causal = causal
    channels = base_channels
    self.conv_in = CausalConv3d(in_channels * patch_size ** 2, channels, **kw)
    layers = []
    for b in blocks:
      cin, channels = channels, channels * b.multiplier
      if b.name == 'res_x':
        layers.append(MidBlock(channels, b.num_layers, **kw))
      elif b.name == 'res_x_y':
        layers.append(ResnetBlock(cin, channels, **kw))
      elif b.name.endswith('_res'):
        layers.append(SpaceToDepthDownsample(cin, channels, b.stride, **kw))
      else:  # compress_time / compress_space / compress_all / compress_all_x_y
        layers.append(CausalConv3d(cin, channels, 3, b.stride, **kw))
    self.down_blocks = nnx.List(layers)
    self.conv_out = CausalConv3d(channels, out_channels, **kw)

  def __call__(self, video: jax.Array) -> jax.Array:
    # video: [B, F, H, W, Cin] -> moments [B, F', H', W', C_out] (the mean comes first)
    x = self.conv_in(patchify(video, self.patch_size), self.causal)
    for block in self.down_blocks:
      x = block(x, self.causal)
    return self.conv_out(jax.nn.silu(pixel_norm(x)), self.causal)


class Decoder(nnx.Module):
  """conv_in, the reversed block list, pixel norm (+ timestep scale/shift), SiLU, conv_out,
  unpatchify."""

  def __init__(self, in_channels: int, out_channels: int, blocks: Sequence[Block], *,
               base_channels: int, patch_size: int, causal: bool, timestep_conditioning: bool,
               spatial_padding_mode: str = 'zeros', dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    """in_channels: latent channels; blocks: the decoder block list as configured (latent
    side last, `VAEConfig.decoder_blocks`); base_channels: the width at the latent
    (`VAEConfig.decoder_channels()`)."""
    kw = dict(spatial_padding_mode=spatial_padding_mode, dtype=dtype, param_dtype=param_dtype,
              rngs=rngs)
    self.patch_size = patch_size
    self.causal = causal
    self.dtype = dtype
    tc = timestep_conditioning
    channels = base_channels
    self.conv_in = CausalConv3d(in_channels, channels, **kw)
    layers = []
    for b in reversed(blocks):
      cin, channels = channels, channels // b.multiplier
      if b.name == 'res_x':
        layers.append(MidBlock(channels, b.num_layers, inject_noise=b.inject_noise,
                               timestep_conditioning=tc, **kw))
      elif b.name == 'res_x_y':
        layers.append(ResnetBlock(cin, channels, inject_noise=b.inject_noise, **kw))
      else:
        layers.append(DepthToSpaceUpsample(cin, b.stride, residual=b.residual,
                                           reduction=b.multiplier, **kw))
    self.up_blocks = nnx.List(layers)
    self.conv_out = CausalConv3d(channels, out_channels * patch_size ** 2, **kw)
    if tc:
      self.timestep_scale_multiplier = param(lambda *_: jnp.array(1000.0, param_dtype), None, (),
                                             param_dtype, ())
      self.last_time_embedder = TimestepEmbedder(2 * channels, dtype=dtype,
                                                 param_dtype=param_dtype, rngs=rngs)
      self.last_scale_shift_table = param(nnx.initializers.normal(channels ** -0.5),
                                          rngs.params(), (2, channels), param_dtype,
                                          (None, 'conv_in'))
    else:
      self.timestep_scale_multiplier = self.last_time_embedder = None
      self.last_scale_shift_table = None

  def __call__(self, latents: jax.Array, timestep: jax.Array | None = None,
               key: jax.Array | None = None) -> jax.Array:
    # latents: [B, F', H', W', C]; timestep: [B] or scalar; key: noise injection (None: none)
    b = latents.shape[0]
    if self.last_time_embedder is not None:
      if timestep is None:
        raise ValueError("this VAE decoder is timestep-conditioned: pass `timestep` "
                         "(the LTX-Video pipelines decode at 0.05)")
      t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (b,))
      t = t * self.timestep_scale_multiplier[...].astype(jnp.float32)  # [B]
    else:
      t = None
    keys = jax.random.split(key, len(self.up_blocks)) if key is not None else None
    x = self.conv_in(latents, self.causal)
    for i, block in enumerate(self.up_blocks):
      if isinstance(block, MidBlock):
        x = block(x, self.causal, t, None if keys is None else keys[i])
      elif isinstance(block, ResnetBlock):
        x = block(x, self.causal, None, None if keys is None else keys[i])
      else:
        x = block(x, self.causal)
    x = pixel_norm(x)
    if t is not None:
      emb = self.last_time_embedder(t).reshape(b, 2, -1)  # [B, 2, C]
      ada = self.last_scale_shift_table[...][None].astype(emb.dtype) + emb
      ada = ada[:, :, None, None, None, :].astype(x.dtype)
      x = x * (1 + ada[:, 1]) + ada[:, 0]
    x = self.conv_out(jax.nn.silu(x), self.causal)
    return unpatchify(x, self.patch_size)


class VideoAutoencoder(nnx.Module):
  """The LTX-Video causal VAE. Parameters in `param_dtype`, compute in `dtype`.

  `encoder` / `decoder` are plain modules (use them inside your own jit); `encode` / `decode`
  jit per shape and tile large inputs (see `ltx_jax.models.vae.tiling`).
  """

  def __init__(self, config: VAEConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = config
    self.dtype = dtype
    c = config
    kw = dict(spatial_padding_mode=c.spatial_padding_mode, dtype=dtype, param_dtype=param_dtype,
              rngs=rngs)
    self.encoder = Encoder(c.in_channels, LOG_VAR_CHANNELS[c.latent_log_var](c.latent_channels),
                           c.encoder_blocks, base_channels=c.encoder_base_channels,
                           patch_size=c.patch_size, causal=c.encoder_causal, **kw)
    self.decoder = Decoder(c.latent_channels, c.out_channels, c.decoder_blocks,
                           base_channels=c.decoder_channels(), patch_size=c.patch_size,
                           causal=c.causal_decoder, timestep_conditioning=c.timestep_conditioning,
                           **kw)
    latent = c.latent_channels
    self.latents_mean = Statistic(jnp.zeros((latent,), jnp.float32), out_sharding=('latent',),
                                  eager_sharding=False)
    self.latents_std = Statistic(jnp.ones((latent,), jnp.float32), out_sharding=('latent',),
                                 eager_sharding=False)

  def latent_mean(self, video: jax.Array) -> jax.Array:
    """Untiled, unjitted encode: [B, F, H, W, 3] -> latent mean [B, F', H', W', C]."""
    return self.encoder(video)[..., :self.config.latent_channels]

  def encode(self, video: jax.Array, *, tiling=None,
             memory_budget_bytes: int | None = None) -> jax.Array:
    """[B, F, H, W, 3] in [-1, 1] -> un-normalised latent mean [B, F', H', W', C] (jitted;
    `tiling` as in `decode`)."""
    from ltx_jax.models.vae import tiling as _tiling
    return _tiling.encode(self, video, tiling, memory_budget_bytes=memory_budget_bytes)

  def decode(self, latents: jax.Array, timestep=None, *, key: jax.Array | None = None,
             tiling=None, mesh: jax.sharding.Mesh | None = None,
             memory_budget_bytes: int | None = None, as_uint8: bool = False) -> jax.Array:
    """Un-normalised latents [B, F', H', W', C] -> video [B, F, H, W, 3] in one jitted program.

    timestep: decode timestep (required by timestep-conditioned VAEs), scalar or [B].
    key: randomness for the decoder's noise injection; None injects no noise.
    tiling: None / 'auto' tiles only when the untiled program does not fit the memory budget
      (`memory_budget_bytes`, default `tiling.memory_budget()`: the device's free memory); a
      `TilingConfig` (or True) tiles above its sizes; False never tiles.
    mesh: decode the tiles in parallel, one per device of the mesh (single process).
    as_uint8: uint8 frames converted on device instead of floats in [-1, 1].
    """
    from ltx_jax.models.vae import tiling as _tiling
    return _tiling.decode(self, latents, timestep, key, tiling, mesh=mesh,
                          memory_budget_bytes=memory_budget_bytes, as_uint8=as_uint8)

  def normalize(self, latents: jax.Array) -> jax.Array:
    """(z - mean) * scaling_factor / std per channel."""
    mean, std = self.latents_mean[...], self.latents_std[...]
    z = (latents.astype(jnp.float32) - mean) * self.config.scaling_factor / std
    return z.astype(latents.dtype)

  def denormalize(self, latents: jax.Array) -> jax.Array:
    """The inverse of `normalize`."""
    mean, std = self.latents_mean[...], self.latents_std[...]
    z = latents.astype(jnp.float32) * std / self.config.scaling_factor + mean
    return z.astype(latents.dtype)


def init_vae(config: VAEConfig, *, seed: int = 0, dtype=jnp.float32,
             param_dtype=jnp.float32) -> VideoAutoencoder:
  """A VAE with random weights drawn on the host (`ltx_jax.models.random.random_weights`), for
  tests and experiments."""
  return random_weights(lambda: VideoAutoencoder(config, dtype=dtype, param_dtype=param_dtype,
                                                 rngs=nnx.Rngs(seed)), seed, std=0.1)
