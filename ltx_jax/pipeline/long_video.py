"""Long videos in temporal sliding windows: `LTXLongVideoPipeline`.

The semantics of diffusers' `LTXI2VLongMultiPromptPipeline` (ComfyUI's looping sampler): the
latent video is cut into windows of `temporal_tile_size` frames that overlap by
`temporal_overlap` (both in pixel frames, floored to latent frames). Every window is a fresh
run of the schedule on its own noise, with a prompt of its own, and with conditioning tokens
appended after its frames, each held by a strength (`ltx_jax.sampling.blend_loop`):

- the previous result's last overlap latents (`temporal_overlap_cond_strength`), at the
  window's first positions;
- `guidance_latents` of the window's frames (`guiding_strength`), after the overlap;
- one `negative_index_latents` frame (`negative_index_strength`) one latent step before the
  window (by default the conditioning image's latents);
- in the first window, frame 0 itself is held by `cond_strength` at the image's latents.

A window's result (its first frame dropped, AdaIN-matched to the first window by
`adain_factor`) is cross-faded into the video over the overlap. Every window starts at time 0
in its rotary coordinates.

Memory is bounded by the window: the whole video's latents live on the host (numpy) between
windows; each window is one call of the jitted loop (windows of one shape compile once), and
the decode runs in temporal chunks of equal shape whose frames are blended on the host.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import checks
from ltx_jax.errors import UsageError
from ltx_jax.models.vae.tiling import TilingConfig, axis_weights, tile_starts
from ltx_jax.pipeline import conditioning as conditioning_lib
from ltx_jax.sampling import blend_loop
from ltx_jax.sampling import guidance as guidance_lib
from ltx_jax.sampling import loop as loop_lib
from ltx_jax.sampling.schedules import sigmas_for

__all__ = ['LTXLongVideoPipeline', 'LTXLongVideoOutput', 'split_windows', 'window_prompts',
           'step_keys',
           'check_windows', 'check_strengths']


@dataclasses.dataclass
class LTXLongVideoOutput:
  latents: np.ndarray               # [1, F', H', W', C] final normalised latents
  frames: np.ndarray | None = None  # uint8 [1, F, H, W, 3]; None for output_type='latent'
  windows: tuple = ()               # (start, end) latent frames of each window
  skipped_steps: int = 0            # as LTXPipelineOutput's (no step cache here)
  sigmas: tuple = ()                # the noise levels every window ran (0..1), one tuple
  # The device programs the call ran, one per distinct signature: (name, jitted, args) with
  # args abstract; `peak_device_bytes` compiles them for XLA's memory plan.
  programs: tuple = ()

  def peak_device_bytes(self) -> int:
    """The largest XLA memory plan (arguments + temporaries + outputs, weights included) of
    the programs this call ran: the device memory the call needs, whatever the video's
    length."""
    peak = 0
    for _, fn, (static, args) in self.programs:
      m = fn.lower(*static, *args).compile().memory_analysis()
      if m is not None:
        peak = max(peak, m.argument_size_in_bytes + m.temp_size_in_bytes +
                   m.output_size_in_bytes - m.alias_size_in_bytes)
    return int(peak)


# -------------------------------------------------------------------------- host pieces


def step_keys(seed: int, start: int, steps: int) -> jax.Array:
  """The keys of the ancestral steps' noise (eta > 0) of the window starting at latent frame
  `start`: step i of the run (after skipped steps) draws N(0, 1) from keys[i]."""
  key_steps = jax.random.split(jax.random.key(int(seed)), 3)[1]
  return jax.random.split(jax.random.fold_in(key_steps, start), steps)


def split_windows(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
  """[start, end) latent frames of windows of `tile` frames overlapping by `overlap`, the last
  one ending with the video (possibly shorter)."""
  stride = max(tile - overlap, 1)
  windows, start = [], 0
  while start < length:
    end = min(start + tile, length)
    windows.append((start, end))
    if end == length:
      break
    start += stride
  return windows


def window_prompts(prompt: str | Sequence[str] | None,
                   prompt_segments: Sequence[dict] | None, n_windows: int) -> list[str]:
  """The positive prompt of each window (checked): `prompt_segments` ({'start_window',
  'end_window', 'text'}, inclusive, windows without one take the previous text), else the
  parts of `prompt` split on '|' (or a list of prompts); the last prompt continues over the
  remaining windows."""
  if prompt_segments:
    texts = [''] * n_windows
    for seg in prompt_segments:
      if not isinstance(seg, dict) or not isinstance(seg.get('text', ''), str):
        raise UsageError(f"prompt_segments entry {seg!r} must be a dict with 'start_window', "
                         "'end_window' (ints) and 'text' (a string)")
      s, e = seg.get('start_window', 0), seg.get('end_window', seg.get('start_window', 0))
      if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (s, e)):
        raise UsageError(f"prompt_segments entry {seg!r}: start_window and end_window must be "
                         "integers")
      if not 0 <= s <= e < n_windows:
        raise UsageError(f"prompt_segments entry {seg!r}: need 0 <= start_window <= "
                         f"end_window < {n_windows} (the video has {n_windows} windows)")
      for w in range(s, e + 1):
        texts[w] = seg.get('text', '')
    last = ''
    for i, t in enumerate(texts):
      texts[i] = t = t or last
      last = t
    return texts
  if prompt is None:
    raise UsageError("pass prompt (a string, parts split on '|', or one per window) or "
                     "prompt_segments")
  if isinstance(prompt, str):
    parts = [p.strip() for p in prompt.split('|')]
  else:
    parts = list(prompt)
    if not parts or not all(isinstance(p, str) for p in parts):
      raise UsageError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
  if len(parts) > n_windows:
    raise UsageError(f"prompt has {len(parts)} parts for {n_windows} windows; pass at most one "
                     "per window (or change temporal_tile_size / temporal_overlap / num_frames)")
  return [parts[min(i, len(parts) - 1)] for i in range(n_windows)]


def _frame_times(n: int, latent_idx: int, temporal: int) -> np.ndarray:
  """Pixel-frame positions of n latent frames placed at `latent_idx` (diffusers' rule: index
  0 is causal, the first latent holding one frame; k > 0 starts at pixel frame
  1 + (k - 1) * t; k < 0 at k * t)."""
  t = np.arange(n, dtype=np.int64) * temporal
  start = latent_idx * temporal if latent_idx <= 0 else 1 + (latent_idx - 1) * temporal
  if start == 0:
    t = np.maximum(t + 1 - temporal, 0)
  return t + start


def window_coords(frames: int, height: int, width: int, overlap: int, guiding: int,
                  negative: int, temporal: int, spatial: int, frame_rate: float) -> np.ndarray:
  """[1, 3, frames*height*width] f32 (time s, y px, x px) of a window's tokens: all frames at
  window time 0, then the last overlap + guiding + negative frames re-placed (previous tail
  at 0, guidance after the overlap, the negative-index frame one latent step before 0)."""
  t = _frame_times(frames, 0, temporal)
  tail = [_frame_times(n, idx, temporal)
          for n, idx in ((overlap, 0), (guiding, overlap), (negative, -1)) if n > 0]
  if tail:
    tail = np.concatenate(tail)
    t[len(t) - len(tail):] = tail
  f, h, w = np.meshgrid(t.astype(np.float32), np.arange(height, dtype=np.float32) * spatial,
                        np.arange(width, dtype=np.float32) * spatial, indexing='ij')
  f = f * np.float32(1.0 / frame_rate)
  return np.stack([f, h, w]).reshape(1, 3, -1).astype(np.float32)


def adain(x: np.ndarray, ref: np.ndarray, factor: float) -> np.ndarray:
  """Per-channel mean / std of x [B, F, H, W, C] blended towards ref's by `factor`
  (unbiased std, as torch)."""
  eps = np.float32(1e-6)
  axes = (1, 2, 3)
  mu, sd = x.mean(axes, keepdims=True), x.std(axes, ddof=1, keepdims=True)
  mu_ref, sd_ref = ref.mean(axes, keepdims=True), ref.std(axes, ddof=1, keepdims=True)
  f = np.float32(factor)
  mu_t = (1 - f) * mu + f * mu_ref
  sd_t = np.maximum((1 - f) * sd + f * sd_ref, eps)
  return ((x - mu) / (sd + eps) * sd_t + mu_t).astype(np.float32)


def crossfade(prev: np.ndarray, new: np.ndarray, overlap: int) -> np.ndarray:
  """prev [B, F1, ...] then new [B, F2, ...], linearly cross-faded over `overlap` frames
  (concatenated when overlap <= 0) -> [B, F1 + F2 - overlap, ...]."""
  if overlap <= 0:
    return np.concatenate([prev, new], axis=1)
  alpha = np.linspace(1, 0, overlap + 2, dtype=np.float32)[1:-1]
  alpha = alpha.reshape(1, -1, *([1] * (prev.ndim - 2)))
  mixed = alpha * prev[:, -overlap:] + (1 - alpha) * new[:, :overlap]
  return np.concatenate([prev[:, :-overlap], mixed, new[:, overlap:]], axis=1)


def check_windows(num_frames: int, temporal_tile_size: int, temporal_overlap: int,
                  temporal: int) -> tuple[int, int, list[tuple[int, int]]]:
  """Window length and overlap in pixel frames (floored to latent frames of `temporal`
  pixel frames) -> (tile, overlap, windows) in latent frames, or a UsageError."""
  tile = _int('temporal_tile_size', temporal_tile_size, 2 * temporal) // temporal
  overlap = _int('temporal_overlap', temporal_overlap, 0) // temporal
  if overlap >= tile:
    raise UsageError(f"temporal_overlap={temporal_overlap} must be below temporal_tile_size="
                     f"{temporal_tile_size} in latent frames (floored to multiples of {temporal})")
  windows = split_windows((num_frames - 1) // temporal + 1, tile, overlap)
  if len(windows) > 1 and overlap < 1:
    raise UsageError(f"temporal_overlap={temporal_overlap} must be >= {temporal} (one latent "
                     "frame) when the video needs several windows: each window after the first "
                     "drops its first latent frame")
  return tile, overlap, windows


def check_strengths(**strengths: Any) -> dict[str, float]:
  """Each strength (or factor) a number in [0, 1] -> floats."""
  return {k: checks.check_finite(k, v, 0.0, 1.0) for k, v in strengths.items()}


def _int(name: str, value: Any, minimum: int) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise UsageError(f"{name}={value!r} must be an integer >= {minimum}")
  return int(value)


def _latents_arg(name: str, value: Any, frames: int | None, grid_hw: tuple[int, int],
                 channels: int) -> np.ndarray | None:
  """A user latent array [1, f, H', W', C] (f = frames when given) -> f32 numpy."""
  if value is None:
    return None
  a = np.asarray(value, np.float32)
  ok = a.ndim == 5 and a.shape[0] == 1 and a.shape[2:] == (*grid_hw, channels) and (
      a.shape[1] == frames if frames is not None else a.shape[1] >= 1)
  if not ok:
    want = f"[1, {frames if frames is not None else 'f'}, {grid_hw[0]}, {grid_hw[1]}, {channels}]"
    raise UsageError(f"{name} have shape {list(a.shape)}; expected {want} (normalised latents: "
                     "batch, latent frames, height, width, channels)")
  if not np.all(np.isfinite(a)):
    raise UsageError(f"{name} hold non-finite values")
  return a


@dataclasses.dataclass(frozen=True)
class _Window:
  """One window's host inputs."""
  latents: np.ndarray   # [1, T_eff, H', W', C] conditioning latents c (window + appended)
  strength: np.ndarray  # [T_eff] f32 per frame
  appended: int         # frames appended after the window's own
  coords: np.ndarray    # [1, 3, N]


