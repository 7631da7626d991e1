"""Logical axis names -> mesh axes: the one rules table of ltx_jax.

Every parameter carries logical axis names in its `out_sharding` metadata (see
`ltx_jax.nn.layers.param`), e.g. ('layers', 'embed', 'mlp') for a stacked FFN kernel. A rules
table maps each logical name to a mesh axis (or None: replicated). The default table is empty,
so everything is replicated; on one device that is the only choice. Example for tensor
parallelism over a mesh axis 'model':

  TP_RULES = {'heads': 'model', 'mlp': 'model'}
  load_transformer(src, mesh=jax.make_mesh((n,), ('model',)), rules=TP_RULES)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, str | tuple[str, ...] | None]

DEFAULT_RULES: Rules = {}  # every logical axis replicated
TP_RULES: Rules = {'heads': 'model', 'mlp': 'model'}  # tensor parallel over mesh axis 'model'


def logical_to_spec(axes: Sequence[str | None] | None, rules: Rules = DEFAULT_RULES
                    ) -> PartitionSpec:
  """('layers', 'embed', 'mlp') -> PartitionSpec(None, None, 'model') under TP_RULES."""
  if not axes:
    return PartitionSpec()
  return PartitionSpec(*(rules.get(a) if a is not None else None for a in axes))


def variable_sharding(var: nnx.Variable, mesh: Mesh | None, rules: Rules = DEFAULT_RULES
                      ) -> jax.sharding.Sharding:
  """Where one parameter lives: from its logical names and the rules, on `mesh` (or device 0)."""
  if mesh is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  spec = logical_to_spec(var.get_metadata().get('out_sharding'), rules)
  shape = var.get_value().shape
  for dim, axis in zip(shape, spec):
    names = (axis,) if isinstance(axis, str) else (axis or ())
    size = 1
    for n in names:
      size *= mesh.shape[n]
    if dim % size:
      raise ValueError(f"cannot shard a dimension of {dim} over mesh axes {names} of size {size} "
                       f"(parameter shape {shape}, spec {spec}); change the rules table")
  return NamedSharding(mesh, spec)


def sharding_fn(mesh: Mesh | None, rules: Rules | None = None):
  """A (path, variable) -> Sharding callback, as `ltx_jax.weights.load_params` takes."""
  rules = DEFAULT_RULES if rules is None else rules
  return lambda path, var: variable_sharding(var, mesh, rules)


def placed_bytes(tree: Any) -> int:
  """Bytes the arrays of a pytree (or NNX module) occupy on their devices, all shards summed."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree)
  return sum(s.data.nbytes for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)
             for s in x.addressable_shards)
