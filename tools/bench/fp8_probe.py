"""Do our fp8 matmuls compile to cuBLASLt fp8 GEMMs, and how fast is the 13B step with them?

  python -m tools.bench.fp8_probe [--out rows.jsonl]      # on a GPU: counts and timings
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 python -m tools.bench.fp8_probe --deviceless
      # no GPU: compiles for an H100 target (needs jax-cuda12-pjrt / -plugin of jaxlib's
      # version installed beside jax) and prints the counts only; no autotuning happens there,
      # so Triton GEMM fusions stand in for whatever the autotuner would pick

One JSON line per row, written as soon as it is done:
- dense: one `fp8_matmul` at a 13B FFN shape, x [2, 13376, 4096] bf16 @ w [4096, 16384] fp8,
  compiled with XLA's default options and with `FP8_COMPILER_OPTIONS` (no Triton GEMM
  emitter): `__cublas$lt$matmul$f8` calls, Triton GEMM fusions, TFLOP/s; a bf16 GEMM beside;
- block: the 13B transformer with --count-layers layers (the layer scan's body holds the block's
  ten Dense GEMMs), fp8 matmuls, both option sets: the same counts;
- step: the 13B transformer, --layers layers, batch 2, 1216x704x121 (13376 tokens), bf16
  weights vs fp8 weights with fp8 matmuls, each under both option sets: median seconds, the
  fp8 output's relative L2 against bf16 and the speed-up (issue 17's target: >= 1.3x with
  rel L2 <= 3e-2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax.models.transformer import LTXVideoTransformer
from ltx_jax.models.transformer.config import LTXV_13B
from ltx_jax.nn import FP8_COMPILER_OPTIONS, Dense, fp8_matmul, set_matmul
from ltx_jax.nn import layers as layers_lib

F8 = jnp.float8_e4m3fn
GRID = (16, 22, 38)  # latent frames, rows, columns of 121 x 704 x 1216: 13376 tokens
TEXT = 128
OPTIONS = {'default': {}, 'no_triton_gemm': FP8_COMPILER_OPTIONS}

# An H100 SXM as XLA's deviceless GPU compilation wants it described (GpuTargetConfigProto).
H100 = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
runtime_version { major: 12 minor: 8 }
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


def counts(compiled_hlo: str) -> dict[str, int]:
  """fp8 cuBLASLt GEMMs, other cuBLAS(Lt) GEMMs and Triton GEMM fusions in a compiled program."""
  targets = re.findall(r'custom_call_target="([^"]+)"', compiled_hlo)
  return {'cublaslt_fp8': targets.count('__cublas$lt$matmul$f8'),
          'cublas_other': sum(t.startswith('__cublas') and not t.endswith('$f8') for t in targets),
          'triton_gemm': len(re.findall(r'"kind":"__triton[a-z_]*gemm[a-z_]*"', compiled_hlo))}


def timed(fn, runs: int = 5) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def transformer(layers: int, abstract: bool) -> nnx.Module:
  config = dataclasses.replace(LTXV_13B, num_layers=layers)
  make = lambda: LTXVideoTransformer(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                     rngs=nnx.Rngs(0))
  return nnx.eval_shape(make) if abstract else make()


def to_fp8(model: nnx.Module) -> nnx.Module:
  """The block Dense kernels stored as float8_e4m3fn (the official -fp8 files' set), in place."""
  for _, m in nnx.iter_graph(model.blocks):
    if isinstance(m, Dense):
      v = m.kernel.get_value()
      m.kernel.set_value(jax.ShapeDtypeStruct(v.shape, F8) if isinstance(v, jax.ShapeDtypeStruct)
                         else v.astype(F8))
  return model


def step_args(abstract: bool, place) -> tuple:
  f, h, w = GRID
  shapes = [((2, f * h * w, 128), jnp.bfloat16), ((2, TEXT, 4096), jnp.bfloat16),
            ((2,), jnp.float32), ((2, TEXT), jnp.float32)]
  if abstract:
    return tuple(place(jax.ShapeDtypeStruct(s, d)) for s, d in shapes)
  key = jax.random.key(0)
  return (jax.random.normal(key, shapes[0][0], jnp.bfloat16),
          jax.random.normal(jax.random.fold_in(key, 1), shapes[1][0], jnp.bfloat16),
          jnp.full((2,), 700.0, jnp.float32), jnp.ones((2, TEXT), jnp.float32))


def compiled_step(model: nnx.Module, options: dict, args: tuple):
  """The step compiled ahead of time with `options`, and the state it takes (the weights)."""
  graph, state = nnx.split(model)
  f, h, w = GRID
  fn = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a, num_frames=f, height=h, width=w),
               compiler_options=options)
  return fn.lower(state, *args).compile(), state


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default=None, help='append the JSON lines here too')
  p.add_argument('--layers', type=int, default=48, help='layers of the timed 13B step')
  p.add_argument('--count-layers', type=int, default=2, help='layers of the counted block')
  p.add_argument('--deviceless', action='store_true',
                 help='compile for an H100 without a GPU; counts only')
  args = p.parse_args(argv)

  place = lambda a: a
  if args.deviceless:
    from jax.experimental import topologies
    topology = topologies.get_topology_desc('h100', 'cuda', target_config=H100, topology='1x1x1')
    mesh = jax.sharding.Mesh(topology.devices, ('d',))
    everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    place = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=everywhere)
    # Traced here, the programs would take the CPU branch (JAX's default backend is the CPU).
    layers_lib.cpu_half_precision = lambda dtype: False
    device = 'H100 (deviceless)'
  else:
    device = jax.devices()[0].device_kind

  def out(row):
    line = json.dumps(dict(row, device=device, jax=jax.__version__))
    print(line, flush=True)
    if args.out:
      with open(args.out, 'a') as fh:
        fh.write(line + '\n')

  m, k, n = 2 * GRID[0] * GRID[1] * GRID[2], 4096, 16384
  x = place(jax.ShapeDtypeStruct((2, m // 2, k), jnp.bfloat16))
  w = place(jax.ShapeDtypeStruct((k, n), F8))
  for name, options in OPTIONS.items():
    for kind, fn in (('fp8', lambda a, b: fp8_matmul(a, b, jnp.bfloat16)),
                     ('bf16', lambda a, b: a @ b.astype(jnp.bfloat16))):
      compiled = jax.jit(fn, compiler_options=options).lower(x, w).compile()
      row = {'case': f'dense {kind} [{m}, {k}] @ [{k}, {n}]', 'options': name,
             **counts(compiled.as_text())}
      if not args.deviceless:
        key = jax.random.key(0)
        xs = jax.random.normal(key, x.shape, jnp.bfloat16)
        ws = (jax.random.normal(jax.random.fold_in(key, 1), w.shape) * 0.02).astype(F8)
        row['tflops'] = 2 * m * k * n / timed(lambda: compiled(xs, ws)) / 1e12
      out(row)

  model = to_fp8(transformer(args.count_layers, abstract=True))
  set_matmul(model, 'fp8')
  abstract = jax.tree.map(lambda v: place(jax.ShapeDtypeStruct(v.shape, v.dtype)),
                          nnx.state(model))
  nnx.update(model, abstract)
  for name, options in OPTIONS.items():
    compiled, _ = compiled_step(model, options, step_args(True, place))
    out({'case': f'13B block ({args.count_layers} layers scanned), fp8 matmuls', 'options': name,
         **counts(compiled.as_text())})
  if args.deviceless:
    return

  model = transformer(args.layers, abstract=False)
  inputs = step_args(False, place)
  row = {'case': f'13B step, {args.layers} layers, batch 2, {m // 2} tokens'}
  for name, options in OPTIONS.items():
    compiled, state = compiled_step(model, options, inputs)
    row[f'bf16_{name}_s'] = timed(lambda: compiled(state, *inputs))
  want = np.asarray(compiled(state, *inputs), np.float32)
  del compiled, state  # the bf16 kernels go when to_fp8 replaces them
  set_matmul(to_fp8(model), 'fp8')
  for name, options in OPTIONS.items():
    compiled, state = compiled_step(model, options, inputs)
    row[f'fp8_{name}_s'] = timed(lambda: compiled(state, *inputs))
    row[f'fp8_{name}_rel_l2'] = rel_l2(np.asarray(compiled(state, *inputs), np.float32), want)
    row[f'fp8_{name}_cublaslt_fp8'] = counts(compiled.as_text())['cublaslt_fp8']
  best_bf16 = min(row['bf16_default_s'], row['bf16_no_triton_gemm_s'])
  row['speedup_fp8_no_triton_vs_best_bf16'] = best_bf16 / row['fp8_no_triton_gemm_s']
  out(row)


if __name__ == '__main__':
  main()
