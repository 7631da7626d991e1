"""Export at the end of a run (or from any checkpoint): what diffusers, ComfyUI and ltx_jax load.

LoRA runs write <output_dir>/export/:
  pytorch_lora_weights.safetensors   diffusers / PEFT layout: `transformer.<module>.lora_A.weight`
                                     [r, in], `.lora_B.weight` [out, r], alpha in the
                                     `lora_adapter_metadata` JSON (diffusers' `load_lora_weights`
                                     on the folder, `python -m ltx_jax.generate --config.loras=`)
  comfyui_lora.safetensors           ComfyUI / official trainer layout:
                                     `diffusion_model.<official module>.lora_A / lora_B` with
                                     alpha / r folded into lora_B (ComfyUI takes alpha = r)
Full fine-tunes write:
  transformer.safetensors            the official single-file layout of the transformer
                                     (`model.diffusion_model.*`, the base file's config metadata)
Beside them: training.json (the run's facts) and README.md (a short model card). Each file also
carries the facts as `ltx_jax_training` JSON metadata. Files are written under temporary names
and renamed once complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ltx_jax.cli import train_card

DIFFUSERS_FILE = 'pytorch_lora_weights.safetensors'
COMFYUI_FILE = 'comfyui_lora.safetensors'
FULL_FILE = 'transformer.safetensors'


def _host(x) -> np.ndarray:
  from ltx_jax import sharding
  return np.asarray(jax.device_get(sharding.gather(x)), np.float32)


def lora_tensors(trainer, state) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(diffusers tensors, ComfyUI tensors) of the trained adapter: one lora_A / lora_B pair per
  selected layer slice (stacked blocks give one module per block index)."""
  from flax import nnx
  sel = trainer.selection
  flat = {tuple(p): v for p, v in nnx.to_flat_state(state.params)}
  factor = sel.lora.factor
  diffusers, comfy = {}, {}
  cache = {}
  for t in sel.targets:
    for role in ('a', 'b'):
      key = t.path + ('lora', role)
      if key not in cache:
        value = flat[key]
        cache[key] = _host(value.get_value() if hasattr(value, 'get_value') else value)
    a = cache[t.path + ('lora', 'a')]  # [(L,) in, r]
    b = cache[t.path + ('lora', 'b')]  # [(L,) r, out]
    if t.index is not None:
      a, b = a[t.index], b[t.index]
    lora_a = np.ascontiguousarray(a.T)  # [r, in]
    lora_b = np.ascontiguousarray(b.T)  # [out, r]
    diffusers[f"transformer.{t.diffusers}.lora_A.weight"] = lora_a
    diffusers[f"transformer.{t.diffusers}.lora_B.weight"] = lora_b
    comfy[f"diffusion_model.{t.official}.lora_A.weight"] = lora_a
    comfy[f"diffusion_model.{t.official}.lora_B.weight"] = lora_b * np.float32(factor)
  return diffusers, comfy


def peft_metadata(c, sel) -> dict:
  """The adapter's PEFT config as diffusers' pipeline saver writes it (`transformer.` keys)."""
  modules = sorted({t.diffusers for t in sel.targets})
  return {'transformer.r': int(c.lora.rank), 'transformer.lora_alpha': float(c.lora.alpha),
          'transformer.target_modules': modules, 'transformer.lora_dropout': float(
              c.lora.dropout), 'transformer.use_rslora': False,
          'transformer.init_lora_weights': True}


def _write(path: Path, tensors: dict, metadata: dict) -> Path:
  from ltx_jax.weights.safetensors_io import write_safetensors
  tmp = path.with_name(f".{path.name}.partial")
  try:
    write_safetensors(tmp, tensors, metadata)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


