"""Step caches: skip most of the transformer on steps whose input changed little.

Both run inside the scanned loop: the state is part of the scan's carry and the decision is a
traced `lax.cond`, so one compiled loop serves every threshold. The decision is made once per
transformer call over all its rows (the uncond / cond / perturbed groups together), as diffusers
does for LTXPipeline's batched CFG call.

- `FirstBlockCache` (diffusers' `FirstBlockCacheConfig`, after ParaAttention): the first block
  always runs; when its output residual moved by less than `threshold` (mean |r - r_ref| /
  mean |r_ref|, r_ref the residual of the last step that ran every block), the other blocks
  are replaced by their residual from that step.
- `TeaCache` (TeaCache4LTX-Video): the first block's modulated input is compared with the
  previous step's; the relative L1 distance, rescaled by a polynomial fitted for LTX-Video, is
  accumulated, and while the sum stays under `threshold` every block and the final norm are
  replaced by their cached residual. The first and the last step always run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from ltx_jax.errors import UsageError

__all__ = ['FirstBlockCache', 'TeaCache', 'CacheParams', 'CacheState', 'check_cache', 'params',
           'init_state', 'forward']


@dataclasses.dataclass(frozen=True)
class FirstBlockCache:
  """diffusers' First Block Cache: skip blocks 1..L-1 while the first block's residual changes
  by less than `threshold` (relative mean absolute difference); 0 never skips."""
  threshold: float = 0.05
  kind: ClassVar[str] = 'first_block'


# TeaCache4LTX-Video's rescaling polynomial (highest power first), fitted on LTX-Video 0.9.
TEACACHE_LTX_COEFFICIENTS = (2.14700694e+01, -1.28016453e+01, 2.31279151e+00, 7.92487521e-01,
                             9.69274326e-03)


@dataclasses.dataclass(frozen=True)
class TeaCache:
  """TeaCache for LTX-Video: skip every block while the accumulated rescaled change of the first
  block's modulated input stays under `threshold` (the reference suggests 0.03 for about 1.6x,
  0.05 for about 2.1x)."""
  threshold: float = 0.05
  coefficients: tuple[float, ...] = TEACACHE_LTX_COEFFICIENTS
  kind: ClassVar[str] = 'teacache'


KINDS = {c.kind: c for c in (FirstBlockCache, TeaCache)}


def check_cache(cache) -> FirstBlockCache | TeaCache | None:
  """`cache` if it is None, a FirstBlockCache or a TeaCache with a finite threshold >= 0."""
  if cache is None:
    return None
  if not isinstance(cache, (FirstBlockCache, TeaCache)):
    raise UsageError(f"cache={cache!r}; pass None, ltx_jax.FirstBlockCache(threshold) or "
                     "ltx_jax.TeaCache(threshold)")
  t = cache.threshold
  if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
    raise UsageError(f"{type(cache).__name__}(threshold={t!r}): the threshold must be a finite "
                     "number >= 0")
  return cache


class CacheParams(NamedTuple):
  """The traced values of a step cache (a threshold change does not recompile)."""
  threshold: jax.Array      # f32 []
  coefficients: jax.Array   # f32 [K] TeaCache's polynomial, highest power first; [1] otherwise


def params(cache: FirstBlockCache | TeaCache) -> CacheParams:
  coefficients = getattr(cache, 'coefficients', (0.0,))
  return CacheParams(jnp.asarray(cache.threshold, jnp.float32),
                     jnp.asarray(coefficients, jnp.float32))


class CacheState(NamedTuple):
  """What a step cache carries from step to step ([R, N, D] in the model's dtype; R = all rows
  of a transformer call)."""
  reference: jax.Array  # first_block: the first block's residual at the last full step;
  #                       teacache: the previous step's modulated first-block input
  residual: jax.Array   # what the skipped part added at the last full step
  accumulated: jax.Array  # f32 []: teacache's accumulated rescaled distance


def init_state(shape: tuple[int, int, int], dtype) -> CacheState:
  """The empty state for a transformer call on `shape` = (rows, tokens, width)."""
  zeros = jnp.zeros(shape, dtype)
  return CacheState(zeros, zeros, jnp.zeros((), jnp.float32))


def _relative_l1(new: jax.Array, old: jax.Array) -> jax.Array:
  """mean |new - old| / mean |old| over all elements, f32 []."""
  new, old = new.astype(jnp.float32), old.astype(jnp.float32)
  return jnp.mean(jnp.abs(new - old)) / jnp.mean(jnp.abs(old))


def _all_blocks(model, x: jax.Array, stream) -> jax.Array:
  """Every block, the first apart as First Block Cache runs it, so that a cache that never
  skips gives the uncached loop's numbers bitwise (XLA compiles a one-block scan and the rest
  differently from one scan over all blocks, which moves the last bits)."""
  h = model.blocks_range(x, stream, 0, 1)
  return model.blocks_range(h, stream, 1, model.config.num_layers)


def forward(kind: str | None, model, stream, state: CacheState, cache: CacheParams,
            step: jax.Array, num_steps: jax.Array | int
            ) -> tuple[jax.Array, CacheState, jax.Array]:
  """One transformer call from its embedded inputs (`model.embed(...)`) through the step cache
  `kind` ('first_block', 'teacache'; None: no cache, every block, state passed through).

  step: the index of this call in the schedule of `num_steps` (0 starts afresh).
  Returns (velocity [R, N, C_out], the new state, whether every block ran: bool []).
  """
  x = stream.x
  layers = model.config.num_layers
  if kind is None:
    out = model.velocity(model.norm_out(_all_blocks(model, x, stream), stream))
    return out, state, jnp.asarray(True)
  threshold, coefficients = cache
  if kind == FirstBlockCache.kind:
    h = model.blocks_range(x, stream, 0, 1)
    first = h - x  # [R, N, D] the first block's residual
    distance = _relative_l1(first, state.reference)
    run = (step == 0) | (distance > threshold)

    def full(h):
      out = model.blocks_range(h, stream, 1, layers)
      return out, first, out - h

    def cached(h):
      return h + state.residual, state.reference, state.residual

    h, reference, residual = jax.lax.cond(run, full, cached, h)
    out = model.velocity(model.norm_out(h, stream))
    return out, CacheState(reference, residual, state.accumulated), run

  if kind == TeaCache.kind:
    modulated = model.first_block_input(x, stream)
    rescaled = jnp.polyval(coefficients, _relative_l1(modulated, state.reference))
    forced = (step == 0) | (step == num_steps - 1)
    accumulated = jnp.where(forced, 0.0, state.accumulated + rescaled)
    run = forced | (accumulated >= threshold)

    def full(x):
      y = model.norm_out(_all_blocks(model, x, stream), stream)
      return y, y - x

    def cached(x):
      return x + state.residual, state.residual

    y, residual = jax.lax.cond(run, full, cached, x)
    accumulated = jnp.where(run, 0.0, accumulated)
    return model.velocity(y), CacheState(modulated, residual, accumulated), run

  raise ValueError(f"step cache kind {kind!r}; choose one of {sorted(KINDS)}")
