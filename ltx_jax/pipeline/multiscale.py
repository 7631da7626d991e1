"""`LTXMultiScalePipeline`: the official two-pass recipe of the 0.9.7 / 0.9.8 checkpoints.

A first pass at a reduced size, the latent spatial upsampler (x2), AdaIN against the first
pass, a second pass at twice the first-pass size starting part-way down its schedule from the
upsampled latents (re-noised), tone mapping, decode, and a bilinear resize of the frames to the
requested size: Lightricks' `LTXMultiScalePipeline` (ltx_video/pipelines/pipeline_ltx_video.py)
built from `LTXPipeline`'s stages. Both passes are prepared (every argument checked) before
either compiles; each pass is one jitted scan.
"""

from __future__ import annotations

import inspect
import numbers
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import checks
from ltx_jax.errors import UsageError
from ltx_jax.models.vae.tiling import to_uint8
from ltx_jax.pipeline.pipeline import LTXPipeline, LTXPipelineOutput
from ltx_jax.sampling.latent_ops import adain_filter_latent, first_pass_size

__all__ = ['LTXMultiScalePipeline', 'resize_frames']

_PREPARE_ARGS = frozenset(inspect.signature(LTXPipeline.prepare).parameters) - {'self'}
_DECODE_ARGS = frozenset({'decode_timestep', 'decode_noise_scale', 'tone_map_compression_ratio'})
_CALL_DEFAULTS = {k: p.default for k, p in inspect.signature(LTXPipeline.__call__)
                  .parameters.items() if k != 'self'}
# Set by the recipe itself: a pass dict may not change them (media_size: nor the call).
_PER_RUN = frozenset({'height', 'width', 'output_type', 'media_size'})

_run_upsampler = jax.jit(lambda graph, state, x: nnx.merge(graph, state)(x), static_argnums=0)


def resize_frames(frames: jax.Array, height: int, width: int) -> jax.Array:
  """Frames [B, F, h, w, 3] -> [B, F, height, width, 3] by bilinear interpolation with
  half-pixel centres and no antialiasing (torch `interpolate(mode='bilinear',
  align_corners=False)`, as the official multi-scale pipeline resizes its output)."""
  b, f, h, w, c = frames.shape
  if (h, w) == (height, width):
    return frames
  return jax.image.resize(frames, (b, f, height, width, c), 'bilinear', antialias=False)


