"""The denoising loop: one `lax.scan` over the schedule, jitted once per shape; or, with
host-side progress, the same step as one program called once per step (`denoise_stepwise`,
ltx_jax/sampling/progress.py).

Everything that changes between runs without changing shapes (schedule, per-step guidance
values, the skipped layers of spatio-temporal guidance, text embeddings, starting noise, seed)
is a traced argument, so it does not recompile.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.nn.layers import FP8_COMPILER_OPTIONS, compiler_options
from ltx_jax.sampling import cache as cache_lib
from ltx_jax.sampling import progress as progress_lib


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The static (shape- and graph-determining) part of a denoising run.

  The transformer sees one batch of up to three groups of B rows: [uncond (cfg), cond,
  perturbed (stg)].
  """
  grid: tuple[int, int, int]      # latent (frames, height, width)
  cfg: bool                       # classifier-free guidance
  stg: bool = False               # spatio-temporal guidance
  stg_strategy: str | None = None  # see ltx_jax.models.transformer.STG_STRATEGIES
  cfg_star: bool = False          # CFG-star: project the uncond prediction onto the cond one
  # Some tokens are conditioned (cond_mask > 0): a token of strength s is seen at timestep
  # min(t, 1 - s) and stepped only once t < 1 - s (strength 1: never).
  conditioned: bool = False
  # image_cond_noise_scale: before each step the hard-conditioned tokens (mask 1) become
  # start + scale * noise * t^2 (the references' conditioning noise); 0 disables.
  cond_noise_scale: float = 0.0
  # Only the first `noised_tokens` tokens take that noise (None: all); the IC-LoRA guide tokens
  # appended after them stay as encoded, as ComfyUI keeps them.
  noised_tokens: int | None = None
  stochastic: bool = False        # re-noise x0 to the next sigma instead of an Euler step
  # Host-side progress: the pipeline runs the loop one step per call (`denoise_stepwise`)
  # instead of one scan. No program holds a host callback, so the persistent cache keeps both.
  progress: bool = False
  # Mesh, rules and context attention of the activations (None: one device); static, so a
  # change re-traces.
  partitioning: sharding_lib.Partitioning | None = None
  # Step cache kind ('first_block', 'teacache': ltx_jax/sampling/cache.py) or None; its
  # threshold is traced (`denoise`'s `cache`).
  cache: str | None = None

  @property
  def groups(self) -> int:
    return 1 + self.cfg + self.stg


class Guidance(NamedTuple):
  """Per-step guidance values, each [S] (or [S, L] for `keep_layers`)."""
  scale: jax.Array        # CFG scale; <= 1 means the conditional prediction alone
  rescale: jax.Array      # diffusers' guidance_rescale (after CFG); 0 disables
  stg_scale: jax.Array    # STG scale; 0 disables
  stg_rescale: jax.Array  # official rescaling with STG; 1 disables
  keep_layers: jax.Array  # [S, L]: 0 on the layers perturbed for the STG rows


# -- conditioning masks (cond_mask [B, N]: each token's strength) ------------------------------

def noise_hard_conditions(t, init_latents, latents, mask, noise, scale: float = 0.15,
                          eps: float = 1e-6):
  """Re-noises the hard-conditioned tokens (mask = 1) to init + scale * noise * t^2, t the
  current sigma in [0, 1] (the references' image_cond_noise_scale, applied before every step);
  other tokens pass unchanged. [B, N, C] latents and noise, [B, N] mask -> jax [B, N, C]."""
  t = jnp.asarray(t, jnp.float32)
  noised = init_latents + jnp.float32(scale) * jnp.asarray(noise) * (t * t)
  return jnp.where((jnp.asarray(mask) > 1.0 - eps)[..., None], noised, latents)


def token_timesteps(t, mask):
  """Per-token timesteps [B, N]: a token conditioned with strength s starts at 1 - s and
  follows the schedule once it falls below (hard tokens: 0). t: the step's sigma, [] or [B]."""
  t = jnp.asarray(t, jnp.float32)
  return jnp.minimum(t.reshape(t.shape + (1,) * (2 - t.ndim)), 1.0 - jnp.asarray(mask))


