"""Video to video: a clip re-rendered from part-way down the schedule (diffusers'
LTXConditionPipeline `video=` with `denoise_strength`).

  python -m ltx_jax.generate --config configs/v2v.py --config.input_video=clip.mp4 \
      --config.denoise_strength=0.6 --config.prompt="The same street, now at night"

The clip must have at least num_frames frames (its first num_frames are used; 8N+1). It is
encoded by the VAE, noised to the schedule's level at 1 - denoise_strength, and the last
denoise_strength share of the steps runs from there (1.0: the clip is ignored). It runs one
pass at the full size (multi_scale=False: the multi-scale recipe has no video-to-video input),
with the preset's first-pass schedule. Presets as in configs/t2v.py.
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'v2v'
  c.multi_scale = False  # one pass at the full size, the preset's first-pass values
  c.input_video = ''  # e.g. 'clip.mp4'
  c.denoise_strength = 0.6
  return c
