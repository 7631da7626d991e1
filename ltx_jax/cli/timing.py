"""Stage timings, with the XLA compile time spent inside each stage.

`Stages` times named blocks; a jax.monitoring listener adds up tracing, lowering and backend
compile events while a block runs, so "denoise 14.2 s (compile 13.9 s)" says where time went.
The CLI passes a `Stages` as the pipeline's `timer`, so the pipeline's own stages (prepare, text
and image encoding, denoise, decode) are timed where they run.
"""

from __future__ import annotations

import contextlib
import threading
import time

import jax

from ltx_jax.pause_point import pause_point

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')


class Stages:
  """Wall and compile seconds per stage name, summed over repeats."""

  def __init__(self):
    self.wall: dict[str, float] = {}
    self.compile: dict[str, float] = {}
    self._open: list[str] = []
    self._lock = threading.Lock()
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def close(self):
    jax.monitoring.unregister_event_duration_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **_):
    if event in _COMPILE_EVENTS:
      with self._lock:
        if self._open:  # charged to the innermost open stage
          name = self._open[-1]
          self.compile[name] = self.compile.get(name, 0.0) + duration

  @contextlib.contextmanager
  def __call__(self, name: str):
    with self._lock:
      self._open.append(name)
    start = time.perf_counter()
    try:
      pause_point(name)  # test-only (ltx_jax/pause_point.py)
      yield
    finally:
      elapsed = time.perf_counter() - start
      with self._lock:
        self._open.pop()
        self.wall[name] = self.wall.get(name, 0.0) + elapsed
        if self._open:  # an inner stage's time is not its parent's
          parent = self._open[-1]
          self.wall[parent] = self.wall.get(parent, 0.0) - elapsed

  def snapshot(self) -> dict:
    return {'seconds': {k: round(v, 4) for k, v in self.wall.items()},
            'compile_seconds': {k: round(v, 4) for k, v in self.compile.items()}}

  def summary(self) -> str:
    parts = []
    for k, v in self.wall.items():
      c = self.compile.get(k, 0.0)
      parts.append(f"{k} {v:.2f} s" + (f" (compile {c:.2f} s)" if c >= 0.01 else ''))
    return ', '.join(parts)
