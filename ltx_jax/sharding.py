"""Logical axis names -> mesh axes: the one rules table of ltx_jax, and the device mesh.

Every parameter carries logical axis names in its `out_sharding` metadata (see
`ltx_jax.nn.layers.param`), e.g. ('layers', 'embed', 'mlp') for a stacked FFN kernel, and the
models mark activations at block boundaries with `constrain(x, ('batch', 'tokens', 'act_embed'))`.
`RULES` maps each logical name to mesh axes (a name, a tuple of names, or None: replicated).

The mesh has four axes, any of which may be 1 (`make_mesh`):
  data     data parallel: batch rows; weights replicated
  fsdp     fully sharded data parallel: batch rows and the weights' model dimension
  tensor   tensor parallel: attention heads, FFN hidden units, modulation outputs
  context  context (sequence) parallel: video tokens; self-attention gathers keys and values
           ('allgather') or passes them around a ring ('ring'), see ltx_jax/nn/context_attention.py

Fallback rule (one, everywhere): a dimension takes the mesh axes its logical name maps to,
dropping axes from the end of the list while their product does not divide the dimension, and
dropping an axis that an earlier dimension of the same array already uses. So a tiny model,
or a batch of 2 rows on data x fsdp = 4 devices, runs replicated where it cannot split;
`fallbacks` lists where that happens (the released 2B and 13B models have none on meshes of
up to 8 x 8 devices, see tests/test_sharding.py). Without a mesh everything sits on one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ltx_jax.errors import UsageError

Rules = Mapping[str, str | tuple[str, ...] | None]
MESH_AXES = ('data', 'fsdp', 'tensor', 'context')

RULES: Rules = {
    # parameters
    'layers': None,            # stacked blocks: every device holds its slice of every layer
    'embed': 'fsdp',           # the model width: fully sharded weights
    'embed_out': None,         # the second width axis of [D, D] kernels (embed already on fsdp)
    'heads': 'tensor',         # attention heads x head dim
    'mlp': 'tensor',           # FFN hidden units
    'adaln': 'tensor',         # 6 x D modulation outputs
    'vocab': 'tensor',         # T5 token table rows
    'caption': None,           # text-embedding channels into the caption projection
    'latent': None,            # latent channels (proj_in / proj_out, VAE statistics)
    # the VAE (conv_in, conv_out, timestep_freq, ...) is small: names not listed are replicated
    # activations
    'batch': ('data', 'fsdp'),
    'tokens': 'context',       # video tokens
    'text': None,              # text tokens (cross-attention keys and values)
    'act_embed': None,
    'act_heads': 'tensor',
    'act_adaln': None,
}
CONTEXT_ATTENTION = ('allgather', 'ring')


# ----------------------------------------------------------------------------------- meshes


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, context: int = 1, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor, context) mesh over `devices` (default: all, every process).

  One size may be -1: the devices left over. The product must equal the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor, context]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UsageError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: each must be >= 1, and at "
                     "most one may be -1 (the rest of the devices)")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise UsageError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are "
                       f"not a multiple of {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise UsageError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"there are {len(devices)}; set one size to -1 to take the rest")
  return jax.make_mesh(tuple(sizes), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


LONG_VIDEO_TOKENS = 8192  # from here on default_mesh_sizes puts chips on 'context'


def default_mesh_sizes(num_devices: int, num_tokens: int | None = None, batch_rows: int = 2
                       ) -> dict[str, int]:
  """Mesh sizes for `num_devices` chips (a TPU slice, or any devices) and a video of
  `num_tokens` latent tokens generated `batch_rows` rows at a time (2 with classifier-free
  guidance, 3 with STG as well).

  fsdp over every chip: weights split all ways, batch rows as far as they divide. A long video
  (num_tokens >= LONG_VIDEO_TOKENS) moves the chips the rows cannot occupy to 'context' (the
  largest such count that divides the tokens), so no chip repeats another's work: 8 chips,
  2 rows, 27,588 tokens (1216x704, 257 frames) -> fsdp 2, context 4. Weights then split only
  over fsdp: see README's TPU section for when that does not fit.
  """
  context = 1
  if num_tokens is not None and num_tokens >= LONG_VIDEO_TOKENS:
    idle = num_devices // math.gcd(num_devices, max(batch_rows, 1))
    context = max(c for c in range(1, idle + 1) if idle % c == 0 and num_tokens % c == 0)
  return {'data': 1, 'fsdp': num_devices // context, 'tensor': 1, 'context': context}


def default_mesh(num_tokens: int | None = None, batch_rows: int = 2, *,
                 devices: Sequence[jax.Device] | None = None) -> Mesh:
  """`make_mesh` with `default_mesh_sizes` for `devices` (default: all, every process)."""
  devices = list(jax.devices() if devices is None else devices)
  return make_mesh(**default_mesh_sizes(len(devices), num_tokens, batch_rows), devices=devices)


def mesh_from_config(c: Any, num_tokens: int | None = None) -> Mesh | None:
  """A mesh from a config with keys data, fsdp, tensor, context (ml_collections or dict);
  None when every size is 1 and there is one device (the single-device default). Every size 1
  on several devices (a TPU slice): `default_mesh(num_tokens)`, fsdp over every chip."""
  get = (lambda k: c[k]) if isinstance(c, Mapping) else (lambda k: getattr(c, k))
  sizes = {k: int(get(k)) for k in MESH_AXES}
  if all(s == 1 for s in sizes.values()):
    return None if jax.device_count() == 1 else default_mesh(num_tokens)
  return make_mesh(**sizes)


# ------------------------------------------------------------------------------- the rules


def _axes_of(name: str | None, rules: Rules) -> tuple[str, ...]:
  target = rules.get(name) if name is not None else None
  return (target,) if isinstance(target, str) else tuple(target or ())


def spec_for(shape: Sequence[int], names: Sequence[str | None] | None,
             mesh_shape: Mapping[str, int], rules: Rules | None = None) -> PartitionSpec:
  """The PartitionSpec of an array of `shape` with logical `names`, by the fallback rule in
  the module docstring. Mesh axes missing from `mesh_shape` count as size 1 (dropped)."""
  rules = RULES if rules is None else rules
  if not names:
    return PartitionSpec()
  used: set[str] = set()
  spec = []
  for dim, name in zip(shape, names):
    axes = [a for a in _axes_of(name, rules) if a in mesh_shape and a not in used]
    while axes and dim % math.prod(mesh_shape[a] for a in axes):
      axes.pop()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*spec)


def variable_names(var: nnx.Variable) -> tuple[str | None, ...] | None:
  return var.get_metadata().get('out_sharding')


def variable_sharding(var: nnx.Variable, mesh: Mesh | None, rules: Rules | None = None
                      ) -> jax.sharding.Sharding:
  """Where one parameter lives: from its logical names and the rules, on `mesh` (or device 0)."""
  if mesh is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  spec = spec_for(var.get_value().shape, variable_names(var), dict(mesh.shape), rules)
  return NamedSharding(mesh, spec)


def sharding_fn(mesh: Mesh | None, rules: Rules | None = None):
  """A (path, variable) -> Sharding callback, as `ltx_jax.weights.load_params` takes."""
  return lambda path, var: variable_sharding(var, mesh, rules)


def fallbacks(model: nnx.Module, mesh_shape: Mapping[str, int], rules: Rules | None = None
              ) -> list[str]:
  """Parameters whose rules named a mesh axis (of size > 1) that the fallback rule dropped:
  'path: shape names -> spec'. Works on abstract (`nnx.eval_shape`) models."""
  out = []
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Variable) or not variable_names(var):
      continue
    names, shape = variable_names(var), var.get_value().shape
    got = spec_for(shape, names, mesh_shape, rules)
    wanted = spec_for([0] * len(shape), names, mesh_shape, rules)  # 0 divides by anything
    if got != wanted:
      out.append(f"{'.'.join(map(str, path))}: {shape} {names} -> {got}")
  return out


# --------------------------------------------------------------------- placing host arrays


def place(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array onto its devices, each device receiving only its own shard (also across
  processes: every process passes the same host array and fills its addressable devices)."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicated(mesh: Mesh | None, tree: Any) -> Any:
  """The arrays of `tree` (host or device data, PRNG keys too) as global arrays replicated over
  `mesh`, as every process of a multi-host run needs them; the tree itself without a mesh."""
  if mesh is None:
    return tree
  everywhere = NamedSharding(mesh, PartitionSpec())

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == everywhere:
      return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.jit(lambda a: a, out_shardings=everywhere)(x)
    return place(np.asarray(jax.device_get(x)), everywhere)

  return jax.tree.map(one, tree)


def gather(x: jax.Array) -> jax.Array:
  """A (possibly multi-process) array replicated on every device, so every process can read
  it with np.asarray."""
  if not isinstance(x, jax.Array) or x.is_fully_replicated or isinstance(
      x.sharding, jax.sharding.SingleDeviceSharding):
    return x
  return jax.jit(lambda a: a, out_shardings=NamedSharding(x.sharding.mesh, PartitionSpec()))(x)


def placed_bytes(tree: Any) -> int:
  """Bytes the arrays of a pytree (or NNX module) occupy on their devices, all shards summed."""
  return sum(device_bytes(tree).values())


def device_bytes(tree: Any) -> dict[jax.Device, int]:
  """Bytes per (addressable) device of the arrays of a pytree or NNX module."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree)
  out: dict[jax.Device, int] = {}
  for x in jax.tree.leaves(tree):
    if isinstance(x, jax.Array):
      for s in x.addressable_shards:
        out[s.device] = out.get(s.device, 0) + s.data.nbytes
  return out


