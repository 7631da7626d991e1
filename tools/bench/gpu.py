"""GPU end-to-end benchmark: ltx_jax against diffusers on the same card, one process.

  python -m tools.bench.gpu [--out results.jsonl] [--budget-s 480]

Random weights at the released sizes (speed does not depend on their values), bf16:
- e2e: the 2B model, 768x512x121, 8 steps without guidance, text embeddings -> uint8 frames,
  against diffusers' LTXPipeline (prompt_embeds in, output_type='np'); and the denoising loop /
  decode of ours alone;
- decode: the 0.9.8 VAE at 121x512x768, default path (tiles only when the untiled program does
  not fit) against the untiled and a forced tiled decode;
- fp8: one DiT step (batch 2) with bf16 weights, fp8-stored weights upcast per matmul, and fp8
  GEMMs (`set_matmul(model, 'fp8')`), with the output's relative L2 against bf16; 2B at 6144
  tokens and 13B at 13376 tokens.
Each section is timed (median of runs after a warm-up) and written as one JSON line as soon as
it finishes; a section that would start past the time budget is skipped and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax.models.transformer.config import LTXV_2B, TransformerConfig

GRID = (16, 16, 24)        # latent frames, rows, columns of 121 x 512 x 768
VIDEO = (121, 512, 768)    # frames, height, width
TEXT = 128
STEPS = 8
FP8 = jnp.float8_e4m3fn


def timed(fn, runs: int = 3) -> tuple[float, float]:
  """(first call incl. compile, median of `runs` later calls), seconds; results waited for."""
  t = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def torch_timed(fn, runs: int = 3) -> tuple[float, float]:
  import torch
  t = time.perf_counter()
  fn()
  torch.cuda.synchronize()
  first = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def vae_098_config():
  from ltx_jax.models.vae import VAEConfig
  return VAEConfig.from_diffusers(dict(
      _class_name='AutoencoderKLLTXVideo', in_channels=3, out_channels=3, latent_channels=128,
      patch_size=4, patch_size_t=1, block_out_channels=(128, 256, 512, 512),
      layers_per_block=(4, 3, 3, 3, 4), spatio_temporal_scaling=(True, True, True, False),
      decoder_block_out_channels=(256, 512, 1024), decoder_layers_per_block=(5, 5, 5, 5),
      decoder_spatio_temporal_scaling=(True, True, True),
      decoder_inject_noise=(False, False, False, False), upsample_residual=(True, True, True),
      upsample_factor=(2, 2, 2), timestep_conditioning=True, encoder_causal=True,
      decoder_causal=False, down_block_types=('LTXVideoDownBlock3D',) * 4))


DIFFUSERS_VAE_098 = dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=(4, 3, 3, 3, 4),
    spatio_temporal_scaling=(True, True, True, False), decoder_block_out_channels=(256, 512, 1024),
    decoder_layers_per_block=(5, 5, 5, 5), decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False), upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2), timestep_conditioning=True, patch_size=4, latent_channels=128)


@dataclasses.dataclass(frozen=True)
class E2ESize:
  """One size of the end-to-end comparison (both sides get random weights of these shapes)."""
  transformer: TransformerConfig
  vae: dict                        # diffusers' AutoencoderKLLTXVideo arguments
  video: tuple[int, int, int]      # frames, height, width
  text: int                        # text tokens
  steps: int
  dtype: str                       # 'bfloat16' or 'float32' on both sides


E2E_2B = E2ESize(LTXV_2B, DIFFUSERS_VAE_098, VIDEO, TEXT, STEPS, 'bfloat16')


def ours_pipeline(size: E2ESize = E2E_2B):
  from ltx_jax.models.transformer import LTXVideoTransformer
  from ltx_jax.models.vae import VAEConfig, VideoAutoencoder
  from ltx_jax.pipeline import LTXPipeline
  from ltx_jax.sampling import SchedulerConfig
  from tools.bench import cases
  dt = getattr(jnp, size.dtype)
  transformer = cases._weights(lambda: LTXVideoTransformer(
      size.transformer, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)))
  vae = cases._weights(lambda: VideoAutoencoder(VAEConfig.from_diffusers(size.vae), dtype=dt,
                                                param_dtype=dt, rngs=nnx.Rngs(1)))
  return LTXPipeline(transformer, vae, None, None, SchedulerConfig(), release='bench')


def text_inputs(size: E2ESize = E2E_2B):
  rng = np.random.default_rng(0)
  embeds = rng.standard_normal((1, size.text, size.transformer.caption_channels)
                               ).astype(np.float32)
  mask = np.ones((1, size.text), np.int64)
  mask[:, size.text * 3 // 4:] = 0
  return embeds, mask


def diffusers_pipeline(size: E2ESize, device: str):
  """diffusers' LTXPipeline with random weights of `size`'s shapes and the 0.9.x scheduler."""
  import torch
  from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                         LTXVideoTransformer3DModel)
  c = size.transformer
  dt = getattr(torch, size.dtype)
  with torch.device(device):
    transformer = LTXVideoTransformer3DModel(
        in_channels=c.in_channels, out_channels=c.out_channels, num_attention_heads=c.num_heads,
        attention_head_dim=c.head_dim, cross_attention_dim=c.cross_attention_dim,
        num_layers=c.num_layers, caption_channels=c.caption_channels).to(dt).eval()
    vae = AutoencoderKLLTXVideo(**size.vae).to(dt).eval()
  with torch.no_grad():
    vae.decoder.timestep_scale_multiplier.fill_(1000.0)
  ref = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(
      base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05,
      shift=1.0, shift_terminal=0.1, use_dynamic_shifting=True, time_shift_type='exponential'),
      vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)
  ref.set_progress_bar_config(disable=True)
  return ref


def e2e_compare(size: E2ESize, runs: int, device: str) -> dict:
  """Text embeddings -> uint8 frames (no CFG), ours against diffusers' LTXPipeline on the same
  device: each side's first call (ours compiles), then `runs` calls of each interleaved
  (medians); our denoising loop and decode alone (one warm call each); peak memory."""
  import torch
  from tools.bench import measure
  f, h, w = size.video
  embeds, mask = text_inputs(size)
  pipe = ours_pipeline(size)
  kw = dict(height=h, width=w, num_frames=f, num_inference_steps=size.steps, guidance_scale=1.0,
            decode_timestep=0.05, decode_noise_scale=0.025, progress=False, seed=0)
  emb = jnp.asarray(embeds, getattr(jnp, size.dtype))
  run_ours = lambda: pipe(prompt_embeds=emb, prompt_attention_mask=mask, **kw).frames
  ref = diffusers_pipeline(size, device)
  te = torch.from_numpy(embeds).to(device, getattr(torch, size.dtype))
  tm = torch.from_numpy(mask).to(device)

  def run_ref():
    with torch.inference_mode():
      return ref(prompt_embeds=te, prompt_attention_mask=tm, height=h, width=w, num_frames=f,
                 num_inference_steps=size.steps, guidance_scale=1.0, decode_timestep=0.05,
                 decode_noise_scale=0.025, output_type='np',
                 generator=torch.Generator(device).manual_seed(0)).frames

  row = {'case': f'e2e {size.transformer.num_layers} layers {w}x{h}x{f}, {size.steps} steps, '
                 f'no CFG, {size.dtype}'}
  weights = measure.tree_bytes(nnx.state(pipe.transformer)) + measure.tree_bytes(
      nnx.state(pipe.vae))
  with measure.PeakMemory() as mem:
    row['ltx_jax_first_s'] = measure.timed(run_ours)
  row['ltx_jax_peak_gib'] = (weights + mem.peak) / 2**30
  with measure.PeakMemory(device) as mem:
    row['diffusers_first_s'] = measure.timed(run_ref)
  row['diffusers_peak_gib'] = (measure.tree_bytes(ref.transformer) + measure.tree_bytes(ref.vae)
                               + mem.peak) / 2**30
  times = measure.interleaved({'ltx_jax': run_ours, 'diffusers': run_ref}, runs)
  row.update(ltx_jax_s=measure.median(times['ltx_jax']),
             diffusers_s=measure.median(times['diffusers']), runs=runs)
  row['speedup'] = row['diffusers_s'] / row['ltx_jax_s']
  plan = pipe.prepare(prompt_embeds=emb, prompt_attention_mask=mask,
                      **{k: v for k, v in kw.items() if not k.startswith('decode')})
  latents = measure.block(pipe.denoise(plan))
  row['ltx_jax_loop_s'] = measure.timed(lambda: pipe.denoise(plan))
  row['ltx_jax_decode_s'] = measure.timed(lambda: pipe.decode(latents, 0.05, 0.025,
                                                              plan.decode_key))
  del pipe, plan, latents, ref
  if device.startswith('cuda'):
    torch.cuda.empty_cache()
  return row


def section_e2e(out):
  out(e2e_compare(E2E_2B, runs=3, device='cuda'))


def section_decode(out):
  from ltx_jax.models.vae import VideoAutoencoder
  from ltx_jax.models.vae import tiling as tiling_lib
  dt = jnp.bfloat16
  vae = VideoAutoencoder(vae_098_config(), dtype=dt, param_dtype=dt, rngs=nnx.Rngs(1))
  z = jax.random.normal(jax.random.key(0), (1, *GRID, 128), dt)
  t = jnp.full((1,), 0.05, jnp.float32)
  row = {'case': 'VAE 0.9.8 decode 121x512x768 bf16 -> uint8',
         'budget_gib': tiling_lib.memory_budget() / 2**30}
  for name, kw in (('untiled', dict(tiling=False)), ('default', {}),
                   ('tiled', dict(tiling=tiling_lib.TilingConfig()))):
    first, med = timed(lambda: vae.decode(z, t, as_uint8=True, **kw))
    row[f'{name}_s'] = med
    row[f'{name}_first_s'] = first
  row['default_over_untiled'] = row['default_s'] / row['untiled_s']
  out(row)


def _fp8_copy(model):
  """The block Dense kernels stored as float8_e4m3fn (the official -fp8 files' set)."""
  from ltx_jax.nn import Dense
  for _, m in nnx.iter_graph(model.blocks):
    if isinstance(m, Dense):
      m.kernel.set_value(m.kernel.get_value().astype(FP8))
  return model


def fp8_step(name: str, config: TransformerConfig, grid, text: int = TEXT, runs: int = 3
             ) -> dict:
  """One DiT step (batch 2, bf16 compute) with bf16 weights, fp8-stored weights upcast per
  matmul and fp8 GEMMs: median seconds, the outputs' relative L2 against bf16, weight bytes,
  and the cuBLASLt fp8 calls in the compiled fp8-GEMM program (0 off a GPU)."""
  from ltx_jax.models.transformer import LTXVideoTransformer
  from ltx_jax.nn import compiler_options, set_matmul
  from tools.bench import cases, fp8_probe
  dt = jnp.bfloat16
  f, h, w = grid
  n = f * h * w
  key = jax.random.key(0)
  args = (jax.random.normal(key, (2, n, config.in_channels), dt),
          jax.random.normal(jax.random.fold_in(key, 1), (2, text, config.caption_channels), dt),
          jnp.array([700.0, 700.0], jnp.float32), jnp.ones((2, text), jnp.float32))

  def compiled_step(model):
    graph, state = nnx.split(model)
    fn = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a, num_frames=f, height=h, width=w),
                 compiler_options=compiler_options(model))  # fp8 GEMMs need Triton off
    compiled = fn.lower(state, *args).compile()
    return compiled, lambda: compiled(state, *args)

  weight_gib = lambda m: sum(v.nbytes for v in jax.tree.leaves(nnx.state(m))) / 2**30
  model = cases._weights(lambda: LTXVideoTransformer(config, dtype=dt, param_dtype=dt,
                                                     rngs=nnx.Rngs(0)))
  _, run = compiled_step(model)
  _, bf16 = timed(run, runs)
  want = np.asarray(run(), np.float32)
  row = {'case': f'{name} DiT step batch 2, {n} tokens', 'bf16_s': bf16,
         'bf16_weights_gib': weight_gib(model)}
  del run
  model = _fp8_copy(model)
  _, run = compiled_step(model)
  _, upcast = timed(run, runs)
  row.update(fp8_storage_s=upcast, fp8_weights_gib=weight_gib(model),
             fp8_storage_rel_l2=rel_l2(np.asarray(run(), np.float32), want))
  del run
  set_matmul(model, 'fp8')
  compiled, run = compiled_step(model)
  _, fp8 = timed(run, runs)
  row.update(fp8_gemm_s=fp8, fp8_gemm_rel_l2=rel_l2(np.asarray(run(), np.float32), want),
             fp8_speedup_vs_bf16=bf16 / fp8,
             cublaslt_fp8_calls=fp8_probe.counts(compiled.as_text())['cublaslt_fp8'])
  return row


