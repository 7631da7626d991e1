"""Shared test setup: CPU only, f32 parity helpers, reproducible torch."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Hermetic tests: no persistent compilation cache unless a test turns it on itself.
os.environ.setdefault('LTX_JAX_COMPILATION_CACHE', '0')

import numpy as np
import pytest


def rel_l2(a, b) -> float:
  """||a - b|| / ||b|| in float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def randomize_torch_module(module, seed: int = 0, std: float = 0.2) -> None:
  """Overwrites every parameter (zero-initialised tables included) with N(0, std), reproducibly.

  Norm weights get 1 + noise so activations stay well scaled.
  """
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
      if 'norm' in name and p.ndim == 1 and name.endswith('weight'):
        noise = noise + 1.0
      p.copy_(noise.to(p.dtype))


@pytest.fixture
def highest_precision():
  import jax
  with jax.default_matmul_precision('highest'):
    yield


def pytest_collection_modifyitems(config, items):
  """`gpu`-marked tests run only where JAX's default backend is a GPU (run them with
  JAX_PLATFORMS=cuda); elsewhere they are skipped with the reason."""
  marked = [item for item in items if item.get_closest_marker('gpu')]
  if not marked:
    return
  import jax
  backend = jax.default_backend()
  if backend == 'gpu':
    return
  skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU as JAX's default backend (have {backend}; "
                                 "run with JAX_PLATFORMS=cuda on a GPU machine)")
  for item in marked:
    item.add_marker(skip)
