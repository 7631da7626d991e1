"""Conditioned training strategies: what the transformer sees beside the noised target.

- `ReferenceVideo` (IC-LoRA), as LTX-Video-Trainer's `reference_video` mode: the clean
  reference latents (the batch's `reference_latents`, same grid as the target) go before the
  noised target, at timestep 0, and every reference token sits at the position of the target
  token it matches (the official trainer repeats the target's coordinates for the joined
  sequence). The loss is the standard masked loss on the target's tokens only; first-frame
  conditioning inside the target follows the objective's `first_frame_p`.
- `Prefix` (image-to-video, extension forward): per sample with probability `p`, the first
  `frames` latent frames stay clean, at timestep 0, out of the loss: the in-place tokens an
  inference `Condition` at frame 0 and strength 1 builds (an image for one latent frame, an
  8(k - 1) + 1-frame clip for k).
- `Suffix` (extension backward): the last `frames` latent frames, laid out as an inference
  `Condition(video=..., frame_index=8 (F - k))` at strength 1 lays them out: the segment's
  first min(k, 2) latent frames become extra clean tokens before the video's (timestep 0, out
  of the loss) while the video keeps those frames noised; its later frames are clean in place.
  Every sample is conditioned (the extra tokens are part of the sequence's shape).

Prefix and Suffix leave clips of no more than `frames` latent frames (images in a mixed set)
unconditioned, as the official first-frame rule leaves single-frame clips.

Token coordinates follow the training objective's convention (`objective.video_coords`,
non-causal as the official trainer's); an extra token of latent frame j of a segment starting
at latent frame s is placed where the video's frame s + j is.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.training import objective
from ltx_jax.training.objective import Draws, ObjectiveConfig
from ltx_jax.training.samplers import sample_sigmas

__all__ = ['ReferenceVideo', 'Prefix', 'Suffix', 'STRATEGIES', 'Inputs', 'batch_keys',
           'check_batch', 'draw', 'inputs', 'loss_fn']

NUM_PREFIX = 2  # the official pipeline's latent frames of a later segment that become extra tokens


def _probability(v, name):
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
    raise UsageError(f"{name}={v!r}; expected a probability in [0, 1]")


def _frames(v, name):
  if isinstance(v, bool) or not isinstance(v, int) or v < 1:
    raise UsageError(f"{name}={v!r}; expected an integer number of latent frames >= 1")


@dataclasses.dataclass(frozen=True)
class ReferenceVideo:
  """IC-LoRA: the batch's clean `reference_latents` beside the noised target (first-frame
  conditioning of the target as the objective's first_frame_p / first_frame_mode)."""


@dataclasses.dataclass(frozen=True)
class Prefix:
  """The first `frames` latent frames clean with probability `p`, drawn per sample
  (image-to-video: frames=1; extension forward: frames > 1)."""
  frames: int = 1
  p: float = 1.0

  def __post_init__(self):
    _frames(self.frames, 'Prefix frames')
    _probability(self.p, 'Prefix p')


@dataclasses.dataclass(frozen=True)
class Suffix:
  """The last `frames` latent frames clean, as an inference Condition at their frame
  (extension backward); every sample."""
  frames: int = 1

  def __post_init__(self):
    _frames(self.frames, 'Suffix frames')


STRATEGIES = (ReferenceVideo, Prefix, Suffix)


def batch_keys(strategy) -> tuple[str, ...]:
  """The batch arrays a strategy needs beyond the standard ones."""
  return ('reference_latents',) if isinstance(strategy, ReferenceVideo) else ()


def check_batch(strategy, batch: dict) -> None:
  """Refuses a batch the strategy cannot train on (by shapes only, before any compile)."""
  if isinstance(strategy, ReferenceVideo):
    ref, lat = batch['reference_latents'].shape, batch['latents'].shape
    if ref != lat:
      raise UsageError(f"reference_latents {list(ref)} do not match latents {list(lat)}; the "
                       "reference video must be preprocessed into the target's bucket")


def _applies(strategy, f: int) -> bool:
  """Whether a Prefix / Suffix conditions clips of f latent frames (one is left to learn)."""
  return strategy.frames < f


def _suffix_layout(strategy: Suffix, f: int) -> tuple[int, int]:
  """(s, e): the segment's first latent frame and its number of extra tokens' frames
  (e = 0: the clip is too short to condition)."""
  if not _applies(strategy, f):
    return f, 0
  return f - strategy.frames, min(strategy.frames, NUM_PREFIX)


