"""Runs training steps on meshes of simulated CPU devices and on one device, in a fresh process
(started by tests/test_training_mesh.py with XLA_FLAGS=--xla_force_host_platform_device_count=4):

  python tests/training_mesh_worker.py OUT.json

Per mesh: the relative L2 error, against one device, of the loss and gradients of step 0 and of
the loss and parameters after two optimizer steps (LoRA on the attention and FFN layers, two
micro-batches of 4 rows, first-frame conditioning drawn per sample, f32 'highest')."""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

MESHES = {'data2_fsdp2': dict(data=2, fsdp=2), 'context2': dict(context=2)}


def rel_l2(a, b):
  import numpy as np
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run(mesh):
  import jax
  import numpy as np
  from flax import nnx
  from ltx_jax import sharding
  from ltx_jax.models.random import random_weights
  from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
  from ltx_jax.training import LoraConfig, ObjectiveConfig, TrainConfig, Trainer
  config = TransformerConfig(num_layers=2, num_heads=4, head_dim=8, in_channels=8,
                             out_channels=8, cross_attention_dim=32, caption_channels=16)
  model = random_weights(lambda: LTXVideoTransformer(config, rngs=nnx.Rngs(0)), seed=0,
                         std=0.1)
  sharding.shard_module(model, mesh)
  train = TrainConfig(LoraConfig(rank=4, alpha=4, targets=('to_q', 'to_v', 'to_out.0',
                                                          'ff.net.2')),
                      objective=ObjectiveConfig(first_frame_p=0.5, first_frame_mode='sample'),
                      accumulation=2, seed=3)
  trainer = Trainer(model, train, mesh=mesh)
  rng = np.random.default_rng(0)
  refused = None
  if mesh is not None and mesh.shape['data'] * mesh.shape['fsdp'] > 1:
    from ltx_jax.errors import UsageError
    try:  # micro-batches of 1 row cannot split over the batch axes
      trainer.check_batch(dict(latents=np.zeros((2, 3, 2, 4, 8)), context=None,
                               context_mask=None, frame_rate=None))
    except UsageError as e:
      refused = str(e)
  mask = np.ones((8, 6), np.int32)
  mask[::3, 4:] = 0
  batch = trainer.place(dict(
      latents=rng.standard_normal((8, 3, 2, 4, 8)).astype(np.float32),
      context=rng.standard_normal((8, 6, 16)).astype(np.float32), context_mask=mask,
      frame_rate=np.linspace(24, 30, 8).astype(np.float32)))
  state = trainer.init_state()
  # B non-zero, so every factor has gradients
  flat = {tuple(p): v for p, v in nnx.to_flat_state(state.params)}
  params = nnx.State.from_flat_path({p: v.replace(v.get_value() + 0.05 if p[-1] == 'b'
                                                  else v.get_value()) for p, v in flat.items()})
  state = state._replace(params=params)
  loss0, grads = trainer.loss_and_grads(state, batch)
  losses = []
  for _ in range(2):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics['loss']))
  get = lambda tree: {'.'.join(map(str, p)): np.asarray(jax.device_get(v.get_value()))
                      for p, v in nnx.to_flat_state(tree)}
  placed = {'.'.join(map(str, p)): str(v.get_value().sharding.spec)
            for p, v in nnx.to_flat_state(state.params)} if mesh is not None else {}
  return float(loss0), get(grads), losses, get(state.params), placed, refused


def main(out):
  import jax
  import numpy as np
  from ltx_jax import sharding
  report = {}
  with jax.default_matmul_precision('highest'):
    base = run(None)
    for name, sizes in MESHES.items():
      count = int(np.prod(list(sizes.values())))
      got = run(sharding.make_mesh(**sizes, devices=jax.devices()[:count]))
      report[name] = {
          'loss0': abs(got[0] - base[0]) / abs(base[0]),
          'grads': max(rel_l2(got[1][k], base[1][k]) for k in base[1]),
          'losses': max(abs(a - b) / abs(b) for a, b in zip(got[2], base[2])),
          'params': max(rel_l2(got[3][k], base[3][k]) for k in base[3]),
          'placed': got[4], 'refused': got[5]}
  with open(out, 'w') as f:
    json.dump(report, f)


if __name__ == '__main__':
  main(sys.argv[1])
