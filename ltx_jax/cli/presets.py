"""Official sampling defaults per released checkpoint, as overrides of the base config.

Values follow Lightricks' configs (configs/ltxv-*.yaml, ltx_video/inference.py): timesteps on
the 0..1000 scale of `LTXPipeline(timesteps=...)`; text length 256 tokens, 30 fps, 1216x704,
121 frames and the official negative prompt unless a release says otherwise. ltx_jax runs one
pass at the requested size: the official multi-scale mode (a 2/3-size first pass, the latent
upscaler, a second pass) is not implemented, so `second_pass` values are not used.
"""

from __future__ import annotations

from ltx_jax.sampling import DISTILLED_0_9_8_FIRST_PASS

HUB_REPO = 'Lightricks/LTX-Video'
DEFAULT = 'ltxv-2b-0.9.8-distilled'
NEGATIVE = 'worst quality, inconsistent motion, blurry, jittery, distorted'
_DISTILLED_TIMESTEPS = tuple(round(1000 * t, 4) for t in DISTILLED_0_9_8_FIRST_PASS)

_COMMON = dict(height=704, width=1216, num_frames=121, frame_rate=30.0,
               max_sequence_length=256, negative_prompt=NEGATIVE, decode_timestep=0.05,
               decode_noise_scale=0.025, guidance_rescale=0.0)

# 2B dev 0.9.5 / 0.9.6: 40 steps, CFG 3, STG 1 on block 19 (attention values), rescale 0.7.
_DEV_2B = dict(num_inference_steps=40, timesteps=(), guidance_scale=3.0, stg_scale=1.0,
               stg_rescale=0.7, skip_block_list=(19,))
# 13B dev 0.9.7 / 0.9.8 first pass: 30 steps with per-interval CFG / STG schedules, CFG-star.
_DEV_13B = dict(num_inference_steps=30, timesteps=(), guidance_scale=1.0, stg_scale=0.0,
                guidance_timesteps=(1000.0, 996.0, 993.3, 985.0, 976.7, 900.8, 618.0),
                guidance_scale_schedule=(1.0, 1.0, 6.0, 8.0, 6.0, 1.0, 1.0),
                stg_scale_schedule=(0.0, 0.0, 4.0, 4.0, 4.0, 2.0, 1.0),
                stg_rescale_schedule=(1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0),
                skip_block_schedule=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,),
                                     (28,)),
                cfg_star_rescale=True)
# Distilled 0.9.7 / 0.9.8: a fixed 7-step schedule without guidance.
_DISTILLED = dict(timesteps=_DISTILLED_TIMESTEPS, num_inference_steps=len(_DISTILLED_TIMESTEPS),
                  guidance_scale=1.0, stg_scale=0.0)


def _preset(file: str, **kw) -> dict:
  return dict(_COMMON, model=dict(source=HUB_REPO, file=file), **kw)


PRESETS: dict[str, dict] = {
    # 0.9.0 / 0.9.1: the first inference script's defaults (704x480, 25 fps, 128 tokens).
    'ltxv-2b-0.9.0': _preset('ltx-video-2b-v0.9.safetensors', height=480, width=704,
                             frame_rate=25.0, max_sequence_length=128, num_inference_steps=40,
                             guidance_scale=3.0, decode_timestep=0.0, decode_noise_scale=0.0),
    'ltxv-2b-0.9.1': _preset('ltx-video-2b-v0.9.1.safetensors', height=480, width=704,
                             frame_rate=25.0, max_sequence_length=128, decode_timestep=0.025,
                             decode_noise_scale=0.0125, **_DEV_2B),
    'ltxv-2b-0.9.5': _preset('ltx-video-2b-v0.9.5.safetensors', **_DEV_2B),
    'ltxv-2b-0.9.6-dev': _preset('ltxv-2b-0.9.6-dev-04-25.safetensors', **_DEV_2B),
    'ltxv-2b-0.9.6-distilled': _preset('ltxv-2b-0.9.6-distilled-04-25.safetensors',
                                       num_inference_steps=8, timesteps=(), guidance_scale=1.0,
                                       stg_scale=0.0),
    'ltxv-13b-0.9.7-dev': _preset('ltxv-13b-0.9.7-dev.safetensors', **_DEV_13B),
    'ltxv-13b-0.9.7-distilled': _preset('ltxv-13b-0.9.7-distilled.safetensors', **_DISTILLED),
    'ltxv-13b-0.9.8-dev': _preset('ltxv-13b-0.9.8-dev.safetensors', **_DEV_13B),
    'ltxv-13b-0.9.8-distilled': _preset('ltxv-13b-0.9.8-distilled.safetensors', **_DISTILLED),
    'ltxv-2b-0.9.8-distilled': _preset('ltxv-2b-0.9.8-distilled.safetensors', **_DISTILLED),
}


def names() -> list[str]:
  return sorted(PRESETS)


def get(name: str) -> dict:
  """The overrides of one preset; a ValueError naming the known presets otherwise."""
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(names())}")
  return PRESETS[name]
