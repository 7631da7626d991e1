"""The checks of generation arguments, one copy for the library and the command line.

Each raises `ltx_jax.errors.UsageError` with a one-line message that starts with the argument's
name (`LTXPipeline.__call__`'s keyword), so the CLI can report it as `config.<message>`. None
needs a model: they run before anything loads or compiles.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ltx_jax.errors import UsageError

__all__ = ['MAX_SEED', 'MIN_FRAME_RATE', 'check_finite', 'check_frame_rate', 'check_guidance',
           'check_schedule', 'check_seed', 'check_video_size']

MIN_FRAME_RATE = 1e-3  # frames per second
MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits: -1 and 2**32 would repeat other seeds


def check_video_size(height: int, width: int, num_frames: int, spatial: int,
                     temporal: int) -> None:
  """Frames must be temporal*N + 1 (N >= 0: one frame is an image, as in diffusers and the
  official inference.py), height and width positive multiples of the spatial compression."""
  for name, v, step, off in (('num_frames', num_frames, temporal, 1),
                             ('height', height, spatial, 0), ('width', width, spatial, 0)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
      raise UsageError(f"{name}={v!r} must be an integer")
    least = off or step  # the smallest valid value: 1 frame, one latent pixel
    if v < least or (v - off) % step:
      below = max(off + step * ((v - off) // step), least)
      above = max(off + step * -(-(v - off) // step), least)
      rule = f"{step}N+1" if off else f"a multiple of {step}"
      near = f"{below}" if below == above else f"{below} or {above}"
      raise UsageError(f"{name}={v} is not valid: it must be {rule} (nearest valid: {near})")


def check_seed(seed: Any) -> int:
  """A seed is an integer in [0, MAX_SEED] (the same rule for Python and the command line)."""
  if (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
      or not 0 <= seed <= MAX_SEED):
    raise UsageError(f"seed={seed!r} must be an integer in [0, {MAX_SEED}]")
  return int(seed)


def check_finite(name: str, value: Any, minimum: float | None = 0.0,
                 maximum: float | None = None) -> float:
  """A real number (not a bool or string) in [minimum, maximum] -> float."""
  try:
    if isinstance(value, (bool, str, bytes)):
      raise TypeError
    v = float(value)
  except (TypeError, ValueError):
    raise UsageError(f"{name}={value!r} must be a number") from None
  if not math.isfinite(v) or (minimum is not None and v < minimum) or (
      maximum is not None and v > maximum):
    bounds = (f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None else
              f"<= {maximum}" if maximum is not None else
              f">= {minimum}" if minimum is not None else '')
    raise UsageError(f"{name}={value!r} must be a finite number {bounds}".rstrip())
  return v


def check_frame_rate(frame_rate: Any) -> float:
  return check_finite('frame_rate', frame_rate, MIN_FRAME_RATE)


def check_schedule(num_inference_steps: Any, timesteps: Sequence[float] | None) -> None:
  """Explicit `timesteps` (non-empty, strictly decreasing, in (0, 1000]) or a step count >= 1."""
  if timesteps is not None:
    try:
      t = np.asarray(timesteps, np.float64)
    except (TypeError, ValueError):
      t = np.zeros((0,))
    if t.ndim != 1 or len(t) == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0) or np.any(
        t > 1000) or np.any(np.diff(t) >= 0):
      raise UsageError(f"timesteps={list(timesteps)} must be a non-empty, strictly decreasing "
                       "list in (0, 1000]")
    return
  if (not isinstance(num_inference_steps, (int, np.integer)) or
      isinstance(num_inference_steps, bool) or num_inference_steps < 1):
    raise UsageError(f"num_inference_steps={num_inference_steps!r} must be an integer >= 1")


def _per_entry(name: str, value, n: int | None, minimum, maximum) -> None:
  if isinstance(value, (list, tuple, np.ndarray)):
    if n is None:
      raise UsageError(f"{name} is a list; pass guidance_timesteps with one entry per value")
    if len(value) != n:
      raise UsageError(f"{name} has {len(value)} values for {n} guidance_timesteps")
    for v in value:
      check_finite(name, v, minimum, maximum)
  else:
    check_finite(name, value, minimum, maximum)


def check_guidance(guidance_timesteps: Sequence[float] | None = None, *, guidance_scale: Any,
                   guidance_rescale: Any, stg_scale: Any, stg_rescale: Any,
                   skip_block_list: Sequence | None) -> None:
  """The guidance arguments of `LTXPipeline.__call__`, without the model.

  Each of guidance_scale (>= 0), stg_scale (>= 0), stg_rescale (in [0, 1]) is a number or one
  number per `guidance_timesteps` entry (each in (0, 1000]); guidance_rescale is a number in
  [0, 1]; skip_block_list is one list of layer indices (integers >= 0) or one list per entry.
  The layer indices' upper bound needs the model: `ltx_jax.sampling.guidance.per_step`.
  """
  n = None
  if guidance_timesteps is not None:
    gt = list(guidance_timesteps)
    if not gt:
      raise UsageError("guidance_timesteps must not be empty (or None)")
    for v in gt:
      if not 0 < check_finite('guidance_timesteps entry', v, 0.0, 1000.0):
        raise UsageError(f"guidance_timesteps={gt} must lie in (0, 1000]")
    n = len(gt)
  _per_entry('guidance_scale', guidance_scale, n, 0.0, None)
  _per_entry('stg_scale', stg_scale, n, 0.0, None)
  _per_entry('stg_rescale', stg_rescale, n, 0.0, 1.0)
  check_finite('guidance_rescale', guidance_rescale, 0.0, 1.0)
  if skip_block_list is None or not len(skip_block_list):
    return
  per_entry = isinstance(skip_block_list[0], (list, tuple))
  if per_entry and n is None:
    raise UsageError("skip_block_list is a list of lists; pass guidance_timesteps too")
  if per_entry and len(skip_block_list) != n:
    raise UsageError(f"skip_block_list has {len(skip_block_list)} lists for {n} "
                     "guidance_timesteps")
  for layers in (skip_block_list if per_entry else [skip_block_list]):
    if not isinstance(layers, (list, tuple)):
      raise UsageError(f"skip_block_list={skip_block_list!r} must be one list of layer indices "
                       "or one list per guidance_timesteps entry")
    bad = [l for l in layers if not isinstance(l, (int, np.integer)) or isinstance(l, bool)
           or l < 0]
    if bad:
      raise UsageError(f"skip_block_list has layers {bad}; layers are integers >= 0")