def full_tensors(trainer, state) -> dict[str, np.ndarray]:
  """Every transformer weight (trained ones from `state`) in the official file's names and
  PyTorch layouts, cast to the base model's storage dtype."""
  from ltx_jax.models.transformer.loading import OFFICIAL_PREFIX, OFFICIAL_TABLE
  from ltx_jax.weights.loader import plan_from_table
  model = trainer.model_with(state)
  plan = plan_from_table(model, OFFICIAL_TABLE)
  from flax import nnx
  out = {}
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Variable) or tuple(path) not in plan:
      continue
    src = plan[tuple(path)]
    value = _host(var.get_value()).astype(var.get_value().dtype)
    slices = value.reshape((len(src.keys),) + value.shape[src.stack:])
    inverse = tuple(np.argsort(src.perm)) if src.perm else None
    for key, s in zip(src.keys, slices):
      if src.reshape is not None:
        raise NotImplementedError(f"export of reshaped parameter {key}")
      out[OFFICIAL_PREFIX + key] = np.ascontiguousarray(
          np.transpose(s, inverse) if inverse else s)
  return out


def export(c, trainer, state, step: int, folder: Path, *, base: dict, release: str,
           dataset_hash: str | None, samples: list[Path], main: bool = True,
           base_file: Path | None = None) -> dict[str, str]:
  """Writes the run's exports into `folder`; returns {file name: path}. Every process calls it
  (gathering the weights is collective), process 0 (`main`) writes."""
  folder = Path(folder)
  base_facts = {'release': release,
                'files': [{'name': Path(f['path']).name, 'sha256': f.get('sha256')}
                          for f in base.get('files', [])]}
  sel = trainer.selection
  meta = train_card.training_metadata(
      c, step=step, base=base_facts, dataset_hash=dataset_hash,
      targets=[t.diffusers for t in sel.targets] if sel.mode == 'lora' else None)
  stamp = {'ltx_jax_training': json.dumps(meta, default=str)}
  written, described = {}, {}
  formats = (c.export.formats,) if isinstance(c.export.formats, str) else tuple(c.export.formats)
  if sel.mode == 'lora':
    diffusers, comfy = lora_tensors(trainer, state)
  else:
    tensors = full_tensors(trainer, state)
  if not main:
    return {}
  folder.mkdir(parents=True, exist_ok=True)
  if sel.mode == 'lora':
    if 'diffusers' in formats:
      written[DIFFUSERS_FILE] = _write(folder / DIFFUSERS_FILE, diffusers, dict(
          stamp, lora_adapter_metadata=json.dumps(peft_metadata(c, sel)), format='pt'))
      described[DIFFUSERS_FILE] = ('diffusers / PEFT layout (load_lora_weights on this folder; '
                                   'ltx_jax --config.loras)')
    if 'comfyui' in formats:
      written[COMFYUI_FILE] = _write(folder / COMFYUI_FILE, comfy, dict(stamp, format='pt'))
      described[COMFYUI_FILE] = 'ComfyUI / official trainer layout (alpha folded into lora_B)'
  else:
    config = _base_config(base_file)
    written[FULL_FILE] = _write(folder / FULL_FILE, tensors,
                                dict(stamp, **({'config': config} if config else {})))
    described[FULL_FILE] = 'official single-file layout of the fine-tuned transformer'
  (folder / 'training.json').write_text(json.dumps(meta, indent=1, default=str) + '\n')
  (folder / 'README.md').write_text(train_card.model_card(
      meta, described, list(c.validation.prompts),
      [os.path.relpath(s, folder) for s in samples]))
  return {k: str(v) for k, v in written.items()}


def _base_config(path: Path | None) -> str | None:
  """The base file's `config` metadata (the official single file keeps it), when the model was
  loaded from one."""
  if path is None or not str(path).endswith('.safetensors'):
    return None
  from ltx_jax.weights.safetensors_io import open_safetensors
  return open_safetensors(path).metadata.get('config')


def describe(written: dict[str, Any]) -> str:
  return ', '.join(sorted(written)) or 'nothing'
