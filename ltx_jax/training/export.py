"""Trained weights out, in the layouts other tools read (and ltx_jax's own loaders read back).

LoRA adapters (`save_lora`):
  'diffusers'  PEFT keys `transformer.<module>.lora_A.weight` [r, in] / `.lora_B.weight`
               [out, r] with diffusers' names, and the `lora_adapter_metadata` JSON of
               diffusers' pipeline saver (`transformer.r`, `transformer.lora_alpha`,
               `transformer.target_modules` (the adapted modules), `transformer.use_rslora`,
               `transformer.lora_dropout`): `LTXPipeline.load_lora_weights` reads it.
  'comfyui'    the official trainer's / ComfyUI's `diffusion_model.<official module>.lora_A /
               lora_B.weight`; those tools take alpha = r, so when alpha / r (alpha / sqrt(r) with
               rsLoRA) is not 1 a `diffusion_model.<module>.alpha` scalar holds the alpha that
               gives the trained scale (ComfyUI and ltx_jax read it).
Full fine-tunes (`save_full`): an official single file (transformer keys under
`model.diffusion_model.`, the source file's metadata kept, so its `config` travels along), or
the transformer of a converted (tools/convert.py) orbax checkpoint with its manifest.
Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import jax
import numpy as np
from flax import nnx

from ltx_jax.errors import UsageError
from ltx_jax.models.transformer.loading import OFFICIAL_PREFIX, OFFICIAL_TABLE
from ltx_jax.weights import orbax_io, precision
from ltx_jax.weights.loader import plan_from_table
from ltx_jax.weights.safetensors_io import write_safetensors

LORA_LAYOUTS = ('diffusers', 'comfyui')
FULL_LAYOUTS = ('official', 'orbax')


def _host(state_params) -> dict[tuple, np.ndarray]:
  return {tuple(p): np.asarray(jax.device_get(v.get_value()), np.float32)
          for p, v in nnx.to_flat_state(state_params)}


def _atomic_write(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]):
  tmp = path.with_name(path.name + '.partial')
  try:
    write_safetensors(tmp, tensors, metadata)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def lora_tensors(trainer, state, layout: str = 'diffusers', dtype='f32'
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """The trained adapter as {key: tensor} and safetensors metadata in `layout`."""
  if layout not in LORA_LAYOUTS:
    raise UsageError(f"LoRA layout {layout!r}; choose one of {', '.join(LORA_LAYOUTS)}")
  selection = trainer.selection
  if selection.mode != 'lora':
    raise UsageError("this trainer fine-tunes the model's own weights; save it with save_full")
  config = selection.lora
  dtype = precision.parse(dtype)
  if dtype == 'fp8':
    raise UsageError("LoRA factors are saved in f32, bf16 or fp16, not fp8")
  params = _host(state.params)
  tensors, modules = {}, []
  for t in selection.targets:
    a = params[t.path + ('lora', 'a')]  # [(L,) in, r]
    b = params[t.path + ('lora', 'b')]  # [(L,) r, out]
    if t.index is not None:
      a, b = a[t.index], b[t.index]
    if layout == 'diffusers':
      name = f'transformer.{t.diffusers}'
    else:
      name = f'diffusion_model.{t.official}'
      if abs(config.factor - 1.0) > 0:
        tensors[f'{name}.alpha'] = np.asarray(config.factor * config.rank, np.float32)
    modules.append(t.diffusers)
    tensors[f'{name}.lora_A.weight'] = precision.cast(np.ascontiguousarray(a.T), dtype,
                                                      name=name)
    tensors[f'{name}.lora_B.weight'] = precision.cast(np.ascontiguousarray(b.T), dtype,
                                                      name=name)
  metadata = {'format': 'pt'}
  if layout == 'diffusers':
    peft = {'r': config.rank, 'lora_alpha': config.alpha, 'target_modules': sorted(modules),
            'use_rslora': config.rslora, 'lora_dropout': config.dropout}
    metadata['lora_adapter_metadata'] = json.dumps(
        {f'transformer.{k}': v for k, v in peft.items()}, sort_keys=True)
  return tensors, metadata


def save_lora(trainer, state, path: str | os.PathLike, layout: str = 'diffusers',
              dtype='f32') -> Path:
  """Writes the trained adapter of `trainer` (a LoRA Trainer) at `state` to one .safetensors
  file in `layout` ('diffusers' or 'comfyui'); returns its path."""
  tensors, metadata = lora_tensors(trainer, state, layout, dtype)
  path = Path(path)
  _atomic_write(path, tensors, metadata)
  return path


def official_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
  """A DiT's parameters as the official single file names and lays them out (f32 or their
  storage dtype), keys under `model.diffusion_model.`."""
  plan = plan_from_table(model, OFFICIAL_TABLE)
  variables = {tuple(p): v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  out = {}
  for path, src in plan.items():
    value = np.asarray(jax.device_get(variables[path].get_value()))
    parts = [value[i] for i in range(value.shape[0])] if src.stack else [value]
    for key, part in zip(src.keys, parts):
      if src.reshape is not None:
        raise UsageError(f"cannot write {key}: reshaped parameters are not supported")
      if src.perm:
        part = np.transpose(part, np.argsort(src.perm))
      out[OFFICIAL_PREFIX + key] = np.ascontiguousarray(part)
  return out


def save_full(trainer, state, path: str | os.PathLike, layout: str = 'official', *,
              metadata: Mapping[str, str] | None = None, release: Mapping[str, str] | None = None,
              extra: Mapping[str, np.ndarray] | None = None) -> Path:
  """Writes the fine-tuned transformer of `trainer` at `state`.

  'official': one .safetensors file; `metadata` (the source file's, e.g. `open_safetensors(src)
    .metadata`, whose `config` names the transformer and VAE) is kept; `extra` tensors (the
    source's VAE, `vae.*`) may be written alongside.
  'orbax': a folder `path` with the manifest and a `transformer/` orbax checkpoint, as
    tools/convert.py writes (`release`: {'version', 'size', 'variant'} of the base model).
  Weights keep the model's storage dtypes."""
  if layout not in FULL_LAYOUTS:
    raise UsageError(f"full fine-tune layout {layout!r}; choose one of {', '.join(FULL_LAYOUTS)}")
  model = trainer.model_with(state)
  path = Path(path)
  if layout == 'official':
    tensors = {**dict(extra or {}), **official_tensors(model)}
    _atomic_write(path, tensors, dict(metadata or {}))
    return path
  if path.exists():
    raise UsageError(f"{path} exists; choose a new folder for the checkpoint")
  release = dict(release or {'version': 'unknown', 'size': 'unknown', 'variant': 'fine-tuned'})
  tmp = path.with_name(path.name + '.partial')
  orbax_io.write_model(tmp.resolve() / 'transformer', model)
  manifest = {'format': orbax_io.FORMAT, 'release': release,
              'components': {'transformer': {
                  'config': orbax_io.config_to_json(model.config),
                  'dtype': precision.name_of(np.dtype(
                      jax.tree.leaves(nnx.state(model))[0].dtype))}}}
  (tmp / orbax_io.MANIFEST).write_text(json.dumps(manifest, indent=2))
  os.replace(tmp, path)
  return path
