"""The denoising loop: one `lax.scan` over the schedule, jitted once per shape.

Everything that changes between runs without changing shapes (schedule, guidance values, text
embeddings, starting noise, seed) is a traced argument, so it does not recompile.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The static (shape-determining) part of a denoising run."""
  grid: tuple[int, int, int]  # latent (frames, height, width)
  cfg: bool                   # classifier-free guidance: [uncond, cond] in one call
  conditioned: bool           # some tokens are given (image-to-video) and never stepped
  stochastic: bool = False    # re-noise x0 to the next sigma instead of an Euler step


class _Progress:
  """A host-side progress bar driven from inside the scan by `jax.debug.callback`."""

  def __init__(self):
    self._lock = threading.Lock()
    self._bar = None

  def start(self, total: int, enabled: bool | None):
    from tqdm.auto import tqdm
    enabled = sys.stderr.isatty() if enabled is None else enabled
    self._bar = tqdm(total=total, desc='denoising', unit='step', disable=not enabled,
                     leave=False)

  def step(self, _):
    with self._lock:
      if self._bar is not None:
        self._bar.update(1)

  def close(self):
    with self._lock:
      if self._bar is not None:
        self._bar.close()
      self._bar = None


PROGRESS = _Progress()


def guide(pred_uncond: jax.Array, pred_cond: jax.Array, scale: jax.Array,
          rescale: jax.Array) -> jax.Array:
  """CFG, then the guidance rescale of Lin et al. 2023 (std over all but the batch axis)."""
  pred = pred_uncond + scale * (pred_cond - pred_uncond)
  axes = tuple(range(1, pred.ndim))
  ratio = jnp.std(pred_cond, axis=axes, keepdims=True) / jnp.std(pred, axis=axes, keepdims=True)
  return jnp.where(rescale > 0, rescale * pred * ratio + (1 - rescale) * pred, pred)


def denoise(spec: LoopSpec, graph: nnx.GraphDef, state: Any, latents: jax.Array,
            sigmas: jax.Array, context: jax.Array, context_mask: jax.Array,
            guidance_scale: jax.Array, guidance_rescale: jax.Array, rope_scale: jax.Array,
            cond_mask: jax.Array | None, key: jax.Array) -> jax.Array:
  """Runs the schedule on packed latents.

  latents: [B, N, C] f32 starting latents (given tokens already in place).
  sigmas: [S + 1] noise levels ending in 0.
  context, context_mask: [B', S_txt, D], [B', S_txt]; B' = 2B with guidance ([uncond, cond]).
  cond_mask: [B, N], 1 on given (conditioning) tokens, or None.
  Returns the final [B, N, C] f32 latents.
  """
  model = nnx.merge(graph, state)
  f, h, w = spec.grid
  dtype = model.dtype
  reps = 2 if spec.cfg else 1

  def step(x, inputs):
    sigma, sigma_next, key = inputs
    t = jnp.full((x.shape[0],), sigma * 1000.0, jnp.float32)
    if spec.conditioned:
      t = t[:, None] * (1 - cond_mask)  # [B, N]: given tokens are clean (t = 0)
    x_in = jnp.concatenate([x] * reps).astype(dtype)
    t_in = jnp.concatenate([t] * reps)
    v = model(x_in, context, t_in, context_mask, num_frames=f, height=h, width=w,
              rope_interpolation_scale=rope_scale).astype(jnp.float32)
    if spec.cfg:
      v_uncond, v_cond = jnp.split(v, 2)
      v = guide(v_uncond, v_cond, guidance_scale, guidance_rescale)
    if spec.stochastic:
      x0 = x - sigma * v
      noise = jax.random.normal(key, x.shape, jnp.float32)
      x_next = (1 - sigma_next) * x0 + sigma_next * noise
    else:
      x_next = x + (sigma_next - sigma) * v
    if spec.conditioned:
      x_next = jnp.where(cond_mask[..., None] > 0, x, x_next)
    jax.debug.callback(PROGRESS.step, sigma)
    return x_next, None

  keys = jax.random.split(key, sigmas.shape[0] - 1)
  latents, _ = jax.lax.scan(step, latents.astype(jnp.float32), (sigmas[:-1], sigmas[1:], keys))
  return latents


denoise_jit = jax.jit(denoise, static_argnums=(0, 1))
