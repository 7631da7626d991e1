"""Timing, memory and machine facts for the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp


def on_gpu() -> bool:
  return jax.default_backend() == 'gpu'


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
  """What the numbers were measured on."""
  import flax
  facts = {'cpu': f"{cpu_model()}, {os.cpu_count()} cores", 'backend': jax.default_backend(),
           'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
           'flax': flax.__version__, 'XLA_FLAGS': os.environ.get('XLA_FLAGS', '') or '(none)'}
  try:
    import torch
    facts['torch'] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    import diffusers
    import transformers
    facts['diffusers'] = diffusers.__version__
    facts['transformers'] = transformers.__version__
  except ImportError:
    facts['torch'] = 'not installed'
  if hasattr(os, 'getloadavg'):
    facts['load average at start'] = '%.1f %.1f %.1f' % os.getloadavg()
  return facts


def block(x):
  """Waits for JAX arrays or a torch CUDA stream; returns x."""
  jax.block_until_ready(x)
  try:
    import torch
    if torch.cuda.is_available():
      torch.cuda.synchronize()
  except ImportError:
    pass
  return x


def timed(fn: Callable[[], object]) -> float:
  t0 = time.perf_counter()
  block(fn())
  return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
  """Runs each function `runs` times, round robin, so that background load hits all alike."""
  times = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      times[name].append(timed(fn))
  return times


def median(xs: list[float]) -> float:
  return statistics.median(xs) if xs else float('nan')


def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _trim_heap() -> None:
  try:
    import ctypes
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass


def tree_bytes(tree) -> int:
  """Bytes of the arrays in a pytree (JAX) or of a torch module's parameters and buffers."""
  if hasattr(tree, 'parameters'):
    return sum(t.numel() * t.element_size() for t in (*tree.parameters(), *tree.buffers()))
  return sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, 'nbytes'))


class PeakMemory:
  """Peak memory over a `with` block, above what was in use when it began (add the weights'
  bytes, allocated before, for what a call needs in all).

  CPU: host resident set size, sampled every millisecond by a thread. GPU: the device
  allocator's peak (JAX) or torch.cuda's peak, whichever framework ran.
  """

  def __init__(self, torch_device: str | None = None):
    self.torch_device = torch_device
    self.peak = 0

  def __enter__(self):
    self._stop = threading.Event()
    if on_gpu() or (self.torch_device or '').startswith('cuda'):
      self._gpu_start()
      return self
    _trim_heap()  # hand freed memory back first, or a new allocation may reuse it unseen
    self._base = _rss_bytes()
    self._max = self._base

    def sample():
      while not self._stop.wait(0.001):
        self._max = max(self._max, _rss_bytes())

    self._thread = threading.Thread(target=sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    if hasattr(self, '_thread'):
      self._stop.set()
      self._thread.join()
      self._max = max(self._max, _rss_bytes())
      self.peak = self._max - self._base
    else:
      self.peak = self._gpu_peak()
    return False

  def _gpu_start(self):
    if (self.torch_device or '').startswith('cuda'):
      import torch
      torch.cuda.reset_peak_memory_stats()
      self._base = torch.cuda.memory_allocated()
    else:
      stats = jax.devices()[0].memory_stats() or {}
      self._base = stats.get('bytes_in_use', 0)
      self._jax_peak0 = stats.get('peak_bytes_in_use', 0)

  def _gpu_peak(self) -> int:
    if (self.torch_device or '').startswith('cuda'):
      import torch
      return torch.cuda.max_memory_allocated() - self._base
    stats = jax.devices()[0].memory_stats() or {}
    # JAX cannot reset its peak: a block that never exceeds an earlier peak reports that peak.
    return max(stats.get('peak_bytes_in_use', 0), self._jax_peak0) - self._base


def matmul_peak(dtype=jnp.bfloat16, n: int | None = None, runs: int = 5) -> float:
  """FLOP/s of a large square matmul in `dtype` (f32 accumulation): the MFU denominator."""
  n = n or (8192 if on_gpu() else 2048)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32).astype(dtype))
  mm(a, b).block_until_ready()
  best = min(timed(lambda: mm(a, b)) for _ in range(runs))
  return 2 * n ** 3 / best
