"""Latent operations of the multi-scale recipe, channels-last (latents [B, F, H, W, C]).

- `adain_filter_latent`: match each channel's mean and standard deviation to a reference
  (official `ltx_video.pipelines.pipeline_ltx_video.adain_filter_latent`, diffusers'
  `LTXLatentUpsamplePipeline.adain_filter_latent`);
- `tone_map_latents`: sigmoid compression of large values (official
  `LTXVideoPipeline.tone_map_latents`);
- `first_pass_size`: the reduced size of `LTXMultiScalePipeline`'s first pass.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from ltx_jax.errors import UsageError


def adain_filter_latent(latents: jax.Array, reference: jax.Array, factor: float = 1.0
                        ) -> jax.Array:
  """Per row and channel, rescales `latents` to the mean and standard deviation of `reference`,
  then blends: latents + factor * (rescaled - latents).

  latents [B, F, H, W, C], reference [B, F', H', W', C] (sizes may differ: the statistics are
  over frames and pixels). The standard deviation is the unbiased one (N - 1), as torch.std_mean.
  Statistics in f32; the result has the dtype of `latents`.
  """
  if latents.shape[0] != reference.shape[0] or latents.shape[-1] != reference.shape[-1]:
    raise UsageError(f"adain_filter_latent: latents {latents.shape} and reference "
                     f"{reference.shape} must agree in batch and channels ([B, F, H, W, C])")
  x = latents.astype(jnp.float32)
  r = reference.astype(jnp.float32)
  axes = (1, 2, 3)
  x_mean, x_std = jnp.mean(x, axes, keepdims=True), jnp.std(x, axes, keepdims=True, ddof=1)
  r_mean, r_std = jnp.mean(r, axes, keepdims=True), jnp.std(r, axes, keepdims=True, ddof=1)
  matched = (x - x_mean) / x_std * r_std + r_mean
  return (x + factor * (matched - x)).astype(latents.dtype)


def tone_map_latents(latents: jax.Array, compression: float) -> jax.Array:
  """latents * (1 - 0.6 c * sigmoid(3 c (|latents| - 1))) with c = compression in [0, 1]:
  0 is the identity, 1 the strongest compression of values beyond about 1."""
  if isinstance(compression, numbers.Real) and not 0 <= compression <= 1:
    raise UsageError(f"tone map compression {compression!r} is outside [0, 1]")
  s = 0.75 * compression  # the reference's remapping of [0, 1] to [0, 0.75]
  x = latents.astype(jnp.float32)
  scales = 1.0 - 0.8 * s * jax.nn.sigmoid(4.0 * s * (jnp.abs(x) - 1.0))
  return (x * scales).astype(latents.dtype)


def first_pass_size(height: int, width: int, downscale_factor: float, multiple: int = 32
                    ) -> tuple[int, int]:
  """(height, width) of the multi-scale first pass: each side times the factor, truncated, then
  rounded down to a multiple of the VAE's spatial compression (32), as the official
  `LTXMultiScalePipeline`. The second pass runs at twice this size."""
  sizes = []
  for name, side in (('height', height), ('width', width)):
    x = int(side * downscale_factor)
    x -= x % multiple
    if x <= 0:
      raise UsageError(f"{name} {side} x downscale_factor {downscale_factor} is below "
                       f"{multiple} pixels; the first pass needs at least one latent pixel")
    sizes.append(x)
  return sizes[0], sizes[1]
