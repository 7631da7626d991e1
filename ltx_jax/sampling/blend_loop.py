"""The denoising loop with soft per-token conditioning by blending (ComfyUI's inpainting
sampler, as diffusers' `LTXI2VLongMultiPromptPipeline` runs it).

Each token has a conditioning strength s in [0, 1] and clean latents c. The transformer sees
the latents x at timestep t * (1 - s); the Euler step then starts from x pulled towards c,
x * (1 - s) + c * s, and its result is pulled once more (diffusers blends before and after
`scheduler.step`, the model having seen the latents before the first blend). s = 1 keeps the token at c (a given token, as `loop.denoise` with a
binary cond_mask); s = 0 is a free token; values in between hold a token partly.

The step is the ancestral rectified-flow step of that sampler (`eta`; 0 is the plain Euler step).
One `lax.scan` over the schedule, jitted once per shape, like `loop.denoise`, whose guidance
(`loop.combine`) it shares.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.nn.layers import FP8_COMPILER_OPTIONS, compiler_options
from ltx_jax.sampling import progress as progress_lib
from ltx_jax.sampling.loop import Guidance, LoopSpec, combine, replicated_jit

__all__ = ['denoise_blended', 'denoise_blended_jit', 'denoise_blended_program',
           'denoise_blended_stepwise']


def denoise_blended(spec: LoopSpec, graph: nnx.GraphDef, state: Any, latents: jax.Array,
                    clean: jax.Array, strength: jax.Array, sigmas: jax.Array,
                    context: jax.Array, context_mask: jax.Array, guidance: Guidance,
                    coords: jax.Array, eta: jax.Array, key: jax.Array) -> jax.Array:
  """Runs the schedule on packed latents with soft conditioning.

  latents: [B, N, C] f32 starting latents.
  clean: [B, N, C] f32 the conditioning latents c (any value where strength is 0).
  strength: [B, N] f32 conditioning strength s per token.
  sigmas: [S + 1] noise levels; step i goes from sigmas[i] to sigmas[i + 1].
  context, context_mask, guidance, coords: as `loop.denoise` (spec.stg must be off).
  eta: f32 scalar, the ancestral sampler's stochasticity (ComfyUI's euler_ancestral_RF,
    diffusers' LTXEulerAncestralRFScheduler): 0 is the Euler step; above 0 each step lands on
    a lower sigma and re-noises to sigma_next with N(0, 1) noise from `key` (step i uses
    split(key, S)[i]); a step to sigma 0 returns the prediction x0.
  Returns the final [B, N, C] f32 latents (replicated over the mesh, if any).
  """
  with sharding_lib.activate(spec.partitioning):
    model = nnx.merge(graph, state)
    keys = jax.random.split(key, sigmas.shape[0] - 1)
    x = sharding_lib.constrain(latents.astype(jnp.float32), ('batch', 'tokens', None))
    x = _steps(spec, model, x, jnp.arange(sigmas.shape[0] - 1), clean, strength, sigmas,
               context, context_mask, guidance, coords, eta, keys)
    return sharding_lib.constrain(x, (None, None, None))


def _steps(spec, model, x, steps, clean, strength, sigmas, context, context_mask, guidance,
           coords, eta, keys):
  """The schedule's steps `steps` (int [K] indices into sigmas[:-1]) from latents x [B, N, C]
  f32 -> x after them."""
  free = (1 - strength)[..., None]  # [B, N, 1]
  held = clean * strength[..., None]  # [B, N, C]

  def step(x, i):
    sigma, sigma_next, k = sigmas[i], sigmas[i + 1], keys[i]
    g = jax.tree.map(lambda a: a[i], guidance)
    t = sigma * 1000.0 * free[..., 0]  # [B, N]
    v = model(jnp.concatenate([x] * spec.groups).astype(model.dtype), context,
              jnp.concatenate([t] * spec.groups), context_mask, video_coords=coords)
    v = combine(spec, jnp.split(v.astype(jnp.float32), spec.groups), g)
    x = x * free + held  # the step starts from the blended latents
    x0 = x - sigma * v
    # Ancestral RF step (eta = 0: sigma_down = sigma_next, the Euler step).
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    ratio = sigma_down / sigma
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    x_next = ratio * x + (1 - ratio) * x0
    renoise = jnp.sqrt(jnp.maximum(
        sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / (alpha_down ** 2 + 1e-12), 0))
    noise = jax.random.normal(k, x.shape, jnp.float32)
    x_next = (alpha_next / (alpha_down + 1e-12)) * x_next + jnp.where(
        eta > 0, renoise, 0) * noise
    x_next = jnp.where(jnp.abs(sigma_next) < 1e-8, x0, x_next)
    x_next = x_next * free + held
    return sharding_lib.constrain(x_next, ('batch', 'tokens', None)), None

  return jax.lax.scan(step, x, steps)[0]


def denoise_blended_step(spec: LoopSpec, graph: nnx.GraphDef, state: Any, x: jax.Array,
                         i: jax.Array, clean: jax.Array, strength: jax.Array,
                         sigmas: jax.Array, context: jax.Array, context_mask: jax.Array,
                         guidance: Guidance, coords: jax.Array, eta: jax.Array,
                         keys: jax.Array) -> tuple[jax.Array, None]:
  """Step i (int32 []) of `denoise_blended`'s loop from latents x [B, N, C] f32 (keys: the
  loop's split(key, S)) -> (x, None); the same step as inside its scan."""
  with sharding_lib.activate(spec.partitioning):
    x = sharding_lib.constrain(x, ('batch', 'tokens', None))
    return _steps(spec, nnx.merge(graph, state), x, i[None], clean, strength, sigmas, context,
                  context_mask, guidance, coords, eta, keys), None


denoise_blended_jit = jax.jit(denoise_blended, static_argnums=(0, 1))
denoise_blended_fp8_jit = jax.jit(denoise_blended, static_argnums=(0, 1),
                                  compiler_options=FP8_COMPILER_OPTIONS)


def denoise_blended_program(model: nnx.Module):
  """`denoise_blended_jit`, or its fp8-options twin when `model` multiplies in fp8 (see
  `loop.denoise_program`)."""
  return denoise_blended_fp8_jit if compiler_options(model) else denoise_blended_jit


denoise_blended_step_jit = jax.jit(denoise_blended_step, static_argnums=(0, 1))
denoise_blended_step_fp8_jit = jax.jit(denoise_blended_step, static_argnums=(0, 1),
                                       compiler_options=FP8_COMPILER_OPTIONS)


def denoise_blended_stepwise(model: nnx.Module, spec: LoopSpec, graph: nnx.GraphDef,
                             state: Any, latents, clean, strength, sigmas, context,
                             context_mask, guidance, coords, eta, key,
                             report: progress_lib.Reporter | None = None) -> jax.Array:
  """`denoise_blended`'s result (same arguments), one call per step with host-side progress
  (`report`), as `loop.denoise_stepwise`."""
  report = report or progress_lib.Reporter()
  jitted = denoise_blended_step_fp8_jit if compiler_options(model) else denoise_blended_step_jit
  keys = jax.random.split(key, sigmas.shape[0] - 1)
  x = jnp.asarray(latents, jnp.float32)
  consts = (clean, strength, sigmas, context, context_mask, guidance, coords, eta, keys)
  program = progress_lib.compiled(jitted, (spec, graph), (state, x, np.int32(0)) + consts,
                                  report)
  x, _ = progress_lib.run_steps(lambda x, i: program(state, x, i, *consts),
                                sigmas.shape[0] - 1, x, report)
  return replicated_jit(spec, x)
