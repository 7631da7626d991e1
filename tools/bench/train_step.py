"""The training step: ltx_jax against the PyTorch reference, and XLA's memory plan at real sizes.

  python -m tools.bench.train_step cpu       # step time vs diffusers + PEFT + torch AdamW, CPU
  python -m tools.bench.train_step memory    # compiled (not run) memory plans at real sizes

`cpu`: a narrow LTX-shaped DiT (4 layers, width 128, 128 latent channels), a 9x256x384 clip
(3 x 8 x 12 latent tokens = 288), batch 1, 64 text tokens, LoRA rank 32 on to_q, to_k, to_v,
to_out.0, f32 on both sides; the PyTorch step is the official trainer's (strategy formulas,
backward, clip_grad_norm_, AdamW, LinearLR). Medians of `--repeats` steps after warm-up.
`memory`: the 2B LoRA (rank 32, official targets) at 768x448x89 and the 13B LoRA (rank 128,
remat 'full') with a bf16 base and an fp8 base, batch 1, 128 text tokens, bf16 compute: the step
lowered on abstract (`nnx.eval_shape`) parameters and compiled by the local XLA backend, whose
`memory_analysis()` is printed (argument, output, temporary and total bytes). The figures are
the CPU compiler's plan; a GPU's differs (fused attention kernels, other fusion).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltx_jax.models.random import random_weights
from ltx_jax.models.transformer import LTXV_13B, LTXV_2B, LTXVideoTransformer, abstract_transformer
from ltx_jax.training import (Draws, LoraConfig, OptimizerConfig, TrainConfig, Trainer)

TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0')
SMALL = dataclasses.replace(LTXV_2B, num_layers=4, num_heads=4, head_dim=32,
                            cross_attention_dim=128, caption_channels=64)


def _batch(grid, channels, text, text_dim, rows=1, seed=0):
  rng = np.random.default_rng(seed)
  return dict(latents=rng.standard_normal((rows, *grid, channels)).astype(np.float32),
              context=rng.standard_normal((rows, text, text_dim)).astype(np.float32),
              context_mask=np.ones((rows, text), np.int32),
              frame_rate=np.full((rows,), 25.0, np.float32))


def _draws(rows: int, n: int, channels: int, seed: int = 1) -> Draws:
  rng = np.random.default_rng(seed)
  return Draws(rng.standard_normal((rows, n, channels)).astype(np.float32),
               np.full((rows,), 0.6, np.float32), np.zeros((rows, n), bool))


def _plan_bytes(compiled) -> int:
  """What XLA's memory plan of a compiled program needs on the device in all."""
  plan = compiled.memory_analysis()
  return (plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes
          - plan.alias_size_in_bytes)


def ours_step(config, grid, text: int, rank: int, remat: str, dtype, repeats: int,
              fp8_base: bool = False) -> dict:
  """Our LoRA step (to_q, to_k, to_v, to_out.0; AdamW) on random weights, batch 1: median
  seconds after one warm-up step, tokens/s and XLA's memory plan of the compiled step."""
  from flax import nnx
  from tools.bench import cases, fp8_probe
  n = int(np.prod(grid))
  model = cases._weights(lambda: LTXVideoTransformer(config, dtype=dtype, param_dtype=dtype,
                                                     rngs=nnx.Rngs(0)))
  if fp8_base:
    fp8_probe.to_fp8(model)
  trainer = Trainer(model, TrainConfig(LoraConfig(rank=rank, alpha=rank, targets=TARGETS),
                                       optimizer=OptimizerConfig(learning_rate=1e-4, steps=1000),
                                       remat=remat))
  state = trainer.init_state()
  placed = trainer.place(_batch(grid, config.in_channels, text, config.caption_channels))
  draws = _draws(1, n, config.in_channels)
  start = time.perf_counter()
  compiled = trainer.lower(state, placed, draws).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, trainer.rest, placed, draws)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times[1:])
  return {'compile_s': compile_s, 'step_s': seconds, 'tokens_per_s': n / seconds,
          'peak_bytes': _plan_bytes(compiled), 'loss': float(metrics['loss'])}


