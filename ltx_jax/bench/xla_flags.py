"""XLA flags the benchmarks run with on CPU (set before JAX creates its backend)."""

from __future__ import annotations

import os

# Measured on a 2-core AMD EPYC (Zen 4): see the issue note in the benchmark report.
CPU: tuple[str, ...] = ()


def apply() -> str:
  """Sets XLA_FLAGS to `CPU` unless the user set XLA_FLAGS; returns the value in force."""
  if 'XLA_FLAGS' not in os.environ and CPU:
    os.environ['XLA_FLAGS'] = ' '.join(CPU)
  return os.environ.get('XLA_FLAGS', '')