def tokens_to_step(t, mask, eps: float = 1e-6):
  """[B, N] bool: the tokens a step updates (the others keep their values), as the official
  denoising_step: t - eps < 1 - mask, so hard-conditioned tokens are never stepped."""
  t = jnp.asarray(t, jnp.float32)
  return (t.reshape(t.shape + (1,) * (2 - t.ndim)) - eps) < (1.0 - jnp.asarray(mask))


def condition_noise(step_key: jax.Array, shape) -> jax.Array:
  """The conditioning noise of one step (drawn from the step's key, apart from the noise of
  stochastic sampling), N(0, 1) f32 of `shape`."""
  return jax.random.normal(jax.random.fold_in(step_key, 1), shape, jnp.float32)


def _std(x: jax.Array) -> jax.Array:
  """Per-sample standard deviation over all but the batch axis, [B, 1, 1]."""
  return jnp.std(x, axis=tuple(range(1, x.ndim)), keepdims=True)


def combine(spec: LoopSpec, preds: list[jax.Array], g: Guidance) -> jax.Array:
  """Guided velocity from the [uncond], cond, [perturbed] predictions (each [B, N, C] f32),
  in the order of the official pipeline: CFG (optionally CFG-star), diffusers' rescale, STG and
  its rescale."""
  cond = preds[1] if spec.cfg else preds[0]
  pred = cond
  if spec.cfg:
    uncond = preds[0]
    if spec.cfg_star:
      b = uncond.shape[0]
      dot = jnp.sum((cond * uncond).reshape(b, -1), axis=1)
      alpha = dot / (jnp.sum(jnp.square(uncond).reshape(b, -1), axis=1) + 1e-8)
      uncond = alpha[:, None, None] * uncond
    guided = uncond + g.scale * (cond - uncond)
    pred = jnp.where(g.scale > 1, guided, cond)
    rescaled = g.rescale * pred * (_std(cond) / _std(pred)) + (1 - g.rescale) * pred
    pred = jnp.where(g.rescale > 0, rescaled, pred)
  if spec.stg:
    stg = pred + g.stg_scale * (cond - preds[-1])
    factor = g.stg_rescale * (_std(cond) / _std(stg)) + (1 - g.stg_rescale)
    stg = jnp.where(g.stg_rescale != 1, stg * factor, stg)
    pred = jnp.where(g.stg_scale > 0, stg, pred)
  return pred


def denoise(spec: LoopSpec, graph: nnx.GraphDef, state: Any, latents: jax.Array,
            sigmas: jax.Array, context: jax.Array, context_mask: jax.Array,
            guidance: Guidance, coords: jax.Array, cond_mask: jax.Array | None,
            key: jax.Array, cache: cache_lib.CacheParams | None = None
            ) -> tuple[jax.Array, jax.Array]:
  """Runs the schedule on packed latents.

  latents: [B, N, C] f32 starting latents (given tokens already in place).
  sigmas: [S + 1] noise levels ending in 0.
  context, context_mask: [G*B, S_txt, D], [G*B, S_txt] for the G = spec.groups row groups.
  coords: [1, 3, N] per-token (time, y, x) coordinates for RoPE.
  cond_mask: [B, N] f32 conditioning strength per token (0: free, 1: given), or None.
  cache: the step cache's traced threshold (and coefficients), exactly when spec.cache is set.
  Returns the final [B, N, C] f32 latents (replicated over the mesh, if any) and bool [S],
  whether each step ran every transformer block (all True without a step cache).
  """
  if (spec.cache is None) != (cache is None):
    raise ValueError(f"spec.cache={spec.cache!r} needs cache parameters exactly when set")
  with sharding_lib.activate(spec.partitioning):
    return _denoise(spec, graph, state, latents, sigmas, context, context_mask, guidance,
                    coords, cond_mask, key, cache)