# ------------------------------------------------------------------------------ activations


@dataclasses.dataclass(frozen=True)
class Partitioning:
  """How a jitted computation is laid out: the mesh, the rules, the context-parallel attention.

  Hashable, so it rides in static jit arguments (e.g. `LoopSpec`) and re-traces when it changes.
  """
  mesh: Mesh
  rules: tuple[tuple[str, Any], ...] = tuple(RULES.items())
  context_attention: str = 'allgather'

  def __post_init__(self):
    if self.context_attention not in CONTEXT_ATTENTION:
      raise ValueError(f"context_attention={self.context_attention!r}; choose one of "
                       f"{CONTEXT_ATTENTION}")

  @classmethod
  def create(cls, mesh: Mesh, rules: Rules | None = None, context_attention: str = 'allgather'
             ) -> 'Partitioning':
    return cls(mesh, tuple((RULES if rules is None else rules).items()), context_attention)

  @property
  def rules_dict(self) -> dict[str, Any]:
    return dict(self.rules)

  def spec(self, shape: Sequence[int], names: Sequence[str | None]) -> PartitionSpec:
    return spec_for(shape, names, dict(self.mesh.shape), self.rules_dict)

  def sharding(self, shape: Sequence[int], names: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(shape, names))


_ACTIVE = threading.local()


