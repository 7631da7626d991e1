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
  base_resolution: int = 32 * 32
  target_shift_terminal: float | None = 0.1

  def __post_init__(self):
    if self.kind not in ('flow_match', 'rectified_flow'):
      raise ValueError(f"scheduler kind={self.kind!r}; choose 'flow_match' or 'rectified_flow'")
    if self.sampler not in ('Uniform', 'LinearQuadratic', 'Constant'):
      raise ValueError(f"sampler={self.sampler!r}; choose Uniform, LinearQuadratic or Constant")
    if self.shifting not in (None, 'SD3', 'SimpleDiffusion'):
      raise ValueError(f"shifting={self.shifting!r}; choose None, 'SD3' or 'SimpleDiffusion'")

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
    """From the `scheduler` entry of an official single file's metadata."""
    return cls(kind='rectified_flow', sampler=cfg.get('sampler', 'Uniform'),
               shifting=cfg.get('shifting'), base_resolution=cfg.get('base_resolution', 1024),
               target_shift_terminal=cfg.get('target_shift_terminal'),
               shift=cfg.get('shift') or 1.0)


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
