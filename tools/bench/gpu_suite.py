"""The GPU evidence in one run: end to end against diffusers and the official two-pass recipe,
the 13B step in fp8, the first-block step cache, training steps against PyTorch, cold start.

  python -m tools.bench.gpu_suite [--out-dir bench_out] [--budget-s 450] [--sections ...]
  python -m tools.bench.gpu_suite --cpu-tiny      # tiny sizes, every section (the test runs it)

Sections (random weights at the real sizes, bf16; `--cpu-tiny` (automatic without a GPU): a
few-channel model of each, f32, on the CPU, which checks the plumbing and measures nothing):
  e2e         2B 0.9.8 distilled, 768x512x121, 8 steps, text embeddings -> uint8 frames, against
              diffusers' LTXPipeline (tools/bench/gpu.py `e2e_compare`);
  multiscale  the official two-pass 2B distilled recipe at 1216x704x121 (7 + 3 steps) against
              Lightricks' LTXMultiScalePipeline (tools/bench/multiscale.py `compare_official`);
  fp8         the 13B step at 13376 tokens (batch 2): bf16, fp8-stored and fp8-GEMM weights,
              fp8 error against bf16, cuBLASLt fp8 calls in the compiled program
              (tools/bench/gpu.py `fp8_step`);
  step_cache  the first-block cache at threshold 0.05 on the 13B dev recipe (8 layers of 13B
              width, 1216x704x121): steps skipped, time (tools/bench/step_cache.py `compare`);
  train       the LoRA step, 2B (rank 32) and 13B (rank 128, bf16 and fp8 base) at 768x448x89
              with remat, against diffusers + PEFT + torch AdamW where it fits: step time,
              tokens/s, MFU, peak memory (tools/bench/train_step.py);
  cold_start  `python -m ltx_jax.generate` (the smoke config) in fresh processes with an empty
              and then a filled persistent compilation cache: seconds to the written video;
  pytest_gpu  `pytest -m gpu` on the test files that hold gpu-marked tests, in a subprocess.
Both sides of a comparison run in this process, each once (compiling / warming up), then
interleaved (medians). Each section has a share of the time budget: one that would not finish
inside the budget by its share is skipped and says so. Results go to <out-dir>/gpu_suite.json
and gpu_suite.md, rewritten as each section ends; a section that fails is recorded with its
error and the others run on.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ltx_jax.models.transformer.config import LTXV_13B, LTXV_2B, TransformerConfig
from ltx_jax.models.upsampler import UpsamplerConfig
from ltx_jax.models.vae.config import LTXV_VAE_098, VAEConfig
from tools.bench import flops as flops_lib
from tools.bench import gpu as gpu_lib
from tools.bench import loop as loop_lib
from tools.bench import measure
from tools.bench import multiscale as multiscale_lib
from tools.bench import step_cache as step_cache_lib
from tools.bench import train_step as train_lib
from tools.bench.cases import TRANSFORMER_TINY, VAE_TINY_DECODER, VAE_TINY_ENCODER

ROOT = Path(__file__).resolve().parents[2]
GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class TrainCase:
  name: str
  config: TransformerConfig
  rank: int
  fp8_base: bool
  torch_reference: bool


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Everything the sections need to know about sizes, for one mode."""
  name: str
  e2e: gpu_lib.E2ESize
  multiscale: multiscale_lib.OfficialSize
  fp8: tuple[str, TransformerConfig, tuple[int, int, int], int]  # name, config, grid, text
  step_cache: tuple[TransformerConfig, Any, tuple[int, int, int]]  # config, dtype, video
  train: tuple[TrainCase, ...]
  train_grid: tuple[int, int, int]
  train_text: int
  train_dtype: str
  cold_start: tuple[str, ...]     # overrides of the smoke config
  runs: int
  budget_s: float
  shares: dict[str, float]        # each section's seconds of the budget


_13B_STEP_CACHE = dataclasses.replace(LTXV_13B, num_layers=8)
REAL = Sizes(
    name='gpu',
    e2e=gpu_lib.E2E_2B,
    multiscale=multiscale_lib.OfficialSize(
        dataclasses.replace(LTXV_2B, causal_temporal_positioning=True), LTXV_VAE_098,
        UpsamplerConfig(), (121, 704, 1216), 128, 'bfloat16'),
    fp8=('13B', LTXV_13B, (16, 22, 38), 128),
    step_cache=(_13B_STEP_CACHE, jnp.bfloat16, (121, 704, 1216)),
    train=(TrainCase('2B LoRA r32', LTXV_2B, 32, False, True),
           TrainCase('13B LoRA r128', LTXV_13B, 128, False, True),
           TrainCase('13B LoRA r128, fp8 base', LTXV_13B, 128, True, False)),
    train_grid=(12, 14, 24), train_text=128, train_dtype='bfloat16',
    cold_start=('--config.height=512', '--config.width=768', '--config.num_frames=121'),
    runs=3, budget_s=450.0,
    shares={'e2e': 90, 'multiscale': 90, 'fp8': 60, 'step_cache': 60, 'train': 100,
            'cold_start': 30, 'pytest_gpu': 20})

