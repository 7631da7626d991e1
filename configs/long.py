"""A long video in temporal sliding windows (LTXLongVideoPipeline), one prompt per window.

  python -m ltx_jax.generate --config configs/long.py \\
      --config.prompt="a chimpanzee walks in the jungle | the chimpanzee eats a banana"
  python -m ltx_jax.generate --config configs/long.py:ltxv-13b-0.9.8-distilled \\
      --config.image=first_frame.png --config.long_video.prompt_file=windows.txt \\
      --config.num_frames=481 --config.long_video.temporal_tile_size=120

Windows of long_video.temporal_tile_size frames overlap by long_video.temporal_overlap; each
window runs the whole schedule (config.timesteps or num_inference_steps, or
long_video.sigmas). Window prompts: config.prompt split on '|', or long_video.prompt_file (one
per line); the last prompt continues. config.image (optional) is the first frame. Peak device
memory is that of one window, whatever num_frames.
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.long_video.enabled = True
  c.multi_scale = False  # one pass per window, with the preset's single-pass schedule
  c.height = 512
  c.width = 704
  c.num_frames = 257
  c.frame_rate = 25.0
  c.prompt = ('A red fox trots through fresh snow in a quiet birch forest at dawn | '
              'the fox stops and looks at the camera, soft light')
  return c
