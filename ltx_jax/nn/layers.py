"""Parameter helpers and the two parametric layers every model here uses.

Every parameter carries logical axis names in its `out_sharding` metadata (for example
`('embed', 'mlp')`); `ltx_jax.sharding` maps them to mesh axes. Parameters are stored in
`param_dtype` and computed in `dtype`. A `torch_names` class attribute tells the weight loader
how each of our leaves is called, and laid out, in PyTorch state dicts.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.nn.norms import rms_norm

Axes = tuple[str | None, ...]


def param(init: Callable, key: jax.Array, shape: tuple[int, ...], dtype, axes: Axes) -> nnx.Param:
  """A parameter with logical axis names; sharding is applied later, from one rules table."""
  assert len(axes) == len(shape), (shape, axes)
  return nnx.Param(init(key, shape, dtype), out_sharding=axes, eager_sharding=False)


def stacked(make: Callable[[nnx.Rngs], nnx.Module], num: int, rngs: nnx.Rngs,
            axis_name: str = 'layers') -> nnx.Module:
  """Builds `num` copies of a module as one module whose parameters have a leading `num` axis."""

  @nnx.split_rngs(splits=num)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: axis_name})
  def _make(rngs):
    return make(rngs)

  return _make(rngs)


def cpu_half_precision(dtype) -> bool:
  """Whether a 16-bit matmul runs on XLA's CPU backend, which is ~1.6x faster when asked for an
  f32 result (its bf16 GEMM accumulates in f32 either way; tools/bench.py, transformer case).
  GPUs keep the 16-bit output their GEMMs write directly."""
  return jnp.dtype(dtype).itemsize == 2 and jax.default_backend() == 'cpu'


class Dense(nnx.Module):
  """y = x @ kernel + bias with kernel [in, out]. Weights may be stored in fp8 and upcast per call."""

  torch_names = {'kernel': ('weight', (1, 0)), 'bias': ('bias', None)}

  def __init__(self, in_features: int, out_features: int, *, axes: Axes = ('embed', 'mlp'),
               use_bias: bool = True, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = param(nnx.initializers.lecun_normal(), rngs.params(),
                        (in_features, out_features), param_dtype, axes)
    self.bias = (param(nnx.initializers.normal(0.02), rngs.params(), (out_features,),
                       param_dtype, axes[1:]) if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(self.dtype)  # fp8 / bf16 storage -> compute dtype
    acc = jnp.float32 if cpu_half_precision(self.dtype) else None
    y = jnp.einsum('...i,io->...o', x.astype(self.dtype), kernel, preferred_element_type=acc)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y.astype(self.dtype)


class RMSNorm(nnx.Module):
  """RMS norm with a learned scale, computed in f32 and cast back."""

  torch_names = {'scale': ('weight', None)}

  def __init__(self, dim: int, *, eps: float, axis_name: str = 'embed',
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(nnx.initializers.ones, rngs.params(), (dim,), param_dtype, (axis_name,))

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.eps, self.scale[...])