def draw(strategy, config: ObjectiveConfig, key: jax.Array, latents: jax.Array) -> Draws:
  """The step's random inputs: noise and sigmas as the standard objective; `conditioning`
  [B, N] (True: a clean video token) by the strategy."""
  if isinstance(strategy, ReferenceVideo):
    return objective.draw(config, key, latents)
  b, f, h, w, c = latents.shape
  n = f * h * w
  k_sigma, k_noise, k_cond = jax.random.split(key, 3)
  frame = jnp.arange(n) // (h * w)  # [N] each token's latent frame
  if isinstance(strategy, Prefix):
    on = jax.random.uniform(k_cond, (b,)) < strategy.p  # [B]
    cond = on[:, None] & (frame < strategy.frames)[None] & _applies(strategy, f)
  else:
    s, e = _suffix_layout(strategy, f)
    cond = jnp.broadcast_to((frame >= s + e)[None] & _applies(strategy, f), (b, n))
  return Draws(jax.random.normal(k_noise, (b, n, c), jnp.float32),
               sample_sigmas(config.sampler, k_sigma, b, n), cond)


class Inputs(NamedTuple):
  """What the transformer gets and what the loss compares, for one batch."""
  tokens: jax.Array     # [B, E + N, C]: E conditioning tokens first, then the video's N
  timesteps: jax.Array  # [B, E + N] f32, in 0..1000 (0: clean)
  coords: jax.Array     # [B, 3, E + N] (seconds, y px, x px)
  mask: jax.Array       # [B, E + N] f32: 1 on clean conditioning tokens, 0 on free ones
  target: jax.Array     # [B, N, C]: noise - x0
  keep: jax.Array       # [B, N] bool: the video tokens in the loss


def inputs(strategy, batch: dict, draws: Draws) -> Inputs:
  """The strategy's transformer inputs for `batch` (latents [B, F, H, W, C], frame_rate [B],
  reference_latents for `ReferenceVideo`) under `draws`."""
  latents = batch['latents']
  b, f, h, w, c = latents.shape
  x0 = objective.pack(latents.astype(jnp.float32))  # [B, N, C]
  noise = draws.noise.astype(jnp.float32)
  cond = draws.conditioning  # [B, N]
  sigma = draws.sigmas.astype(jnp.float32)
  s = sigma[:, None, None]
  noisy = jnp.where(cond[..., None], x0, (1 - s) * x0 + s * noise)
  t = jnp.where(cond, 0.0, jnp.round(sigma * 1000.0)[:, None])  # [B, N]
  coords = objective.video_coords((f, h, w), batch['frame_rate'])  # [B, 3, N]
  if isinstance(strategy, ReferenceVideo):
    extra = objective.pack(batch['reference_latents'].astype(jnp.float32))  # [B, N, C]
    extra_coords = coords
  elif isinstance(strategy, Suffix):
    start, e = _suffix_layout(strategy, f)
    extra = x0[:, start * h * w:(start + e) * h * w]  # [B, E, C]
    extra_coords = coords[:, :, start * h * w:(start + e) * h * w]
  else:
    extra = x0[:, :0]
    extra_coords = coords[:, :, :0]
  n_extra = extra.shape[1]
  return Inputs(jnp.concatenate([extra, noisy], axis=1),
                jnp.concatenate([jnp.zeros((b, n_extra), jnp.float32), t], axis=1),
                jnp.concatenate([extra_coords, coords], axis=2),
                jnp.concatenate([jnp.ones((b, n_extra), jnp.float32),
                                 cond.astype(jnp.float32)], axis=1),
                noise - x0, ~cond)


def loss_fn(strategy, model, batch: dict, draws: Draws) -> jax.Array:
  """The masked flow-matching loss on the video's free tokens (the official compute_loss:
  mean((pred - target)^2 * m / mean(m)) over the target's tokens)."""
  x = inputs(strategy, batch, draws)
  tokens = lambda a: sharding_lib.constrain(a, ('batch', 'tokens', None))
  pred = model(tokens(x.tokens).astype(model.dtype), batch['context'].astype(model.dtype),
               x.timesteps, batch['context_mask'], video_coords=x.coords)
  n = x.target.shape[1]
  pred = pred[:, -n:].astype(jnp.float32)  # [B, N, C]: the target's tokens
  keep = x.keep.astype(jnp.float32)[..., None]
  err = (pred - x.target) ** 2
  return jnp.mean(err * keep / jnp.mean(keep))
