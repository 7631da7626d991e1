"""Converted checkpoints: one orbax checkpoint per component plus a JSON manifest.

Layout written by `ltx_jax.convert` (tools/convert.py):

  DIR/ltx_jax_checkpoint.json   format, detected release, model configs, sha256 of the sources
  DIR/transformer/              orbax checkpoint of the DiT parameters (nested dict of arrays)
  DIR/vae/, DIR/text_encoder/   the same for the other components
  DIR/tokenizer/spiece.model    the T5 sentencepiece model

Writing streams: parameters arrive one at a time and are written in groups of about
`GROUP_BYTES` with orbax's partial save, so the host holds one group, not the model.
Restoring builds the model abstractly (`nnx.eval_shape`), compares the checkpoint's shapes with
it (strictly: missing, unexpected, wrong shape), then lets orbax read each parameter straight
into its target sharding and dtype: with a mesh, each device reads only its own shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.weights import precision
from ltx_jax.weights.loader import LoadError

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
  try:
    manifest = json.loads((root / MANIFEST).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise LoadError(f"{root / MANIFEST}: unreadable manifest ({e})") from None
  if manifest.get('format') != FORMAT:
    raise LoadError(f"{root}: checkpoint format {manifest.get('format')!r}, this ltx_jax reads "
                    f"{FORMAT!r}; convert the source again")
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
      raise ValueError(f"{self.path}: no parameters to write")
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


def check_against(model: nnx.Module, ckpt: str | os.PathLike, what: str) -> None:
  """LoadError listing every missing, unexpected and wrong-shape parameter of a checkpoint."""
  try:
    stored = _ocp().pytree_metadata(ckpt).metadata
  except (FileNotFoundError, ValueError, OSError) as e:
    raise LoadError(f"cannot load {what}: {ckpt} is not a readable orbax checkpoint ({e})"
                    ) from None
  flat = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, Mapping):
        walk(v, prefix + (k,))
      else:
        flat[prefix + (k,)] = tuple(v.shape)

  walk(stored, ())
  want = {tuple(str(x) for x in p): tuple(v.get_value().shape) for p, v in variables(model)}
  missing = sorted('.'.join(p) for p in want if p not in flat)
  unexpected = sorted('.'.join(p) for p in flat if p not in want)
  wrong = sorted(f"{'.'.join(p)}: checkpoint {flat[p]}, model expects {s}"
                 for p, s in want.items() if p in flat and flat[p] != s)
  if missing or unexpected or wrong:
    lines = [f"cannot load {what}: {len(missing)} missing, {len(unexpected)} unexpected and "
             f"{len(wrong)} wrong-shape tensors"]
    for label, items in (('missing', missing), ('unexpected', unexpected),
                         ('wrong shape', wrong)):
      lines += [f"  {label}: {item}" for item in items[:20]]
    raise LoadError('\n'.join(lines))


def restore_model(model: nnx.Module, ckpt: str | os.PathLike, *, what: str = 'model',
                  mesh: jax.sharding.Mesh | None = None,
                  rules: sharding_lib.Rules | None = None) -> nnx.Module:
  """Fills the abstract `model` in place from an orbax checkpoint; returns it.

  Each parameter is read in the abstract variable's dtype (orbax casts if the checkpoint holds
  another) with the sharding its logical axis names get under `rules` on `mesh`.
  """
  check_against(model, ckpt, what)
  where = sharding_lib.sharding_fn(mesh, rules)
  items = variables(model)
  target = _nest((p, jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype,
                                          sharding=where(p, v))) for p, v in items)
  restored = _ocp().load_pytree(ckpt, target)
  for p, var in items:
    node = restored
    for part in p:
      node = node[str(part)]
    var.set_value(node)
  return model


def _builders():
  """component -> (config class, config attribute on the model, abstract model builder)."""
  from ltx_jax.models.t5.config import T5Config
  from ltx_jax.models.t5.model import T5Encoder
  from ltx_jax.models.transformer.config import TransformerConfig
  from ltx_jax.models.transformer.model import LTXVideoTransformer
  from ltx_jax.models.vae.config import VAEConfig
  from ltx_jax.models.vae.loading import abstract_vae

  def transformer(cfg, dtype, param_dtype, attention='auto'):
    model = nnx.eval_shape(lambda: LTXVideoTransformer(
        cfg, dtype=dtype, param_dtype=precision.base_dtype(param_dtype), attention=attention,
        rngs=nnx.Rngs(0)))
    return precision.apply(model, param_dtype)

  def vae(cfg, dtype, param_dtype):
    return abstract_vae(cfg, dtype=dtype, param_dtype=precision.base_dtype(param_dtype))

  def text_encoder(cfg, dtype, param_dtype, attention='auto'):
    return nnx.eval_shape(lambda: T5Encoder(
        cfg, dtype=dtype, param_dtype=precision.base_dtype(param_dtype), attention=attention,
        rngs=nnx.Rngs(0)))

  return {'transformer': (TransformerConfig, 'config', transformer),
          'vae': (VAEConfig, 'config', vae),
          'text_encoder': (T5Config, 'config', text_encoder)}


def component_config(source: str | os.PathLike, component: str) -> Any:
  """The model config of one component of a converted checkpoint."""
  root, manifest = read_manifest(source)
  entry = manifest['components'].get(component)
  if entry is None:
    raise LoadError(f"{root}: this converted checkpoint has no {component} (it holds "
                    f"{sorted(manifest['components'])}); convert it with that component")
  return config_from_json(_builders()[component][0], entry['config'])


def restore_component(source: str | os.PathLike, component: str, *, dtype, param_dtype=None,
                      mesh: jax.sharding.Mesh | None = None,
                      rules: sharding_lib.Rules | None = None, **kwargs) -> nnx.Module:
  """One component of a converted checkpoint, as the component's loader would return it.

  dtype: compute dtype; param_dtype: storage dtype or 'fp8' (defaults to dtype, as in the
  safetensors loaders); kwargs: model options (attention=...).
  """
  root, _ = read_manifest(source)
  cfg = component_config(root, component)
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  model = _builders()[component][2](cfg, dtype, param_dtype, **kwargs)
  return restore_model(model, root / component, what=f'{component} from {root}', mesh=mesh,
                       rules=rules)
