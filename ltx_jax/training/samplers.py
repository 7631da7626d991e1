"""Timestep (sigma) samplers of the official trainers, drawn with JAX randomness.

- 'shifted_logit_normal' (LTX-Video-Trainer's default): s = sigmoid(N(mu, std)), with the shift
  mu linear in the number of video tokens, 0.95 at 1024 tokens and 2.05 at 4096, extrapolated
  outside that range.
- 'stretched_logit_normal' (the LTX-2 trainer's): the same draw rescaled so that the 0.5th and
  99.9th percentiles of the normal map to 0 and 1, reflected at `eps`, clipped to [0, 1], and
  replaced by a uniform draw in [eps, 1] with probability `uniform_prob`.
- 'uniform': s ~ U[min, max].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ltx_jax.errors import UsageError

SAMPLERS = ('shifted_logit_normal', 'stretched_logit_normal', 'uniform')

# the shift's line: (tokens, mu) at both ends
SHIFT_TOKENS = (1024, 4096)
SHIFT_VALUES = (0.95, 2.05)
# the standard normal's 99.9th and 0.5th percentiles, as the LTX-2 trainer writes them
NORMAL_P999 = 3.0902
NORMAL_P005 = -2.5758


def logit_normal_shift(num_tokens: int) -> float:
  """mu for `num_tokens` video tokens: the line through (1024, 0.95) and (4096, 2.05), in the
  official arithmetic (slope, then intercept, in Python floats)."""
  slope = (SHIFT_VALUES[1] - SHIFT_VALUES[0]) / (SHIFT_TOKENS[1] - SHIFT_TOKENS[0])
  intercept = SHIFT_VALUES[0] - slope * SHIFT_TOKENS[0]
  return slope * num_tokens + intercept


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Which sigma distribution training draws from (see the module docstring)."""
  name: str = 'shifted_logit_normal'
  std: float = 1.0             # logit-normal samplers
  eps: float = 1e-3            # stretched: reflection point and the uniform draws' floor
  uniform_prob: float = 0.1    # stretched: share of uniform draws
  min_value: float = 0.0       # uniform
  max_value: float = 1.0       # uniform

  def __post_init__(self):
    if self.name not in SAMPLERS:
      raise UsageError(f"timestep sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
    if not self.std > 0:
      raise UsageError(f"timestep sampler std={self.std}; expected > 0")
    if not 0 <= self.uniform_prob <= 1:
      raise UsageError(f"timestep sampler uniform_prob={self.uniform_prob}; expected in [0, 1]")
    if not 0 <= self.eps < 1:
      raise UsageError(f"timestep sampler eps={self.eps}; expected in [0, 1)")
    if not 0 <= self.min_value <= self.max_value <= 1:
      raise UsageError(f"uniform timestep sampler [{self.min_value}, {self.max_value}]; expected "
                       "0 <= min_value <= max_value <= 1")


def sample_sigmas(config: SamplerConfig, key: jax.Array, batch: int, num_tokens: int
                  ) -> jax.Array:
  """`batch` sigmas in [0, 1] (f32 [batch]) for samples of `num_tokens` video tokens."""
  c = config
  if c.name == 'uniform':
    return jax.random.uniform(key, (batch,)) * (c.max_value - c.min_value) + c.min_value
  k_normal, k_uniform, k_choice = jax.random.split(key, 3)
  mu = logit_normal_shift(num_tokens)
  s = jax.nn.sigmoid(jax.random.normal(k_normal, (batch,)) * c.std + mu)  # [B]
  if c.name == 'shifted_logit_normal':
    return s
  hi = jax.nn.sigmoid(jnp.float32(mu + NORMAL_P999 * c.std))
  lo = jax.nn.sigmoid(jnp.float32(mu + NORMAL_P005 * c.std))
  stretched = (s - lo) / (hi - lo)
  stretched = jnp.clip(jnp.where(stretched >= c.eps, stretched, 2 * c.eps - stretched), 0, 1)
  uniform = (1 - c.eps) * jax.random.uniform(k_uniform, (batch,)) + c.eps
  return jnp.where(jax.random.uniform(k_choice, (batch,)) > c.uniform_prob, stretched, uniform)
