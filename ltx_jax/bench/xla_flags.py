"""XLA flags the benchmarks run with on CPU (set before JAX creates its backend)."""

from __future__ import annotations

import os

# Empty on purpose. Measured on a 2-core AMD EPYC (Zen 4), one transformer layer at the 2B width:
# --xla_cpu_use_onednn=true and --xla_cpu_experimental_xnn_fusion_type=dot change nothing in
# f32 and make bf16 slower once Dense asks for f32 results (2.2 s -> 2.7 s);
# --xla_cpu_use_thunk_runtime is gone from this XLA. XLA uses every core by default.
CPU: tuple[str, ...] = ()


def apply() -> str:
  """Sets XLA_FLAGS to `CPU` unless the user set XLA_FLAGS; returns the value in force."""
  if 'XLA_FLAGS' not in os.environ and CPU:
    os.environ['XLA_FLAGS'] = ' '.join(CPU)
  return os.environ.get('XLA_FLAGS', '')
