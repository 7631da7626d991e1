"""Host-side progress of the denoising loop, and the loop run one step per call to drive it.

A host callback inside the scanned loop keeps the program out of XLA's persistent compilation
cache (JAX does not store programs with host callbacks), so every run would compile again.
With progress on, the loop instead runs as a compiled one-step program called once per step
(`run_steps`), and the host reports after each step: a tqdm bar on a terminal, log lines with
step, rate and ETA otherwise (logger `ltx_jax.progress`, INFO). The step program holds no
callback, so a later run reads it from the persistent cache.

The step program is compiled ahead of the first step (`compiled`), with a notice when a shape
is new to this process, so the bar's rate counts denoising steps only.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

logger = logging.getLogger('ltx_jax.progress')

_CACHE_HIT = '/jax/compilation_cache/cache_hits'


class Reporter:
  """Reports compiles and denoising steps: a bar (`bar=True`, tqdm) or log lines every
  `interval` seconds (and at the first and last step)."""

  def __init__(self, bar: bool | None = None, interval: float = 10.0, desc: str = 'denoising'):
    self.bar = sys.stderr.isatty() if bar is None else bool(bar)
    self.interval = interval
    self.desc = desc
    self._tqdm = None
    self._total = 0
    self._done = 0
    self._start = self._last = 0.0

  def compiling(self, what: str):
    logger.info("%s: compiling (first run of this shape in this process)...", what)

  def compiled(self, what: str, seconds: float, from_cache: bool):
    logger.info("%s: %s in %.1f s", what,
                'read from the persistent compilation cache' if from_cache else 'compiled',
                seconds)

  def start(self, total: int):
    self._total, self._done = total, 0
    self._start = self._last = time.perf_counter()
    if self.bar:
      from tqdm.auto import tqdm
      # A terminal that reports no size (a bare pseudo-terminal) would get an empty bar.
      cols = shutil.get_terminal_size((100, 24)).columns or 100
      self._tqdm = tqdm(total=total, desc=self.desc, unit='step', leave=False, ncols=cols)

  def step(self):
    self._done += 1
    if self._tqdm is not None:
      self._tqdm.update(1)
      return
    now = time.perf_counter()
    if self._done in (1, self._total) or now - self._last >= self.interval:
      self._last = now
      rate = (now - self._start) / self._done
      logger.info("%s: step %d/%d, %.2f s/step, ETA %.0f s", self.desc, self._done,
                  self._total, rate, rate * (self._total - self._done))

  def close(self):
    if self._tqdm is not None:
      self._tqdm.refresh()  # the final count and rate, drawn even when the steps were faster
      self._tqdm.close()    # than tqdm's redraw interval
    self._tqdm = None


# -- programs compiled ahead of their first call ------------------------------------------------

_COMPILED: dict = {}


def _signature(args) -> tuple:
  """What a compiled program's inputs must match: tree structure, shapes, dtypes, weak types,
  shardings."""
  leaves, tree = jax.tree.flatten(args)
  return tree, tuple(
      (np.shape(x), str(x.dtype if hasattr(x, 'dtype') else np.result_type(x)),
       bool(getattr(getattr(x, 'aval', None), 'weak_type', False)),
       getattr(x, 'sharding', None)) for x in leaves)


def compiled(jitted, static: tuple, args: tuple, report: Reporter, what: str = 'denoise'):
  """`jitted` (static arguments first) compiled for `static` and the shapes of `args`, once
  per process; the executable takes `args` only. XLA's persistent cache, if enabled, serves a
  program compiled by an earlier run."""
  key = (id(jitted), static, _signature(args))
  program = _COMPILED.get(key)
  if program is None:
    report.compiling(what)
    hits = []
    listener = lambda event, **_: hits.append(event) if event == _CACHE_HIT else None  # noqa: E731
    jax.monitoring.register_event_listener(listener)
    start = time.perf_counter()
    try:
      program = jitted.lower(*static, *args).compile()
    finally:
      jax.monitoring.unregister_event_listener(listener)
    report.compiled(what, time.perf_counter() - start, bool(hits))
    _COMPILED[key] = program
  return program


def run_steps(step: Callable[[Any, np.int32], tuple[Any, Any]], num_steps: int, carry,
              report: Reporter) -> tuple[Any, list]:
  """carry, out_i = step(carry, i) for i in 0..num_steps-1 -> (the last carry, [out_i]).
  Step i + 1 is dispatched before step i is awaited, so the device does not wait for the
  host's report."""
  outs = []
  pending = None  # the last dispatched step's results
  report.start(num_steps)
  try:
    for i in range(num_steps):
      carry, out = step(carry, np.int32(i))
      if pending is not None:
        jax.block_until_ready(pending)
        report.step()
      pending = (carry, out)
      outs.append(out)
    if pending is not None:
      jax.block_until_ready(pending)
      report.step()
  finally:
    report.close()
  return carry, outs
