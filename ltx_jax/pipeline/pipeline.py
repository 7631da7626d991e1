"""`LTXPipeline`: prompt -> T5 -> scanned rectified-flow loop -> VAE decode -> frames."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.pipeline import inputs as inputs_lib
from ltx_jax.sampling import guidance as guidance_lib
from ltx_jax.sampling import loop as loop_lib
from ltx_jax.sampling.schedules import SchedulerConfig, sigmas_for


@dataclasses.dataclass
class LTXPipelineOutput:
  latents: np.ndarray              # [B, F', H', W', C] final normalised latents
  frames: np.ndarray | None = None  # uint8 [B, F, H, W, 3]; None for output_type='latent'


_encode_text = jax.jit(lambda graph, state, ids, mask: nnx.merge(graph, state)(ids, mask),
                       static_argnums=0)


def token_coords(grid: tuple[int, int, int], temporal: int, spatial: int, frame_rate: float,
                 causal: bool) -> np.ndarray:
  """Per-token (time in seconds, y, x in pixels) [1, 3, N] in (f, h, w) order, f32.

  With `causal` (official checkpoints' causal_temporal_positioning) latent frame f covers pixel
  frame max(f * t + 1 - t, 0), as the first latent holds a single frame; the arithmetic follows
  each reference (diffusers: f * (t / fps); official: f * t * (1 / fps)).
  """
  f, h, w = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in grid), indexing='ij')
  if causal:
    t = np.maximum(f * temporal + 1 - temporal, 0) * np.float32(1.0 / frame_rate)
  else:
    t = f * np.float32(temporal / frame_rate)
  coords = np.stack([t, h * np.float32(spatial), w * np.float32(spatial)])
  return coords.reshape(1, 3, -1).astype(np.float32)


class LTXPipeline:
  """Text- and image-to-video with LTX-Video.

  Build with `from_pretrained(source)` or from components. Calls take diffusers' argument
  names; see `__call__`.
  """

  def __init__(self, transformer, vae, text_encoder=None, tokenizer=None,
               scheduler: SchedulerConfig | None = None, *, release: str | None = None,
               partitioning: sharding_lib.Partitioning | None = None):
    """partitioning: the mesh the components' parameters live on, with the rules and context
    attention for the activations (ltx_jax/sharding.py); None: one device."""
    self.transformer = transformer
    self.vae = vae
    self.text_encoder = text_encoder
    self.tokenizer = tokenizer
    self.scheduler = scheduler or SchedulerConfig()
    self.release = release
    self.partitioning = partitioning
    self.source = None  # the resolved ltx_jax.sources.ModelSource, when loaded from one
    self._transformer_split = nnx.split(transformer)
    self._text_split = nnx.split(text_encoder) if text_encoder is not None else None

  @classmethod
  def from_pretrained(cls, source: str | Path, dtype=jnp.float32, *, file: str | None = None,
                      release: str | None = None, allow_custom: bool = False,
                      text_encoder_dtype=None, attention: str = 'auto', offline: bool | None = None,
                      mesh=None, rules: sharding_lib.Rules | None = None,
                      context_attention: str = 'allgather') -> 'LTXPipeline':
    """Builds the pipeline from whatever `ltx_jax.sources.resolve_source` understands: a
    diffusers repo folder, a folder with an official single file (+ T5 folder or GGUF +
    tokenizer), a checkpoint written by tools/convert.py, or a hub repo id.

    file / release / allow_custom / offline: as `resolve_source`. dtype: compute and storage
    dtype of the transformer and VAE; text_encoder_dtype defaults to it.
    mesh: a device mesh (`ltx_jax.sharding.make_mesh`): every parameter is placed on it by the
      rules table (`rules`, default `ltx_jax.sharding.RULES`), activations are constrained by the
      same table, and self-attention runs context parallel over the mesh's 'context' axis by
      `context_attention` ('allgather' or 'ring'). None: one device.
    """
    from ltx_jax.models.t5 import load_text_encoder, load_tokenizer
    from ltx_jax.models.transformer import load_transformer
    from ltx_jax.models.vae import load_vae
    from ltx_jax.compilation_cache import configure_compilation_cache
    from ltx_jax.sources import read_scheduler_config, resolve_source
    configure_compilation_cache()  # on by default (LTX_JAX_COMPILATION_CACHE=0 disables)
    ms = resolve_source(source, file=file, release=release, allow_custom=allow_custom,
                        offline=offline)
    ms.require('transformer', 'vae', 'text_encoder', 'tokenizer')
    sched = read_scheduler_config(ms)
    scheduler = None
    if sched is not None:
      scheduler = (SchedulerConfig.from_official(sched['config']) if sched['format'] == 'official'
                   else SchedulerConfig.from_diffusers(sched['config']))
    te_dtype = dtype if text_encoder_dtype is None else text_encoder_dtype
    partitioning = (None if mesh is None else
                    sharding_lib.Partitioning.create(mesh, rules, context_attention))
    where = dict(mesh=mesh, rules=rules)
    pipe = cls(load_transformer(ms.transformer, dtype=dtype, attention=attention, **where),
               load_vae(ms.vae, dtype=dtype, **where),
               load_text_encoder(ms.text_encoder, dtype=te_dtype, attention=attention, **where),
               load_tokenizer(ms.tokenizer), scheduler, release=ms.release.name,
               partitioning=partitioning)
    pipe.source = ms
    return pipe

  # -- pieces --------------------------------------------------------------------------------

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
    """Prompts -> (T5 embeddings [B, S, D], mask [B, S]). The mask is passed to T5 as in the
    official pipeline (diffusers leaves T5 unmasked)."""
    if self.text_encoder is None or self.tokenizer is None:
      raise ValueError("this pipeline has no text encoder/tokenizer; pass prompt_embeds and "
                       "prompt_attention_mask instead of a prompt")
    ids, mask = self.tokenizer(list(prompts), max_length=max_sequence_length)
    graph, state = self._text_split
    ids, mask = self._global(np.asarray(ids), np.asarray(mask))
    return _encode_text(graph, state, ids, mask), mask

  def encode_image(self, images: Sequence[Any], height: int, width: int) -> jax.Array:
    """Conditioning images -> normalised latents of one frame, [B, 1, H', W', C]."""
    pixels = np.stack([inputs_lib.resize_and_crop(inputs_lib.load_image(im), height, width)
                       for im in images])  # [B, H, W, 3] in [0, 1]
    video = self._global(np.asarray(pixels * 2 - 1)[:, None])  # [B, 1, H, W, 3] in [-1, 1]
    return self.vae.normalize(self.vae.encode(video.astype(self.vae.dtype))).astype(jnp.float32)

  # -- the call ------------------------------------------------------------------------------

  def __call__(self, prompt: str | Sequence[str] | None = None,
               negative_prompt: str | Sequence[str] | None = None, image: Any = None,
               height: int = 512, width: int = 704, num_frames: int = 161,
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
               progress: bool | None = None) -> LTXPipelineOutput:
    """Generates videos.

    timesteps: explicit schedule on the 0..1000 scale (overrides num_inference_steps).
    latents: starting latents, normalised, [B, F', H', W', C] (B = prompts x videos/prompt);
      by default N(0, 1) from `seed`. With `image`, latent frame 0 is replaced by the image.
    decode_noise_scale: defaults to decode_timestep (as diffusers).
    guidance_scale, stg_scale, stg_rescale: a value, or one value per entry of
      `guidance_timesteps` (0..1000; each step uses the first entry <= its timestep, as the
      official pipeline). skip_block_list: the layers perturbed for spatio-temporal guidance,
      one list or one list per guidance_timesteps entry. stg_rescale (official
      `rescaling_scale`) applies with STG only; guidance_rescale is diffusers' (after CFG).
    progress: a progress bar over denoising steps; None shows it on a terminal only. The bar
      is a host callback inside the loop, which keeps the loop out of the persistent
      compilation cache.
    Returns `.latents` [B, F', H', W', C] and, unless output_type='latent', `.frames` uint8
    [B, F, H, W, 3].
    """
    tc, sc = self.compression
    inputs_lib.check_video_size(height, width, num_frames, sc, tc)
    if output_type not in ('np', 'latent'):
      raise ValueError(f"output_type={output_type!r}; choose 'np' or 'latent'")
    guidance_rescale = inputs_lib.check_finite('guidance_rescale', guidance_rescale, 0.0, 1.0)
    frame_rate = inputs_lib.check_finite('frame_rate', frame_rate, 1e-6)
    decode_timestep = inputs_lib.check_finite('decode_timestep', decode_timestep, 0.0, 1.0)
    decode_noise_scale = decode_timestep if decode_noise_scale is None else \
        inputs_lib.check_finite('decode_noise_scale', decode_noise_scale, 0.0, 1.0)
    if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
      raise ValueError(f"num_videos_per_prompt={num_videos_per_prompt!r} must be an int >= 1")
    if not isinstance(seed, (int, np.integer)):
      raise ValueError(f"seed={seed!r} must be an integer")
    grid = ((num_frames - 1) // tc + 1, height // sc, width // sc)
    n_tokens = grid[0] * grid[1] * grid[2]
    sigmas = sigmas_for(self.scheduler, num_inference_steps, n_tokens, timesteps)
    guidance, spec_flags = guidance_lib.per_step(
        sigmas[:-1] * 1000, self.transformer.config.num_layers, guidance_timesteps,
        guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, stg_scale=stg_scale,
        stg_rescale=stg_rescale, skip_block_list=skip_block_list,
        skip_layer_strategy=skip_layer_strategy)
    use_cfg, use_stg = spec_flags

    groups = self._text_inputs(
        prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
        negative_prompt_attention_mask, use_cfg, max_sequence_length)
    n_prompts = groups[-1][0].shape[0]
    batch = n_prompts * num_videos_per_prompt
    if use_stg:
      groups.append(groups[-1])  # the perturbed rows see the positive prompt
    embeds = jnp.concatenate([jnp.repeat(e, num_videos_per_prompt, axis=0) for e, _ in groups])
    mask = jnp.concatenate([jnp.repeat(m, num_videos_per_prompt, axis=0)
                            for _, m in groups]).astype(jnp.float32)

    channels = self.transformer.config.in_channels
    shape = (batch, *grid, channels)
    key = jax.random.key(int(seed))
    key_noise, key_loop, key_decode = jax.random.split(key, 3)
    if latents is None:
      latents = jax.random.normal(key_noise, shape, jnp.float32)
    else:
      latents = jnp.asarray(latents, jnp.float32)
      if latents.shape != shape:
        raise ValueError(f"latents have shape {tuple(latents.shape)}; expected {shape} "
                         "(batch, latent frames, height, width, channels)")
    cond_mask = None
    if image is not None:
      images = list(image) if isinstance(image, (list, tuple)) else [image]
      if len(images) not in (1, n_prompts):
        raise ValueError(f"got {len(images)} images for {n_prompts} prompts; pass one image or "
                         "one per prompt")
      init = self.encode_image(images, height, width)  # [B or 1, 1, H', W', C]
      init = jnp.broadcast_to(jnp.repeat(init, batch // init.shape[0], axis=0),
                              (batch, 1, *shape[2:]))
      latents = latents.at[:, :1].set(init)
      cond_mask = jnp.zeros(shape[:4], jnp.float32).at[:, 0].set(1.0).reshape(batch, -1)

    spec = loop_lib.LoopSpec(grid=grid, cfg=use_cfg, stg=use_stg,
                             stg_strategy=skip_layer_strategy if use_stg else None,
                             cfg_star=bool(cfg_star_rescale) and use_cfg,
                             conditioned=cond_mask is not None,
                             stochastic=bool(stochastic_sampling),
                             progress=sys.stderr.isatty() if progress is None else bool(progress),
                             partitioning=self.partitioning)
    coords = token_coords(grid, tc, sc, frame_rate,
                          self.transformer.config.causal_temporal_positioning)
    graph, state = self._transformer_split
    if spec.progress:
      loop_lib.PROGRESS.start(len(sigmas) - 1)
    try:
      args = self._global(latents.reshape(batch, n_tokens, channels), jnp.asarray(sigmas),
                          embeds, mask, guidance, jnp.asarray(coords), cond_mask, key_loop)
      packed = loop_lib.denoise_jit(spec, graph, state, *args)
      packed = jax.block_until_ready(packed)
    finally:
      loop_lib.PROGRESS.close()
    final = packed.reshape(shape)
    if output_type == 'latent':
      return LTXPipelineOutput(latents=np.asarray(final))
    return LTXPipelineOutput(latents=np.asarray(final),
                             frames=self.decode(final, decode_timestep, decode_noise_scale,
                                                key_decode))

  def decode(self, latents: jax.Array, decode_timestep: float = 0.0,
             decode_noise_scale: float = 0.0, key: jax.Array | None = None) -> np.ndarray:
    """Normalised latents [B, F', H', W', C] -> uint8 frames [B, F, H, W, 3].

    On a single-process mesh the rows are split over its batch axes (data, fsdp:
    ltx_jax/sharding.py) where they divide; every process receives all frames.
    """
    z = self.vae.denormalize(self._global(latents))
    timestep = None
    # k_inject drives the decoder's learned noise injection (0.9.1), as the references do.
    k_mix, k_inject = jax.random.split(jax.random.key(0) if key is None else key)
    if self.vae.config.timestep_conditioning:
      noise = self._global(jax.random.normal(k_mix, z.shape, jnp.float32))
      z = (1 - decode_noise_scale) * z + decode_noise_scale * noise
      timestep = self._global(jnp.full((z.shape[0],), decode_timestep, jnp.float32))
    z = z.astype(self.vae.dtype)
    if self.partitioning is not None and jax.process_count() == 1:
      # Rows over the batch axes. Not across processes: the tiled decode reads each tile back
      # on the host, which needs every row addressable.
      z = jax.device_put(z, self.partitioning.sharding(z.shape, ('batch',) + (None,) * 4))
    video = sharding_lib.gather(self.vae.decode(z, timestep, key=k_inject, mesh=self.mesh))
    return inputs_lib.to_uint8(video)

  def _text_inputs(self, prompt, negative_prompt, prompt_embeds, prompt_mask, negative_embeds,
                   negative_mask, use_cfg: bool, max_len: int):
    """-> [(embeddings, mask)] for the row groups: [uncond,] cond."""
    prompts = inputs_lib.as_prompts(prompt)
    if (prompts is None) == (prompt_embeds is None):
      raise ValueError("pass exactly one of prompt and prompt_embeds")
    if prompts is not None:
      embeds, mask = self.encode_prompt(prompts, max_len)
    else:
      embeds = jnp.asarray(prompt_embeds)
      if prompt_mask is None:
        raise ValueError("prompt_embeds needs prompt_attention_mask")
      mask = jnp.asarray(prompt_mask)
      if embeds.ndim != 3 or mask.shape != embeds.shape[:2]:
        raise ValueError(f"prompt_embeds {tuple(embeds.shape)} must be [B, S, D] and "
                         f"prompt_attention_mask {tuple(mask.shape)} must be [B, S]")
      want = self.transformer.config.caption_channels
      if embeds.shape[-1] != want:
        raise ValueError(f"prompt_embeds have {embeds.shape[-1]} channels; this transformer "
                         f"expects {want}")
    n = embeds.shape[0]
    if not use_cfg:
      return [(embeds, mask)]
    if negative_embeds is not None:
      neg = jnp.asarray(negative_embeds)
      if negative_mask is None:
        raise ValueError("negative_prompt_embeds needs negative_prompt_attention_mask")
      neg_mask = jnp.asarray(negative_mask)
      if neg.shape != embeds.shape or neg_mask.shape != mask.shape:
        raise ValueError(f"negative_prompt_embeds {tuple(neg.shape)} / mask "
                         f"{tuple(neg_mask.shape)} must match prompt_embeds "
                         f"{tuple(embeds.shape)} / mask {tuple(mask.shape)}")
    else:
      negs = inputs_lib.as_prompts(negative_prompt or '', 'negative_prompt')
      if len(negs) == 1:
        negs = negs * n
      if len(negs) != n:
        raise ValueError(f"{len(negs)} negative prompts for {n} prompts")
      neg, neg_mask = self.encode_prompt(negs, embeds.shape[1])
    return [(neg, neg_mask), (embeds, mask)]
