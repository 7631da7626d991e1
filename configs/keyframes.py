"""Keyframe interpolation: images pinned at chosen frames (first and last by default).

  python -m ltx_jax.generate --config configs/keyframes.py \
      --config.conditions='("first.png:0", "last.png:120")' \
      --config.prompt="A paper boat drifts down a rain-soaked street"
  python -m ltx_jax.generate --config configs/keyframes.py \
      --config.conditions='("a.png:0", "b.png:64:0.8", "c.png:120")'

Each item is 'PATH:FRAME[:STRENGTH]' (strength 1: kept as given; below 1: a softer pull).
The frame must lie inside the video (0..num_frames-1, 120 for the default 121 frames); items
after frame 0 become extra tokens at their own time (the official pipeline's conditioning
items). Presets as in configs/t2v.py.
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'keyframes'
  c.conditions = ()  # e.g. ('first.png:0', 'last.png:120')
  return c
