"""Official sampling defaults per released checkpoint, as `LTXPipeline.__call__` arguments.

  pipe = LTXPipeline.from_pretrained(presets.HUB_REPO, file=presets.get(name).file)
  out = pipe(**presets.sampling(name, num_frames=97), prompt='...')

Values follow Lightricks' configs (configs/ltxv-*.yaml, ltx_video/inference.py): timesteps on the
0..1000 scale; text length 256 tokens, 30 fps, 1216x704, 121 frames and the official negative
prompt unless a release says otherwise. ltx_jax runs one pass at the requested size: the
official multi-scale mode (a 2/3-size first pass, the latent upscaler, a second pass) is not
implemented, so these are the first pass's values. The command line's configs
(ltx_jax/cli/config.py) and the README's preset table (`markdown_table`) come from this data.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, Mapping

from ltx_jax.errors import UsageError
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import DISTILLED_0_9_8_FIRST_PASS

__all__ = ['DEFAULT', 'HUB_REPO', 'NEGATIVE', 'PRESETS', 'Preset', 'get', 'markdown_table',
           'names', 'sampling']

HUB_REPO = 'Lightricks/LTX-Video'
DEFAULT = 'ltxv-2b-0.9.8-distilled'
NEGATIVE = 'worst quality, inconsistent motion, blurry, jittery, distorted'


@dataclasses.dataclass(frozen=True)
class Preset:
  """One release: its official single file in `HUB_REPO` and its sampling arguments."""
  name: str
  file: str
  sampling: Mapping[str, Any]  # LTXPipeline.__call__ keyword arguments (read-only)


_DISTILLED_TIMESTEPS = tuple(round(1000 * t, 4) for t in DISTILLED_0_9_8_FIRST_PASS)

_COMMON = dict(height=704, width=1216, num_frames=121, frame_rate=30.0, max_sequence_length=256,
               negative_prompt=NEGATIVE, decode_timestep=0.05, decode_noise_scale=0.025,
               guidance_scale=1.0, guidance_rescale=0.0, stg_scale=0.0, stg_rescale=0.7,
               skip_block_list=(), skip_layer_strategy='attention_values',
               cfg_star_rescale=False)
# The first inference script's defaults (0.9.0 / 0.9.1): 704x480, 25 fps, 128 tokens.
_EARLY = dict(height=480, width=704, frame_rate=25.0, max_sequence_length=128)
# 2B dev 0.9.1 - 0.9.6: 40 steps, CFG 3, STG 1 on block 19 (attention values), rescale 0.7.
_DEV_2B = dict(num_inference_steps=40, guidance_scale=3.0, stg_scale=1.0, stg_rescale=0.7,
               skip_block_list=(19,))
# 13B dev 0.9.7 / 0.9.8 first pass: 30 steps with per-interval CFG / STG schedules, CFG-star.
_DEV_13B = dict(num_inference_steps=30,
                guidance_timesteps=(1000.0, 996.0, 993.3, 985.0, 976.7, 900.8, 618.0),
                guidance_scale=(1.0, 1.0, 6.0, 8.0, 6.0, 1.0, 1.0),
                stg_scale=(0.0, 0.0, 4.0, 4.0, 4.0, 2.0, 1.0),
                stg_rescale=(1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0),
                skip_block_list=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),
                cfg_star_rescale=True)
# Distilled 0.9.7 / 0.9.8: a fixed 7-step schedule without guidance.
_DISTILLED = dict(timesteps=_DISTILLED_TIMESTEPS)


def _preset(name: str, file: str, **values) -> Preset:
  return Preset(name, file, types.MappingProxyType(dict(_COMMON, **values)))


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset('ltxv-2b-0.9.0', 'ltx-video-2b-v0.9.safetensors', **_EARLY, num_inference_steps=40,
            guidance_scale=3.0, decode_timestep=0.0, decode_noise_scale=0.0),
    _preset('ltxv-2b-0.9.1', 'ltx-video-2b-v0.9.1.safetensors', **_EARLY, **_DEV_2B,
            decode_timestep=0.025, decode_noise_scale=0.0125),
    _preset('ltxv-2b-0.9.5', 'ltx-video-2b-v0.9.5.safetensors', **_DEV_2B),
    _preset('ltxv-2b-0.9.6-dev', 'ltxv-2b-0.9.6-dev-04-25.safetensors', **_DEV_2B),
    _preset('ltxv-2b-0.9.6-distilled', 'ltxv-2b-0.9.6-distilled-04-25.safetensors',
            num_inference_steps=8),
    _preset('ltxv-13b-0.9.7-dev', 'ltxv-13b-0.9.7-dev.safetensors', **_DEV_13B),
    _preset('ltxv-13b-0.9.7-distilled', 'ltxv-13b-0.9.7-distilled.safetensors', **_DISTILLED),
    _preset('ltxv-13b-0.9.8-dev', 'ltxv-13b-0.9.8-dev.safetensors', **_DEV_13B),
    _preset('ltxv-13b-0.9.8-distilled', 'ltxv-13b-0.9.8-distilled.safetensors', **_DISTILLED),
    _preset('ltxv-2b-0.9.8-distilled', 'ltxv-2b-0.9.8-distilled.safetensors', **_DISTILLED),
)}


def names() -> list[str]:
  return sorted(PRESETS)


def get(name: str) -> Preset:
  """The preset of release `name`; a UsageError naming the known presets otherwise."""
  if name not in PRESETS:
    raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(names())}")
  return PRESETS[name]


_CALL_ARGS = frozenset(inspect.signature(LTXPipeline.__call__).parameters) - {'self'}


def sampling(name: str, **overrides) -> dict[str, Any]:
  """`LTXPipeline.__call__` keyword arguments of release `name` (size, frames, frame rate, text
  length, negative prompt, schedule, guidance, decode noise), with `overrides` on top, e.g.
  `pipe(**sampling('ltxv-2b-0.9.8-distilled', num_frames=97), prompt='...')`. Tuples become
  lists (as the pipeline documents them)."""
  bad = sorted(set(overrides) - _CALL_ARGS)
  if bad:
    raise UsageError(f"sampling({name!r}, ...): {', '.join(bad)} are no LTXPipeline.__call__ "
                     "arguments")
  out = dict(get(name).sampling, **overrides)
  return {k: _as_lists(v) for k, v in out.items()}


def _as_lists(v):
  return [_as_lists(x) for x in v] if isinstance(v, tuple) else v


# -------------------------------------------------------------------------- the README table


def _num(v: float) -> str:
  return f"{v:g}"


def _steps(s: Mapping[str, Any]) -> str:
  if 'timesteps' in s:
    return ', '.join(_num(t) for t in s['timesteps'])
  return f"{s['num_inference_steps']} steps"


def _span(v) -> str:
  lo, hi = min(v), max(v)
  return _num(lo) if lo == hi else f"{_num(lo)}-{_num(hi)}"


def _guidance(s: Mapping[str, Any]) -> str:
  if 'guidance_timesteps' in s:
    text = f"per-interval CFG {_span(s['guidance_scale'])} / STG {_span(s['stg_scale'])}"
    return text + (', CFG-star' if s['cfg_star_rescale'] else '')
  parts = []
  if s['guidance_scale'] > 1:
    parts.append(f"CFG {_num(s['guidance_scale'])}")
  if s['stg_scale'] > 0:
    blocks = ', '.join(map(str, s['skip_block_list']))
    parts.append(f"STG {_num(s['stg_scale'])} (block {blocks}), rescale "
                 f"{_num(s['stg_rescale'])}")
  if s['cfg_star_rescale']:
    parts.append('CFG-star')
  return ', '.join(parts) or 'none'


def markdown_table() -> str:
  """The README's preset table (between its `<!-- presets:begin -->` / `end` markers)."""
  lines = [f"| preset (`configs/t2v.py:NAME`) | file in `{HUB_REPO}` | sampling | guidance | "
           "decode t / noise | size, frames, fps, tokens |",
           '|---|---|---|---|---|---|']
  for p in PRESETS.values():
    s = p.sampling
    name = f"`{p.name}`" + (' (default)' if p.name == DEFAULT else '')
    lines.append(
        f"| {name} | {p.file} | {_steps(s)} | {_guidance(s)} | {_num(s['decode_timestep'])} / "
        f"{_num(s['decode_noise_scale'])} | {s['width']}x{s['height']}, {s['num_frames']}, "
        f"{_num(s['frame_rate'])}, {s['max_sequence_length']} |")
  return '\n'.join(lines) + '\n'
