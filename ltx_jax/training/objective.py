"""The flow-matching objective of LTX-Video-Trainer's standard strategy.

Per sample, a sigma s in [0, 1]: x_t = (1 - s) x0 + s noise, target noise - x0, and the
transformer sees the timestep round(s * 1000). Conditioning tokens (the first latent frame
under first-frame conditioning) stay clean, get timestep 0 and leave the loss:
  loss = mean((pred - target)^2 * m / mean(m)),  m = 1 on tokens that are not conditioning.
Latents are packed into tokens in (f, h, w) order and placed by `token_coords` at
(f * 8 / fps, 32 h, 32 w): the `rope_interpolation_scale` (8 / fps, 32, 32) of the official
standard strategy, which passes no video_coords.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.models.transformer.rope import token_coords
from ltx_jax.training.samplers import SamplerConfig, sample_sigmas

FIRST_FRAME_MODES = ('batch', 'sample')
TEMPORAL = 8   # the VAE's pixels per latent, as the official trainer's rope scale assumes
SPATIAL = 32


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """sampler: the sigma distribution. first_frame_p: probability of first-frame conditioning;
  first_frame_mode 'batch' (LTX-Video-Trainer: one draw for the whole batch) or 'sample' (one
  per sample)."""
  sampler: SamplerConfig = SamplerConfig()
  first_frame_p: float = 0.1
  first_frame_mode: str = 'batch'

  def __post_init__(self):
    p = self.first_frame_p
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
      raise UsageError(f"first_frame_p={p!r}; expected a probability in [0, 1]")
    if self.first_frame_mode not in FIRST_FRAME_MODES:
      raise UsageError(f"first_frame_mode={self.first_frame_mode!r}; choose one of "
                       f"{', '.join(FIRST_FRAME_MODES)}")


class Draws(NamedTuple):
  """The random inputs of one step's loss: noise [B, N, C], sigmas [B], conditioning [B, N]
  (True = conditioning token)."""
  noise: jax.Array
  sigmas: jax.Array
  conditioning: jax.Array


def pack(latents: jax.Array) -> jax.Array:
  """[B, F, H, W, C] -> tokens [B, F*H*W, C] in (f, h, w) order."""
  b, f, h, w, c = latents.shape
  return latents.reshape(b, f * h * w, c)


def video_coords(grid: tuple[int, int, int], frame_rate: jax.Array) -> jax.Array:
  """Per-token coordinates [B, 3, N] of a latent grid at per-sample frame rates [B]."""
  return token_coords(grid, TEMPORAL, SPATIAL, frame_rate, causal=False)


def first_frame_mask(config: ObjectiveConfig, key: jax.Array, grid: tuple[int, int, int],
                     batch: int) -> jax.Array:
  """[B, N] bool: True on the first latent frame's tokens of the rows drawn for first-frame
  conditioning (never when the clip has a single latent frame, as the official rule)."""
  f, h, w = grid
  n = f * h * w
  shape = (1,) if config.first_frame_mode == 'batch' else (batch,)
  on = jax.random.uniform(key, shape) < config.first_frame_p  # [1 | B]
  if config.first_frame_p <= 0 or h * w >= n:
    on = jnp.zeros_like(on)
  first = jnp.arange(n) < h * w  # [N]
  return jnp.broadcast_to(on[:, None] & first[None], (batch, n))


def draw(config: ObjectiveConfig, key: jax.Array, latents: jax.Array) -> Draws:
  """The step's random inputs for latents [B, F, H, W, C], all from `key`."""
  b, f, h, w, c = latents.shape
  k_sigma, k_noise, k_cond = jax.random.split(key, 3)
  return Draws(jax.random.normal(k_noise, (b, f * h * w, c), jnp.float32),
               sample_sigmas(config.sampler, k_sigma, b, f * h * w),
               first_frame_mask(config, k_cond, (f, h, w), b))


def loss_fn(model, batch: dict, draws: Draws) -> jax.Array:
  """The masked flow-matching loss of `model` (the DiT) on one batch (ltx_jax's training batch:
  latents [B, F, H, W, C], context [B, L, D], context_mask [B, L], frame_rate [B])."""
  latents = batch['latents']
  b, f, h, w, _ = latents.shape
  tokens = lambda a: sharding_lib.constrain(a, ('batch', 'tokens', None))
  x0 = tokens(pack(latents.astype(jnp.float32)))  # [B, N, C]
  noise = tokens(draws.noise.astype(jnp.float32))
  cond = draws.conditioning  # [B, N]
  s = draws.sigmas.astype(jnp.float32)[:, None, None]  # [B, 1, 1]
  noisy = jnp.where(cond[..., None], x0, (1 - s) * x0 + s * noise)
  target = noise - x0
  timestep = jnp.where(cond, 0.0, jnp.round(draws.sigmas.astype(jnp.float32) * 1000.0)
                       [:, None])  # [B, N]
  coords = video_coords((f, h, w), batch['frame_rate'])
  pred = model(noisy.astype(model.dtype), batch['context'].astype(model.dtype), timestep,
               batch['context_mask'], video_coords=coords)
  keep = (~cond).astype(jnp.float32)[..., None]  # [B, N, 1]
  err = (pred.astype(jnp.float32) - target) ** 2
  return jnp.mean(err * keep / jnp.mean(keep))
