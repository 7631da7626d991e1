"""The denoising loop: one `lax.scan` over the schedule, jitted once per shape.

Everything that changes between runs without changing shapes (schedule, per-step guidance
values, the skipped layers of spatio-temporal guidance, text embeddings, starting noise, seed)
is a traced argument, so it does not recompile.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.nn.layers import FP8_COMPILER_OPTIONS, compiler_options
from ltx_jax.sampling import cache as cache_lib


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
  # A host callback per step drives the progress bar; XLA's persistent cache does not store
  # programs with host callbacks, so a loop without it is the one a warm start reuses.
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


class _Progress:
  """A host-side progress bar driven from inside the scan by `jax.debug.callback`."""

  def __init__(self):
    self._lock = threading.Lock()
    self._bar = None

  def start(self, total: int):
    from tqdm.auto import tqdm
    with self._lock:
      self._bar = tqdm(total=total, desc='denoising', unit='step', leave=False)

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
  b = latents.shape[0]
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

  def step(carry, inputs):
    x, cache_state = carry
    i, sigma, sigma_next, g, key = inputs
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
    if spec.progress:
      jax.debug.callback(PROGRESS.step, sigma)
    return (sharding_lib.constrain(x_next, ('batch', 'tokens', None)), cache_state), ran

  keys = jax.random.split(key, num_steps)
  latents = sharding_lib.constrain(latents.astype(jnp.float32), ('batch', 'tokens', None))
  start = latents  # the conditioning noise re-noises hard tokens around their start
  cache_state = None
  if spec.cache is not None:
    rows, n = groups * b, latents.shape[1]
    cache_state = jax.tree.map(
        lambda a: sharding_lib.constrain(a, ('batch', 'tokens', 'act_embed')) if a.ndim else a,
        cache_lib.init_state((rows, n, model.config.dim), model.dtype))
  (latents, _), ran = jax.lax.scan(
      step, (latents, cache_state),
      (jnp.arange(num_steps), sigmas[:-1], sigmas[1:], guidance, keys))
  return sharding_lib.constrain(latents, (None, None, None)), ran  # every process reads it all


denoise_jit = jax.jit(denoise, static_argnums=(0, 1))
# The same program compiled with the XLA options fp8 matmuls need (`ltx_jax.nn.compiler_options`:
# without them XLA's GPU Triton GEMM fusion takes the dequantise -> dot before its fp8 GEMM
# rewriter sees it); `denoise_program` picks it for models with fp8 matmuls.
denoise_fp8_jit = jax.jit(denoise, static_argnums=(0, 1), compiler_options=FP8_COMPILER_OPTIONS)


def denoise_program(model: nnx.Module):
  """`denoise_jit`, or `denoise_fp8_jit` when `model` multiplies in fp8 (`set_matmul`)."""
  return denoise_fp8_jit if compiler_options(model) else denoise_jit
