"""Text to video with LTX-Video.

  python -m ltx_jax.generate --config configs/t2v.py --config.prompt="A red fox in the snow"
  python -m ltx_jax.generate --config configs/t2v.py:ltxv-13b-0.9.8-dev \
      --config.model.source=/models/ltxv --config.num_frames=121

The part after ':' names a release preset (official sampling defaults and checkpoint file):
ltxv-2b-0.9.0, ltxv-2b-0.9.1, ltxv-2b-0.9.5, ltxv-2b-0.9.6-dev, ltxv-2b-0.9.6-distilled (one
pass); ltxv-13b-0.9.7-dev, ltxv-13b-0.9.7-distilled, ltxv-13b-0.9.8-dev, ltxv-13b-0.9.8-distilled,
ltxv-2b-0.9.8-distilled (the default; fetched from the hub when not on disk), each also as -fp8
(multi-scale: two passes with the spatial latent upscaler; --config.multi_scale=False runs one
pass, --config.model.upsampler=PATH names the upscaler).
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  return config_lib.base_config(preset or presets.DEFAULT)
