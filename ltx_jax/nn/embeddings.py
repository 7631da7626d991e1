"""Timestep embeddings shared by the transformer's AdaLN and the VAE decoder's conditioning."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def sinusoid_frequencies(dim: int = 256, max_period: float = 10000.0) -> np.ndarray:
  """[dim/2] f32 frequencies max_period^(-i / (dim / 2)), made on the host.

  The exponent is formed in f32 as the references form it (diffusers' get_timestep_embedding:
  -log(max_period) * arange(half) / half in torch f32); its exp is taken in float64 and rounded
  once to f32. XLA's CPU exp rounds 17 of the 128 frequencies of dim 256 differently from
  torch's CPU exp, this rounds 2 (each by 1 ulp; torch's exp is not correctly rounded either),
  and at t = 800 a 1-ulp frequency moves sin / cos by up to 3e-5.
  """
  half = dim // 2
  exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
  exponent = exponent / np.float32(half)  # [dim/2] f32, as torch computes it
  return np.exp(exponent.astype(np.float64)).astype(np.float32)


def timestep_sinusoid(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """[...] -> [..., dim]: cos | sin of t * max_period^(-i / (dim / 2)), cos first.

  In f32 whatever t's dtype: timesteps reach 1000, which bf16 cannot resolve.
  """
  freqs = jnp.asarray(sinusoid_frequencies(dim, max_period))  # [dim/2] f32 constant
  angles = t.astype(jnp.float32)[..., None] * freqs  # [..., dim/2]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