def torch_step(config, grid, text: int, rank: int, remat: str, dtype: str, repeats: int,
               device: str) -> dict:
  """The official trainer's LoRA step in PyTorch (diffusers transformer + PEFT, strategy
  formulas, backward, clip_grad_norm_, AdamW, LinearLR; gradient checkpointing when `remat` is
  not 'none'): median seconds after one warm-up step, tokens/s, torch's peak memory (CUDA)."""
  import torch
  from diffusers import LTXVideoTransformer3DModel
  from peft import LoraConfig as PeftConfig
  from tests.training_reference import reference_loss, torch_scheduler
  n = int(np.prod(grid))
  batch = _batch(grid, config.in_channels, text, config.caption_channels)
  draws = _draws(1, n, config.in_channels)
  torch_dtype = getattr(torch, dtype)
  torch.manual_seed(0)
  with torch.device(device):
    ref = LTXVideoTransformer3DModel(
        in_channels=config.in_channels, out_channels=config.out_channels,
        num_attention_heads=config.num_heads, attention_head_dim=config.head_dim,
        cross_attention_dim=config.cross_attention_dim, num_layers=config.num_layers,
        caption_channels=config.caption_channels).to(torch_dtype)
  ref.requires_grad_(False)
  ref.add_adapter(PeftConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS)))
  if remat != 'none':
    ref.enable_gradient_checkpointing()
  ref.train()
  params = [p for p in ref.parameters() if p.requires_grad]
  for p in params:  # the trainer keeps LoRA weights in f32
    p.data = p.data.float()
  optimizer = torch.optim.AdamW(params, lr=1e-4)
  sched = torch_scheduler(optimizer, 'linear', 1000)
  cuda = device.startswith('cuda')
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    optimizer.zero_grad()
    with torch.autocast(device.split(':')[0], torch_dtype, enabled=torch_dtype != torch.float32):
      loss = reference_loss(ref, batch['latents'], batch['context'], batch['context_mask'],
                            batch['frame_rate'], *draws, device=device, dtype=torch_dtype)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    sched.step()
    if cuda:
      torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times[1:])
  row = {'step_s': seconds, 'tokens_per_s': n / seconds, 'loss': float(loss)}
  if cuda:
    row['peak_bytes'] = torch.cuda.max_memory_allocated()
  del ref, optimizer, params
  if cuda:
    torch.cuda.empty_cache()
  return row


def cpu(repeats: int) -> None:
  import torch
  c, grid = SMALL, (3, 8, 12)
  n = int(np.prod(grid))
  ours = ours_step(c, grid, 64, 32, 'none', jnp.float32, repeats)['step_s']
  theirs = torch_step(c, grid, 64, 32, 'none', 'float32', repeats, 'cpu')['step_s']
  print(f'cpu LoRA step, {n} tokens, width {c.dim}, {c.num_layers} layers: ltx_jax '
        f'{ours * 1e3:.1f} ms ({n / ours:.0f} tokens/s), PyTorch {theirs * 1e3:.1f} ms '
        f'({n / theirs:.0f} tokens/s): {theirs / ours:.2f}x (torch threads '
        f'{torch.get_num_threads()})')


def memory_plan(name, config, param_dtype, rank, remat, grid=(12, 14, 24), text=128):
  model = abstract_transformer(config, dtype='bf16', param_dtype=param_dtype)
  trainer = Trainer(model, TrainConfig(LoraConfig(rank=rank, alpha=rank, targets=TARGETS),
                                       remat=remat))
  state = trainer.abstract_state()
  batch = {'latents': jax.ShapeDtypeStruct((1, *grid, config.in_channels), jnp.float32),
           'context': jax.ShapeDtypeStruct((1, text, config.caption_channels), jnp.bfloat16),
           'context_mask': jax.ShapeDtypeStruct((1, text), jnp.int32),
           'frame_rate': jax.ShapeDtypeStruct((1,), jnp.float32)}
  start = time.perf_counter()
  plan = trainer.lower(state, batch).compile().memory_analysis()
  gib = lambda b: b / 2 ** 30
  total = (plan.argument_size_in_bytes + plan.output_size_in_bytes
           + plan.temp_size_in_bytes - plan.alias_size_in_bytes)
  print(f'{name}: {int(np.prod(grid))} tokens, base {param_dtype}, LoRA rank {rank}, remat '
        f'{remat}: arguments {gib(plan.argument_size_in_bytes):.2f} GiB, outputs '
        f'{gib(plan.output_size_in_bytes):.2f} GiB (aliased {gib(plan.alias_size_in_bytes):.2f}),'
        f' temporaries {gib(plan.temp_size_in_bytes):.2f} GiB, total {gib(total):.2f} GiB '
        f'(compiled in {time.perf_counter() - start:.0f} s on {jax.default_backend()})',
        flush=True)


def memory(which) -> None:
  runs = {
      '2b': ('2B LoRA 768x448x89', LTXV_2B, 'bf16', 32, 'none'),
      '2b-remat': ('2B LoRA 768x448x89', LTXV_2B, 'bf16', 32, 'full'),
      '13b': ('13B LoRA 768x448x89', LTXV_13B, 'bf16', 128, 'full'),
      '13b-fp8': ('13B LoRA 768x448x89', LTXV_13B, 'fp8', 128, 'full'),
  }
  for key in which or runs:
    memory_plan(*runs[key])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('mode', choices=('cpu', 'memory'))
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--torch-threads', type=int, default=0, help='cpu: torch threads (0: its '
                      'default)')
  parser.add_argument('--only', nargs='*', help='memory: 2b 2b-remat 13b 13b-fp8')
  args = parser.parse_args()
  if args.mode == 'cpu':
    if args.torch_threads:
      import torch
      torch.set_num_threads(args.torch_threads)
    with jax.default_matmul_precision('highest'):
      cpu(args.repeats)
  else:
    memory(args.only)


if __name__ == '__main__':
  main()
