"""Image to video with LTX-Video: the image is the first frame.

  python -m ltx_jax.generate --config configs/i2v.py --config.image=first_frame.png \
      --config.prompt="The waves roll in as the camera pans right"
  python -m ltx_jax.generate --config configs/i2v.py:ltxv-13b-0.9.8-distilled \
      --config.image=first_frame.png --config.model.source=/models/ltxv

Presets as in configs/t2v.py. The image is scaled to cover height x width and centre-cropped.
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'i2v'
  return c
