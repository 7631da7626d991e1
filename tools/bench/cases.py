"""The benchmark cases: one function of ours and the same computation in diffusers/transformers.

Every case builds random weights on both sides (the same shapes, not the same values) and hands
back a `Setup`: a jitted JAX function with its arguments, the PyTorch callable, and the FLOPs.
Sizes come in three presets: `cpu` (what a 2-core machine runs in minutes), `gpu` (the real
sizes) and `tiny` (the test suite).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax.models.random import random_weights
from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.transformer.config import LTXV_13B, LTXV_2B, TransformerConfig
from ltx_jax.models.vae.config import VAEConfig
from tools.bench import flops as flops_lib
from tools.bench import measure

DTYPES = {'f32': (jnp.float32, 'float32'), 'bf16': (jnp.bfloat16, 'bfloat16')}

# Diffusers' AutoencoderKLLTXVideo decoder of LTX-Video 0.9.5 to 0.9.8 (the official block list
# `LTXV_VAE_098`): 1024 channels at the latent, three residual x2 upsamplers, 5 ResNets per stage.
VAE_098_DECODER = dict(
    latent_channels=128, patch_size=4, decoder_block_out_channels=(256, 512, 1024),
    decoder_layers_per_block=(5, 5, 5, 5), decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False), upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2), timestep_conditioning=True)
# A 0.9.1-style decoder a few channels wide (spatial x8 with patch 2, temporal x4).
VAE_TINY_DECODER = dict(
    latent_channels=8, patch_size=2, decoder_block_out_channels=(8, 16),
    decoder_layers_per_block=(1, 2, 1), decoder_spatio_temporal_scaling=(True, True),
    decoder_inject_noise=(False, False, False), upsample_residual=(True, True),
    upsample_factor=(2, 2), timestep_conditioning=True)
VAE_TINY_ENCODER = dict(block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
                        spatio_temporal_scaling=(True, True, False, False))
TRANSFORMER_TINY = TransformerConfig(num_layers=2, num_heads=2, head_dim=8, in_channels=8,
                                     out_channels=8, cross_attention_dim=16, caption_channels=32)
T5_TINY = T5Config(vocab_size=64, d_model=32, num_heads=4, head_dim=8, d_ff=48, num_layers=2,
                   num_buckets=8, max_distance=20)


@dataclasses.dataclass
class Setup:
  """One case at one dtype, built and ready to compile and run."""
  jax_fn: Any                      # a jax.jit-wrapped function
  jax_args: tuple                  # its arguments
  # Builds the PyTorch reference and returns a function that runs it once (with a
  # `weight_bytes` attribute); None: not available.
  torch_fn: Callable[[], Any] | None
  flops: int                       # per call


@dataclasses.dataclass(frozen=True)
class Case:
  key: str
  title: str
  build: Callable[[str, str], Setup]  # (dtype name, torch device) -> Setup


def _torch_dtype(name: str):
  import torch
  return getattr(torch, DTYPES[name][1])


def _weights(factory: Callable[[], nnx.Module], seed: int = 0) -> nnx.Module:
  """`factory()`'s module with random weights: drawn on the host on CPU (the modules' own
  initializers compile one program per parameter shape, which dominates the tiny cases); on a
  GPU those programs are cheap and host draws of 13B parameters would not be, so the modules'
  own initializers run there."""
  return factory() if measure.on_gpu() else random_weights(factory, seed)


def _split_jit(model: nnx.Module, apply: Callable) -> tuple[Any, Any]:
  """jit(apply(model, *inputs)) as a function of (state, *inputs): weights stay arguments."""
  graph, state = nnx.split(model)
  fn = jax.jit(lambda state, *xs: apply(nnx.merge(graph, state), *xs))
  return fn, state


# -- transformer ------------------------------------------------------------------------------

def _transformer(cfg: TransformerConfig, batch: int, grid: tuple[int, int, int],
                 text: int) -> Callable[[str, str], Setup]:
  def build(dtype: str, device: str) -> Setup:
    from ltx_jax.models.transformer import LTXVideoTransformer
    jdt = DTYPES[dtype][0]
    f, h, w = grid
    n = f * h * w
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, n, cfg.in_channels), np.float32)
    ctx = rng.standard_normal((batch, text, cfg.caption_channels), np.float32)
    mask = np.ones((batch, text), np.float32)
    mask[:, text * 3 // 4:] = 0  # some padding, as real prompts have
    t = np.full((batch,), 700.0, np.float32)
    scale = (8 / 25, 32.0, 32.0)
    model = _weights(lambda: LTXVideoTransformer(cfg, dtype=jdt, param_dtype=jdt,
                                                  rngs=nnx.Rngs(0)))
    fn, state = _split_jit(model, lambda m, x, c, t, k: m(
        x, c, t, k, num_frames=f, height=h, width=w, rope_interpolation_scale=scale))
    args = (state, jnp.asarray(x, jdt), jnp.asarray(ctx, jdt), jnp.asarray(t),
            jnp.asarray(mask))

    def torch_fn():
      import torch
      from diffusers import LTXVideoTransformer3DModel
      tdt = _torch_dtype(dtype)
      ref = LTXVideoTransformer3DModel(
          in_channels=cfg.in_channels, out_channels=cfg.out_channels,
          num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
          cross_attention_dim=cfg.cross_attention_dim, num_layers=cfg.num_layers,
          caption_channels=cfg.caption_channels).eval().to(device=device, dtype=tdt)
      xs = [torch.from_numpy(a).to(device) for a in (x, ctx, t, mask)]
      xs[0], xs[1] = xs[0].to(tdt), xs[1].to(tdt)

      @torch.inference_mode()
      def run():
        return ref(*xs, num_frames=f, height=h, width=w, rope_interpolation_scale=scale,
                   return_dict=False)[0]
      run.weight_bytes = measure.tree_bytes(ref)
      return run

    return Setup(fn, args, torch_fn, flops_lib.transformer_flops(cfg, batch, n, text))
  return build


# -- VAE decoder ------------------------------------------------------------------------------

def _vae_decode(decoder_cfg: dict, encoder_cfg: dict, video: tuple[int, int, int]
                ) -> Callable[[str, str], Setup]:
  def build(dtype: str, device: str) -> Setup:
    from ltx_jax.models.vae import Decoder
    config = VAEConfig.from_diffusers({**encoder_cfg, **decoder_cfg})
    jdt = DTYPES[dtype][0]
    frames, height, width = video
    latent = config.latent_shape(frames, height, width)  # [F', H', W', C]
    z = np.random.default_rng(0).standard_normal((1, *latent), np.float32)
    decoder = _weights(lambda: Decoder(
        config.latent_channels, config.out_channels, config.decoder_blocks,
        base_channels=config.decoder_channels(), patch_size=config.patch_size,
        causal=config.causal_decoder, timestep_conditioning=config.timestep_conditioning,
        spatial_padding_mode=config.spatial_padding_mode, dtype=jdt, param_dtype=jdt,
        rngs=nnx.Rngs(0)))
    fn, state = _split_jit(decoder, lambda m, z, t: m(z, t))
    args = (state, jnp.asarray(z, jdt), jnp.full((1,), 0.05, jnp.float32))
    flops = flops_lib.traced_flops(fn, *args)

    def torch_fn():
      import torch
      from diffusers.models.autoencoders.autoencoder_kl_ltx import LTXVideoDecoder3d
      tdt = _torch_dtype(dtype)
      c = decoder_cfg
      ref = LTXVideoDecoder3d(
          in_channels=c['latent_channels'], out_channels=3,
          block_out_channels=c['decoder_block_out_channels'],
          spatio_temporal_scaling=c['decoder_spatio_temporal_scaling'],
          layers_per_block=c['decoder_layers_per_block'], patch_size=c['patch_size'],
          is_causal=False, inject_noise=c['decoder_inject_noise'],
          timestep_conditioning=c['timestep_conditioning'],
          upsample_residual=c['upsample_residual'],
          upsample_factor=c['upsample_factor']).eval().to(device=device, dtype=tdt)
      zt = torch.from_numpy(z).permute(0, 4, 1, 2, 3).contiguous().to(device=device, dtype=tdt)
      temb = torch.full((1,), 0.05, device=device, dtype=tdt)

      @torch.inference_mode()
      def run():
        return ref(zt, temb)
      run.weight_bytes = measure.tree_bytes(ref)
      return run

    return Setup(fn, args, torch_fn, flops)
  return build


# -- T5 ---------------------------------------------------------------------------------------

def _t5(cfg: T5Config, batch: int, tokens: int) -> Callable[[str, str], Setup]:
  def build(dtype: str, device: str) -> Setup:
    from ltx_jax.models.t5 import T5Encoder
    jdt = DTYPES[dtype][0]
    rng = np.random.default_rng(0)
    ids = rng.integers(2, cfg.vocab_size, (batch, tokens)).astype(np.int32)
    mask = np.ones((batch, tokens), np.int32)
    mask[:, tokens // 2:] = 0
    model = _weights(lambda: T5Encoder(cfg, dtype=jdt, param_dtype=jdt, rngs=nnx.Rngs(0)))
    fn, state = _split_jit(model, lambda m, ids, mask: m(ids, mask))
    args = (state, jnp.asarray(ids), jnp.asarray(mask))

    def torch_fn():
      import torch
      import transformers
      tdt = _torch_dtype(dtype)
      ref = transformers.T5EncoderModel(transformers.T5Config(
          vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim,
          num_heads=cfg.num_heads, d_ff=cfg.d_ff, num_layers=cfg.num_layers,
          feed_forward_proj='gated-gelu', dropout_rate=0.0,
          relative_attention_num_buckets=cfg.num_buckets,
          relative_attention_max_distance=cfg.max_distance)).eval().to(device=device, dtype=tdt)
      ids_t = torch.from_numpy(ids).long().to(device)
      mask_t = torch.from_numpy(mask).long().to(device)

      @torch.inference_mode()
      def run():
        return ref(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
      run.weight_bytes = measure.tree_bytes(ref)
      return run

    return Setup(fn, args, torch_fn, flops_lib.t5_flops(cfg, batch, tokens))
  return build


def cases(preset: str) -> list[Case]:
  """Cases 1-4 (the pipeline case lives in `pipeline_case`)."""
  if preset == 'tiny':
    return [
        Case('dit', 'transformer step, tiny', _transformer(TRANSFORMER_TINY, 2, (2, 2, 3), 4)),
        Case('dit13b', 'transformer step, tiny (1 layer)',
             _transformer(dataclasses.replace(TRANSFORMER_TINY, num_layers=1), 2, (2, 2, 3), 4)),
        Case('vae', 'VAE decode, tiny', _vae_decode(VAE_TINY_DECODER, VAE_TINY_ENCODER,
                                                    (5, 16, 16))),
        Case('t5', 'T5 encoder, tiny', _t5(T5_TINY, 1, 8)),
    ]
  if preset == 'cpu':
    grid, layers_2b, layers_13b, video, t5_layers = (4, 16, 24), 2, 1, (9, 256, 384), 2
    what = '512x768x25'
  elif preset == 'gpu':
    grid, layers_2b, layers_13b, video, t5_layers = (16, 16, 24), 28, 48, (121, 512, 768), 24
    what = '512x768x121'
  else:
    raise ValueError(f"unknown preset {preset!r}; choose tiny, cpu or gpu")
  n = math.prod(grid)
  return [
      Case('dit', f"2B transformer step: {layers_2b} layers, batch 2, {what} "
           f"({n} tokens), 128 text tokens",
           _transformer(dataclasses.replace(LTXV_2B, num_layers=layers_2b), 2, grid, 128)),
      Case('dit13b', f"13B transformer step: {layers_13b} layer(s), batch 2, {what} "
           f"({n} tokens), 128 text tokens",
           _transformer(dataclasses.replace(LTXV_13B, num_layers=layers_13b), 2, grid, 128)),
      Case('vae', f"VAE decode (0.9.8 decoder): {video[0]} frames {video[1]}x{video[2]}",
           _vae_decode(VAE_098_DECODER, {}, video)),
      Case('t5', f"T5 XXL encoder: {t5_layers} layers, 128 tokens",
           _t5(dataclasses.replace(T5Config.xxl(), num_layers=t5_layers), 1, 128)),
  ]