def _denoise(spec, graph, state, latents, sigmas, context, context_mask, guidance, coords,
             cond_mask, key, cache):
  model = nnx.merge(graph, state)
  carry, keys = _init(spec, model, latents, sigmas, key)
  (latents, _), ran = _steps(spec, model, carry, jnp.arange(sigmas.shape[0] - 1), sigmas,
                             context, context_mask, guidance, coords, cond_mask, carry[0], keys,
                             cache)
  return sharding_lib.constrain(latents, (None, None, None)), ran  # every process reads it all


def _init(spec, model, latents, sigmas, key):
  """The loop's starting carry (f32 latents [B, N, C], step cache state or None) and the
  per-step keys [S]."""
  keys = jax.random.split(key, sigmas.shape[0] - 1)
  latents = sharding_lib.constrain(latents.astype(jnp.float32), ('batch', 'tokens', None))
  cache_state = None
  if spec.cache is not None:
    rows, n = spec.groups * latents.shape[0], latents.shape[1]
    cache_state = jax.tree.map(
        lambda a: sharding_lib.constrain(a, ('batch', 'tokens', 'act_embed')) if a.ndim else a,
        cache_lib.init_state((rows, n, model.config.dim), model.dtype))
  return (latents, cache_state), keys


def _steps(spec, model, carry, steps, sigmas, context, context_mask, guidance, coords,
           cond_mask, start, keys, cache):
  """The schedule's steps `steps` (int [K] indices into sigmas[:-1]) from `carry` ->
  (carry, ran bool [K]). start: the run's starting latents (the conditioning noise re-noises
  hard tokens around them)."""
  b = start.shape[0]
  groups = spec.groups
  n_layers = model.config.num_layers
  num_steps = sigmas.shape[0] - 1

  def transformer(x, t, skip, cache_state, i):
    """The velocity of all row groups [G*B, N, C], through the step cache if any (without one
    the same path, every block run: ltx_jax/sampling/cache.py)."""
    args = (jnp.concatenate([x] * groups).astype(model.dtype), context,
            jnp.concatenate([t] * groups), context_mask)
    kw = dict(video_coords=coords, skip_layer_mask=skip, skip_layer_strategy=spec.stg_strategy)
    return cache_lib.forward(spec.cache, model, model.embed(*args, **kw), cache_state, cache,
                             i, num_steps)

  def step(carry, i):
    x, cache_state = carry
    sigma, sigma_next, key = sigmas[i], sigmas[i + 1], keys[i]
    g = jax.tree.map(lambda a: a[i], guidance)
    t = jnp.full((b,), sigma * 1000.0, jnp.float32)
    if spec.conditioned:
      if spec.cond_noise_scale > 0:
        noised = cond_mask if spec.noised_tokens is None else (
            cond_mask * (jnp.arange(cond_mask.shape[1]) < spec.noised_tokens))
        x = noise_hard_conditions(sigma, start, x, noised, condition_noise(key, x.shape),
                                  spec.cond_noise_scale)
      t = token_timesteps(sigma, cond_mask) * 1000.0  # [B, N]
    skip = None
    if spec.stg:  # [L, G*B]: perturb the chosen layers for the last group of rows only
      skip = jnp.concatenate([jnp.ones((n_layers, (groups - 1) * b), jnp.float32),
                              jnp.repeat(g.keep_layers[:, None], b, axis=1)], axis=1)
    v, cache_state, ran = transformer(x, t, skip, cache_state, i)
    v = combine(spec, jnp.split(v.astype(jnp.float32), groups), g)
    if spec.stochastic:
      x0 = x - sigma * v
      noise = jax.random.normal(key, x.shape, jnp.float32)
      x_next = (1 - sigma_next) * x0 + sigma_next * noise
    else:
      x_next = x + (sigma_next - sigma) * v
    if spec.conditioned:  # stepped once t < 1 - s; the others keep their values
      x_next = jnp.where(tokens_to_step(sigma, cond_mask)[..., None], x_next, x)
    return (sharding_lib.constrain(x_next, ('batch', 'tokens', None)), cache_state), ran

  return jax.lax.scan(step, carry, steps)