def section_fp8(out, name, config, grid):
  out(fp8_step(name, config, grid))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default=None, help='append the JSON lines here too')
  p.add_argument('--budget-s', type=float, default=480.0,
                 help='sections starting later than this (seconds) are skipped')
  p.add_argument('--sections', default='e2e,decode,fp8_2b,fp8_13b')
  args = p.parse_args(argv)
  start = time.perf_counter()
  dev = jax.devices()[0]

  def out(row):
    row = dict(row, device=dev.device_kind, jax=jax.__version__,
               elapsed_s=round(time.perf_counter() - start, 1))
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
      with open(args.out, 'a') as fh:
        fh.write(line + '\n')

  from ltx_jax.models.transformer.config import LTXV_13B, LTXV_2B
  sections = {'e2e': lambda: section_e2e(out), 'decode': lambda: section_decode(out),
              'fp8_2b': lambda: section_fp8(out, '2B', LTXV_2B, GRID),
              'fp8_13b': lambda: section_fp8(out, '13B', LTXV_13B, (16, 22, 38))}
  for name in args.sections.split(','):
    if time.perf_counter() - start > args.budget_s:
      out({'case': name, 'skipped': 'past the time budget'})
      continue
    try:
      sections[name]()
    except Exception as e:  # noqa: BLE001  -- report and go on to the next section
      out({'case': name, 'error': f"{type(e).__name__}: {e}",
           'traceback': traceback.format_exc()[-2000:]})
  return 0


if __name__ == '__main__':
  sys.exit(main())
