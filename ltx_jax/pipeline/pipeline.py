"""`LTXPipeline`: prompt -> T5 -> scanned rectified-flow loop -> VAE decode -> frames.

A call is three public stages: `prepare` (arguments checked, schedule, guidance, text and image
conditioning -> a `GenerationPlan`), `denoise` (plan -> final latents) and `decode` (latents ->
frames). `__call__` composes them; other recipes (a second pass on upsampled latents,
conditioning tokens, windows of a long video) are other compositions of the same stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import checks
from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import CheckpointFormatError, UsageError
from ltx_jax.models.transformer.rope import token_coords
from ltx_jax.nn.lora import lora_scales, set_lora_scales
from ltx_jax.pipeline import conditioning as conditioning_lib
from ltx_jax.pipeline import guides as guides_lib
from ltx_jax.pipeline import inputs as inputs_lib
from ltx_jax.pipeline.plan import GenerationPlan, noised_to, trim_schedule
from ltx_jax.sampling import cache as cache_lib
from ltx_jax.sampling import guidance as guidance_lib
from ltx_jax.sampling import loop as loop_lib
from ltx_jax.sampling.latent_ops import tone_map_latents
from ltx_jax.sampling.schedules import SchedulerConfig, sigmas_for
from ltx_jax.weights.values import in_file


@dataclasses.dataclass
class LTXPipelineOutput:
  latents: np.ndarray              # [B, F', H', W', C] final normalised latents
  frames: np.ndarray | None = None  # uint8 [B, F, H, W, 3]; None for output_type='latent'
  skipped_steps: int = 0           # steps the step cache (`cache=`) did not run in full
  sigmas: tuple = ()               # the noise levels each pass ran (0..1), one tuple per pass


_encode_text = jax.jit(lambda graph, state, ids, mask: nnx.merge(graph, state)(ids, mask),
                       static_argnums=0)


def no_timer(stage: str) -> contextlib.AbstractContextManager:
  """The default stage timer: times nothing."""
  del stage
  return contextlib.nullcontext()


def _sigma_list(sigmas) -> tuple[float, ...]:
  return tuple(round(float(s), 6) for s in np.asarray(sigmas))


class LTXPipeline:
  """Text- and image-to-video with LTX-Video.

  Build with `from_pretrained(source)` or from components. Calls take diffusers' argument
  names; see `__call__`, which is `prepare` -> `denoise` -> `decode`.
  """

  def __init__(self, transformer, vae, text_encoder=None, tokenizer=None,
               scheduler: SchedulerConfig | None = None, *, release: str | None = None,
               partitioning: sharding_lib.Partitioning | None = None,
               timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
               allowed_inference_steps: Sequence[float] | None = None):
    """partitioning: the mesh the components' parameters live on, with the rules and context
    attention for the activations (ltx_jax/sharding.py); None: one device.
    timer: `timer(stage)` returns a context manager entered around each stage's work, with
    the stage's results ready (block_until_ready) before it exits: 'prepare' (its host work),
    'text_encoding', 'image_encoding' (inside 'prepare'), 'denoise', 'decode'. Default: none.
    allowed_inference_steps: the timesteps (0..1 scale) a distilled checkpoint was trained on
    (its file's metadata; `from_pretrained` reads it): a schedule with any other timestep
    (compared at 4 decimals, as the official pipeline) is refused. None: any.
    """
    self.transformer = transformer
    self.vae = vae
    self.text_encoder = text_encoder
    self.tokenizer = tokenizer
    self.scheduler = scheduler or SchedulerConfig()
    self.release = release
    self.partitioning = partitioning
    self.timer = timer
    self.source = None  # the resolved ltx_jax.sources.ModelSource, when loaded from one
    self.allowed_inference_steps = (None if allowed_inference_steps is None else
                                    tuple(round(float(t), 4) for t in allowed_inference_steps))
    self._text_split = nnx.split(text_encoder) if text_encoder is not None else None

  @property
  def timer(self) -> Callable[[str], contextlib.AbstractContextManager]:
    """The stage timer (see `__init__`); setting None restores the default, none."""
    return self._timer

  @timer.setter
  def timer(self, timer: Callable[[str], contextlib.AbstractContextManager] | None):
    if timer is not None and not callable(timer):
      raise UsageError(f"timer={timer!r} must be None or a callable stage -> context manager")
    self._timer = timer or no_timer

  @classmethod
  def from_pretrained(cls, source: str | Path, dtype=jnp.float32, *, file: str | None = None,
                      release: str | None = None, allow_custom: bool = False,
                      text_encoder_dtype=None, attention: str = 'auto', offline: bool | None = None,
                      mesh=None, rules: sharding_lib.Rules | None = None,
                      context_attention: str = 'allgather', param_dtype=None,
                      matmul: str = 'default', allow_nonfinite: bool = False,
                      loras=None, lora_mode: str = 'merged', lora_strict: bool = True
                      ) -> 'LTXPipeline':
    """Builds the pipeline from whatever `ltx_jax.sources.resolve_source` understands: a
    diffusers repo folder, a folder with an official single file (+ T5 folder or GGUF +
    tokenizer), a checkpoint written by tools/convert.py, or a hub repo id.

    file / release / allow_custom / offline: as `resolve_source`. dtype: compute and storage
    dtype of the transformer and VAE; text_encoder_dtype defaults to it.
    mesh: a device mesh (`ltx_jax.sharding.make_mesh`): every parameter is placed on it by the
      rules table (`rules`, default `ltx_jax.sharding.RULES`), activations are constrained by the
      same table, and self-attention runs context parallel over the mesh's 'context' axis by
      `context_attention` ('allgather' or 'ring'). None: one device.
    param_dtype: storage dtype of the transformer (default: dtype); 'fp8' keeps its block weights in float8_e4m3fn (as the official -fp8 files) and upcasts them
      per matmul. matmul='fp8' multiplies those fp8 weights with fp8 activations instead
      (`ltx_jax.nn.set_matmul`: cuBLASLt fp8 GEMMs on GPUs with fp8 tensor cores).
    allow_nonfinite: load weights holding NaN or Inf (by default a LoadError names the first
      such tensor while loading, before anything is generated).
    loras: LoRA adapters for the transformer, `[path | (path, scale), ...]` in the diffusers /
      PEFT, official trainer / ComfyUI or kohya layout (`ltx_jax.weights.lora`); IC-LoRA control
      models are loaded the same way. lora_mode: 'merged' (added to the weights while they
      load) or 'runtime' (kept beside them: `set_lora_scales` changes scales without
      recompiling). lora_strict=False skips LoRA modules that match no layer (warning).
    """
    from ltx_jax.nn import MATMULS, set_matmul
    from ltx_jax.weights.lora import check_mode, parse_loras
    from ltx_jax.models.t5 import load_text_encoder, load_tokenizer
    from ltx_jax.models.transformer import load_transformer
    from ltx_jax.models.vae import load_vae
    from ltx_jax.compilation_cache import configure_compilation_cache
    from ltx_jax.sources import read_scheduler_config, resolve_source
    if matmul not in MATMULS:
      raise UsageError(f"matmul={matmul!r}; choose one of {', '.join(MATMULS)}")
    if matmul == 'fp8' and param_dtype != 'fp8':
      raise UsageError("matmul='fp8' multiplies fp8 weights: pass param_dtype='fp8' too")
    check_mode(lora_mode)
    parse_loras(loras)  # bad adapters refused before anything loads
    configure_compilation_cache()  # on by default (LTX_JAX_COMPILATION_CACHE=0 disables)
    ms = resolve_source(source, file=file, release=release, allow_custom=allow_custom,
                        offline=offline)
    ms.require('transformer', 'vae', 'text_encoder', 'tokenizer')
    sched = read_scheduler_config(ms)
    scheduler, allowed = None, None
    if sched is not None:
      with in_file(ms.scheduler):  # a damaged config: one error naming the file
        scheduler = (SchedulerConfig.from_official(sched['config'])
                     if sched['format'] == 'official'
                     else SchedulerConfig.from_diffusers(sched['config']))
        allowed = _allowed_steps(sched)
    te_dtype = dtype if text_encoder_dtype is None else text_encoder_dtype
    partitioning = (None if mesh is None else
                    sharding_lib.Partitioning.create(mesh, rules, context_attention))
    where = dict(mesh=mesh, rules=rules, allow_nonfinite=allow_nonfinite)
    transformer = load_transformer(ms.transformer, dtype=dtype, param_dtype=param_dtype,
                                   attention=attention, loras=loras, lora_mode=lora_mode,
                                   lora_strict=lora_strict, **where)
    if matmul != 'default':
      set_matmul(transformer, matmul)
    pipe = cls(transformer, load_vae(ms.vae, dtype=dtype, **where),
               load_text_encoder(ms.text_encoder, dtype=te_dtype, attention=attention, **where),
               load_tokenizer(ms.tokenizer), scheduler, release=ms.release.name,
               partitioning=partitioning, allowed_inference_steps=allowed)
    pipe.source = ms
    return pipe

  # -- pieces --------------------------------------------------------------------------------

  @property
  def _transformer_split(self):
    """(graph, state) of the transformer, split at each use so that changes made to it since
    (runtime LoRA scales, `set_matmul`) reach the jitted loop."""
    return nnx.split(self.transformer)

  @property
  def lora_adapters(self) -> tuple:
    """The transformer's LoRA adapters (`ltx_jax.weights.lora.Adapter`: name, file, sha256,
    scale), with the current scales of runtime adapters."""
    adapters = getattr(self.transformer, 'lora_adapters', ())
    current = lora_scales(self.transformer)
    return tuple(dataclasses.replace(a, scale=current.get(a.name, a.scale)) for a in adapters)

  def set_lora_scales(self, scales: Sequence[float] | Mapping[str, float]) -> None:
    """Changes the scales of runtime LoRA adapters (`from_pretrained(..., loras=...,
    lora_mode='runtime')`): one per adapter in load order, or {name: scale}; 0 switches one
    off. The next generation runs the same compiled program."""
    set_lora_scales(self.transformer, scales)

  @property
  def mesh(self):
    return None if self.partitioning is None else self.partitioning.mesh

  def _global(self, *xs):
    """Inputs as arrays replicated over the mesh (needed across processes); as-is without."""
    out = tuple(sharding_lib.replicated(self.mesh, x) for x in xs)
    return out[0] if len(out) == 1 else out

  @property
  def compression(self) -> tuple[int, int]:
    """(temporal, spatial) pixels per latent."""
    cfg = self.vae.config
    return cfg.temporal_compression, cfg.spatial_compression

  def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 128
                    ) -> tuple[jax.Array, jax.Array]:
    """Prompts -> (T5 embeddings [B, S, D], mask [B, S]) with S = max_sequence_length. The
    mask is passed to T5 as in the official pipeline (diffusers leaves T5 unmasked)."""
    if self.text_encoder is None or self.tokenizer is None:
      raise UsageError("this pipeline has no text encoder/tokenizer; pass prompt_embeds and "
                       "prompt_attention_mask instead of a prompt")
    with self.timer('text_encoding'):
      ids, mask = self.tokenizer(list(prompts), max_length=max_sequence_length)
      graph, state = self._text_split
      ids, mask = self._global(np.asarray(ids), np.asarray(mask))
      return jax.block_until_ready((_encode_text(graph, state, ids, mask), mask))

  def encode_image(self, images: Sequence[Any], height: int, width: int) -> jax.Array:
    """Conditioning images (paths, PIL images or [h, w, 3] arrays; resized to cover height x
    width and centre-cropped) -> normalised f32 latents of one frame, [B, 1, H', W', C]."""
    pixels = np.stack([inputs_lib.resize_and_crop(inputs_lib.load_image(im), height, width)
                       for im in images])  # [B, H, W, 3] in [0, 1]
    with self.timer('image_encoding'):
      video = self._global(np.asarray(pixels * 2 - 1)[:, None])  # [B, 1, H, W, 3] in [-1, 1]
      z = self.vae.encode(video.astype(self.vae.dtype))
      return jax.block_until_ready(self.vae.normalize(z).astype(jnp.float32))

  # -- the stages ----------------------------------------------------------------------------

  def __call__(self, prompt: str | Sequence[str] | None = None,
               negative_prompt: str | Sequence[str] | None = None, image: Any = None,
               video: Any = None, height: int = 512, width: int = 704, num_frames: int = 161,
               frame_rate: float = 25.0, num_inference_steps: int = 50,
               timesteps: Sequence[float] | None = None, guidance_scale: float = 3.0,
               guidance_rescale: float = 0.0, seed: int = 0, latents: Any = None,
               prompt_embeds: Any = None, prompt_attention_mask: Any = None,
               negative_prompt_embeds: Any = None, negative_prompt_attention_mask: Any = None,
               decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
               max_sequence_length: int = 128, num_videos_per_prompt: int = 1,
               output_type: str = 'np', stochastic_sampling: bool = False,
               stg_scale: float | Sequence[float] = 0.0,
               stg_rescale: float | Sequence[float] = 0.7,
               skip_block_list: Sequence[int] | Sequence[Sequence[int]] | None = None,
               skip_layer_strategy: str = 'attention_values',
               guidance_timesteps: Sequence[float] | None = None,
               cfg_star_rescale: bool = False,
               conditions: Sequence[conditioning_lib.Condition] | None = None,
               condition_preprocessing: str = 'official', image_cond_noise_scale: float = 0.15,
               progress: bool | None = None, skip_initial_inference_steps: int = 0,
               skip_final_inference_steps: int = 0, denoise_strength: float = 1.0,
               noise: Any = None, tone_map_compression_ratio: float = 0.0,
               cache: cache_lib.FirstBlockCache | cache_lib.TeaCache | None = None,
               guides: Sequence[guides_lib.Guide] | None = None
               ) -> LTXPipelineOutput:
    """Generates videos: `prepare` -> `denoise` -> `decode`.

    decode_timestep, decode_noise_scale: the decoder's noise (see `decode`); the scale defaults
    to decode_timestep (as diffusers). tone_map_compression_ratio: compresses the latents'
    large values before decoding (official; 0..1, 0 = off). output_type: 'np' (frames) or 'latent' (no decode).
    The other arguments are `prepare`'s. Every argument is checked before anything compiles.
    Returns `.latents` [B, F', H', W', C] and, unless output_type='latent', `.frames` uint8
    [B, F, H, W, 3].
    """
    if output_type not in ('np', 'latent'):
      raise UsageError(f"output_type={output_type!r}; choose 'np' or 'latent'")
    decode_timestep, decode_noise_scale = _decode_noise(decode_timestep, decode_noise_scale)
    checks.check_finite('tone_map_compression_ratio', tone_map_compression_ratio, 0.0, 1.0)
    plan = self.prepare(
        prompt, negative_prompt, image, video=video, height=height, width=width,
        num_frames=num_frames,
        frame_rate=frame_rate, num_inference_steps=num_inference_steps, timesteps=timesteps,
        guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, seed=seed,
        latents=latents, prompt_embeds=prompt_embeds,
        prompt_attention_mask=prompt_attention_mask,
        negative_prompt_embeds=negative_prompt_embeds,
        negative_prompt_attention_mask=negative_prompt_attention_mask,
        max_sequence_length=max_sequence_length, num_videos_per_prompt=num_videos_per_prompt,
        stochastic_sampling=stochastic_sampling, stg_scale=stg_scale, stg_rescale=stg_rescale,
        skip_block_list=skip_block_list, skip_layer_strategy=skip_layer_strategy,
        guidance_timesteps=guidance_timesteps, cfg_star_rescale=cfg_star_rescale,
        conditions=conditions, condition_preprocessing=condition_preprocessing,
        image_cond_noise_scale=image_cond_noise_scale,
        progress=progress, skip_initial_inference_steps=skip_initial_inference_steps,
        skip_final_inference_steps=skip_final_inference_steps, denoise_strength=denoise_strength,
        noise=noise, cache=cache, guides=guides)
    final, ran = self._denoise(plan)
    frames = None
    if output_type == 'np':
      frames = self.decode(final, decode_timestep, decode_noise_scale, plan.decode_key,
                           tone_map_compression_ratio=tone_map_compression_ratio)
    return LTXPipelineOutput(latents=np.asarray(final), frames=frames,
                             skipped_steps=int(np.sum(~np.asarray(ran))),
                             sigmas=(_sigma_list(plan.sigmas),))

  def prepare(self, prompt: str | Sequence[str] | None = None,
              negative_prompt: str | Sequence[str] | None = None, image: Any = None, *,
              video: Any = None, height: int = 512, width: int = 704, num_frames: int = 161,
              frame_rate: float = 25.0, num_inference_steps: int = 50,
              timesteps: Sequence[float] | None = None, guidance_scale: float = 3.0,
              guidance_rescale: float = 0.0, seed: int = 0, latents: Any = None,
              prompt_embeds: Any = None, prompt_attention_mask: Any = None,
              negative_prompt_embeds: Any = None, negative_prompt_attention_mask: Any = None,
              max_sequence_length: int = 128, num_videos_per_prompt: int = 1,
              stochastic_sampling: bool = False, stg_scale: float | Sequence[float] = 0.0,
              stg_rescale: float | Sequence[float] = 0.7,
              skip_block_list: Sequence[int] | Sequence[Sequence[int]] | None = None,
              skip_layer_strategy: str = 'attention_values',
              guidance_timesteps: Sequence[float] | None = None, cfg_star_rescale: bool = False,
              conditions: Sequence[conditioning_lib.Condition] | None = None,
              condition_preprocessing: str = 'official', image_cond_noise_scale: float = 0.15,
              progress: bool | None = None, skip_initial_inference_steps: int = 0,
              skip_final_inference_steps: int = 0, denoise_strength: float = 1.0,
              noise: Any = None,
              cache: cache_lib.FirstBlockCache | cache_lib.TeaCache | None = None,
              guides: Sequence[guides_lib.Guide] | None = None,
              media_size: tuple[int, int] | None = None
              ) -> GenerationPlan:
    """Checks the arguments and builds the `GenerationPlan` of one run; runs T5 (and the VAE
    encoder for `image`), nothing else. B = prompts x num_videos_per_prompt; the latent grid is
    (F', H', W') = ((num_frames - 1) / t + 1, height / s, width / s) for the VAE's (t, s)
    compression (`self.compression`).

    prompt / prompt_embeds [P, S_txt, D] + prompt_attention_mask [P, S_txt]: exactly one.
    negative_prompt / negative_prompt_embeds (+ mask, shaped as the prompt's): the CFG rows.
    image: first-frame conditioning, one for all prompts or one per prompt (path, PIL image or
      [h, w, 3] array): latent frame 0 becomes the image's latents, marked given in cond_mask.
    timesteps: explicit schedule on the 0..1000 scale (overrides num_inference_steps).
    video: video-to-video: a video (path or uint8 [F, H, W, 3], at least num_frames frames)
      encoded after `condition_preprocessing` (the official input handling: crop, bicubic
      resize, blur, CRF) and used as `latents` (with `skip_initial_inference_steps` or
      `denoise_strength` below 1 to keep part of it).
    latents: starting latents, normalised, [B, F', H', W', C]; by default the noise. When the
      schedule's first timestep t0 is below 1 (a `timesteps` list starting below 1000,
      `skip_initial_inference_steps`, `denoise_strength`) they are re-noised to it as the
      official pipeline does, t0 * noise + (1 - t0) * latents; at t0 = 1 they are used as given.
    noise: the starting noise [B, F', H', W', C] f32 (default N(0, 1) from `seed`).
    skip_initial_inference_steps, skip_final_inference_steps: the official pipeline's: drop the
      first / last steps of the `num_inference_steps` schedule (the last kept step goes to 0);
      skipping initial steps needs `latents`. Not with an explicit `timesteps` list (trim it).
    denoise_strength: diffusers' LTXConditionPipeline's: keep the last int(S * strength) of the
      S steps (1: all); below 1 it needs `latents`.
    seed: one key split into (starting noise, loop, decode).
    guidance_scale, stg_scale, stg_rescale: a value, or one value per entry of
      `guidance_timesteps` (0..1000; each step uses the first entry <= its timestep, as the
      official pipeline). skip_block_list: the layers perturbed for spatio-temporal guidance,
      one list or one list per guidance_timesteps entry. stg_rescale (official
      `rescaling_scale`) applies with STG only; guidance_rescale is diffusers' (after CFG).
      cfg_star_rescale: CFG-star. stochastic_sampling: re-noise the predicted x0 each step.
    conditions: `ltx_jax.Condition` items (images or 8N+1-frame segments at any frame, with a
      strength), shared by all videos, as the official pipeline's conditioning items: items at
      frame 0 replace the leading latents, later ones become extra tokens at their own
      positions (dropped before decoding). Not together with `image`.
    condition_preprocessing: the items' pixels: 'official' (crop to the aspect, 3x3 blur,
      H.264 CRF-29 round trip, bilinear resize), 'diffusers' (Lanczos stretch; and, as
      LTXConditionPipeline, causal time coordinates whatever the transformer's setting) or
      'none' (as given).
    guides: `ltx_jax.Guide` items (IC-LoRA control: a reference clip or image at a frame, with
      a strength), shared by all videos: every latent frame of each guide is appended as extra
      tokens at its own positions (never replacing the video's latents) and dropped before
      decoding (ltx_jax/pipeline/guides.py; README "IC-LoRA control"). Not with `image`.
    image_cond_noise_scale: hard-conditioned tokens of `conditions` are re-noised to
      start + scale * noise * t^2 before each step (0 disables); guide tokens never are.
    media_size: (height, width) of the output that `image` and the items of `conditions` are
      cropped for before they are resized to this video's size ('official' preprocessing: its
      aspect-ratio crop; `image`: its cover + crop): inference.py prepares media once for the
      output and the official pipeline resizes them to each pass (`LTXMultiScalePipeline`
      passes its output size to both passes). None: this video's size.
    progress: report denoising steps (ltx_jax/sampling/progress.py): a bar on a terminal, log
      lines (logger `ltx_jax.progress`) otherwise; None: on a terminal only. The loop then runs
      one compiled step per call instead of one scan (the same step; no host callback, so the
      persistent compilation cache keeps it).
    cache: a step cache, `ltx_jax.FirstBlockCache(threshold)` or `ltx_jax.TeaCache(threshold)`
      (ltx_jax/sampling/cache.py); None runs every block of every step. Its threshold is
      traced: changing it does not recompile.
    """
    with self.timer('prepare'):
      grid = self._check_video(height, width, num_frames, num_videos_per_prompt, seed)
      frame_rate = checks.check_frame_rate(frame_rate)
      cache = cache_lib.check_cache(cache)
      if video is not None and latents is not None:
        raise UsageError("pass video= (encoded here) or latents=, not both")
      sigmas = self._schedule(num_inference_steps, timesteps, math.prod(grid),
                              latents if video is None else video,
                              skip_initial_inference_steps, skip_final_inference_steps,
                              denoise_strength)
      guidance, (use_cfg, use_stg) = guidance_lib.per_step(
          sigmas[:-1] * 1000, self.transformer.config.num_layers, guidance_timesteps,
          guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
          stg_scale=stg_scale, stg_rescale=stg_rescale, skip_block_list=skip_block_list,
          skip_layer_strategy=skip_layer_strategy)
      # Host-side checks of the batch, the starting latents and the image before T5 runs.
      n_prompts = _prompt_count(prompt, prompt_embeds)
      shape = (n_prompts * num_videos_per_prompt, *grid, self.transformer.config.in_channels)
      key_noise, key_loop, key_decode = jax.random.split(jax.random.key(int(seed)), 3)
      media_size = _media_size(media_size, height, width)
      pixels = _condition_pixels(image, n_prompts, height, width, media_size)  # [H, W, 3] each
      video_pixels = self._load_video(video, float(sigmas[0]), num_frames, height, width,
                                      condition_preprocessing)
      items = self._load_conditions(conditions, image, num_frames, height, width,
                                    condition_preprocessing, media_size)
      guide_items = self._load_guides(guides, image, num_frames, height, width)
      if items or guide_items:
        checks.check_finite('image_cond_noise_scale', image_cond_noise_scale, 0.0, None)
      if video_pixels is not None:  # video-to-video: its latents, re-noised to the first sigma
        latents = self._encode_video(video_pixels, shape[0])
      start = self._starting_latents(latents, noise, shape, key_noise, float(sigmas[0]))
      groups = self._text_inputs(
          prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
          negative_prompt_attention_mask, use_cfg, max_sequence_length)
      if use_stg:
        groups.append(groups[-1])  # the perturbed rows see the positive prompt
      context, context_mask = _rows(groups, num_videos_per_prompt)
      tc, sc = self.compression
      causal = self.transformer.config.causal_temporal_positioning
      packed = start.reshape(shape[0], -1, shape[-1])  # [B, N, C]
      coords = jnp.asarray(token_coords(grid, tc, sc, frame_rate, causal))
      if items:
        packed, coords, cond_mask, cond_parts = self._condition_tokens(
            items, start, frame_rate, jax.random.fold_in(key_noise, 1),
            causal=causal or condition_preprocessing == 'diffusers')
      else:
        start, cond_mask, cond_parts = self._image_condition(pixels, start, height, width)
        packed = start.reshape(shape[0], -1, shape[-1])
      noised = packed.shape[1]  # conditioning noise stops before the guide tokens
      if guide_items:  # after the grid and any condition tokens, at the grid's time rule
        packed, coords, cond_mask = self._guide_tokens(
            guide_items, packed, coords, cond_mask, frame_rate,
            jax.random.fold_in(key_noise, 2),
            causal=causal or (bool(items) and condition_preprocessing == 'diffusers'))
      spec = loop_lib.LoopSpec(
          grid=grid, cfg=use_cfg, stg=use_stg,
          stg_strategy=skip_layer_strategy if use_stg else None,
          cfg_star=bool(cfg_star_rescale) and use_cfg, conditioned=cond_mask is not None,
          cond_noise_scale=float(image_cond_noise_scale) if items else 0.0,
          noised_tokens=noised if guide_items and items else None,
          stochastic=bool(stochastic_sampling),
          progress=sys.stderr.isatty() if progress is None else bool(progress),
          partitioning=self.partitioning, cache=None if cache is None else cache.kind)
      return GenerationPlan(
          spec=spec, latents=packed, sigmas=jnp.asarray(sigmas), guidance=guidance,
          context=context, context_mask=context_mask, coords=coords, cond_mask=cond_mask,
          key=key_loop, decode_key=key_decode,
          cache=None if cache is None else cache_lib.params(cache),
          video_weight=cond_parts[0], cond_latents=cond_parts[1])

  def denoise(self, plan: GenerationPlan) -> jax.Array:
    """Runs the plan's schedule (one jitted `lax.scan`, compiled once per `plan.spec` and
    shapes) -> the video's final normalised latents, f32 [B, F', H', W', C] (tokens after the
    grid dropped), replicated over the mesh, if any. The plan may be any `GenerationPlan`
    whose shapes agree (`plan.check()`), e.g. one `prepare` made and `dataclasses.replace`
    changed."""
    return self._denoise(plan)[0]

  def _denoise(self, plan: GenerationPlan) -> tuple[jax.Array, np.ndarray]:
    """`denoise`, and bool [S]: whether each step ran every block (see `prepare`'s cache)."""
    plan.check()
    graph, state = self._transformer_split
    with self.timer('denoise'):
      args = self._global(plan.latents, plan.sigmas, plan.context, plan.context_mask,
                          plan.guidance, plan.coords, plan.cond_mask, plan.key, plan.cache)
      if plan.spec.progress:  # one program call per step, reported on the host
        packed, ran = loop_lib.denoise_stepwise(self.transformer, plan.spec, graph, state,
                                                *args)
      else:
        packed, ran = loop_lib.denoise_program(self.transformer)(plan.spec, graph, state, *args)
      packed, ran = jax.block_until_ready((packed, ran))
    return plan.unpack(packed), np.asarray(ran)

  def decode(self, latents: jax.Array, decode_timestep: float = 0.0,
             decode_noise_scale: float = 0.0, key: jax.Array | None = None, *,
             tone_map_compression_ratio: float = 0.0) -> np.ndarray:
    """Normalised latents [B, F', H', W', C] -> uint8 frames [B, F, H, W, 3], F = t*(F'-1)+1:
    `decode_video`'s frames converted to 8 bits on the device, on the host."""
    return np.asarray(self.decode_video(
        latents, decode_timestep, decode_noise_scale, key,
        tone_map_compression_ratio=tone_map_compression_ratio, as_uint8=True))

  def decode_video(self, latents: jax.Array, decode_timestep: float = 0.0,
                   decode_noise_scale: float = 0.0, key: jax.Array | None = None, *,
                   tone_map_compression_ratio: float = 0.0, as_uint8: bool = False
                   ) -> jax.Array:
    """Normalised latents [B, F', H', W', C] -> the decoder's frames, f32 [B, F, H, W, 3] in
    about [-1, 1] (as_uint8: uint8, converted on the device), F = t*(F'-1)+1.

    With a timestep-conditioned VAE (0.9.1+) the latents are first mixed with noise,
    (1 - decode_noise_scale) * z + decode_noise_scale * N(0, 1), and the decoder is told
    decode_timestep; `key` (default key(0)) draws that noise and the decoder's own noise
    injection. tone_map_compression_ratio (0..1, official): then the normalised latents' large
    values are compressed (`ltx_jax.sampling.latent_ops.tone_map_latents`; 0 leaves them). On a
    single-process mesh the rows are split over its batch axes (data, fsdp:
    ltx_jax/sharding.py) where they divide; every process receives all frames.
    """
    ratio = checks.check_finite('tone_map_compression_ratio', tone_map_compression_ratio, 0.0,
                                1.0)
    with self.timer('decode'):
      z = self.vae.denormalize(self._global(latents))
      timestep = None
      # k_inject drives the decoder's learned noise injection (0.9.1), as the references do.
      k_mix, k_inject = jax.random.split(jax.random.key(0) if key is None else key)
      if self.vae.config.timestep_conditioning:
        noise = self._global(jax.random.normal(k_mix, z.shape, jnp.float32))
        z = (1 - decode_noise_scale) * z + decode_noise_scale * noise
        timestep = self._global(jnp.full((z.shape[0],), decode_timestep, jnp.float32))
      if ratio > 0:  # on the normalised latents, after the noise (as the official pipeline)
        z = self.vae.denormalize(tone_map_latents(self.vae.normalize(z), ratio))
      z = z.astype(self.vae.dtype)
      if self.partitioning is not None and jax.process_count() == 1:
        # Rows over the batch axes (single process: a tiled decode spreads its tiles over the
        # mesh's devices only where every row is addressable).
        z = jax.device_put(z, self.partitioning.sharding(z.shape, ('batch',) + (None,) * 4))
      frames = self.vae.decode(z, timestep, key=k_inject, mesh=self.mesh, as_uint8=as_uint8)
      return jax.block_until_ready(sharding_lib.gather(frames))

  # -- prepare's parts -----------------------------------------------------------------------

  def _check_video(self, height, width, num_frames, num_videos_per_prompt, seed
                   ) -> tuple[int, int, int]:
    """-> the latent grid (F', H', W')."""
    tc, sc = self.compression
    checks.check_video_size(height, width, num_frames, sc, tc)
    if (not isinstance(num_videos_per_prompt, int) or isinstance(num_videos_per_prompt, bool)
        or num_videos_per_prompt < 1):
      raise UsageError(f"num_videos_per_prompt={num_videos_per_prompt!r} must be an int >= 1")
    checks.check_seed(seed)
    return (num_frames - 1) // tc + 1, height // sc, width // sc

  def _schedule(self, num_inference_steps, timesteps, seq_len: int, latents, skip_initial,
                skip_final, denoise_strength) -> np.ndarray:
    """The run's [S + 1] f32 sigmas: the full schedule less the skipped steps (official
    skip_initial / skip_final_inference_steps, diffusers' denoise_strength), checked."""
    sigmas = sigmas_for(self.scheduler, num_inference_steps, seq_len, timesteps)
    first, last = _skipped_steps(sigmas.shape[0] - 1, timesteps is not None, latents is not None,
                                 skip_initial, skip_final, denoise_strength)
    sigmas = trim_schedule(sigmas, first, last)
    if self.allowed_inference_steps is not None:
      bad = disallowed_timesteps(sigmas, self.allowed_inference_steps)
      if bad:
        raise UsageError(
            f"timesteps {bad} are not among this distilled checkpoint's allowed inference "
            "steps (0..1000 scale; to within 1, as integer timesteps write them, plus a last "
            f"finishing step at <= {1000 * FINISHING_SIGMA:g}): "
            f"{[round(1000 * t, 1) for t in self.allowed_inference_steps]}")
    return sigmas

  def _starting_latents(self, latents, noise, shape, key, t0: float) -> jax.Array:
    """[B, F', H', W', C] f32: the noise (given, or N(0, 1) from `key`) without latents; the
    given latents re-noised to t0 < 1 (t0 * noise + (1 - t0) * latents), or as given at 1."""
    def checked(name, x):
      x = jnp.asarray(x, jnp.float32)
      if x.shape != shape:
        raise UsageError(f"{name} have shape {tuple(x.shape)}; expected {shape} "
                         "(batch, latent frames, height, width, channels)")
      return x
    noise = (jax.random.normal(key, shape, jnp.float32) if noise is None
             else checked('noise', noise))
    return noise if latents is None else noised_to(checked('latents', latents), noise, t0)

  def _image_condition(self, pixels: list[np.ndarray] | None, latents: jax.Array, height: int,
                       width: int) -> tuple[jax.Array, jax.Array | None, tuple]:
    """Latent frame 0 <- the images' latents; -> (latents, cond_mask [B, N] or None,
    (video_weight [B, N], cond_latents [B, N, C]) or (None, None): `GenerationPlan`'s)."""
    if pixels is None:
      return latents, None, (None, None)
    b, c = latents.shape[0], latents.shape[-1]
    init = self.encode_image(pixels, height, width)  # [1 or P, 1, H', W', C]
    init = jnp.broadcast_to(jnp.repeat(init, b // init.shape[0], axis=0),
                            (b, 1, *latents.shape[2:]))
    cond_mask = jnp.zeros(latents.shape[:4], jnp.float32).at[:, 0].set(1.0).reshape(b, -1)
    given = jnp.zeros_like(latents).at[:, :1].set(init).reshape(b, -1, c)
    return latents.at[:, :1].set(init), cond_mask, (1 - cond_mask, given)

  def _load_video(self, video, t0: float, num_frames: int, height: int, width: int,
                  preprocessing: str) -> np.ndarray | None:
    """Host side of `video=`: read, checked and prepared -> pixels [F, H, W, 3] or None."""
    if video is None:
      return None
    if t0 >= 1:
      raise UsageError("video= starts from the video's latents: pass denoise_strength < 1 or "
                       "skip_initial_inference_steps > 0 (or a timesteps list below 1000)")
    return conditioning_lib.load_input_video(video, num_frames, height, width, preprocessing)

  def _encode_pixels(self, pixels: np.ndarray) -> jax.Array:
    """Prepared pixels [F, H, W, 3] in [-1, 1] -> normalised f32 latents [1, F', H', W', C]
    (video-to-video inputs, conditioning items, guides)."""
    z = self.vae.encode(self._global(jnp.asarray(pixels)[None]).astype(self.vae.dtype))
    return self.vae.normalize(z).astype(jnp.float32)

  def _encode_video(self, pixels: np.ndarray, batch: int) -> jax.Array:
    """Video-to-video pixels [F, H, W, 3] -> normalised latents [B, F', H', W', C]."""
    with self.timer('image_encoding'):
      z = self._encode_pixels(pixels)
      return jax.block_until_ready(jnp.broadcast_to(z, (batch,) + z.shape[1:]))

  def _load_conditions(self, conditions, image, num_frames: int, height: int, width: int,
                       preprocessing: str, media_size: tuple[int, int]) -> list:
    """Host side of `conditions`: checked and read -> [(Condition, pixels [F, H, W, 3])]
    (official crops to media_size's aspect ratio)."""
    items = conditioning_lib.as_conditions(conditions)
    if not items:
      return []
    items = conditioning_lib.resolve_frames(items, num_frames)  # -1: the last frame
    if image is not None:
      raise UsageError("pass image= or conditions=, not both (image= is "
                       "conditions=[ltx_jax.Condition(image=...)] with the diffusers handling)")
    tc, sc = self.compression
    pixels = conditioning_lib.load_conditions(items, num_frames, height, width, preprocessing,
                                              temporal=tc, spatial=sc, crop_to=media_size)
    return list(zip(items, pixels))

  def _condition_tokens(self, items, start: jax.Array, frame_rate: float, key: jax.Array, *,
                        causal: bool) -> tuple[jax.Array, jax.Array, jax.Array, tuple]:
    """Encodes the items and puts them into the starting latents [B, F', H', W', C] ->
    (latents [B, N, C], coords [1, 3, N], cond_mask [B, N], (video_weight, cond_latents) of
    the grid tokens): the grid's tokens first, then
    the extra tokens of items after frame 0 (`conditioning.combine_conditions`). causal: the
    time coordinates of latent frame f start at pixel max(t f + 1 - t, 0) (official: the
    transformer's causal_temporal_positioning; LTXConditionPipeline: always)."""
    b = start.shape[0]
    encoded, noise = [], []
    with self.timer('image_encoding'):
      for i, (c, pixels) in enumerate(items):
        z = np.asarray(self._encode_pixels(pixels))  # [1, f, h, w, C]
        item = conditioning_lib.EncodedCondition(
            np.broadcast_to(z, (b,) + z.shape[1:]), c.frame_index, float(c.strength),
            c.media_x, c.media_y)
        shape = conditioning_lib.extra_noise_shape(item)
        encoded.append(item)
        noise.append(None if shape is None else
                     np.asarray(conditioning_lib.item_noise(key, i, shape)))
    tc, sc = self.compression
    comb = conditioning_lib.combine_conditions(
        np.asarray(start), encoded, noise, temporal=tc, spatial=sc, causal=causal)
    # combine_conditions puts the extra tokens first (as the references); the plan keeps the
    # grid's tokens first (attention does not depend on the order).
    grid_first = lambda a, axis: np.roll(a, -comb.num_extra, axis)  # noqa: E731
    coords = grid_first(comb.coords[:1], 2)
    coords[:, 0] *= np.float32(1.0 / frame_rate)  # the references' frame -> seconds
    return (jnp.asarray(grid_first(comb.latents, 1)), jnp.asarray(coords),
            jnp.asarray(grid_first(comb.mask, 1)),
            (jnp.asarray(comb.video_weight), jnp.asarray(comb.cond_latents)))

  def _load_guides(self, guides, image, num_frames: int, height: int, width: int) -> list:
    """Host side of `guides`: checked, read and resized -> [(start frame, strength,
    pixels [F, H, W, 3])]."""
    items = guides_lib.as_guides(guides)
    if not items:
      return []
    if image is not None:
      raise UsageError("pass image= or guides=, not both (put the first frame in "
                       "conditions=[ltx_jax.Condition(image=...)] instead)")
    return guides_lib.load_guides(items, num_frames, height, width,
                                  temporal=self.compression[0])

  def _guide_tokens(self, items, packed: jax.Array, coords: jax.Array, cond_mask, frame_rate,
                    key: jax.Array, *, causal: bool
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Encodes the guides and appends their tokens after the plan's -> (latents [B, N, C],
    coords [1, 3, N], cond_mask [B, N]) (`guides.append_guides`)."""
    b = packed.shape[0]
    encoded, noise = [], []
    with self.timer('image_encoding'):
      for i, (frame, strength, pixels) in enumerate(items):
        z = np.asarray(self._encode_pixels(pixels))  # [1, f, h, w, C]
        encoded.append(guides_lib.EncodedGuide(z, frame, strength))
        noise.append(np.asarray(conditioning_lib.item_noise(key, i, (b,) + z.shape[1:])))
    tc, sc = self.compression
    latents, coords, mask = guides_lib.append_guides(
        np.asarray(packed), np.asarray(coords), None if cond_mask is None else
        np.asarray(cond_mask), encoded, noise, frame_rate=frame_rate, temporal=tc, spatial=sc,
        causal=causal)
    return jnp.asarray(latents), jnp.asarray(coords), jnp.asarray(mask)

  def _text_inputs(self, prompt, negative_prompt, prompt_embeds, prompt_mask, negative_embeds,
                   negative_mask, use_cfg: bool, max_len: int):
    """-> [(embeddings, mask)] for the row groups: [uncond,] cond (exactly one of prompt and
    prompt_embeds: `_prompt_count`)."""
    prompts = inputs_lib.as_prompts(prompt)
    if prompts is not None:
      embeds, mask = self.encode_prompt(prompts, max_len)
    else:
      embeds = jnp.asarray(prompt_embeds)
      if prompt_mask is None:
        raise UsageError("prompt_embeds needs prompt_attention_mask")
      mask = jnp.asarray(prompt_mask)
      if embeds.ndim != 3 or mask.shape != embeds.shape[:2]:
        raise UsageError(f"prompt_embeds {tuple(embeds.shape)} must be [B, S, D] and "
                         f"prompt_attention_mask {tuple(mask.shape)} must be [B, S]")
      want = self.transformer.config.caption_channels
      if embeds.shape[-1] != want:
        raise UsageError(f"prompt_embeds have {embeds.shape[-1]} channels; this transformer "
                         f"expects {want}")
    n = embeds.shape[0]
    if not use_cfg:
      return [(embeds, mask)]
    if negative_embeds is not None:
      neg = jnp.asarray(negative_embeds)
      if negative_mask is None:
        raise UsageError("negative_prompt_embeds needs negative_prompt_attention_mask")
      neg_mask = jnp.asarray(negative_mask)
      if neg.shape != embeds.shape or neg_mask.shape != mask.shape:
        raise UsageError(f"negative_prompt_embeds {tuple(neg.shape)} / mask "
                         f"{tuple(neg_mask.shape)} must match prompt_embeds "
                         f"{tuple(embeds.shape)} / mask {tuple(mask.shape)}")
    else:
      negs = inputs_lib.as_prompts(negative_prompt or '', 'negative_prompt')
      if len(negs) == 1:
        negs = negs * n
      if len(negs) != n:
        raise UsageError(f"{len(negs)} negative prompts for {n} prompts")
      neg, neg_mask = self.encode_prompt(negs, embeds.shape[1])
    return [(neg, neg_mask), (embeds, mask)]


def _prompt_count(prompt, prompt_embeds) -> int:
  """How many prompts (P) a call has; `_text_inputs` checks the rest."""
  prompts = inputs_lib.as_prompts(prompt)
  if (prompts is None) == (prompt_embeds is None):
    raise UsageError("pass exactly one of prompt and prompt_embeds")
  if prompts is not None:
    return len(prompts)
  shape = np.shape(prompt_embeds)
  if len(shape) != 3:
    raise UsageError(f"prompt_embeds {tuple(shape)} must be [B, S, D]")
  return shape[0]


def _media_size(media_size, height: int, width: int) -> tuple[int, int]:
  """`prepare`'s media_size checked; None -> (height, width)."""
  if media_size is None:
    return height, width
  if (not isinstance(media_size, (tuple, list)) or len(media_size) != 2
      or not all(conditioning_lib.is_int(v) and v > 0 for v in media_size)):
    raise UsageError(f"media_size={media_size!r} must be (height, width), two ints > 0")
  return int(media_size[0]), int(media_size[1])


def _condition_pixels(image, n_prompts: int, height: int, width: int,
                      media_size: tuple[int, int]) -> list[np.ndarray] | None:
  """`image` (one, or one per prompt) read, resized to cover media_size and centre-cropped,
  then resized bilinearly to height x width where the two differ (a multi-scale pass):
  [H, W, 3] f32 in [0, 1] each; None without an image."""
  if image is None:
    return None
  images = list(image) if isinstance(image, (list, tuple)) else [image]
  if len(images) not in (1, n_prompts):
    raise UsageError(f"got {len(images)} images for {n_prompts} prompts; pass one image or "
                     "one per prompt")
  out = []
  for im in images:
    x = inputs_lib.resize_and_crop(inputs_lib.load_image(im), *media_size)
    out.append(conditioning_lib.resize_bilinear(x[None], height, width)[0])
  return out


def _allowed_steps(sched: dict) -> list[float] | None:
  """An official file's `allowed_inference_steps` (0..1 scale; distilled files), or None."""
  allowed = sched['config'].get('allowed_inference_steps') if sched['format'] == 'official' \
      else None
  if allowed is None:
    return None
  try:
    return [float(t) for t in allowed]
  except (TypeError, ValueError):
    raise CheckpointFormatError(f"the checkpoint's allowed_inference_steps {allowed!r} are not "
                                "a list of numbers") from None


# A distilled schedule may end with one step at sigma <= this (diffusers' documented single
# distilled pass ends at timestep 0.03): it only finishes the video from the step before.
FINISHING_SIGMA = 1e-3


def disallowed_timesteps(sigmas: np.ndarray, allowed: Sequence[float]) -> list[float]:
  """The timesteps (0..1000) of a schedule ([S + 1] sigmas ending in 0) that a distilled
  checkpoint with `allowed` steps (0..1 scale) was not trained on. Allowed: a step equal to one
  of them at 4 decimals (the official pipeline's check), or within 1 on the 0..1000 scale (the
  same step written as an integer timestep, as diffusers' documented distilled lists write it);
  and a last step at sigma <= FINISHING_SIGMA."""
  steps = [float(x) for x in np.asarray(sigmas)[:-1]]
  if len(steps) > 1 and steps[-1] <= FINISHING_SIGMA:
    steps = steps[:-1]
  return [round(1000 * t, 1) for t in steps
          if round(t, 4) not in allowed and not any(abs(1000 * (t - a)) < 1.0 for a in allowed)]


def _skipped_steps(steps: int, explicit: bool, has_latents: bool, skip_initial, skip_final,
                   denoise_strength) -> tuple[int, int]:
  """Checked -> (steps dropped at the start, at the end) of a schedule of `steps` steps."""
  for name, v in (('skip_initial_inference_steps', skip_initial),
                  ('skip_final_inference_steps', skip_final)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
      raise UsageError(f"{name}={v!r} must be an integer >= 0")
  strength = checks.check_finite('denoise_strength', denoise_strength, 0.0, 1.0)
  first, last = int(skip_initial), int(skip_final)
  if explicit and (first or last):
    raise UsageError(f"skip_initial_inference_steps={first} / skip_final_inference_steps="
                     f"{last} apply to a num_inference_steps schedule (the official pipeline "
                     "ignores them with timesteps); pass the trimmed timesteps list instead")
  if first + last >= steps:
    raise UsageError(f"skip_initial_inference_steps={first} + skip_final_inference_steps="
                     f"{last} must be less than the {steps} inference steps")
  if strength < 1:
    if first:
      raise UsageError(f"pass one of denoise_strength={strength} and "
                       f"skip_initial_inference_steps={first}")
    kept = min(int(steps * strength), steps)
    if kept < 1:
      raise UsageError(f"denoise_strength={strength} keeps int({steps} * {strength}) = 0 of "
                       f"the {steps} steps; use at least {1 / steps:g}")
    first = steps - kept
  if first and not has_latents:
    raise UsageError("skip_initial_inference_steps / denoise_strength start part-way down the "
                     "schedule from given latents: pass latents=")
  return first, last


def _decode_noise(decode_timestep, decode_noise_scale) -> tuple[float, float]:
  """Checked (decode_timestep, decode_noise_scale); the scale defaults to the timestep."""
  timestep = checks.check_finite('decode_timestep', decode_timestep, 0.0, 1.0)
  if decode_noise_scale is None:
    return timestep, timestep
  return timestep, checks.check_finite('decode_noise_scale', decode_noise_scale, 0.0, 1.0)


def _rows(groups: list[tuple[jax.Array, jax.Array]], repeat: int
          ) -> tuple[jax.Array, jax.Array]:
  """[(embeddings [P, S, D], mask [P, S])] per row group -> context [G*B, S, D] and f32 mask
  [G*B, S], each prompt's rows repeated `repeat` times (B = P * repeat)."""
  context = jnp.concatenate([jnp.repeat(e, repeat, axis=0) for e, _ in groups])
  mask = jnp.concatenate([jnp.repeat(m, repeat, axis=0) for _, m in groups])
  return context, mask.astype(jnp.float32)
