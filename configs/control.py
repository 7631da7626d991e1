"""IC-LoRA control: a control video (depth, pose or canny maps; for the detailer, the clip to
refine) guides the generation through its IC-LoRA.

  python -m ltx_jax.generate --config configs/control.py:ltxv-13b-0.9.7-distilled \
      --config.model.source=/models/ltxv \
      --config.loras='(("ltxv-097-ic-lora-depth-control-comfyui.safetensors", 1.0),)' \
      --config.control_video=depth.mp4 --config.prompt="A dancer spins in a sunlit studio"

The control video (8N+1 frames, any size: centre-cropped to the video's aspect and resized,
no blur or compression) is encoded by the VAE and appended as guiding tokens from
`--config.control_frame` (default 0; negative counts from the end) with
`--config.control_strength` (default 1: kept as encoded); the tokens are dropped before
decoding. The control LoRA is loaded with `--config.loras`. README "IC-LoRA control"
states the rules. Presets as in configs/t2v.py (the 0.9.7 control LoRAs and the 0.9.8
detailer are trained on the 13B models).
"""

from ltx_jax.cli import config as config_lib
from ltx_jax import presets


def get_config(preset: str = presets.DEFAULT):
  c = config_lib.base_config(preset or presets.DEFAULT)
  c.task = 'control'
  c.control_video = ''  # e.g. 'depth.mp4'
  return c
