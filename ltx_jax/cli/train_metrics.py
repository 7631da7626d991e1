"""Training metrics: TensorBoard events (tensorboardX), a JSON-lines log and a progress bar.

Per record (every `log_every` steps, averaged over them): loss, loss per sigma range
(`loss/sigma_0.00-0.25`, ...), learning rate, gradient norm, step time, samples/s, tokens/s,
MFU and device memory. MFU is the train step's FLOPs (XLA's cost analysis of the lowered
program) per second over the devices' peak; without a known peak (CPUs) it is left
out unless `metrics.peak_tflops` names one. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

SIGMA_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)
# Dense bf16 peak FLOP/s per device kind (vendor data sheets; substring of device_kind).
PEAK_FLOPS = (('H200', 989e12), ('H100', 989e12), ('A100', 312e12), ('L40S', 362e12),
              ('L4', 121e12), ('A10', 125e12), ('TPU v6', 918e12), ('TPU v5p', 459e12),
              ('TPU v5', 197e12), ('TPU v4', 275e12))


def peak_flops(device: jax.Device, override_tflops: float = 0.0) -> float | None:
  """Peak FLOP/s of one device: the configured value, else the table's, else None."""
  if override_tflops:
    return override_tflops * 1e12
  kind = getattr(device, 'device_kind', '')
  return next((v for name, v in PEAK_FLOPS if name.lower() in kind.lower()), None)


def lowered_flops(lowered: Any) -> float | None:
  """FLOPs of one call of a lowered (or compiled) program, XLA's cost analysis of its HLO;
  None if the backend reports nothing."""
  try:
    cost = lowered.cost_analysis()
  except Exception:  # noqa: BLE001  -- some backends report nothing
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def device_memory() -> dict[str, float]:
  """GiB in use and at peak on the busiest local device (accelerators), else the process's
  peak resident memory (CPU)."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  stats = [s for s in stats if s]
  if stats:
    return {'memory/in_use_gib': max(s.get('bytes_in_use', 0) for s in stats) / 2 ** 30,
            'memory/peak_gib': max(s.get('peak_bytes_in_use', 0) for s in stats) / 2 ** 30}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
  return {'memory/host_peak_gib': rss / 2 ** 30}


def sigma_bins(sigmas: np.ndarray, losses: np.ndarray) -> dict[str, tuple[float, int]]:
  """{'loss/sigma_LO-HI': (sum, count)} of per-sample losses by their sigma's range."""
  out = {}
  for lo, hi in zip(SIGMA_EDGES[:-1], SIGMA_EDGES[1:]):
    m = (sigmas >= lo) & ((sigmas < hi) if hi < 1.0 else (sigmas <= hi))
    if m.any():
      out[f"loss/sigma_{lo:.2f}-{hi:.2f}"] = (float(losses[m].sum()), int(m.sum()))
  return out


class Metrics:
  """Collects each step's values and writes a record every `log_every` steps."""

  def __init__(self, output_dir: Path, *, total_steps: int, start_step: int, log_every: int,
               samples_per_step: int, tokens_per_sample: int, flops_per_step: float | None,
               peak: float | None, num_devices: int, progress: bool, main: bool):
    self.main = main
    self.total, self.log_every = total_steps, log_every
    self.samples_per_step, self.tokens_per_sample = samples_per_step, tokens_per_sample
    self.flops_per_step, self.peak, self.num_devices = flops_per_step, peak, num_devices
    self._pending: list[dict] = []
    self._bins: dict[str, list] = {}
    self._start_step, self._start_time = start_step, time.perf_counter()
    self.writer = self.jsonl = self.bar = None
    if not main:
      return
    from tensorboardX import SummaryWriter
    output_dir.mkdir(parents=True, exist_ok=True)
    # purge_step: on resume, TensorBoard drops events a crashed run wrote past the checkpoint.
    self.writer = SummaryWriter(str(output_dir / 'tensorboard'),
                                purge_step=start_step + 1 if start_step else None)
    path = output_dir / 'metrics.jsonl'
    _truncate_jsonl(path, start_step)
    self.jsonl = path.open('a', encoding='utf-8')
    if progress and sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def step(self, step: int, values: dict[str, float], seconds: float,
           sigmas: np.ndarray | None = None, losses: np.ndarray | None = None) -> None:
    """Step `step` (1-based, done) took `seconds`; values: loss, learning_rate, grad_norm..."""
    self._pending.append(dict(values, step_time_s=seconds))
    if sigmas is not None and losses is not None:
      for k, (s, n) in sigma_bins(np.asarray(sigmas).ravel(), np.asarray(losses).ravel()).items():
        acc = self._bins.setdefault(k, [0.0, 0])
        acc[0] += s
        acc[1] += n
    if self.bar is not None:
      done = step - self._start_step
      eta = (time.perf_counter() - self._start_time) / max(done, 1) * (self.total - step)
      self.bar.set_postfix_str(f"loss {values['loss']:.4f} ETA {_hms(eta)}", refresh=False)
      self.bar.update(1)
    if step % self.log_every == 0 or step == self.total:
      self.flush(step)

  def flush(self, step: int) -> dict | None:
    if not self._pending:
      return None
    record = {k: float(np.mean([p[k] for p in self._pending])) for k in self._pending[-1]}
    record['learning_rate'] = self._pending[-1].get('learning_rate', math.nan)
    record.update({k: s / n for k, (s, n) in self._bins.items()})
    t = record['step_time_s']
    record['samples_per_s'] = self.samples_per_step / t
    record['tokens_per_s'] = self.samples_per_step * self.tokens_per_sample / t
    if self.flops_per_step:
      record['tflops_per_s'] = self.flops_per_step / t / 1e12
      if self.peak:
        record['mfu'] = self.flops_per_step / t / (self.peak * self.num_devices)
    record.update(device_memory())
    self._pending, self._bins = [], {}
    if self.main:
      for k, v in record.items():
        if math.isfinite(v):
          self.writer.add_scalar(_tag(k), v, step)
      self.writer.flush()
      self.jsonl.write(json.dumps(dict(step=step, time=time.time(), **record)) + '\n')
      self.jsonl.flush()
    return record

  def images(self, step: int, name: str, strip: np.ndarray) -> None:
    """A validation video's frames side by side (uint8 [H, n * W, 3]) as a TensorBoard image."""
    if not self.main:
      return
    self.writer.add_image(f"validation/{name}", strip, step, dataformats='HWC')
    self.writer.flush()

  def text(self, message: str) -> None:
    if self.bar is not None:
      self.bar.write(message)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.writer is not None:
      self.writer.close()
    if self.jsonl is not None:
      self.jsonl.close()


def _tag(key: str) -> str:
  """Record keys as TensorBoard tags: 'loss' -> 'train/loss'; sectioned keys keep theirs."""
  return key if '/' in key else f"train/{key}"


def _truncate_jsonl(path: Path, start_step: int) -> None:
  """Drops records past `start_step` (written after the checkpoint a run resumes from)."""
  if not path.exists():
    return
  keep = []
  for line in path.read_text(encoding='utf-8').splitlines():
    try:
      if json.loads(line)['step'] <= start_step:
        keep.append(line)
    except (ValueError, KeyError, TypeError):
      continue
  tmp = path.with_suffix('.tmp')
  tmp.write_text(''.join(k + '\n' for k in keep), encoding='utf-8')
  tmp.replace(path)


def _hms(seconds: float) -> str:
  s = int(max(seconds, 0))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
