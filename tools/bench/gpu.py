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
import json
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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


def ours_pipeline():
  from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
  from ltx_jax.models.vae import VideoAutoencoder
  from ltx_jax.pipeline import LTXPipeline
  from ltx_jax.sampling import SchedulerConfig
  dt = jnp.bfloat16
  transformer = LTXVideoTransformer(TransformerConfig(), dtype=dt, param_dtype=dt,
                                    rngs=nnx.Rngs(0))
  vae = VideoAutoencoder(vae_098_config(), dtype=dt, param_dtype=dt, rngs=nnx.Rngs(1))
  return LTXPipeline(transformer, vae, None, None, SchedulerConfig(), release='bench')


def text_inputs():
  rng = np.random.default_rng(0)
  embeds = rng.standard_normal((1, TEXT, 4096)).astype(np.float32)
  mask = np.ones((1, TEXT), np.int64)
  mask[:, TEXT * 3 // 4:] = 0
  return embeds, mask


def section_e2e(out):
  f, h, w = VIDEO
  embeds, mask = text_inputs()
  pipe = ours_pipeline()
  kw = dict(height=h, width=w, num_frames=f, num_inference_steps=STEPS, guidance_scale=1.0,
            decode_timestep=0.05, decode_noise_scale=0.025, progress=False, seed=0)
  emb = jnp.asarray(embeds, jnp.bfloat16)
  call = lambda: pipe(prompt_embeds=emb, prompt_attention_mask=mask, **kw).frames
  first, e2e = timed(call)
  plan = pipe.prepare(prompt_embeds=emb, prompt_attention_mask=mask,
                      **{k: v for k, v in kw.items() if not k.startswith('decode')})
  _, loop = timed(lambda: pipe.denoise(plan))
  latents = pipe.denoise(plan)
  _, decode = timed(lambda: pipe.decode(latents, 0.05, 0.025, plan.decode_key))
  row = {'case': 'e2e 2B 768x512x121, 8 steps, no CFG, bf16', 'ltx_jax_s': e2e,
         'ltx_jax_first_s': first, 'ltx_jax_loop_s': loop, 'ltx_jax_decode_s': decode}
  del pipe, plan, latents
  import torch
  from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                         LTXVideoTransformer3DModel)
  with torch.device('cuda'):
    transformer = LTXVideoTransformer3DModel().to(torch.bfloat16).eval()
    vae = AutoencoderKLLTXVideo(**DIFFUSERS_VAE_098).to(torch.bfloat16).eval()
  ref = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(
      base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05,
      shift=1.0, shift_terminal=0.1, use_dynamic_shifting=True, time_shift_type='exponential'),
      vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)
  ref.set_progress_bar_config(disable=True)
  te = torch.from_numpy(embeds).to('cuda', torch.bfloat16)
  tm = torch.from_numpy(mask).to('cuda')

  def run_ref():
    with torch.inference_mode():
      return ref(prompt_embeds=te, prompt_attention_mask=tm, height=h, width=w, num_frames=f,
                 num_inference_steps=STEPS, guidance_scale=1.0, decode_timestep=0.05,
                 decode_noise_scale=0.025, output_type='np',
                 generator=torch.Generator('cuda').manual_seed(0)).frames
  first_ref, e2e_ref = torch_timed(run_ref)
  row.update(diffusers_s=e2e_ref, diffusers_first_s=first_ref, speedup=e2e_ref / e2e,
             diffusers_peak_gib=torch.cuda.max_memory_allocated() / 2**30)
  out(row)
  del ref, transformer, vae
  torch.cuda.empty_cache()


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


def section_fp8(out, name, config, grid):
  from ltx_jax.models.transformer import LTXVideoTransformer
  from ltx_jax.nn import compiler_options, set_matmul
  dt = jnp.bfloat16
  f, h, w = grid
  n = f * h * w
  key = jax.random.key(0)
  x = jax.random.normal(key, (2, n, 128), dt)
  ctx = jax.random.normal(jax.random.fold_in(key, 1), (2, TEXT, 4096), dt)
  t = jnp.array([700.0, 700.0], jnp.float32)
  mask = jnp.ones((2, TEXT), jnp.float32)

  def step_fn(model):
    graph, state = nnx.split(model)
    fn = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a, num_frames=f, height=h, width=w),
                 compiler_options=compiler_options(model))  # fp8 GEMMs need Triton off
    return lambda: fn(state, x, ctx, t, mask)

  model = LTXVideoTransformer(config, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0))
  run = step_fn(model)
  _, bf16 = timed(run)
  want = np.asarray(run(), np.float32)
  row = {'case': f'{name} DiT step batch 2, {n} tokens', 'bf16_s': bf16,
         'bf16_weights_gib': sum(v.nbytes for v in jax.tree.leaves(nnx.state(model))) / 2**30}
  model = _fp8_copy(model)
  run = step_fn(model)
  _, upcast = timed(run)
  row.update(fp8_storage_s=upcast,
             fp8_weights_gib=sum(v.nbytes for v in jax.tree.leaves(nnx.state(model))) / 2**30,
             fp8_storage_rel_l2=rel_l2(np.asarray(run(), np.float32), want))
  set_matmul(model, 'fp8')
  run = step_fn(model)
  _, fp8 = timed(run)
  graph, state = nnx.split(model)
  hlo = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a, num_frames=f, height=h, width=w)).lower(
      state, x, ctx, t, mask).compile().as_text()
  row.update(fp8_gemm_s=fp8, fp8_gemm_rel_l2=rel_l2(np.asarray(run(), np.float32), want),
             fp8_speedup_vs_bf16=bf16 / fp8,
             cublaslt_fp8_calls=hlo.count('cublas$lt$matmul$f8'))
  out(row)


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