class LTXMultiScalePipeline:
  """Two-pass generation with a latent spatial upsampler, as Lightricks' multi-scale configs.

    multi = LTXMultiScalePipeline(pipe, load_latent_upsampler('ltxv-spatial-upscaler-0.9.8.safetensors'))
    out = multi(downscale_factor=0.6666666, first_pass=dict(timesteps=[...]),
                second_pass=dict(timesteps=[...]), prompt='...', height=704, width=1216)

  `ltx_jax.presets.multi_scale(name)` holds each release's official arguments.
  """

  def __init__(self, pipe: LTXPipeline, upsampler):
    cfg = upsampler.config
    if not cfg.spatial_upsample or cfg.temporal_upsample:
      raise UsageError("LTXMultiScalePipeline needs a spatial-only latent upsampler "
                       "(ltxv-spatial-upscaler-*.safetensors); this one has spatial_upsample="
                       f"{cfg.spatial_upsample}, temporal_upsample={cfg.temporal_upsample}")
    want = pipe.transformer.config.in_channels
    if cfg.in_channels != want:
      raise UsageError(f"the latent upsampler takes {cfg.in_channels} channels; the pipeline's "
                       f"latents have {want}")
    self.pipe = pipe
    self.upsampler = upsampler
    self._upsampler_split = nnx.split(upsampler)

  @classmethod
  def from_pretrained(cls, source: str | Path, *, upsampler: str | Path | None = None,
                      **kwargs) -> 'LTXMultiScalePipeline':
    """`LTXPipeline.from_pretrained(source, **kwargs)` and the latent upsampler: `upsampler`
    (an official file or a diffusers `latent_upsampler/` folder), by default the one the source
    resolution found beside the model (`ModelSource.latent_upsampler`)."""
    from ltx_jax.models.upsampler import load_latent_upsampler
    pipe = LTXPipeline.from_pretrained(source, **kwargs)
    path = upsampler if upsampler is not None else pipe.source.latent_upsampler
    if path is None:
      raise UsageError(f"{source}: no latent upsampler found beside the model; pass "
                       "upsampler=PATH (e.g. ltxv-spatial-upscaler-0.9.8.safetensors)")
    return cls(pipe, load_latent_upsampler(path, dtype=kwargs.get('dtype', jnp.float32),
                                           mesh=kwargs.get('mesh'), rules=kwargs.get('rules')))

  def upsample(self, latents: jax.Array) -> jax.Array:
    """Normalised latents [B, F', H', W', C] -> normalised latents [B, F', 2H', 2W', C]:
    un-normalise with the VAE's statistics, upsample, re-normalise (f32)."""
    vae = self.pipe.vae
    with self.pipe.timer('upsample'):
      z = vae.denormalize(jnp.asarray(latents, jnp.float32)).astype(self.upsampler.dtype)
      graph, state = self._upsampler_split
      up = _run_upsampler(graph, state, self.pipe._global(z))
      return jax.block_until_ready(vae.normalize(up.astype(jnp.float32)).astype(jnp.float32))

  def upsample_latents(self, latents: jax.Array, *, adain_factor: float = 0.0,
                       tone_map_compression_ratio: float = 0.0) -> jax.Array:
    """Normalised latents [B, F', H', W', C] -> normalised [B, F', 2H', 2W', C] as diffusers'
    `LTXLatentUpsamplePipeline(latents=..., output_type='latent')`: un-normalise, upsample,
    AdaIN against the un-normalised input (`adain_factor` > 0), tone map the un-normalised
    latents (`tone_map_compression_ratio` > 0), re-normalise. The first half of diffusers'
    two-call recipe; its second call is `pipe(latents=..., denoise_strength=...)`."""
    from ltx_jax.sampling.latent_ops import tone_map_latents
    factor = checks.check_finite('adain_factor', adain_factor, None, None)
    ratio = checks.check_finite('tone_map_compression_ratio', tone_map_compression_ratio, 0.0,
                                1.0)
    vae = self.pipe.vae
    with self.pipe.timer('upsample'):
      z = vae.denormalize(jnp.asarray(latents, jnp.float32))
      graph, state = self._upsampler_split
      up = _run_upsampler(graph, state, self.pipe._global(z.astype(self.upsampler.dtype)))
      up = up.astype(jnp.float32)
      if factor > 0:
        up = adain_filter_latent(up, z, factor)
      if ratio > 0:
        up = tone_map_latents(up, ratio)
      return jax.block_until_ready(vae.normalize(up).astype(jnp.float32))

  def __call__(self, downscale_factor: float, first_pass: Mapping[str, Any],
               second_pass: Mapping[str, Any], *, adain_factor: float = 1.0,
               **kwargs) -> LTXPipelineOutput:
    """Generates videos in two passes (the official `LTXMultiScalePipeline.__call__`).

    downscale_factor: the first pass runs at int(W * f) - int(W * f) % 32 (same for H) (see
      `ltx_jax.sampling.latent_ops.first_pass_size`), the second at twice that.
    first_pass, second_pass: `LTXPipeline.__call__` arguments of each pass on top of the
      common `kwargs` (schedule: num_inference_steps / timesteps, skip_initial_inference_steps
      / skip_final_inference_steps, guidance: guidance_scale, stg_scale, stg_rescale,
      skip_block_list, guidance_timesteps, cfg_star_rescale, ...). The second pass starts from
      the upsampled first-pass latents, re-noised to its first timestep; its decode arguments
      (decode_timestep, decode_noise_scale, tone_map_compression_ratio) are the decode's.
      A pass's `noise` is its starting noise (default: from `seed`, different per pass).
    adain_factor: how far the upsampled latents' per-channel statistics are moved to the
      first pass's (`adain_filter_latent`; the official recipe uses 1).
    kwargs: the common `LTXPipeline.__call__` arguments (prompt, height, width, num_frames,
      seed, output_type, ...). Frames are resized (bilinear) to height x width.
    Returns `.latents` (the second pass's, [B, F', 2H1', 2W1', C]) and `.frames` uint8
    [B, F, height, width, 3] unless output_type='latent'.
    """
    for name, d in (('first_pass', first_pass), ('second_pass', second_pass)):
      if not isinstance(d, Mapping):
        raise UsageError(f"{name} must be a dict of LTXPipeline arguments, not "
                         f"{type(d).__name__}")
      fixed = sorted(set(d) & _PER_RUN)
      if fixed:
        raise UsageError(f"{name} sets {', '.join(fixed)}; the multi-scale recipe sets the "
                         "passes' sizes and output itself: pass them with the common arguments")
    for name, d in (('arguments', kwargs), ('first_pass', first_pass),
                    ('second_pass', second_pass)):
      bad = sorted(set(d) - _PREPARE_ARGS - _DECODE_ARGS - {'output_type'})
      if bad:
        raise UsageError(f"{name}: {', '.join(bad)} are no LTXPipeline.__call__ arguments")
    if 'media_size' in kwargs:
      raise UsageError("media_size is set by the multi-scale recipe (the output's height and "
                       "width, which the conditioning media are cropped for)")
    if (not isinstance(downscale_factor, numbers.Real) or isinstance(downscale_factor, bool)
        or not 0 < downscale_factor <= 1):
      raise UsageError(f"downscale_factor={downscale_factor!r} must be a number in (0, 1]")
    adain_factor = checks.check_finite('adain_factor', adain_factor, None, None)
    output_type = kwargs.pop('output_type', 'np')
    if output_type not in ('np', 'latent'):
      raise UsageError(f"output_type={output_type!r}; choose 'np' or 'latent'")
    height = kwargs.get('height', _CALL_DEFAULTS['height'])
    width = kwargs.get('width', _CALL_DEFAULTS['width'])
    pipe = self.pipe
    checks.check_video_size(height, width, kwargs.get('num_frames', _CALL_DEFAULTS['num_frames']),
                            1, pipe.compression[0])
    h1, w1 = first_pass_size(height, width, downscale_factor, pipe.compression[1])

    def split(d):
      return ({k: v for k, v in d.items() if k in _PREPARE_ARGS},
              {k: v for k, v in d.items() if k in _DECODE_ARGS})
    common, common_decode = split(kwargs)
    first, _ = split(first_pass)  # the first pass is not decoded
    second, second_decode = split(second_pass)
    decode = {k: _CALL_DEFAULTS[k] for k in _DECODE_ARGS}
    decode.update(common_decode, **second_decode)
    d_t = checks.check_finite('decode_timestep', decode['decode_timestep'], 0.0, 1.0)
    d_s = (d_t if decode['decode_noise_scale'] is None else
           checks.check_finite('decode_noise_scale', decode['decode_noise_scale'], 0.0, 1.0))
    ratio = checks.check_finite('tone_map_compression_ratio',
                                decode['tone_map_compression_ratio'], 0.0, 1.0)

    # Both passes' schedules checked before the first pass's text encoding, and both passes
    # prepared before anything compiles. Conditioning media are cropped for the output and
    # resized to each pass (inference.py and LTXVideoPipeline).
    common['media_size'] = (height, width)
    kw1 = dict(common, **first, height=h1, width=w1)
    tc, sc = pipe.compression
    frames = (kw1.get('num_frames', _CALL_DEFAULTS['num_frames']) - 1) // tc + 1
    for kw, scale, given in ((kw1, 1, 'latents' in kw1), (dict(common, **second), 2, True)):
      pipe._schedule(kw.get('num_inference_steps', _CALL_DEFAULTS['num_inference_steps']),
                     kw.get('timesteps'), frames * (scale * h1 // sc) * (scale * w1 // sc),
                     np.zeros(()) if given else None,
                     kw.get('skip_initial_inference_steps', 0),
                     kw.get('skip_final_inference_steps', 0), kw.get('denoise_strength', 1.0))
    plan1 = pipe.prepare(**kw1)
    f1, hh, ww = plan1.grid
    shape2 = (plan1.batch, f1, 2 * hh, 2 * ww, plan1.latents.shape[-1])
    kw2 = dict(common, **second, height=2 * h1, width=2 * w1)
    kw2.pop('noise', None)
    noise2 = second.get('noise')
    if noise2 is None:  # decorrelated from the first pass's noise of the same seed
      noise2 = jax.random.normal(
          jax.random.fold_in(jax.random.key(int(kw2.get('seed', 0))), 2), shape2, jnp.float32)
    # The upsampled latents replace these placeholders once the first pass has run: the plan
    # re-noises them and puts the conditioning items into them as the official second pass.
    kw2['latents'] = np.zeros(shape2, np.float32)
    plan2 = pipe.prepare(**kw2, noise=noise2)

    lat1, ran1 = pipe._denoise(plan1)
    up = adain_filter_latent(self.upsample(lat1), lat1, adain_factor)
    final, ran2 = pipe._denoise(plan2.renoised(up, noise2))
    skipped = int(np.sum(~ran1) + np.sum(~ran2))  # steps the step cache did not run in full
    sigmas = tuple(tuple(round(float(s), 6) for s in np.asarray(p.sigmas)) for p in (plan1, plan2))
    if output_type == 'latent':
      return LTXPipelineOutput(latents=np.asarray(final), skipped_steps=skipped, sigmas=sigmas)
    video = pipe.decode_video(final, d_t, d_s, plan2.decode_key,
                              tone_map_compression_ratio=ratio)
    video = resize_frames(jnp.clip(video, -1, 1), height, width)
    return LTXPipelineOutput(latents=np.asarray(final), frames=np.asarray(to_uint8(video)),
                             skipped_steps=skipped, sigmas=sigmas)
