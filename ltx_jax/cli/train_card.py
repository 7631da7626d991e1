"""What an exported adapter or fine-tune says about itself: the metadata stamped into its files
and a short model card (README.md beside them)."""

from __future__ import annotations

import datetime
import json
from typing import Any


def training_metadata(c, *, step: int, base: dict, dataset_hash: str | None,
                      targets: list[str] | None) -> dict[str, Any]:
  """The facts of a training run, as JSON-able data: base model (release, files with sha256),
  training mode, LoRA rank / alpha / targets, steps, learning rate, batch size, dataset index
  hash, ltx_jax version."""
  import ltx_jax
  o = c.optimization
  meta = {
      'base_model': base,
      'training_mode': c.model.training_mode,
      'steps': int(step),
      'learning_rate': o.learning_rate,
      'scheduler': o.scheduler_type,
      'batch_size': o.batch_size,
      'gradient_accumulation_steps': o.gradient_accumulation_steps,
      'timestep_sampling': c.flow_matching.timestep_sampling_mode,
      'conditioning': c.conditioning.mode,
      'first_frame_conditioning_p': c.conditioning.first_frame_conditioning_p,
      'dataset_index_sha256': dataset_hash,
      'seed': c.seed,
      'recipe': c.recipe,
      'ltx_jax_version': ltx_jax.__version__,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
  if c.model.training_mode == 'lora':
    meta['lora'] = {'rank': c.lora.rank, 'alpha': c.lora.alpha,
                    'target_modules': list(c.lora.target_modules),
                    'matched_modules': len(targets or ())}
  return meta


def model_card(meta: dict, files: dict[str, str], prompts: list[str], samples: list[str]) -> str:
  """README.md of an export: what was trained on what, and how to use each file."""
  base = meta['base_model']
  lines = [f"# LTX-Video {meta['training_mode'].upper()} fine-tune ({meta['recipe'] or 'custom'})",
           '',
           f"Trained with ltx_jax {meta['ltx_jax_version']} on {meta['created']}.", '',
           '## Training', '',
           f"- Base model: {base.get('release')} ({', '.join(f['name'] for f in base.get('files', [])) or 'random weights'})",
           f"- Mode: {meta['training_mode']}"]
  if 'lora' in meta:
    lo = meta['lora']
    lines.append(f"- LoRA rank {lo['rank']}, alpha {lo['alpha']}, targets "
                 f"{', '.join(lo['target_modules'])}")
  lines += [f"- Steps: {meta['steps']}, learning rate {meta['learning_rate']} ({meta['scheduler']}), "
            f"batch size {meta['batch_size']} x {meta['gradient_accumulation_steps']} accumulated",
            f"- Timestep sampling: {meta['timestep_sampling']}; conditioning: {meta['conditioning']} "
            f"(first frame p={meta['first_frame_conditioning_p']})",
            f"- Dataset index sha256: {meta['dataset_index_sha256']}", '',
            '## Files', '']
  lines += [f"- `{name}`: {what}" for name, what in files.items()]
  lines += ['', '## Use', '',
            '```',
            'python -m ltx_jax.generate --config configs/t2v.py:PRESET '
            '--config.loras=PATH_TO_ADAPTER',
            '```', '',
            'diffusers: `pipe.load_lora_weights(FOLDER)` on an LTX pipeline of the base model. '
            'ComfyUI: copy the ComfyUI file to `models/loras`.']
  if prompts:
    lines += ['', '## Validation prompts', ''] + [f"- {p}" for p in prompts]
  if samples:
    lines += ['', '## Samples (last validation)', ''] + [f"- `{s}`" for s in samples]
  lines += ['', '## Metadata', '', '```json', json.dumps(meta, indent=1, default=str), '```', '']
  return '\n'.join(lines)
