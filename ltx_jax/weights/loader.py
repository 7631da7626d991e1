"""Strict, lazy filling of an abstract NNX model from a PyTorch-named tensor store.

A model is built with `nnx.eval_shape` (no memory, no random init). A plan maps each of its
parameters to the source tensors it comes from; `load_params` checks the whole plan against the
file headers first (missing, unexpected and wrong-shape keys are reported together, in one
error, before any tensor is read), then reads tensors one at a time in the dtype of their
abstract variable (the store casts through `precision.cast`, which refuses values the dtype
cannot hold), and places them on device. Host memory peaks near one parameter in that dtype.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import string
from typing import Any, Callable, Iterable, Protocol, Sequence

import jax
import numpy as np
from flax import nnx

from ltx_jax.errors import LoadError


Path = tuple[Any, ...]


class TensorStore(Protocol):
  """Tensors by name; `read(name, dtype)` casts through `precision.cast` (None: as stored)."""
  def keys(self) -> Iterable[str]: ...
  def shape(self, name: str) -> tuple[int, ...]: ...
  def read(self, name: str, dtype: Any = None) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one of our parameters comes from.

  keys: one source key per slice of the leading stacked axes (a single key when not stacked).
  stack: how many leading axes of our parameter are stacked slices (0, 1 or more).
  perm: axis permutation taking a source tensor to our layout (e.g. (1, 0) for Linear weights).
  reshape: the per-slice shape after permutation, when it differs from the source's.
  """
  keys: tuple[str, ...]
  stack: int = 0
  perm: tuple[int, ...] | None = None
  reshape: tuple[int, ...] | None = None

  def target_shape(self, src_shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.perm and len(self.perm) != len(src_shape):
      return tuple(src_shape)  # another rank: reported as a shape mismatch by the caller
    shape = tuple(src_shape[p] for p in self.perm) if self.perm else tuple(src_shape)
    if self.reshape is not None:
      if int(np.prod(shape)) != int(np.prod(self.reshape)):
        return tuple(shape)  # reported as a shape mismatch by the caller
      return tuple(self.reshape)
    return shape

  def convert(self, a: np.ndarray) -> np.ndarray:
    if self.perm:
      a = np.transpose(a, self.perm)
    if self.reshape is not None:
      a = a.reshape(self.reshape)
    return a


Plan = dict[Path, Source]


def _variables(module: nnx.Module) -> list[tuple[Path, nnx.Variable]]:
  return [(p, v) for p, v in nnx.iter_graph(module) if isinstance(v, nnx.Variable)]


def _parent(module: nnx.Module, path: Path):
  node = module
  for part in path[:-1]:
    node = node[part] if isinstance(part, int) else getattr(node, part)
  return node


def plan_from_table(module: nnx.Module, table: Sequence[tuple[str, str]],
                    leaf_rules: Callable[[Any, str], tuple[str, tuple[int, ...] | None]] | None
                    = None) -> Plan:
  """Builds a plan from a table of (our module prefix, source key prefix) pairs.

  The longest matching prefix wins; the rest of our module path is appended with dots. A source
  prefix may hold placeholders such as `{i}` (and `{j}`), one per leading stacked axis of the
  parameters below it. Leaf names and layouts come from the owning module's `torch_names`
  (`{our_leaf: (source_leaf, perm)}`), or from `leaf_rules(module, leaf)` when given.
  """
  entries = sorted(table, key=lambda e: -len(e[0]))
  plan: Plan = {}
  for path, var in _variables(module):
    dotted = '.'.join(str(p) for p in path[:-1])
    for ours, theirs in entries:
      if ours == '' or dotted == ours or dotted.startswith(ours + '.'):
        rest = dotted[len(ours):].lstrip('.')
        break
    else:
      raise KeyError(f"no checkpoint name for parameter {'.'.join(map(str, path))}")
    parent = _parent(module, path)
    leaf = str(path[-1])
    if leaf_rules is not None:
      src_leaf, perm = leaf_rules(parent, leaf)
    else:
      src_leaf, perm = getattr(parent, 'torch_names', {}).get(leaf, (leaf, None))
    key = '.'.join(s for s in (theirs, rest, src_leaf) if s)
    fields = [f for _, f, _, _ in string.Formatter().parse(key) if f]
    shape = var.get_value().shape
    keys = tuple(key.format(**dict(zip(fields, idx)))
                 for idx in itertools.product(*(range(s) for s in shape[:len(fields)])))
    plan[path] = Source(keys, len(fields), perm)
  return plan


def _matches(key: str, patterns: Sequence[str]) -> bool:
  return any(re.fullmatch(p, key) for p in patterns)


def check_plan(module: nnx.Module, store: TensorStore, plan: Plan, *, what: str = 'model',
               ignore: Sequence[str] = ()) -> None:
  """Raises LoadError listing every missing, unexpected and wrong-shape tensor; reads nothing."""
  variables = dict(_variables(module))
  available = {k: tuple(store.shape(k)) for k in store.keys()}
  missing, wrong, used = [], [], set()
  for path, src in plan.items():
    full = variables[path].get_value().shape
    want = full[src.stack:]
    for key in src.keys:
      if key not in available:
        missing.append(f"{key} (for {'.'.join(map(str, path))}, shape {want})")
        continue
      used.add(key)
      if src.target_shape(available[key]) != want:
        wrong.append(f"{key}: file {available[key]}, model expects {want}"
                     + (f" after permuting {src.perm}" if src.perm else ''))
  unexpected = sorted(k for k in available if k not in used and not _matches(k, ignore))
  report_mismatch(what, missing, unexpected, wrong)


def report_mismatch(what: str, missing: Sequence[str], unexpected: Sequence[str],
                    wrong: Sequence[str]) -> None:
  """One LoadError naming every missing, unexpected and wrong-shape tensor (20 of each shown);
  nothing when all three are empty."""
  if missing or unexpected or wrong:
    lines = [f"cannot load {what}: {len(missing)} missing, {len(unexpected)} unexpected and "
             f"{len(wrong)} wrong-shape tensors"]
    for label, items in (('missing', missing), ('unexpected', unexpected),
                         ('wrong shape', wrong)):
      shown = list(items[:20]) + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
      lines += [f"  {label}: {item}" for item in shown]
    raise LoadError('\n'.join(lines))


def read_param(store: TensorStore, src: Source, var: nnx.Variable) -> np.ndarray:
  """One parameter on the host, in the abstract variable's dtype."""
  full = var.get_value().shape
  target = np.dtype(var.get_value().dtype)
  host = np.empty(full, target)
  slices = host.reshape((len(src.keys),) + full[src.stack:])
  for i, key in enumerate(src.keys):
    slices[i] = src.convert(store.read(key, target))
  return host


def load_params(module: nnx.Module, store: TensorStore, plan: Plan, *, what: str = 'model',
                ignore: Sequence[str] = (),
                sharding: Callable[[Path, nnx.Variable], Any] | None = None) -> nnx.Module:
  """Fills the abstract `module` in place from `store` following `plan`; returns it.

  Each parameter is read in its abstract variable's dtype (build the model in the storage dtype
  wanted, see `precision.apply` for fp8).
  ignore: regexes of source keys that are known and deliberately unused.
  sharding: optional (path, variable) -> jax.sharding.Sharding for device placement.
  """
  check_plan(module, store, plan, what=what, ignore=ignore)
  variables = dict(_variables(module))
  for path, src in plan.items():
    var = variables[path]
    host = read_param(store, src, var)
    if sharding is None:
      placed = jax.device_put(host)
    else:  # each device (of every process) receives only its shard of the host tensor
      placed = jax.make_array_from_callback(host.shape, sharding(path, var), host.__getitem__)
    del host
    var.set_value(placed)
  return module
