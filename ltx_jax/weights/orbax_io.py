"""Converted checkpoints: one orbax checkpoint per component plus a JSON manifest.

Layout written by `ltx_jax.weights.convert` (tools/convert.py):

  DIR/ltx_jax_checkpoint.json   format, detected release, model configs, sha256 of the sources
  DIR/transformer/              orbax checkpoint of the DiT parameters (nested dict of arrays)
  DIR/vae/, DIR/text_encoder/   the same for the other components
  DIR/tokenizer/spiece.model    the T5 sentencepiece model

Writing streams: parameters arrive one at a time and are written in groups of about
`GROUP_BYTES` with orbax's partial save, so the host holds one group, not the model.
Restoring fills a model built abstractly (`nnx.eval_shape`) by the caller: the checkpoint's shapes
are compared with it (strictly: missing, unexpected, wrong shape), then orbax reads each parameter
straight into its target sharding: with a mesh, each device reads only its own shard. Parameters
stored in their target dtype are read in one go; the others are read as stored, a group of about
`GROUP_BYTES` at a time, and cast on device by `precision.cast`, which refuses values the target
dtype cannot hold. This module knows no model: configs are rebuilt from JSON into the dataclass
the caller names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import CheckpointFormatError, LoadError
from ltx_jax.weights import precision
from ltx_jax.weights.loader import report_mismatch

MANIFEST = 'ltx_jax_checkpoint.json'
FORMAT = 'ltx_jax.orbax/1'
COMPONENTS = ('transformer', 'vae', 'text_encoder')
GROUP_BYTES = 512 << 20

ParamPath = tuple[Any, ...]


def _ocp():
  from orbax.checkpoint.experimental import v1  # heavy import, only when used
  return v1


# ---------------------------------------------------------------------------------- manifest


def is_orbax(source: str | os.PathLike) -> bool:
  """A converted checkpoint folder, or one component folder inside it."""
  path = Path(source)
  return path.is_dir() and ((path / MANIFEST).is_file()
                            or (path.name in COMPONENTS and (path.parent / MANIFEST).is_file()))


def read_manifest(source: str | os.PathLike) -> tuple[Path, dict]:
  """-> (checkpoint root folder, manifest dict) for the root or a component folder."""
  path = Path(source)
  root = path if (path / MANIFEST).is_file() else path.parent
  where = root / MANIFEST
  try:
    manifest = json.loads(where.read_text(encoding='utf-8'))
  except (OSError, ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
    raise CheckpointFormatError(f"{where}: unreadable manifest ({e})") from None
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    found = manifest.get('format') if isinstance(manifest, dict) else None
    raise CheckpointFormatError(f"{root}: checkpoint format {found!r}, this ltx_jax reads "
                                f"{FORMAT!r}; convert the source again")
  comps = manifest.get('components')
  if not isinstance(comps, dict) or not all(
      c in COMPONENTS and isinstance(e, dict) and isinstance(e.get('config'), dict)
      for c, e in comps.items()):
    raise CheckpointFormatError(f"{where}: 'components' must map {list(COMPONENTS)} to objects "
                                "holding a 'config' object")
  release = manifest.get('release')
  if not isinstance(release, dict) or not all(
      isinstance(release.get(k), str) for k in ('version', 'size', 'variant')):
    raise CheckpointFormatError(f"{where}: 'release' must be an object with string version, "
                                "size and variant")
  if not isinstance(manifest.get('scheduler', {}), (dict, type(None))):
    raise CheckpointFormatError(f"{where}: 'scheduler' must be an object")
  return root, manifest


def config_to_json(cfg: Any) -> dict:
  """A (nested) frozen dataclass config -> JSON-able dict."""
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_json(cls: type, data: Mapping[str, Any]) -> Any:
  """Inverse of `config_to_json`: lists back to tuples, nested dataclasses rebuilt."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name in data:
      kwargs[field.name] = _from_json(hints[field.name], data[field.name])
  return cls(**kwargs)


def _from_json(hint: Any, value: Any) -> Any:
  if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
    return config_from_json(hint, value)
  if typing.get_origin(hint) is tuple and isinstance(value, list):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_from_json(args[0], v) for v in value)
    return tuple(_from_json(a, v) for a, v in zip(args, value)) if args else tuple(value)
  return value


# ---------------------------------------------------------------------------------- writing


def _nest(items: Iterable[tuple[ParamPath, Any]]) -> dict:
  """[(('blocks', 'attn1', 'to_q', 'kernel'), x), ...] -> nested dicts with string keys."""
  tree: dict = {}
  for path, value in items:
    node = tree
    for part in path[:-1]:
      node = node.setdefault(str(part), {})
    node[str(path[-1])] = value
  return tree


class ComponentWriter:
  """Writes one component's parameters, given one at a time, as an orbax checkpoint.

  Parameters are buffered until `GROUP_BYTES` and written with orbax's partial save; `close()`
  finalizes the checkpoint. Counts and bytes are kept for the report.
  """

  def __init__(self, path: str | os.PathLike, group_bytes: int = GROUP_BYTES):
    self.path = Path(path)
    self.group_bytes = group_bytes
    self.count = 0
    self.bytes = 0
    self._pending: list[tuple[ParamPath, np.ndarray]] = []
    self._pending_bytes = 0

  def add(self, path: ParamPath, value: np.ndarray) -> None:
    value = np.asarray(value)
    self._pending.append((path, value))
    self._pending_bytes += value.nbytes
    self.count += 1
    self.bytes += value.nbytes
    if self._pending_bytes >= self.group_bytes:
      self.flush()

  def flush(self) -> None:
    if self._pending:
      _ocp().partial.save(self.path, _nest(self._pending))
      self._pending, self._pending_bytes = [], 0

  def close(self) -> None:
    self.flush()
    if self.count == 0:
      raise LoadError(f"{self.path}: no parameters to write")
    _ocp().partial.finalize(self.path)


