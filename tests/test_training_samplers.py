"""Timestep samplers against the official ones (LTX-Video-Trainer's uniform and shifted
logit-normal, the LTX-2 trainer's stretched variant, written in torch in
tests/training_reference.py): two-sample Kolmogorov-Smirnov distance of 200,000 draws each at
three token counts; the shift values exactly."""

import jax
import numpy as np
import pytest
import torch

from ltx_jax.errors import UsageError
from ltx_jax.training import SamplerConfig, logit_normal_shift, sample_sigmas
from training_reference import official_shift, official_sigmas

DRAWS = 200_000
TOKENS = (256, 2048, 8448)  # below, inside and above the (1024, 4096) line


def ks_distance(a, b) -> float:
  a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
  grid = np.concatenate([a, b])
  fa = np.searchsorted(a, grid, side='right') / len(a)
  fb = np.searchsorted(b, grid, side='right') / len(b)
  return float(np.max(np.abs(fa - fb)))


def test_shift_values_exact():
  for n in (1, 256, 1024, 2048, 4096, 8448, 100_000):
    assert logit_normal_shift(n) == official_shift(n)
  assert logit_normal_shift(1024) == pytest.approx(0.95) and logit_normal_shift(4096) == 2.05


@pytest.mark.parametrize('config', [
    SamplerConfig('shifted_logit_normal'), SamplerConfig('shifted_logit_normal', std=0.7),
    SamplerConfig('stretched_logit_normal'), SamplerConfig('uniform', min_value=0.2,
                                                           max_value=0.9)],
    ids=['logit_normal', 'logit_normal_std', 'stretched', 'uniform'])
def test_sampler_distribution(config):
  g = torch.Generator().manual_seed(0)
  for i, tokens in enumerate(TOKENS):
    ours = np.asarray(sample_sigmas(config, jax.random.key(i), DRAWS, tokens))
    theirs = official_sigmas(config.name, DRAWS, tokens, g, std=config.std, eps=config.eps,
                             uniform_prob=config.uniform_prob, min_value=config.min_value,
                             max_value=config.max_value).numpy()
    d = ks_distance(ours, theirs)
    assert d <= 0.01, (config.name, tokens, d)
    assert ours.min() >= 0 and ours.max() <= 1


def test_ks_detects_a_wrong_shift():
  """The test has teeth: a sampler 0.1 off in mu fails it."""
  g = torch.Generator().manual_seed(0)
  ours = np.asarray(sample_sigmas(SamplerConfig(), jax.random.key(0), DRAWS, 2048 + 280))
  theirs = official_sigmas('shifted_logit_normal', DRAWS, 2048, g).numpy()
  assert ks_distance(ours, theirs) > 0.01


@pytest.mark.parametrize('bad', [dict(name='beta'), dict(std=0), dict(uniform_prob=1.5),
                                 dict(name='uniform', min_value=0.5, max_value=0.2)])
def test_bad_sampler(bad):
  with pytest.raises(UsageError):
    SamplerConfig(**bad)
