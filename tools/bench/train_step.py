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


def cpu(repeats: int) -> None:
  import torch
  from diffusers import LTXVideoTransformer3DModel
  from peft import LoraConfig as PeftConfig
  from tests.training_reference import reference_loss, torch_scheduler
  c = SMALL
  grid = (3, 8, 12)
  n = int(np.prod(grid))
  batch = _batch(grid, c.in_channels, 64, c.caption_channels)
  rng = np.random.default_rng(1)
  draws = Draws(rng.standard_normal((1, n, c.in_channels)).astype(np.float32),
                np.array([0.6], np.float32), np.zeros((1, n), bool))
  opt = OptimizerConfig(learning_rate=1e-4, steps=1000)

  from flax import nnx
  model = random_weights(lambda: LTXVideoTransformer(c, rngs=nnx.Rngs(0)), std=0.05)
  trainer = Trainer(model, TrainConfig(LoraConfig(rank=32, alpha=32, targets=TARGETS),
                                       optimizer=opt))
  state = trainer.init_state()
  placed = trainer.place(batch)
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = trainer.step(state, placed, draws)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  ours = statistics.median(times[1:])

  torch.manual_seed(0)
  ref = LTXVideoTransformer3DModel(
      in_channels=c.in_channels, out_channels=c.out_channels, num_attention_heads=c.num_heads,
      attention_head_dim=c.head_dim, cross_attention_dim=c.cross_attention_dim,
      num_layers=c.num_layers, caption_channels=c.caption_channels)
  ref.requires_grad_(False)
  ref.add_adapter(PeftConfig(r=32, lora_alpha=32, target_modules=list(TARGETS)))
  params = [p for p in ref.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(params, lr=1e-4)
  sched = torch_scheduler(optimizer, 'linear', 1000)
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = reference_loss(ref, batch['latents'], batch['context'], batch['context_mask'],
                          batch['frame_rate'], *draws)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    sched.step()
    times.append(time.perf_counter() - start)
  theirs = statistics.median(times[1:])
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
