"""`GenerationPlan`: everything one denoising run needs, between `prepare` and `denoise`.

`LTXPipeline.prepare` builds it from user arguments; `LTXPipeline.denoise` runs it. In between
it is plain data: `dataclasses.replace` (or the helpers below) changes the starting latents, the
schedule or the conditioning, and the next `denoise` re-traces only when a static part (the
`spec`, or a shape) changed.

Token layout: the loop sees packed tokens [B, N, C]. The first F'*H'*W' of them are the video
grid (`spec.grid`) in (f, h, w) order; tokens after them (conditioning items, e.g. a reference
frame's latents at their own coordinates) have their own `coords` and `cond_mask` rows and are
dropped by `unpack`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ltx_jax.errors import UsageError
from ltx_jax.sampling.cache import CacheParams
from ltx_jax.sampling.loop import Guidance, LoopSpec

__all__ = ['GenerationPlan', 'noised_to', 'trim_schedule']


def trim_schedule(sigmas, initial: int = 0, final: int = 0):
  """[S + 1] sigmas ending in 0 -> the schedule without its first `initial` and last `final`
  steps, still ending in 0: the last kept step jumps to 0 (the official pipeline's
  `skip_initial_inference_steps` / `skip_final_inference_steps`). numpy or jax arrays."""
  s = sigmas.shape[0] - 1
  kept = sigmas[initial:s - final]
  return (jnp if isinstance(sigmas, jax.Array) else np).concatenate([kept, sigmas[-1:] * 0])


def noised_to(latents: jax.Array, noise: jax.Array, t0: float) -> jax.Array:
  """Clean `latents` noised to the first timestep t0 of a schedule as the official pipeline
  does: t0 * noise + (1 - t0) * latents when t0 < 1; at t0 = 1 the latents as given. f32."""
  latents = jnp.asarray(latents, jnp.float32)
  if t0 >= 1:
    return latents
  t0 = jnp.float32(t0)
  return t0 * jnp.asarray(noise, jnp.float32) + (1 - t0) * latents


@functools.partial(jax.tree_util.register_dataclass, meta_fields=['spec'],
                   data_fields=['latents', 'sigmas', 'guidance', 'context', 'context_mask',
                                'coords', 'cond_mask', 'key', 'decode_key', 'cache',
                                'video_weight', 'cond_latents'])
@dataclasses.dataclass(frozen=True)
class GenerationPlan:
  """The inputs of one scanned denoising run. B: videos; N: tokens (the F'*H'*W' grid tokens
  first, then any conditioning tokens); C: latent channels; S: steps; G = spec.groups (uncond,
  cond, perturbed rows); S_txt, D: text tokens and width; L: transformer layers.

  A pytree whose leaves are the arrays (`spec` is static), so `jax.tree.map` or
  `jax.device_put` apply to a whole plan.
  """
  spec: LoopSpec            # static: grid, guidance switches, conditioning, progress, mesh
  latents: jax.Array        # [B, N, C] f32 normalised starting latents (given tokens in place)
  sigmas: jax.Array         # [S + 1] f32 noise levels, decreasing, ending in 0
  guidance: Guidance        # per step: scale, rescale, stg_scale, stg_rescale [S]; keep [S, L]
  context: jax.Array        # [G*B, S_txt, D] text embeddings, row groups [uncond,] cond[, stg]
  context_mask: jax.Array   # [G*B, S_txt] f32, 1 on real text tokens
  coords: jax.Array         # [1, 3, N] f32 per-token (time in s, y px, x px) for RoPE
  # [B, N] f32 conditioning strength per token: 0 free, 1 given (never stepped, timestep 0),
  # s in between starts at noise level 1 - s (ltx_jax.sampling.loop); None: no conditioning.
  cond_mask: jax.Array | None
  key: jax.Array            # PRNG key of the loop (stochastic sampling's noise)
  decode_key: jax.Array     # PRNG key for `LTXPipeline.decode` (its noise), from the same seed
  cache: CacheParams | None = None  # the step cache's traced threshold, when spec.cache is set
  # How conditioning items sit in the grid's tokens, so that other starting video latents take
  # them as `prepare` put them (`with_video_latents`): grid tokens = video_weight * video +
  # cond_latents, video being the video's own starting latents (the noise, or given latents
  # noised to sigmas[0]). video_weight: 1 free, 0 hard, prod(1 - s) under items of strength s.
  # None when no item sits in the grid (a plan conditioned by hand: its conditioned grid
  # tokens then stay as they are).
  video_weight: jax.Array | None = None  # [B, F'*H'*W'] f32
  cond_latents: jax.Array | None = None  # [B, F'*H'*W', C] f32, 0 on free tokens

  # -- views -----------------------------------------------------------------------------------

  @property
  def grid(self) -> tuple[int, int, int]:
    """Latent (frames, height, width) of the video."""
    return self.spec.grid

  @property
  def batch(self) -> int:
    return self.latents.shape[0]

  @property
  def num_steps(self) -> int:
    return self.sigmas.shape[0] - 1

  @property
  def video_tokens(self) -> int:
    """F'*H'*W': the leading tokens that are the video grid."""
    return math.prod(self.spec.grid)

  def unpack(self, tokens: jax.Array) -> jax.Array:
    """Packed [B, N, C] -> the video grid's latents [B, F', H', W', C] (conditioning tokens
    after the grid dropped)."""
    b, _, c = tokens.shape
    return tokens[:, :self.video_tokens].reshape(b, *self.spec.grid, c)

  # -- changes ---------------------------------------------------------------------------------

  def with_video_latents(self, latents: jax.Array) -> 'GenerationPlan':
    """The plan starting from `latents` [B, F', H', W', C] (normalised) on the grid tokens,
    with the conditioning items put into them as `prepare` puts them into its starting latents
    (`video_weight * latents + cond_latents`: the official pipeline's lerp(latents, item, s),
    hard tokens exactly the item's); tokens after the grid (appended items, guides) are kept."""
    latents = jnp.asarray(latents, jnp.float32)
    want = (self.batch, *self.spec.grid, self.latents.shape[-1])
    if latents.shape != want:
      raise UsageError(f"latents have shape {tuple(latents.shape)}; this plan expects {want} "
                       "(batch, latent frames, height, width, channels)")
    n = self.video_tokens
    video = latents.reshape(self.batch, n, -1)  # [B, N_grid, C]
    if self.video_weight is not None:
      video = self.video_weight[..., None] * video + self.cond_latents
    elif self.cond_mask is not None:  # conditioned by hand: its conditioned tokens stay
      video = jnp.where(self.cond_mask[:, :n, None] > 0, self.latents[:, :n], video)
    return dataclasses.replace(self, latents=self.latents.at[:, :n].set(video))

  def renoised(self, latents: jax.Array, noise: jax.Array) -> 'GenerationPlan':
    """The plan starting from clean `latents` [B, F', H', W', C] noised to its first sigma with
    `noise` (`noised_to`), as `LTXPipeline.prepare` treats given latents: e.g. a second pass
    on upsampled latents prepared before the first pass ran."""
    return self.with_video_latents(noised_to(latents, noise, float(self.sigmas[0])))

  def skip_steps(self, n: int) -> 'GenerationPlan':
    """The plan without its first `n` steps: it starts at sigmas[n] (the latents should be
    noised to that level, e.g. `sigmas[n] * noise + (1 - sigmas[n]) * clean`)."""
    if not isinstance(n, int) or not 0 <= n < self.num_steps:
      raise UsageError(f"skip_steps({n!r}): the plan has {self.num_steps} steps; skip "
                       f"0..{self.num_steps - 1}")
    return dataclasses.replace(self, sigmas=self.sigmas[n:],
                               guidance=Guidance(*(g[n:] for g in self.guidance)))

  def skip_final_steps(self, n: int) -> 'GenerationPlan':
    """The plan without its last `n` steps: the step before them goes straight to 0 (the
    official `skip_final_inference_steps`)."""
    if not isinstance(n, int) or not 0 <= n < self.num_steps:
      raise UsageError(f"skip_final_steps({n!r}): the plan has {self.num_steps} steps; skip "
                       f"0..{self.num_steps - 1}")
    kept = self.num_steps - n
    return dataclasses.replace(self, sigmas=trim_schedule(self.sigmas, 0, n),
                               guidance=Guidance(*(g[:kept] for g in self.guidance)))

  def check(self) -> None:
    """Consistent shapes (a UsageError naming the field otherwise): what `denoise` checks
    before it compiles, so a hand-modified plan fails clearly."""
    if self.latents.ndim != 3:
      raise UsageError(f"plan.latents {tuple(self.latents.shape)} must be packed [B, N, C]")
    b, n, _ = self.latents.shape
    if n < self.video_tokens:
      raise UsageError(f"plan.latents have {n} tokens; the grid {self.spec.grid} needs at "
                       f"least {self.video_tokens}")
    if self.sigmas.ndim != 1 or self.sigmas.shape[0] < 2:
      raise UsageError(f"plan.sigmas {tuple(self.sigmas.shape)} must be [S + 1], S >= 1")
    for name, g in zip(Guidance._fields, self.guidance):
      if g.shape[:1] != (self.num_steps,):
        raise UsageError(f"plan.guidance.{name} {tuple(g.shape)} must have {self.num_steps} "
                         "rows, one per step")
    rows = self.spec.groups * b
    if self.context.shape[0] != rows or self.context_mask.shape != self.context.shape[:2]:
      raise UsageError(f"plan.context {tuple(self.context.shape)} / context_mask "
                       f"{tuple(self.context_mask.shape)} must have {rows} rows "
                       f"({self.spec.groups} groups of {b})")
    if tuple(self.coords.shape) != (1, 3, n):
      raise UsageError(f"plan.coords {tuple(self.coords.shape)} must be [1, 3, {n}]")
    if (self.cond_mask is not None) != self.spec.conditioned or (
        self.cond_mask is not None and tuple(self.cond_mask.shape) != (b, n)):
      raise UsageError(f"plan.cond_mask must be [{b}, {n}] exactly when spec.conditioned "
                       f"(spec.conditioned={self.spec.conditioned})")
    if (self.video_weight is None) != (self.cond_latents is None) or (
        self.video_weight is not None and (
            tuple(self.video_weight.shape) != (b, self.video_tokens)
            or tuple(self.cond_latents.shape) != (b, self.video_tokens, self.latents.shape[-1])
            or self.cond_mask is None)):
      raise UsageError(f"plan.video_weight {_shape(self.video_weight)} / cond_latents "
                       f"{_shape(self.cond_latents)} must be [{b}, {self.video_tokens}] / "
                       f"[{b}, {self.video_tokens}, {self.latents.shape[-1]}], both set or "
                       "both None, and set only with cond_mask")
    if (self.cache is None) != (self.spec.cache is None):
      raise UsageError(f"plan.cache must be set exactly when spec.cache is "
                       f"(spec.cache={self.spec.cache!r})")


def _shape(x) -> tuple | None:
  return None if x is None else tuple(x.shape)
