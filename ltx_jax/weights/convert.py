"""Converting a model source (diffusers folder, official single file + T5, hub repo) to orbax.

The output folder (see `ltx_jax.weights.orbax_io` for its layout) is written under a temporary
name next to it and renamed only when everything succeeded, so an error (bad file, missing
component, unknown release, a weight out of the target dtype's range, interruption) never leaves
partial output. Every component streams: its model is built abstractly, the checkpoint is checked
against it (every tensor used, shapes equal) before anything is written, then each parameter is
read from the source, cast (`precision.cast`), and handed to the writer, which writes groups of
~512 MB, so host memory peaks near the largest stacked parameter plus one group. A converted
checkpoint given as the source is restored through the front door and written again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from ltx_jax.errors import UsageError
from ltx_jax.models import t5, transformer, vae
from ltx_jax.sources import ModelSource, read_scheduler_config
from ltx_jax.sources.resolve import sha256
from ltx_jax.weights import lora as lora_lib
from ltx_jax.weights import orbax_io, precision
from ltx_jax.weights.component import Component, load_component
from ltx_jax.weights.loader import check_plan, read_param

REGISTRY: dict[str, Component] = {c.name: c for c in (transformer.COMPONENT, vae.COMPONENT,
                                                       t5.COMPONENT)}
COMPONENTS = orbax_io.COMPONENTS


class OutputExistsError(UsageError, FileExistsError):
  """The output folder exists already (a FileExistsError too, for callers catching OSError)."""


def _nbytes(model: nnx.Module) -> int:
  return sum(int(np.prod(v.get_value().shape)) * np.dtype(v.get_value().dtype).itemsize
             for _, v in orbax_io.variables(model))


def _bar(total: int, desc: str, enabled: bool):
  return tqdm(total=total, desc=desc, unit='B', unit_scale=True, disable=not enabled, leave=True)


def _stored_dtype(model: nnx.Module, param_dtype) -> str:
  """What the manifest records: 'fp8' when the component has an fp8 set, else its dtype."""
  if any(np.dtype(v.get_value().dtype) == precision.FP8 for _, v in orbax_io.variables(model)):
    return 'fp8'
  return precision.name_of(precision.base_dtype(param_dtype))


def write_component(component: Component, source: str | os.PathLike, out: Path, param_dtype,
                    progress: bool = False, loras=None):
  """One component of `source` as an orbax checkpoint at `out` -> (config, writer, stored dtype,
  the merged LoRA adapters).

  loras: LoRA adapters merged into the weights as they are read (components that take them).
  Raises before writing anything when the checkpoint or an adapter does not fit the model.
  """
  if orbax_io.is_orbax(source):
    model = load_component(source, component, dtype=jnp.float32, param_dtype=param_dtype,
                           loras=loras)
    config = orbax_io.component_config(source, component.name, component.config_type)
    with _bar(_nbytes(model), component.name, progress) as bar:
      writer = orbax_io.write_model(out, model, bar)
    return (config, writer, _stored_dtype(model, param_dtype),
            getattr(model, 'lora_adapters', ()))
  ckpt = component.open(Path(source))
  model = component.build(ckpt.config, dtype=jnp.float32, param_dtype=param_dtype)
  plan = ckpt.plan(model)
  check_plan(model, ckpt.store, plan, what=ckpt.what, ignore=ckpt.ignore)
  adapters = None
  if loras and component.lora_plans is not None:
    adapters = lora_lib.open_adapters(model, component.lora_plans(model), loras, what=ckpt.what)
  store = ckpt.store if adapters is None else lora_lib.MergedStore(ckpt.store, plan, adapters)
  variables = dict(orbax_io.variables(model))
  writer = orbax_io.ComponentWriter(out)
  with _bar(_nbytes(model), component.name, progress) as bar:
    for path, src in plan.items():
      host = read_param(store, src, variables[path])
      writer.add(path, host)
      bar.update(host.nbytes)
      del host
    writer.close()
  return (ckpt.config, writer, _stored_dtype(model, param_dtype),
          adapters.records if adapters is not None else ())


def _write_tokenizer(source: Path, out: Path) -> None:
  out.mkdir()
  if source.suffix == '.gguf':
    (out / 'spiece.model').write_bytes(t5.load_tokenizer(source).sp.serialized_model_proto())
    return
  spiece = source / 'spiece.model' if source.is_dir() else source
  shutil.copyfile(spiece, out / 'spiece.model')


def convert(source: ModelSource, out: str | os.PathLike, *, dtype: precision.DTypeLike = 'bf16',
            components: Sequence[str] = COMPONENTS, progress: bool = True,
            log: Callable[[str], None] = print, loras=None) -> dict:
  """Writes `source` as a converted checkpoint folder `out`; returns its manifest.

  dtype: storage dtype, 'f32', 'bf16', 'fp16' or 'fp8' (transformer block linear weights in
    float8_e4m3fn, the rest of the transformer and the other components in bf16), or a dtype.
    A weight the dtype cannot hold is refused (LoadError naming it), leaving no output.
  components: a subset of ('transformer', 'vae', 'text_encoder'); the tokenizer and scheduler
    config are always carried along when the source has them.
  loras: LoRA adapters merged into the transformer's weights (`[path | (path, scale), ...]`,
    see `ltx_jax.weights.lora`); the manifest records each one's file, sha256 and scale.
  """
  out = Path(out)
  unknown = sorted(set(components) - set(COMPONENTS))
  if unknown or not components:
    raise UsageError(f"components {list(components)}: choose from {list(COMPONENTS)}")
  param_dtype = precision.parse(dtype)
  if lora_lib.parse_loras(loras) and 'transformer' not in components:
    raise UsageError("LoRA adapters change the transformer: add it to the components")
  if out.exists():
    raise OutputExistsError(f"{out} already exists; choose a new output folder or remove it")
  source.require(*components)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.partial', dir=out.parent))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
  try:
    entries = {}
    for c in components:
      cfg, writer, stored, merged = write_component(
          REGISTRY[c], getattr(source, c), tmp / c, param_dtype, progress,
          loras=loras if c == 'transformer' else None)
      entries[c] = {'config': orbax_io.config_to_json(cfg), 'param_dtype': stored,
                    'tensors': writer.count, 'bytes': writer.bytes}
      if merged:
        entries[c]['loras'] = [dataclasses.asdict(a) for a in merged]
      log(f"{c}: {writer.count} parameters, {writer.bytes / 1e6:.1f} MB ({stored})")
    if source.tokenizer is not None:
      _write_tokenizer(source.tokenizer, tmp / 'tokenizer')
    extra = [c for c in ('tokenizer', 'scheduler') if getattr(source, c) is not None]
    name = precision.name_of(param_dtype)
    manifest = {
        'format': orbax_io.FORMAT,
        'release': dict(source.release.__dict__,
                        fp8=source.release.fp8 or precision.is_fp8(param_dtype)),
        'release_name': source.release.name,
        'dtype': name,
        'components': entries,
        'scheduler': read_scheduler_config(source),
        'source': {'kind': source.kind, 'root': str(source.root), 'hub_repo': source.hub_repo},
        'sha256': {str(f): sha256(f) for f in source.files(list(components) + extra)},
    }
    (tmp / orbax_io.MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log(f"wrote {out} ({source.release.name}, {name})")
  return manifest
