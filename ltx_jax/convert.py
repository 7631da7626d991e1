"""Converting a model source (diffusers folder, official single file + T5, hub repo) to orbax.

The output folder (see `ltx_jax.weights.orbax_io` for its layout) is written under a temporary
name next to it and renamed only when everything succeeded, so an error (bad file, missing
component, unknown release, interruption) never leaves partial output. The transformer streams:
each parameter is read from the source, cast, and handed to the writer, which writes groups of
~512 MB, so host memory peaks near the largest stacked parameter plus one group. The VAE and T5
are loaded whole by their own loaders first (they are 0.2-10 GB) and then written the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from flax import nnx

from ltx_jax.sources import ModelSource, read_scheduler_config
from ltx_jax.sources.resolve import sha256
from ltx_jax.weights import orbax_io, precision
from ltx_jax.weights.loader import check_plan, read_param

COMPONENTS = orbax_io.COMPONENTS


def _nbytes(model: nnx.Module) -> int:
  return sum(int(np.prod(v.get_value().shape)) * np.dtype(v.get_value().dtype).itemsize
             for _, v in orbax_io.variables(model))


def _bar(total: int, desc: str, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, unit='B', unit_scale=True, disable=not enabled,
              leave=True)


def _write_transformer(source: Path, out: Path, param_dtype, progress: bool):
  from ltx_jax.models.transformer.loading import transformer_plan
  model, store, plan, what = transformer_plan(source, param_dtype=param_dtype)
  check_plan(model, store, plan, what=what)  # every file tensor used exactly once
  variables = dict(orbax_io.variables(model))
  writer = orbax_io.ComponentWriter(out)
  with _bar(_nbytes(model), 'transformer', progress) as bar:
    for path, src in plan.items():
      host = read_param(store, src, variables[path])
      writer.add(path, host)
      bar.update(host.nbytes)
      del host
    writer.close()
  return model.config, writer


def _write_loaded(component: str, source: Path, out: Path, param_dtype, progress: bool):
  import jax.numpy as jnp
  if component == 'vae':
    from ltx_jax.models.vae import load_vae
    model = load_vae(source, dtype=jnp.float32, param_dtype=param_dtype)
    cfg = model.config
  else:
    from ltx_jax.models.t5 import load_text_encoder
    model = load_text_encoder(source, dtype=jnp.float32, param_dtype=param_dtype)
    cfg = model.config
  with _bar(_nbytes(model), component, progress) as bar:
    writer = orbax_io.write_model(out, model, bar)
  return cfg, writer


def _write_tokenizer(source: Path, out: Path) -> None:
  out.mkdir()
  if source.suffix == '.gguf':
    from ltx_jax.models.t5 import load_tokenizer
    (out / 'spiece.model').write_bytes(load_tokenizer(source).sp.serialized_model_proto())
    return
  spiece = source / 'spiece.model' if source.is_dir() else source
  shutil.copyfile(spiece, out / 'spiece.model')


def convert(source: ModelSource, out: str | os.PathLike, *, dtype: str = 'bf16',
            components: Sequence[str] = COMPONENTS, progress: bool = True,
            log: Callable[[str], None] = print) -> dict:
  """Writes `source` as a converted checkpoint folder `out`; returns its manifest.

  dtype: 'f32', 'bf16' or 'fp8' (transformer block linear weights in float8_e4m3fn, the rest of
    the transformer and the other components in bf16).
  components: a subset of ('transformer', 'vae', 'text_encoder'); the tokenizer and scheduler
    config are always carried along when the source has them.
  """
  out = Path(out)
  unknown = sorted(set(components) - set(COMPONENTS))
  if unknown or not components:
    raise ValueError(f"components {list(components)}: choose from {list(COMPONENTS)}")
  if out.exists():
    raise FileExistsError(f"{out} already exists; choose a new output folder or remove it")
  source.require(*components)
  param_dtype = precision.parse(dtype)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.partial', dir=out.parent))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
  try:
    entries = {}
    for c in components:
      dest = tmp / c
      if c == 'transformer':
        cfg, writer = _write_transformer(source.transformer, dest, param_dtype, progress)
        stored = precision.name_of(param_dtype)
      else:
        base = precision.base_dtype(param_dtype)
        cfg, writer = _write_loaded(c, getattr(source, c), dest, base, progress)
        stored = precision.name_of(base)
      entries[c] = {'config': orbax_io.config_to_json(cfg), 'param_dtype': stored,
                    'tensors': writer.count, 'bytes': writer.bytes}
      log(f"{c}: {writer.count} parameters, {writer.bytes / 1e6:.1f} MB ({stored})")
    if source.tokenizer is not None:
      _write_tokenizer(source.tokenizer, tmp / 'tokenizer')
    extra = [c for c in ('tokenizer', 'scheduler') if getattr(source, c) is not None]
    manifest = {
        'format': orbax_io.FORMAT,
        'release': dict(source.release.__dict__, fp8=source.release.fp8 or dtype == 'fp8'),
        'release_name': source.release.name,
        'dtype': dtype,
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
  log(f"wrote {out} ({source.release.name}, {dtype})")
  return manifest