def init_steps(spec: LoopSpec, graph: nnx.GraphDef, state: Any, latents: jax.Array,
               sigmas: jax.Array, key: jax.Array):
  """`denoise` run one step per call (`denoise_step`), its start: (carry, keys [S])."""
  with sharding_lib.activate(spec.partitioning):
    return _init(spec, nnx.merge(graph, state), latents, sigmas, key)


def denoise_step(spec: LoopSpec, graph: nnx.GraphDef, state: Any, carry, i: jax.Array,
                 sigmas: jax.Array, context: jax.Array, context_mask: jax.Array,
                 guidance: Guidance, coords: jax.Array, cond_mask: jax.Array | None,
                 start: jax.Array, keys: jax.Array, cache: cache_lib.CacheParams | None = None):
  """Step i (int32 []) of `denoise`'s loop from `carry` -> (carry, ran bool []). The same
  step as inside `denoise`'s scan; the schedule's arrays are whole, so one program serves
  every step."""
  with sharding_lib.activate(spec.partitioning):
    carry, ran = _steps(spec, nnx.merge(graph, state), carry, i[None], sigmas, context,
                        context_mask, guidance, coords, cond_mask, start, keys, cache)
  return carry, ran[0]


def replicated(spec: LoopSpec, latents: jax.Array) -> jax.Array:
  """[B, N, C] latents replicated over the mesh (every process reads them all)."""
  with sharding_lib.activate(spec.partitioning):
    return sharding_lib.constrain(latents, (None, None, None))


denoise_jit = jax.jit(denoise, static_argnums=(0, 1))
# The same program compiled with the XLA options fp8 matmuls need (`ltx_jax.nn.compiler_options`:
# without them XLA's GPU Triton GEMM fusion takes the dequantise -> dot before its fp8 GEMM
# rewriter sees it); `denoise_program` picks it for models with fp8 matmuls.
denoise_fp8_jit = jax.jit(denoise, static_argnums=(0, 1), compiler_options=FP8_COMPILER_OPTIONS)


def denoise_program(model: nnx.Module):
  """`denoise_jit`, or `denoise_fp8_jit` when `model` multiplies in fp8 (`set_matmul`)."""
  return denoise_fp8_jit if compiler_options(model) else denoise_jit


init_steps_jit = jax.jit(init_steps, static_argnums=(0, 1))
replicated_jit = jax.jit(replicated, static_argnums=0)
denoise_step_jit = jax.jit(denoise_step, static_argnums=(0, 1))
denoise_step_fp8_jit = jax.jit(denoise_step, static_argnums=(0, 1),
                               compiler_options=FP8_COMPILER_OPTIONS)


def denoise_stepwise(model: nnx.Module, spec: LoopSpec, graph: nnx.GraphDef, state: Any,
                     latents, sigmas, context, context_mask, guidance, coords, cond_mask, key,
                     cache=None, report: progress_lib.Reporter | None = None):
  """`denoise`'s result (same arguments), its steps run one call each with host-side
  progress (`report`; default a bar on a terminal, log lines otherwise): the programs hold no
  host callback, so the persistent compilation cache keeps them."""
  report = report or progress_lib.Reporter()
  if (spec.cache is None) != (cache is None):
    raise ValueError(f"spec.cache={spec.cache!r} needs cache parameters exactly when set")
  jitted = denoise_step_fp8_jit if compiler_options(model) else denoise_step_jit
  carry, keys = init_steps_jit(spec, graph, state, latents, sigmas, key)
  consts = (sigmas, context, context_mask, guidance, coords, cond_mask, carry[0], keys, cache)
  program = progress_lib.compiled(jitted, (spec, graph),
                                  (state, carry, np.int32(0)) + consts, report)
  carry, ran = progress_lib.run_steps(lambda c, i: program(state, c, i, *consts),
                                      sigmas.shape[0] - 1, carry, report)
  return replicated_jit(spec, carry[0]), jnp.stack(ran)