_TINY_TRANSFORMER = dataclasses.replace(TRANSFORMER_TINY, causal_temporal_positioning=True)
# An official VAE a few channels wide: spatial x8 (patch 2), temporal x4, 8 latent channels.
_TINY_OFFICIAL_VAE = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
    latent_channels=8, norm_layer='pixel_norm', latent_log_var='uniform', use_quant_conv=False,
    scaling_factor=1.0, patch_size=2, encoder_base_channels=4, decoder_base_channels=4,
    spatial_padding_mode='zeros', timestep_conditioning=True, causal_decoder=False,
    encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_space_res', {'multiplier': 2}],
                    ['compress_time_res', {'multiplier': 2}],
                    ['compress_all_res', {'multiplier': 2}], ['res_x_y', 1]],
    decoder_blocks=[['res_x', {'num_layers': 1}],
                    ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['res_x_y', {'multiplier': 2}], ['compress_time', {}],
                    ['compress_space', {}], ['res_x', {'num_layers': 1}]])
TINY = Sizes(
    name='cpu-tiny',
    e2e=gpu_lib.E2ESize(TRANSFORMER_TINY, {**VAE_TINY_ENCODER, **VAE_TINY_DECODER},
                        (9, 64, 96), 16, 2, 'float32'),
    multiscale=multiscale_lib.OfficialSize(
        _TINY_TRANSFORMER, VAEConfig.from_official(_TINY_OFFICIAL_VAE),
        UpsamplerConfig.from_official(dict(in_channels=8, mid_channels=32,
                                           num_blocks_per_stage=1, dims=3,
                                           spatial_upsample=True, temporal_upsample=False)),
        (9, 64, 96), 8, 'float32'),
    fp8=('tiny', TRANSFORMER_TINY, (2, 2, 3), 8),
    step_cache=(dataclasses.replace(LTXV_13B, num_layers=2, num_heads=2, head_dim=16,
                                    cross_attention_dim=32, caption_channels=32),
                jnp.float32, (9, 64, 96)),
    train=(TrainCase('tiny LoRA r4', TRANSFORMER_TINY, 4, False, True),
           TrainCase('tiny LoRA r4, fp8 base', TRANSFORMER_TINY, 4, True, False)),
    train_grid=(2, 2, 3), train_text=8, train_dtype='float32',
    cold_start=(),
    runs=1, budget_s=300.0,
    shares={'e2e': 30, 'multiscale': 30, 'fp8': 30, 'step_cache': 30, 'train': 30,
            'cold_start': 60, 'pytest_gpu': 30})
SECTIONS = ('e2e', 'multiscale', 'fp8', 'step_cache', 'train', 'cold_start', 'pytest_gpu')


# ------------------------------------------------------------------------------ sections

def torch_device() -> str:
  return 'cuda' if measure.on_gpu() else 'cpu'


def section_e2e(sizes: Sizes) -> list[dict]:
  return [gpu_lib.e2e_compare(sizes.e2e, sizes.runs, torch_device())]


def section_multiscale(sizes: Sizes) -> list[dict]:
  return [multiscale_lib.compare_official(sizes.multiscale, sizes.runs, torch_device())]


def section_fp8(sizes: Sizes) -> list[dict]:
  name, config, grid, text = sizes.fp8
  return [gpu_lib.fp8_step(name, config, grid, text, runs=sizes.runs)]


def section_step_cache(sizes: Sizes) -> list[dict]:
  from ltx_jax import FirstBlockCache
  config, dtype, video = sizes.step_cache
  result = step_cache_lib.compare(config, dtype, video, [FirstBlockCache(0.05)], sizes.runs)
  head = {k: v for k, v in result.items() if k != 'rows'}
  return [dict(head, **row) for row in result['rows']]


