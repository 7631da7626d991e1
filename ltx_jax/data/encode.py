"""The models that make the cache: the pipeline's VAE encoder and T5, batched over the local
devices, and their identities.

Latents are stored as LTX-Video-Trainer stores them (`ltxv_utils.encode_video`): a draw from
the VAE's posterior, `mean + exp(logvar / 2) * N(0, 1)` (log-variance clipped to [-30, 20] as
diffusers' `DiagonalGaussianDistribution`), normalised per channel with the VAE's statistics,
i.e. in the space the transformer denoises (`LTXPipeline`'s latents). `latents='mean'` stores
the posterior mean instead (what the pipeline encodes for conditioning, and the LTX-2 trainer's
choice). Each sample's draw comes from its own key, `fold_in(key(seed), hash of the sample's
key)`, so a rerun or a resumed run stores the same numbers.

Text embeddings are `LTXPipeline.encode_prompt`'s: the T5 output with the tokens' mask passed
to T5, as the official inference pipeline encodes prompts (LTX-Video-Trainer runs T5 without
the mask; masking keeps training conditions equal to generation's).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax.data.records import Identity, model_identity
from ltx_jax.errors import UsageError

__all__ = ['LATENT_KINDS', 'Encoders', 'load_encoders', 'sample_seed']

LATENT_KINDS = ('sample', 'mean')
_LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp
_CONSTANT_LOGVAR = -30.0  # the official encoder's 'constant' log-variance (approx. ln 0)


def sample_seed(key: str) -> int:
  """The 31-bit number a sample's posterior draw is keyed by (from its key string)."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], 'little') & 0x7FFFFFFF


@functools.partial(jax.jit, static_argnums=(0,))
def _moments(graph, state, video):
  """video [B, F, H, W, 3] -> the encoder's moments [B, F', H', W', C + log-variance channels]
  (the mean first), in the VAE's dtype."""
  return nnx.merge(graph, state).encoder(video)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _draw(moments, seeds, channels: int, log_var: str):
  """moments [B, F', H', W', *] and seeds [B] -> one posterior draw per row, [B, F', H', W', C]
  in the moments' dtype: mean + exp(clip(logvar, -30, 20) / 2) * N(0, 1)."""
  mean = moments[..., :channels]
  if log_var == 'uniform':
    logvar = jnp.broadcast_to(moments[..., channels:channels + 1], mean.shape)
  elif log_var == 'per_channel':
    logvar = moments[..., channels:2 * channels]
  else:  # 'constant'
    logvar = jnp.full(mean.shape, _CONSTANT_LOGVAR, mean.dtype)
  std = jnp.exp(0.5 * jnp.clip(logvar.astype(jnp.float32), *_LOGVAR_RANGE))
  eps = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.key(0), s),
                                             mean.shape[1:], jnp.float32))(seeds)
  return (mean.astype(jnp.float32) + std * eps).astype(mean.dtype)


