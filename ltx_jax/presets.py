"""Official sampling defaults per released checkpoint, as pipeline arguments.

  pipe = LTXPipeline.from_pretrained(presets.HUB_REPO, file=presets.get(name).file)
  out = pipe(**presets.sampling(name, num_frames=97), prompt='...')          # one pass
  multi = LTXMultiScalePipeline(pipe, load_latent_upsampler(presets.get(name).upsampler))
  out = multi(**presets.multi_scale(name, num_frames=97), prompt='...')     # official recipe

Values follow Lightricks' configs (configs/ltxv-*.yaml at the official repository's last commit,
and the 0.9.7 files as they were before their removal; ltx_video/inference.py for what the yaml
files leave out): timesteps on the 0..1000 scale, `stg_rescale` for the yaml's
`rescaling_scale`; text length 256 tokens, 30 fps, 1216x704, 121 frames and the official
negative prompt unless a release says otherwise. Every 0.9.7 / 0.9.8 config is multi-scale
(`multi_scale`: a 2/3-size first pass, the spatial upscaler `upsampler`, a second pass);
`sampling` is then the single-pass mode at the full size: a dev release's first pass run to the
end, a distilled release's `DISTILLED_SINGLE_PASS` (diffusers' documented single distilled pass,
ending at timestep 0.03; the first pass alone stops at 725). A yaml
`skip_block_list: [42]` with STG 0 perturbs nothing and is left out. The command line's configs
(ltx_jax/cli/config.py) and the README's preset table (`markdown_table`) come from this data.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, Mapping

from ltx_jax.errors import UsageError
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import DISTILLED_0_9_8_FIRST_PASS, DISTILLED_0_9_8_SECOND_PASS

__all__ = ['DEFAULT', 'DISTILLED_SINGLE_PASS', 'HUB_REPO', 'NEGATIVE', 'PASS_KEYS', 'PRESETS', 'Preset', 'get',
           'markdown_table', 'multi_scale', 'names', 'sampling']

HUB_REPO = 'Lightricks/LTX-Video'
DEFAULT = 'ltxv-2b-0.9.8-distilled'
NEGATIVE = 'worst quality, inconsistent motion, blurry, jittery, distorted'
# The keys a multi-scale pass sets for itself (schedule, guidance, the second pass's tone map).
PASS_KEYS = frozenset({'num_inference_steps', 'timesteps', 'skip_initial_inference_steps',
                       'skip_final_inference_steps', 'guidance_scale', 'stg_scale',
                       'stg_rescale', 'guidance_timesteps', 'skip_block_list',
                       'cfg_star_rescale', 'tone_map_compression_ratio'})


@dataclasses.dataclass(frozen=True)
class Preset:
  """One release: its official single file in `HUB_REPO` and its sampling arguments.

  sampling: `LTXPipeline.__call__` keyword arguments of one full-size pass (read-only).
  multi_scale: for the multi-scale releases, `LTXMultiScalePipeline.__call__`'s
    downscale_factor, first_pass and second_pass (read-only); the common arguments are
    `sampling` without `PASS_KEYS`. None: the official config is single-pass.
  upsampler: the spatial upscaler file in `HUB_REPO` the multi-scale recipe uses.
  """
  name: str
  file: str
  sampling: Mapping[str, Any]
  multi_scale: Mapping[str, Any] | None = None
  upsampler: str | None = None


_DISTILLED_TIMESTEPS = tuple(round(1000 * t, 4) for t in DISTILLED_0_9_8_FIRST_PASS)
_SECOND_TIMESTEPS = tuple(round(1000 * t, 4) for t in DISTILLED_0_9_8_SECOND_PASS)

_COMMON = dict(height=704, width=1216, num_frames=121, frame_rate=30.0, max_sequence_length=256,
               negative_prompt=NEGATIVE, decode_timestep=0.05, decode_noise_scale=0.025,
               guidance_scale=1.0, guidance_rescale=0.0, stg_scale=0.0, stg_rescale=0.7,
               skip_block_list=(), skip_layer_strategy='attention_values',
               cfg_star_rescale=False, stochastic_sampling=False)
# The first inference script's defaults (0.9.0 / 0.9.1): 704x480, 25 fps, 128 tokens.
_EARLY = dict(height=480, width=704, frame_rate=25.0, max_sequence_length=128)
# 2B 0.9 - 0.9.6 dev: 40 steps, CFG 3, STG 1 on block 19 (attention values), rescale 0.7.
_DEV_2B = dict(num_inference_steps=40, guidance_scale=3.0, stg_scale=1.0, stg_rescale=0.7,
               skip_block_list=(19,))
# 13B dev 0.9.7 / 0.9.8: 30 steps with per-interval CFG / STG schedules, CFG-star; the first
# pass stops 3 steps early, the second starts at step 17 of its own 30.
_DEV_13B_FIRST = dict(num_inference_steps=30, skip_final_inference_steps=3,
                      guidance_timesteps=(1000.0, 996.0, 993.3, 985.0, 976.7, 900.8, 618.0),
                      guidance_scale=(1.0, 1.0, 6.0, 8.0, 6.0, 1.0, 1.0),
                      stg_scale=(0.0, 0.0, 4.0, 4.0, 4.0, 2.0, 1.0),
                      stg_rescale=(1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0),
                      skip_block_list=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,),
                                       (28,)),
                      cfg_star_rescale=True)
_DEV_13B_SECOND = dict(num_inference_steps=30, skip_initial_inference_steps=17,
                       guidance_timesteps=(1000.0,), guidance_scale=(1.0,), stg_scale=(1.0,),
                       stg_rescale=(1.0,), skip_block_list=(27,), cfg_star_rescale=True)
# Distilled 0.9.7 / 0.9.8: fixed schedules without guidance.
_DISTILLED_FIRST = dict(timesteps=_DISTILLED_TIMESTEPS, guidance_scale=1.0, stg_scale=0.0,
                        stg_rescale=1.0)
_DISTILLED_SECOND = dict(timesteps=_SECOND_TIMESTEPS, guidance_scale=1.0, stg_scale=0.0,
                         stg_rescale=1.0)
# Distilled 0.9.7 / 0.9.8 in one full-size pass (no official yaml has one): diffusers' documented
# single distilled pass, the first pass's steps as integer timesteps and a last step at 0.03 that
# finishes the video (the first pass alone stops at 725, 72% noise, for the upscaler).
DISTILLED_SINGLE_PASS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)
_DISTILLED_SINGLE = dict(_DISTILLED_FIRST, timesteps=DISTILLED_SINGLE_PASS)
_DOWNSCALE = 0.6666666


def _preset(name: str, file: str, **values) -> Preset:
  return Preset(name, file, types.MappingProxyType(dict(_COMMON, **values)))


def _two_pass(name: str, file: str, upsampler: str, first: dict, second: dict,
              single: dict) -> Preset:
  """A multi-scale release; `single` is its single-pass schedule and guidance at the full size."""
  recipe = dict(downscale_factor=_DOWNSCALE, first_pass=types.MappingProxyType(dict(first)),
                second_pass=types.MappingProxyType(dict(second)))
  return Preset(name, file, types.MappingProxyType(dict(_COMMON, **single)),
                types.MappingProxyType(recipe), upsampler)


def _multi(size: str, version: str, variant: str, fp8: bool = False) -> Preset:
  name = f'ltxv-{size}-{version}-{variant}' + ('-fp8' if fp8 else '')
  first, second = ((_DEV_13B_FIRST, _DEV_13B_SECOND) if variant == 'dev' else
                   (_DISTILLED_FIRST, _DISTILLED_SECOND))
  # dev: the first pass run to the end (without its early stop); distilled: the single pass.
  single = ({k: v for k, v in first.items() if k != 'skip_final_inference_steps'}
            if variant == 'dev' else _DISTILLED_SINGLE)
  if (size, version, variant) == ('13b', '0.9.8', 'distilled'):
    second = dict(second, tone_map_compression_ratio=0.6)
  return _two_pass(name, f'{name}.safetensors', f'ltxv-spatial-upscaler-{version}.safetensors',
                   first, second, single)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset('ltxv-2b-0.9.0', 'ltx-video-2b-v0.9.safetensors', **_EARLY, **_DEV_2B),
    _preset('ltxv-2b-0.9.1', 'ltx-video-2b-v0.9.1.safetensors', **_EARLY, **_DEV_2B),
    _preset('ltxv-2b-0.9.5', 'ltx-video-2b-v0.9.5.safetensors', **_DEV_2B),
    _preset('ltxv-2b-0.9.6-dev', 'ltxv-2b-0.9.6-dev-04-25.safetensors', **_DEV_2B),
    _preset('ltxv-2b-0.9.6-distilled', 'ltxv-2b-0.9.6-distilled-04-25.safetensors',
            num_inference_steps=8, stg_rescale=1.0, stochastic_sampling=True),
    _multi('13b', '0.9.7', 'dev'),
    _multi('13b', '0.9.7', 'dev', fp8=True),
    _multi('13b', '0.9.7', 'distilled'),
    _multi('13b', '0.9.7', 'distilled', fp8=True),
    _multi('13b', '0.9.8', 'dev'),
    _multi('13b', '0.9.8', 'dev', fp8=True),
    _multi('13b', '0.9.8', 'distilled'),
    _multi('13b', '0.9.8', 'distilled', fp8=True),
    _multi('2b', '0.9.8', 'distilled'),
    _multi('2b', '0.9.8', 'distilled', fp8=True),
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


def multi_scale(name: str, **overrides) -> dict[str, Any]:
  """`LTXMultiScalePipeline.__call__` keyword arguments of multi-scale release `name`:
  downscale_factor, first_pass, second_pass and the common arguments (`sampling` without
  `PASS_KEYS`), with `overrides` on top (common arguments; `first_pass=` / `second_pass=` dicts
  update the passes), e.g. `multi(**multi_scale(name, num_frames=97), prompt='...')`."""
  p = get(name)
  if p.multi_scale is None:
    raise UsageError(f"preset {name!r} is single-pass (its official config is not "
                     "multi-scale); use presets.sampling")
  first = dict(p.multi_scale['first_pass'], **overrides.pop('first_pass', {}))
  second = dict(p.multi_scale['second_pass'], **overrides.pop('second_pass', {}))
  factor = overrides.pop('downscale_factor', p.multi_scale['downscale_factor'])
  bad = sorted(set(overrides) - _CALL_ARGS)
  if bad:
    raise UsageError(f"multi_scale({name!r}, ...): {', '.join(bad)} are no LTXPipeline.__call__ "
                     "arguments")
  common = {k: v for k, v in p.sampling.items() if k not in PASS_KEYS}
  common.update(overrides)
  out = dict(common, downscale_factor=factor, first_pass={k: _as_lists(v) for k, v in
                                                          first.items()},
             second_pass={k: _as_lists(v) for k, v in second.items()})
  return {k: _as_lists(v) for k, v in out.items()}


def _as_lists(v):
  return [_as_lists(x) for x in v] if isinstance(v, tuple) else v


# -------------------------------------------------------------------------- the README table


def _num(v: float) -> str:
  return f"{v:g}"


def _steps(s: Mapping[str, Any]) -> str:
  if 'timesteps' in s:
    text = ', '.join(_num(t) for t in s['timesteps'])
  else:
    text = f"{s['num_inference_steps']} steps"
    if s.get('skip_initial_inference_steps'):
      text += f" from step {s['skip_initial_inference_steps']}"
    if s.get('skip_final_inference_steps'):
      text += f" less the last {s['skip_final_inference_steps']}"
  if s.get('stochastic_sampling'):
    text += ', stochastic'
  return text


def _span(v) -> str:
  lo, hi = min(v), max(v)
  return _num(lo) if lo == hi else f"{_num(lo)}-{_num(hi)}"


def _guidance(s: Mapping[str, Any]) -> str:
  if 'guidance_timesteps' in s and len(s['guidance_timesteps']) > 1:
    text = f"per-interval CFG {_span(s['guidance_scale'])} / STG {_span(s['stg_scale'])}"
    return text + (', CFG-star' if s.get('cfg_star_rescale') else '')
  one = {k: (s[k][0] if isinstance(s.get(k), (tuple, list)) and k != 'skip_block_list' else
             s.get(k)) for k in ('guidance_scale', 'stg_scale', 'stg_rescale')}
  parts = []
  if one['guidance_scale'] > 1:
    parts.append(f"CFG {_num(one['guidance_scale'])}")
  if one['stg_scale'] > 0:
    blocks = ', '.join(map(str, s['skip_block_list']))
    parts.append(f"STG {_num(one['stg_scale'])} (block {blocks}), rescale "
                 f"{_num(one['stg_rescale'])}")
  if s.get('cfg_star_rescale'):
    parts.append('CFG-star')
  return ', '.join(parts) or 'none'


def markdown_table() -> str:
  """The README's preset table (between its `<!-- presets:begin -->` / `end` markers)."""
  lines = [f"| preset (`configs/t2v.py:NAME`) | file in `{HUB_REPO}` | passes | sampling | "
           "guidance | decode t / noise | size, frames, fps, tokens |",
           '|---|---|---|---|---|---|---|']
  for p in PRESETS.values():
    s = p.sampling
    name = f"`{p.name}`" + (' (default)' if p.name == DEFAULT else '')
    if p.multi_scale is None:
      passes, steps, guidance = 'single', _steps(s), _guidance(s)
    else:
      first, second = p.multi_scale['first_pass'], p.multi_scale['second_pass']
      passes = (f"multi-scale x{_num(round(p.multi_scale['downscale_factor'], 4))}, "
                f"{p.upsampler}")
      if second.get('tone_map_compression_ratio'):
        passes += f", tone map {_num(second['tone_map_compression_ratio'])}"
      steps = f"1: {_steps(first)}; 2: {_steps(second)}; one pass: {_steps(s)}"
      guidance = f"1: {_guidance(first)}; 2: {_guidance(second)}; one pass: {_guidance(s)}"
    lines.append(
        f"| {name} | {p.file} | {passes} | {steps} | {guidance} | "
        f"{_num(s['decode_timestep'])} / {_num(s['decode_noise_scale'])} | "
        f"{s['width']}x{s['height']}, {s['num_frames']}, {_num(s['frame_rate'])}, "
        f"{s['max_sequence_length']} |")
  return '\n'.join(lines) + '\n'
