"""Jitted and tiled encode / decode."""

from __future__ import annotations

import functools

import jax
from flax import nnx


@functools.partial(jax.jit, static_argnums=(0,))
def _decode_fn(graphdef, state, latents, timestep, key):
  return nnx.merge(graphdef, state).decoder(latents, timestep, key)


@functools.partial(jax.jit, static_argnums=(0,))
def _encode_fn(graphdef, state, video):
  return nnx.merge(graphdef, state).latent_mean(video)


def encode(model, video, tiling=None):
  graphdef, state = nnx.split(model)
  return _encode_fn(graphdef, state, video)


def decode(model, latents, timestep, key, tiling=None):
  graphdef, state = nnx.split(model)
  return _decode_fn(graphdef, state, latents, timestep, key)