class Encoders:
  """A pipeline's VAE and text encoder used to make training data.

  encode_video: pixels [B, F, H, W, 3] in [-1, 1] -> normalised f32 latents [B, F', H', W', C];
  encode_text: captions -> (f32 embeddings [B, L, D], int32 mask [B, L]). Batches are split over
  the local devices (the pipeline's mesh when it has one); each call pads its rows to
  `batch_size` so one program per bucket is compiled.
  """

  def __init__(self, pipe, *, latents: str = 'sample', max_sequence_length: int = 256,
               seed: int = 0, batch_size: int = 1):
    if latents not in LATENT_KINDS:
      raise UsageError(f"latents={latents!r}; choose one of {', '.join(LATENT_KINDS)}")
    if pipe.text_encoder is None or pipe.tokenizer is None:
      raise UsageError("preprocessing needs the model's text encoder and tokenizer")
    self.pipe = pipe
    self.latents = latents
    self.max_sequence_length = int(max_sequence_length)
    self.seed = int(seed)
    self.devices = jax.local_devices()
    self.batch_size = -(-int(batch_size) // len(self.devices)) * len(self.devices)
    self._vae_split = nnx.split(pipe.vae)
    self._batch_sharding = None
    if pipe.partitioning is not None:
      self._batch_sharding = lambda shape: pipe.partitioning.sharding(
          shape, ('batch',) + (None,) * (len(shape) - 1))
    elif len(self.devices) > 1:  # data parallel over this host's devices, weights replicated
      mesh = jax.sharding.Mesh(np.array(self.devices), ('data',))
      graph, state = self._vae_split
      state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
      self._vae_split = graph, state
      self._batch_sharding = lambda shape: jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec('data'))
    self._identities = None

  @property
  def release(self) -> str:
    return self.pipe.release or 'unknown'

  def identities(self) -> dict[str, Identity]:
    """{'vae': Identity, 'text_encoder': Identity (with the tokenizer's model)} (computed once:
    hashing T5-XXL's weights takes seconds)."""
    if self._identities is None:
      tok = self.pipe.tokenizer.sp.serialized_model_proto()
      self._identities = {'vae': model_identity(self.pipe.vae, self.release),
                          'text_encoder': model_identity(self.pipe.text_encoder, self.release,
                                                         tok)}
    return self._identities

  def _rows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Pads the leading axis to a multiple of batch_size by repeating the last row."""
    n = x.shape[0]
    total = -(-n // self.batch_size) * self.batch_size
    if total > n:
      x = np.concatenate([x, np.repeat(x[-1:], total - n, axis=0)])
    return x, n

  def encode_video(self, pixels: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Pixels [B, F, H, W, 3] in [-1, 1] and the samples' keys -> normalised f32 latents
    [B, F', H', W', C] (numpy)."""
    vae = self.pipe.vae
    x, n = self._rows(np.asarray(pixels, np.float32))
    seeds, _ = self._rows(np.asarray([sample_seed(f"{self.seed}:{k}") for k in keys], np.uint32))
    out = []
    for i in range(0, x.shape[0], self.batch_size):
      video = jnp.asarray(x[i:i + self.batch_size]).astype(vae.dtype)
      s = jnp.asarray(seeds[i:i + self.batch_size])
      if self._batch_sharding is not None:
        video = jax.device_put(video, self._batch_sharding(video.shape))
        s = jax.device_put(s, self._batch_sharding(s.shape))
      graph, state = self._vae_split
      moments = _moments(graph, state, video)
      c = vae.config.latent_channels
      z = (moments[..., :c] if self.latents == 'mean' else
           _draw(moments, s, c, vae.config.latent_log_var))
      # Normalised as the pipeline's `_encode_pixels` does (outside the jitted encoder).
      out.append(np.asarray(jax.device_get(vae.normalize(z).astype(jnp.float32))))
    return np.concatenate(out)[:n]

  def encode_text(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (f32 embeddings [B, L, D], int32 mask [B, L]), L = max_sequence_length."""
    rows = list(captions)
    n = len(rows)
    total = -(-n // self.batch_size) * self.batch_size
    rows += [rows[-1]] * (total - n)
    embs, masks = [], []
    for i in range(0, total, self.batch_size):
      emb, mask = self.pipe.encode_prompt(rows[i:i + self.batch_size], self.max_sequence_length)
      embs.append(np.asarray(jax.device_get(emb), np.float32))
      masks.append(np.asarray(jax.device_get(mask), np.int32))
    return np.concatenate(embs)[:n], np.concatenate(masks)[:n]


def load_encoders(source: str, *, file: str = '', release: str = '', dtype: str = 'bfloat16',
                  text_encoder_dtype: str = '', attention: str = 'auto', offline: bool = False,
                  allow_nonfinite: bool = False, allow_custom: bool = False):
  """An `LTXPipeline` with only the VAE, T5 and tokenizer loaded (no transformer) from what
  `ltx_jax.sources.resolve_source` understands, or 'smoke' (ltx_jax.smoke's random-weight
  model: its transformer is built too, it is tiny). allow_custom: accept weights of no known
  release (as `resolve_source`)."""
  from ltx_jax.weights import precision
  dt = precision.parse(dtype, what='compute')
  te_dt = precision.parse(text_encoder_dtype or dtype, what='compute')
  if source == 'smoke':
    from ltx_jax import smoke
    return smoke.build_pipeline(dtype=dt, text_encoder_dtype=te_dt, attention=attention)
  from ltx_jax.models.t5 import load_text_encoder, load_tokenizer
  from ltx_jax.models.vae import load_vae
  from ltx_jax.pipeline import LTXPipeline
  from ltx_jax.sources import resolve_source
  ms = resolve_source(os.path.expanduser(source), file=file or None, release=release or None,
                      offline=True if offline else None, allow_custom=allow_custom)
  ms.require('vae', 'text_encoder', 'tokenizer')
  pipe = LTXPipeline(None, load_vae(ms.vae, dtype=dt, allow_nonfinite=allow_nonfinite),
                     load_text_encoder(ms.text_encoder, dtype=te_dt, attention=attention,
                                       allow_nonfinite=allow_nonfinite),
                     load_tokenizer(ms.tokenizer), release=ms.release.name)
  pipe.source = ms
  return pipe
