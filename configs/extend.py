"""Video extension: a clip placed at the start (extend forward) or at the end (backward).

  python -m ltx_jax.generate --config configs/extend.py \
      --config.conditions='("clip.mp4:0",)' --config.prompt="The car keeps driving into the fog"
  python -m ltx_jax.generate --config configs/extend.py \
      --config.conditions='("clip.mp4:72",)'   # a 49-frame clip ending at frame 120

The clip must have 8N+1 frames (9, 17, 25, ..., trim it otherwise) and fit inside the video;
after frame 0 it must start on a multiple of 8. Its frames are kept (strength 1, or
'clip.mp4:0:0.9' for a softer pull) and the rest is generated around them. Videos are read by
suffix (.mp4, .mov, .mkv, .avi, .webm, .gif). Presets as in configs/t2v.py.
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'extend'
  c.conditions = ()  # e.g. ('clip.mp4:0',)
  return c
