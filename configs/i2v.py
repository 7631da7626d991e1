"""Image to video with LTX-Video: the image is the first frame.

  python -m ltx_jax.generate --config configs/i2v.py --config.image=first_frame.png \
      --config.prompt="The waves roll in as the camera pans right"
  python -m ltx_jax.generate --config configs/i2v.py:ltxv-13b-0.9.8-distilled \
      --config.image=first_frame.png --config.model.source=/models/ltxv

Presets as in configs/t2v.py. `--config.image=PATH` is the conditioning item 'PATH:0' (see
configs/keyframes.py for items at other frames): the official handling by default (crop to
the video's aspect, 3x3 blur, H.264 CRF-29 round trip, resize; `image_cond_noise_scale` 0.15),
`--config.condition_preprocessing=diffusers` for diffusers' (a Lanczos stretch).
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'i2v'
  return c
