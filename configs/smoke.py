"""Plumbing check: the whole CLI path with a tiny random-weight model. NOT a model.

  python -m ltx_jax.generate --config configs/smoke.py
  python -m ltx_jax.generate --config configs/smoke.py:i2v --config.image=frame.png
  python -m ltx_jax.generate --config configs/smoke.py:multi   # multi-scale, random upsampler

Runs in well under a minute on a laptop CPU with no weights on disk (ltx_jax.smoke builds the
model from random numbers and trains a toy tokenizer in memory). The videos are coloured noise;
they prove that prompts, the denoising loop, the decoder and the video files work, nothing
about quality. Everything else (keys, checks, outputs, sidecar) is as in configs/t2v.py.
"""

from ltx_jax.cli import config as config_lib


def get_config(task: str = 't2v'):
  c = config_lib.base_config(preset='')
  c.task = 't2v' if task == 'multi' else task or 't2v'
  c.preset = 'smoke'
  c.prompt = 'a cat sits on the mat while a dog runs in the park'
  c.negative_prompt = 'worst quality, blurry'
  c.seeds = (0,)
  c.output_dir = 'outputs/smoke'
  c.overwrite = True  # a check to re-run at will; real configs never overwrite by default
  c.model.source = config_lib.SMOKE
  c.model.dtype = 'float32'
  c.model.hash_files = False
  c.height, c.width, c.num_frames, c.frame_rate = 64, 96, 9, 8.0
  c.num_inference_steps = 4
  c.guidance_scale = 3.0  # exercises the classifier-free guidance path
  c.decode_timestep, c.decode_noise_scale = 0.05, 0.025
  c.max_sequence_length = 32
  if task == 'multi':  # the two-pass recipe: 64x96 with CFG, upsampled, 128x192 re-noised
    c.height, c.width = 128, 192
    c.multi_scale = True
    c.downscale_factor = 0.5
    config_lib.override(c, {'first_pass': dict(num_inference_steps=4, guidance_scale=3.0),
                            'second_pass': dict(timesteps=(700.0, 300.0), guidance_scale=1.0)})
  return c