def section_train(sizes: Sizes) -> list[dict]:
  """Each case: ours (always) and the PyTorch reference (where asked and where it fits)."""
  import torch
  grid, text, dtype = sizes.train_grid, sizes.train_text, sizes.train_dtype
  tokens = int(grid[0] * grid[1] * grid[2])
  peak = measure.matmul_peak(getattr(jnp, 'bfloat16' if dtype == 'bfloat16' else 'float32'))
  rows = []
  for case in sizes.train:
    # Model FLOPs of a LoRA step: the forward and the backward to the activations (the frozen
    # base's weight gradients are not computed), 2 x forward; remat's recompute not counted.
    model_flops = 2 * flops_lib.transformer_flops(case.config, 1, tokens, text)
    row = {'case': f'{case.name}, {tokens} tokens, remat full, {dtype}'}
    ours = train_lib.ours_step(case.config, grid, text, case.rank, 'full',
                               getattr(jnp, dtype), sizes.runs, fp8_base=case.fp8_base)
    row.update({f'ltx_jax_{k}': v for k, v in ours.items()})
    row['ltx_jax_peak_gib'] = row.pop('ltx_jax_peak_bytes') / GIB
    row['ltx_jax_mfu'] = model_flops / ours['step_s'] / peak
    if not case.torch_reference:
      row['torch'] = 'not run: no PyTorch reference for this base'
    else:
      try:
        ref = train_lib.torch_step(case.config, grid, text, case.rank, 'full', dtype,
                                   sizes.runs, torch_device())
      except torch.OutOfMemoryError as e:
        row['torch'] = f'did not fit: {str(e).splitlines()[0]}'
        torch.cuda.empty_cache()
      else:
        row.update({f'torch_{k}': v for k, v in ref.items()})
        if 'torch_peak_bytes' in row:
          row['torch_peak_gib'] = row.pop('torch_peak_bytes') / GIB
        row['torch_mfu'] = model_flops / ref['step_s'] / peak
        row['speedup'] = ref['step_s'] / ours['step_s']
    row['matmul_peak_tflops'] = peak / 1e12
    rows.append(row)
  return rows


def section_cold_start(sizes: Sizes) -> list[dict]:
  with tempfile.TemporaryDirectory(prefix='ltx_suite_smoke_') as out:
    command = [sys.executable, '-m', 'ltx_jax.generate', '--config',
               str(ROOT / 'configs' / 'smoke.py'), f'--config.output_dir={out}',
               *sizes.cold_start]
    result = loop_lib.cold_warm(command)
    videos = sorted(p.name for p in Path(out).rglob('*.mp4'))
  if not videos:
    raise RuntimeError(f"{' '.join(command)} wrote no video")
  return [{'case': 'python -m ltx_jax.generate --config configs/smoke.py '
                   + ' '.join(sizes.cold_start),
           'cold_s': result['cold_s'], 'warm_s': result['warm_s'],
           'warm_over_cold': result['warm_s'] / result['cold_s'],
           'cache_entries': result['cache_entries']}]


def gpu_test_files() -> list[str]:
  """The test files that hold gpu-marked tests."""
  marked = re.compile(r'pytest\.mark\.gpu|pytestmark\s*=.*\bgpu\b')
  return sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'tests').glob('test_*.py')
                if marked.search(p.read_text()))


def section_pytest_gpu(sizes: Sizes) -> list[dict]:
  files = gpu_test_files()
  command = [sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-rs', '-p', 'no:cacheprovider',
             *files]
  start = time.perf_counter()
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  lines = proc.stdout.strip().splitlines()
  summary = lines[-1] if lines else proc.stderr.strip()[-300:]
  counts = {k: int(n) for n, k in re.findall(
      r'(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)', summary)}
  return [{'case': 'pytest -m gpu ' + ' '.join(files), 'returncode': proc.returncode,
           'summary': summary, **counts, 'seconds': time.perf_counter() - start,
           'output_tail': proc.stdout[-3000:]}]


RUNNERS: dict[str, Callable[[Sizes], list[dict]]] = {
    'e2e': section_e2e, 'multiscale': section_multiscale, 'fp8': section_fp8,
    'step_cache': section_step_cache, 'train': section_train, 'cold_start': section_cold_start,
    'pytest_gpu': section_pytest_gpu}
TITLES = {
    'e2e': 'End to end, 2B 0.9.8 distilled, against diffusers LTXPipeline',
    'multiscale': 'Official two-pass recipe against Lightricks LTXMultiScalePipeline',
    'fp8': '13B step: bf16, fp8-stored, fp8 GEMMs',
    'step_cache': 'First-block step cache (0.05), 13B dev recipe',
    'train': 'LoRA training step against diffusers + PEFT + torch AdamW',
    'cold_start': 'Cold start with and without the persistent compilation cache',
    'pytest_gpu': 'pytest -m gpu'}


# ------------------------------------------------------------------------------ report

