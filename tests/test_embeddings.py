"""The timestep sinusoid against diffusers' `get_timestep_embedding` (what the official and the
diffusers transformers and VAE decoders use): frequencies made on the host, exp in float64
rounded once, f32 angles."""

import math

import jax.numpy as jnp
import numpy as np
import torch

from ltx_jax.nn.embeddings import sinusoid_frequencies, timestep_sinusoid


def test_frequencies_round_once():
  ours = sinusoid_frequencies(256)
  exponent = (np.float32(-math.log(10000.0)) * np.arange(128, dtype=np.float32)) / np.float32(128)
  assert ours.dtype == np.float32 and ours.shape == (128,)
  assert all(ours[i] == np.float32(math.exp(float(e))) for i, e in enumerate(exponent))
  theirs = torch.exp(-math.log(10000.0) * torch.arange(0, 128, dtype=torch.float32) / 128).numpy()
  ulps = np.abs(ours.view(np.int32) - theirs.view(np.int32))
  assert ulps.max() <= 1 and (ulps > 0).sum() <= 2  # torch's CPU exp is not correctly rounded


def test_sinusoid_matches_diffusers():
  from diffusers.models.embeddings import get_timestep_embedding
  t = np.array([0.03, 1.0, 421.875, 725.0, 800.0, 999.0], np.float32)
  want = get_timestep_embedding(torch.from_numpy(t), 256, flip_sin_to_cos=True,
                                downscale_freq_shift=0).numpy()
  got = np.asarray(timestep_sinusoid(jnp.asarray(t), 256))
  theirs = torch.exp(-math.log(10000.0) * torch.arange(0, 128, dtype=torch.float32) / 128).numpy()
  same = np.tile(sinusoid_frequencies(256) == theirs, 2)  # columns whose frequency is torch's
  np.testing.assert_allclose(got[:, same], want[:, same], rtol=0, atol=2e-7)
  np.testing.assert_allclose(got, want, rtol=0, atol=5e-5 * 800 / 1000 + 1e-6)