@contextlib.contextmanager
def activate(partitioning: Partitioning | None) -> Iterator[None]:
  """Makes `constrain` (and context-parallel attention) use `partitioning` while tracing.

  Use it inside a jitted function whose static arguments hold the partitioning, so a change of
  partitioning re-traces. None: no constraints (single device).
  """
  previous = getattr(_ACTIVE, 'value', None)
  _ACTIVE.value = partitioning
  try:
    yield
  finally:
    _ACTIVE.value = previous


def active() -> Partitioning | None:
  return getattr(_ACTIVE, 'value', None)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """A sharding constraint from logical names under the active partitioning; a no-op without."""
  p = active()
  if p is None:
    return x
  assert len(names) == x.ndim, (x.shape, names)
  return jax.lax.with_sharding_constraint(x, p.sharding(x.shape, names))


def shard_module(model: nnx.Module, mesh: Mesh | None, rules: Rules | None = None
                 ) -> nnx.Module:
  """Moves an in-memory model's parameters onto `mesh` by the rules, in place; returns it.
  (The loaders place parameters straight from their files; this is for models built in memory,
  such as ltx_jax.smoke's.)"""
  if mesh is None:
    return model
  for _, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Variable) and isinstance(var.get_value(), jax.Array):
      var.set_value(place(np.asarray(jax.device_get(var.get_value())),
                          variable_sharding(var, mesh, rules)))
  return model