def variables(model: nnx.Module) -> list[tuple[ParamPath, nnx.Variable]]:
  return [(p, v) for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)]


def write_model(path: str | os.PathLike, model: nnx.Module, progress=None) -> ComponentWriter:
  """Writes a loaded model's parameters, one device array at a time, to a new checkpoint."""
  writer = ComponentWriter(path)
  for p, var in variables(model):
    value = np.asarray(jax.device_get(var.get_value()))
    writer.add(p, value)
    if progress is not None:
      progress.update(value.nbytes)
  writer.close()
  return writer


# ---------------------------------------------------------------------------------- restoring


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def check_against(model: nnx.Module, ckpt: str | os.PathLike, what: str
                  ) -> dict[tuple[str, ...], np.dtype]:
  """The stored dtype of every parameter; a LoadError listing every missing, unexpected and
  wrong-shape parameter when the checkpoint does not fit `model`."""
  try:
    stored = _flatten(_ocp().pytree_metadata(ckpt).metadata)
  except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types on bad files
    raise CheckpointFormatError(f"cannot load {what}: {ckpt} is not a readable orbax "
                                f"checkpoint ({e})") from None
  flat = {p: tuple(v.shape) for p, v in stored.items()}
  want = {tuple(str(x) for x in p): tuple(v.get_value().shape) for p, v in variables(model)}
  missing = sorted('.'.join(p) for p in want if p not in flat)
  unexpected = sorted('.'.join(p) for p in flat if p not in want)
  wrong = sorted(f"{'.'.join(p)}: checkpoint {flat[p]}, model expects {s}"
                 for p, s in want.items() if p in flat and flat[p] != s)
  report_mismatch(what, missing, unexpected, wrong)
  return {p: np.dtype(v.dtype) for p, v in stored.items()}


def _groups(items: list, nbytes: Callable[[Any], int], limit: int) -> Iterable[list]:
  group, size = [], 0
  for item in items:
    group.append(item)
    size += nbytes(item)
    if size >= limit:
      yield group
      group, size = [], 0
  if group:
    yield group


def restore_model(model: nnx.Module, ckpt: str | os.PathLike, *, what: str = 'model',
                  mesh: jax.sharding.Mesh | None = None,
                  rules: sharding_lib.Rules | None = None,
                  allow_nonfinite: bool = False) -> nnx.Module:
  """Fills the abstract `model` in place from an orbax checkpoint; returns it.

  Each parameter ends in the abstract variable's dtype, with the sharding its logical axis names
  get under `rules` on `mesh` (one device without a mesh).
  """
  stored = check_against(model, ckpt, what)
  where = sharding_lib.sharding_fn(mesh, rules)
  items = [(tuple(str(x) for x in p), v) for p, v in variables(model)]
  ctx = _ocp().Context()
  ctx.pytree.loading.partial_load = True  # completeness was checked above

  def read(group, as_stored: bool) -> list:
    """[(variable, restored array)] for a group, in the stored or the target dtype."""
    target = _nest((p, jax.ShapeDtypeStruct(
        v.get_value().shape, stored[p] if as_stored else v.get_value().dtype,
        sharding=where(p, v))) for p, v in group)
    try:
      with ctx:
        flat = _flatten(_ocp().load_pytree(ckpt, target))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types on bad files
      reason = (str(e).strip().splitlines() or [''])[0][:300]
      raise CheckpointFormatError(f"cannot load {what}: {ckpt} is damaged "
                                  f"({type(e).__name__}: {reason})") from None
    return [(p, v, flat[p]) for p, v in group]

  def nbytes(item) -> int:
    p, v = item
    return int(np.prod(v.get_value().shape)) * stored[p].itemsize

  def check(p, value):
    if not allow_nonfinite:
      precision.check_finite(value, name='.'.join(p), where=what)

  same = [(p, v) for p, v in items if stored[p] == np.dtype(v.get_value().dtype)]
  recast = [(p, v) for p, v in items if stored[p] != np.dtype(v.get_value().dtype)]
  if same:
    for p, var, value in read(same, as_stored=False):
      check(p, value)
      var.set_value(value)
  for group in _groups(recast, nbytes, GROUP_BYTES):  # device memory: one group as stored
    for p, var, value in read(group, as_stored=True):
      check(p, value)
      var.set_value(precision.cast(value, var.get_value().dtype, name='.'.join(p)))
  return model


def component_config(source: str | os.PathLike, component: str, config_type: type) -> Any:
  """The model config of one component of a converted checkpoint, as a `config_type`."""
  root, manifest = read_manifest(source)
  entry = manifest['components'].get(component)
  if entry is None:
    raise LoadError(f"{root}: this converted checkpoint has no {component} (it holds "
                    f"{sorted(manifest['components'])}); convert it with that component")
  return config_from_json(config_type, entry['config'])
