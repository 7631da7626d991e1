"""Plumbing check of the whole training command with the tiny random model. NOT a model.

  python -m ltx_jax.train --config configs/train/smoke.py
  python -m ltx_jax.train --config configs/train/smoke.py:full   # full fine-tune
  python -m ltx_jax.train --config configs/train/smoke.py:ic_lora   # IC-LoRA, canny references

Makes its own clip set (random moving shapes, preprocessed with the smoke model's VAE and T5 into
<output_dir>/dataset), trains a rank-4 LoRA (or every weight) for a few steps, renders the
validation prompts at step 0 and at the end, keeps checkpoints and exports the adapter. Under a
minute on a laptop CPU, no download. Everything else (keys, checks, outputs, resume) is as in
configs/train/ltxv.py.
"""

from ltx_jax.cli import train_config
from ltx_jax.errors import UsageError


def get_config(mode: str = 'lora'):
  c = train_config.base_config('')
  c.recipe = 'smoke'
  c.model.source = train_config.SMOKE
  if mode not in ('', 'lora', 'full', 'ic_lora'):
    raise UsageError(f"configs/train/smoke.py:{mode}: unknown variant; use lora, full or "
                     "ic_lora")
  c.model.training_mode = 'full' if mode == 'full' else 'lora'
  if mode == 'ic_lora':  # reference-video training; the clip set gets canny references
    c.conditioning.mode = 'reference_video'
  c.lora.rank, c.lora.alpha = 4, 4
  c.conditioning.first_frame_conditioning_p = 0.1
  c.optimization.learning_rate = 1e-3
  c.optimization.steps = 8
  c.optimization.batch_size = 2
  c.acceleration.mixed_precision_mode = 'no'
  c.data.smoke_clips = 4
  c.data.num_dataloader_workers = 0
  c.validation.prompts = ('a cat sits on the mat', 'waves crashing on rocks at sunset')
  c.validation.video_dims = (64, 64, 9)
  c.validation.frame_rate = 8.0
  c.validation.inference_steps = 3
  c.validation.interval = 4
  c.validation.guidance_scale = 3.0
  c.checkpoints.interval = 4
  c.checkpoints.keep_last_n = 2
  c.output_dir = 'outputs/train_smoke'
  return c
