"""Normalisations. All statistics in f32 (bf16 variance underflows), result in the input dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, eps: float, scale: jax.Array | None = None) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) over the last axis, times an optional scale."""
  xf = x.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
  if scale is not None:
    y = y * scale.astype(jnp.float32)
  return y.astype(x.dtype)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """Mean/variance normalisation over the last axis without affine parameters."""
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)
