"""Per-step guidance values (CFG, rescale, STG) as arrays the scanned loop can take.

The official pipeline lets each guidance value change along the schedule: a list of values
with a list of `guidance_timesteps`, where step t uses the first entry whose guidance timestep is
<= t (the last entry when none is). Here every value becomes an [S] array (the skipped STG layers
an [S, L] mask), checked on the host before anything compiles.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ltx_jax.checks import check_guidance
from ltx_jax.errors import UsageError
from ltx_jax.models.transformer import STG_STRATEGIES
from ltx_jax.sampling.loop import Guidance


def _mapping(timesteps: np.ndarray, guidance_timesteps: Sequence[float] | None) -> np.ndarray:
  """For each step, the index of the guidance entry it uses."""
  if guidance_timesteps is None:
    return np.zeros(len(timesteps), np.int64)
  gt = [float(v) for v in guidance_timesteps]
  out = []
  for t in timesteps:
    hits = [i for i, v in enumerate(gt) if v <= t]
    out.append(hits[0] if hits else len(gt) - 1)
  return np.array(out, np.int64)


def _values(value, mapping: np.ndarray) -> np.ndarray:
  """A number or one number per guidance entry -> [S] f32 (checked by `check_guidance`)."""
  if isinstance(value, (list, tuple, np.ndarray)):
    return np.array([float(v) for v in value], np.float32)[mapping]
  return np.full(len(mapping), float(value), np.float32)


def per_step(timesteps: np.ndarray, num_layers: int,
             guidance_timesteps: Sequence[float] | None = None, *, guidance_scale,
             guidance_rescale: float, stg_scale, stg_rescale, skip_block_list,
             skip_layer_strategy: str) -> tuple[Guidance, tuple[bool, bool]]:
  """-> (Guidance of [S] arrays, (use_cfg, use_stg)) for timesteps [S] on the 0..1000 scale.

  The arguments are checked by `ltx_jax.checks.check_guidance` (a UsageError), and the skipped
  layers against `num_layers` here.
  """
  check_guidance(guidance_timesteps, guidance_scale=guidance_scale,
                 guidance_rescale=guidance_rescale, stg_scale=stg_scale, stg_rescale=stg_rescale,
                 skip_block_list=skip_block_list)
  mapping = _mapping(np.asarray(timesteps), guidance_timesteps)
  scale = _values(guidance_scale, mapping)
  stg = _values(stg_scale, mapping)
  stg_rescale = _values(stg_rescale, mapping)
  keep = np.ones((len(mapping), num_layers), np.float32)
  if skip_block_list is not None and len(skip_block_list):
    per_entry = isinstance(skip_block_list[0], (list, tuple))
    lists = list(skip_block_list) if per_entry else [skip_block_list]
    for layers in lists:
      bad = [l for l in layers if not l < num_layers]
      if bad:
        raise UsageError(f"skip_block_list has layers {bad}; the transformer has layers "
                         f"0..{num_layers - 1}")
    for s, entry in enumerate(mapping):
      keep[s, list(lists[entry if per_entry else 0])] = 0.0
  use_stg = bool(np.any(stg > 0)) and bool(np.any(keep == 0))
  if use_stg and skip_layer_strategy not in STG_STRATEGIES:
    raise UsageError(f"skip_layer_strategy={skip_layer_strategy!r}; choose one of "
                     f"{STG_STRATEGIES}")
  if np.any(stg > 0) and not use_stg:
    raise UsageError("stg_scale > 0 needs skip_block_list: the layers to perturb")
  use_cfg = bool(np.any(scale > 1))
  rescale = np.full(len(mapping), float(guidance_rescale), np.float32)
  g = Guidance(*(jnp.asarray(a) for a in (scale, rescale, stg, stg_rescale, keep)))
  return g, (use_cfg, use_stg)
