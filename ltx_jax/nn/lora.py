"""Runtime LoRA adapters: low-rank factors kept beside a `Dense` kernel, scaled by traced values.

`LowRank` holds the factors of every adapter on one layer, concatenated along the rank axis:
`a` [in, R] and `b` [R, out] with R the sum of the adapters' ranks, each adapter's own
alpha / r already folded into its columns of `b`, and `owner` [R] (static) naming the adapter
of each column. Its output is x @ a * scale[owner] @ b, added to the layer's. The scales
[K] (one per adapter) are an ordinary variable: changing them (`set_lora_scales`) or setting
one to 0 changes values, not the program, so a jitted pipeline does not recompile.
Inside the transformer's stacked blocks every array gains the leading layer axis; a layer an
adapter does not touch has zero columns for it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax.errors import UsageError


class LoRAWeight(nnx.Variable):
  """A runtime adapter's factor or scale (not a checkpoint parameter)."""


class LowRank(nnx.Module):
  """The runtime adapters of one Dense layer: x [..., in] -> [..., out]."""

  def __init__(self, a: jax.Array, b: jax.Array, scale: jax.Array, owner: Sequence[int],
               names: Sequence[str], axes: Mapping[str, tuple], dropout: float = 0.0):
    """a [(L,) in, R]; b [(L,) R, out] (alpha / r folded in); scale [(L,) K] f32;
    owner: R adapter indices; names: the K adapter names; axes: logical axis names of a, b,
    scale (ltx_jax/sharding.py); dropout: PEFT's lora_dropout on the adapter's input, active
    only while `rng` holds a key (training sets it each step)."""
    self.a = LoRAWeight(a, out_sharding=axes['a'], eager_sharding=False)
    self.b = LoRAWeight(b, out_sharding=axes['b'], eager_sharding=False)
    self.scale = LoRAWeight(scale, out_sharding=axes['scale'], eager_sharding=False)
    self.owner = tuple(int(k) for k in owner)
    self.names = tuple(names)
    self.dropout = float(dropout)
    self.rng = None  # uint32 key data [(L,) 2] while training with dropout, else None

  def __call__(self, x: jax.Array, dtype) -> jax.Array:
    if self.dropout > 0 and self.rng is not None:  # PEFT: dropout(x) feeds lora_A only
      key = jax.random.wrap_key_data(self.rng[...])
      keep = jax.random.bernoulli(key, 1 - self.dropout, x.shape)
      x = jnp.where(keep, x / (1 - self.dropout), 0).astype(x.dtype)
    u = jnp.einsum('...i,ir->...r', x.astype(dtype), self.a[...].astype(dtype))  # [..., R]
    s = self.scale[...][np.asarray(self.owner)]  # [R] f32: each column's adapter scale
    u = (u.astype(jnp.float32) * s).astype(dtype)
    return jnp.einsum('...r,ro->...o', u, self.b[...].astype(dtype))


def lora_layers(model: nnx.Module) -> list[LowRank]:
  """Every runtime adapter module of `model`."""
  return [m for _, m in nnx.iter_graph(model) if isinstance(m, LowRank)]


def set_lora_scales(model: nnx.Module, scales: Sequence[float] | Mapping[str, float]) -> None:
  """Sets the scales of `model`'s runtime adapters (loaded with lora_mode='runtime'): one number
  per adapter in load order, or {adapter name: scale} for some of them. 0 switches one off.
  Values only: a jitted pipeline runs on without recompiling."""
  layers = lora_layers(model)
  if not layers:
    raise UsageError("this model has no runtime LoRA adapters; load it with loras=[...] and "
                     "lora_mode='runtime'")
  names = layers[0].names
  if isinstance(scales, Mapping):
    unknown = sorted(set(scales) - set(names))
    if unknown:
      raise UsageError(f"unknown LoRA adapter name(s) {unknown}; this model has {list(names)}")
    values = list({**lora_scales(model), **scales}.values())  # in the adapters' order
  else:
    values = list(scales)
    if len(values) != len(names):
      raise UsageError(f"{len(values)} LoRA scales given for {len(names)} adapters "
                       f"{list(names)}")
  for n, v in zip(names, values):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v):
      raise UsageError(f"LoRA scale for {n!r} is {v!r}; expected a finite number")
  new = np.asarray(values, np.float32)
  for layer in layers:
    old = layer.scale[...]
    value = jnp.broadcast_to(jnp.asarray(new), old.shape)
    layer.scale.set_value(jax.device_put(value, old.sharding))


def lora_scales(model: nnx.Module) -> dict[str, float]:
  """{adapter name: scale} of `model`'s runtime adapters ({} without any)."""
  layers = lora_layers(model)
  if not layers:
    return {}
  names = layers[0].names
  current = np.asarray(jax.device_get(layers[0].scale[...]), np.float32).reshape(-1, len(names))
  return {n: float(current[0, i]) for i, n in enumerate(names)}
