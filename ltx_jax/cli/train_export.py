"""Export at the end of a run (or from any checkpoint): what diffusers, ComfyUI and ltx_jax load.

LoRA runs write <output_dir>/export/:
  pytorch_lora_weights.safetensors   diffusers / PEFT layout: `transformer.<module>.lora_A.weight`
                                     [r, in], `.lora_B.weight` [out, r], alpha in the
                                     `lora_adapter_metadata` JSON (diffusers' `load_lora_weights`
                                     on the folder, `python -m ltx_jax.generate --config.loras=`)
  comfyui_lora.safetensors           ComfyUI / official trainer layout:
                                     `diffusion_model.<official module>.lora_A / lora_B` (and
                                     `.alpha` scalars when alpha != r)
Full fine-tunes write:
  transformer.safetensors            the official single-file layout of the transformer
                                     (`model.diffusion_model.*`, the base file's metadata kept)
  checkpoint/                        the converted layout (tools/convert.py: manifest +
                                     transformer/ orbax checkpoint)
The tensors come from ltx_jax.training.export. Beside them: training.json (the run's facts) and
README.md (a short model card); the safetensors files also carry the facts as `ltx_jax_training`
JSON metadata. Files are written under temporary names and renamed once complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax

from ltx_jax.cli import train_card
from ltx_jax.training import export as training_export

DIFFUSERS_FILE = 'pytorch_lora_weights.safetensors'
COMFYUI_FILE = 'comfyui_lora.safetensors'
FULL_FILE = 'transformer.safetensors'
FULL_FOLDER = 'checkpoint'


def _gathered(state):
  """`state` with its trainable parameters replicated on every device, so each process can
  read them (a multi-process run's arrays span processes); every process calls it."""
  from ltx_jax import sharding
  return state._replace(params=jax.tree.map(sharding.gather, state.params))


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


def export(c, trainer, state, step: int, folder: Path, *, base: dict, release: str,
           dataset_hash: str | None, samples: list[Path], main: bool = True,
           base_file: Path | None = None, release_facts: dict | None = None) -> dict[str, str]:
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
  state = _gathered(state)
  if not main:
    return {}
  folder.mkdir(parents=True, exist_ok=True)
  if sel.mode == 'lora':
    for layout, name, what in (
        ('diffusers', DIFFUSERS_FILE, 'diffusers / PEFT layout (load_lora_weights on this '
                                      'folder; ltx_jax --config.loras)'),
        ('comfyui', COMFYUI_FILE, 'ComfyUI / official trainer layout')):
      if layout in formats:
        tensors, metadata = training_export.lora_tensors(trainer, state, layout)
        written[name] = _write(folder / name, tensors, dict(metadata, **stamp))
        described[name] = what
  else:
    metadata = dict(_base_metadata(base_file), **stamp)
    written[FULL_FILE] = training_export.save_full(trainer, state, folder / FULL_FILE,
                                                   'official', metadata=metadata)
    described[FULL_FILE] = 'official single-file layout of the fine-tuned transformer'
    orbax = folder / FULL_FOLDER
    if orbax.exists():  # a re-export replaces the earlier one
      shutil.rmtree(orbax)
    written[FULL_FOLDER] = training_export.save_full(trainer, state, orbax, 'orbax',
                                                     release=release_facts)
    described[FULL_FOLDER] = 'converted layout (tools/convert.py, orbax; --config.model.source)'
  (folder / 'training.json').write_text(json.dumps(meta, indent=1, default=str) + '\n')
  (folder / 'README.md').write_text(train_card.model_card(
      meta, described, list(c.validation.prompts),
      [os.path.relpath(s, folder) for s in samples]))
  return {k: str(v) for k, v in written.items()}


def _base_metadata(path: Path | None) -> dict:
  """The base single file's metadata (its `config` names the transformer), when the model was
  loaded from one."""
  if path is None or not str(path).endswith('.safetensors'):
    return {}
  from ltx_jax.weights.safetensors_io import open_safetensors
  return dict(open_safetensors(path).metadata)
