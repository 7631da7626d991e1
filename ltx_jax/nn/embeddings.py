"""Timestep embeddings shared by the transformer's AdaLN and the VAE decoder's conditioning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def timestep_sinusoid(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """[...] -> [..., dim]: cos | sin of t * max_period^(-i / (dim / 2)), cos first.

  In f32 whatever t's dtype: timesteps reach 1000, which bf16 cannot resolve.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # [dim/2]
  angles = t.astype(jnp.float32)[..., None] * freqs  # [..., dim/2]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