# ------------------------------------------------------------------------------ pipeline


class LTXLongVideoPipeline:
  """Long (multi-window, multi-prompt) video on an `LTXPipeline`'s components, with the
  arguments of diffusers' `LTXI2VLongMultiPromptPipeline` (see `__call__`)."""

  def __init__(self, pipe):
    self.pipe = pipe

  def __call__(self, prompt: str | Sequence[str] | None = None,
               negative_prompt: str | None = None,
               prompt_segments: Sequence[dict] | None = None, height: int = 512,
               width: int = 704, num_frames: int = 161, frame_rate: float = 25.0,
               guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
               num_inference_steps: int | None = 8, sigmas: Sequence[float] | None = None,
               seed: int = 0, cond_image: Any = None, cond_strength: float = 0.5,
               latents: Any = None, temporal_tile_size: int = 80, temporal_overlap: int = 24,
               temporal_overlap_cond_strength: float = 0.5, adain_factor: float = 0.25,
               guidance_latents: Any = None, guiding_strength: float = 1.0,
               negative_index_latents: Any = None, negative_index_strength: float = 1.0,
               skip_steps_sigma_threshold: float | None = 1.0,
               decode_timestep: float = 0.05, decode_noise_scale: float | None = 0.025,
               decode_horizontal_tiles: int = 4, decode_vertical_tiles: int = 4,
               decode_overlap: int = 3, decode_temporal_tile: int = 16,
               decode_temporal_overlap: int = 4, last_frame_fix: bool = True,
               output_type: str = 'np', max_sequence_length: int = 128, eta: float = 0.0,
               noise: Callable[[int, tuple], Any] | None = None,
               progress: bool | None = None) -> LTXLongVideoOutput:
    """Generates one long video; every argument is checked before anything compiles.

    prompt: one prompt, parts split on '|' or a list (one per window; the last continues);
      prompt_segments: [{'start_window', 'end_window', 'text'}] instead. negative_prompt: the
      CFG rows (guidance_scale > 1), with diffusers' guidance_rescale.
    temporal_tile_size, temporal_overlap: window length and overlap in pixel frames, floored
      to latent frames (the VAE's temporal compression t); the overlap is >= t when the video
      needs more than one window, and below the window length.
    cond_image (path, PIL image or uint8 [h, w, 3]; Lanczos-resized to height x width) +
      cond_strength: the first frame, held in window 0 and, by default, the
      negative_index_latents. latents [1, F', H', W', C]: diffusers' starting latents (they
      only matter where a token is held).
    guidance_latents [1, F', H', W', C] + guiding_strength; negative_index_latents
      [1, f, H', W', C] (its last frame) + negative_index_strength; adain_factor;
      temporal_overlap_cond_strength: see the module docstring. Strengths lie in [0, 1].
    sigmas: an explicit per-window schedule run as given (diffusers with its
      LTXEulerAncestralRFScheduler, whose step this loop takes), each step sigmas[i] ->
      sigmas[i + 1]; else num_inference_steps of the pipeline's scheduler (all steps; diffusers
      stops one step early there, on its scheduler's default schedule: pass sigmas to match
      it). skip_steps_sigma_threshold: steps starting above it are
      skipped (None or <= 0: none).
    eta: the ancestral sampler's noise (diffusers' LTXEulerAncestralRFScheduler / ComfyUI's
      euler_ancestral_RF, whose default is 1.0); 0 (default) is the Euler step.
    seed: window noise N(0, 1) from key(seed) folded with the window's start; `noise(start,
      shape)` -> [1, T, H', W', C] replaces it (e.g. to reproduce another implementation).
      The ancestral steps' noise: `step_keys(seed, start, steps)`.
    decode_*: the decoder's noise (decode_timestep, decode_noise_scale; None: no noise as
      diffusers), its spatial tiles (diffusers' tile counts and overlap in latent pixels,
      turned into square tiles) and the temporal chunks (decode_temporal_tile latent frames
      overlapping by decode_temporal_overlap) it runs in; last_frame_fix repeats the last
      latent frame for the decode and drops its frames (diffusers' default).
    output_type: 'np' (uint8 frames) or 'latent'.
    """
    pipe = self.pipe
    tc, sc = pipe.compression
    channels = pipe.transformer.config.in_channels
    # ---- checks (host only) ----
    checks.check_video_size(height, width, num_frames, sc, tc)
    frame_rate = checks.check_frame_rate(frame_rate)
    if output_type not in ('np', 'latent'):
      raise UsageError(f"output_type={output_type!r}; choose 'np' or 'latent'")
    checks.check_seed(seed)
    if noise is not None and not callable(noise):
      raise UsageError(f"noise={noise!r} must be a callable (start, shape) -> array")
    grid = ((num_frames - 1) // tc + 1, height // sc, width // sc)
    n_frames, h, w = grid
    tile, overlap, windows = check_windows(num_frames, temporal_tile_size, temporal_overlap, tc)
    strengths = check_strengths(
        cond_strength=cond_strength, temporal_overlap_cond_strength=temporal_overlap_cond_strength,
        adain_factor=adain_factor, guiding_strength=guiding_strength,
        negative_index_strength=negative_index_strength)
    prompts = window_prompts(prompt, prompt_segments, len(windows))
    if negative_prompt is not None and not isinstance(negative_prompt, str):
      raise UsageError(f"negative_prompt={negative_prompt!r} must be a string")
    _int('max_sequence_length', max_sequence_length, 1)
    eta = checks.check_finite('eta', eta, 0.0, 1.0)
    sched = self._schedule(num_inference_steps, sigmas, skip_steps_sigma_threshold,
                           tile * h * w)
    guidance, (use_cfg, _) = guidance_lib.per_step(
        sched[:-1] * 1000, pipe.transformer.config.num_layers, None,
        guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, stg_scale=0.0,
        stg_rescale=1.0, skip_block_list=None, skip_layer_strategy='attention_values')
    base = _latents_arg('latents', latents, n_frames, (h, w), channels)
    guide = _latents_arg('guidance_latents', guidance_latents, n_frames, (h, w), channels)
    negative = _latents_arg('negative_index_latents', negative_index_latents, None, (h, w),
                            channels)
    decode_timestep = checks.check_finite('decode_timestep', decode_timestep, 0.0, 1.0)
    if decode_noise_scale is not None:
      decode_noise_scale = checks.check_finite('decode_noise_scale', decode_noise_scale, 0.0,
                                               1.0)
    decode_tiling = self._decode_tiling(h, w, decode_horizontal_tiles, decode_vertical_tiles,
                                        decode_overlap)
    d_tile = _int('decode_temporal_tile', decode_temporal_tile, 2)
    d_overlap = _int('decode_temporal_overlap', decode_temporal_overlap, 1)
    if d_overlap >= d_tile:
      raise UsageError(f"decode_temporal_overlap={decode_temporal_overlap} must be below "
                       f"decode_temporal_tile={decode_temporal_tile}")
    pixels = None
    if cond_image is not None:
      media = conditioning_lib.read_media(conditioning_lib.Condition(image=cond_image))
      pixels = conditioning_lib.resize_media(media, height, width, 'diffusers')[0]
    show = sys.stderr.isatty() if progress is None else bool(progress)

    # ---- conditioning latents and text (T5 and the VAE encoder run here) ----
    base = np.zeros((1, *grid, channels), np.float32) if base is None else base.copy()
    if pixels is not None and strengths['cond_strength'] > 0:
      cond = np.asarray(pipe.encode_image([pixels.astype(np.float32) / 255.0], height, width))
      base[:, :1] = cond
      if negative is None:
        negative = cond
    texts = self._encode_texts(prompts, negative_prompt or '', use_cfg, max_sequence_length)

    # ---- windows ----
    key_windows, key_steps, key_decode = jax.random.split(jax.random.key(int(seed)), 3)
    programs: dict = {}
    out = first = None
    bar = _bar(len(windows), 'windows', show)
    for w_idx, (start, end) in enumerate(windows):
      win = self._window(w_idx, start, end, base, out, guide, negative, overlap, strengths,
                         pixels is not None, (tc, sc), frame_rate)
      shape = win.latents.shape  # [1, T_eff, H', W', C]
      z = (np.asarray(noise(start, shape), np.float32) if noise is not None else
           np.asarray(jax.random.normal(jax.random.fold_in(key_windows, start), shape)))
      if z.shape != shape:
        raise UsageError(f"noise({start}, {shape}) returned shape {list(z.shape)}")
      result = self._denoise_window(win, z, texts[prompts[w_idx]], sched, guidance, use_cfg,
                                    eta, jax.random.fold_in(key_steps, start), show, programs)
      if out is None:
        out = first = result
      else:  # the window's first frame dropped, AdaIN to the first window, cross-faded in
        result = result[:, 1:]
        if strengths['adain_factor'] > 0:
          result = adain(result, first, strengths['adain_factor'])
        n = result.shape[1]
        # overlap - 1 frames are shared once the first is dropped. diffusers concatenates a
        # single shared frame (overlap 2) instead of blending it, one latent frame too many
        # per window; blended here, so the video has exactly its num_frames.
        fused = crossfade(out[:, out.shape[1] - n:], result, overlap - 1)
        out = np.concatenate([out[:, :out.shape[1] - n], fused], axis=1)
      bar.update(1)
    bar.close()

    frames = None
    if output_type == 'np':
      frames = self.decode(out, decode_timestep, decode_noise_scale, key_decode,
                           tiling=decode_tiling, temporal_tile=d_tile,
                           temporal_overlap=d_overlap, last_frame_fix=bool(last_frame_fix),
                           programs=programs)
    return LTXLongVideoOutput(latents=out, frames=frames, windows=tuple(windows),
                              programs=tuple(programs.values()),
                              sigmas=(tuple(round(float(s), 6) for s in sched),))

  # -- parts -----------------------------------------------------------------------------------

  def _denoise_window(self, win: '_Window', noise: np.ndarray, text, sched: np.ndarray,
                      guidance, use_cfg: bool, eta: float, key: jax.Array, show: bool,
                      programs: dict) -> np.ndarray:
    """One window through the jitted soft-blend loop -> its own frames [1, T, H', W', C]
    (host), the appended conditioning frames dropped."""
    pipe = self.pipe
    _, t_eff, h, w, c = win.latents.shape
    strength = np.repeat(win.strength, h * w)[None]  # [1, N]
    clean = win.latents.reshape(1, -1, c)  # [1, N, C]
    free = (1 - strength)[..., None]
    x = noise.reshape(1, -1, c) * free + clean * (1 - free)  # held tokens start at c
    spec = loop_lib.LoopSpec(grid=(t_eff, h, w), cfg=use_cfg, progress=show,
                             partitioning=pipe.partitioning)
    graph, state = pipe._transformer_split
    args = pipe._global(x, clean, strength, sched, *text, guidance, win.coords,
                        np.float32(eta), key)
    program = blend_loop.denoise_blended_program(pipe.transformer)
    programs.setdefault(('denoise', spec, _shapes(args)),
                        ('denoise', program,
                         ((spec, graph), _abstract((state,) + args))))
    with pipe.timer('denoise'):
      if show:  # one program call per step, reported on the host
        result = blend_loop.denoise_blended_stepwise(pipe.transformer, spec, graph, state, *args)
      else:
        result = program(spec, graph, state, *args)
      result = np.asarray(result)
    return result.reshape(win.latents.shape)[:, :t_eff - win.appended]

  def _schedule(self, num_inference_steps, sigmas, threshold, tokens: int) -> np.ndarray:
    """-> the sigmas [S + 1] f32 each window runs (the skipped steps removed)."""
    if sigmas is not None:
      try:
        s = np.asarray(sigmas, np.float64)
      except (TypeError, ValueError):
        s = np.zeros((0,))
      if (s.ndim != 1 or len(s) < 2 or not np.all(np.isfinite(s)) or np.any(s < 0)
          or np.any(s > 1) or np.any(np.diff(s) >= 0)):
        raise UsageError(f"sigmas={sigmas!r} must be a strictly decreasing list of >= 2 values "
                         "in [0, 1] (end with 0 to finish denoising)")
      s = s.astype(np.float32)
    else:
      s = sigmas_for(self.pipe.scheduler, num_inference_steps, tokens)
    if threshold is not None:
      thr = checks.check_finite('skip_steps_sigma_threshold', threshold, None)
      if thr > 0:
        skip = int(np.sum(s[:-1] > thr))
        if skip == len(s) - 1:
          raise UsageError(f"skip_steps_sigma_threshold={threshold!r} skips every step (the "
                           f"schedule's sigmas are {[round(float(v), 4) for v in s]})")
        s = s[skip:]
    return s

  def _decode_tiling(self, h, w, horizontal, vertical, overlap) -> TilingConfig:
    """diffusers' tile counts and overlap (latent pixels) -> square spatial tiles of ours (the
    larger of diffusers' tile height and width)."""
    horizontal = _int('decode_horizontal_tiles', horizontal, 1)
    vertical = _int('decode_vertical_tiles', vertical, 1)
    overlap = _int('decode_overlap', overlap, 0)
    tile = max((h + (vertical - 1) * overlap) // vertical,
               (w + (horizontal - 1) * overlap) // horizontal, 1)
    # An overlap as large as the tile (tiny latents) shrinks to tile - 1.
    return TilingConfig(spatial_tile=tile, spatial_overlap=min(overlap, tile - 1),
                        temporal_tile=2, temporal_overlap=1)

  def _encode_texts(self, prompts, negative: str, use_cfg: bool, max_len: int) -> dict:
    """{prompt: (context [G, S, D], context_mask [G, S] f32)}, each distinct prompt once."""
    out = {}
    neg = self.pipe.encode_prompt([negative], max_len) if use_cfg else None
    for p in dict.fromkeys(prompts):
      emb, mask = self.pipe.encode_prompt([p], max_len)
      rows = [neg, (emb, mask)] if use_cfg else [(emb, mask)]
      out[p] = (jnp.concatenate([jnp.asarray(e) for e, _ in rows]),
                jnp.concatenate([jnp.asarray(m) for _, m in rows]).astype(jnp.float32))
    return out

  def _window(self, w_idx, start, end, base, out, guide, negative, overlap, strengths,
              has_image, compression, frame_rate) -> _Window:
    """A window's conditioning latents, per-frame strengths and coordinates (diffusers'
    order: previous tail, guidance, negative index)."""
    tc, sc = compression
    blocks = [base[:, start:end]]
    strength = [np.zeros(end - start, np.float32)]
    appended = 0

    def append(tail, n, s):
      nonlocal appended
      if tail is None or n <= 0 or s <= 0:
        return
      k = min(n, sum(b.shape[1] for b in blocks), tail.shape[1])
      if k <= 0:
        return
      blocks.append(tail[:, tail.shape[1] - k:])
      # diffusers' mask holds 1 - s in f32; the blend uses 1 - mask
      strength.append(np.full(k, 1 - np.float32(1.0 - s), np.float32))
      appended += k

    if w_idx > 0 and overlap > 0:
      append(out[:, out.shape[1] - min(overlap, out.shape[1]):], overlap,
             strengths['temporal_overlap_cond_strength'])
    guiding = 0
    if guide is not None:
      wg = guide[:, start:end]
      guiding = wg.shape[1] if w_idx == 0 else wg.shape[1] - overlap
      append(wg[:, wg.shape[1] - guiding:] if guiding > 0 else None, guiding,
             strengths['guiding_strength'])
    append(negative, 1, strengths['negative_index_strength'])
    strength = np.concatenate(strength)
    if w_idx == 0 and has_image and strengths['cond_strength'] > 0:
      strength[0] = 1 - np.float32(1.0 - strengths['cond_strength'])
    latents = np.concatenate(blocks, axis=1)
    # Coordinates as diffusers counts them (the counts, not what was appended).
    n_overlap = overlap if (w_idx > 0 and overlap > 0) else 0
    n_negative = 1 if (negative is not None and strengths['negative_index_strength'] > 0) else 0
    coords = window_coords(latents.shape[1], latents.shape[2], latents.shape[3], n_overlap,
                           max(guiding, 0), n_negative, tc, sc, frame_rate)
    return _Window(latents, strength, appended, coords)

  def decode(self, latents: np.ndarray, decode_timestep: float = 0.05,
             decode_noise_scale: float | None = None, key: jax.Array | None = None, *,
             tiling: TilingConfig | None = None, temporal_tile: int = 16,
             temporal_overlap: int = 4, last_frame_fix: bool = True,
             programs: dict | None = None) -> np.ndarray:
    """Normalised latents [1, F', H', W', C] (host) -> uint8 frames [1, F, H, W, 3] (host),
    F = t * (F' - 1) + 1, decoded in temporal chunks of `temporal_tile` latent frames (one
    shape, so one program; each spatially tiled by `tiling`) blended on the host with the
    VAE tiling's ramps. decode_noise_scale: the latents are mixed with that much noise for a
    timestep-conditioned VAE (None: none)."""
    vae = self.pipe.vae
    tc, sc = self.pipe.compression
    z = np.asarray(latents, np.float32)
    if last_frame_fix:
      z = np.concatenate([z, z[:, -1:]], axis=1)
    b, f, h, w, _ = z.shape
    size = min(f, temporal_tile)
    starts = tile_starts(f, size, min(temporal_overlap, size - 1))
    weights = axis_weights(starts, size, tc, first_frame=1)
    tiling = tiling or TilingConfig(temporal_tile=2, temporal_overlap=1)
    tiling = dataclasses.replace(tiling, temporal_tile=max(size, 2), temporal_overlap=1)
    out_frames = (f - 1) * tc + 1
    acc = np.zeros((b, out_frames, h * sc, w * sc, 3), np.float32)
    norm = np.zeros(out_frames, np.float32)
    key = jax.random.key(0) if key is None else key
    graph, state = nnx.split(vae)
    mix = decode_noise_scale is not None and vae.config.timestep_conditioning
    with self.pipe.timer('decode'):
      for i, s in enumerate(starts):
        args = self.pipe._global(z[:, s:s + size], np.float32(decode_timestep),
                                 np.float32(decode_noise_scale or 0.0), jax.random.fold_in(key, i))
        static = (graph, tiling, mix)
        if programs is not None:
          programs.setdefault(('decode', static[1:], _shapes(args)),
                              ('decode', _decode_chunk, (static, _abstract((state,) + args))))
        frames = np.asarray(_decode_chunk(*static, state, *args))  # [B, f_out, H, W, 3]
        wt = weights[i]
        acc[:, s * tc:s * tc + len(wt)] += frames * wt[None, :, None, None, None]
        norm[s * tc:s * tc + len(wt)] += wt
    video = acc / norm[None, :, None, None, None]
    if last_frame_fix:
      video = video[:, :-tc]
    return np.round(np.clip(video / 2 + 0.5, 0, 1) * 255).astype(np.uint8)


def _decode_chunk_impl(graph, tiling, mix, state, z, timestep, noise_scale, key):
  """One temporal chunk: denormalise, mix in decode noise, decode -> f32 frames."""
  vae = nnx.merge(graph, state)
  z = vae.denormalize(z)
  k_mix, k_inject = jax.random.split(key)
  t = None
  if vae.config.timestep_conditioning:
    if mix:
      z = (1 - noise_scale) * z + noise_scale * jax.random.normal(k_mix, z.shape, jnp.float32)
    t = jnp.full((z.shape[0],), timestep, jnp.float32)
  return vae.decode(z.astype(vae.dtype), t, key=k_inject, tiling=tiling).astype(jnp.float32)


_decode_chunk = jax.jit(_decode_chunk_impl, static_argnums=(0, 1, 2))


def _shapes(args) -> tuple:
  return tuple((tuple(np.shape(a)), str(jnp.result_type(a))) for a in jax.tree.leaves(args))


def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


class _NoBar:
  def update(self, n):
    pass

  def close(self):
    pass


def _bar(total: int, desc: str, show: bool):
  if not show:
    return _NoBar()
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=desc, unit='window', leave=False)