def _cell(v) -> str:
  if isinstance(v, float):
    return f'{v:.3g}' if abs(v) < 1e4 else f'{v:.4g}'
  return str(v).replace('|', '/').replace('\n', ' ')


def markdown(result: dict) -> str:
  lines = [f"# GPU suite ({result['mode']}), {result['date']}", '']
  lines += [f"- **{k}**: {v}" for k, v in result['machine'].items()]
  lines += [f"- **command**: `{result['command']}`",
            f"- **budget**: {result['budget_s']:.0f} s; elapsed {result['elapsed_s']:.0f} s", '']
  for name, sec in result['sections'].items():
    lines += [f"## {TITLES[name]}", '']
    if sec['status'] != 'ok':
      lines += [f"**{sec['status']}**: {sec['reason']}", '']
      continue
    keys = [k for k in dict.fromkeys(k for row in sec['rows'] for k in row)
            if k != 'output_tail']
    lines += ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    for row in sec['rows']:
      lines.append('| ' + ' | '.join(_cell(row.get(k, '')) for k in keys) + ' |')
    lines += ['', f"({sec['seconds']:.0f} s, share {sec['share_s']:.0f} s)", '']
  return '\n'.join(lines)


def _write(result: dict, out_dir: Path) -> None:
  """Both files, each replaced whole (written beside, then renamed)."""
  for name, text in (('gpu_suite.json', json.dumps(result, indent=1, default=str)),
                     ('gpu_suite.md', markdown(result))):
    tmp = out_dir / (name + '.tmp')
    tmp.write_text(text + '\n')
    tmp.replace(out_dir / name)


def _machine() -> dict:
  facts = measure.machine()
  if measure.on_gpu():
    try:
      smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                            '--format=csv,noheader'], capture_output=True, text=True, timeout=30)
      facts['nvidia-smi'] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
      facts['nvidia-smi'] = f'unavailable ({e})'
  return facts


def run(sizes: Sizes, sections: list[str], out_dir: Path, budget_s: float,
        command: str) -> dict:
  out_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  result = {'mode': sizes.name, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds'), 'command': command, 'budget_s': budget_s, 'machine': _machine(),
            'elapsed_s': 0.0, 'sections': {}}
  for name in sections:
    share = sizes.shares[name] * budget_s / sizes.budget_s
    elapsed = time.perf_counter() - start
    sec: dict[str, Any] = {'share_s': share, 'started_s': elapsed}
    if elapsed + share > budget_s:
      sec.update(status='skipped', reason=f'would start at {elapsed:.0f} s with a share of '
                 f'{share:.0f} s, past the {budget_s:.0f} s budget')
    else:
      print(f'[gpu_suite] {name} ...', flush=True)
      t0 = time.perf_counter()
      try:
        sec.update(status='ok', rows=RUNNERS[name](sizes))
      except Exception as e:  # noqa: BLE001  -- record it and go on to the next section
        sec.update(status='error', reason=f'{type(e).__name__}: {e}'[:2000],
                   traceback=traceback.format_exc()[-4000:])
      sec['seconds'] = time.perf_counter() - t0
      if sec['seconds'] > share:
        sec['over_share'] = True
      jax.clear_caches()
      if measure.on_gpu():
        import torch
        torch.cuda.empty_cache()
    result['sections'][name] = sec
    result['elapsed_s'] = time.perf_counter() - start
    _write(result, out_dir)
    print(f"[gpu_suite] {name}: {sec['status']}", flush=True)
  return result


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--cpu-tiny', action='store_true',
                 help='tiny sizes on the CPU (automatic when JAX sees no GPU)')
  p.add_argument('--out-dir', default='bench_out', help='where gpu_suite.json / .md go')
  p.add_argument('--budget-s', type=float, default=None,
                 help='time budget in seconds (default: 450 on a GPU, 300 tiny)')
  p.add_argument('--sections', default=','.join(SECTIONS),
                 help=f"comma-separated subset of {','.join(SECTIONS)}")
  args = p.parse_args(argv)
  sections = args.sections.split(',')
  unknown = [s for s in sections if s not in RUNNERS]
  if unknown:
    from ltx_jax.errors import UsageError
    raise UsageError(f"--sections: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(SECTIONS)}")
  sizes = TINY if args.cpu_tiny or not measure.on_gpu() else REAL
  budget = sizes.budget_s if args.budget_s is None else args.budget_s
  command = 'python -m tools.bench.gpu_suite ' + ' '.join(argv if argv is not None
                                                          else sys.argv[1:])
  result = run(sizes, sections, Path(args.out_dir), budget, command.strip())
  print(markdown(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
