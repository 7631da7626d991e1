"""Noise schedules for LTX-Video, as sigma lists ending in the terminal 0.

sigma is the noise level (1 = pure noise); the transformer sees timestep = 1000 * sigma. Two
families exist: diffusers' flow-match Euler schedule (linear sigmas, exponential time shift by
the token count, stretched to a terminal value) and the official `RectifiedFlowScheduler`
(Uniform / LinearQuadratic / Constant samplers with optional SD3 or SimpleDiffusion shifting).
Schedules are computed on the host in numpy; the loop receives them as traced arrays, so
changing them does not recompile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ltx_jax.errors import CheckpointFormatError
from ltx_jax.weights import values as V

from ltx_jax.checks import check_schedule

# Official distilled 0.9.8 timesteps (0..1 scale), first and second (upscaled) passes.
DISTILLED_0_9_8_FIRST_PASS = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725)
DISTILLED_0_9_8_SECOND_PASS = (0.9094, 0.725, 0.4219)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  """Which schedule to use and its constants.

  kind: 'flow_match' (diffusers' FlowMatchEulerDiscreteScheduler as LTX configures it) or
    'rectified_flow' (the official RectifiedFlowScheduler).
  """
  kind: str = 'flow_match'
  # flow_match
  base_image_seq_len: int = 1024
  max_image_seq_len: int = 4096
  base_shift: float = 0.95
  max_shift: float = 2.05
  use_dynamic_shifting: bool = True
  shift: float = 1.0
  shift_terminal: float | None = 0.1
  # rectified_flow
  sampler: str = 'Uniform'
  shifting: str | None = 'SD3'
  base_resolution: int | None = 32 * 32  # read only by SimpleDiffusion shifting
  target_shift_terminal: float | None = 0.1

  def __post_init__(self):
    if self.kind not in ('flow_match', 'rectified_flow'):
      raise ValueError(f"scheduler kind={self.kind!r}; choose 'flow_match' or 'rectified_flow'")
    if self.sampler not in ('Uniform', 'LinearQuadratic', 'Constant'):
      raise ValueError(f"sampler={self.sampler!r}; choose Uniform, LinearQuadratic or Constant")
    if self.shifting not in (None, 'SD3', 'SimpleDiffusion'):
      raise ValueError(f"shifting={self.shifting!r}; choose None, 'SD3' or 'SimpleDiffusion'")
    w = 'scheduler'  # every value typed and bounded before any schedule is computed
    for key in ('base_image_seq_len', 'max_image_seq_len'):
      V.check_int(getattr(self, key), key, 1, 1 << 30, w)
    if self.base_resolution is not None or self.shifting == 'SimpleDiffusion':
      V.check_int(self.base_resolution, 'base_resolution', 1, 1 << 30, w)
    for key in ('base_shift', 'max_shift'):
      V.check_number(getattr(self, key), key, -100.0, 100.0, w)
    V.check_number(self.shift, 'shift', 0.0, 1e4, w, open_low=True)
    V.check_bool(self.use_dynamic_shifting, 'use_dynamic_shifting', w)
    for key in ('shift_terminal', 'target_shift_terminal'):
      if getattr(self, key) is not None:
        V.check_number(getattr(self, key), key, 0.0, 0.999, w, open_low=True)
    if self.use_dynamic_shifting and self.base_image_seq_len == self.max_image_seq_len:
      raise CheckpointFormatError(f"scheduler config: base_image_seq_len == max_image_seq_len "
                                  f"({self.base_image_seq_len}) leaves dynamic shifting undefined")

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> 'SchedulerConfig':
    """From a diffusers `scheduler_config.json` (FlowMatchEulerDiscreteScheduler)."""
    name = cfg.get('_class_name', 'FlowMatchEulerDiscreteScheduler')
    if name != 'FlowMatchEulerDiscreteScheduler':
      raise ValueError(f"unsupported scheduler {name!r}; ltx_jax implements "
                       "FlowMatchEulerDiscreteScheduler and the official RectifiedFlowScheduler")
    if cfg.get('time_shift_type', 'exponential') != 'exponential':
      raise ValueError(f"time_shift_type={cfg['time_shift_type']!r}; only 'exponential' "
                       "is implemented")
    for flag in ('use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas',
                 'invert_sigmas'):
      if cfg.get(flag):
        raise ValueError(f"scheduler option {flag}=True is not implemented")
    return cls(kind='flow_match', base_image_seq_len=cfg.get('base_image_seq_len', 256),
               max_image_seq_len=cfg.get('max_image_seq_len', 4096),
               base_shift=cfg.get('base_shift', 0.5), max_shift=cfg.get('max_shift', 1.15),
               use_dynamic_shifting=cfg.get('use_dynamic_shifting', False),
               shift=cfg.get('shift', 1.0), shift_terminal=cfg.get('shift_terminal'))

  @classmethod
  def from_official(cls, cfg: Mapping[str, Any]) -> 'SchedulerConfig':
    """From the `scheduler` entry of an official single file's metadata (a
    `RectifiedFlowScheduler` config, read as the official class reads it).

    Released files write `"shifting": null` or `"SD3"`, `"base_resolution": null` (the official
    class reads it only for SimpleDiffusion shifting, so null is refused only there; a value
    given is checked either way), and
    `"sampler"` absent (the class default, Uniform) or `"LinearQuadratic"`; `shift` is read only
    by the Constant sampler, which needs it.
    """
    w = 'scheduler'
    cfg = V.mapping(cfg, "the 'scheduler' entry of the 'config' metadata")
    name = cfg.get('_class_name', 'RectifiedFlowScheduler')
    if name != 'RectifiedFlowScheduler':
      raise CheckpointFormatError(f"scheduler config _class_name={name!r}: expected "
                                  "'RectifiedFlowScheduler' in an official file")
    V.choice(cfg, 'num_train_timesteps', [1000], 1000, what=w)
    sampler = cfg.get('sampler', 'Uniform')  # null is not absent: the class keeps None
    V.check_choice(sampler, 'sampler', ['Uniform', 'LinearQuadratic', 'Constant'], w)
    shifting = cfg.get('shifting')
    if shifting is not None:
      V.check_choice(shifting, 'shifting', [None, 'SD3', 'SimpleDiffusion'], w)
    base = cfg.get('base_resolution', None if shifting != 'SimpleDiffusion' else 32 * 32)
    terminal = cfg.get('target_shift_terminal')
    shift = cfg.get('shift')
    if sampler == 'Constant' and shift is None:
      raise CheckpointFormatError("scheduler config sampler='Constant' without a shift: "
                                  "expected a number (the Constant sampler's time shift)")
    return cls(kind='rectified_flow', sampler=sampler, shifting=shifting,
               base_resolution=base,
               target_shift_terminal=terminal,
               shift=1.0 if shift is None else V.check_number(shift, 'shift', 0.0, 1e4, w,
                                                              open_low=True))


def _time_shift(mu: float, t: np.ndarray) -> np.ndarray:
  return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def _stretch_to_terminal(sigmas: np.ndarray, terminal: float) -> np.ndarray:
  one_minus = 1 - sigmas
  return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def flow_match_sigmas(num_steps: int, seq_len: int, cfg: SchedulerConfig) -> np.ndarray:
  """diffusers' LTX schedule: [num_steps + 1] f32 sigmas ending in 0."""
  sigmas = np.linspace(1.0, 1 / num_steps, num_steps)  # float64, as the reference
  if cfg.use_dynamic_shifting:
    m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    mu = seq_len * m + cfg.base_shift - m * cfg.base_image_seq_len
    sigmas = _time_shift(mu, sigmas)
  else:
    sigmas = cfg.shift * sigmas / (1 + (cfg.shift - 1) * sigmas)
  if cfg.shift_terminal:
    sigmas = _stretch_to_terminal(sigmas, cfg.shift_terminal)
  return np.append(sigmas.astype(np.float32), np.float32(0))


