"""Runs the benchmark cases and writes the markdown report (tools/bench.py has the commands)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import time

import jax

from tools.bench import cases as cases_lib
from tools.bench import loop as loop_lib
from tools.bench import measure

GIB = 2 ** 30


@dataclasses.dataclass
class Row:
  case: str
  impl: str                  # 'ltx_jax' or 'diffusers' / 'transformers'
  dtype: str
  compile_s: float | None    # XLA compilation (None for eager PyTorch)
  first_s: float             # the first call (PyTorch: warm-up)
  median_s: float
  runs: int
  peak_bytes: int
  flops: int
  peak_flops: float | None   # the machine's measured matmul FLOP/s in this dtype
  best_s: float = float('nan')       # the fastest run
  speedup: float | None = None       # reference median / ours (same dtype), ours only
  speedup_best: float | None = None  # fastest reference dtype's median / ours, ours only
  load: float | None = None          # 1-minute load average when the runs ended (shared CPUs)

  @property
  def flops_per_s(self) -> float:
    return self.flops / self.median_s


def _torch_setup(threads: int | None) -> str | None:
  """Configures PyTorch once; returns its device, or None if it is missing or would not fit."""
  try:
    import torch
  except ImportError:
    return None
  if measure.on_gpu():
    return 'cuda' if torch.cuda.is_available() else None
  torch.set_num_threads(threads or os.cpu_count())
  return 'cpu'


def _torch_peak(dtype: str, device: str) -> float:
  import torch
  n = 2048
  a = torch.randn(n, n, device=device).to(getattr(torch, cases_lib.DTYPES[dtype][1]))
  a @ a
  return 2 * n ** 3 / min(measure.timed(lambda: a @ a) for _ in range(5))


def run_case(case: cases_lib.Case, dtype: str, runs: int, torch_device: str | None,
             peak: float | None) -> list[Row]:
  """Builds both sides, compiles ours, runs each once alone (memory: the weights plus the
  peak above them during compilation and the first call), then times them interleaved."""
  setup = case.build(dtype, torch_device or 'cpu')
  with measure.PeakMemory() as mem:
    t0 = time.perf_counter()
    compiled = setup.jax_fn.lower(*setup.jax_args).compile()
    compile_s = time.perf_counter() - t0
    run_jax = lambda: compiled(*setup.jax_args)
    first = measure.timed(run_jax)
  weights = measure.tree_bytes(setup.jax_args[0])
  used = weights + mem.peak
  if measure.on_gpu():  # the device allocator's peak cannot be reset: use XLA's memory plan
    plan = compiled.memory_analysis()
    used = (plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes
            - plan.alias_size_in_bytes)
  rows = [Row(case.key, 'ltx_jax', dtype, compile_s, first, 0.0, runs, used, setup.flops, peak)]
  fns = {'ltx_jax': run_jax}
  if torch_device is not None and setup.torch_fn is not None:
    run_torch = setup.torch_fn()
    with measure.PeakMemory(torch_device) as mem:
      first = measure.timed(run_torch)
    name = 'transformers' if case.key == 't5' else 'diffusers'
    rows.append(Row(case.key, name, dtype, None, first, 0.0, runs,
                    run_torch.weight_bytes + mem.peak, setup.flops, peak))
    fns[name] = run_torch
  times = measure.interleaved(fns, runs)
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
  for row, t in zip(rows, times.values()):
    row.median_s = measure.median(t)
    row.best_s = min(t)
    row.load = load
  return rows


def _ratios(rows: list[Row]) -> None:
  for ours in (r for r in rows if r.impl == 'ltx_jax'):
    refs = [r for r in rows if r.case == ours.case and r.impl != 'ltx_jax']
    same = [r for r in refs if r.dtype == ours.dtype]
    if same:
      ours.speedup = same[0].median_s / ours.median_s
    if refs:
      ours.speedup_best = min(r.median_s for r in refs) / ours.median_s


def _fmt(x, spec: str, none: str = '-') -> str:
  return none if x is None else format(x, spec)


def report(facts: dict, titles: dict[str, str], rows: list[Row], loop: dict | None,
           coldwarm: dict | None, peaks: dict[str, float]) -> str:
  lines = ['## ltx_jax performance', '']
  lines += [f"- **{k}**: {v}" for k, v in facts.items()]
  lines += [f"- **measured matmul peak {d}**: {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()]
  lines += ['', 'Times are the median of steady-state runs, ours and the reference interleaved '
            '(so background load hits both alike). Memory: the weights plus the peak above them '
            'during compilation and the first call (host RSS on CPU; on GPU, XLA\'s memory plan '
            'for ours and torch.cuda\'s peak for the reference). FLOPs: matrix products only, '
            'counted from shapes. MFU: FLOP/s over the measured matmul peak of that dtype. '
            '"vs ref": the reference\'s time over ours (above 1: ours is faster); "vs best ref": '
            'the same against the reference\'s fastest dtype.', '']
  for key, title in titles.items():
    mine = [r for r in rows if r.case == key]
    if not mine:
      continue
    lines += [f"### {title}", '',
              '| impl | dtype | compile s | first call s | median s (runs) | best s | peak mem GiB '
              '| GFLOP | GFLOP/s | MFU % | vs ref | vs best ref | load |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in mine:
      pct = 100 * r.flops_per_s / r.peak_flops if r.peak_flops else None
      lines.append(
          f"| {r.impl} | {r.dtype} | {_fmt(r.compile_s, '.1f')} | {r.first_s:.2f} | "
          f"{r.median_s:.3f} ({r.runs}) | {r.best_s:.3f} | {r.peak_bytes / GIB:.2f} | {r.flops / 1e9:.1f} | "
          f"{r.flops_per_s / 1e9:.1f} | {_fmt(pct, '.0f')} | {_fmt(r.speedup, '.2f')}x | "
          f"{_fmt(r.speedup_best, '.2f')}x | {_fmt(r.load, '.1f')} |")
    lines.append('')
  if loop:
    m = loop['median_s']
    f, h, w = loop['video']
    n = loop['steps']
    lines += [f"### Tiny pipeline, {n} steps, guidance on, {f} frames {h}x{w} (f32)", '',
              '| what | median s |', '|---|---|']
    lines.append(f"| ltx_jax pipeline (loop + decode), first call {loop['jax_first_s']:.2f} s, "
                 f"peak {loop['jax_mem'] / GIB:.2f} GiB | {m['jax']:.4f} |")
    if 'torch' in m:
      lines.append(f"| diffusers pipeline, first call {loop['torch_first_s']:.2f} s, peak "
                   f"{loop['torch_mem'] / GIB:.2f} GiB | {m['torch']:.4f} "
                   f"({m['torch'] / m['jax']:.1f}x ours) |")
    lines.append(f"| scanned loop ({n} steps, one jit) | {m['scanned']:.4f} |")
    lines.append(f"| Python loop of {n} jitted one-step calls | {m['python_loop']:.4f} |")
    lines.append(f"| {n} x one jitted step | {n * m['one_step']:.4f} |")
    overhead = m['scanned'] / (n * m['one_step']) - 1
    lines += ['', f"Scanned loop against {n} x one step: {100 * overhead:+.1f}% "
              f"(runs: {loop['runs']}).", '']
  if coldwarm:
    lines += ['### Cold against warm start (persistent compilation cache)', '',
              f"`{coldwarm['command']}` twice, in fresh processes sharing an empty cache folder:",
              '', '| start | wall s |', '|---|---|',
              f"| cold (compiles, fills the cache) | {coldwarm['cold_s']:.1f} |",
              f"| warm (reads {coldwarm['cache_entries']} cached programs) | "
              f"{coldwarm['warm_s']:.1f} |", '',
              f"Warm / cold: {coldwarm['warm_s'] / coldwarm['cold_s']:.2f}.", '']
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> str:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--preset', default='auto', choices=('auto', 'cpu', 'gpu', 'tiny'),
                 help='sizes: cpu (minutes on 2 cores), gpu (the real sizes), tiny (tests); '
                 'auto picks gpu on a GPU, else cpu')
  p.add_argument('--cases', default='dit,dit13b,vae,t5,pipeline,coldwarm',
                 help='comma-separated subset of dit,dit13b,vae,t5,pipeline,coldwarm')
  p.add_argument('--dtypes', default=None, help='f32,bf16 (default: both on CPU, bf16 on GPU)')
  p.add_argument('--runs', type=int, default=5, help='steady-state runs per measurement')
  p.add_argument('--steps', type=int, default=8, help='denoising steps of the pipeline case')
  p.add_argument('--torch-threads', type=int, default=None,
                 help='torch.set_num_threads on CPU (default: all cores, as XLA uses)')
  p.add_argument('--no-torch', action='store_true', help='skip the PyTorch references')
  p.add_argument('--coldwarm-cmd', default=None,
                 help='command timed cold then warm (default: the smoke config via the CLI)')
  p.add_argument('--out', default=None, help='also write the markdown table here')
  args = p.parse_args(argv)

  from ltx_jax.compilation_cache import enable_compilation_cache
  enable_compilation_cache(None)  # compile times below are real compilations
  preset = args.preset if args.preset != 'auto' else ('gpu' if measure.on_gpu() else 'cpu')
  dtypes = (args.dtypes or ('bf16' if measure.on_gpu() else 'f32,bf16')).split(',')
  wanted = args.cases.split(',')
  torch_device = None if args.no_torch else _torch_setup(args.torch_threads)
  facts = measure.machine()
  facts['preset'] = preset

  peaks = {}
  for d in dtypes:
    peaks[d] = measure.matmul_peak(cases_lib.DTYPES[d][0])
    if torch_device is not None:
      peaks[d] = max(peaks[d], _torch_peak(d, torch_device))

  rows, titles = [], {}
  for case in cases_lib.cases(preset):
    if case.key not in wanted:
      continue
    titles[case.key] = case.title
    for d in dtypes:
      print(f"[bench] {case.key} {d} ...", flush=True)
      rows += run_case(case, d, args.runs, torch_device, peaks[d])
      gc.collect()
      jax.clear_caches()
  _ratios(rows)
  loop = None
  if 'pipeline' in wanted:
    print('[bench] pipeline ...', flush=True)
    loop = loop_lib.pipeline_bench(args.steps, args.runs, with_torch=torch_device == 'cpu')
  coldwarm = None
  if 'coldwarm' in wanted:
    print('[bench] cold / warm start ...', flush=True)
    coldwarm = loop_lib.cold_warm(args.coldwarm_cmd.split() if args.coldwarm_cmd else None)
  text = report(facts, titles, rows, loop, coldwarm, peaks)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  return text
