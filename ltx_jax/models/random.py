"""Random weights drawn on the host: the one initializer of the smoke model, tests and benchmarks.

Running the modules' own initializers compiles one XLA program per parameter shape, which costs
more than a minute on a 2-core CPU for the tiny models; drawing with numpy into the abstract model
(`nnx.eval_shape`, then fill, then merge) costs nothing. Values follow each leaf's role, by name:
norm scales 1, noise-injection scales 0, latent statistics (0, 1), the VAE timestep multiplier
1000, kernels N(0, 1 / fan_in), embedding tables N(0, 1), everything else (biases, modulation and
position-bias tables) N(0, std^2).
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
  if name in ('scale', 'latents_std'):
    return np.ones(shape)
  if name == 'latents_mean' or name.startswith('per_channel_scale'):
    return np.zeros(shape)
  if name == 'timestep_scale_multiplier':
    return np.full(shape, 1000.0)
  if name == 'kernel':  # dense [..., in, out] or conv [..., kt, kh, kw, in, out]
    fan_in = math.prod(shape[-5:-1]) if len(shape) >= 5 else shape[-2]
    return rng.standard_normal(shape) / math.sqrt(fan_in)
  if name == 'embedding':
    return rng.standard_normal(shape)
  return std * rng.standard_normal(shape)


def random_weights(factory: Callable[[], nnx.Module], seed: int = 0, *,
                   std: float = 0.02) -> nnx.Module:
  """`factory()`'s module with random weights drawn on the host from `seed`.

  Each leaf keeps the dtype the factory gave it (its `param_dtype`; f32 latent statistics).
  std: the scale of the leaves without a rule of their own (biases, tables).
  """
  model = nnx.eval_shape(factory)
  rng = np.random.default_rng(seed)
  for path, var in nnx.iter_graph(model):  # a fixed order: the same seed, the same weights
    if isinstance(var, nnx.Variable):
      abstract = var.get_value()
      var.set_value(jnp.asarray(_draw(rng, str(path[-1]), abstract.shape, std), abstract.dtype))
  return model