def _linear_quadratic(num_steps: int, threshold: float = 0.025) -> np.ndarray:
  if num_steps == 1:
    return np.array([1.0], np.float32)
  linear_steps = num_steps // 2
  linear = [i * threshold / linear_steps for i in range(linear_steps)]
  diff = linear_steps - threshold * num_steps
  quad_steps = num_steps - linear_steps
  a = diff / (linear_steps * quad_steps ** 2)
  b = threshold / linear_steps - 2 * diff / quad_steps ** 2
  c = a * linear_steps ** 2
  quad = [a * i ** 2 + b * i + c for i in range(linear_steps, num_steps)]
  return np.array([1.0 - x for x in linear + quad], np.float32)


def rectified_flow_sigmas(num_steps: int, seq_len: int, cfg: SchedulerConfig) -> np.ndarray:
  """The official RectifiedFlowScheduler schedule: [num_steps + 1] f32 sigmas ending in 0.

  Computed in f32 like the reference (it works in torch f32).
  """
  uniform = np.linspace(1, 1 / num_steps, num_steps, dtype=np.float32)
  if cfg.sampler == 'Uniform':
    t = uniform
  elif cfg.sampler == 'LinearQuadratic':
    t = _linear_quadratic(num_steps)
  else:  # Constant
    t = (math.exp(cfg.shift) / (math.exp(cfg.shift) + (1 / uniform - 1))).astype(np.float32)
  if cfg.shifting == 'SD3':
    m = (2.05 - 0.95) / (4096 - 1024)
    shift = m * seq_len + 0.95 - m * 1024
    t = (math.exp(shift) / (math.exp(shift) + (1 / t - 1))).astype(np.float32)
    if cfg.target_shift_terminal is not None:
      t = _stretch_to_terminal(t, cfg.target_shift_terminal).astype(np.float32)
  elif cfg.shifting == 'SimpleDiffusion':
    with np.errstate(divide='ignore'):
      snr = np.log((t / (1 - t)) ** 2) + 2 * math.log(seq_len / cfg.base_resolution)
    t = (1 / (1 + np.exp(-0.5 * snr))).astype(np.float32)
  return np.append(t.astype(np.float32), np.float32(0))


def sigmas_for(cfg: SchedulerConfig, num_steps: int | None, seq_len: int,
               timesteps: Sequence[float] | None = None) -> np.ndarray:
  """The schedule for a run: explicit `timesteps` (0..1000, decreasing) or `num_steps` of the
  configured family. Returns [S + 1] f32 sigmas ending in 0."""
  check_schedule(num_steps, timesteps)
  if timesteps is not None:
    return np.append((np.asarray(timesteps, np.float64) / 1000).astype(np.float32),
                     np.float32(0))
  if cfg.kind == 'flow_match':
    return flow_match_sigmas(int(num_steps), seq_len, cfg)
  return rectified_flow_sigmas(int(num_steps), seq_len, cfg)
